"""Gradient-based budget allocation with optax.

The closed-form split of ``dpgmm_jax.allocation`` minimises a second-order
model of the expected KL divergence, which breaks where noise is large: small
epsilon, small components, and post-processing that floors counts and clips
eigenvalues. This solver minimises a Monte Carlo estimate of the expected
matched KL bound of the post-processed release directly.

Each component's split of mu^2 over (weights, means, covariances) is
parameterised by softmax logits, so every candidate satisfies the GDP
constraint sum_g Delta_g^2 / sigma_{g,k}^2 = mu^2 exactly. The noise is
reparameterised, z = sigma * eps with standard normal eps drawn once per
solve (common random numbers), so the objective is a smooth deterministic
function of the logits that optax can minimise. The solve starts from the
closed form and returns the best iterate seen, the start included, so its
objective on the solver's draws is never worse than the closed form's.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from dpgmm_jax.allocation import closed_form_shares, cost_coefficients
from dpgmm_jax.kl import matched_bound
from dpgmm_jax.mechanism import (
    group_sensitivities,
    noise_scales_from_shares,
    postprocess,
    symmetric_from_upper,
    vech_size,
)
from dpgmm_jax.types import SufficientStatistics


class SolverSettings(NamedTuple):
    """Static settings of the optax allocation solver.

    Attributes:
        n_draws: noise draws in the Monte Carlo objective.
        n_steps: optimiser steps.
        learning_rate: Adam step size on the logits.
        min_share: floor on the closed-form start, as in ``closed_form_shares``.
        count_floor: post-processing floor on counts.
        eigenvalue_floor: post-processing floor on covariance eigenvalues.
        noise_floor_factor: kappa of the noise-aware eigenvalue floor.
    """

    n_draws: int = 128
    n_steps: int = 100
    learning_rate: float = 0.05
    min_share: float = 0.05
    count_floor: float = 1.0
    eigenvalue_floor: float = 1e-3
    noise_floor_factor: float = 0.0


class SolverResult(NamedTuple):
    """Outcome of ``optimise_shares``.

    Attributes:
        shares: shape (K, 3), the best split found.
        objective: Monte Carlo expected KL at ``shares`` on the solver's draws.
        start_objective: the same objective at the closed-form start.
        start_shares: shape (K, 3), the closed-form start.
    """

    shares: jax.Array
    objective: jax.Array
    start_objective: jax.Array
    start_shares: jax.Array


def expected_kl(
    shares: jax.Array,
    stats: SufficientStatistics,
    standard_noise: jax.Array,
    mu,
    radius,
    settings: SolverSettings,
    relation: str = "add_or_remove_one",
) -> jax.Array:
    """Return the Monte Carlo mean of the matched KL bound over fixed noise draws.

    Args:
        shares: shape (K, 3), each row on the simplex.
        stats: the statistics the allocation may look at (released or public).
        standard_noise: standard normal draws of shape (n_draws, K, 1 + d + d(d+1)/2).
        mu: the release's GDP budget.
        radius: the domain radius R.
        settings: post-processing floors.
        relation: the neighbouring relation.

    Returns:
        Mean over draws of KL bound(post-process(stats) || post-process(stats + noise)).
    """
    d = stats.first_moments.shape[-1]
    scales = noise_scales_from_shares(shares, mu, radius, relation)
    reference = postprocess(stats, radius, settings.count_floor, settings.eigenvalue_floor).params

    def one(noise):
        noisy = SufficientStatistics(
            stats.counts + scales.weights * noise[:, 0],
            stats.first_moments + scales.means[:, None] * noise[:, 1 : 1 + d],
            stats.second_moments + symmetric_from_upper(scales.covariances[:, None] * noise[:, 1 + d :], d),
        )
        released = postprocess(
            noisy, radius, settings.count_floor, settings.eigenvalue_floor,
            scales.covariances, settings.noise_floor_factor,
        ).params
        return matched_bound(reference, released)

    return jnp.mean(jax.vmap(one)(standard_noise))


def draw_standard_noise(key: jax.Array, stats: SufficientStatistics, n_draws: int) -> jax.Array:
    """Draw the common random numbers of one solve, shape (n_draws, K, 1 + d + d(d+1)/2)."""
    n_components, d = stats.first_moments.shape
    return jax.random.normal(key, (n_draws, n_components, 1 + d + vech_size(d)), stats.counts.dtype)


@functools.partial(jax.jit, static_argnames=("settings", "relation"))
def optimise_shares(
    key: jax.Array,
    stats: SufficientStatistics,
    mu,
    radius,
    settings: SolverSettings = SolverSettings(),
    relation: str = "add_or_remove_one",
) -> SolverResult:
    """Find each component's split of mu^2 by minimising Monte Carlo expected KL.

    Args:
        key: PRNG key for the solver's noise draws. They only plan the
            allocation; the release itself draws fresh noise.
        stats: statistics the allocation may look at: the previous release,
            a pilot release or a public prior, never the private data.
        mu: the GDP budget of the release being planned.
        radius: the domain radius R.
        settings: static solver settings.
        relation: the neighbouring relation.

    Returns:
        A ``SolverResult``. Every row of ``shares`` sums to one, so the
        release is exactly mu-GDP.
    """
    sensitivities = group_sensitivities(radius, relation)
    start = closed_form_shares(cost_coefficients(stats), sensitivities, settings.min_share)
    standard_noise = draw_standard_noise(key, stats, settings.n_draws)

    def objective(logits):
        return expected_kl(jax.nn.softmax(logits, axis=-1), stats, standard_noise, mu, radius, settings, relation)

    optimiser = optax.adam(settings.learning_rate)
    start_logits = jnp.log(start)
    start_objective = objective(start_logits)

    def step(carry, _):
        logits, state, best_logits, best_value = carry
        value, grad = jax.value_and_grad(objective)(logits)
        grad = jnp.where(jnp.isfinite(grad), grad, 0.0)

        improved = value < best_value
        best_logits = jnp.where(improved, logits, best_logits)
        best_value = jnp.where(improved, value, best_value)

        updates, state = optimiser.update(grad, state, logits)
        return (optax.apply_updates(logits, updates), state, best_logits, best_value), None

    initial = (start_logits, optimiser.init(start_logits), start_logits, start_objective)
    (logits, _, best_logits, best_value), _ = jax.lax.scan(step, initial, None, length=settings.n_steps)

    # The last iterate has not been evaluated inside the loop.
    last_value = objective(logits)
    best_logits = jnp.where(last_value < best_value, logits, best_logits)
    best_value = jnp.minimum(last_value, best_value)
    return SolverResult(jax.nn.softmax(best_logits, axis=-1), best_value, start_objective, start)
