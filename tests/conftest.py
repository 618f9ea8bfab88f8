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


@pytest.fixture(autouse=True, scope="module")
def release_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    Every compiled CPU program keeps memory mappings, and the suite compiles
    many programs. With the optax solver as the default allocation, the
    process passed the kernel's limit on mappings per process
    (vm.max_map_count, 65,530 here), LLVM failed with "Cannot allocate
    memory" and the run aborted.
    """
    yield
    jax.clear_caches()
