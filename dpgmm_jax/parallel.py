"""Data-parallel EM: records sharded across devices, statistics summed across them.

EM's sufficient statistics n_k, s_k and S_k and the log-likelihood are sums
over records, so each device runs the chunked E step on its own shard and one
``psum`` across the mesh axis combines the partial sums. Every device then
runs the same M step on the same totals, so the parameters stay replicated
and the result equals ``dpgmm_jax.em.fit_em`` on one device up to the order
of floating-point summation.

On a CPU host, ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (set
before jax is imported) exposes 8 CPU devices, which is how the tests run
this module without accelerators.
"""

import functools
import logging
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dpgmm_jax.em import DEFAULT_CHUNK_SIZE, EMResult, e_step_on_chunks, run_em_loop, split_into_chunks
from dpgmm_jax.types import GMMParams

logger = logging.getLogger(__name__)

RECORD_AXIS = "records"


def make_record_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Build a one-axis mesh named ``"records"`` over the given devices.

    Args:
        devices: the devices to shard over; None uses ``jax.devices()``.

    Returns:
        A ``jax.sharding.Mesh`` with the single axis ``RECORD_AXIS``.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices is empty; pass at least one jax.Device or None for jax.devices()")
    return Mesh(devices, (RECORD_AXIS,))


def fit_em_sharded(
    x,
    init: GMMParams,
    mesh: Mesh | Sequence[jax.Device] | None = None,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> EMResult:
    """Fit a Gaussian mixture by EM with the records sharded across devices.

    Takes the arguments of ``dpgmm_jax.em.fit_em`` plus the mesh, and returns
    the same ``EMResult``: the same stopping rule, the same shift by the mean
    of the records, the same M step. The records are padded with masked rows
    to a multiple of the number of devices.

    Args:
        x: records of shape (N, d), float32 or float64.
        init: initial parameters with K components.
        mesh: a ``Mesh`` with an axis named ``"records"``, a sequence of
            devices, or None for all of ``jax.devices()``.
        max_iter: maximum number of EM iterations.
        tol: tolerance on the change of the mean log-likelihood; 0 turns the
            tolerance stop off.
        reg_covar: non-negative value added to every covariance diagonal.
        chunk_size: records per chunk in each device's E step.

    Returns:
        An ``EMResult`` whose arrays are replicated on every device of the mesh.
    """
    if not isinstance(mesh, Mesh):
        mesh = make_record_mesh(mesh)
    if RECORD_AXIS not in mesh.axis_names:
        raise ValueError(f"mesh has axes {mesh.axis_names}; build it with make_record_mesh or name one axis {RECORD_AXIS!r}")

    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (N, d) with N >= 1, got shape {x.shape}")
    n_devices = mesh.shape[RECORD_AXIS]
    n = x.shape[0]
    padding = -n % n_devices
    mask = jnp.arange(n + padding) < n
    padded = jnp.pad(x, ((0, padding), (0, 0)))

    record_sharding = NamedSharding(mesh, PartitionSpec(RECORD_AXIS))
    padded = jax.device_put(padded, record_sharding)
    mask = jax.device_put(mask, record_sharding)
    logger.info("fitting EM on %d records sharded over %d devices", n, n_devices)
    return _fit_sharded(padded, mask, init, mesh, n, max_iter, tol, reg_covar, chunk_size)


@functools.partial(jax.jit, static_argnames=("mesh", "n_records", "chunk_size"))
def _fit_sharded(padded, mask, init, mesh, n_records, max_iter, tol, reg_covar, chunk_size) -> EMResult:
    def fit_on_shard(local_x, local_mask, init, max_iter, tol, reg_covar):
        masked_sum = jnp.sum(jnp.where(local_mask[:, None], local_x, 0), axis=0)
        shift = jax.lax.psum(masked_sum, RECORD_AXIS) / n_records
        chunks, masks = split_into_chunks(local_x - shift, chunk_size, local_mask)

        def sharded_e_step(params):
            return jax.lax.psum(e_step_on_chunks(chunks, masks, params), RECORD_AXIS)

        return run_em_loop(sharded_e_step, init, n_records, shift, max_iter, tol, reg_covar)

    replicated = PartitionSpec()
    sharded_fit = jax.shard_map(
        fit_on_shard,
        mesh=mesh,
        in_specs=(PartitionSpec(RECORD_AXIS), PartitionSpec(RECORD_AXIS), replicated, replicated, replicated, replicated),
        out_specs=replicated,
    )
    return sharded_fit(padded, mask, init, max_iter, tol, reg_covar)
