"""The Gaussian mechanism: sensitivity, calibration, noise and post-processing."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dpgmm_jax.em import sufficient_statistics
from dpgmm_jax.mechanism import (
    add_noise,
    noise_scales_from_shares,
    postprocess,
    release_mu,
    statistics_from_release,
    symmetric_from_upper,
    vech_size,
)
from dpgmm_jax.types import NoiseScales, SufficientStatistics

RADIUS = 2.5


def scaled_contribution(y, resp, scales):
    """One record's statistics with every block divided by its noise scale, flattened."""
    stats = sufficient_statistics(y[None, :], resp[None, :])
    d = y.shape[0]
    rows, cols = jnp.triu_indices(d)
    upper = stats.second_moments[:, rows, cols]
    return jnp.concatenate([
        (stats.counts / scales.weights).ravel(),
        (stats.first_moments / scales.means[:, None]).ravel(),
        (upper / scales.covariances[:, None]).ravel(),
    ])


def to_record(raw):
    """Map an unconstrained vector into the ball ||y|| <= RADIUS, reaching its boundary."""
    norm = jnp.linalg.norm(raw) + 1e-12
    return RADIUS * jnp.tanh(norm) * raw / norm


def maximise(objective, n_params, n_restarts=16, steps=600, seed=0):
    """Gradient ascent from random starts; returns the largest objective value found."""
    optimiser = optax.adam(0.05)

    def run(start):
        def step(carry, _):
            params, state = carry
            grad = jax.grad(lambda p: -objective(p))(params)
            updates, state = optimiser.update(grad, state)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (start, optimiser.init(start)), None, length=steps)
        return objective(params)

    starts = jax.random.normal(jax.random.key(seed), (n_restarts, n_params))
    return float(jnp.max(jax.jit(jax.vmap(run))(starts)))


def random_scales(rng, n_components):
    return NoiseScales(*(jnp.asarray(rng.uniform(0.5, 3.0, n_components)) for _ in range(3)))


@pytest.mark.parametrize("d", [1, 3])
def test_sensitivity_search_add_remove(rng, d):
    n_components = 3
    scales = random_scales(rng, n_components)
    declared = float(release_mu(scales, RADIUS)) ** 2

    def objective(params):
        y = to_record(params[:d])
        resp = jax.nn.softmax(params[d:] * 4.0)
        return jnp.sum(scaled_contribution(y, resp, scales) ** 2)

    found = maximise(objective, d + n_components)
    assert found <= declared * (1 + 1e-6)
    assert found >= 0.99 * declared, "the declared sensitivity should be attained"


def test_sensitivity_search_replace_one(rng):
    d, n_components = 2, 3
    scales = random_scales(rng, n_components)
    declared = float(release_mu(scales, RADIUS, "replace_one")) ** 2

    def objective(params):
        y, y_other = to_record(params[:d]), to_record(params[d : 2 * d])
        resp = jax.nn.softmax(params[2 * d : 2 * d + n_components] * 4.0)
        resp_other = jax.nn.softmax(params[2 * d + n_components :] * 4.0)
        difference = scaled_contribution(y, resp, scales) - scaled_contribution(y_other, resp_other, scales)
        return jnp.sum(difference**2)

    found = maximise(objective, 2 * d + 2 * n_components)
    assert found <= declared * (1 + 1e-6)


def test_shares_calibrate_release_to_mu(rng):
    shares = jnp.asarray(rng.dirichlet(np.ones(3), size=4))
    for relation in ("add_or_remove_one", "replace_one"):
        scales = noise_scales_from_shares(shares, 0.7, RADIUS, relation)
        assert float(release_mu(scales, RADIUS, relation)) == pytest.approx(0.7, rel=1e-12)


def test_noise_on_second_moments_is_symmetric_with_declared_scale():
    d, n_components = 3, 2
    zero = SufficientStatistics(jnp.zeros(n_components), jnp.zeros((n_components, d)), jnp.zeros((n_components, d, d)))
    scales = NoiseScales(jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0]), jnp.array([5.0, 6.0]))
    draws = jax.vmap(lambda key: add_noise(key, zero, scales))(jax.random.split(jax.random.key(1), 20_000))

    assert jnp.allclose(draws.second_moments, jnp.swapaxes(draws.second_moments, -1, -2))
    np.testing.assert_allclose(np.std(draws.counts, axis=0), [1.0, 2.0], rtol=0.03)
    np.testing.assert_allclose(np.std(draws.first_moments, axis=0).mean(-1), [3.0, 4.0], rtol=0.03)
    rows, cols = np.triu_indices(d)
    upper_std = np.std(np.asarray(draws.second_moments)[:, :, rows, cols], axis=0).mean(-1)
    np.testing.assert_allclose(upper_std, [5.0, 6.0], rtol=0.03)


def test_fresh_keys_give_independent_noise():
    d, n_components = 2, 2
    zero = SufficientStatistics(jnp.zeros(n_components), jnp.zeros((n_components, d)), jnp.zeros((n_components, d, d)))
    scales = NoiseScales(jnp.ones(2), jnp.ones(2), jnp.ones(2))
    key_a, key_b = jax.random.split(jax.random.key(0))
    assert not jnp.allclose(add_noise(key_a, zero, scales).counts, add_noise(key_b, zero, scales).counts)


def test_symmetric_from_upper_round_trip(rng):
    d = 4
    upper = jnp.asarray(rng.normal(size=vech_size(d)))
    matrix = symmetric_from_upper(upper, d)
    rows, cols = np.triu_indices(d)
    np.testing.assert_array_equal(matrix[rows, cols], upper)
    np.testing.assert_array_equal(matrix, matrix.T)


@pytest.mark.parametrize("noise_scale", [1e-2, 1e2, 1e6])
@pytest.mark.parametrize("noise_floor_factor", [0.0, 1.0])
def test_postprocess_valid_under_heavy_noise(rng, noise_scale, noise_floor_factor):
    d, n_components = 3, 4
    y = rng.uniform(-1, 1, size=(200, d))
    resp = rng.dirichlet(np.ones(n_components), size=200)
    stats = sufficient_statistics(jnp.asarray(y), jnp.asarray(resp))
    scales = NoiseScales(*(jnp.full(n_components, noise_scale) for _ in range(3)))
    radius = float(np.sqrt(d))

    def one(key):
        noisy = add_noise(key, stats, scales)
        return postprocess(noisy, radius, 1.0, 1e-3, scales.covariances, noise_floor_factor)

    releases = jax.vmap(one)(jax.random.split(jax.random.key(2), 500))
    params = releases.params

    assert np.all(np.isfinite(params.weights))
    assert np.all(np.isfinite(params.means))
    assert np.all(np.isfinite(params.covariances))
    assert np.all(params.weights > 0)
    np.testing.assert_allclose(params.weights.sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(params.covariances, np.swapaxes(params.covariances, -1, -2), atol=1e-12)
    eigenvalues = np.linalg.eigvalsh(np.asarray(params.covariances))
    assert eigenvalues.min() >= 1e-3 * (1 - 1e-6)
    assert eigenvalues.max() <= radius**2 * (1 + 1e-6)
    assert np.all(np.linalg.norm(params.means, axis=-1) <= radius * (1 + 1e-9))
    np.linalg.cholesky(np.asarray(params.covariances))


def test_postprocess_handles_adversarial_statistics():
    d = 2
    stats = SufficientStatistics(
        jnp.array([-1e9, 0.0, 1e-30]),
        jnp.array([[1e12, -1e12], [0.0, 0.0], [1.0, 1.0]]),
        -1e15 * jnp.ones((3, d, d)),
    )
    params = postprocess(stats, 1.0, 1.0, 1e-3).params
    assert np.all(np.isfinite(params.covariances))
    assert np.linalg.eigvalsh(np.asarray(params.covariances)).min() >= 1e-3 * (1 - 1e-6)
    np.testing.assert_allclose(params.weights, [1 / 3] * 3)


def test_statistics_round_trip_through_release(rng):
    d, n_components = 3, 2
    y = rng.uniform(-1, 1, size=(500, d))
    resp = rng.dirichlet(np.ones(n_components), size=500)
    stats = sufficient_statistics(jnp.asarray(y), jnp.asarray(resp))
    release = postprocess(stats, 10.0, 1.0, 1e-9)
    rebuilt = statistics_from_release(release)
    np.testing.assert_allclose(rebuilt.first_moments, stats.first_moments, rtol=1e-10)
    np.testing.assert_allclose(rebuilt.second_moments, stats.second_moments, rtol=1e-10)
