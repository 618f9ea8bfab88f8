"""The public data domain and the map between data and mechanism coordinates.

The mechanism needs a public bound on the norm of every record. A domain is
declared either as a ball (centre c, radius R) or as per-feature bounds
[lower_j, upper_j]. Bounds are first mapped affinely onto the cube [-1, 1]^d,
whose circumscribed ball has radius sqrt(d). In both cases the mechanism works
with

    y = (x - centre) / scale,   ||y|| <= radius,

and records outside are projected onto the domain. The map is public and
affine, so the KL divergence between two mixtures is the same in data and
mechanism coordinates, and released parameters map back exactly.
"""

import logging
import warnings
from typing import NamedTuple

import numpy as np

from dpgmm_jax.types import GMMParams
from dpgmm_jax.validation import PrivacyLeakWarning, check_data, check_positive

logger = logging.getLogger(__name__)


class Domain(NamedTuple):
    """A public data domain.

    Attributes:
        centre: shape (d,), the point mapped to the origin.
        scale: shape (d,), per-feature divisors (ones for a ball domain).
        radius: the bound R on ||y|| in mechanism coordinates.
        bounded_box: whether records are also clipped to the cube [-1, 1]^d,
            which is the case for a domain given by per-feature bounds.
        data_derived: True when the domain was read from the data; the
            release then carries no privacy guarantee.
    """

    centre: np.ndarray
    scale: np.ndarray
    radius: float
    bounded_box: bool = False
    data_derived: bool = False

    @property
    def n_features(self) -> int:
        return int(self.centre.shape[0])

    @classmethod
    def from_ball(cls, centre, radius) -> "Domain":
        """Declare the ball ||x - centre|| <= radius as the public domain."""
        centre = np.atleast_1d(np.asarray(centre, dtype=np.float64))
        if centre.ndim != 1 or not np.all(np.isfinite(centre)):
            raise ValueError(f"centre must be a finite vector, got centre={centre}")
        radius = check_positive("radius", radius)
        return cls(centre=centre, scale=np.ones_like(centre), radius=radius)

    @classmethod
    def from_bounds(cls, lower, upper) -> "Domain":
        """Declare the box lower_j <= x_j <= upper_j as the public domain."""
        lower = np.atleast_1d(np.asarray(lower, dtype=np.float64))
        upper = np.atleast_1d(np.asarray(upper, dtype=np.float64))
        if lower.shape != upper.shape or lower.ndim != 1:
            raise ValueError(
                f"lower and upper bounds must be vectors of one shape, got "
                f"shapes {lower.shape} and {upper.shape}"
            )
        if not (np.all(np.isfinite(lower)) and np.all(np.isfinite(upper))):
            raise ValueError(f"bounds must be finite, got lower={lower}, upper={upper}")
        bad = np.flatnonzero(lower >= upper)
        if bad.size:
            j = int(bad[0])
            raise ValueError(
                f"each lower bound must be below its upper bound, got "
                f"lower[{j}]={lower[j]} >= upper[{j}]={upper[j]}; swap or widen them"
            )
        centre = (lower + upper) / 2.0
        scale = (upper - lower) / 2.0
        return cls(
            centre=centre,
            scale=scale,
            radius=float(np.sqrt(lower.shape[0])),
            bounded_box=True,
        )

    @classmethod
    def from_data(cls, x) -> "Domain":
        """Read per-feature bounds from the data. Breaks differential privacy.

        The min and max of each feature depend on individual records, so a
        release that uses this domain has no privacy guarantee. This exists
        for exploration only; it warns with PrivacyLeakWarning and marks the
        domain so that release metadata records ``dp_guarantee = false``.
        """
        x = check_data(x)
        warnings.warn(
            "the data domain was derived from the data, so the release is NOT "
            "differentially private; declare public bounds or a centre and radius instead",
            PrivacyLeakWarning,
            stacklevel=2,
        )
        lower = x.min(axis=0).astype(np.float64)
        upper = x.max(axis=0).astype(np.float64)
        span = upper - lower
        # Widen each side by 1e-9 of the span, and by at least a few units in
        # the last place so that the bounds stay distinct after rounding. A
        # constant column gets the box [x - max(|x|, 1)/2, x + max(|x|, 1)/2].
        magnitude = np.maximum(np.abs(lower), np.abs(upper))
        padding = np.maximum(1e-9 * span, 4.0 * np.spacing(magnitude))
        constant = span == 0
        padding[constant] = 0.5 * np.maximum(magnitude[constant], 1.0)
        domain = cls.from_bounds(lower - padding, upper + padding)
        return domain._replace(data_derived=True)

    def describe(self) -> dict:
        """Return a JSON-serialisable description for release metadata."""
        return {
            "centre": self.centre.tolist(),
            "scale": self.scale.tolist(),
            "radius": self.radius,
            "shape": "box" if self.bounded_box else "ball",
            "data_derived": self.data_derived,
        }


def to_mechanism_coordinates(x, domain: Domain) -> tuple[np.ndarray, int]:
    """Map records into mechanism coordinates and project them onto the domain.

    Args:
        x: records of shape (N, d).
        domain: the public domain.

    Returns:
        ``(y, n_projected)``: the records y with ||y|| <= radius, and how many
        records were moved. The count depends on the data, so callers may log
        it locally but must never publish it.
    """
    x = check_data(x, n_features=domain.n_features)
    y = (x - domain.centre) / domain.scale

    outside = np.zeros(y.shape[0], dtype=bool)
    if domain.bounded_box:
        outside |= np.any(np.abs(y) > 1.0, axis=1)
        y = np.clip(y, -1.0, 1.0)

    norms = np.linalg.norm(y, axis=1)
    beyond = norms > domain.radius
    outside |= beyond
    y[beyond] *= (domain.radius / norms[beyond])[:, None]

    n_projected = int(outside.sum())
    if n_projected:
        logger.info("projected %d of %d records onto the domain", n_projected, y.shape[0])
    if n_projected == y.shape[0]:
        # A local warning to the data owner, like the log line above; the
        # count never enters a release.
        warnings.warn(
            f"all {y.shape[0]} records lie outside the domain and were projected onto its boundary; "
            "check that the domain is declared in the units of the data",
            UserWarning,
            stacklevel=3,
        )
    return y.astype(x.dtype, copy=False), n_projected


def to_data_coordinates(params: GMMParams, domain: Domain) -> GMMParams:
    """Map mixture parameters from mechanism coordinates back to data units."""
    scale = np.asarray(domain.scale)
    means = np.asarray(params.means) * scale + domain.centre
    covariances = np.asarray(params.covariances) * scale[:, None] * scale[None, :]
    return GMMParams(np.asarray(params.weights), means, covariances)


def params_to_mechanism_coordinates(params: GMMParams, domain: Domain) -> GMMParams:
    """Map mixture parameters from data units into mechanism coordinates.

    The inverse of ``to_data_coordinates`` for means inside the domain. Means
    outside it are projected onto it, as records are, so that a public prior
    cannot place a component where no record can be.
    """
    scale = np.asarray(domain.scale)
    means = (np.asarray(params.means, dtype=np.float64) - domain.centre) / scale
    if domain.bounded_box:
        means = np.clip(means, -1.0, 1.0)
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    means = means * np.minimum(1.0, domain.radius / np.maximum(norms, 1e-300))

    covariances = np.asarray(params.covariances, dtype=np.float64) / (scale[:, None] * scale[None, :])
    return GMMParams(np.asarray(params.weights, dtype=np.float64), means, covariances)
