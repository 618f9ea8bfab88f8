"""EM in JAX against scikit-learn's GaussianMixture."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from dpgmm_jax.em import e_step, fit_em, initial_params_from_means, log_prob, responsibilities


def blobs(n=3000, d=3, centers=4, seed=0):
    x, _ = make_blobs(n, n_features=d, centers=centers, random_state=seed)
    return x


def sklearn_from(init, n_components, max_iter, tol):
    return GaussianMixture(
        n_components, covariance_type="full", max_iter=max_iter, tol=tol, reg_covar=1e-6,
        weights_init=np.asarray(init.weights), means_init=np.asarray(init.means),
        precisions_init=np.linalg.inv(np.asarray(init.covariances)),
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_em_matches_sklearn_float64(seed):
    x = blobs(seed=seed)
    rng = np.random.default_rng(seed)
    init = initial_params_from_means(x, x[rng.choice(len(x), 4, replace=False)])

    ours = fit_em(jnp.asarray(x), init, max_iter=300, tol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs = sklearn_from(init, 4, 300, 1e-6).fit(x)

    assert float(ours.log_likelihood) == pytest.approx(theirs.score(x), rel=1e-4)
    assert int(ours.n_iter) == theirs.n_iter_


def test_em_float32_stays_finite_and_close():
    x = blobs().astype(np.float32) + 1000.0
    init = initial_params_from_means(x, x[:4])
    result32 = fit_em(jnp.asarray(x), init, max_iter=50, tol=0.0)
    result64 = fit_em(jnp.asarray(x, dtype=jnp.float64), init, max_iter=50, tol=0.0)
    assert result32.params.means.dtype == jnp.float32
    assert np.all(np.isfinite(result32.params.covariances))
    assert float(result32.log_likelihood) == pytest.approx(float(result64.log_likelihood), rel=1e-3)


def test_tolerance_stop():
    x = blobs()
    init = initial_params_from_means(x, x[:4])
    stopped = fit_em(jnp.asarray(x), init, max_iter=500, tol=1e-3)
    full = fit_em(jnp.asarray(x), init, max_iter=40, tol=0.0)
    assert bool(stopped.converged)
    assert int(stopped.n_iter) < 500
    assert int(full.n_iter) == 40


def test_chunked_e_step_matches_single_chunk(rng):
    x = jnp.asarray(rng.normal(size=(1000, 3)))
    init = initial_params_from_means(np.asarray(x), np.asarray(x[:3]))
    whole, total_whole = e_step(x, init, chunk_size=10_000)
    chunked, total_chunked = e_step(x, init, chunk_size=128)
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(a, b, rtol=1e-10)
    assert float(total_whole) == pytest.approx(float(total_chunked), rel=1e-12)


def test_reg_covar_prevents_singular_covariance():
    x = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]), 50, axis=0)
    init = initial_params_from_means(x, x[[0, 50, 100]])
    result = fit_em(jnp.asarray(x), init, max_iter=20, reg_covar=1e-4)
    assert np.all(np.isfinite(result.params.covariances))
    assert np.linalg.eigvalsh(np.asarray(result.params.covariances)).min() >= 1e-4 * 0.99


def test_log_prob_and_responsibilities_match_sklearn():
    x = blobs(500)
    init = initial_params_from_means(x, x[:4])
    model = sklearn_from(init, 4, 1, 1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x)
    params = type(init)(jnp.asarray(model.weights_), jnp.asarray(model.means_), jnp.asarray(model.covariances_))
    np.testing.assert_allclose(log_prob(jnp.asarray(x), params), model.score_samples(x), rtol=1e-9)
    np.testing.assert_allclose(responsibilities(jnp.asarray(x), params), model.predict_proba(x), atol=1e-9)


def test_fit_em_vmaps_over_starts():
    x = jnp.asarray(blobs(500))
    inits = [initial_params_from_means(np.asarray(x), np.asarray(x[i : i + 4])) for i in (0, 10)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *inits)
    results = jax.vmap(lambda init: fit_em(x, init, max_iter=30))(stacked)
    assert results.params.means.shape == (2, 4, 3)
    assert np.all(np.isfinite(results.log_likelihood))
