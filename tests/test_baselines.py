"""Baselines: RDP calibration, valid outputs under vmap, and convergence without noise."""

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dp_accounting.rdp import rdp_privacy_accountant

from dpgmm_jax.accounting import mu_from_epsilon_delta
from dpgmm_jax.algorithms import data_independent_init
from dpgmm_jax.baselines import (
    DpsgdConfig,
    ParkConfig,
    dpsgd_gmm,
    dpsgd_noise_multiplier,
    from_gmm,
    park_dp_em,
    park_noise_multiplier,
    sklearn_fit,
    to_gmm,
)
from dpgmm_jax.data import make_synthetic
from dpgmm_jax.domain import Domain, to_mechanism_coordinates
from dpgmm_jax.kl import kl_monte_carlo
from dpgmm_jax.types import GMMParams

DELTA = 1e-5
RADIUS = 4.0


@pytest.fixture(scope="module")
def synthetic():
    dataset = make_synthetic(n_samples=2000, n_components=3, n_features=2, separation=3.0, seed=1)
    y, _ = to_mechanism_coordinates(dataset.x, Domain.from_ball([0.0, 0.0], RADIUS))
    model = GMMParams(*(jnp.asarray(a) for a in dataset.generating_model))
    return jnp.asarray(y), model


def rdp_epsilon(event, relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE):
    accountant = rdp_privacy_accountant.RdpAccountant(neighboring_relation=relation)
    return accountant.compose(event).get_epsilon(DELTA)


def park_event(z, n_iter):
    return dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), 3 * n_iter)


def assert_valid(params, n_components):
    weights = np.asarray(params.weights)
    assert weights.shape[-1] == n_components
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-9)
    assert np.all(weights > 0)
    assert np.all(np.isfinite(params.means))
    assert np.linalg.eigvalsh(np.asarray(params.covariances)).min() > 0


@pytest.mark.parametrize("epsilon", [0.3, 1.0, 10.0])
def test_park_calibration_meets_target_tightly(epsilon):
    z = park_noise_multiplier(epsilon, DELTA, n_iter=10)
    assert rdp_epsilon(park_event(z, 10)) <= epsilon * (1 + 1e-6)
    assert rdp_epsilon(park_event(0.97 * z, 10)) > epsilon


def test_park_rdp_needs_more_noise_than_gdp():
    # GDP gives the 30 releases mu_t = mu / sqrt(30) each, i.e. z = sqrt(30) / mu.
    z_rdp = park_noise_multiplier(1.0, DELTA, n_iter=10)
    z_gdp = np.sqrt(30) / mu_from_epsilon_delta(1.0, DELTA)
    assert z_rdp >= z_gdp


def test_park_calibration_rejects_bad_n_iter():
    with pytest.raises(ValueError, match="n_iter"):
        park_noise_multiplier(1.0, DELTA, n_iter=0)


def test_dpsgd_poisson_calibration_meets_target():
    config = DpsgdConfig(n_components=3, n_records=2000, batch_size=100, epochs=2)
    z = dpsgd_noise_multiplier(1.0, DELTA, config)
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.05, dp_accounting.GaussianDpEvent(z)), config.steps)
    assert config.steps == 40
    assert rdp_epsilon(event) <= 1.0 * (1 + 1e-6)


def test_dpsgd_fixed_calibration_doubles_sensitivity():
    config = DpsgdConfig(n_components=3, n_records=2000, batch_size=100, epochs=2, sampling="fixed")
    z = dpsgd_noise_multiplier(1.0, DELTA, config)
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.SampledWithoutReplacementDpEvent(2000, 100, dp_accounting.GaussianDpEvent(z / 2)),
        config.steps)
    assert rdp_epsilon(event, dp_accounting.NeighboringRelation.REPLACE_ONE) <= 1.0 * (1 + 1e-6)


@pytest.mark.parametrize("field, value", [("batch_size", 0), ("batch_size", 5000), ("sampling", "shuffle"),
                                          ("epochs", 0.0), ("l2_norm_clip", -1.0)])
def test_dpsgd_config_rejects_bad_value(field, value):
    config = DpsgdConfig(n_components=3, n_records=2000)._replace(**{field: value})
    with pytest.raises(ValueError, match=field):
        config.validate()


def test_park_dp_em_vmaps_to_valid_mixtures(synthetic):
    y, _ = synthetic
    keys = jax.random.split(jax.random.key(0), 3)
    noise = jnp.asarray([1.0, 20.0, 200.0])
    fits = jax.vmap(park_dp_em, in_axes=(0, None, 0, None, None))(keys, y, noise, RADIUS, ParkConfig(3, n_iter=5))
    assert fits.means.shape == (3, 3, 2)
    assert_valid(fits, 3)


def test_park_dp_em_improves_with_less_noise(synthetic):
    y, model = synthetic
    config = ParkConfig(3, n_iter=20)
    keys = jax.random.split(jax.random.key(1), 8)
    batched = jax.vmap(park_dp_em, in_axes=(0, None, None, None, None))

    def median_kl(noise_multiplier):
        fits = batched(keys, y, noise_multiplier, RADIUS, config)
        kls = [kl_monte_carlo(jax.random.key(2), model, jax.tree.map(lambda a: a[i], fits), 4000)[0]
               for i in range(len(keys))]
        return float(np.median(kls))

    assert median_kl(1e-3) < median_kl(100.0)


def test_unconstrained_round_trip(rng):
    factors = rng.normal(size=(2, 3, 3))
    covariances = factors @ np.swapaxes(factors, 1, 2) + 0.5 * np.eye(3)
    params = GMMParams(jnp.asarray([0.3, 0.7]), jnp.asarray(rng.normal(size=(2, 3))), jnp.asarray(covariances))
    back = to_gmm(from_gmm(params), radius=100.0, eigenvalue_floor=1e-6)
    np.testing.assert_allclose(back.weights, params.weights, rtol=1e-9)
    np.testing.assert_allclose(back.means, params.means, rtol=1e-9)
    np.testing.assert_allclose(back.covariances, params.covariances, rtol=1e-7)


@pytest.mark.parametrize("sampling", ["poisson", "fixed"])
def test_dpsgd_vmaps_to_valid_mixtures(synthetic, sampling):
    y, _ = synthetic
    config = DpsgdConfig(3, n_records=y.shape[0], batch_size=200, epochs=1, sampling=sampling).validate()
    keys = jax.random.split(jax.random.key(0), 2)
    noise = jnp.asarray([0.5, 50.0])
    fits = jax.vmap(dpsgd_gmm, in_axes=(0, None, 0, None, None))(keys, y, noise, RADIUS, config)
    assert_valid(fits, 3)
    assert np.all(np.linalg.norm(np.asarray(fits.means), axis=-1) <= RADIUS * (1 + 1e-9))
    assert np.linalg.eigvalsh(np.asarray(fits.covariances)).max() <= RADIUS**2 * (1 + 1e-9)


def test_dpsgd_without_noise_beats_its_start(synthetic):
    y, model = synthetic
    config = DpsgdConfig(3, n_records=y.shape[0], batch_size=200, epochs=10, learning_rate=0.05).validate()
    key = jax.random.key(3)
    fit = dpsgd_gmm(key, y, 0.0, RADIUS, config)
    # dpsgd_gmm draws its start from the first of three splits of its key.
    start = data_independent_init(jax.random.split(key, 3)[0], 3, 2, RADIUS, y.dtype).params
    kl_fit, _ = kl_monte_carlo(jax.random.key(4), model, fit, 4000)
    kl_start, _ = kl_monte_carlo(jax.random.key(4), model, start, 4000)
    assert kl_fit < 0.5 * kl_start


def test_sklearn_fit_recovers_generating_model(synthetic):
    y, model = synthetic
    fit = sklearn_fit(np.asarray(y), 3, seed=0)
    kl, standard_error = kl_monte_carlo(jax.random.key(5), model, GMMParams(*map(jnp.asarray, fit)), 4000)
    assert kl < 0.05 + 3 * standard_error
