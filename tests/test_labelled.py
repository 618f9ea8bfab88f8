"""The labelled mode: a pilot release, a planned main release and their combination."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpgmm_jax import Domain, pld_epsilon, release_gmm
from dpgmm_jax.algorithms import combine_inverse_variance
from dpgmm_jax.mechanism import add_noise
from dpgmm_jax.types import NoiseScales, SufficientStatistics


@pytest.fixture
def labelled_records(rng):
    centres = np.array([[-0.5, -0.5], [0.5, 0.4]])
    labels = rng.integers(2, size=2000)
    return centres[labels] + 0.1 * rng.normal(size=(2000, 2)), labels


@pytest.mark.parametrize("allocation", ["closed_form", "equal", "optax"])
def test_labelled_release_valid_and_composed(labelled_records, allocation):
    x, labels = labelled_records
    domain = Domain.from_bounds([-1.0, -1.0], [1.0, 1.0])
    params, metadata = release_gmm(x, epsilon=5.0, delta=1e-5, domain=domain, n_components=2, mode="labelled",
                                   labels=labels, key=jax.random.key(0), allocation=allocation, solver_steps=10)
    np.testing.assert_allclose(params.weights.sum(), 1.0)
    assert np.linalg.eigvalsh(params.covariances).min() > 0
    np.testing.assert_allclose(params.means, [[-0.5, -0.5], [0.5, 0.4]], atol=0.05)
    assert metadata["mode"] == "labelled"
    assert metadata["dp_guarantee"] is True
    assert pld_epsilon(metadata["iteration_mus"], 1e-5) == pytest.approx(5.0, rel=1e-3)


def test_labels_validated(labelled_records):
    x, labels = labelled_records
    domain = Domain.from_bounds([-1.0, -1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="needs labels"):
        release_gmm(x, epsilon=1.0, delta=1e-5, domain=domain, n_components=2, mode="labelled")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        release_gmm(x, epsilon=1.0, delta=1e-5, domain=domain, n_components=2, mode="labelled", labels=labels + 1)
    with pytest.raises(ValueError, match="only used by mode='labelled'"):
        release_gmm(x, epsilon=1.0, delta=1e-5, domain=domain, n_components=2, labels=labels)


def test_inverse_variance_combination_lowers_variance():
    d, k = 2, 1
    zero = SufficientStatistics(jnp.zeros(k), jnp.zeros((k, d)), jnp.zeros((k, d, d)))
    first_scales = NoiseScales(jnp.array([1.0]), jnp.array([2.0]), jnp.array([3.0]))
    second_scales = NoiseScales(jnp.array([2.0]), jnp.array([2.0]), jnp.array([1.0]))

    def one(key):
        key_a, key_b = jax.random.split(key)
        combined, scales = combine_inverse_variance(add_noise(key_a, zero, first_scales), first_scales,
                                                    add_noise(key_b, zero, second_scales), second_scales)
        return combined, scales

    combined, scales = jax.vmap(one)(jax.random.split(jax.random.key(0), 20_000))
    expected = [(1 / 1.0**2 + 1 / 2.0**2) ** -0.5, (2 / 2.0**2) ** -0.5, (1 / 3.0**2 + 1.0) ** -0.5]
    np.testing.assert_allclose([scales.weights[0, 0], scales.means[0, 0], scales.covariances[0, 0]], expected)
    np.testing.assert_allclose(np.std(combined.counts), expected[0], rtol=0.03)
    np.testing.assert_allclose(np.std(combined.first_moments), expected[1], rtol=0.03)


def test_estimator_labelled_mode(labelled_records):
    from dpgmm_jax import DPGaussianMixture

    x, labels = labelled_records
    model = DPGaussianMixture(n_components=2, epsilon=5.0, delta=1e-5, bounds=([-1.0, -1.0], [1.0, 1.0]),
                              mode="labelled", allocation="optax", random_state=0)
    model.fit(x, labels)
    np.testing.assert_allclose(model.means_, [[-0.5, -0.5], [0.5, 0.4]], atol=0.05)
    assert model.privacy_["mode"] == "labelled"
    with pytest.raises(ValueError, match="needs labels"):
        DPGaussianMixture(n_components=2, epsilon=1.0, delta=1e-5, bounds=([-1.0, -1.0], [1.0, 1.0]),
                          mode="labelled").fit(x)
