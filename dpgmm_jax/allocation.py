"""Split the privacy budget of a release across weights, means and covariances.

Let F(z) be the matched KL bound between the mixture post-processed from
statistics and the one post-processed from statistics + z. F(0) = 0 and its
gradient vanishes there, so for noise z with independent N(0, sigma_{g,k}^2)
coordinates

    E[F] ~= sum_{g,k} c_{g,k} sigma_{g,k}^2,
    c_{g,k} = 1/2 tr(Hessian block of F for group g of component k).

Minimising that quadratic model subject to sum_g Delta_g^2 / sigma_{g,k}^2 =
mu^2 for every component (the GDP constraint of ``dpgmm_jax.mechanism``)
gives, by a Lagrange multiplier, each component the shares of mu^2

    rho_{g,k} = sqrt(c_{g,k}) Delta_g / sum_h sqrt(c_{h,k}) Delta_h,

and the predicted cost E[F] ~= sum_k (sum_h sqrt(c_{h,k}) Delta_h)^2 / mu^2.
The quadratic model breaks when noise is large (small epsilon, small
components), where it can starve one group. A public minimum share per group
guards against that, and water-filling over the three groups solves the
floored problem exactly.
"""

import jax
import jax.numpy as jnp

from dpgmm_jax.mechanism import postprocess_smooth
from dpgmm_jax.types import NoiseScales, SufficientStatistics

N_GROUPS = 3


def cost_coefficients(stats: SufficientStatistics) -> jax.Array:
    """Return c_{g,k}, half the trace of each diagonal Hessian block of F.

    F(z) = B(g(s), g(s + z)), where g is ``postprocess_smooth`` and B is the
    matched bound. B(theta, .) has zero value and zero gradient at theta, so
    at z = 0 the Hessian of F is J^T G J, with J the Jacobian of g and G the
    Hessian of B in the released parameters: the Fisher metric
    sum_j dpi_j^2 / pi_j + sum_j pi_j (dm_j^T P_j dm_j + 1/2 tr(P_j dC_j P_j dC_j)),
    P_j = C_j^{-1} (the second-order terms of the categorical and Gaussian
    KL divergences). Pushing the unit noise directions of component k
    (count, first moments, upper-triangular second moments, mirrored as
    the mechanism mirrors them) through J gives, with n = n_k,
    N = sum_j n_j, pi = n / N, a = m^T P m and P the precision of component k,

        c_w = 1/2 [(1 - pi) / (N n) + pi (a^2 + d) / (2 n^2)]
        c_m = pi / (2 n^2) [(1 + a) tr P + m^T P^2 m]
        c_c = pi / (4 n^2) [||P||_F^2 + (tr P)^2 - sum_i P_ii^2].

    These closed forms cost O(K d^3), against O(K d^5) and a d(d+1)/2-wide
    Hessian for autodiff, and agree with ``jax.hessian`` of F to 1e-9 relative
    (tests/test_allocation.py).

    Args:
        stats: statistics with positive counts and positive definite implied
            covariances; in DP-EM these are rebuilt from the previous release.

    Returns:
        Shape (K, 3): costs for (weights, means, covariances) of each
        component. They are non-finite for a component whose count or
        covariance is invalid.
    """
    params = postprocess_smooth(stats)
    counts = stats.counts
    total = jnp.sum(counts)
    weights = params.weights
    d = params.means.shape[-1]

    identity = jnp.broadcast_to(jnp.eye(d, dtype=counts.dtype), params.covariances.shape)
    precisions = jnp.linalg.solve(params.covariances, identity)
    precisions = 0.5 * (precisions + jnp.swapaxes(precisions, -1, -2))
    projected = jnp.einsum("kij,kj->ki", precisions, params.means)
    mahalanobis = jnp.einsum("ki,ki->k", params.means, projected)
    trace = jnp.trace(precisions, axis1=-2, axis2=-1)
    squared_norm = jnp.sum(precisions**2, axis=(-2, -1))
    diagonal_squares = jnp.sum(jnp.diagonal(precisions, axis1=-2, axis2=-1) ** 2, axis=-1)

    n_squared = counts**2
    weight_costs = 0.5 * ((1.0 - weights) / (total * counts) + weights * (mahalanobis**2 + d) / (2.0 * n_squared))
    mean_costs = weights / (2.0 * n_squared) * ((1.0 + mahalanobis) * trace + jnp.sum(projected**2, axis=-1))
    covariance_costs = weights / (4.0 * n_squared) * (squared_norm + trace**2 - diagonal_squares)
    return jnp.stack([weight_costs, mean_costs, covariance_costs], axis=-1)


def equal_shares(n_components: int, dtype=jnp.float32) -> jax.Array:
    """Return the baseline split: a third of mu^2 per group, shape (K, 3)."""
    return jnp.full((n_components, N_GROUPS), 1.0 / N_GROUPS, dtype=dtype)


def closed_form_shares(costs: jax.Array, sensitivities: jax.Array, min_share: float = 0.0) -> jax.Array:
    """Return the shares of mu^2 that minimise the quadratic model of E[KL].

    Without a floor, rho_{g,k} = sqrt(c_{g,k}) Delta_g / sum_h sqrt(c_{h,k})
    Delta_h. With ``min_share`` > 0 the problem gains rho_{g,k} >= min_share;
    its KKT conditions keep the proportional rule on the groups above the
    floor, found here by water-filling (at most three passes, one per group).

    Args:
        costs: shape (K, 3), from ``cost_coefficients``.
        sensitivities: shape (3,), (Delta_w, Delta_m, Delta_c).
        min_share: public floor per group, in [0, 1/3).

    Returns:
        Shape (K, 3), positive rows that sum to one.
    """
    # A component the allocation cannot model (non-finite costs, as for a
    # component with a near-zero count) falls back to the equal split.
    modelled = jnp.all(jnp.isfinite(costs), axis=-1, keepdims=True)
    costs = jnp.where(modelled, costs, 1.0)

    tiny = jnp.finfo(costs.dtype).tiny
    proportional = jnp.sqrt(jnp.maximum(costs, 0.0)) * sensitivities[None, :] + tiny
    floored = jnp.zeros(proportional.shape, dtype=bool)

    for _ in range(N_GROUPS):
        free = jnp.where(floored, 0.0, proportional)
        free_mass = 1.0 - min_share * jnp.sum(floored, axis=-1, keepdims=True)
        shares = jnp.where(floored, min_share, free_mass * free / jnp.sum(free, axis=-1, keepdims=True))
        floored = floored | (shares < min_share)

    return jnp.where(modelled, shares, 1.0 / N_GROUPS)


def predicted_expected_kl(costs: jax.Array, scales: NoiseScales) -> jax.Array:
    """Return the quadratic prediction sum_{g,k} c_{g,k} sigma_{g,k}^2 of E[KL]."""
    sigmas = jnp.stack([scales.weights, scales.means, scales.covariances], axis=-1)
    return jnp.sum(costs * sigmas**2)
