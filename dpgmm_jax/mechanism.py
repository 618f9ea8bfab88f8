"""The Gaussian mechanism on sufficient statistics and its post-processing.

Records y live in the ball ||y|| <= R of mechanism coordinates (see
``dpgmm_jax.domain``). One record changes component k's statistics by

    r_k,   r_k y,   r_k vech(y y^T)

with L2 norms at most r_k, r_k R and r_k R^2, because ||vech(y y^T)||_2 <=
||y y^T||_F = ||y||^2. Adding N(0, sigma_{g,k}^2) noise to every coordinate
of group g of component k and dividing each block by its sigma gives a
Gaussian mechanism with unit noise and squared L2 sensitivity

    sup_{y, r} sum_k r_k^2 a_k = max_k a_k,
    a_k = 1/sigma_{w,k}^2 + R^2/sigma_{m,k}^2 + R^4/sigma_{c,k}^2,

since the responsibilities r lie on the simplex; the supremum is attained at
r = e_k and ||y|| = R. One release is therefore mu-GDP with mu^2 = max_k a_k
(Dong, Roth and Su, JRSS-B 2022, Theorem 2.7), times four under replace-one.

Post-processing turns noisy statistics into a valid mixture: floored counts,
weights on the simplex, means projected onto the domain ball and covariances
with eigenvalues clipped to [eigenvalue_floor, R^2]. Post-processing of a
differentially private output keeps its guarantee.
"""

import jax
import jax.numpy as jnp

from dpgmm_jax.accounting import NeighbouringRelation, sensitivity_multiplier
from dpgmm_jax.types import GMMParams, NoiseScales, Release, SufficientStatistics


def vech_size(d: int) -> int:
    """Number of entries in the upper triangle of a d x d matrix, d(d+1)/2."""
    return d * (d + 1) // 2


def symmetric_from_upper(upper: jax.Array, d: int) -> jax.Array:
    """Build symmetric matrices from their upper triangles (diagonal included).

    Args:
        upper: shape (..., d(d+1)/2), in the row-major order of
            ``jnp.triu_indices(d)``.
        d: matrix size.

    Returns:
        Shape (..., d, d), each entry (i, j) and (j, i) holding the same value.
    """
    rows, cols = jnp.triu_indices(d)
    matrix = jnp.zeros(upper.shape[:-1] + (d, d), dtype=upper.dtype)
    matrix = matrix.at[..., rows, cols].set(upper)
    return matrix.at[..., cols, rows].set(upper)


def group_sensitivities(radius, relation: NeighbouringRelation | str = "add_or_remove_one") -> jax.Array:
    """Return the per-group L2 sensitivities (Delta_w, Delta_m, Delta_c) = (1, R, R^2).

    They are doubled under the replace-one relation.
    """
    multiplier = sensitivity_multiplier(relation)
    radius = jnp.asarray(radius)
    return multiplier * jnp.stack([jnp.ones_like(radius), radius, radius**2])


def noise_scales_from_shares(
    shares: jax.Array, mu, radius, relation: NeighbouringRelation | str = "add_or_remove_one"
) -> NoiseScales:
    """Turn each component's split of mu^2 over the three groups into noise scales.

    With share rho_{g,k} of mu^2, group g of component k gets
    sigma_{g,k} = Delta_g / (sqrt(rho_{g,k}) mu), so that a_k = mu^2 for every
    component and the release is exactly mu-GDP.

    Args:
        shares: shape (K, 3), positive, each row summing to one, in the order
            (weights, means, covariances).
        mu: the GDP parameter of this release.
        radius: the domain radius R.
        relation: the neighbouring relation.

    Returns:
        The ``NoiseScales`` of the release.
    """
    sensitivities = group_sensitivities(radius, relation)
    sigmas = sensitivities[None, :] / (jnp.sqrt(shares) * mu)
    return NoiseScales(sigmas[:, 0], sigmas[:, 1], sigmas[:, 2])


def release_mu(scales: NoiseScales, radius, relation: NeighbouringRelation | str = "add_or_remove_one") -> jax.Array:
    """Return the GDP parameter mu of one release with the given noise scales.

    Implements mu^2 = max_k (Delta_w^2/sigma_{w,k}^2 + Delta_m^2/sigma_{m,k}^2
    + Delta_c^2/sigma_{c,k}^2), the bound derived in the module docstring.
    """
    sensitivities = group_sensitivities(radius, relation)
    sigmas = jnp.stack([scales.weights, scales.means, scales.covariances], axis=-1)
    per_component = jnp.sum((sensitivities / sigmas) ** 2, axis=-1)
    return jnp.sqrt(jnp.max(per_component, axis=-1))


def add_noise(key: jax.Array, stats: SufficientStatistics, scales: NoiseScales) -> SufficientStatistics:
    """Add Gaussian noise with one standard deviation per group and component.

    The noise on S_k is drawn on its upper triangle and mirrored, so the noisy
    second moments stay symmetric and each distinct entry gets noise once.

    Args:
        key: a fresh PRNG key, used for this release only.
        stats: the exact statistics.
        scales: the noise standard deviations.

    Returns:
        The noisy statistics.
    """
    n_components, d = stats.first_moments.shape
    dtype = stats.first_moments.dtype
    key_counts, key_first, key_second = jax.random.split(key, 3)

    counts_noise = jax.random.normal(key_counts, (n_components,), dtype) * scales.weights
    first_noise = jax.random.normal(key_first, (n_components, d), dtype) * scales.means[:, None]
    upper_noise = jax.random.normal(key_second, (n_components, vech_size(d)), dtype) * scales.covariances[:, None]

    return SufficientStatistics(
        stats.counts + counts_noise,
        stats.first_moments + first_noise,
        stats.second_moments + symmetric_from_upper(upper_noise, d),
    )


def project_onto_ball(points: jax.Array, radius) -> jax.Array:
    """Project points, shape (..., d), onto the ball ||x|| <= radius (rows inside stay put)."""
    norms = jnp.linalg.norm(points, axis=-1, keepdims=True)
    return points * jnp.minimum(1.0, radius / jnp.maximum(norms, 1e-30))


def postprocess(
    stats: SufficientStatistics,
    radius,
    count_floor: float = 1.0,
    eigenvalue_floor: float = 1e-3,
    covariance_noise: jax.Array | None = None,
    noise_floor_factor: float = 0.0,
) -> Release:
    """Turn (noisy) statistics into a valid mixture.

    Steps, all of them post-processing:

        n_k^+ = max(n_k, count_floor),  pi = n^+ / sum(n^+)
        m_k   = s_k / n_k^+, projected onto the ball ||m|| <= R
        C_k   = S_k / n_k^+ - (s_k / n_k^+)(s_k / n_k^+)^T, symmetrised, with
                eigenvalues clipped to [floor_k, R^2], where
        floor_k = max(eigenvalue_floor, kappa 2 sigma_{c,k} sqrt(d) / n_k^+,
                      10 d eps R^2)   (eps: machine epsilon of the dtype)

    A distribution on the ball ||y|| <= R has covariance eigenvalues at most
    R^2 and mean inside the ball, so both upper clips only remove impossible
    values. The noise-aware floor uses that a symmetric d x d matrix of
    N(0, sigma^2) entries has spectral norm close to 2 sigma sqrt(d): an
    eigenvalue of C_k below the noise level ||E_k|| / n_k^+ cannot be
    distinguished from noise, and a near-singular released covariance costs far more
    KL than a broad one. It reads only public noise scales and noisy counts.

    Args:
        stats: statistics in mechanism coordinates.
        radius: the domain radius R.
        count_floor: public floor on the counts, >= 1 keeps every division safe.
        eigenvalue_floor: public floor on covariance eigenvalues, > 0.
        covariance_noise: sigma_{c,k} of the noise on S_k, shape (K,), or
            None when the statistics are exact.
        noise_floor_factor: kappa >= 0 in the noise-aware floor; 0 turns it off.

    Returns:
        A ``Release`` with weights on the simplex and symmetric positive
        definite covariances.
    """
    counts = jnp.maximum(stats.counts, count_floor)
    weights = counts / jnp.sum(counts)

    raw_means = stats.first_moments / counts[:, None]
    means = project_onto_ball(raw_means, radius)

    covariances = stats.second_moments / counts[:, None, None] - jnp.einsum("kd,ke->kde", raw_means, raw_means)
    covariances = 0.5 * (covariances + jnp.swapaxes(covariances, -1, -2))
    d = covariances.shape[-1]

    # Rebuilding V diag(lambda) V^T in floating point stays positive definite
    # only while lambda_max / lambda_min is well inside 1 / machine epsilon, so
    # the floor never drops below R^2 * 10 d eps.
    precision_floor = radius**2 * 10.0 * d * jnp.finfo(covariances.dtype).eps
    floors = jnp.full(counts.shape, jnp.maximum(eigenvalue_floor, precision_floor), covariances.dtype)
    if covariance_noise is not None:
        noise_level = 2.0 * covariance_noise * jnp.sqrt(d) / counts
        floors = jnp.maximum(floors, noise_floor_factor * noise_level)
    floors = jnp.minimum(floors, radius**2)

    covariances = map_eigenvalues(covariances, lambda eigenvalues: jnp.clip(eigenvalues, floors[:, None], radius**2))

    return Release(GMMParams(weights, means, covariances), counts)


def map_eigenvalues(symmetric: jax.Array, function) -> jax.Array:
    """Return V f(Lambda) V^T for each symmetric matrix V Lambda V^T, symmetrised.

    Args:
        symmetric: symmetric matrices of shape (..., d, d).
        function: maps the eigenvalues, shape (..., d), to new eigenvalues.

    Returns:
        Matrices of the input's shape.
    """
    eigenvalues, eigenvectors = jnp.linalg.eigh(symmetric)
    mapped = jnp.einsum("...ij,...j,...lj->...il", eigenvectors, function(eigenvalues), eigenvectors)
    return 0.5 * (mapped + jnp.swapaxes(mapped, -1, -2))


def postprocess_smooth(stats: SufficientStatistics) -> GMMParams:
    """Map statistics to a mixture without floors or clipping.

    This is the smooth map whose second derivatives define the cost
    coefficients of the budget allocation. It is only valid for statistics
    with positive counts and positive definite covariances.
    """
    counts = stats.counts
    weights = counts / jnp.sum(counts)
    means = stats.first_moments / counts[:, None]
    covariances = stats.second_moments / counts[:, None, None] - jnp.einsum("kd,ke->kde", means, means)
    covariances = 0.5 * (covariances + jnp.swapaxes(covariances, -1, -2))
    return GMMParams(weights, means, covariances)


def statistics_from_release(release: Release) -> SufficientStatistics:
    """Rebuild sufficient statistics from a released mixture and its counts.

    Inverts the smooth post-processing: s_k = n_k m_k and
    S_k = n_k (C_k + m_k m_k^T). Uses released values only.
    """
    counts = release.counts
    means = release.params.means
    first_moments = counts[:, None] * means
    second_moments = counts[:, None, None] * (release.params.covariances + jnp.einsum("kd,ke->kde", means, means))
    return SufficientStatistics(counts, first_moments, second_moments)


def release_statistics(
    key: jax.Array,
    stats: SufficientStatistics,
    scales: NoiseScales,
    radius,
    count_floor: float = 1.0,
    eigenvalue_floor: float = 1e-3,
    noise_floor_factor: float = 0.0,
) -> Release:
    """Add calibrated noise to statistics and post-process them into a mixture.

    Args:
        key: a fresh PRNG key for this release.
        stats: exact statistics of records with ||y|| <= radius, computed from
            responsibilities that depend on each record and public or
            previously released values only.
        scales: noise standard deviations; the release is
            ``release_mu(scales, radius)``-GDP.
        radius: the domain radius R.
        count_floor: public floor on the noisy counts.
        eigenvalue_floor: public floor on covariance eigenvalues.
        noise_floor_factor: kappa of the noise-aware eigenvalue floor.

    Returns:
        The post-processed ``Release``.
    """
    noisy = add_noise(key, stats, scales)
    return postprocess(noisy, radius, count_floor, eigenvalue_floor, scales.covariances, noise_floor_factor)
