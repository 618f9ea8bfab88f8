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

from dpgmm_jax.kl import matched_bound
from dpgmm_jax.mechanism import postprocess_smooth, symmetric_from_upper, vech_size
from dpgmm_jax.types import NoiseScales, SufficientStatistics

N_GROUPS = 3


def cost_coefficients(stats: SufficientStatistics) -> jax.Array:
    """Return c_{g,k}, half the trace of each diagonal Hessian block of F.

    The Hessian of F with respect to component k's noise (1 count, d first
    moments and d(d+1)/2 upper-triangular second moments, mirrored as the
    mechanism mirrors them) is computed by JAX autodiff at z = 0.

    Args:
        stats: statistics with positive counts and positive definite implied
            covariances; in DP-EM these are rebuilt from the previous release.

    Returns:
        Shape (K, 3): costs for (weights, means, covariances) of each
        component.
    """
    n_components, d = stats.first_moments.shape
    reference = postprocess_smooth(stats)
    n_noise = 1 + d + vech_size(d)

    def perturbed_bound(z, k):
        selector = jax.nn.one_hot(k, n_components, dtype=z.dtype)
        counts = stats.counts + selector * z[0]
        first_moments = stats.first_moments + selector[:, None] * z[1 : 1 + d]
        second_noise = symmetric_from_upper(z[1 + d :], d)
        second_moments = stats.second_moments + selector[:, None, None] * second_noise
        perturbed = postprocess_smooth(SufficientStatistics(counts, first_moments, second_moments))
        return matched_bound(reference, perturbed)

    def component_costs(k):
        hessian = jax.hessian(perturbed_bound)(jnp.zeros(n_noise, stats.counts.dtype), k)
        diagonal = jnp.diagonal(hessian)
        return 0.5 * jnp.stack([diagonal[0], jnp.sum(diagonal[1 : 1 + d]), jnp.sum(diagonal[1 + d :])])

    return jax.vmap(component_costs)(jnp.arange(n_components))


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
