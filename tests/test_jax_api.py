"""The functional core under jax.jit and jax.vmap, in float32 and float64.

Each test checks that a compiled call agrees with the eager one, that a
vmapped call agrees with a Python loop over the batch, and that outputs keep
the input precision.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpgmm_jax import (
    GMMParams,
    NoiseScales,
    SufficientStatistics,
    closed_form_shares,
    fit_em,
    kl_monte_carlo,
    matched_bound,
    mu_from_epsilon_delta,
    release_statistics,
    sufficient_statistics,
)
from dpgmm_jax.mechanism import group_sensitivities
from tests.conftest import random_spd

DTYPES = [jnp.float32, jnp.float64]
RADIUS = 3.0


def tolerance(dtype) -> dict:
    return {"rtol": 2e-4, "atol": 1e-5} if dtype == jnp.float32 else {"rtol": 1e-9, "atol": 1e-12}


def assert_trees_close(actual, expected, dtype):
    for leaf_actual, leaf_expected in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(leaf_actual), np.asarray(leaf_expected), **tolerance(dtype))


def assert_dtype(tree, dtype):
    """Check that every floating-point leaf has the input precision."""
    for leaf in jax.tree.leaves(tree):
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            continue
        assert leaf.dtype == dtype, f"expected {jnp.dtype(dtype).name}, got {leaf.dtype}"


def unstack(tree, index):
    return jax.tree.map(lambda leaf: leaf[index], tree)


def stack(trees):
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def check_jit_and_vmap(fn, batched_args, dtype, batch_size):
    """Check fn under jit and vmap against eager calls and return the vmapped outputs.

    ``batched_args`` is a tuple of pytrees whose leaves carry a leading batch
    axis of length ``batch_size``.
    """
    eager = [fn(*unstack(batched_args, i)) for i in range(batch_size)]
    compiled = jax.jit(fn)(*unstack(batched_args, 0))
    batched = jax.vmap(fn)(*batched_args)

    assert_trees_close(compiled, eager[0], dtype)
    for i, result in enumerate(eager):
        assert_trees_close(unstack(batched, i), result, dtype)
    assert_dtype(batched, dtype)
    return batched


def random_mixture(rng, n_components, d, dtype) -> GMMParams:
    weights = rng.dirichlet(np.full(n_components, 3.0))
    means = rng.uniform(-1.0, 1.0, size=(n_components, d))
    covariances = random_spd(rng, n_components, d, scale=0.2)
    return GMMParams(jnp.asarray(weights, dtype), jnp.asarray(means, dtype), jnp.asarray(covariances, dtype))


def records(rng, n, d, dtype):
    centres = np.array([[-1.0] * d, [1.0] * d])
    x = centres[rng.integers(2, size=n)] + 0.3 * rng.normal(size=(n, d))
    return jnp.asarray(x, dtype)


def statistics(rng, dtype, n_components=2, d=2, n=400) -> SufficientStatistics:
    y = records(rng, n, d, dtype)
    resp = jnp.asarray(rng.dirichlet(np.ones(n_components), size=n), dtype)
    return sufficient_statistics(y, resp)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fit_em_jit_vmap(rng, dtype):
    x = records(rng, 300, 2, dtype)
    starts = [random_mixture(rng, 2, 2, dtype) for _ in range(3)]

    def fit(init):
        return fit_em(x, init, max_iter=20, tol=0.0)

    batched = check_jit_and_vmap(fit, (stack(starts),), dtype, 3)
    assert batched.params.weights.dtype == dtype
    np.testing.assert_array_equal(np.asarray(batched.n_iter), 20)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sufficient_statistics_jit_vmap(rng, dtype):
    ys = jnp.stack([records(rng, 200, 3, dtype) for _ in range(4)])
    resps = jnp.asarray(rng.dirichlet(np.ones(2), size=(4, 200)), dtype)

    batched = check_jit_and_vmap(sufficient_statistics, (ys, resps), dtype, 4)
    assert batched.second_moments.shape == (4, 2, 3, 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_release_statistics_jit_vmap(rng, dtype):
    stats = statistics(rng, dtype)
    scales = NoiseScales(*(jnp.full((2,), value, dtype) for value in (2.0, 5.0, 10.0)))
    keys = jax.random.split(jax.random.key(0), 3)

    def release(key):
        return release_statistics(key, stats, scales, RADIUS)

    batched = check_jit_and_vmap(release, (keys,), dtype, 3)
    np.testing.assert_allclose(np.asarray(batched.params.weights).sum(axis=-1), 1.0, rtol=1e-5)
    assert np.linalg.eigvalsh(np.asarray(batched.params.covariances, np.float64)).min() > 0


def test_mu_from_epsilon_delta_is_python_level():
    mu = mu_from_epsilon_delta(1.0, 1e-5)
    assert type(mu) is float
    assert mu == pytest.approx(0.26805, abs=1e-4)

    # It validates with Python checks and calls dp_accounting, so it cannot
    # be traced: compute mus outside jit and pass them in as arrays.
    with pytest.raises(TypeError, match="epsilon must be a real number"):
        jax.jit(mu_from_epsilon_delta)(1.0, 1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mu_values_feed_vmapped_release(rng, dtype):
    stats = statistics(rng, dtype)
    mus = jnp.asarray([mu_from_epsilon_delta(epsilon, 1e-5) for epsilon in (0.5, 1.0, 4.0)], dtype)
    shares = jnp.full((2, 3), 1.0 / 3.0, dtype)
    sensitivities = group_sensitivities(jnp.asarray(RADIUS, dtype))

    def release(mu):
        sigmas = sensitivities[None, :] / (jnp.sqrt(shares) * mu)
        scales = NoiseScales(sigmas[:, 0], sigmas[:, 1], sigmas[:, 2])
        return release_statistics(jax.random.key(1), stats, scales, RADIUS)

    check_jit_and_vmap(release, (mus,), dtype, 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_closed_form_shares_jit_vmap(rng, dtype):
    costs = jnp.asarray(rng.uniform(1e-4, 1.0, size=(3, 3, 3)), dtype)
    sensitivities = jnp.asarray([1.0, RADIUS, RADIUS**2], dtype)
    shares = functools.partial(closed_form_shares, sensitivities=sensitivities, min_share=0.05)

    batched = check_jit_and_vmap(shares, (costs,), dtype, 3)
    np.testing.assert_allclose(np.asarray(batched).sum(axis=-1), 1.0, rtol=1e-5)
    assert float(batched.min()) >= 0.05 - 1e-6


@pytest.mark.parametrize("dtype", DTYPES)
def test_matched_bound_jit_vmap(rng, dtype):
    p = random_mixture(rng, 3, 2, dtype)
    qs = [random_mixture(rng, 3, 2, dtype) for _ in range(3)]

    batched = check_jit_and_vmap(functools.partial(matched_bound, p), (stack(qs),), dtype, 3)
    assert float(batched.min()) > 0
    assert float(jax.jit(matched_bound)(p, p)) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kl_monte_carlo_jit_vmap(rng, dtype):
    p = random_mixture(rng, 2, 2, dtype)
    q = random_mixture(rng, 2, 2, dtype)
    keys = jax.random.split(jax.random.key(3), 3)

    def estimate(key):
        return kl_monte_carlo(key, p, q, 2000)

    batched = check_jit_and_vmap(estimate, (keys,), dtype, 3)

    # The matched bound holds for any matching, so it caps every estimate
    # up to its Monte Carlo error.
    values, errors = (np.asarray(leaf, np.float64) for leaf in batched)
    assert np.all(values - 5 * errors <= float(matched_bound(p, q)))
