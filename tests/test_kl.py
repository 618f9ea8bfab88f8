"""KL divergence: closed form, matched bound and Monte Carlo."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpgmm_jax.em import log_prob
from dpgmm_jax.kl import best_matching, gaussian_kl, kl_monte_carlo, matched_bound, permute_components, sample
from dpgmm_jax.types import GMMParams
from tests.conftest import random_spd


def random_mixture(rng, n_components=3, d=2, spread=3.0):
    weights = rng.dirichlet(np.ones(n_components) * 3)
    means = rng.normal(scale=spread, size=(n_components, d))
    return GMMParams(jnp.asarray(weights), jnp.asarray(means), jnp.asarray(random_spd(rng, n_components, d)))


def test_gaussian_kl_matches_dense_formula(rng):
    d = 4
    mean_p, mean_q = rng.normal(size=d), rng.normal(size=d)
    cov_p, cov_q = random_spd(rng, 2, d)
    precision_q = np.linalg.inv(cov_q)
    difference = mean_q - mean_p
    expected = 0.5 * (np.trace(precision_q @ cov_p) + difference @ precision_q @ difference - d
                      + np.linalg.slogdet(cov_q)[1] - np.linalg.slogdet(cov_p)[1])
    assert float(gaussian_kl(mean_p, cov_p, mean_q, cov_q)) == pytest.approx(expected, rel=1e-10)


def test_kl_of_identical_mixtures_is_zero(rng):
    p = random_mixture(rng)
    assert float(matched_bound(p, p)) == pytest.approx(0.0, abs=1e-12)


def test_bound_equals_kl_for_single_gaussian(rng):
    p, q = random_mixture(rng, 1, 3), random_mixture(rng, 1, 3)
    estimate, standard_error = kl_monte_carlo(jax.random.key(0), p, q, 200_000)
    assert abs(float(estimate) - float(matched_bound(p, q))) < 4 * float(standard_error)


def test_bound_dominates_monte_carlo_vmapped(rng):
    n_trials = 16
    p = random_mixture(rng, 3, 2, spread=1.0)
    qs = [random_mixture(rng, 3, 2, spread=1.0) for _ in range(n_trials)]
    q = jax.tree.map(lambda *a: jnp.stack(a), *qs)
    keys = jax.random.split(jax.random.key(3), n_trials)

    estimates, errors = jax.vmap(lambda key, qq: kl_monte_carlo(key, p, qq, 20_000))(keys, q)
    bounds = jax.vmap(lambda qq: matched_bound(p, qq))(q)
    assert estimates.shape == (n_trials,)
    assert np.all(np.asarray(bounds) >= np.asarray(estimates) - 3 * np.asarray(errors))
    assert np.any(np.asarray(bounds) > np.asarray(estimates) + 3 * np.asarray(errors)), "bound should be loose somewhere"


def test_best_matching_recovers_permutation(rng):
    p = random_mixture(rng, 4, 2, spread=10.0)
    permutation = np.array([2, 0, 3, 1])
    shuffled = permute_components(p, permutation)
    found = best_matching(p, shuffled)
    aligned = permute_components(shuffled, found)
    assert float(matched_bound(p, aligned)) == pytest.approx(0.0, abs=1e-10)


def test_best_matching_batched(rng):
    p = random_mixture(rng, 3, 2, spread=10.0)
    batch = jax.tree.map(lambda a: jnp.stack([a, a[::-1]]), p)
    permutations = best_matching(p, batch)
    np.testing.assert_array_equal(permutations, [[0, 1, 2], [2, 1, 0]])


def test_monte_carlo_invariant_to_component_order(rng):
    p, q = random_mixture(rng), random_mixture(rng)
    key = jax.random.key(5)
    shuffled = permute_components(q, np.array([1, 2, 0]))
    assert float(kl_monte_carlo(key, p, q, 1000)[0]) == pytest.approx(float(kl_monte_carlo(key, p, shuffled, 1000)[0]))


def test_monte_carlo_single_chunk_equals_direct_computation(rng):
    p, q = random_mixture(rng, 3, 2), random_mixture(rng, 4, 2)
    key = jax.random.key(6)
    estimate, standard_error = kl_monte_carlo(key, p, q, 3000, chunk_size=3000)

    x = sample(jax.random.split(key, 1)[0], p, 3000)
    log_ratio = np.asarray(log_prob(x, p) - log_prob(x, q))
    assert float(estimate) == pytest.approx(log_ratio.mean(), rel=1e-12)
    assert float(standard_error) == pytest.approx(log_ratio.std(ddof=1) / np.sqrt(3000), rel=1e-10)


def test_monte_carlo_chunk_size_changes_stream_only(rng):
    p, q = random_mixture(rng, 3, 2), random_mixture(rng, 3, 2)
    key = jax.random.key(7)
    whole, whole_error = kl_monte_carlo(key, p, q, 40_000, chunk_size=40_000)

    # 40,000 is not a multiple of 3,000: the last chunk's surplus is dropped.
    chunked, chunked_error = kl_monte_carlo(key, p, q, 40_000, chunk_size=3000)
    assert float(chunked) != float(whole)
    assert abs(float(chunked) - float(whole)) < 4 * float(np.hypot(whole_error, chunked_error))


@pytest.mark.parametrize("n_samples, chunk_size, match", [(1, 10, "n_samples=1"), (100, 0, "chunk_size=0")])
def test_monte_carlo_rejects_bad_sizes(rng, n_samples, chunk_size, match):
    p = random_mixture(rng)
    with pytest.raises(ValueError, match=match):
        kl_monte_carlo(jax.random.key(0), p, p, n_samples, chunk_size=chunk_size)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_box_muller_draws_are_standard_normal(dtype):
    from scipy import stats

    from dpgmm_jax.kl import _standard_normal

    # An odd size exercises the dropped half of the last pair.
    draws = np.asarray(_standard_normal(jax.random.key(8), (40_001, 3), dtype))
    assert draws.dtype == np.dtype(dtype)
    assert draws.shape == (40_001, 3)
    assert np.all(np.isfinite(draws))
    assert stats.kstest(draws.ravel(), "norm").pvalue > 1e-3

    # The cosine and sine halves come from the same radius and angle; they
    # must still be uncorrelated, and so must the columns of a record.
    flat = draws.ravel()
    half = flat.size // 2
    assert abs(np.corrcoef(flat[:half], flat[half:2 * half])[0, 1]) < 4 / np.sqrt(half)
    assert abs(np.corrcoef(flat[:half] ** 2, flat[half:2 * half] ** 2)[0, 1]) < 4 / np.sqrt(half) * 2
    correlation = np.corrcoef(draws, rowvar=False)
    assert np.all(np.abs(correlation - np.eye(3)) < 4 / np.sqrt(draws.shape[0]))
