"""A private mixture from one noisy histogram: the Gaussian mechanism on cell counts, then EM.

In low dimension a histogram over a grid of the public domain summarises the
records with little loss, and its count vector has L2 sensitivity 1: adding
or removing one record changes one count by one. One Gaussian release of the
counts with noise N(0, 1/mu^2) is mu-GDP (Dong, Roth and Su, JRSS-B 2022).
Everything after it is post-processing and costs no budget: thresholding the
noisy counts, weighted k-means and weighted EM on the cell centres,
Sheppard's correction for the grouping, and the usual clips. So the whole
budget buys one release, where DP-EM pays for every iteration, and EM can
run to convergence.

Three details make the fit robust to the noise and the grid:

- Cells whose noisy count is at most ``threshold`` noise standard deviations
  are dropped, except that the K highest cells are always kept. Of the
  empty cells, a fraction Q(threshold) survives (about 16% at 1 sigma) with
  a count of order sigma.
- EM fits a uniform background component over the grid's cube next to the
  K Gaussians, the noise component of Banfield and Raftery ("Model-based
  Gaussian and non-Gaussian clustering", Biometrics 1993). Surviving empty
  cells lie far from the records, and a single one of them would otherwise
  pull a Gaussian's covariance out towards it. The background is dropped
  from the release and the Gaussian weights are renormalised.
- Sheppard's correction removes the variance e = width^2/12 that grouping
  to cell centres adds (``sheppard_correction``). The E step floors
  covariance eigenvalues at e and the correction keeps at least e/2, so no
  component collapses onto a single cell.

The grid needs at least 4 bins per axis, so the default 256 cells allow
d <= 4 and the limit of 2^16 cells d <= 8; ``check_histogram_grid`` rejects
other grids. The best grid grows with N, which is private under
add/remove. ``counted_histogram_em`` spends a share of mu^2 on a noisy
count of N and picks the grid from it (``bins_from_count``); the two
releases compose by the GDP rule.
"""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dpgmm_jax.accounting import NeighbouringRelation
from dpgmm_jax.em import component_log_densities, m_step, sufficient_statistics
from dpgmm_jax.mechanism import map_eigenvalues, postprocess
from dpgmm_jax.types import Release, SufficientStatistics

MAX_HISTOGRAM_CELLS = 2**16
# Default target number of cells: 16 x 16 in d = 2, and d <= 4 keeps at least 4 bins per axis.
DEFAULT_HISTOGRAM_CELLS = 256
# Minimum number of bins per axis that the histogram release accepts.
MIN_RELEASE_BINS = 4
# Floor on the background weight inside EM, so that its log stays finite.
BACKGROUND_WEIGHT_FLOOR = 1e-3
KMEANS_RESTARTS = 10
LLOYD_ITERATIONS = 50
EM_MAX_ITER = 1000
EM_TOL = 1e-9


class Grid(NamedTuple):
    """A regular grid over the cube [-a, a]^d.

    Attributes:
        bins: bins per axis b.
        width: cell side 2a / b.
        half_width: a.
        centres: centre of every cell, shape (b^d, d), cell index
            sum_j i_j b^j for axis bins i_j.
    """

    bins: int
    width: float
    half_width: float
    centres: np.ndarray


def histogram_bins(n_features: int, target_cells: int) -> int:
    """Return the bins per axis for about ``target_cells`` cells: max(2, floor(cells^(1/d)))."""
    return max(2, int(np.floor(target_cells ** (1.0 / n_features) + 1e-9)))


def make_grid(n_features: int, target_cells: int, half_width: float) -> Grid:
    """Return the grid of ``histogram_bins`` bins per axis over [-a, a]^d (public)."""
    bins = histogram_bins(n_features, target_cells)
    width = 2.0 * half_width / bins
    strides = bins ** np.arange(n_features)
    indices = (np.arange(bins**n_features)[:, None] // strides[None, :]) % bins
    return Grid(bins, width, half_width, -half_width + (indices + 0.5) * width)


def check_histogram_grid(n_features: int, target_cells: int, n_components: int = 1) -> int:
    """Return the bins per axis of the histogram release, or raise if the grid is unusable.

    Raises:
        ValueError: if the grid has fewer than ``MIN_RELEASE_BINS`` bins per
            axis, more than ``MAX_HISTOGRAM_CELLS`` cells, or fewer cells than
            ``n_components``.
    """
    if MIN_RELEASE_BINS**n_features > MAX_HISTOGRAM_CELLS:
        raise ValueError(
            f"the histogram release needs at least {MIN_RELEASE_BINS} bins per axis, which in d={n_features} "
            f"is {MIN_RELEASE_BINS ** n_features} cells, over its limit of {MAX_HISTOGRAM_CELLS}; "
            "use mode='dp_em' for this dimension"
        )
    bins = histogram_bins(n_features, target_cells)
    if bins < MIN_RELEASE_BINS:
        raise ValueError(
            f"the histogram release needs at least {MIN_RELEASE_BINS} bins per axis, but "
            f"histogram_cells={target_cells} gives {bins} in d={n_features}; raise histogram_cells to at "
            f"least {MIN_RELEASE_BINS ** n_features}"
        )
    if bins**n_features > MAX_HISTOGRAM_CELLS:
        raise ValueError(
            f"the histogram release allows at most {MAX_HISTOGRAM_CELLS} cells, but histogram_cells="
            f"{target_cells} gives {bins ** n_features} in d={n_features}; lower histogram_cells"
        )
    if bins**n_features < n_components:
        raise ValueError(
            f"the histogram release needs at least one cell per component, but histogram_cells={target_cells} "
            f"gives {bins ** n_features} cells for n_components={n_components}; raise histogram_cells"
        )
    return bins


def check_release_grid(n_features: int, config) -> None:
    """Raise unless the histogram release of ``config`` has a usable grid.

    With a positive ``count_share`` the grid is picked later from the
    released count and can go up to ``MAX_HISTOGRAM_CELLS``, so the finest
    allowed grid is checked; otherwise the fixed ``histogram_cells`` is.
    """
    cells = MAX_HISTOGRAM_CELLS if config.count_share > 0.0 else config.histogram_cells
    check_histogram_grid(n_features, cells, config.n_components)


def histogram_grid_usable(n_features: int, target_cells: int, n_components: int = 1) -> bool:
    """Return whether ``check_histogram_grid`` accepts the grid, without raising."""
    try:
        check_histogram_grid(n_features, target_cells, n_components)
    except ValueError:
        return False
    return True


def noisy_histogram(key: jax.Array, y: jax.Array, mu, bins: int, half_width: float, relation: str) -> jax.Array:
    """Release the cell counts of the records on a b^d grid with the Gaussian mechanism.

    Records outside the cube [-a, a]^d count in the nearest cell. Adding or
    removing one record changes one count by one, and replacing one moves a
    unit of count from one cell to another, so the L2 sensitivity is
    ``histogram_sensitivity(relation)``: 1 or sqrt(2). Noise
    N(0, (sensitivity/mu)^2) on every count is mu-GDP.

    Args:
        key: PRNG key for the noise.
        y: records in mechanism coordinates, shape (N, d).
        mu: GDP budget of the histogram.
        bins: bins per axis b.
        half_width: a.
        relation: the neighbouring relation.

    Returns:
        Noisy counts, shape (b^d,), indexed as ``Grid.centres``.
    """
    n_features = y.shape[1]
    width = 2.0 * half_width / bins
    cell_of_axis = jnp.clip(jnp.floor((y + half_width) / width), 0, bins - 1).astype(jnp.int32)
    cells = cell_of_axis @ (bins ** jnp.arange(n_features, dtype=jnp.int32))
    counts = jnp.zeros(bins**n_features, y.dtype).at[cells].add(1.0)

    sigma = histogram_sensitivity(relation) / mu
    return counts + sigma * jax.random.normal(key, counts.shape, y.dtype)


def histogram_sensitivity(relation: str) -> float:
    """Return the L2 sensitivity of a count vector: 1 under add/remove, sqrt(2) under replace-one."""
    return math.sqrt(2.0) if NeighbouringRelation(relation) is NeighbouringRelation.REPLACE_ONE else 1.0


def weighted_kmeans(key: jax.Array, points: jax.Array, weights: jax.Array, n_clusters: int) -> jax.Array:
    """Return the centres of weighted k-means: k-means++ seeding and Lloyd steps, best of several restarts.

    Post-processing code: ``points`` and ``weights`` here are public grid
    centres and released counts. Seeding follows Arthur and Vassilvitskii
    (SODA 2007) with every point's D^2 probability scaled by its weight.

    Args:
        key: PRNG key for the seeding.
        points: shape (M, d).
        weights: non-negative, shape (M,), with at least one positive.
        n_clusters: K.

    Returns:
        Centres of the restart with the lowest weighted inertia, shape (K, d).
    """

    def restart(restart_key):
        first_key, rest_key = jax.random.split(restart_key)
        first = jax.random.choice(first_key, points.shape[0], p=weights / jnp.sum(weights))
        centres = jnp.broadcast_to(points[first], (n_clusters, points.shape[1]))

        def seed(centres, inputs):
            index, seed_key = inputs
            chosen_so_far = jnp.arange(n_clusters)[None, :] < index
            nearest = jnp.min(squared_distances(points, centres), axis=-1, initial=jnp.inf, where=chosen_so_far)
            scores = weights * nearest
            scores = jnp.where(jnp.sum(scores) > 0, scores, weights)
            chosen = jax.random.choice(seed_key, points.shape[0], p=scores / jnp.sum(scores))
            return centres.at[index].set(points[chosen]), None

        seed_keys = jax.random.split(rest_key, n_clusters - 1)
        centres, _ = jax.lax.scan(seed, centres, (jnp.arange(1, n_clusters), seed_keys))
        centres = jax.lax.fori_loop(0, LLOYD_ITERATIONS, lambda _, c: lloyd_step(points, weights, c), centres)
        inertia = jnp.sum(weights * jnp.min(squared_distances(points, centres), axis=-1))
        return centres, inertia

    centres, inertia = jax.vmap(restart)(jax.random.split(key, KMEANS_RESTARTS))
    return centres[jnp.argmin(inertia)]


def squared_distances(points: jax.Array, centres: jax.Array) -> jax.Array:
    """Return the squared distance from every point to every centre, shape (M, K)."""
    return jnp.sum((points[:, None, :] - centres[None]) ** 2, axis=-1)


def nearest_centre(points: jax.Array, centres: jax.Array) -> jax.Array:
    """Return the index of each point's nearest centre, shape (M,)."""
    return jnp.argmin(squared_distances(points, centres), axis=-1)


def lloyd_step(points: jax.Array, weights: jax.Array, centres: jax.Array) -> jax.Array:
    """Move each centre to the weighted mean of its points; a centre with no weight stays."""
    labels = nearest_centre(points, centres)
    assignment = jax.nn.one_hot(labels, centres.shape[0], dtype=points.dtype) * weights[:, None]
    mass = jnp.sum(assignment, axis=0)
    moved = (assignment.T @ points) / jnp.maximum(mass, jnp.finfo(points.dtype).tiny)[:, None]
    return jnp.where(mass[:, None] > 0, moved, centres)


class BackgroundEMState(NamedTuple):
    """State of weighted EM with a uniform background component.

    Attributes:
        stats: weighted sufficient statistics of the K Gaussians.
        background_weight: the background's share of the weight, in [0, 1].
        log_likelihood: weighted mean log-likelihood after the last E step.
        previous: the value before it.
        n_iter: iterations run.
    """

    stats: SufficientStatistics
    background_weight: jax.Array
    log_likelihood: jax.Array
    previous: jax.Array
    n_iter: jax.Array


def background_em(
    points: jax.Array, weights: jax.Array, initial_resp: jax.Array, log_background_density: float, min_variance: float
) -> tuple[SufficientStatistics, jax.Array]:
    """Run weighted EM for K Gaussians plus a uniform background component.

    The mixture is w_0 u(x) + (1 - w_0) sum_k pi_k N(x | m_k, C_k), with u
    the uniform density on the grid's cube. Every point counts with its
    weight (a released cell count). EM stops when the weighted mean
    log-likelihood changes by less than ``EM_TOL``, or after ``EM_MAX_ITER``
    iterations.

    Args:
        points: cell centres, shape (M, d).
        weights: cell weights, shape (M,), non-negative.
        initial_resp: starting responsibilities of the K Gaussians, shape (M, K).
        log_background_density: log u(x) = -d log(2a).
        min_variance: floor on the covariance eigenvalues that the E step uses, > 0.

    Returns:
        ``(stats, background_weight)``: the Gaussians' weighted statistics
        at the last M step and w_0.
    """
    total = jnp.sum(weights)

    def m_step_stats(resp):
        return sufficient_statistics(points, resp * weights[:, None])

    def e_step(stats, background_weight):
        params = m_step(stats, 0.0)
        params = params._replace(
            covariances=map_eigenvalues(params.covariances, lambda eigenvalues: jnp.maximum(eigenvalues, min_variance))
        )
        gaussian = component_log_densities(points, params) + jnp.log(params.weights) + jnp.log1p(-background_weight)
        background = jnp.log(jnp.maximum(background_weight, BACKGROUND_WEIGHT_FLOOR)) + log_background_density
        joint = jnp.concatenate([gaussian, jnp.full((points.shape[0], 1), background, points.dtype)], axis=-1)
        log_norm = jax.scipy.special.logsumexp(joint, axis=-1)
        resp = jnp.exp(joint - log_norm[:, None])
        return resp, jnp.sum(weights * log_norm) / total

    def body(state):
        resp, log_likelihood = e_step(state.stats, state.background_weight)
        background_weight = jnp.sum(weights * resp[:, -1]) / total
        return BackgroundEMState(m_step_stats(resp[:, :-1]), background_weight, log_likelihood,
                                 state.log_likelihood, state.n_iter + 1)

    def cond(state):
        return (state.n_iter < EM_MAX_ITER) & (jnp.abs(state.log_likelihood - state.previous) >= EM_TOL)

    zero = jnp.zeros((), points.dtype)
    start = BackgroundEMState(m_step_stats(initial_resp), zero, zero - jnp.inf, zero, jnp.zeros((), jnp.int32))
    start = body(start)
    final = jax.lax.while_loop(cond, body, start)
    return final.stats, final.background_weight


@functools.partial(jax.jit, static_argnames=("config", "half_width"))
def histogram_em(key: jax.Array, y: jax.Array, mu, radius, half_width: float, config) -> Release:
    """Release a mixture fitted by EM to one noisy histogram of the records.

    Args:
        key: PRNG key; split into the histogram noise and the k-means seeding.
        y: records in mechanism coordinates, shape (N, d), ||y_i|| <= radius.
        mu: GDP budget; the histogram is the only release and spends all of it.
        radius: the domain radius R, for the final clips.
        half_width: a, half the side of a cube holding the domain.
        config: a ``ReleaseConfig``; reads n_components, histogram_cells,
            histogram_threshold, relation, count_floor and eigenvalue_floor.

    Returns:
        A ``Release`` whose counts are the weighted cell mass of each
        component. It is mu-GDP under ``config.relation``.
    """
    n_features = y.shape[1]
    bins = check_histogram_grid(n_features, config.histogram_cells, config.n_components)
    # The grid is fixed here; counted_histogram_em picks it from a noisy count of N, which is private.
    grid = make_grid(n_features, config.histogram_cells, half_width)
    noise_key, kmeans_key = jax.random.split(key)
    noisy = noisy_histogram(noise_key, y, mu, bins, half_width, config.relation)

    # Post-processing from here on: it reads the noisy counts and public values only.
    sigma = histogram_sensitivity(config.relation) / mu
    kth_largest = jnp.sort(noisy)[-config.n_components]
    keep = (noisy > config.histogram_threshold * sigma) | (noisy >= kth_largest)
    weights = jnp.where(keep, jnp.maximum(noisy, config.count_floor), 0.0)

    points = jnp.asarray(grid.centres, y.dtype)
    centres = weighted_kmeans(kmeans_key, points, weights, config.n_components)
    labels = nearest_centre(points, centres)
    initial_resp = jax.nn.one_hot(labels, config.n_components, dtype=y.dtype)
    # The E step floors each covariance's eigenvalues at the variance of one cell, width^2/12, so that
    # no component can collapse onto a single cell centre. The statistics themselves are not floored.
    within_cell = grid.width**2 / 12.0
    stats, _ = background_em(points, weights, initial_resp, -n_features * math.log(2.0 * half_width), within_cell)

    return postprocess(sheppard_correction(stats, within_cell), radius, config.count_floor, config.eigenvalue_floor)


def count_release_share(config) -> float:
    """Return the share of mu^2 that ``counted_histogram_em`` spends on the record count.

    Under add/remove the count N is private and gets ``config.count_share``.
    Under replace-one neighbours have the same N, so N is public and the
    count costs nothing.
    """
    if NeighbouringRelation(config.relation) is NeighbouringRelation.REPLACE_ONE:
        return 0.0
    return float(config.count_share)


def noisy_record_count(key: jax.Array, n_records: int, mu) -> jax.Array:
    """Release N with the Gaussian mechanism: N + N(0, 1/mu^2), mu-GDP under add/remove (sensitivity 1)."""
    return n_records + jax.random.normal(key, ()) / mu


def bins_from_count(record_count: float, mu: float, n_features: int, n_components: int = 1) -> int:
    """Return the bins per axis of the histogram release from a released record count.

    The rule is b = (24 / d) (N mu / 196)^(1/5), rounded and clipped to the
    usable grids: at least ``MIN_RELEASE_BINS`` and enough cells for the
    components, and at most ``MAX_HISTOGRAM_CELLS`` cells. Finer cells
    resolve the density but hold fewer records per unit of noise, so the
    best grid grows slowly with N mu and shrinks with d.

    NOTE: both factors are empirical, fitted to the median KL of
    ``+sweep=histogram_cells`` (seven datasets, d = 2 to 4, N = 120 to
    20,000); the README reports how the rule did there and on held-out data.

    Args:
        record_count: the released (noisy) N; values below 1 count as 1.
        mu: GDP budget of the histogram release itself.
        n_features: d.
        n_components: K; the grid gets at least K cells.

    Returns:
        Bins per axis b; the grid has b^d cells.
    """
    target = (24.0 / n_features) * (max(float(record_count), 1.0) * float(mu) / 196.0) ** 0.2
    lowest = max(MIN_RELEASE_BINS, math.ceil(n_components ** (1.0 / n_features) - 1e-9))
    highest = int(np.floor(MAX_HISTOGRAM_CELLS ** (1.0 / n_features) + 1e-9))
    return int(min(max(round(target), lowest), highest))


def counted_histogram_em(key: jax.Array, y: jax.Array, mu: float, radius, half_width: float, config):
    """Run ``histogram_em`` on a grid chosen from a noisy count of the records.

    A host-level step, because the grid sets array shapes. With share s =
    ``count_release_share(config)`` of mu^2, N is released at sqrt(s) mu
    (``noisy_record_count``) and the histogram at sqrt(1 - s) mu, so the two
    compose to mu-GDP. The grid reads only the released count and public
    values. Under replace-one N itself is used and the histogram gets all
    of mu.

    Args:
        key: PRNG key; split into the count's key and the histogram's key.
        y: records in mechanism coordinates, shape (N, d).
        mu: total GDP budget.
        radius: the domain radius R.
        half_width: a, half the side of a cube holding the domain.
        config: a ``ReleaseConfig``; its histogram_cells is replaced.

    Returns:
        ``(release, config)``: the histogram release and the config with
        the chosen ``histogram_cells``.
    """
    share = count_release_share(config)
    count_key, histogram_key = jax.random.split(key)
    n_records = y.shape[0]
    record_count = n_records if share == 0.0 else float(noisy_record_count(count_key, n_records, math.sqrt(share) * mu))
    histogram_mu = math.sqrt(1.0 - share) * mu
    bins = bins_from_count(record_count, histogram_mu, y.shape[1], config.n_components)
    config = config._replace(histogram_cells=bins ** y.shape[1])
    return histogram_em(histogram_key, y, histogram_mu, radius, half_width, config), config


def sheppard_correction(stats: SufficientStatistics, excess: float) -> SufficientStatistics:
    """Remove the grouping variance from every covariance, within limits.

    For a density smooth on the scale of a cell, rounding to the cell centre
    adds an independent uniform error, whose variance e = width^2/12 adds to
    every variance of the grouped data (Sheppard's correction). A component
    narrower than a cell breaks that assumption: its grouped variance can be
    below e, and subtracting e would leave a near-singular covariance, which
    costs far more KL than a broad one. The histogram cannot resolve such a
    component, so each eigenvalue lambda becomes
    max(lambda - e, max(lambda, e) / 2): Sheppard's value where lambda >= 2e,
    and at least e/2 everywhere.

    Args:
        stats: weighted statistics of the grouped data, with positive counts.
        excess: e = width^2/12 for cells of side width.

    Returns:
        Statistics with the same counts and first moments and corrected
        second moments.
    """
    counts = jnp.maximum(stats.counts, jnp.finfo(stats.counts.dtype).tiny)
    means = stats.first_moments / counts[:, None]
    outer = jnp.einsum("kd,ke->kde", means, means)
    covariances = stats.second_moments / counts[:, None, None] - outer
    covariances = map_eigenvalues(
        0.5 * (covariances + jnp.swapaxes(covariances, -1, -2)),
        lambda eigenvalues: jnp.maximum(eigenvalues - excess, 0.5 * jnp.maximum(eigenvalues, excess)),
    )
    return stats._replace(second_moments=counts[:, None, None] * (covariances + outer))
