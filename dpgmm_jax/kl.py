"""KL divergence between Gaussian mixtures: a matched bound and Monte Carlo.

For mixtures p = sum_k pi_k N_k and q = sum_k rho_k M_k matched component by
component, the log-sum inequality gives

    KL(p || q) <= KL(pi || rho) + sum_k pi_k KL(N_k || M_k)

(Hershey and Olsen, "Approximating the Kullback Leibler divergence between
Gaussian mixture models", ICASSP 2007, Eq. 11, the matched bound). It holds
for every matching, and it is separable in k, so the tightest matching is a
linear assignment problem. The Monte Carlo estimate averages
log p(x) - log q(x) over x ~ p and reports its standard error.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from dpgmm_jax.em import log_prob
from dpgmm_jax.types import GMMParams


def gaussian_kl(mean_p, cov_p, mean_q, cov_q) -> jax.Array:
    """Return KL(N(mean_p, cov_p) || N(mean_q, cov_q)) through Cholesky factors.

    KL = 1/2 [tr(C_q^{-1} C_p) + (m_q - m_p)^T C_q^{-1} (m_q - m_p) - d
              + log det C_q - log det C_p].

    Args:
        mean_p, mean_q: shape (..., d).
        cov_p, cov_q: shape (..., d, d), symmetric positive definite.

    Returns:
        Shape (...).
    """
    d = mean_p.shape[-1]
    batch = jnp.broadcast_shapes(mean_p.shape[:-1], mean_q.shape[:-1], cov_p.shape[:-2], cov_q.shape[:-2])
    mean_p, mean_q = jnp.broadcast_to(mean_p, batch + (d,)), jnp.broadcast_to(mean_q, batch + (d,))
    cov_p, cov_q = jnp.broadcast_to(cov_p, batch + (d, d)), jnp.broadcast_to(cov_q, batch + (d, d))

    chol_p = jnp.linalg.cholesky(cov_p)
    chol_q = jnp.linalg.cholesky(cov_q)

    # tr(C_q^{-1} C_p) = ||L_q^{-1} L_p||_F^2.
    whitened = jax.scipy.linalg.solve_triangular(chol_q, chol_p, lower=True)
    trace_term = jnp.sum(whitened**2, axis=(-2, -1))

    difference = jax.scipy.linalg.solve_triangular(chol_q, (mean_q - mean_p)[..., None], lower=True)[..., 0]
    mahalanobis = jnp.sum(difference**2, axis=-1)

    log_det_q = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol_q, axis1=-2, axis2=-1)), axis=-1)
    log_det_p = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol_p, axis1=-2, axis2=-1)), axis=-1)
    return 0.5 * (trace_term + mahalanobis - d + log_det_q - log_det_p)


def matched_bound(p: GMMParams, q: GMMParams) -> jax.Array:
    """Return the matched upper bound on KL(p || q), component k matched to k.

    Args:
        p, q: mixtures with the same K and d; vmap over leading axes.

    Returns:
        KL(pi_p || pi_q) + sum_k pi_{p,k} KL(N_{p,k} || N_{q,k}), a scalar.
    """
    weight_term = jnp.sum(p.weights * (jnp.log(p.weights) - jnp.log(q.weights)))
    component_kl = gaussian_kl(p.means, p.covariances, q.means, q.covariances)
    return weight_term + jnp.sum(p.weights * component_kl)


def matching_costs(p: GMMParams, q: GMMParams) -> jax.Array:
    """Return the K x K costs pi_{p,i} [log(pi_{p,i}/pi_{q,j}) + KL(N_{p,i} || N_{q,j})].

    The matched bound for a permutation sigma is sum_i cost[i, sigma(i)].
    """
    component_kl = gaussian_kl(
        p.means[:, None], p.covariances[:, None], q.means[None, :], q.covariances[None, :]
    )
    log_ratio = jnp.log(p.weights)[:, None] - jnp.log(q.weights)[None, :]
    return p.weights[:, None] * (log_ratio + component_kl)


def best_matching(p: GMMParams, q: GMMParams) -> np.ndarray:
    """Return the permutation of q's components that minimises the matched bound.

    Solves the linear assignment problem on ``matching_costs`` with SciPy's
    Hungarian solver. Accepts a leading batch axis on ``q`` (and optionally on
    ``p``), and returns permutations of shape (..., K).
    """
    q_batch = np.asarray(q.weights).shape[:-1]
    p_batched = np.asarray(p.weights).ndim > 1
    costs = jax.vmap(matching_costs, in_axes=(0 if p_batched else None, 0))
    flat_q = jax.tree.map(lambda a: jnp.reshape(a, (-1,) + a.shape[len(q_batch):]), q)
    flat_p = jax.tree.map(lambda a: jnp.reshape(a, (-1,) + a.shape[len(q_batch):]), p) if p_batched else p
    cost_matrices = np.asarray(costs(flat_p, flat_q))

    permutations = np.stack([linear_sum_assignment(cost)[1] for cost in cost_matrices])
    return permutations.reshape(q_batch + (cost_matrices.shape[-1],))


def permute_components(params: GMMParams, permutation) -> GMMParams:
    """Reorder components; ``permutation`` may carry the same batch axes as ``params``."""
    permutation = jnp.asarray(permutation)
    return GMMParams(
        jnp.take_along_axis(params.weights, permutation, axis=-1),
        jnp.take_along_axis(params.means, permutation[..., None], axis=-2),
        jnp.take_along_axis(params.covariances, permutation[..., None, None], axis=-3),
    )


def sample(key: jax.Array, params: GMMParams, n_samples: int) -> jax.Array:
    """Draw ``n_samples`` records from a mixture, shape (n_samples, d)."""
    key_components, key_normal = jax.random.split(key)
    d = params.means.shape[-1]

    # Inverse-CDF sampling of the components: one uniform and a binary search
    # per sample, far cheaper on CPU than jax.random.categorical's Gumbel trick.
    cumulative = jnp.cumsum(params.weights)
    uniforms = jax.random.uniform(key_components, (n_samples,), params.weights.dtype) * cumulative[-1]
    components = jnp.minimum(jnp.searchsorted(cumulative, uniforms, side="right"), params.weights.shape[-1] - 1)
    cholesky = jnp.linalg.cholesky(params.covariances)
    standard = jax.random.normal(key_normal, (n_samples, d), params.means.dtype)
    return params.means[components] + jnp.einsum("nij,nj->ni", cholesky[components], standard)


def kl_monte_carlo(key: jax.Array, p: GMMParams, q: GMMParams, n_samples: int = 10_000) -> tuple[jax.Array, jax.Array]:
    """Estimate KL(p || q) by Monte Carlo with samples from p.

    Args:
        key: PRNG key for the samples.
        p, q: mixtures with the same d (K may differ).
        n_samples: number of samples (static under jit).

    Returns:
        ``(estimate, standard_error)``: the sample mean of log p(x) - log q(x)
        and its standard error, sample standard deviation / sqrt(n_samples).
    """
    x = sample(key, p, n_samples)
    log_ratio = log_prob(x, p) - log_prob(x, q)
    estimate = jnp.mean(log_ratio)
    standard_error = jnp.std(log_ratio, ddof=1) / math.sqrt(n_samples)
    return estimate, standard_error
