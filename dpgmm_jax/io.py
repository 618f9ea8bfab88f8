"""Save and load released mixtures with their privacy metadata as versioned JSON.

A release file is one JSON object:

    {
      "format": "dpgmm_jax.release",
      "format_version": 1,
      "params": {"weights": [...], "means": [[...]], "covariances": [[[...]]]},
      "metadata": {"epsilon": ..., "delta": ..., "dp_guarantee": ..., ...}
    }

Floats are written with Python's shortest round-trip representation, so a
saved release loads back bit for bit. ``load_release`` checks everything a
consumer relies on: the format name and version, array shapes, finite
values, weights on the probability simplex, symmetric positive definite
covariances and the privacy fields of the metadata. A damaged or hand-edited
file raises ``InvalidReleaseFileError`` naming the field, for example
"covariances[1] is not positive definite".
"""

import json
import logging
import math
import os
import pathlib
import tempfile

import numpy as np

from dpgmm_jax.types import GMMParams

logger = logging.getLogger(__name__)

FORMAT_NAME = "dpgmm_jax.release"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)

# Tolerances for values that went through a JSON round trip or a hand edit.
_SIMPLEX_TOLERANCE = 1e-9
_SYMMETRY_TOLERANCE = 1e-9


class InvalidReleaseFileError(ValueError):
    """Raised when a release file or the release passed to ``save_release`` is invalid."""


def validate_params(params: GMMParams) -> GMMParams:
    """Check a mixture's shapes, finiteness, simplex weights and SPD covariances.

    Args:
        params: the mixture, with array-like fields.

    Returns:
        The mixture as float64 NumPy arrays.

    Raises:
        InvalidReleaseFileError: naming the first invalid field.
    """
    weights = _float_array("weights", params.weights)
    means = _float_array("means", params.means)
    covariances = _float_array("covariances", params.covariances)

    if weights.ndim != 1 or weights.shape[0] < 1:
        raise InvalidReleaseFileError(f"weights must have shape (K,) with K >= 1, got shape {weights.shape}")
    n_components = weights.shape[0]
    if means.ndim != 2 or means.shape[0] != n_components or means.shape[1] < 1:
        raise InvalidReleaseFileError(f"means must have shape (K={n_components}, d), got shape {means.shape}")
    d = means.shape[1]
    if covariances.shape != (n_components, d, d):
        raise InvalidReleaseFileError(
            f"covariances must have shape (K, d, d) = {(n_components, d, d)}, got shape {covariances.shape}"
        )

    for name, array in (("weights", weights), ("means", means), ("covariances", covariances)):
        bad = np.argwhere(~np.isfinite(array))
        if bad.size:
            index = "".join(f"[{int(i)}]" for i in bad[0])
            raise InvalidReleaseFileError(f"{name}{index} is not finite: {array[tuple(bad[0])]}")

    negative = np.flatnonzero(weights < 0)
    if negative.size:
        k = int(negative[0])
        raise InvalidReleaseFileError(f"weights[{k}] is negative: {weights[k]}; weights must lie on the simplex")
    if abs(weights.sum() - 1.0) > _SIMPLEX_TOLERANCE:
        raise InvalidReleaseFileError(f"weights sum to {weights.sum()!r}, not 1; weights must lie on the simplex")

    for k in range(n_components):
        covariance = covariances[k]
        asymmetry = np.max(np.abs(covariance - covariance.T))
        if asymmetry > _SYMMETRY_TOLERANCE * max(1.0, np.max(np.abs(covariance))):
            raise InvalidReleaseFileError(f"covariances[{k}] is not symmetric (max |C - C^T| = {asymmetry:.3g})")
        smallest = float(np.linalg.eigvalsh(covariance)[0])
        if not smallest > 0.0:
            raise InvalidReleaseFileError(
                f"covariances[{k}] is not positive definite (smallest eigenvalue {smallest:.3g})"
            )
        try:
            np.linalg.cholesky(covariance)
        except np.linalg.LinAlgError as error:
            raise InvalidReleaseFileError(f"covariances[{k}] is not positive definite ({error})") from error

    return GMMParams(weights, means, covariances)


def validate_metadata(metadata) -> dict:
    """Check the privacy fields of release metadata.

    Required: ``epsilon`` (finite, > 0), ``delta`` (in (0, 1)) and
    ``dp_guarantee`` (a bool). ``mu``, when present, must be finite and > 0.

    Raises:
        InvalidReleaseFileError: naming the first invalid field.
    """
    if not isinstance(metadata, dict):
        raise InvalidReleaseFileError(f"metadata must be a JSON object, got {type(metadata).__name__}")
    for field in ("epsilon", "delta", "dp_guarantee"):
        if field not in metadata:
            raise InvalidReleaseFileError(f"metadata.{field} is missing; every release must record its guarantee")

    epsilon = metadata["epsilon"]
    if not _is_real(epsilon) or not math.isfinite(epsilon) or epsilon <= 0:
        raise InvalidReleaseFileError(f"metadata.epsilon must be a finite number > 0, got {epsilon!r}")
    delta = metadata["delta"]
    if not _is_real(delta) or not 0.0 < delta < 1.0:
        raise InvalidReleaseFileError(f"metadata.delta must be a number in (0, 1), got {delta!r}")
    if not isinstance(metadata["dp_guarantee"], bool):
        raise InvalidReleaseFileError(
            f"metadata.dp_guarantee must be true or false, got {metadata['dp_guarantee']!r}"
        )
    if "mu" in metadata:
        mu = metadata["mu"]
        if not _is_real(mu) or not math.isfinite(mu) or mu <= 0:
            raise InvalidReleaseFileError(f"metadata.mu must be a finite number > 0, got {mu!r}")
    return metadata


def save_release(path, params: GMMParams, metadata: dict) -> pathlib.Path:
    """Validate a release and write it to ``path`` as versioned JSON.

    The file is written to a temporary name in the same folder and then
    renamed, so a crash never leaves a half-written release behind.

    Args:
        path: destination file.
        params: the released mixture (NumPy or JAX arrays).
        metadata: its privacy metadata, for example from ``release_gmm``.

    Returns:
        The path written.

    Raises:
        InvalidReleaseFileError: if the release or its metadata is invalid.
        TypeError, ValueError: if the metadata contains values that JSON cannot
            represent (ValueError for NaN and inf).
    """
    path = pathlib.Path(path)
    params = validate_params(params)
    metadata = validate_metadata(_to_json_types(metadata))
    document = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "params": {
            "weights": params.weights.tolist(),
            "means": params.means.tolist(),
            "covariances": params.covariances.tolist(),
        },
        "metadata": metadata,
    }
    text = json.dumps(document, indent=2, allow_nan=False)

    file_descriptor, temporary = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(file_descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    logger.info("saved a release with K=%d, d=%d to %s", *params.means.shape, path)
    return path


def load_release(path) -> tuple[GMMParams, dict]:
    """Read and validate a release written by ``save_release``.

    Args:
        path: the release file.

    Returns:
        ``(params, metadata)``: the mixture as float64 NumPy arrays and the
        metadata dict.

    Raises:
        InvalidReleaseFileError: if the file is not valid JSON, has another
            format or an unsupported version, or any field is invalid; the
            message names the field.
    """
    path = pathlib.Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise InvalidReleaseFileError(f"{path} is not valid JSON: {error}") from error
    except _NonFiniteConstant as error:
        raise InvalidReleaseFileError(f"{path} contains the non-finite value {error.args[0]}") from error

    try:
        return _parse_document(document)
    except InvalidReleaseFileError as error:
        raise InvalidReleaseFileError(
            f"{path}: {error}; the file is damaged or was edited by hand, re-export it with save_release"
        ) from error


def _parse_document(document) -> tuple[GMMParams, dict]:
    if not isinstance(document, dict):
        raise InvalidReleaseFileError(f"the file must contain a JSON object, got {type(document).__name__}")
    if document.get("format") != FORMAT_NAME:
        raise InvalidReleaseFileError(f"format must be {FORMAT_NAME!r}, got {document.get('format')!r}")
    version = document.get("format_version")
    if version not in SUPPORTED_VERSIONS or isinstance(version, bool):
        raise InvalidReleaseFileError(
            f"format_version {version!r} is not supported; this version of dpgmm_jax reads {SUPPORTED_VERSIONS}"
        )

    raw_params = document.get("params")
    if not isinstance(raw_params, dict):
        raise InvalidReleaseFileError("params is missing or not a JSON object")
    for field in ("weights", "means", "covariances"):
        if field not in raw_params:
            raise InvalidReleaseFileError(f"params.{field} is missing")
    params = validate_params(GMMParams(raw_params["weights"], raw_params["means"], raw_params["covariances"]))

    if "metadata" not in document:
        raise InvalidReleaseFileError("metadata is missing")
    metadata = validate_metadata(document["metadata"])
    return params, metadata


class _NonFiniteConstant(ValueError):
    pass


def _reject_constant(name: str):
    raise _NonFiniteConstant(name)


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _float_array(name: str, value) -> np.ndarray:
    _check_numbers(name, value)
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InvalidReleaseFileError(f"{name} must have a regular shape ({error})") from error
    return array


def _check_numbers(name: str, value) -> None:
    # NumPy would turn "0.5" into 0.5 and true into 1.0, so check the leaves first.
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_numbers(f"{name}[{index}]", item)
    elif isinstance(value, bool) or isinstance(value, (str, bytes, dict)) or value is None:
        raise InvalidReleaseFileError(f"{name} is not a number: {value!r}")


def _to_json_types(value):
    """Convert NumPy and JAX scalars and arrays inside metadata to plain Python values."""
    if isinstance(value, dict):
        return {str(key): _to_json_types(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json_types(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "__array__") and not isinstance(value, (str, bytes)):
        return np.asarray(value).tolist()
    return value
