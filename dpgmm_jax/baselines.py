"""Baseline methods for the experiment suite: Park et al. DP-EM, DP-SGD and scikit-learn.

The two private baselines are pure JAX functions of (key, noise multiplier)
in mechanism coordinates (records with ||y|| <= R, see ``dpgmm_jax.domain``),
so they compose with ``jax.jit`` and ``jax.vmap`` over trials and budgets
like ``dpgmm_jax.algorithms.dp_em``. Their noise multipliers are calibrated
to (epsilon, delta) in Python, before anything is traced, with the Renyi DP
accountant of Google's dp_accounting package. RDP accounting is looser than
the GDP accounting of DP-EM, and that gap is part of what the baselines show.

- ``park_dp_em``: DP-EM in the style of Park, Foulds, Chaudhuri and Welling,
  "DP-EM: Differentially private expectation maximization", AISTATS 2017.
  Every iteration perturbs the three sufficient statistics with an equal
  share of the budget, and every iteration gets the same budget.
- ``dpsgd_gmm``: the mixture log-likelihood trained by DP-SGD (Abadi et al.,
  "Deep learning with differential privacy", CCS 2016) through
  ``optax.contrib.differentially_private_aggregate``.
- ``sklearn_fit``: scikit-learn's non-private ``GaussianMixture``, a reference
  without any guarantee. It runs per trial in Python and is not jit-able.
"""

import functools
import logging
import math
from typing import NamedTuple

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import optax
from dp_accounting.rdp import rdp_privacy_accountant

from dpgmm_jax.accounting import NeighbouringRelation
from dpgmm_jax.algorithms import data_independent_init
from dpgmm_jax.allocation import equal_shares
from dpgmm_jax.em import DEFAULT_CHUNK_SIZE, e_step, precision_cholesky
from dpgmm_jax.mechanism import map_eigenvalues, noise_scales_from_shares, project_onto_ball, release_statistics
from dpgmm_jax.types import GMMParams
from dpgmm_jax.validation import check_delta, check_epsilon, check_n_components

logger = logging.getLogger(__name__)

# Each Park DP-EM iteration releases three statistics: counts, first and second moments.
N_STATISTICS = 3
# Search interval for noise multipliers; calibrate_dp_mechanism needs a bracket.
NOISE_MULTIPLIER_BRACKET = dp_accounting.LowerEndpointAndGuess(1e-3, 1.0)
SAMPLINGS = ("poisson", "fixed")


def _calibrate(make_event, epsilon: float, delta: float,
               relation: dp_accounting.NeighboringRelation) -> float:
    """Return the smallest noise multiplier whose composed event meets (epsilon, delta) under RDP."""
    epsilon = check_epsilon(epsilon)
    delta = check_delta(delta)
    return float(dp_accounting.calibrate_dp_mechanism(
        lambda: rdp_privacy_accountant.RdpAccountant(neighboring_relation=relation),
        make_event, epsilon, delta, NOISE_MULTIPLIER_BRACKET, tol=1e-4,
    ))


def park_noise_multiplier(epsilon: float, delta: float, n_iter: int) -> float:
    """Calibrate the per-statistic noise multiplier of Park DP-EM with the RDP accountant.

    The run composes 3 T Gaussian mechanisms, one per statistic and
    iteration, each with noise standard deviation z times its L2
    sensitivity. The search finds the smallest z for which the RDP
    accountant gives (epsilon, delta)-DP.

    Args:
        epsilon: target epsilon, > 0.
        delta: target delta, in (0, 1).
        n_iter: EM iterations T >= 1.

    Returns:
        The noise multiplier z.
    """
    if int(n_iter) != n_iter or n_iter < 1:
        raise ValueError(f"n_iter must be an integer >= 1, got n_iter={n_iter}")
    count = N_STATISTICS * int(n_iter)
    return _calibrate(lambda z: dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), count),
                      epsilon, delta, dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)


class ParkConfig(NamedTuple):
    """Static settings of Park DP-EM; hashable, so it serves as a static jit argument.

    Attributes:
        n_components: number of mixture components K.
        n_iter: EM iterations T, each with the same budget.
        relation: neighbouring relation, "add_or_remove_one" or "replace_one".
        count_floor: public floor on the noisy counts, >= 1.
        eigenvalue_floor: public floor on covariance eigenvalues, > 0.
        chunk_size: records per chunk when computing statistics.
    """

    n_components: int
    n_iter: int = 10
    relation: str = NeighbouringRelation.ADD_OR_REMOVE_ONE.value
    count_floor: float = 1.0
    eigenvalue_floor: float = 1e-3
    chunk_size: int = DEFAULT_CHUNK_SIZE


@functools.partial(jax.jit, static_argnames=("config",))
def park_dp_em(key: jax.Array, y: jax.Array, noise_multiplier, radius, config: ParkConfig) -> GMMParams:
    """Fit a mixture by DP-EM with noisy sufficient statistics (Park et al., AISTATS 2017).

    Iteration t computes responsibilities from the previous release, adds
    Gaussian noise with standard deviation z Delta_g to each of the three
    statistics (Delta_g = 1, R, R^2 for counts, first and second moments)
    and post-processes them with ``dpgmm_jax.mechanism.release_statistics``.
    A noise multiplier z on every group is the equal split of that
    module's GDP parametrisation with mu_t = sqrt(3) / z.

    Args:
        key: PRNG key; split into the start and one key per iteration.
        y: records in mechanism coordinates, shape (N, d), ||y_i|| <= radius.
        noise_multiplier: z from ``park_noise_multiplier``; may be traced.
        radius: the domain radius R.
        config: static settings.

    Returns:
        The released mixture after T iterations.
    """
    key_init, key_releases = jax.random.split(key)
    start = data_independent_init(key_init, config.n_components, y.shape[1], radius, y.dtype)
    iteration_mu = math.sqrt(N_STATISTICS) / noise_multiplier
    shares = equal_shares(config.n_components, y.dtype)
    scales = noise_scales_from_shares(shares, iteration_mu, radius, config.relation)

    def iteration(previous, release_key):
        stats, _ = e_step(y, previous.params, config.chunk_size)
        current = release_statistics(release_key, stats, scales, radius, config.count_floor, config.eigenvalue_floor)
        return current, None

    final, _ = jax.lax.scan(iteration, start, jax.random.split(key_releases, config.n_iter))
    return final.params


class DpsgdConfig(NamedTuple):
    """Static settings of the DP-SGD mixture fit.

    NOTE: the sampling rate B / N reads the dataset size, which DP-SGD
    practice (Abadi et al. 2016) treats as public. Under add-or-remove-one
    N is not strictly public, so that is an assumption of this baseline.

    Attributes:
        n_components: number of mixture components K.
        n_records: dataset size N. It sets the sampling rate B / N and the
            step count, so it is treated as public.
        batch_size: expected (Poisson) or exact (fixed) batch size B.
        epochs: passes over the data; the run takes ceil(epochs N / B) steps.
        sampling: "poisson" (each record joins each batch with probability
            B / N, add-or-remove-one accounting) or "fixed" (B records drawn
            without replacement, replace-one accounting).
        l2_norm_clip: per-example gradient clipping norm C.
        learning_rate: Adam step size applied to the privatised gradient.
        eigenvalue_floor: public floor on the released covariance eigenvalues, > 0.
    """

    n_components: int
    n_records: int
    batch_size: int = 256
    epochs: float = 3.0
    sampling: str = "poisson"
    l2_norm_clip: float = 1.0
    learning_rate: float = 0.05
    eigenvalue_floor: float = 1e-3

    @property
    def steps(self) -> int:
        return max(1, math.ceil(self.epochs * self.n_records / self.batch_size))

    def validate(self) -> "DpsgdConfig":
        """Check every field and return the config, raising ValueError on a bad one."""
        check_n_components(self.n_components)
        if not 1 <= self.batch_size <= self.n_records:
            raise ValueError(f"batch_size must be in [1, N={self.n_records}], got batch_size={self.batch_size}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got sampling={self.sampling!r}")
        for name in ("epochs", "l2_norm_clip", "learning_rate", "eigenvalue_floor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {name}={getattr(self, name)}")
        return self


def dpsgd_noise_multiplier(epsilon: float, delta: float, config: DpsgdConfig) -> float:
    """Calibrate the DP-SGD noise multiplier z = sigma / C with the RDP accountant.

    Poisson sampling is accounted as ``PoissonSampledDpEvent`` under
    add-or-remove-one. Fixed-size batches are accounted as
    ``SampledWithoutReplacementDpEvent`` under replace-one, where the sum of
    clipped gradients has L2 sensitivity 2C, so the event's Gaussian gets
    noise multiplier z / 2.

    Args:
        epsilon: target epsilon, > 0.
        delta: target delta, in (0, 1).
        config: the run's settings; its step count and sampling rate enter.

    Returns:
        The noise multiplier z.
    """
    config.validate()
    steps = config.steps
    if config.sampling == "poisson":
        rate = config.batch_size / config.n_records
        return _calibrate(
            lambda z: dp_accounting.SelfComposedDpEvent(
                dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(z)), steps),
            epsilon, delta, dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
    return _calibrate(
        lambda z: dp_accounting.SelfComposedDpEvent(
            dp_accounting.SampledWithoutReplacementDpEvent(
                config.n_records, config.batch_size, dp_accounting.GaussianDpEvent(z / 2.0)), steps),
        epsilon, delta, dp_accounting.NeighboringRelation.REPLACE_ONE)


class UnconstrainedGMM(NamedTuple):
    """Mixture parameters on which gradient steps keep the mixture valid.

    Attributes:
        logits: weights are softmax(logits), shape (K,).
        means: component means, shape (K, d).
        precision_cholesky: upper triangles of shape (K, d, d); the diagonal
            goes through softplus, so P_k has a positive diagonal and
            C_k^{-1} = P_k P_k^T is positive definite. Parametrising the
            precision factor, as scikit-learn does, makes the per-example
            log-density free of matrix decompositions.
    """

    logits: jax.Array
    means: jax.Array
    precision_cholesky: jax.Array


def precision_factor(raw: UnconstrainedGMM) -> jax.Array:
    """Return the upper-triangular P_k with softplus on the diagonal."""
    d = raw.means.shape[-1]
    diagonal = jax.nn.softplus(jnp.diagonal(raw.precision_cholesky, axis1=-2, axis2=-1))
    return jnp.triu(raw.precision_cholesky, 1) + diagonal[..., None] * jnp.eye(d, dtype=raw.means.dtype)


def unconstrained_log_prob(record: jax.Array, raw: UnconstrainedGMM) -> jax.Array:
    """Return log p(record) for one record of shape (d,) under the mixture ``raw``."""
    d = record.shape[-1]
    factor = precision_factor(raw)
    projected = jnp.einsum("kd,kde->ke", record[None, :] - raw.means, factor)
    log_det = jnp.sum(jnp.log(jnp.diagonal(factor, axis1=-2, axis2=-1)), axis=-1)
    log_densities = -0.5 * (d * math.log(2 * math.pi) + jnp.sum(projected**2, axis=-1)) + log_det
    return jax.scipy.special.logsumexp(log_densities + jax.nn.log_softmax(raw.logits))


def to_gmm(raw: UnconstrainedGMM, radius, eigenvalue_floor: float) -> GMMParams:
    """Map unconstrained parameters to a mixture, clipping eigenvalues to [floor, R^2]."""
    factor = precision_factor(raw)
    precisions = factor @ jnp.swapaxes(factor, -1, -2)
    covariances = map_eigenvalues(precisions, lambda eigenvalues: jnp.clip(1.0 / eigenvalues, eigenvalue_floor, radius**2))
    return GMMParams(jax.nn.softmax(raw.logits), raw.means, covariances)


def from_gmm(params: GMMParams) -> UnconstrainedGMM:
    """Return the unconstrained parameters of a mixture, for the start."""
    factor = precision_cholesky(params.covariances)
    diagonal = jnp.diagonal(factor, axis1=-2, axis2=-1)
    raw_diagonal = diagonal + jnp.log(-jnp.expm1(-diagonal))  # softplus^{-1}
    d = params.means.shape[-1]
    raw = jnp.triu(factor, 1) + raw_diagonal[..., None] * jnp.eye(d, dtype=factor.dtype)
    return UnconstrainedGMM(jnp.log(params.weights), params.means, raw)


@functools.partial(jax.jit, static_argnames=("config",))
def dpsgd_gmm(key: jax.Array, y: jax.Array, noise_multiplier, radius, config: DpsgdConfig) -> GMMParams:
    """Fit a mixture by maximising its log-likelihood with DP-SGD.

    Each step samples a batch, computes per-example gradients of -log p(y_i),
    and hands them to ``optax.contrib.differentially_private_aggregate``,
    which clips each to norm C, sums them and adds N(0, (z C)^2) noise.
    Adam then acts on the privatised gradient, which is post-processing.
    Poisson batches are formed by masking all N records, so each step costs
    a pass over the data; the mask keeps the array shapes static.

    Args:
        key: PRNG key for the start, the batches and the noise.
        y: records in mechanism coordinates, shape (N, d), N == config.n_records.
        noise_multiplier: z from ``dpsgd_noise_multiplier``; may be traced.
        radius: the domain radius R; the start reads it, the released means
            are projected onto the ball of radius R and covariance
            eigenvalues are clipped to [eigenvalue_floor, R^2].
        config: static settings.

    Returns:
        The trained mixture.
    """
    n_records = y.shape[0]
    key_init, key_noise, key_batches = jax.random.split(key, 3)
    start = data_independent_init(key_init, config.n_components, y.shape[1], radius, y.dtype)
    raw = from_gmm(start.params)

    aggregate = optax.contrib.differentially_private_aggregate(
        l2_norm_clip=config.l2_norm_clip, noise_multiplier=noise_multiplier, key=key_noise)
    # The aggregate divides the noisy sum by the gradient batch dimension;
    # masked Poisson batches have dimension N, so the step is rescaled to B.
    scale = n_records / config.batch_size if config.sampling == "poisson" else 1.0
    optimiser = optax.chain(aggregate, optax.scale(scale), optax.adam(config.learning_rate))
    state = optimiser.init(raw)

    def loss(parameters, record):
        return -unconstrained_log_prob(record, parameters)

    per_example_grad = jax.vmap(jax.grad(loss), in_axes=(None, 0))

    def step(carry, batch_key):
        parameters, optimiser_state = carry
        if config.sampling == "poisson":
            mask = jax.random.bernoulli(batch_key, config.batch_size / n_records, (n_records,))
            grads = per_example_grad(parameters, y)
            grads = jax.tree.map(lambda g: g * mask.reshape((-1,) + (1,) * (g.ndim - 1)).astype(g.dtype), grads)
        else:
            indices = jax.random.choice(batch_key, n_records, (config.batch_size,), replace=False)
            grads = per_example_grad(parameters, y[indices])
        updates, optimiser_state = optimiser.update(grads, optimiser_state, parameters)
        return (optax.apply_updates(parameters, updates), optimiser_state), None

    (raw, _), _ = jax.lax.scan(step, (raw, state), jax.random.split(key_batches, config.steps))
    params = to_gmm(raw, radius, config.eigenvalue_floor)
    return params._replace(means=project_onto_ball(params.means, radius))


def sklearn_fit(y: np.ndarray, n_components: int, seed: int, max_iter: int = 300) -> GMMParams:
    """Fit scikit-learn's non-private ``GaussianMixture`` (k-means start, full covariances).

    No privacy guarantee: it reads the data freely. It runs in Python, one
    call per trial, and cannot be traced by jit or vmap.

    Args:
        y: records, shape (N, d).
        n_components: number of components K.
        seed: ``random_state`` of the k-means start.
        max_iter: EM iterations at most.

    Returns:
        The fitted mixture as NumPy arrays.
    """
    from sklearn.mixture import GaussianMixture

    model = GaussianMixture(n_components, covariance_type="full", max_iter=max_iter, random_state=seed)
    model.fit(np.asarray(y, dtype=np.float64))
    if not model.converged_:
        logger.warning("scikit-learn GaussianMixture (seed %d) did not converge in %d iterations", seed, max_iter)
    return GMMParams(model.weights_, model.means_, model.covariances_)
