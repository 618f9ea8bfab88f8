"""Shared test setup: float64 on, so that tolerances test the maths, not rounding.

Tests that exercise float32 pass float32 arrays explicitly.
"""

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def random_spd(rng, n_components: int, d: int, scale: float = 1.0) -> np.ndarray:
    """Random symmetric positive definite matrices of shape (K, d, d)."""
    factors = rng.normal(size=(n_components, d, d))
    return scale * (factors @ np.swapaxes(factors, 1, 2) / d + 0.5 * np.eye(d))
