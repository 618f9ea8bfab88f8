"""End-to-end releases: validation, modes, domains and metadata."""

import warnings

import jax
import numpy as np
import pytest

from dpgmm_jax import Domain, PrivacyLeakWarning, pld_epsilon, release_gmm
from dpgmm_jax.domain import to_mechanism_coordinates


@pytest.fixture
def records(rng):
    centres = np.array([[2.0, 60.0], [4.5, 80.0]])
    labels = rng.integers(2, size=400)
    return centres[labels] + rng.normal(size=(400, 2)) * np.array([0.3, 5.0])


@pytest.fixture
def domain():
    return Domain.from_bounds([1.0, 40.0], [6.0, 100.0])


def assert_valid(params, n_components, d):
    assert params.weights.shape == (n_components,)
    assert np.all(np.isfinite(params.means))
    assert np.all(np.isfinite(params.covariances))
    np.testing.assert_allclose(params.weights.sum(), 1.0, rtol=1e-9)
    assert np.all(params.weights > 0)
    assert np.linalg.eigvalsh(params.covariances).min() > 0
    assert params.means.shape == (n_components, d)


def test_dp_em_release_is_valid_and_private(records, domain):
    params, metadata = release_gmm(records, epsilon=1.0, delta=1e-5, domain=domain, n_components=2,
                                   key=jax.random.key(0))
    assert_valid(params, 2, 2)
    assert metadata["dp_guarantee"] is True
    assert metadata["mode"] == "dp_em"
    assert metadata["composed_epsilon"] == pytest.approx(1.0, rel=1e-6)
    assert pld_epsilon(metadata["iteration_mus"], 1e-5) == pytest.approx(1.0, rel=1e-3)
    assert metadata["neighbouring_relation"] == "add_or_remove_one"
    assert "jax" in metadata["versions"]


def test_release_in_data_units(records, domain):
    # At epsilon = 1e5 the noise is negligible, so DP-EM lands on the non-private fit. At epsilon = 1000 the
    # noise on the narrow axis's variance (0.09) was still about 10% per iteration with N = 400.
    params, _ = release_gmm(records, epsilon=1e5, delta=1e-5, domain=domain, n_components=2,
                            key=jax.random.key(1), n_iter=15)
    means = params.means[np.argsort(params.means[:, 0])]
    np.testing.assert_allclose(means, [[2.0, 60.0], [4.5, 80.0]], rtol=0.05)
    variances = np.diagonal(params.covariances[np.argsort(params.means[:, 0])], axis1=1, axis2=2)
    np.testing.assert_allclose(variances, [[0.09, 25.0], [0.09, 25.0]], rtol=0.35)


def test_same_key_same_release_fresh_key_differs(records, domain):
    first, _ = release_gmm(records, epsilon=1.0, delta=1e-5, domain=domain, n_components=2, key=jax.random.key(3))
    again, _ = release_gmm(records, epsilon=1.0, delta=1e-5, domain=domain, n_components=2, key=jax.random.key(3))
    fresh, _ = release_gmm(records, epsilon=1.0, delta=1e-5, domain=domain, n_components=2)
    np.testing.assert_array_equal(first.means, again.means)
    assert not np.allclose(first.means, fresh.means)


def test_oracle_is_labelled_not_private(records, domain):
    with pytest.warns(PrivacyLeakWarning, match="NOT differentially private"):
        params, metadata = release_gmm(records, epsilon=1.0, delta=1e-5, domain=domain, n_components=2,
                                       mode="oracle", key=jax.random.key(0))
    assert_valid(params, 2, 2)
    assert metadata["dp_guarantee"] is False
    assert metadata["no_guarantee_reasons"]


def test_data_derived_domain_warns_and_is_labelled(records):
    with pytest.warns(PrivacyLeakWarning):
        domain = Domain.from_data(records)
    with pytest.warns(PrivacyLeakWarning):
        _, metadata = release_gmm(records, epsilon=1.0, delta=1e-5, domain=domain, n_components=2,
                                  key=jax.random.key(0))
    assert metadata["dp_guarantee"] is False


def test_projection_count_is_local_only(records, domain, caplog):
    shifted = records.copy()
    shifted[:5, 1] = 500.0
    y, n_projected = to_mechanism_coordinates(shifted, domain)
    assert n_projected == 5
    assert np.linalg.norm(y, axis=1).max() <= domain.radius + 1e-12
    with caplog.at_level("INFO"):
        _, metadata = release_gmm(shifted, epsilon=1.0, delta=1e-5, domain=domain, n_components=2,
                                  key=jax.random.key(0))
    assert "projected 5 of 400" in caplog.text
    _, metadata_unshifted = release_gmm(records, epsilon=1.0, delta=1e-5, domain=domain, n_components=2,
                                        key=jax.random.key(0))
    assert metadata == metadata_unshifted, "metadata must not depend on how many records were projected"


def test_ball_domain_projects_onto_sphere():
    domain = Domain.from_ball([0.0, 0.0], 2.0)
    y, n_projected = to_mechanism_coordinates(np.array([[3.0, 4.0], [0.1, 0.1]]), domain)
    np.testing.assert_allclose(y[0], [1.2, 1.6])
    assert n_projected == 1


BAD_INPUTS = [
    ({"epsilon": 0.0}, ValueError, "epsilon must be finite and > 0"),
    ({"epsilon": -1.0}, ValueError, "epsilon must be finite and > 0"),
    ({"delta": 0.0}, ValueError, "delta must be in"),
    ({"delta": 1.5}, ValueError, "delta must be in"),
    ({"n_components": 0}, ValueError, "n_components must be >= 1"),
    ({"n_components": 2.5}, TypeError, "n_components must be an integer"),
    ({"mode": "fast"}, ValueError, "mode must be one of"),
    ({"allocation": "best"}, ValueError, "allocation must be one of"),
    ({"min_share": 0.5}, ValueError, "min_share must be in"),
    ({"n_iter": 0}, ValueError, "n_iter must be an integer >= 1 or None"),
    ({"n_iter": "ten"}, ValueError, "n_iter must be an integer >= 1 or None"),
    ({"start": "nowhere"}, ValueError, "start must be one of"),
    ({"max_iter": 3}, TypeError, r"unknown options \['max_iter'\]; pass ReleaseConfig fields such as n_iter"),
]


@pytest.mark.parametrize("override, error, message", BAD_INPUTS)
def test_bad_arguments_raise_clear_errors(records, domain, override, error, message):
    arguments = dict(epsilon=1.0, delta=1e-5, domain=domain, n_components=2)
    arguments.update(override)
    with pytest.raises(error, match=message):
        release_gmm(records, **arguments)


@pytest.mark.parametrize("data, message", [
    (np.empty((0, 2)), "data is empty"),
    (np.array([[1.0, np.nan]]), "NaN or inf"),
    (np.array([[1.0, np.inf]]), "NaN or inf"),
    (np.ones((10, 3)), "domain declares d=2"),
    (np.ones(10), "two-dimensional"),
])
def test_bad_data_raise_clear_errors(domain, data, message):
    with pytest.raises(ValueError, match=message):
        release_gmm(data, epsilon=1.0, delta=1e-5, domain=domain, n_components=2)


def test_string_data_rejected(domain):
    with pytest.raises(TypeError, match="numeric"):
        release_gmm(np.array([["a", "b"]]), epsilon=1.0, delta=1e-5, domain=domain, n_components=2)


@pytest.mark.parametrize("radius", [0.0, -1.0, float("nan")])
def test_bad_radius_rejected(radius):
    with pytest.raises(ValueError, match="radius must be finite and > 0"):
        Domain.from_ball([0.0], radius)


def test_inverted_bounds_rejected():
    with pytest.raises(ValueError, match=r"lower\[1\]=5.0 >= upper\[1\]=1.0"):
        Domain.from_bounds([0.0, 5.0], [1.0, 1.0])


def test_large_delta_warns(records, domain):
    with pytest.warns(UserWarning, match="not below 1/N"):
        release_gmm(records[:50], epsilon=1.0, delta=0.1, domain=domain, n_components=2, key=jax.random.key(0))


def test_single_record_and_float32_release_valid(domain):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        params, _ = release_gmm(np.array([[3.0, 70.0]], dtype=np.float32), epsilon=1.0, delta=1e-5,
                                domain=domain, n_components=3, key=jax.random.key(0))
    assert_valid(params, 3, 2)


@pytest.mark.parametrize("n_features, expected", [(2, "histogram_em"), (5, "dp_em")])
def test_release_gmm_auto_mode(rng, n_features, expected):
    x = rng.uniform(-1.0, 1.0, size=(300, n_features))
    domain = Domain.from_bounds(-np.ones(n_features), np.ones(n_features))
    options = dict(epsilon=1.0, delta=1e-5, domain=domain, n_components=2, key=jax.random.key(5), n_iter=2)
    params, metadata = release_gmm(x, mode="auto", **options)
    explicit, explicit_metadata = release_gmm(x, mode=expected, **options)
    assert metadata["mode"] == expected
    np.testing.assert_array_equal(params.means, explicit.means)
    assert metadata["iteration_mus"] == explicit_metadata["iteration_mus"]
