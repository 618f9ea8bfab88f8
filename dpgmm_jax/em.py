"""Expectation-maximisation for Gaussian mixtures with full covariances.

The E step and the M step are written as matrix products so that XLA maps them
onto GEMM kernels. Log-densities use the precision Cholesky factors P_k with
C_k^{-1} = P_k P_k^T (the parameterisation scikit-learn's GaussianMixture uses
internally): one (N, d) x (d, K d) product gives every P_k^T x_i. The M step
accumulates the sufficient statistics of
``dpgmm_jax.types.SufficientStatistics``, the second moments as one
(K, N) x (N, d(d+1)/2) product of the responsibilities with the upper
triangles of x_i x_i^T. Records are processed in chunks of equal size under
``lax.scan`` so memory stays bounded for millions of records, and the whole
loop runs under ``jit`` in a ``lax.while_loop`` with a log-likelihood
tolerance stop.

Reference: A. P. Dempster, N. M. Laird and D. B. Rubin, "Maximum likelihood
from incomplete data via the EM algorithm", JRSS-B 39(1), 1977.
"""

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dpgmm_jax.mechanism import symmetric_from_upper
from dpgmm_jax.types import GMMParams, SufficientStatistics

DEFAULT_CHUNK_SIZE = 65_536


class EMResult(NamedTuple):
    """Outcome of ``fit_em``.

    Attributes:
        params: the fitted mixture.
        log_likelihood: mean log-likelihood per record at ``params``.
        n_iter: number of EM iterations run.
        converged: whether the change in mean log-likelihood fell below tol.
    """

    params: GMMParams
    log_likelihood: jax.Array
    n_iter: jax.Array
    converged: jax.Array


def precision_cholesky(covariances: jax.Array) -> jax.Array:
    """Return P_k = L_k^{-T} with C_k = L_k L_k^T, so that C_k^{-1} = P_k P_k^T.

    Args:
        covariances: shape (..., d, d), symmetric positive definite.

    Returns:
        Upper-triangular factors of shape (..., d, d).
    """
    cholesky = jnp.linalg.cholesky(covariances)
    identity = jnp.broadcast_to(jnp.eye(covariances.shape[-1], dtype=covariances.dtype), covariances.shape)
    inverse = jax.scipy.linalg.solve_triangular(cholesky, identity, lower=True)
    return jnp.swapaxes(inverse, -1, -2)


def component_log_densities(x: jax.Array, params: GMMParams) -> jax.Array:
    """Return log N(x_i | m_k, C_k) for every record and component.

    Args:
        x: records of shape (N, d).
        params: a mixture with K components.

    Returns:
        Array of shape (N, K).
    """
    return log_densities_from_precisions(x, params.means, precision_cholesky(params.covariances))


def log_densities_from_precisions(x: jax.Array, means: jax.Array, precisions: jax.Array) -> jax.Array:
    """Return log N(x_i | m_k, C_k) from upper-triangular precision factors.

    Args:
        x: records of shape (N, d).
        means: component means of shape (K, d).
        precisions: factors P_k with P_k P_k^T = C_k^{-1}, shape (K, d, d),
            as returned by ``precision_cholesky``.

    Returns:
        Array of shape (N, K).
    """
    n_components, d = means.shape

    # ||P_k^T (x - m_k)||^2 from one GEMM: (N, d) x (d, K d) -> (N, K d).
    stacked = jnp.swapaxes(precisions, 0, 1).reshape(d, n_components * d)
    projected = (x @ stacked).reshape(x.shape[0], n_components, d)
    projected = projected - jnp.einsum("kd,kde->ke", means, precisions)[None]
    mahalanobis = jnp.sum(projected**2, axis=-1)

    log_det_precision = jnp.sum(jnp.log(jnp.diagonal(precisions, axis1=-2, axis2=-1)), axis=-1)
    return -0.5 * (d * math.log(2 * math.pi) + mahalanobis) + log_det_precision


def log_prob(x: jax.Array, params: GMMParams) -> jax.Array:
    """Return the mixture log-density log p(x_i) for each record, shape (N,)."""
    weighted = component_log_densities(x, params) + jnp.log(params.weights)
    return jax.scipy.special.logsumexp(weighted, axis=-1)


def responsibilities(x: jax.Array, params: GMMParams) -> jax.Array:
    """Return the posterior component probabilities r_k(x_i), shape (N, K)."""
    weighted = component_log_densities(x, params) + jnp.log(params.weights)
    return jax.nn.softmax(weighted, axis=-1)


def _outer_upper(y: jax.Array) -> jax.Array:
    """Return the upper triangles of y_i y_i^T, shape (N, d(d+1)/2), in ``triu_indices`` order."""
    rows, cols = np.triu_indices(y.shape[-1])
    return y[:, rows] * y[:, cols]


def sufficient_statistics(y: jax.Array, resp: jax.Array) -> SufficientStatistics:
    """Compute n_k, s_k and S_k from records and their responsibilities.

    Args:
        y: records of shape (N, d).
        resp: responsibilities of shape (N, K); rows on the simplex, or zero
            rows for padding.

    Returns:
        The sufficient statistics, summed over records.
    """
    counts = jnp.sum(resp, axis=0)
    first_moments = resp.T @ y
    second_moments = symmetric_from_upper(resp.T @ _outer_upper(y), y.shape[-1])
    return SufficientStatistics(counts, first_moments, second_moments)


def split_into_chunks(
    x: jax.Array, chunk_size: int, mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Reshape records into (n_chunks, c, d) chunks of equal size c <= chunk_size.

    The chunk size is ceil(N / n_chunks) with n_chunks = ceil(N / chunk_size),
    so fewer than n_chunks rows are padding (zeros, masked out). ``mask``, of
    shape (N,), marks further rows to leave out, such as padding added by the
    caller.

    Returns:
        ``(chunks, masks)`` of shapes (n_chunks, c, d) and (n_chunks, c).
    """
    n = x.shape[0]
    n_chunks = max(1, -(-n // chunk_size))
    size = -(-n // n_chunks)
    padding = n_chunks * size - n
    if mask is None:
        mask = jnp.ones(n, dtype=bool)
    if padding:
        x = jnp.pad(x, ((0, padding), (0, 0)))
        mask = jnp.pad(mask, (0, padding))
    return x.reshape(n_chunks, size, x.shape[1]), mask.reshape(n_chunks, size)


def _sum_over_chunks(fn: Callable, chunks: jax.Array, masks: jax.Array):
    if chunks.shape[0] == 1:
        return fn(chunks[0], masks[0])

    # The first chunk's sums start the carry, so the carry has the type of
    # fn's output, including shard_map's per-device (varying) type.
    first = fn(chunks[0], masks[0])

    def body(total, inputs):
        chunk, chunk_mask = inputs
        return jax.tree.map(jnp.add, total, fn(chunk, chunk_mask)), None

    total, _ = jax.lax.scan(body, first, (chunks[1:], masks[1:]))
    return total


def chunked_sum(fn: Callable, x: jax.Array, chunk_size: int = DEFAULT_CHUNK_SIZE):
    """Sum ``fn(chunk, mask)`` over chunks of records under ``lax.scan``.

    Args:
        fn: maps a chunk of shape (c, d) and a boolean mask of shape (c,),
            False on padding rows, to a pytree of sums.
        x: records of shape (N, d).
        chunk_size: maximum number of records per chunk. It bounds the size of
            the (chunk, K, d) intermediate arrays. The records are split into
            ceil(N / chunk_size) chunks of equal size, so little work goes to
            padding.

    Returns:
        The pytree of sums over all records.
    """
    chunks, masks = split_into_chunks(x, chunk_size)
    return _sum_over_chunks(fn, chunks, masks)


def e_step_on_chunks(
    chunks: jax.Array, masks: jax.Array, params: GMMParams
) -> tuple[SufficientStatistics, jax.Array]:
    """Run the E step on records already split by ``split_into_chunks``.

    Args:
        chunks: records of shape (n_chunks, c, d).
        masks: shape (n_chunks, c), False on rows to leave out.
        params: the current mixture.

    Returns:
        ``(statistics, total_log_likelihood)`` summed over the unmasked rows.
    """
    d = chunks.shape[-1]
    precisions = precision_cholesky(params.covariances)
    log_weights = jnp.log(params.weights)

    def chunk_statistics(chunk, mask):
        weighted = log_densities_from_precisions(chunk, params.means, precisions) + log_weights
        log_norm = jax.scipy.special.logsumexp(weighted, axis=-1)
        resp = jnp.exp(weighted - log_norm[:, None]) * mask[:, None]
        # Second moments stay as upper triangles inside the loop, so each
        # chunk costs one (K, c) x (c, d(d+1)/2) product.
        sums = (jnp.sum(resp, axis=0), resp.T @ chunk, resp.T @ _outer_upper(chunk))
        return sums, jnp.sum(jnp.where(mask, log_norm, 0.0))

    (counts, first_moments, upper), total = _sum_over_chunks(chunk_statistics, chunks, masks)
    return SufficientStatistics(counts, first_moments, symmetric_from_upper(upper, d)), total


def e_step(
    x: jax.Array, params: GMMParams, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> tuple[SufficientStatistics, jax.Array]:
    """Run the E step and accumulate sufficient statistics in chunks.

    Returns:
        ``(statistics, total_log_likelihood)`` summed over the N records.
    """
    chunks, masks = split_into_chunks(x, chunk_size)
    return e_step_on_chunks(chunks, masks, params)


def m_step(stats: SufficientStatistics, reg_covar: float) -> GMMParams:
    """Return maximum-likelihood parameters for the given statistics.

    ``reg_covar`` is added to every covariance diagonal, as in scikit-learn, so
    that no covariance becomes singular.
    """
    d = stats.first_moments.shape[-1]
    tiny = 10 * jnp.finfo(stats.counts.dtype).eps
    counts = stats.counts + tiny

    weights = counts / jnp.sum(counts)
    means = stats.first_moments / counts[:, None]
    covariances = stats.second_moments / counts[:, None, None] - jnp.einsum("kd,ke->kde", means, means)
    covariances = 0.5 * (covariances + jnp.swapaxes(covariances, -1, -2))
    covariances = covariances + reg_covar * jnp.eye(d, dtype=covariances.dtype)
    return GMMParams(weights, means, covariances)


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def fit_em(
    x: jax.Array,
    init: GMMParams,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> EMResult:
    """Fit a Gaussian mixture by EM from given initial parameters.

    The loop stops when the mean log-likelihood changes by less than ``tol``
    between iterations, or after ``max_iter`` iterations; ``tol = 0`` turns
    the tolerance stop off. The data are shifted by their mean before the loop
    so that second moments stay well conditioned in float32.

    Args:
        x: records of shape (N, d), float32 or float64.
        init: initial parameters with K components.
        max_iter: maximum number of EM iterations.
        tol: tolerance on the change of the mean log-likelihood.
        reg_covar: non-negative value added to every covariance diagonal.
        chunk_size: records per chunk in the E step (static).

    Returns:
        An ``EMResult``; its log-likelihood is evaluated at the final
        parameters.
    """
    n = x.shape[0]
    shift = jnp.mean(x, axis=0)
    # Split once, outside the loop, so no iteration copies the records.
    chunks, masks = split_into_chunks(x - shift, chunk_size)
    return run_em_loop(lambda params: e_step_on_chunks(chunks, masks, params), init, n, shift, max_iter, tol, reg_covar)


def run_em_loop(
    e_step_fn: Callable[[GMMParams], tuple[SufficientStatistics, jax.Array]],
    init: GMMParams,
    n_records,
    shift: jax.Array,
    max_iter: int,
    tol: float,
    reg_covar: float,
) -> EMResult:
    """Run the EM loop of ``fit_em`` around a given E step.

    ``fit_em`` and the data-parallel ``dpgmm_jax.parallel.fit_em_sharded``
    share this loop, so both stop by the same rule.

    Args:
        e_step_fn: maps parameters in shifted coordinates to
            ``(statistics, total_log_likelihood)`` over all records.
        init: initial parameters in data coordinates.
        n_records: number of records N.
        shift: the vector subtracted from every record, shape (d,); its dtype
            sets the dtype of the fit.
        max_iter: maximum number of EM iterations.
        tol: tolerance on the change of the mean log-likelihood; 0 turns the
            tolerance stop off.
        reg_covar: non-negative value added to every covariance diagonal.

    Returns:
        An ``EMResult`` in data coordinates.
    """
    dtype = shift.dtype
    init = GMMParams(init.weights.astype(dtype), (init.means - shift).astype(dtype), init.covariances.astype(dtype))

    def cond(state):
        _, previous, current, iteration = state
        not_converged = jnp.abs(current - previous) >= tol
        return (iteration < max_iter) & not_converged

    def body(state):
        params, _, current, iteration = state
        stats, total = e_step_fn(params)
        new_params = m_step(stats, reg_covar)
        # ``current`` is the log-likelihood of the previous E step, which
        # sklearn's GaussianMixture compares against in the same way.
        return new_params, current, total / n_records, iteration + 1

    # The first iteration always runs: before it both log-likelihoods are -inf.
    minus_inf = jnp.asarray(-jnp.inf, dtype=dtype)
    state = (init, minus_inf, minus_inf, jnp.asarray(0))
    state = jax.lax.while_loop(lambda s: (s[3] == 0) | cond(s), body, state)
    params, previous, current, n_iter = state

    _, final_total = e_step_fn(params)
    converged = jnp.abs(current - previous) < tol
    params = GMMParams(params.weights, params.means + shift, params.covariances)
    return EMResult(params, final_total / n_records, n_iter, converged)


def initial_params_from_means(x, means, reg_covar: float = 1e-6) -> GMMParams:
    """Build initial parameters by assigning each record to its nearest mean.

    This mirrors how scikit-learn's GaussianMixture turns a k-means solution
    into weights and covariances. It reads the data, so it is for non-private
    fits only.

    Args:
        x: records of shape (N, d).
        means: initial means of shape (K, d).
        reg_covar: value added to every covariance diagonal.

    Returns:
        Initial ``GMMParams`` as NumPy arrays in the dtype of ``x``.
    """
    x = np.asarray(x)
    means = np.asarray(means, dtype=x.dtype)
    labels = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    resp = np.eye(means.shape[0], dtype=x.dtype)[labels]
    stats = sufficient_statistics(jnp.asarray(x - x.mean(0)), jnp.asarray(resp))
    params = m_step(stats, reg_covar)
    return GMMParams(
        np.asarray(params.weights),
        np.asarray(params.means) + x.mean(0),
        np.asarray(params.covariances),
    )
