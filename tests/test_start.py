"""The private starts of DP-EM: noisy histogram and noisy k-means."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpgmm_jax import Domain, pld_epsilon, release_gmm
from dpgmm_jax.algorithms import (
    ReleaseConfig,
    dp_em_trace,
    hard_assignment_statistics,
    histogram_bins,
    histogram_start,
    kmeans_start,
    noisy_lloyd_step,
    uses_histogram_start,
)
from dpgmm_jax.em import sufficient_statistics


@pytest.fixture
def clusters(rng):
    centres = np.array([[-0.6, -0.6], [0.6, -0.5], [0.0, 0.7]])
    labels = rng.integers(3, size=3000)
    return centres, np.clip(centres[labels] + 0.05 * rng.normal(size=(3000, 2)), -1, 1)


def test_histogram_start_finds_clusters(clusters):
    centres, y = clusters
    config = ReleaseConfig(3, histogram_cells=256)
    start = histogram_start(jax.random.key(0), jnp.asarray(y), 5.0, np.sqrt(2.0), 1.0, config)
    width = 2.0 / histogram_bins(2, 256)
    distances = np.linalg.norm(centres[:, None, :] - np.asarray(start.params.means)[None], axis=-1)
    assert np.all(distances.min(axis=1) <= width), "every cluster should get a start within one cell"
    np.testing.assert_allclose(np.asarray(start.params.weights), [1 / 3] * 3, atol=0.05)
    assert np.linalg.eigvalsh(np.asarray(start.params.covariances)).min() > 0


def test_histogram_start_accounted(clusters):
    _, y = clusters
    domain = Domain.from_bounds([-1.0, -1.0], [1.0, 1.0])
    params, metadata = release_gmm(y, epsilon=2.0, delta=1e-5, domain=domain, n_components=3,
                                   key=jax.random.key(0), start="histogram", start_share=0.2)
    assert len(metadata["iteration_mus"]) == 11
    assert metadata["iteration_mus"][0] == pytest.approx(np.sqrt(0.2) * metadata["mu"])
    assert pld_epsilon(metadata["iteration_mus"], 1e-5) == pytest.approx(2.0, rel=1e-3)
    assert np.all(np.isfinite(params.means))


def test_histogram_start_falls_back_in_high_dimension():
    assert uses_histogram_start(ReleaseConfig(2, start="histogram"), 13)
    assert not uses_histogram_start(ReleaseConfig(2, start="histogram"), 32)
    assert not uses_histogram_start(ReleaseConfig(2), 2)


def test_invalid_start_rejected():
    with pytest.raises(ValueError, match="start must be one of"):
        ReleaseConfig(2, start="kmedoids").validate()
    with pytest.raises(ValueError, match="start_share must be in"):
        ReleaseConfig(2, start_share=1.0).validate()
    with pytest.raises(ValueError, match="kmeans_iter must be >= 1, got kmeans_iter=0"):
        ReleaseConfig(2, start="kmeans", kmeans_iter=0).validate()


def test_hard_assignment_matches_one_hot(rng):
    y = jnp.asarray(rng.uniform(-1, 1, size=(1001, 3)))
    centres = jnp.asarray(rng.uniform(-1, 1, size=(4, 3)))
    nearest = np.argmin(np.linalg.norm(np.asarray(y)[:, None] - np.asarray(centres)[None], axis=-1), axis=1)
    expected = sufficient_statistics(y, jnp.asarray(np.eye(4)[nearest]))
    actual = hard_assignment_statistics(y, centres, chunk_size=128)
    np.testing.assert_allclose(np.asarray(actual.counts), np.asarray(expected.counts), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(actual.first_moments), np.asarray(expected.first_moments),
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(actual.squared_norms),
                               np.trace(np.asarray(expected.second_moments), axis1=-2, axis2=-1),
                               rtol=1e-10, atol=1e-10)


def test_kmeans_start_finds_clusters(clusters):
    centres, y = clusters
    config = ReleaseConfig(3, start="kmeans", kmeans_iter=5)
    # Lloyd's algorithm from a data-independent start can merge two clusters, so
    # the test expects all three clusters in most runs, not in every run.
    found = 0
    for seed in range(10):
        start = kmeans_start(jax.random.key(seed), jnp.asarray(y), 20.0, np.sqrt(2.0), config)
        distances = np.linalg.norm(centres[:, None, :] - np.asarray(start.params.means)[None], axis=-1)
        found += bool(np.all(distances.min(axis=1) <= 0.05))
        assert np.linalg.eigvalsh(np.asarray(start.params.covariances)).min() > 0
        np.testing.assert_allclose(np.sum(np.asarray(start.params.weights)), 1.0, rtol=1e-12)
    assert found >= 7, f"the start found all three clusters in {found} of 10 runs"


@pytest.mark.parametrize("relation, multiplier, spread", [("add_or_remove_one", 1.0, False),
                                                         ("replace_one", 2.0, False),
                                                         ("add_or_remove_one", 1.0, True)])
def test_lloyd_step_noise_is_calibrated(relation, multiplier, spread):
    # One cluster of N records at c with ||c|| = R/2: the new centre is
    # (N c + sigma_s z) / (N + sigma_n z'), so to first order its variance is
    # sigma_s^2 / N^2 across c and (sigma_s^2 + sigma_n^2 ||c||^2) / N^2 along c.
    n_records, radius, mu = 2000, 2.0, 0.5
    point = np.array([radius / 2.0, 0.0])
    y = jnp.asarray(np.tile(point, (n_records, 1)))
    config = ReleaseConfig(1, relation=relation)
    keys = jax.random.split(jax.random.key(3), 20000)
    step = jax.vmap(lambda k: noisy_lloyd_step(k, y, jnp.zeros((1, 2)), mu, radius, config, spread))(keys)
    moved = np.asarray(step.centres)[:, 0]
    groups = 3.0 if spread else 2.0
    sigma_counts = multiplier * np.sqrt(groups) / mu
    sigma_sums = multiplier * np.sqrt(groups) * radius / mu
    across = np.std(moved[:, 1]) * n_records
    along = np.std(moved[:, 0]) * n_records
    assert across == pytest.approx(sigma_sums, rel=0.03)
    assert along == pytest.approx(np.hypot(sigma_sums, sigma_counts * radius / 2.0), rel=0.03)


def test_kmeans_start_accounting(clusters):
    _, y = clusters
    domain = Domain.from_bounds([-1.0, -1.0], [1.0, 1.0])
    params, metadata = release_gmm(y, epsilon=2.0, delta=1e-5, domain=domain, n_components=3,
                                   key=jax.random.key(0), start="kmeans", start_share=0.2, kmeans_iter=4, n_iter=5)
    assert len(metadata["iteration_mus"]) == 4 + 5
    np.testing.assert_allclose(metadata["iteration_mus"][:4], np.sqrt(0.2 / 4) * metadata["mu"], rtol=1e-12)
    assert metadata["composed_mu"] == pytest.approx(metadata["mu"], rel=1e-12)
    assert pld_epsilon(metadata["iteration_mus"], 1e-5) == pytest.approx(2.0, rel=1e-3)
    assert metadata["start"] == "kmeans"
    assert metadata["kmeans_iter"] == 4
    assert metadata["allocation_source"].startswith("private k-means start")
    assert np.all(np.isfinite(params.means))


def test_kmeans_start_plans_first_iteration(clusters):
    # The first iteration plans from the start's noisy counts, not the equal split.
    _, y = clusters
    config = ReleaseConfig(3, start="kmeans", n_iter=2)
    _, shares = dp_em_trace(jax.random.key(0), jnp.asarray(y), 1.0, np.sqrt(2.0), config, 1.0)
    assert not np.allclose(np.asarray(shares[0]), 1.0 / 3.0)


def test_histogram_fallback_metadata(rng):
    y = rng.uniform(-1.0, 1.0, size=(300, 17))
    domain = Domain.from_bounds(-np.ones(17), np.ones(17))
    _, metadata = release_gmm(y, epsilon=1.0, delta=1e-5, domain=domain, n_components=2,
                              key=jax.random.key(0), start="histogram", n_iter=3)
    assert metadata["start"] == "data_independent"
    assert metadata["start_share"] is None
    assert metadata["n_releases"] == 3


def test_kmeans_start_single_step_without_jit(clusters):
    _, y = clusters
    config = ReleaseConfig(3, start="kmeans", kmeans_iter=1)
    with jax.disable_jit():
        start = kmeans_start(jax.random.key(0), jnp.asarray(y[:300]), 5.0, np.sqrt(2.0), config)
    assert np.all(np.isfinite(np.asarray(start.params.means)))
    assert np.asarray(start.params.covariances).max() <= 2.0 / 2 + 1e-12


@pytest.mark.parametrize(
    "n_features, n_components, start, n_iter",
    [(2, 3, "histogram_em", 1), (4, 3, "histogram_em", 1), (5, 3, "data_independent", 10),
     (13, 3, "data_independent", 10), (4, 300, "data_independent", 10)],
)
def test_auto_start_resolves_from_public_values(n_features, n_components, start, n_iter):
    # d = 5 leaves 3 bins per axis at 256 cells, and 300 components need more than 4^4 cells.
    resolved = ReleaseConfig(n_components).resolve(n_features)
    assert resolved.start == start
    assert resolved.n_iter == n_iter


def test_explicit_settings_survive_resolve():
    config = ReleaseConfig(3, start="kmeans", n_iter=4, allocation="equal")
    assert config.resolve(2) == config
    assert ReleaseConfig(3, start="histogram_em").resolve(2).n_iter == 1
    assert ReleaseConfig(3, start="histogram_em", n_iter=2).resolve(2).n_iter == 2


def test_validate_checks_iterations_without_n_iter():
    assert ReleaseConfig(3, n_iter=3.0).validate().n_iter == 3
    assert isinstance(ReleaseConfig(3, n_iter=3.0).validate().n_iter, int)
    with pytest.raises(ValueError, match="n_iter must be an integer >= 1 or None"):
        ReleaseConfig(3, n_iter=float("inf")).validate()
    with pytest.raises(ValueError, match="last_share must be in"):
        ReleaseConfig(3, last_share=1.5).validate()
    with pytest.raises(ValueError, match="last_share must be in"):
        ReleaseConfig(3, n_iter=1, last_share=0.0).validate()


@pytest.mark.parametrize("start, n_features, allocation", [
    ("auto", 2, "optax"), ("histogram_em", 2, "optax"), ("auto", 13, "closed_form"),
    ("kmeans", 2, "closed_form"), ("data_independent", 2, "closed_form"),
])
def test_auto_allocation_follows_the_start(start, n_features, allocation):
    assert ReleaseConfig(3, start=start).resolve(n_features).allocation == allocation


def test_histogram_em_start_accounted(clusters):
    _, y = clusters
    domain = Domain.from_bounds([-1.0, -1.0], [1.0, 1.0])
    params, metadata = release_gmm(y, epsilon=2.0, delta=1e-5, domain=domain, n_components=3,
                                   mode="dp_em", key=jax.random.key(0))
    assert metadata["start"] == "histogram_em"
    assert metadata["start_share"] == 0.1
    assert metadata["n_iter"] == 1
    np.testing.assert_allclose(metadata["iteration_mus"], np.sqrt([0.1, 0.9]) * metadata["mu"], rtol=1e-12)
    assert pld_epsilon(metadata["iteration_mus"], 1e-5) == pytest.approx(2.0, rel=1e-3)
    assert metadata["allocation_source"].startswith("private histogram_em start")
    assert metadata["allocation"] == "optax"
    assert metadata["solver_draws"] == 32
    assert metadata["solver_steps"] == 25
    assert metadata["noise_floor_factor"] == 0.5
    assert metadata["histogram_cells"] == 256
    assert metadata["histogram_threshold"] == 1.0
    assert np.all(np.isfinite(params.means))


def test_histogram_em_start_finds_clusters(clusters):
    centres, y = clusters
    config = ReleaseConfig(3, start="histogram_em")
    release, shares = dp_em_trace(jax.random.key(0), jnp.asarray(y), 5.0, np.sqrt(2.0), config, 1.0)
    distances = np.linalg.norm(centres[:, None, :] - np.asarray(release.params.means)[None], axis=-1)
    assert distances.min(axis=1).max() < 0.05
    assert shares.shape == (1, 3, 3)
    # The only iteration plans from the start's counts, so it need not be the equal split.
    assert not np.allclose(np.asarray(shares[0]), 1.0 / 3.0)


def test_histogram_em_start_needs_a_static_half_width(clusters):
    _, y = clusters
    with pytest.raises(ValueError, match="half_width must be a Python float"):
        dp_em_trace(jax.random.key(0), jnp.asarray(y), 1.0, np.sqrt(2.0), ReleaseConfig(3, start="histogram_em"))


def test_histogram_em_start_needs_its_grid(rng):
    y = rng.uniform(-1.0, 1.0, size=(200, 6))
    domain = Domain.from_bounds(-np.ones(6), np.ones(6))
    with pytest.raises(ValueError, match="bins per axis"):
        release_gmm(y, epsilon=1.0, delta=1e-5, domain=domain, n_components=2, mode="dp_em",
                    key=jax.random.key(0), start="histogram_em")
    _, metadata = release_gmm(y, epsilon=1.0, delta=1e-5, domain=domain, n_components=2, mode="dp_em",
                              key=jax.random.key(0), allocation="closed_form")
    assert metadata["start"] == "data_independent"
    assert metadata["n_iter"] == 10
    assert metadata["n_releases"] == 10
