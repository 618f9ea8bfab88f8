"""Release algorithms: DP-EM, the oracle reference and a data-independent start.

All functions here are pure, work in mechanism coordinates (records with
||y|| <= radius, see ``dpgmm_jax.domain``) and take explicit PRNG keys, so
they compose with ``jax.jit`` and ``jax.vmap`` over keys (trials) and budgets
(epsilons). Input validation happens in ``ReleaseConfig.validate`` and in the
Python-level entry points of ``dpgmm_jax.release``.

DP-EM runs T iterations. Iteration t computes responsibilities from the
previous release only, the exact sufficient statistics, an allocation from
the previous release only, and one Gaussian release with budget mu_t, where
sum_t mu_t^2 = mu^2. By adaptive GDP composition the whole run is mu-GDP
(Dong, Roth and Su, JRSS-B 2022, Corollary 3.3). The noisy-statistics form of
DP-EM follows Park, Foulds, Chaudhuri and Welling, "DP-EM: Differentially
private expectation maximization", AISTATS 2017.
"""

import functools
import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dpgmm_jax.accounting import NeighbouringRelation, iteration_schedule, sensitivity_multiplier
from dpgmm_jax.allocation import closed_form_shares, cost_coefficients, equal_shares
from dpgmm_jax.em import DEFAULT_CHUNK_SIZE, chunked_sum, e_step, sufficient_statistics
from dpgmm_jax.histogram import (
    DEFAULT_HISTOGRAM_CELLS,
    MAX_HISTOGRAM_CELLS,
    MIN_RELEASE_BINS,
    histogram_bins,
    histogram_em,
    histogram_grid_usable,
    noisy_histogram,
)
from dpgmm_jax.mechanism import (
    add_noise,
    group_sensitivities,
    noise_scales_from_shares,
    postprocess,
    project_onto_ball,
    release_statistics,
    statistics_from_release,
)
from dpgmm_jax.solver import SolverSettings, optimise_shares
from dpgmm_jax.types import GMMParams, NoiseScales, Release, SufficientStatistics
from dpgmm_jax.validation import check_n_components

ALLOCATIONS = ("auto", "closed_form", "equal", "optax")
STARTS = ("auto", "data_independent", "histogram", "histogram_em", "kmeans")
# Starts that spend start_share of mu^2 on a private release of the records.
PRIVATE_STARTS = ("histogram", "histogram_em", "kmeans")
# DP-EM iterations after a start other than histogram_em (n_iter=None).
DEFAULT_N_ITER = 10


class ReleaseConfig(NamedTuple):
    """Public, static settings of a private release.

    Every field is a Python scalar, so a config is hashable and serves as a
    static argument of ``jax.jit``.

    Attributes:
        n_components: number of mixture components K.
        n_iter: DP-EM iterations T, or None for the default: 1 after a
            ``histogram_em`` start and 10 after any other start.
        last_share: share of mu^2 spent on the last DP-EM iteration (default
            0.5, as in the estimator and conf/config.yaml), or None for a
            uniform schedule.
        allocation: "closed_form" (quadratic model of E[KL]), "optax"
            (Monte Carlo expected KL of the post-processed release, minimised
            by ``dpgmm_jax.solver``), "equal", or "auto" (the default):
            "optax" in DP-EM after a "histogram_em" start and "closed_form"
            everywhere else (see ``resolve``).
        min_share: public floor on each group's share of mu^2, in [0, 1/3).
        relation: neighbouring relation, "add_or_remove_one" or "replace_one".
        count_floor: public floor on noisy counts, >= 1.
        eigenvalue_floor: public floor on covariance eigenvalues in mechanism
            coordinates, > 0.
        noise_floor_factor: kappa >= 0 of the noise-aware eigenvalue floor
            of ``dpgmm_jax.mechanism.postprocess`` (default 0.5); 0 turns it
            off.
        chunk_size: records per chunk when computing statistics.
        solver_draws: noise draws in the optax solver's objective.
        solver_steps: optimiser steps of the optax solver.
        pilot_fraction: share of mu^2 the labelled mode spends on its pilot
            release, in (0, 1).
        start: how DP-EM starts: "auto" (the default: "histogram_em" where
            its grid fits, see ``resolve``, else "data_independent"),
            "data_independent" (public quantities only), "histogram_em" (a
            ``dpgmm_jax.histogram.histogram_em`` release), "histogram" (the
            highest cells of a noisy histogram, see ``histogram_start``) or
            "kmeans" (noisy Lloyd iterations, see ``kmeans_start``).
        start_share: share of mu^2 a private start spends, in (0, 1).
        kmeans_iter: Lloyd iterations of the k-means start, >= 1.
        histogram_cells: target number of histogram cells; each axis gets
            max(2, floor(cells^(1/d))) bins.
        histogram_suppression: after each pick, the histogram start
            suppresses cells within this many bins on every axis.
        histogram_threshold: the histogram release (``dpgmm_jax.histogram``)
            drops cells whose noisy count is at most this many noise
            standard deviations, finite and >= 0. It always keeps the K
            highest cells.
        count_share: share of mu^2 that the histogram release spends on a
            noisy record count, from which it picks its grid
            (``dpgmm_jax.histogram.bins_from_count``), in [0, 1); 0 keeps
            ``histogram_cells``. Under replace-one N is public and the
            count costs nothing.
    """

    n_components: int
    n_iter: int | None = None
    last_share: float | None = 0.5
    allocation: str = "auto"
    min_share: float = 0.05
    relation: str = NeighbouringRelation.ADD_OR_REMOVE_ONE.value
    count_floor: float = 1.0
    eigenvalue_floor: float = 1e-3
    noise_floor_factor: float = 0.5
    chunk_size: int = DEFAULT_CHUNK_SIZE
    solver_draws: int = 32
    solver_steps: int = 25
    pilot_fraction: float = 0.1
    start: str = "auto"
    start_share: float = 0.1
    histogram_cells: int = DEFAULT_HISTOGRAM_CELLS
    histogram_suppression: int = 1
    histogram_threshold: float = 1.0
    count_share: float = 0.0
    kmeans_iter: int = 3

    def validate(self) -> "ReleaseConfig":
        """Check every field and return the config, raising ValueError on a bad one.

        An integral float n_iter, such as 3.0 from a config file, comes back as an int.
        """
        check_n_components(self.n_components)
        if self.n_iter is not None and (
            isinstance(self.n_iter, bool) or not isinstance(self.n_iter, numbers.Real)
            or not math.isfinite(self.n_iter) or int(self.n_iter) != self.n_iter or self.n_iter < 1
        ):
            raise ValueError(
                f"n_iter must be an integer >= 1 or None, got n_iter={self.n_iter!r}; None runs 1 iteration after "
                "a histogram_em start and 10 after any other start"
            )
        # Two iterations make iteration_schedule check last_share even where n_iter is None or 1.
        iteration_schedule(max(2, self.n_iter or DEFAULT_N_ITER), self.last_share)
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"allocation must be one of {ALLOCATIONS}, got allocation={self.allocation!r}")
        if not 0.0 <= self.min_share < 1.0 / 3.0:
            raise ValueError(f"min_share must be in [0, 1/3), got min_share={self.min_share}")
        NeighbouringRelation(self.relation)
        if self.count_floor < 1.0:
            raise ValueError(f"count_floor must be >= 1, got count_floor={self.count_floor}")
        if not self.eigenvalue_floor > 0.0:
            raise ValueError(f"eigenvalue_floor must be > 0, got eigenvalue_floor={self.eigenvalue_floor}")
        if not self.noise_floor_factor >= 0.0:
            raise ValueError(f"noise_floor_factor must be >= 0, got noise_floor_factor={self.noise_floor_factor}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got chunk_size={self.chunk_size}")
        if self.solver_draws < 1 or self.solver_steps < 0:
            raise ValueError(
                f"solver_draws must be >= 1 and solver_steps >= 0, got "
                f"solver_draws={self.solver_draws}, solver_steps={self.solver_steps}"
            )
        if self.start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got start={self.start!r}")
        if not 0.0 < self.start_share < 1.0:
            raise ValueError(f"start_share must be in (0, 1), got start_share={self.start_share}")
        if self.histogram_suppression < 0:
            raise ValueError(f"histogram_suppression must be >= 0, got histogram_suppression={self.histogram_suppression}")
        if not 0.0 <= self.histogram_threshold < math.inf:
            raise ValueError(
                f"histogram_threshold must be finite and >= 0, got histogram_threshold={self.histogram_threshold}"
            )
        if not 0.0 <= self.count_share < 1.0:
            raise ValueError(
                f"count_share must be in [0, 1), got count_share={self.count_share}; 0 keeps the fixed grid"
            )
        if self.kmeans_iter < 1:
            raise ValueError(
                f"kmeans_iter must be >= 1, got kmeans_iter={self.kmeans_iter}; "
                "pass the number of noisy Lloyd steps, for example kmeans_iter=3"
            )
        if self.histogram_cells < 2:
            raise ValueError(f"histogram_cells must be >= 2, got histogram_cells={self.histogram_cells}")
        if not 0.0 < self.pilot_fraction < 1.0:
            raise ValueError(f"pilot_fraction must be in (0, 1), got pilot_fraction={self.pilot_fraction}")
        return self if self.n_iter is None else self._replace(n_iter=int(self.n_iter))

    def resolve(self, n_features: int) -> "ReleaseConfig":
        """Return the config with its "auto" and None settings made concrete for d = ``n_features``.

        "auto" becomes "histogram_em" where ``histogram_em``'s grid fits
        (at least 4 bins per axis and one cell per component, so d <= 4 at
        the default 256 cells) and "data_independent" otherwise. n_iter=None
        becomes 1 after a "histogram_em" start, which is already close to a
        converged fit, and 10 otherwise. allocation="auto" becomes "optax"
        after a "histogram_em" start, where the solver plans from that fit,
        and "closed_form" otherwise. Planned from the noisy intermediate
        iterates of 10 iterations on wine, the solver was up to 8% worse than
        the closed form at small epsilon and about 6x slower. All choices
        read public values only.

        Raises:
            ValueError: if start="histogram_em" is asked for where its grid
                does not fit.
        """
        config = self
        if config.start == "histogram_em" and not histogram_grid_usable(
            n_features, config.histogram_cells, config.n_components
        ):
            bins = histogram_bins(n_features, config.histogram_cells)
            raise ValueError(
                f"start='histogram_em' needs a grid with at least {MIN_RELEASE_BINS} bins per axis, at most "
                f"{MAX_HISTOGRAM_CELLS} cells and one cell per component, but histogram_cells="
                f"{config.histogram_cells} gives {bins} bins per axis ({bins**n_features} cells) in d={n_features} "
                f"for n_components={config.n_components}; pass start='auto', which falls back to the "
                "data-independent start where the grid does not fit, or change histogram_cells (d <= 8 only)"
            )
        if config.start == "auto":
            usable = histogram_grid_usable(n_features, config.histogram_cells, config.n_components)
            config = config._replace(start="histogram_em" if usable else "data_independent")
        if config.n_iter is None:
            config = config._replace(n_iter=1 if config.start == "histogram_em" else DEFAULT_N_ITER)
        if config.allocation == "auto":
            config = config._replace(allocation="optax" if config.start == "histogram_em" else "closed_form")
        return config


def data_independent_init(key: jax.Array, n_components: int, n_features: int, radius, dtype=jnp.float32) -> Release:
    """Draw a starting mixture from public quantities only.

    Means are uniform in the ball of radius R/2, covariances are
    R^2/(4d) I and weights are uniform. Nothing depends on the data.

    Returns:
        A ``Release`` whose counts are placeholders (ones); DP-EM uses the
        equal split in its first iteration, so they are never read.
    """
    key_direction, key_radius = jax.random.split(key)
    directions = jax.random.normal(key_direction, (n_components, n_features), dtype)
    directions = directions / jnp.linalg.norm(directions, axis=-1, keepdims=True)
    lengths = 0.5 * radius * jax.random.uniform(key_radius, (n_components,), dtype) ** (1.0 / n_features)
    means = directions * lengths[:, None]

    covariances = jnp.broadcast_to(
        (radius**2 / (4.0 * n_features)) * jnp.eye(n_features, dtype=dtype), (n_components, n_features, n_features)
    )
    weights = jnp.full((n_components,), 1.0 / n_components, dtype)
    return Release(GMMParams(weights, means, covariances), jnp.ones((n_components,), dtype))


def histogram_start(
    key: jax.Array, y: jax.Array, mu, radius, half_width, config: ReleaseConfig
) -> Release:
    """Start DP-EM from the highest cells of a noisy histogram of the records.

    The cube [-a, a]^d (a = ``half_width``, which contains the domain) is cut
    into b^d cells, whose counts are released once by
    ``dpgmm_jax.histogram.noisy_histogram`` (mu-GDP). The K starting means are the centres of the highest noisy cells, picked
    greedily. Each pick suppresses the cells within
    ``config.histogram_suppression`` bins of it on every axis, so that one
    cluster does not take several starts. The noisy
    counts of the picks give the weights, and every covariance starts as
    (cell width)^2 I.

    Args:
        key: PRNG key for the histogram noise.
        y: records in mechanism coordinates, shape (N, d).
        mu: GDP budget of the histogram.
        radius: the domain radius R.
        half_width: a, half the side of the cube holding the domain.
        config: static settings (n_components, histogram_cells, relation).

    Returns:
        A ``Release`` with the starting mixture and the picks' noisy counts.
    """
    n_features = y.shape[1]
    bins = histogram_bins(n_features, config.histogram_cells)
    n_cells = bins**n_features
    width = 2.0 * half_width / bins
    strides = bins ** jnp.arange(n_features, dtype=jnp.int32)
    noisy = noisy_histogram(key, y, mu, bins, half_width, config.relation)

    grid = (jnp.arange(n_cells)[:, None] // strides[None, :]) % bins

    def pick(scores, _):
        best = jnp.argmax(scores)
        neighbours = jnp.max(jnp.abs(grid - grid[best]), axis=-1) <= config.histogram_suppression
        return jnp.where(neighbours, -jnp.inf, scores), (best, scores[best])

    _, (picked, picked_counts) = jax.lax.scan(pick, noisy, None, length=config.n_components)

    means = -half_width + (grid[picked] + 0.5) * width
    means = project_onto_ball(means.astype(y.dtype), radius)

    picked_counts = jnp.maximum(jnp.where(jnp.isfinite(picked_counts), picked_counts, 0.0), config.count_floor)
    weights = picked_counts / jnp.sum(picked_counts)
    covariances = jnp.broadcast_to(width**2 * jnp.eye(n_features, dtype=y.dtype),
                                   (config.n_components, n_features, n_features))
    return Release(GMMParams(weights, means, covariances), picked_counts)


class ClusterStatistics(NamedTuple):
    """Sums over the records of each nearest-centre cluster.

    Attributes:
        counts: n_k, shape (K,).
        first_moments: s_k = sum of y_i, shape (K, d).
        squared_norms: q_k = sum of ||y_i||^2, shape (K,).
    """

    counts: jax.Array
    first_moments: jax.Array
    squared_norms: jax.Array


def hard_assignment_statistics(y: jax.Array, centres: jax.Array, chunk_size: int) -> ClusterStatistics:
    """Return the counts, sums and sums of squared norms of each record's nearest centre, in chunks.

    Each record's responsibilities are one-hot on argmin_k ||y - c_k||^2, so
    one record enters one cluster's sums, as in the DP-EM mechanism. Lloyd
    steps need no second moments, so none are formed.
    """
    n_components = centres.shape[0]

    def chunk_statistics(chunk, mask):
        # argmin_k ||y - c_k||^2 = argmin_k (||c_k||^2 - 2 y.c_k): one GEMM per chunk.
        scores = jnp.sum(centres**2, axis=-1) - 2.0 * chunk @ centres.T
        resp = jax.nn.one_hot(jnp.argmin(scores, axis=-1), n_components, dtype=chunk.dtype) * mask[:, None]
        return ClusterStatistics(jnp.sum(resp, axis=0), resp.T @ chunk, resp.T @ jnp.sum(chunk**2, axis=-1))

    return chunked_sum(chunk_statistics, y, chunk_size)


class LloydStep(NamedTuple):
    """Output of one noisy Lloyd step: released values only.

    Attributes:
        centres: noisy cluster means projected onto the ball, shape (K, d).
        counts: noisy cluster sizes floored at ``count_floor``, shape (K,).
        variances: noisy within-cluster variance per coordinate, clipped to
            [eigenvalue_floor, max(eigenvalue_floor, R^2 / d)], shape (K,);
            None without ``spread``.
    """

    centres: jax.Array
    counts: jax.Array
    variances: jax.Array | None


def noisy_lloyd_step(
    key: jax.Array, y: jax.Array, centres: jax.Array, mu, radius, config: ReleaseConfig, spread: bool = False
) -> LloydStep:
    """Assign records to their nearest centre and release the clusters' noisy means: one mu-GDP step.

    The clusters' counts n_k and sums s_k, and with ``spread`` the sums of
    squared norms q_k = sum ||y_i||^2, get Gaussian noise with an equal share
    of mu^2 per group: sigma_g = sqrt(G) Delta_g / mu for G groups, with
    Delta = (1, R, R^2), doubled under replace-one
    (``dpgmm_jax.mechanism.group_sensitivities``). Then

        m_k = (s_k + noise) / max(n_k + noise, count_floor), projected onto the ball,
        v_k = ((q_k + noise) / max(n_k + noise, count_floor) - ||m_k||^2) / d.

    Args:
        key: a fresh PRNG key for this step.
        y: records in mechanism coordinates, shape (N, d).
        centres: the current public or previously released centres, (K, d).
        mu: GDP budget of the step.
        radius: the domain radius R.
        config: static settings (relation, floors, chunk_size).
        spread: also release q_k and return the variances (static).

    Returns:
        A ``LloydStep``.
    """
    n_components, n_features = centres.shape
    n_groups = 3 if spread else 2
    sigmas = math.sqrt(n_groups) * group_sensitivities(radius, config.relation).astype(y.dtype) / mu

    stats = hard_assignment_statistics(y, centres, config.chunk_size)
    key_counts, key_sums, key_squares = jax.random.split(key, 3)
    counts = stats.counts + sigmas[0] * jax.random.normal(key_counts, (n_components,), y.dtype)
    sums = stats.first_moments + sigmas[1] * jax.random.normal(key_sums, (n_components, n_features), y.dtype)
    counts = jnp.maximum(counts, config.count_floor)
    means = project_onto_ball(sums / counts[:, None], radius)

    variances = None
    if spread:
        squares = stats.squared_norms + sigmas[2] * jax.random.normal(key_squares, (n_components,), y.dtype)
        # The trace of a covariance on the ball is at most R^2, so v_k <= R^2 / d.
        variances = (squares / counts - jnp.sum(means**2, axis=-1)) / n_features
        ceiling = jnp.maximum(config.eigenvalue_floor, radius**2 / n_features)
        variances = jnp.clip(variances, config.eigenvalue_floor, ceiling)
    return LloydStep(means, counts, variances)


def kmeans_start(key: jax.Array, y: jax.Array, mu, radius, config: ReleaseConfig) -> Release:
    """Start DP-EM from noisy Lloyd iterations (private k-means).

    Lloyd's algorithm with noisy cluster counts and sums, the k-means of the
    SuLQ framework (Blum, Dwork, McSherry and Nissim, "Practical privacy: the
    SuLQ framework", PODS 2005). The centres start at the data-independent
    start's means, and each of the ``config.kmeans_iter`` iterations is a
    ``noisy_lloyd_step`` with mu_t^2 = mu^2 / kmeans_iter. The last one also
    releases the clusters' spread, so the start is the mixture with the noisy
    weights, the noisy centres and isotropic covariances v_k I. It comes from
    private releases only, and DP-EM's first iteration plans its allocation
    from its noisy counts.

    Args:
        key: PRNG key for the start.
        y: records in mechanism coordinates, shape (N, d).
        mu: GDP budget of the whole start.
        radius: the domain radius R.
        config: static settings (n_components, kmeans_iter, relation, floors,
            chunk_size).

    Returns:
        The start as a ``Release`` with its noisy counts.
    """
    n_components, n_features = config.n_components, y.shape[1]
    key_centres, key_iterations = jax.random.split(key)
    centres = data_independent_init(key_centres, n_components, n_features, radius, y.dtype).params.means
    iteration_mu = mu / math.sqrt(config.kmeans_iter)
    iteration_keys = jax.random.split(key_iterations, config.kmeans_iter)

    def lloyd(centres, iteration_key):
        return noisy_lloyd_step(iteration_key, y, centres, iteration_mu, radius, config).centres, None

    if config.kmeans_iter > 1:
        centres, _ = jax.lax.scan(lloyd, centres, iteration_keys[:-1])
    last = noisy_lloyd_step(iteration_keys[-1], y, centres, iteration_mu, radius, config, spread=True)

    weights = last.counts / jnp.sum(last.counts)
    covariances = last.variances[:, None, None] * jnp.eye(n_features, dtype=y.dtype)
    return Release(GMMParams(weights, last.centres, covariances), last.counts)


def solver_settings(config: ReleaseConfig) -> SolverSettings:
    """Return the optax solver's settings implied by a release config."""
    return SolverSettings(
        n_draws=config.solver_draws,
        n_steps=config.solver_steps,
        min_share=config.min_share,
        count_floor=config.count_floor,
        eigenvalue_floor=config.eigenvalue_floor,
        noise_floor_factor=config.noise_floor_factor,
    )


def concrete_allocation(config: ReleaseConfig) -> str:
    """Return the split that ``allocate_shares`` runs, reading an unresolved "auto" as the closed form."""
    return "closed_form" if config.allocation == "auto" else config.allocation


def allocate_shares(key: jax.Array, stats: SufficientStatistics, mu, radius, config: ReleaseConfig) -> jax.Array:
    """Return each component's split of mu^2, shape (K, 3), from public or released statistics.

    Args:
        key: PRNG key for the optax solver's planning draws (unused otherwise).
        stats: statistics the allocation may look at, never the private data
            (except in the oracle mode, which is labelled not private).
        mu: GDP budget of the release being planned.
        radius: the domain radius R.
        config: chooses the allocation. An "auto" that ``resolve`` has not
            made concrete, as in the oracle and labelled modes, means the
            closed form.
    """
    allocation = concrete_allocation(config)
    if allocation == "equal":
        return equal_shares(config.n_components, stats.counts.dtype)
    if allocation == "optax":
        return optimise_shares(key, stats, mu, radius, solver_settings(config), config.relation).shares
    costs = cost_coefficients(stats)
    return closed_form_shares(costs, group_sensitivities(radius, config.relation), config.min_share)


@functools.partial(jax.jit, static_argnames=("config", "half_width"))
def dp_em_trace(
    key: jax.Array,
    y: jax.Array,
    mu,
    radius,
    config: ReleaseConfig,
    half_width: float | None = None,
    prior: Release | None = None,
) -> tuple[Release, jax.Array]:
    """Fit a Gaussian mixture by differentially private EM and trace the allocations.

    Args:
        key: PRNG key; it is split into the start and one key per release.
        y: records in mechanism coordinates, shape (N, d), ||y_i|| <= radius.
        mu: total GDP budget of the run.
        radius: the domain radius R.
        config: static release settings.
        half_width: half the side of a cube holding the domain, used by the
            histogram start; None takes the radius (a cube around the ball).
            For a domain from per-feature bounds pass 1.0.
        prior: a public mixture with public counts, in mechanism coordinates
            (see ``prior_release``). When given, DP-EM starts from it, in
            place of ``config.start``, and plans its first iteration's
            allocation from it. It must not be computed from the private
            records.

    Returns:
        ``(release, shares)``: the last release and each iteration's split of
        its mu_t^2, shape (n_iter, K, 3). The whole run is mu-GDP under
        ``config.relation``: a private start (histogram or kmeans) spends
        ``start_share`` of mu^2 and the iterations the rest.
    """
    n_features = y.shape[1]
    key_init, key_releases = jax.random.split(key)
    if prior is not None:
        # The prior replaces the start, which then spends nothing.
        config = config._replace(start="data_independent")
    config = config.resolve(n_features)
    if config.start == "histogram_em" and half_width is None:
        raise ValueError(
            "start='histogram_em' builds its grid at trace time, so half_width must be a Python float, got "
            "half_width=None; pass the cube's half side as a number (the radius of a ball domain, 1.0 for a box "
            "domain), or start='data_independent'"
        )
    start_share = float(np.sum(start_schedule(config, n_features)))
    iterations_share = 1.0 - start_share

    if prior is not None:
        start = prior
    elif uses_histogram_start(config, n_features):
        cube = radius if half_width is None else half_width
        start = histogram_start(key_init, y, math.sqrt(start_share) * mu, radius, cube, config)
    elif config.start == "histogram_em":
        start = histogram_em(key_init, y, math.sqrt(start_share) * mu, radius, half_width, config)
    elif config.start == "kmeans":
        start = kmeans_start(key_init, y, math.sqrt(start_share) * mu, radius, config)
    else:
        # NOTE: start="histogram" falls back here when its grid would exceed 2^16 cells (d > 16 at 256 target cells).
        start = data_independent_init(key_init, config.n_components, n_features, radius, y.dtype)

    schedule = jnp.asarray(iteration_schedule(config.n_iter, config.last_share), dtype=y.dtype)
    iteration_mus = jnp.sqrt(schedule * iterations_share) * mu
    release_keys = jax.random.split(key_releases, config.n_iter)
    # A public prior and the k-means start carry counts, so every iteration,
    # the first included, plans its allocation from the release before it.
    plans_from_start = prior is not None or config.start in ("kmeans", "histogram_em")
    first_iteration = (jnp.arange(config.n_iter) == 0) & (not plans_from_start)

    def iteration(previous: Release, inputs):
        iteration_key, iteration_mu, is_first = inputs
        planning_key, release_key = jax.random.split(iteration_key)
        stats, _ = e_step(y, previous.params, config.chunk_size)

        # The allocation reads the previous release (or the public prior) only.
        # The data-independent and histogram starts carry no cluster counts,
        # so after them the first iteration uses the equal split.
        # lax.cond skips planning in the first iteration; its predicate comes
        # from the scan, not from vmapped inputs, so it stays a real branch.
        shares = jax.lax.cond(
            is_first,
            lambda: equal_shares(config.n_components, y.dtype),
            lambda: allocate_shares(planning_key, statistics_from_release(previous), iteration_mu, radius, config),
        )

        scales = noise_scales_from_shares(shares, iteration_mu, radius, config.relation)
        current = release_statistics(
            release_key, stats, scales, radius, config.count_floor, config.eigenvalue_floor, config.noise_floor_factor
        )
        return current, shares

    final, shares = jax.lax.scan(iteration, start, (release_keys, iteration_mus, first_iteration))
    return final, shares


def dp_em(
    key: jax.Array,
    y: jax.Array,
    mu,
    radius,
    config: ReleaseConfig,
    half_width: float | None = None,
    prior: Release | None = None,
) -> Release:
    """Fit a Gaussian mixture by differentially private EM; see ``dp_em_trace`` for the arguments.

    Where ``half_width`` is None and ``radius`` is a concrete number, the cube
    around the ball, half_width = radius, is passed on as a static value.

    Returns:
        The last release, mu-GDP under ``config.relation``.
    """
    if half_width is None:
        try:
            half_width = float(radius)
        except jax.errors.ConcretizationTypeError:
            pass  # A traced radius gives no static cube, which only the histogram_em start needs.
    return dp_em_trace(key, y, mu, radius, config, half_width, prior)[0]


def prior_release(params: GMMParams, n_records) -> Release:
    """Turn a public mixture and a public record count into a planning input.

    The allocation reads a mixture together with per-component counts. For a
    public prior the counts are w_k * n_records, where ``n_records`` is a
    public estimate of N: the true N is private under add/remove.

    Args:
        params: a public mixture in mechanism coordinates.
        n_records: a public estimate of the number of records, > 0.

    Returns:
        A ``Release`` holding the prior and its counts.
    """
    return Release(params, params.weights * n_records)


@functools.partial(jax.jit, static_argnames=("config",))
def oracle_release(key: jax.Array, y: jax.Array, fitted: GMMParams, mu, radius, config: ReleaseConfig) -> Release:
    """Release a non-private fit once, with an allocation planned from that fit.

    NOT differentially private: the responsibilities, and above all the
    allocation, read the non-private fit, so the noise scales depend on the
    data. It is a reference for how well a parameter-release analysis could do,
    and every output of it is labelled ``dp_guarantee = false``.

    Args:
        key: PRNG key for the noise.
        y: records in mechanism coordinates.
        fitted: the non-private fit in mechanism coordinates.
        mu: GDP parameter the noise is calibrated to.
        radius: the domain radius R.
        config: static settings; ``allocation`` chooses the split.

    Returns:
        The release.
    """
    planning_key, key = jax.random.split(key)
    stats, _ = e_step(y, fitted, config.chunk_size)
    shares = allocate_shares(planning_key, stats, mu, radius, config)
    scales = noise_scales_from_shares(shares, mu, radius, config.relation)
    return release_statistics(key, stats, scales, radius, config.count_floor, config.eigenvalue_floor, config.noise_floor_factor)


def uses_histogram_start(config: ReleaseConfig, n_features: int) -> bool:
    """Return whether DP-EM with this config starts from the noisy histogram."""
    return config.start == "histogram" and histogram_bins(n_features, config.histogram_cells) ** n_features <= MAX_HISTOGRAM_CELLS


def start_schedule(config: ReleaseConfig, n_features: int) -> np.ndarray:
    """Return the shares of mu^2 of the start's releases: none, one histogram, or kmeans_iter Lloyd steps."""
    config = config.resolve(n_features)
    if uses_histogram_start(config, n_features) or config.start == "histogram_em":
        return np.array([config.start_share])
    if config.start == "kmeans":
        return np.full(config.kmeans_iter, config.start_share / config.kmeans_iter)
    return np.zeros(0)


def schedule_mus(mu: float, config: ReleaseConfig, n_features: int) -> np.ndarray:
    """Return the mu of every release of a DP-EM run with total budget mu, the start's releases first."""
    config = config.resolve(n_features)
    start = start_schedule(config, n_features)
    schedule = iteration_schedule(config.n_iter, config.last_share) * (1.0 - np.sum(start))
    return np.sqrt(np.concatenate([start, schedule])) * mu


def combine_inverse_variance(
    first: SufficientStatistics, first_scales: NoiseScales, second: SufficientStatistics, second_scales: NoiseScales
) -> tuple[SufficientStatistics, NoiseScales]:
    """Combine two independent noisy releases of the same statistics.

    Each group of each component is weighted by its inverse noise variance,
    the minimum-variance unbiased combination. The result has noise standard
    deviation (1/sigma_1^2 + 1/sigma_2^2)^(-1/2) per group. Post-processing of
    two private releases, so it costs no budget.

    Returns:
        ``(statistics, scales)`` of the combined release.
    """
    def combine(a, b, sigma_a, sigma_b):
        weight_a, weight_b = 1.0 / sigma_a**2, 1.0 / sigma_b**2
        shape = (-1,) + (1,) * (a.ndim - 1)
        total = weight_a + weight_b
        return (weight_a.reshape(shape) * a + weight_b.reshape(shape) * b) / total.reshape(shape), total ** -0.5

    counts, sigma_w = combine(first.counts, second.counts, first_scales.weights, second_scales.weights)
    means, sigma_m = combine(first.first_moments, second.first_moments, first_scales.means, second_scales.means)
    second_moments, sigma_c = combine(
        first.second_moments, second.second_moments, first_scales.covariances, second_scales.covariances
    )
    return SufficientStatistics(counts, means, second_moments), NoiseScales(sigma_w, sigma_m, sigma_c)


@functools.partial(jax.jit, static_argnames=("config",))
def labelled_release(
    key: jax.Array, y: jax.Array, labels: jax.Array, mu, radius, config: ReleaseConfig, prior: Release | None = None
) -> Release:
    """Release a mixture whose components are given by each record's own label.

    Responsibilities are r = e_label, a function of the record alone. A pilot
    release spends ``config.pilot_fraction`` of mu^2 with the equal split. The
    main release spends the rest with the allocation ``config.allocation``
    planned from the post-processed pilot. The two releases compose to
    mu-GDP (mu_pilot^2 + mu_main^2 = mu^2) and are combined by inverse-variance
    weighting before post-processing. With a public ``prior`` there is no
    pilot: the whole budget goes to one release planned from the prior.

    Args:
        key: PRNG key, split into the pilot's noise, the planning draws and
            the main release's noise.
        y: records in mechanism coordinates, shape (N, d).
        labels: integer labels in [0, K), shape (N,).
        mu: total GDP budget.
        radius: the domain radius R.
        config: static settings.
        prior: a public mixture with public counts in mechanism coordinates
            (see ``prior_release``), or None to plan from a pilot.

    Returns:
        The combined release, or the single release planned from the prior.
    """
    key_pilot, key_planning, key_main = jax.random.split(key, 3)
    resp = jax.nn.one_hot(labels, config.n_components, dtype=y.dtype)
    stats = sufficient_statistics(y, resp)

    if prior is not None:
        shares = allocate_shares(key_planning, statistics_from_release(prior), mu, radius, config)
        scales = noise_scales_from_shares(shares, mu, radius, config.relation)
        return postprocess(add_noise(key_main, stats, scales), radius, config.count_floor, config.eigenvalue_floor,
                           scales.covariances, config.noise_floor_factor)

    mu_pilot = jnp.sqrt(config.pilot_fraction) * mu
    mu_main = jnp.sqrt(1.0 - config.pilot_fraction) * mu

    pilot_scales = noise_scales_from_shares(equal_shares(config.n_components, y.dtype), mu_pilot, radius, config.relation)
    pilot_noisy = add_noise(key_pilot, stats, pilot_scales)
    pilot = postprocess(pilot_noisy, radius, config.count_floor, config.eigenvalue_floor,
                        pilot_scales.covariances, config.noise_floor_factor)

    shares = allocate_shares(key_planning, statistics_from_release(pilot), mu_main, radius, config)
    main_scales = noise_scales_from_shares(shares, mu_main, radius, config.relation)
    main_noisy = add_noise(key_main, stats, main_scales)

    combined, combined_scales = combine_inverse_variance(pilot_noisy, pilot_scales, main_noisy, main_scales)
    return postprocess(combined, radius, config.count_floor, config.eigenvalue_floor,
                       combined_scales.covariances, config.noise_floor_factor)
