"""Expectation-maximisation for Gaussian mixtures with full covariances.

The E step and the M step are written as matrix products so that XLA maps them
onto GEMM kernels: log-densities use the precision Cholesky factors P_k with
C_k^{-1} = P_k P_k^T (the parameterisation scikit-learn's GaussianMixture uses
internally), and the M step accumulates the sufficient statistics of
``dpgmm_jax.types.SufficientStatistics``. Records are processed in chunks
under ``lax.scan`` so memory stays bounded for millions of records, and the
whole loop runs under ``jit`` in a ``lax.while_loop`` with a log-likelihood
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
    d = x.shape[-1]
    precisions = precision_cholesky(params.covariances)

    # ||P_k^T (x - m_k)||^2 with one GEMM: (N, d) x (K, d, d) -> (N, K, d).
    projected = jnp.einsum("nd,kde->nke", x, precisions)
    projected = projected - jnp.einsum("kd,kde->ke", params.means, precisions)[None]
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
    second_moments = jnp.einsum("nk,nd,ne->kde", resp, y, y)
    return SufficientStatistics(counts, first_moments, second_moments)


def chunked_sum(fn: Callable, x: jax.Array, chunk_size: int = DEFAULT_CHUNK_SIZE):
    """Sum ``fn(chunk, mask)`` over chunks of records under ``lax.scan``.

    Args:
        fn: maps a chunk of shape (c, d) and a boolean mask of shape (c,),
            False on padding rows, to a pytree of sums.
        x: records of shape (N, d).
        chunk_size: maximum number of records per chunk. It bounds the size of
            the (chunk, K, d) intermediate arrays.

    Returns:
        The pytree of sums over all records.
    """
    n = x.shape[0]
    if n <= chunk_size:
        return fn(x, jnp.ones(n, dtype=bool))

    n_chunks = -(-n // chunk_size)
    padded = jnp.pad(x, ((0, n_chunks * chunk_size - n), (0, 0)))
    mask = jnp.arange(n_chunks * chunk_size) < n
    chunks = padded.reshape(n_chunks, chunk_size, x.shape[1])
    masks = mask.reshape(n_chunks, chunk_size)

    first = fn(chunks[0], masks[0])

    def body(total, inputs):
        chunk, chunk_mask = inputs
        return jax.tree.map(jnp.add, total, fn(chunk, chunk_mask)), None

    total, _ = jax.lax.scan(body, first, (chunks[1:], masks[1:]))
    return total


def e_step(
    x: jax.Array, params: GMMParams, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> tuple[SufficientStatistics, jax.Array]:
    """Run the E step and accumulate sufficient statistics in chunks.

    Returns:
        ``(statistics, total_log_likelihood)`` summed over the N records.
    """

    def chunk_statistics(chunk, mask):
        weighted = component_log_densities(chunk, params) + jnp.log(params.weights)
        log_norm = jax.scipy.special.logsumexp(weighted, axis=-1)
        resp = jnp.exp(weighted - log_norm[:, None]) * mask[:, None]
        stats = sufficient_statistics(chunk, resp)
        return stats, jnp.sum(jnp.where(mask, log_norm, 0.0))

    return chunked_sum(chunk_statistics, x, chunk_size)


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
    centred = x - shift
    init = GMMParams(init.weights.astype(x.dtype), (init.means - shift).astype(x.dtype), init.covariances.astype(x.dtype))

    def cond(state):
        _, previous, current, iteration = state
        not_converged = jnp.abs(current - previous) >= tol
        return (iteration < max_iter) & not_converged

    def body(state):
        params, _, current, iteration = state
        stats, total = e_step(centred, params, chunk_size)
        new_params = m_step(stats, reg_covar)
        # ``current`` holds the log-likelihood of the previous E step, which
        # sklearn's GaussianMixture compares against in the same way.
        return new_params, current, total / n, iteration + 1

    # The first iteration always runs: before it both log-likelihoods are -inf.
    minus_inf = jnp.asarray(-jnp.inf, dtype=x.dtype)
    state = (init, minus_inf, minus_inf, jnp.asarray(0))
    state = jax.lax.while_loop(lambda s: (s[3] == 0) | cond(s), body, state)
    params, previous, current, n_iter = state

    _, final_total = e_step(centred, params, chunk_size)
    converged = jnp.abs(current - previous) < tol
    params = GMMParams(params.weights, params.means + shift, params.covariances)
    return EMResult(params, final_total / n, n_iter, converged)


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
