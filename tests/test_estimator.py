"""The scikit-learn estimator: fitting, scoring, sampling, parameters and the ledger.

Most fits share one dataset shape and one release config, so ``dp_em`` is
compiled once for them.

scikit-learn's own checks run through ``parametrize_with_checks`` with no
expected failures. One check does not run: ``check_array_api_input`` skips
itself unless the environment variable SCIPY_ARRAY_API is set, and the
estimator does not claim array API support.
"""

import warnings

import jax
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

import dpgmm_jax.estimator as estimator_module
from dpgmm_jax import DPGaussianMixture, Domain, GMMParams, PrivacyLeakWarning, PublicPrior, release_gmm

LOWER = np.array([1.0, 40.0])
UPPER = np.array([6.0, 100.0])
# One release config for most tests, so that dp_em compiles once. The mode is
# explicit: "auto", the default, would pick histogram_em in d = 2.
SETTINGS = dict(n_components=2, epsilon=5.0, delta=1e-5, max_iter=3, allocation="equal", mode="dp_em")


@pytest.fixture(scope="module")
def records():
    rng = np.random.default_rng(0)
    centres = np.array([[2.0, 60.0], [4.5, 80.0]])
    labels = rng.integers(2, size=600)
    return centres[labels] + rng.normal(size=(600, 2)) * np.array([0.3, 5.0])


@pytest.fixture(scope="module")
def fitted(records):
    return DPGaussianMixture(**SETTINGS, bounds=(LOWER, UPPER), random_state=0).fit(records)


class RecordingAccountant:
    """A ledger that records each spend and, optionally, rejects it."""

    def __init__(self, events, reject=False):
        self.events = events
        self.reject = reject

    def spend(self, epsilon, delta, description):
        self.events.append(("spend", epsilon, delta, description))
        if self.reject:
            raise RuntimeError(f"privacy budget exhausted: cannot spend epsilon={epsilon}")


@parametrize_with_checks(
    [DPGaussianMixture(n_components=2, max_iter=2, allocation="equal", random_state=0)],
    expected_failed_checks=lambda estimator: {},
)
def test_sklearn_compatible(estimator, check):
    # The check data carry no declared domain, so every fit warns.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyLeakWarning)
        check(estimator)


def test_fitted_attribute_shapes(fitted):
    assert fitted.weights_.shape == (2,)
    assert fitted.means_.shape == (2, 2)
    assert fitted.covariances_.shape == (2, 2, 2)
    assert fitted.precisions_cholesky_.shape == (2, 2, 2)
    assert fitted.n_features_in_ == 2
    assert fitted.n_iter_ == SETTINGS["max_iter"]
    assert fitted.converged_ is True


def test_release_is_valid_mixture(fitted):
    assert np.all(np.isfinite(fitted.weights_))
    assert np.all(np.isfinite(fitted.means_))
    assert np.all(np.isfinite(fitted.covariances_))
    assert np.all(fitted.weights_ > 0)
    np.testing.assert_allclose(fitted.weights_.sum(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(fitted.covariances_, np.swapaxes(fitted.covariances_, 1, 2))
    assert np.linalg.eigvalsh(fitted.covariances_).min() > 0


def test_precision_cholesky_inverts_covariance(fitted):
    precisions = fitted.precisions_cholesky_ @ np.swapaxes(fitted.precisions_cholesky_, 1, 2)
    identity = np.broadcast_to(np.eye(2), (2, 2, 2))
    np.testing.assert_allclose(precisions @ fitted.covariances_, identity, atol=1e-8)
    np.testing.assert_array_equal(np.tril(fitted.precisions_cholesky_, -1), 0.0)


def test_privacy_metadata(fitted):
    assert fitted.privacy_["dp_guarantee"] is True
    assert fitted.privacy_["epsilon"] == SETTINGS["epsilon"]
    assert fitted.privacy_["delta"] == SETTINGS["delta"]
    assert fitted.privacy_["mode"] == "dp_em"
    assert fitted.privacy_["n_iter"] == SETTINGS["max_iter"]
    assert fitted.privacy_["allocation"] == "equal"
    assert fitted.privacy_["composed_epsilon"] == pytest.approx(SETTINGS["epsilon"], rel=1e-6)
    assert fitted.privacy_["domain"]["shape"] == "box"


def test_fit_matches_release_gmm(records, fitted):
    params, metadata = release_gmm(
        records, epsilon=5.0, delta=1e-5, domain=Domain.from_bounds(LOWER, UPPER), n_components=2,
        key=jax.random.key(0), n_iter=3, allocation="equal", last_share=0.5,
    )
    np.testing.assert_array_equal(fitted.weights_, params.weights)
    np.testing.assert_array_equal(fitted.means_, params.means)
    np.testing.assert_array_equal(fitted.covariances_, params.covariances)
    assert fitted.privacy_["iteration_mus"] == metadata["iteration_mus"]


def test_seed_reproducible_none_fresh(records, fitted):
    again = DPGaussianMixture(**SETTINGS, bounds=(LOWER, UPPER), random_state=0).fit(records)
    np.testing.assert_array_equal(again.means_, fitted.means_)

    first = DPGaussianMixture(**SETTINGS, bounds=(LOWER, UPPER)).fit(records)
    second = DPGaussianMixture(**SETTINGS, bounds=(LOWER, UPPER)).fit(records)
    assert not np.array_equal(first.means_, second.means_)


def test_random_state_forms(records):
    key_fit = DPGaussianMixture(**SETTINGS, bounds=(LOWER, UPPER), random_state=jax.random.key(7)).fit(records)
    int_fit = DPGaussianMixture(**SETTINGS, bounds=(LOWER, UPPER), random_state=7).fit(records)
    np.testing.assert_array_equal(key_fit.means_, int_fit.means_)

    numpy_fit = DPGaussianMixture(
        **SETTINGS, bounds=(LOWER, UPPER), random_state=np.random.RandomState(7)
    ).fit(records)
    assert np.all(np.isfinite(numpy_fit.means_))


def test_large_epsilon_finds_clusters(records):
    # At epsilon = 1000 the noise is negligible, so DP-EM lands on the clusters.
    model = DPGaussianMixture(n_components=2, epsilon=1000.0, max_iter=15, bounds=(LOWER, UPPER), random_state=1,
                              mode="dp_em")
    model.fit(records)
    order = np.argsort(model.means_[:, 0])
    np.testing.assert_allclose(model.means_[order], [[2.0, 60.0], [4.5, 80.0]], rtol=0.05)
    np.testing.assert_allclose(model.weights_.sum(), 1.0)


def test_kmeans_start_is_accounted(records):
    model = DPGaussianMixture(n_components=2, epsilon=1000.0, max_iter=3, start="kmeans", start_share=0.2,
                              bounds=(LOWER, UPPER), random_state=1)
    model.fit(records)
    assert model.privacy_["start"] == "kmeans"
    assert model.privacy_["n_releases"] == 3 + 3
    assert model.privacy_["composed_mu"] == pytest.approx(model.privacy_["mu"], rel=1e-12)
    order = np.argsort(model.means_[:, 0])
    np.testing.assert_allclose(model.means_[order], [[2.0, 60.0], [4.5, 80.0]], rtol=0.05)


def test_ball_domain(records):
    centre = (LOWER + UPPER) / 2
    model = DPGaussianMixture(**SETTINGS, centre=centre, radius=40.0, random_state=0).fit(records)
    assert model.privacy_["domain"]["shape"] == "ball"
    assert model.privacy_["dp_guarantee"] is True
    assert np.linalg.eigvalsh(model.covariances_).min() > 0


def test_scoring_matches_sklearn_gaussian_mixture(records, fitted):
    reference = GaussianMixture(n_components=2, covariance_type="full")
    reference.weights_ = fitted.weights_
    reference.means_ = fitted.means_
    reference.covariances_ = fitted.covariances_
    reference.precisions_cholesky_ = np.linalg.cholesky(np.linalg.inv(fitted.covariances_))

    np.testing.assert_allclose(fitted.score_samples(records), reference.score_samples(records), rtol=1e-9)
    np.testing.assert_allclose(fitted.predict_proba(records), reference.predict_proba(records), atol=1e-9)
    assert fitted.bic(records) == pytest.approx(reference.bic(records), rel=1e-9)
    assert fitted.aic(records) == pytest.approx(reference.aic(records), rel=1e-9)


def test_score_samples_matches_scipy(records, fitted):
    per_component = np.stack([
        np.log(fitted.weights_[k]) + multivariate_normal(fitted.means_[k], fitted.covariances_[k]).logpdf(records)
        for k in range(2)
    ], axis=1)
    np.testing.assert_allclose(fitted.score_samples(records), logsumexp(per_component, axis=1), rtol=1e-9)


def test_score_is_mean_score_samples(records, fitted):
    assert fitted.score(records) == pytest.approx(np.mean(fitted.score_samples(records)), rel=1e-12)


def test_predict_is_argmax_proba(records, fitted):
    proba = fitted.predict_proba(records)
    assert proba.shape == (600, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(fitted.predict(records), np.argmax(proba, axis=1))


def test_float32_input(records, fitted):
    log_density = fitted.score_samples(records.astype(np.float32))
    assert np.all(np.isfinite(log_density))
    np.testing.assert_allclose(log_density, fitted.score_samples(records), rtol=1e-4)


def test_sample_shapes_and_labels(fitted):
    x, labels = fitted.sample(500)
    assert x.shape == (500, 2)
    assert labels.shape == (500,)
    assert set(np.unique(labels)) <= {0, 1}
    assert np.all(np.diff(labels) >= 0)
    assert np.all(np.isfinite(x))


def test_sample_follows_release(fitted):
    x, labels = fitted.sample(20_000)
    for k in np.unique(labels):
        block = x[labels == k]
        standard_errors = np.sqrt(np.diag(fitted.covariances_[k]) / len(block))
        np.testing.assert_array_less(np.abs(block.mean(axis=0) - fitted.means_[k]), 5 * standard_errors)
    expected_first = fitted.weights_[0] * 20_000
    assert abs(np.sum(labels == 0) - expected_first) < 5 * np.sqrt(20_000 * fitted.weights_[0] * fitted.weights_[1])


def test_sample_seeded_is_reproducible(fitted):
    first, _ = fitted.sample(10)
    second, _ = fitted.sample(10)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("n_samples", [0, -3, 2.5, True])
def test_sample_rejects_bad_count(fitted, n_samples):
    with pytest.raises(ValueError, match=f"n_samples={n_samples!r}"):
        fitted.sample(n_samples)


def test_unfitted_methods_raise(records):
    model = DPGaussianMixture(**SETTINGS, bounds=(LOWER, UPPER))
    for method in (model.predict, model.predict_proba, model.score_samples, model.score):
        with pytest.raises(NotFittedError):
            method(records)
    with pytest.raises(NotFittedError):
        model.sample(3)


def test_pipeline_with_function_transformer(records):
    # The bounds apply to the transformed features, in their units.
    log_lower, log_upper = np.log(LOWER), np.log(UPPER)
    pipeline = make_pipeline(
        FunctionTransformer(np.log),
        DPGaussianMixture(**SETTINGS, bounds=(log_lower, log_upper), random_state=0),
    ).fit(records)
    direct = DPGaussianMixture(**SETTINGS, bounds=(log_lower, log_upper), random_state=0).fit(np.log(records))

    np.testing.assert_array_equal(pipeline.predict(records), direct.predict(np.log(records)))
    np.testing.assert_allclose(pipeline.score_samples(records), direct.score_samples(np.log(records)))
    assert pipeline.score(records) == pytest.approx(direct.score(np.log(records)))


def test_get_set_params_round_trip():
    model = DPGaussianMixture(**SETTINGS, bounds=(LOWER, UPPER), random_state=3)
    params = model.get_params()
    assert params["epsilon"] == 5.0
    assert params["max_iter"] == 3

    model.set_params(epsilon=0.5, n_components=4)
    assert model.epsilon == 0.5
    assert model.n_components == 4

    rebuilt = DPGaussianMixture(**params)
    assert rebuilt.get_params()["epsilon"] == 5.0


def test_clone_copies_params_shares_accountant():
    accountant = RecordingAccountant([])
    model = DPGaussianMixture(**SETTINGS, bounds=(LOWER, UPPER), random_state=3, accountant=accountant)
    cloned = clone(model)
    assert cloned is not model
    assert cloned.accountant is accountant
    for name, value in model.get_params().items():
        if name != "bounds":
            assert cloned.get_params()[name] == value, name
    np.testing.assert_array_equal(cloned.bounds[0], LOWER)
    np.testing.assert_array_equal(cloned.bounds[1], UPPER)


def test_clone_of_fitted_is_unfitted(fitted):
    cloned = clone(fitted)
    assert not hasattr(cloned, "means_")


def test_data_domain_warns_and_voids_guarantee(records):
    model = DPGaussianMixture(**SETTINGS, random_state=0)
    with pytest.warns(PrivacyLeakWarning) as caught:
        model.fit(records)
    assert any("NOT differentially private" in str(warning.message) for warning in caught)
    assert model.privacy_["dp_guarantee"] is False
    assert model.privacy_["domain"]["data_derived"] is True
    assert model.domain_.data_derived
    assert np.linalg.eigvalsh(model.covariances_).min() > 0


BAD_PARAMETERS = [
    ({"epsilon": -1.0}, ValueError, "epsilon=-1.0"),
    ({"epsilon": float("inf")}, ValueError, "epsilon=inf"),
    ({"epsilon": "1"}, TypeError, "epsilon='1'"),
    ({"delta": 1.5}, ValueError, "delta=1.5"),
    ({"delta": 0.0}, ValueError, "delta=0.0"),
    ({"n_components": 0}, ValueError, "n_components=0"),
    ({"n_components": 2.0}, TypeError, "n_components=2.0"),
    ({"mode": "oracle"}, ValueError, "mode='oracle'"),
    ({"allocation": "greedy"}, ValueError, "allocation='greedy'"),
    ({"max_iter": 0}, ValueError, "max_iter=0"),
    ({"max_iter": 2.5}, ValueError, "max_iter=2.5"),
    ({"tol": -1.0}, ValueError, "tol=-1.0"),
    ({"last_share": 1.0}, ValueError, "last_share=1.0"),
    ({"last_share": "half"}, ValueError, "last_share='half'"),
    ({"relation": "swap_one"}, ValueError, "relation='swap_one'"),
    ({"noise_floor_factor": -0.5}, ValueError, "noise_floor_factor=-0.5"),
    ({"start": "kmedoids"}, ValueError, "start='kmedoids'"),
    ({"start_share": 1.0}, ValueError, "start_share=1.0"),
    ({"random_state": -1}, ValueError, "random_state=-1"),
    ({"random_state": "seed"}, ValueError, "random_state='seed'"),
    ({"accountant": object()}, TypeError, "spend"),
    ({"centre": [3.5, 70.0]}, ValueError, "needs both centre and radius"),
    ({"radius": 10.0}, ValueError, "needs both centre and radius"),
    ({"bounds": (LOWER, UPPER), "centre": [3.5, 70.0], "radius": 1.0}, ValueError, "not both"),
    ({"bounds": LOWER}, ValueError, "pair"),
    ({"bounds": ([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])}, ValueError, "has 3"),
    ({"bounds": (UPPER, LOWER)}, ValueError, "swap or widen"),
    ({"centre": [3.5, 70.0], "radius": -2.0}, ValueError, "radius=-2.0"),
]


@pytest.mark.parametrize("overrides, error, match", BAD_PARAMETERS)
def test_bad_parameter_raises_before_spend(records, overrides, error, match):
    events = []
    settings = {**SETTINGS, "bounds": (LOWER, UPPER), "accountant": RecordingAccountant(events)}
    settings.update(overrides)
    if "centre" in overrides or "radius" in overrides:
        settings["bounds"] = overrides.get("bounds")
    model = DPGaussianMixture(**settings)
    with pytest.raises(error, match=match):
        model.fit(records)
    assert events == []
    assert not hasattr(model, "means_")


def test_wrong_feature_count_at_predict(fitted, records):
    with pytest.raises(ValueError, match="3 features"):
        fitted.predict(np.hstack([records, records[:, :1]]))


def test_accountant_charged_before_release(records, monkeypatch):
    events = []

    def spy_release(*args, **kwargs):
        events.append(("release", kwargs["epsilon"], kwargs["delta"]))
        return release_gmm(*args, **kwargs)

    monkeypatch.setattr(estimator_module, "release_gmm", spy_release)
    model = DPGaussianMixture(**SETTINGS, bounds=(LOWER, UPPER), random_state=0,
                              accountant=RecordingAccountant(events))
    model.fit(records)

    assert [event[0] for event in events] == ["spend", "release"]
    assert events[0][1:3] == (SETTINGS["epsilon"], SETTINGS["delta"])
    assert "DPGaussianMixture" in events[0][3]


def test_rejecting_accountant_blocks_release(records, monkeypatch):
    events = []

    def spy_release(*args, **kwargs):
        events.append(("release",))
        return release_gmm(*args, **kwargs)

    monkeypatch.setattr(estimator_module, "release_gmm", spy_release)
    model = DPGaussianMixture(**SETTINGS, bounds=(LOWER, UPPER), accountant=RecordingAccountant(events, reject=True))
    with pytest.raises(RuntimeError, match="budget exhausted"):
        model.fit(records)

    assert [event[0] for event in events] == ["spend"]
    assert not hasattr(model, "means_")
    assert not hasattr(model, "privacy_")


@pytest.mark.filterwarnings("ignore:mode='auto' runs dp_em")
@pytest.mark.parametrize("n_features, overrides, expected", [
    (2, {}, "histogram_em"),
    (4, {}, "histogram_em"),
    (5, {}, "dp_em"),
    (2, {"histogram_cells": 15}, "dp_em"),
    (2, {"start": "kmeans"}, "dp_em"),
])
def test_auto_mode_public_choice(n_features, overrides, expected):
    rng = np.random.default_rng(1)
    X = rng.uniform(-1.0, 1.0, size=(300, n_features))
    bounds = (-np.ones(n_features), np.ones(n_features))
    model = DPGaussianMixture(2, epsilon=2.0, bounds=bounds, max_iter=2, random_state=3, **overrides).fit(X)
    assert model.mode == "auto"
    assert model.mode_ == expected
    assert model.privacy_["mode"] == expected

    # The same key and settings in the chosen mode give the same release.
    explicit = DPGaussianMixture(2, epsilon=2.0, bounds=bounds, max_iter=2, random_state=3, mode=expected,
                                 **overrides).fit(X)
    np.testing.assert_array_equal(model.means_, explicit.means_)


def test_auto_mode_with_prior_runs_dp_em(records):
    prior = PublicPrior(
        GMMParams(np.array([0.5, 0.5]), np.array([[2.0, 60.0], [4.5, 80.0]]),
                  np.array([np.diag([0.1, 25.0])] * 2)),
        n_records=600,
    )
    model = DPGaussianMixture(2, epsilon=2.0, bounds=(LOWER, UPPER), max_iter=2, prior=prior, random_state=0)
    model.fit(records)
    assert model.mode_ == "dp_em"
    assert model.privacy_["allocation_source"].startswith("public prior")


def test_auto_mode_ignores_records():
    rng = np.random.default_rng(2)
    bounds = (-np.ones(3), np.ones(3))
    modes = set()
    for n_records, spread in [(1, 0.01), (50, 0.5), (2000, 1.0)]:
        X = np.clip(rng.normal(scale=spread, size=(n_records, 3)), -1.0, 1.0)
        model = DPGaussianMixture(2, epsilon=1.0, bounds=bounds, random_state=0).fit(X)
        modes.add(model.mode_)
    assert modes == {"histogram_em"}


@pytest.mark.parametrize("n_components, histogram_cells, match", [
    (2, 100_000, "allows at most 65536 cells"),
    (2, 9, "at least 4 bins per axis"),
    (300, 256, "at least one cell per component"),
])
def test_auto_mode_fallback_warns(n_components, histogram_cells, match):
    rng = np.random.default_rng(4)
    X = rng.uniform(-1.0, 1.0, size=(400, 2))
    model = DPGaussianMixture(n_components, epsilon=1.0, bounds=([-1.0, -1.0], [1.0, 1.0]), max_iter=1,
                              histogram_cells=histogram_cells, random_state=0)
    with pytest.warns(UserWarning, match=match):
        model.fit(X)
    assert model.mode_ == "dp_em"


def test_auto_mode_silent_in_d5():
    X = np.random.default_rng(5).uniform(-1.0, 1.0, size=(200, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model = DPGaussianMixture(2, epsilon=1.0, bounds=(-np.ones(5), np.ones(5)), max_iter=1, random_state=0).fit(X)
    assert model.mode_ == "dp_em"


def test_outputs_follow_input_dtype(records):
    with jax.enable_x64(False), warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model = DPGaussianMixture(2, epsilon=2.0, bounds=(LOWER, UPPER), random_state=0).fit(records)
        outputs = {
            "weights_": model.weights_,
            "means_": model.means_,
            "covariances_": model.covariances_,
            "precisions_cholesky_": model.precisions_cholesky_,
            "score_samples": model.score_samples(records),
            "predict_proba": model.predict_proba(records),
            "sample": model.sample(10)[0],
        }
    for name, values in outputs.items():
        assert values.dtype == np.float64, name
    assert abs(model.weights_.sum() - 1.0) < 1e-12
