"""Budget allocation: Hessian costs, closed-form split and its predictions."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpgmm_jax.accounting import mu_from_epsilon_delta
from dpgmm_jax.allocation import closed_form_shares, cost_coefficients, equal_shares, predicted_expected_kl
from dpgmm_jax.em import sufficient_statistics
from dpgmm_jax.kl import matched_bound
from dpgmm_jax.mechanism import (
    group_sensitivities,
    noise_scales_from_shares,
    postprocess_smooth,
    release_statistics,
    symmetric_from_upper,
)
from dpgmm_jax.types import SufficientStatistics

RADIUS = 1.0


def clustered_statistics(rng, n=2000, d=3, n_components=1, scale=0.25):
    centres = rng.uniform(-0.4, 0.4, size=(n_components, d))
    labels = rng.integers(n_components, size=n)
    y = centres[labels] + scale * rng.normal(size=(n, d))
    y *= np.minimum(1.0, RADIUS / np.linalg.norm(y, axis=1))[:, None]
    resp = np.eye(n_components)[labels]
    return sufficient_statistics(jnp.asarray(y), jnp.asarray(resp))


def monte_carlo_expected_kl(stats, shares, mu, n_draws=4000, seed=0):
    """Mean matched bound between the exact and the released mixture over noise draws."""
    reference = postprocess_smooth(stats)
    scales = noise_scales_from_shares(shares, mu, RADIUS)

    def one(key):
        released = release_statistics(key, stats, scales, RADIUS, 1.0, 1e-6).params
        return matched_bound(reference, released)

    values = jax.vmap(one)(jax.random.split(jax.random.key(seed), n_draws))
    return float(jnp.mean(values)), float(jnp.std(values) / np.sqrt(n_draws))


def test_costs_match_finite_differences(rng):
    stats = clustered_statistics(rng, n=500, d=2, n_components=2)
    costs = np.asarray(cost_coefficients(stats))
    reference = postprocess_smooth(stats)
    d = 2
    step = 1e-3

    def bound_with_noise(k, group, index, value):
        z = np.zeros(1 + d + 3)
        z[{"w": 0, "m": 1, "c": 1 + d}[group] + index] = value
        selector = np.eye(2)[k]
        perturbed = SufficientStatistics(
            stats.counts + selector * z[0],
            stats.first_moments + selector[:, None] * z[1 : 1 + d],
            stats.second_moments + selector[:, None, None] * symmetric_from_upper(jnp.asarray(z[1 + d :]), d),
        )
        return float(matched_bound(reference, postprocess_smooth(perturbed)))

    for k in range(2):
        for g, (group, size) in enumerate([("w", 1), ("m", d), ("c", 3)]):
            second = sum(
                (bound_with_noise(k, group, i, step) + bound_with_noise(k, group, i, -step)) / step**2
                for i in range(size)
            )
            assert costs[k, g] == pytest.approx(0.5 * second, rel=1e-3)


def autodiff_costs(stats):
    """Half the traces of the diagonal Hessian blocks of F, by jax.hessian (the reference)."""
    n_components, d = stats.first_moments.shape
    reference = postprocess_smooth(stats)
    n_noise = 1 + d + d * (d + 1) // 2

    def perturbed_bound(z, k):
        selector = jax.nn.one_hot(k, n_components, dtype=z.dtype)
        perturbed = SufficientStatistics(
            stats.counts + selector * z[0],
            stats.first_moments + selector[:, None] * z[1 : 1 + d],
            stats.second_moments + selector[:, None, None] * symmetric_from_upper(z[1 + d :], d),
        )
        return matched_bound(reference, postprocess_smooth(perturbed))

    def component_costs(k):
        diagonal = jnp.diagonal(jax.hessian(perturbed_bound)(jnp.zeros(n_noise, stats.counts.dtype), k))
        return 0.5 * jnp.stack([diagonal[0], jnp.sum(diagonal[1 : 1 + d]), jnp.sum(diagonal[1 + d :])])

    return jax.vmap(component_costs)(jnp.arange(n_components))


@pytest.mark.parametrize("d, n_components", [(1, 1), (2, 3), (4, 2), (7, 4)])
def test_closed_form_costs_match_autodiff_hessian(rng, d, n_components):
    stats = clustered_statistics(rng, n=800, d=d, n_components=n_components)
    np.testing.assert_allclose(cost_coefficients(stats), autodiff_costs(stats), rtol=1e-9)


def test_costs_non_finite_for_empty_component(rng):
    stats = clustered_statistics(rng, n=300, d=2, n_components=2)
    stats = stats._replace(counts=stats.counts.at[1].set(0.0))
    costs = np.asarray(cost_coefficients(stats))
    assert np.all(np.isfinite(costs[0]))
    assert not np.all(np.isfinite(costs[1]))


def test_closed_form_minimises_quadratic_model(rng):
    costs = jnp.asarray(rng.uniform(0.01, 1.0, size=(3, 3)))
    sensitivities = group_sensitivities(RADIUS * 2)
    best = closed_form_shares(costs, sensitivities)
    best_value = predicted_expected_kl(costs, noise_scales_from_shares(best, 1.0, RADIUS * 2))
    for shares in rng.dirichlet(np.ones(3), size=(200, 3)):
        value = predicted_expected_kl(costs, noise_scales_from_shares(jnp.asarray(shares), 1.0, RADIUS * 2))
        assert float(best_value) <= float(value) * (1 + 1e-12)


def test_closed_form_prediction_formula(rng):
    costs = jnp.asarray(rng.uniform(0.01, 1.0, size=(1, 3)))
    sensitivities = group_sensitivities(1.7)
    scales = noise_scales_from_shares(closed_form_shares(costs, sensitivities), 0.8, 1.7)
    expected = float(jnp.sum(jnp.sqrt(costs) * sensitivities) ** 2 / 0.8**2)
    assert float(predicted_expected_kl(costs, scales)) == pytest.approx(expected, rel=1e-10)


def test_min_share_solution_is_constrained_optimum():
    costs = jnp.asarray([[1e-6, 1.0, 4.0], [1.0, 1e-8, 1e-8], [0.3, 0.3, 0.3]])
    sensitivities = jnp.ones(3)
    min_share = 0.1
    shares = np.asarray(closed_form_shares(costs, sensitivities, min_share))
    np.testing.assert_allclose(shares.sum(-1), 1.0)
    assert shares.min() >= min_share - 1e-12

    grid = np.arange(min_share, 1.0 - 2 * min_share + 1e-9, 0.005)
    for k in range(3):
        objective = lambda rho: float(np.sum(np.asarray(costs[k]) / rho))
        brute = min(
            objective(np.array([a, b, 1 - a - b]))
            for a, b in itertools.product(grid, grid)
            if 1 - a - b >= min_share - 1e-12
        )
        assert objective(shares[k]) <= brute * (1 + 1e-9)


def test_prediction_matches_monte_carlo_small_noise(rng):
    stats = clustered_statistics(rng)
    mu = mu_from_epsilon_delta(1.0, 1e-5)
    costs = cost_coefficients(stats)
    shares = closed_form_shares(costs, group_sensitivities(RADIUS))
    predicted = float(predicted_expected_kl(costs, noise_scales_from_shares(shares, mu, RADIUS)))
    measured, _ = monte_carlo_expected_kl(stats, shares, mu)
    assert predicted == pytest.approx(measured, rel=0.15)


def test_closed_form_beats_equal_split(rng):
    stats = clustered_statistics(rng)
    mu = mu_from_epsilon_delta(1.0, 1e-5)
    shares = closed_form_shares(cost_coefficients(stats), group_sensitivities(RADIUS))
    closed_form, error_closed = monte_carlo_expected_kl(stats, shares, mu)
    equal, error_equal = monte_carlo_expected_kl(stats, equal_shares(1, jnp.float64), mu)
    assert closed_form + 3 * error_closed < equal - 3 * error_equal
