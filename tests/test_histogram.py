"""The histogram release: one Gaussian release of cell counts, then EM as post-processing."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpgmm_jax import Domain, DPGaussianMixture, PublicPrior, pld_epsilon, release_gmm
from dpgmm_jax.algorithms import ReleaseConfig
from dpgmm_jax.em import fit_em, initial_params_from_means, sufficient_statistics
from dpgmm_jax.histogram import (
    MAX_HISTOGRAM_CELLS,
    background_em,
    bins_from_count,
    check_histogram_grid,
    counted_histogram_em,
    histogram_em,
    make_grid,
    noisy_histogram,
    noisy_record_count,
    sheppard_correction,
    weighted_kmeans,
)
from dpgmm_jax.kl import kl_monte_carlo
from dpgmm_jax.ledger import PrivacyAccountant
from dpgmm_jax.types import GMMParams, SufficientStatistics
from dpgmm_jax.validation import PrivacyLeakWarning

SQRT2 = math.sqrt(2.0)


@pytest.fixture
def mixture(rng):
    """Three clusters in the unit square, 4,000 records, and their generating model."""
    means = np.array([[-0.5, -0.4], [0.5, -0.3], [0.0, 0.5]])
    scales = np.array([0.12, 0.08, 0.15])
    labels = rng.integers(3, size=4000)
    y = means[labels] + scales[labels, None] * rng.normal(size=(4000, 2))
    covariances = scales[:, None, None] ** 2 * np.eye(2)
    return np.clip(y, -0.999, 0.999), GMMParams(np.full(3, 1 / 3), means, covariances)


def exact_counts(y, bins, half_width):
    """The cell counts by NumPy, indexed like ``make_grid``: cell = sum_j i_j b^j."""
    counts, _ = np.histogramdd(y, bins=bins, range=[(-half_width, half_width)] * y.shape[1])
    return counts.transpose(np.arange(y.shape[1])[::-1]).ravel()


@pytest.mark.parametrize("relation, sensitivity", [("add_or_remove_one", 1.0), ("replace_one", SQRT2)])
def test_noise_has_the_calibrated_scale(mixture, relation, sensitivity):
    y, _ = mixture
    mu = 0.5
    keys = jax.random.split(jax.random.key(0), 20)
    noisy = jax.vmap(lambda k: noisy_histogram(k, jnp.asarray(y), mu, 16, 1.0, relation))(keys)
    noise = np.asarray(noisy) - exact_counts(y, 16, 1.0)[None]
    # 5,120 draws: the sample standard deviation has a relative error near 1%.
    assert np.std(noise) == pytest.approx(sensitivity / mu, rel=0.05)
    assert abs(np.mean(noise)) < 0.1 * sensitivity / mu


@pytest.mark.parametrize("extra", [[0.3, -0.2], [5.0, -7.0], [0.999, 0.999]])
def test_one_record_moves_one_count(mixture, extra):
    """With the same key the noise cancels, so the difference is the counts' change: L2 norm 1."""
    y, _ = mixture
    neighbour = np.vstack([y, [extra]])
    key = jax.random.key(13)
    with_record = noisy_histogram(key, jnp.asarray(neighbour), 0.7, 16, 1.0, "add_or_remove_one")
    without_record = noisy_histogram(key, jnp.asarray(y), 0.7, 16, 1.0, "add_or_remove_one")
    difference = np.asarray(with_record) - np.asarray(without_record)
    assert np.linalg.norm(difference) == pytest.approx(1.0, abs=1e-9)


def test_replace_one_moves_counts_sqrt2(mixture):
    """Replace-one neighbours: one count down and another up, so the L2 distance is sqrt(2)."""
    y, _ = mixture
    replaced = y.copy()
    replaced[0] = [0.95, 0.95] if np.abs(y[0] - 0.95).max() > 0.2 else [-0.95, -0.95]
    key = jax.random.key(14)
    before = noisy_histogram(key, jnp.asarray(y), 0.7, 16, 1.0, "replace_one")
    after = noisy_histogram(key, jnp.asarray(replaced), 0.7, 16, 1.0, "replace_one")
    assert np.linalg.norm(np.asarray(after) - np.asarray(before)) == pytest.approx(SQRT2, abs=1e-9)


def test_counts_match_numpy(mixture):
    y, _ = mixture
    noisy = noisy_histogram(jax.random.key(1), jnp.asarray(y), 1e9, 8, 1.0, "add_or_remove_one")
    np.testing.assert_allclose(np.asarray(noisy), exact_counts(y, 8, 1.0), atol=1e-6)


def test_grid_centres_follow_the_cell_index():
    grid = make_grid(2, 16, 1.0)
    assert grid.bins == 4
    assert grid.width == 0.5
    # Cell 1 is the second bin of axis 0, cell 4 the second bin of axis 1.
    np.testing.assert_allclose(grid.centres[[0, 1, 4]], [[-0.75, -0.75], [-0.25, -0.75], [-0.75, -0.25]])


def test_release_depends_only_on_counts(mixture, rng):
    """Moving records within their cells changes no count, so the release must not change."""
    y, _ = mixture
    width = 2.0 / 16
    cell_corner = np.floor((y + 1.0) / width) * width - 1.0
    moved = cell_corner + width * rng.uniform(0.01, 0.99, size=y.shape)
    np.testing.assert_array_equal(exact_counts(moved, 16, 1.0), exact_counts(y, 16, 1.0))

    config = ReleaseConfig(3)
    first = histogram_em(jax.random.key(2), jnp.asarray(y), 1.0, SQRT2, 1.0, config)
    second = histogram_em(jax.random.key(2), jnp.asarray(moved), 1.0, SQRT2, 1.0, config)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_fresh_keys_give_fresh_noise(mixture):
    y, _ = mixture
    config = ReleaseConfig(3)
    first = histogram_em(jax.random.key(3), jnp.asarray(y), 1.0, SQRT2, 1.0, config)
    second = histogram_em(jax.random.key(4), jnp.asarray(y), 1.0, SQRT2, 1.0, config)
    assert not np.allclose(np.asarray(first.params.means), np.asarray(second.params.means))


def test_top_cells_kept_above_any_threshold(mixture):
    """With a threshold no noisy count reaches, the K highest cells still carry the fit."""
    y, _ = mixture
    release = histogram_em(jax.random.key(15), jnp.asarray(y), 1.0, SQRT2, 1.0,
                           ReleaseConfig(3, histogram_threshold=1e6))
    params = jax.tree.map(np.asarray, release.params)
    assert np.all(np.isfinite(params.means))
    assert np.linalg.eigvalsh(params.covariances).min() > 0


def test_large_budget_matches_nonprivate_fit(mixture):
    y, _ = mixture
    reference = fit_em(jnp.asarray(y), initial_params_from_means(y, mixture[1].means), max_iter=500, tol=1e-10).params
    release = histogram_em(jax.random.key(5), jnp.asarray(y), 20.0, SQRT2, 1.0, ReleaseConfig(3))
    order = np.argsort(np.asarray(release.params.means)[:, 0] + 3 * np.asarray(release.params.means)[:, 1])
    reference_order = np.argsort(np.asarray(reference.means)[:, 0] + 3 * np.asarray(reference.means)[:, 1])
    released = jax.tree.map(lambda a: a[order], release.params)
    reference = jax.tree.map(lambda a: a[reference_order], reference)
    kl, standard_error = kl_monte_carlo(jax.random.key(6), reference, released, 20000)
    # The cells are 0.125 wide against component scales of 0.08 to 0.15.
    assert float(kl) < 0.02 + 3 * float(standard_error), f"KL {float(kl):.4g}"
    np.testing.assert_allclose(np.asarray(released.weights), np.asarray(reference.weights), atol=0.02)


def test_sheppard_removes_grouping_variance(rng):
    """With cells 0.125 wide and a standard deviation of 0.1, grouping inflates the variance by 13%."""
    y = np.clip(0.1 * rng.normal(size=(200_000, 1)), -0.999, 0.999)
    release = histogram_em(jax.random.key(7), jnp.asarray(y), 100.0, 1.0, 1.0, ReleaseConfig(1, histogram_cells=16))
    assert float(release.params.covariances[0, 0, 0]) == pytest.approx(np.var(y), rel=0.02)


def test_sheppard_keeps_half_below_2e():
    """Eigenvalues of 0, e and 4e (e = width^2/12) become e/2, e/2 and 3e."""
    excess = 0.01
    rotation = np.array([[np.cos(0.3), -np.sin(0.3), 0.0], [np.sin(0.3), np.cos(0.3), 0.0], [0.0, 0.0, 1.0]])
    covariance = rotation @ np.diag([0.0, excess, 4 * excess]) @ rotation.T
    mean = np.array([0.2, -0.1, 0.3])
    count = 50.0
    stats = SufficientStatistics(jnp.asarray([count]), jnp.asarray([count * mean]),
                                 jnp.asarray([count * (covariance + np.outer(mean, mean))]))

    corrected = sheppard_correction(stats, excess)

    covariance = np.asarray(corrected.second_moments[0]) / count - np.outer(mean, mean)
    np.testing.assert_allclose(np.linalg.eigvalsh(covariance), [excess / 2, excess / 2, 3 * excess], atol=1e-12)
    np.testing.assert_allclose(np.asarray(corrected.first_moments), np.asarray(stats.first_moments))


def test_background_absorbs_a_far_cell():
    """A lone heavy cell far from a cluster goes to the background, not into the Gaussian."""
    grid = make_grid(2, 1024, 1.0)
    points = jnp.asarray(grid.centres)
    cluster = np.exp(-0.5 * np.sum(grid.centres**2, axis=-1) / 0.15**2)
    weights = 1000 * cluster / cluster.sum()
    far = np.argmin(np.sum((grid.centres - [0.95, 0.95]) ** 2, axis=-1))
    with_outlier = weights.copy()
    with_outlier[far] += 5.0
    resp = jnp.ones((points.shape[0], 1))
    log_uniform = -2 * math.log(2.0)
    within_cell = grid.width**2 / 12

    clean, _ = background_em(points, jnp.asarray(weights), resp, log_uniform, within_cell)
    stats, background_weight = background_em(points, jnp.asarray(with_outlier), resp, log_uniform, within_cell)
    plain = sufficient_statistics(points, jnp.asarray(with_outlier)[:, None])

    def variance(s):
        return float(s.second_moments[0, 0, 0] / s.counts[0] - (s.first_moments[0, 0] / s.counts[0]) ** 2)

    assert variance(stats) == pytest.approx(variance(clean), rel=0.02)
    assert variance(plain) > 1.1 * variance(clean), "the outlier should matter without the background"
    # The background takes the far cell's mass and a little of the cluster's far tail.
    assert 5.0 / 1005.0 <= float(background_weight) <= 2 * 5.0 / 1005.0


def test_weighted_kmeans_recovers_separated_centres():
    points = jnp.asarray(make_grid(2, 1024, 1.0).centres)
    targets = np.array([[-0.6, -0.6], [0.6, -0.6], [0.0, 0.6]])
    weights = sum(np.exp(-0.5 * np.sum((np.asarray(points) - t) ** 2, axis=-1) / 0.05**2) for t in targets)
    centres = np.asarray(weighted_kmeans(jax.random.key(8), points, jnp.asarray(weights), 3))
    distances = np.linalg.norm(targets[:, None, :] - centres[None], axis=-1)
    assert np.all(distances.min(axis=1) < 0.05)


@pytest.mark.parametrize("mu", [1e-4, 0.05])
def test_valid_under_overwhelming_noise(mixture, mu):
    y, _ = mixture
    release = histogram_em(jax.random.key(9), jnp.asarray(y[:50]), mu, SQRT2, 1.0, ReleaseConfig(4))
    params = jax.tree.map(np.asarray, release.params)
    assert all(np.all(np.isfinite(a)) for a in params)
    assert np.all(params.weights >= 0)
    assert params.weights.sum() == pytest.approx(1.0)
    assert np.linalg.eigvalsh(params.covariances).min() > 0
    assert np.linalg.norm(params.means, axis=-1).max() <= SQRT2 + 1e-9


def test_vmaps_over_keys_and_budgets(mixture):
    y, _ = mixture
    config = ReleaseConfig(3)
    keys = jax.random.split(jax.random.key(10), 3)
    mus = jnp.asarray([0.1, 1.0, 10.0])
    batched = jax.vmap(lambda k, m: histogram_em(k, jnp.asarray(y), m, SQRT2, 1.0, config).params)(keys, mus)
    single = histogram_em(keys[1], jnp.asarray(y), mus[1], SQRT2, 1.0, config).params
    np.testing.assert_allclose(np.asarray(batched.means[1]), np.asarray(single.means), rtol=1e-8, atol=1e-10)


def test_grid_checks_name_the_fix():
    assert check_histogram_grid(2, 256) == 16
    with pytest.raises(ValueError, match="raise histogram_cells to at least 16"):
        check_histogram_grid(2, 9)
    with pytest.raises(ValueError, match="use mode='dp_em'"):
        check_histogram_grid(13, 256)
    with pytest.raises(ValueError, match="lower histogram_cells"):
        check_histogram_grid(2, 2**17)
    with pytest.raises(ValueError, match="at least one cell per component"):
        check_histogram_grid(2, 16, n_components=20)
    with pytest.raises(ValueError, match="histogram_threshold must be finite and >= 0"):
        ReleaseConfig(2, histogram_threshold=-1.0).validate()
    with pytest.raises(ValueError, match="histogram_threshold must be finite and >= 0"):
        ReleaseConfig(2, histogram_threshold=math.inf).validate()


def test_release_gmm_mode_and_metadata(mixture):
    y, _ = mixture
    domain = Domain.from_bounds([-1.0, -1.0], [1.0, 1.0])
    params, metadata = release_gmm(y, epsilon=1.0, delta=1e-5, domain=domain, n_components=3,
                                   mode="histogram_em", key=jax.random.key(11))
    assert metadata["mode"] == "histogram_em"
    assert metadata["dp_guarantee"]
    assert metadata["n_releases"] == 1
    assert metadata["composed_epsilon"] == pytest.approx(1.0, rel=1e-6)
    assert metadata["allocation"] is None
    assert metadata["histogram_cells"] == 256
    assert np.all(np.isfinite(params.means))
    with pytest.raises(ValueError, match="takes no prior; drop prior"):
        release_gmm(y, epsilon=1.0, delta=1e-5, domain=domain, n_components=3, mode="histogram_em",
                    prior=PublicPrior(jax.tree.map(np.asarray, mixture[1]), 4000))
    with pytest.raises(ValueError, match="use mode='dp_em'"):
        release_gmm(np.zeros((10, 13)), epsilon=1.0, delta=1e-5, domain=Domain.from_ball(np.zeros(13), 1.0),
                    n_components=2, mode="histogram_em")


def test_metadata_records_actual_grid_cells():
    y = np.random.default_rng(3).uniform(-1.0, 1.0, size=(500, 3))
    domain = Domain.from_bounds([-1.0] * 3, [1.0] * 3)
    _, metadata = release_gmm(y, epsilon=1.0, delta=1e-5, domain=domain, n_components=2, mode="histogram_em",
                              key=jax.random.key(2))
    # 256 target cells are 6 bins per axis in d = 3.
    assert metadata["histogram_cells"] == 6**3
    assert metadata["allocation_source"].startswith("none: one histogram release")

    _, counted = release_gmm(y, epsilon=1.0, delta=1e-5, domain=domain, n_components=2, mode="histogram_em",
                             count_share=0.05, key=jax.random.key(2))
    assert counted["allocation_source"].startswith("none: a noisy record count picks the grid")


def test_data_derived_domain_still_warns(mixture):
    y, _ = mixture
    with pytest.warns(PrivacyLeakWarning):
        _, metadata = release_gmm(y, epsilon=1.0, delta=1e-5, domain=Domain.from_data(y), n_components=3,
                                  mode="histogram_em", key=jax.random.key(12))
    assert not metadata["dp_guarantee"]


def test_estimator_grid_settings_and_ledger(mixture):
    y, _ = mixture
    model = DPGaussianMixture(3, epsilon=3.0, bounds=([-1.0, -1.0], [1.0, 1.0]), mode="histogram_em",
                              histogram_cells=64, histogram_threshold=2.0, random_state=0).fit(y)
    assert model.privacy_["histogram_cells"] == 64
    assert model.privacy_["histogram_threshold"] == 2.0

    ledger = PrivacyAccountant(epsilon=2.0, delta=1e-5)
    wide = DPGaussianMixture(2, epsilon=1.0, centre=np.zeros(5), radius=1.0, mode="histogram_em", accountant=ledger)
    with pytest.raises(ValueError, match="raise histogram_cells to at least 1024"):
        wide.fit(np.zeros((20, 5)))
    assert ledger.entries == (), "an invalid grid must be rejected before the ledger is charged"
    with pytest.raises(ValueError, match="histogram_cells must be an integer >= 2"):
        DPGaussianMixture(2, mode="histogram_em", bounds=([-1.0, -1.0], [1.0, 1.0]), histogram_cells=1.5).fit(y)


def test_estimator_mode(mixture):
    y, _ = mixture
    model = DPGaussianMixture(3, epsilon=3.0, bounds=([-1.0, -1.0], [1.0, 1.0]), mode="histogram_em",
                              random_state=0).fit(y)
    assert model.privacy_["mode"] == "histogram_em"
    assert np.isfinite(model.score(y))
    assert model.predict(y).shape == (y.shape[0],)


def test_bins_from_count_follows_rule_and_limits():
    # (24 / d) (N mu / 196)^(1/5): N mu = 196 gives 12 bins in d = 2 and 8 in d = 3.
    assert bins_from_count(196.0, 1.0, 2) == 12
    assert bins_from_count(1960.0, 0.1, 3) == 8
    assert bins_from_count(196.0 * 32, 1.0, 2) == 24

    growing = [bins_from_count(count, 0.5, 2) for count in np.geomspace(1, 1e7, 30)]
    assert growing == sorted(growing)
    assert growing[0] == 4
    assert growing[-1] == 91
    assert bins_from_count(1e30, 1.0, 2) == math.isqrt(MAX_HISTOGRAM_CELLS)
    assert bins_from_count(-50.0, 1.0, 2) == 4
    # Enough cells for the components: 10 components in d = 1 need 10 bins.
    assert bins_from_count(1.0, 0.01, 1, n_components=10) == 10


def test_noisy_record_count_is_calibrated():
    mu = 0.25
    draws = jax.vmap(lambda key: noisy_record_count(key, 500, mu))(jax.random.split(jax.random.key(3), 20_000))
    # 20,000 draws: the sample standard deviation has a relative error near 0.5%.
    assert np.std(np.asarray(draws)) == pytest.approx(1.0 / mu, rel=0.03)
    assert abs(np.mean(np.asarray(draws)) - 500.0) < 0.1 / mu


def test_counted_release_composes_to_mu(mixture):
    y, _ = mixture
    domain = Domain.from_bounds([-1.0, -1.0], [1.0, 1.0])
    _, metadata = release_gmm(y, epsilon=1.0, delta=1e-5, domain=domain, n_components=3, mode="histogram_em",
                              count_share=0.05, key=jax.random.key(1))
    assert metadata["n_releases"] == 2
    np.testing.assert_allclose(metadata["iteration_mus"], np.sqrt([0.05, 0.95]) * metadata["mu"], rtol=1e-12)
    assert metadata["composed_mu"] == pytest.approx(metadata["mu"], rel=1e-12)
    assert pld_epsilon(metadata["iteration_mus"], 1e-5) == pytest.approx(1.0, rel=1e-3)
    bins = math.isqrt(metadata["histogram_cells"])
    assert bins**2 == metadata["histogram_cells"]
    assert bins >= 4
    assert metadata["count_share"] == 0.05

    _, replace = release_gmm(y, epsilon=1.0, delta=1e-5, domain=domain, n_components=3, mode="histogram_em",
                             count_share=0.05, relation="replace_one", key=jax.random.key(1))
    assert replace["n_releases"] == 1
    assert replace["count_share"] == 0.0
    assert replace["histogram_cells"] == bins_from_count(len(y), replace["mu"], 2, 3) ** 2


def test_counted_release_is_histogram_em_on_chosen_grid(mixture):
    y = jnp.asarray(mixture[0])
    config = ReleaseConfig(n_components=3, count_share=0.1)
    key = jax.random.key(7)
    release, chosen = counted_histogram_em(key, y, 0.8, math.sqrt(2.0), 1.0, config)

    count_key, histogram_key = jax.random.split(key)
    count = float(noisy_record_count(count_key, y.shape[0], math.sqrt(0.1) * 0.8))
    bins = bins_from_count(count, math.sqrt(0.9) * 0.8, 2, 3)
    assert chosen.histogram_cells == bins**2
    expected = histogram_em(histogram_key, y, math.sqrt(0.9) * 0.8, math.sqrt(2.0), 1.0, chosen)
    np.testing.assert_array_equal(release.params.means, expected.params.means)
    np.testing.assert_array_equal(release.params.covariances, expected.params.covariances)


def test_counted_grid_rejects_bad_share_before_spending(mixture):
    y, _ = mixture
    domain = Domain.from_bounds([-1.0, -1.0], [1.0, 1.0])
    ledger = PrivacyAccountant(epsilon=5.0, delta=1e-5)
    with pytest.raises(ValueError, match="count_share=1.0"):
        release_gmm(y, epsilon=1.0, delta=1e-5, domain=domain, n_components=3, mode="histogram_em",
                    count_share=1.0, accountant=ledger)
    model = DPGaussianMixture(3, epsilon=1.0, bounds=([-1.0, -1.0], [1.0, 1.0]), mode="histogram_em",
                              count_share=-0.1, accountant=ledger)
    with pytest.raises(ValueError, match="count_share=-0.1"):
        model.fit(y)
    assert ledger.spent_mu == 0.0


def test_estimator_passes_count_share(mixture):
    y, _ = mixture
    model = DPGaussianMixture(3, epsilon=2.0, bounds=([-1.0, -1.0], [1.0, 1.0]), count_share=0.05, random_state=0)
    model.fit(y)
    assert model.mode_ == "histogram_em"
    assert model.privacy_["count_share"] == 0.05
    assert model.privacy_["n_releases"] == 2


def test_harness_batches_counted_trials_like_single_releases(mixture):
    from types import SimpleNamespace

    from experiments.harness import counted_histogram_trials

    y = jnp.asarray(mixture[0][:1500])
    prepared = SimpleNamespace(y=y, domain=SimpleNamespace(radius=math.sqrt(2.0)))
    config = ReleaseConfig(n_components=3, count_share=0.05)
    keys = jax.random.split(jax.random.key(11), 6).reshape(2, 3)
    mus = jnp.asarray([0.05, 2.0])
    trace = {}
    batched = counted_histogram_trials(prepared, config, keys, mus, 1.0, trace)

    cells = set()
    for e in range(2):
        for t in range(3):
            single, chosen = counted_histogram_em(keys[e, t], y, float(mus[e]), math.sqrt(2.0), 1.0, config)
            cells.add(chosen.histogram_cells)
            np.testing.assert_allclose(batched.means[e, t], single.params.means, rtol=1e-9, atol=1e-12)
            assert trace["histogram_cells"][e, t] == chosen.histogram_cells
    # The two budgets pick different grids, so the batching grouped trials.
    assert len(cells) >= 2
