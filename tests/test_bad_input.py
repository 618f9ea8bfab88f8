"""Bad and degenerate inputs: every release is a valid mixture or a clear error, never NaN.

Each table row is one input and its expected outcome. ``release_gmm`` either
raises the named error or returns finite parameters with weights on the
simplex and symmetric positive definite covariances, with the named warning
where one is expected. Degenerate but valid data also go through ``fit_em``.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from dpgmm_jax import Domain, PrivacyLeakWarning, release_gmm
from dpgmm_jax.em import fit_em, initial_params_from_means

N_RECORDS = 200
BOX = Domain.from_bounds([-3.0, -3.0], [3.0, 3.0])
LARGE_BOX = Domain.from_bounds([0.0, 0.0], [2e8, 2e8])
LARGE_BALL = Domain.from_ball([1e8, 1e8], 1e8)
LINE = Domain.from_bounds([-3.0], [3.0])
BALL_1000 = Domain.from_ball([1000.0, 1000.0], 1000.0)

ORACLE_WARNING = (PrivacyLeakWarning, r"the release is NOT differentially private")


def two_clusters(rng, n=N_RECORDS, d=2):
    labels = rng.integers(2, size=n)
    centres = np.array([[-1.0] * d, [1.0] * d])
    return centres[labels] + 0.3 * rng.normal(size=(n, d))


def with_entry(value):
    def make(rng):
        x = two_clusters(rng)
        x[5, 1] = value
        return x

    return make


def large_entries(rng):
    return 1e8 + 1e7 * rng.normal(size=(N_RECORDS, 2))


def string_column(rng):
    x = two_clusters(rng).astype(object)
    x[:, 1] = "label"
    return x


def object_column_with_none(rng):
    x = two_clusters(rng).astype(object)
    x[3, 0] = None
    return x


def ragged_records(rng):
    return [[1.0, 2.0], [3.0]]


def dataframe_with_text(rng):
    x = two_clusters(rng)
    return pd.DataFrame({"a": x[:, 0], "b": ["text"] * N_RECORDS})


VALID = "valid"


def row(name, make_x, expected, *, domain=BOX, n_components=2, marks=(), **options):
    """One table row: an input, its options and the expected outcome.

    ``expected`` is VALID, a (warning class, message pattern) pair for a
    valid release that must warn, or an (exception class, message pattern)
    pair for an input that must be rejected.
    """
    return pytest.param(make_x, domain, n_components, options, expected, id=name, marks=marks)


RELEASE_ROWS = [
    # Values that must be rejected before anything is traced.
    row("nan entry", with_entry(np.nan), (ValueError, r"NaN or inf in 1 of 200 records")),
    row("inf entry", with_entry(np.inf), (ValueError, r"NaN or inf")),
    row("minus inf entry", with_entry(-np.inf), (ValueError, r"NaN or inf")),
    row("empty data", lambda rng: np.zeros((0, 2)), (ValueError, r"data is empty")),
    row("no features", lambda rng: np.zeros((5, 0)), (ValueError, r"data has no features")),
    row("one-dimensional array", lambda rng: np.zeros(5), (ValueError, r"reshape a single feature")),
    row("three-dimensional array", lambda rng: np.zeros((2, 5, 2)), (ValueError, r"two-dimensional")),
    row("ragged records", ragged_records, (TypeError, r"could not be converted to an array")),
    row("string column", string_column, (TypeError, r"data must be numeric, got an array of dtype object")),
    row("object column with None", object_column_with_none, (TypeError, r"data must be numeric")),
    row("dataframe with text", dataframe_with_text, (TypeError, r"drop or encode string and object columns")),
    row("unicode strings", lambda rng: np.array([["1.0", "2.0"]] * 10), (TypeError, r"dtype <U3")),
    row("complex entries", lambda rng: two_clusters(rng).astype(complex), (TypeError, r"dtype complex128")),
    row("wrong dimension", lambda rng: two_clusters(rng, d=3), (ValueError, r"d=3 features but the domain declares d=2")),
    row("zero components", two_clusters, (ValueError, r"n_components must be >= 1"), n_components=0),
    row("fractional components", two_clusters, (TypeError, r"n_components must be an integer"), n_components=2.5),
    row("zero epsilon", two_clusters, (ValueError, r"epsilon must be finite and > 0"), epsilon=0.0),
    row("negative epsilon", two_clusters, (ValueError, r"epsilon=-1.0"), epsilon=-1.0),
    row("nan epsilon", two_clusters, (ValueError, r"epsilon=nan"), epsilon=float("nan")),
    row("infinite epsilon", two_clusters, (ValueError, r"epsilon=inf"), epsilon=float("inf")),
    row("string epsilon", two_clusters, (TypeError, r"epsilon must be a real number"), epsilon="1"),
    row("zero delta", two_clusters, (ValueError, r"delta must be in \(0, 1\)"), delta=0.0),
    row("delta one", two_clusters, (ValueError, r"delta=1.0"), delta=1.0),
    row("unknown mode", two_clusters, (ValueError, r"mode must be one of"), mode="laplace"),
    # Degenerate data that must still give a valid release.
    row("one record", lambda rng: two_clusters(rng, n=1), VALID),
    row("single repeated record", lambda rng: np.tile([[0.5, 1.0]], (100, 1)), VALID),
    row("duplicated rows", lambda rng: np.repeat(two_clusters(rng, n=20), 10, axis=0), VALID),
    row("constant column", lambda rng: np.c_[two_clusters(rng)[:, 0], np.full(N_RECORDS, 2.0)], VALID),
    row("collinear columns", lambda rng: (lambda x: np.c_[x, 2 * x + 0.5])(two_clusters(rng, d=1)), VALID),
    row("one feature", lambda rng: two_clusters(rng, d=1), VALID, domain=LINE),
    row("records equal components", lambda rng: two_clusters(rng, n=3), VALID, n_components=3),
    row("more components than distinct records",
        lambda rng: np.tile([[0.5, 1.0], [-1.0, 2.0]], (50, 1)), VALID, n_components=5),
    row("float32 records", lambda rng: two_clusters(rng).astype(np.float32), VALID),
    row("float16 records", lambda rng: two_clusters(rng).astype(np.float16), VALID),
    row("integer records", lambda rng: np.round(two_clusters(rng)).astype(int), VALID),
    row("list of lists", lambda rng: two_clusters(rng).tolist(), VALID),
    row("numeric dataframe", lambda rng: pd.DataFrame(two_clusters(rng), columns=["a", "b"]), VALID),
    row("entries of 1e8 in a box", large_entries, VALID, domain=LARGE_BOX),
    row("float32 entries of 1e8 in a box", lambda rng: large_entries(rng).astype(np.float32), VALID, domain=LARGE_BOX),
    row("entries of 1e8 in a ball", large_entries, VALID, domain=LARGE_BALL),
    row("float32 records in a ball of radius 1000",
        lambda rng: (1000.0 + 100.0 * rng.normal(size=(N_RECORDS, 2))).astype(np.float32), VALID, domain=BALL_1000),
    row("tiny epsilon", two_clusters, VALID, epsilon=1e-6),
    row("huge epsilon", two_clusters, VALID, epsilon=1e6),
    # Valid releases that must warn.
    row("domain excludes every record", lambda rng: two_clusters(rng) + 100.0,
        (UserWarning, r"all 200 records lie outside the domain")),
    row("delta at least 1/N", lambda rng: two_clusters(rng, n=10), (UserWarning, r"delta=0.2 is not below 1/N = 0.1"),
        delta=0.2),
    row("replace-one relation", two_clusters, VALID, relation="replace_one"),
    # The oracle reference mode is not private, but its output must still be a valid mixture.
    row("oracle mode", two_clusters, ORACLE_WARNING, mode="oracle"),
    row("oracle mode with fewer records than components", lambda rng: two_clusters(rng, n=1),
        (ValueError, r"n_samples=1 should be >= n_clusters=2"), mode="oracle"),
    row("oracle mode with a single repeated record", lambda rng: np.tile([[0.5, 1.0]], (100, 1)), ORACLE_WARNING,
        mode="oracle"),
    row("oracle mode with more components than distinct records",
        lambda rng: np.tile([[0.5, 1.0], [-1.0, 2.0]], (50, 1)), ORACLE_WARNING, n_components=5, mode="oracle"),
]


def assert_valid_release(params, n_components, d):
    weights = np.asarray(params.weights)
    means = np.asarray(params.means)
    covariances = np.asarray(params.covariances, dtype=np.float64)

    assert weights.shape == (n_components,)
    assert means.shape == (n_components, d)
    assert covariances.shape == (n_components, d, d)
    assert np.all(np.isfinite(weights)), f"weights not finite: {weights}"
    assert np.all(np.isfinite(means)), f"means not finite: {means}"
    assert np.all(np.isfinite(covariances)), "covariances not finite"
    assert np.all(weights >= 0), f"negative weight: {weights}"
    assert weights.sum() == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(covariances, np.swapaxes(covariances, -1, -2), rtol=1e-6, atol=0)
    assert np.linalg.eigvalsh(covariances).min() > 0, "a covariance is not positive definite"
    np.linalg.cholesky(covariances)


@pytest.mark.parametrize("make_x, domain, n_components, options, expected", RELEASE_ROWS)
def test_release_gmm_bad_input(rng, make_x, domain, n_components, options, expected):
    x = make_x(rng)
    options = {"epsilon": 1.0, "delta": 1e-5, **options}

    def release():
        return release_gmm(x, domain=domain, n_components=n_components, key=jax.random.key(0), **options)

    if expected is VALID:
        params, metadata = release()
    elif issubclass(expected[0], Warning):
        with pytest.warns(expected[0], match=expected[1]):
            params, metadata = release()
    else:
        with pytest.raises(expected[0], match=expected[1]):
            release()
        return

    assert_valid_release(params, n_components, domain.n_features)
    assert metadata["dp_guarantee"] is (options.get("mode", "dp_em") != "oracle")


def test_data_derived_domain_has_no_guarantee(rng):
    x = two_clusters(rng)
    with pytest.warns(PrivacyLeakWarning, match="derived from the data"):
        domain = Domain.from_data(x)
    with pytest.warns(PrivacyLeakWarning, match="no DP guarantee"):
        params, metadata = release_gmm(x, epsilon=1.0, delta=1e-5, domain=domain, n_components=2,
                                       key=jax.random.key(0))
    assert_valid_release(params, 2, 2)
    assert metadata["dp_guarantee"] is False
    assert "the domain was derived from the data" in metadata["no_guarantee_reasons"]
    assert metadata["domain"]["data_derived"] is True


def test_data_derived_domain_with_constant_column(rng):
    x = np.c_[two_clusters(rng)[:, 0], np.full(N_RECORDS, 2.0)]
    with pytest.warns(PrivacyLeakWarning):
        domain = Domain.from_data(x)
        params, metadata = release_gmm(x, epsilon=1.0, delta=1e-5, domain=domain, n_components=2,
                                       key=jax.random.key(0))
    assert_valid_release(params, 2, 2)
    assert metadata["dp_guarantee"] is False


DOMAIN_ROWS = [
    pytest.param(lambda: Domain.from_bounds([0.0, 5.0], [1.0, 5.0]), r"lower\[1\]=5.0 >= upper\[1\]=5.0", id="lower equals upper"),
    pytest.param(lambda: Domain.from_bounds([2.0, 0.0], [1.0, 1.0]), r"lower\[0\]=2.0 >= upper\[0\]=1.0", id="lower above upper"),
    pytest.param(lambda: Domain.from_bounds([0.0, np.nan], [1.0, 1.0]), r"bounds must be finite", id="nan bound"),
    pytest.param(lambda: Domain.from_bounds([0.0], [1.0, 2.0]), r"vectors of one shape", id="bound shapes differ"),
    pytest.param(lambda: Domain.from_ball([0.0, 0.0], 0.0), r"radius must be finite and > 0", id="zero radius"),
    pytest.param(lambda: Domain.from_ball([0.0, 0.0], -1.0), r"radius=-1.0", id="negative radius"),
    pytest.param(lambda: Domain.from_ball([0.0, 0.0], np.inf), r"radius=inf", id="infinite radius"),
    pytest.param(lambda: Domain.from_ball([0.0, np.inf], 1.0), r"centre must be a finite vector", id="infinite centre"),
    pytest.param(lambda: Domain.from_ball([[0.0, 0.0]], 1.0), r"centre must be a finite vector", id="matrix centre"),
]


@pytest.mark.parametrize("make_domain, pattern", DOMAIN_ROWS)
def test_invalid_domain_raises(make_domain, pattern):
    with pytest.raises(ValueError, match=pattern):
        make_domain()


FIT_EM_ROWS = [
    pytest.param(lambda rng: two_clusters(rng, n=1), 1, id="one record"),
    pytest.param(lambda rng: np.tile([[0.5, 1.0]], (100, 1)), 2, id="single repeated record"),
    pytest.param(lambda rng: np.repeat(two_clusters(rng, n=20), 10, axis=0), 2, id="duplicated rows"),
    pytest.param(lambda rng: np.c_[two_clusters(rng)[:, 0], np.full(N_RECORDS, 2.0)], 2, id="constant column"),
    pytest.param(lambda rng: (lambda x: np.c_[x, 2 * x + 0.5])(two_clusters(rng, d=1)), 2, id="collinear columns"),
    pytest.param(lambda rng: two_clusters(rng, d=1), 2, id="one feature"),
    pytest.param(lambda rng: two_clusters(rng, n=3), 3, id="records equal components"),
    pytest.param(lambda rng: np.tile([[0.5, 1.0], [-1.0, 2.0]], (50, 1)), 5, id="more components than distinct records"),
    pytest.param(lambda rng: two_clusters(rng).astype(np.float32), 2, id="float32 records"),
    pytest.param(large_entries, 2, id="entries of 1e8"),
    pytest.param(lambda rng: large_entries(rng).astype(np.float32), 2, id="float32 entries of 1e8"),
]


@pytest.mark.parametrize("make_x, n_components", FIT_EM_ROWS)
def test_fit_em_degenerate_data(rng, make_x, n_components):
    x = make_x(rng)
    # Start from the first K records, as a k-means start would on such data.
    starts = x[np.arange(n_components) % x.shape[0]]
    init = initial_params_from_means(x, starts)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = fit_em(jnp.asarray(x), init, max_iter=200)
    assert_valid_release(result.params, n_components, x.shape[1])
    assert np.isfinite(float(result.log_likelihood))
