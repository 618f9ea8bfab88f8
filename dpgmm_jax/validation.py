"""Input validation with errors that name the bad value and the fix.

Every public entry point validates its arguments here before any JAX tracing,
so a bad value fails loudly in Python instead of turning into NaN parameters.
"""

import math
import numbers

import numpy as np


class PrivacyLeakWarning(UserWarning):
    """Warns that an output no longer carries a differential privacy guarantee.

    Raised, for example, when the data domain is derived from the data itself
    or when a reference mode (``oracle``) reads the non-private fit.
    """


def check_epsilon(epsilon) -> float:
    """Return epsilon as a float after checking that it is finite and positive."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real):
        raise TypeError(f"epsilon must be a real number, got epsilon={epsilon!r}")
    epsilon = float(epsilon)
    if not math.isfinite(epsilon) or epsilon <= 0:
        raise ValueError(
            f"epsilon must be finite and > 0, got epsilon={epsilon}; "
            "pass a positive privacy budget such as epsilon=1.0"
        )
    return epsilon


def check_delta(delta) -> float:
    """Return delta as a float after checking that it lies in (0, 1)."""
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real):
        raise TypeError(f"delta must be a real number, got delta={delta!r}")
    delta = float(delta)
    if not 0.0 < delta < 1.0:
        raise ValueError(
            f"delta must be in (0, 1), got delta={delta}; "
            "a common choice is delta=1e-5, or below 1/N for N records"
        )
    return delta


def check_n_components(n_components) -> int:
    """Return the number of components K after checking that it is an integer >= 1."""
    if isinstance(n_components, bool) or not isinstance(n_components, numbers.Integral):
        raise TypeError(
            f"n_components must be an integer, got n_components={n_components!r}"
        )
    if n_components < 1:
        raise ValueError(
            f"n_components must be >= 1, got n_components={n_components}; "
            "pass the number of mixture components, for example n_components=3"
        )
    return int(n_components)


def check_positive(name: str, value) -> float:
    """Return ``value`` as a float after checking that it is finite and > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {name}={value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {name}={value}")
    return value


def check_data(x, n_features: int | None = None) -> np.ndarray:
    """Validate a data matrix and return it as a floating-point NumPy array.

    Args:
        x: records, array-like of shape (N, d).
        n_features: the dimension d that the declared domain expects, or None.

    Returns:
        The records as an (N, d) float array. float32 input stays float32,
        float16 becomes float32 and every other type becomes float64.

    Raises:
        TypeError: if the entries are not numbers.
        ValueError: if the array is empty, not two-dimensional, contains NaN or
            inf, or has the wrong number of columns.
    """
    try:
        array = np.asarray(x)
    except (TypeError, ValueError) as error:
        raise TypeError(f"data could not be converted to an array: {error}") from error

    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"data must be numeric, got an array of dtype {array.dtype}; "
            "drop or encode string and object columns before fitting"
        )
    if array.ndim == 1:
        raise ValueError(
            f"data must be two-dimensional (N, d), got shape {array.shape}; "
            "reshape a single feature with x.reshape(-1, 1)"
        )
    if array.ndim != 2:
        raise ValueError(f"data must be two-dimensional (N, d), got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"data is empty, got shape {array.shape}; pass at least one record")
    if array.shape[1] == 0:
        raise ValueError(f"data has no features, got shape {array.shape}")

    if array.dtype.kind != "f":
        array = array.astype(np.float64)
    elif array.dtype == np.float16:
        # With jax 0.9.2 a float16 release fails with NotImplementedError
        # ("Unsupported dtype float16"), so compute in float32.
        array = array.astype(np.float32)
    elif array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        n_bad = int(np.sum(~np.all(np.isfinite(array), axis=1)))
        raise ValueError(
            f"data contains NaN or inf in {n_bad} of {array.shape[0]} records; "
            "drop or impute them before fitting"
        )
    if n_features is not None and array.shape[1] != n_features:
        raise ValueError(
            f"data has d={array.shape[1]} features but the domain declares "
            f"d={n_features}; pass a domain with one centre coordinate or bound per feature"
        )
    return array
