"""The private histogram start of DP-EM."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpgmm_jax import Domain, pld_epsilon, release_gmm
from dpgmm_jax.algorithms import ReleaseConfig, histogram_bins, histogram_start, uses_histogram_start


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
        ReleaseConfig(2, start="kmeans").validate()
    with pytest.raises(ValueError, match="start_share must be in"):
        ReleaseConfig(2, start_share=1.0).validate()
