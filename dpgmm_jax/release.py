"""Python-level entry point: validate inputs, release a mixture, describe it.

``release_gmm`` is the one-call path from raw records to a published mixture
in data units plus its privacy metadata. It validates every argument before
anything is traced, maps records into the public domain, runs the chosen
mode and records what guarantee the output carries.
"""

import importlib.metadata
import logging
import platform
import secrets
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.cluster import KMeans

from dpgmm_jax.accounting import (
    NeighbouringRelation,
    compose_mu,
    epsilon_from_mu,
    mu_from_epsilon_delta,
)
from dpgmm_jax.algorithms import (
    PRIVATE_STARTS,
    ReleaseConfig,
    concrete_allocation,
    dp_em,
    labelled_release,
    oracle_release,
    prior_release,
    schedule_mus,
    uses_histogram_start,
)
from dpgmm_jax.domain import Domain, params_to_mechanism_coordinates, to_data_coordinates, to_mechanism_coordinates
from dpgmm_jax.em import fit_em, initial_params_from_means
from dpgmm_jax.histogram import (
    DEFAULT_HISTOGRAM_CELLS,
    check_histogram_grid,
    check_release_grid,
    count_release_share,
    counted_histogram_em,
    histogram_bins,
    histogram_em,
    histogram_grid_usable,
)
from dpgmm_jax.io import InvalidReleaseFileError, validate_params
from dpgmm_jax.types import GMMParams, PublicPrior, Release
from dpgmm_jax.validation import PrivacyLeakWarning, check_delta, check_epsilon

logger = logging.getLogger(__name__)

MODES = ("auto", "dp_em", "histogram_em", "labelled", "oracle")
_VERSIONED_PACKAGES = ("dpgmm_jax", "jax", "jaxlib", "optax", "dp-accounting", "numpy", "scikit-learn")


def package_versions() -> dict:
    """Return the versions of Python and the packages a release depends on."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def fresh_key() -> jax.Array:
    """Return a PRNG key seeded from operating-system entropy."""
    return jax.random.key(secrets.randbits(63))


def privacy_metadata(
    *,
    epsilon: float,
    delta: float,
    mode: str,
    domain: Domain,
    config: ReleaseConfig,
    public_prior: bool = False,
) -> dict:
    """Describe the guarantee of a release as a JSON-serialisable dict.

    ``dp_guarantee`` is false for the oracle mode and for a domain derived
    from the data. ``allocation_source`` says what the noise allocation was
    planned from. The dict never contains data-dependent counts such as the
    number of projected records.
    """
    mu = mu_from_epsilon_delta(epsilon, delta)
    if public_prior:
        # A public prior replaces DP-EM's start, which then spends nothing.
        config = config._replace(start="data_independent")
    if mode == "dp_em":
        config = config.resolve(domain.n_features)
        iteration_mus = schedule_mus(mu, config, domain.n_features)
    elif mode == "histogram_em" and count_release_share(config) > 0.0:
        # The record count that picks the grid, then the histogram.
        share = count_release_share(config)
        iteration_mus = np.sqrt([share, 1.0 - share]) * mu
    elif mode == "histogram_em" or (mode == "labelled" and public_prior):
        iteration_mus = np.array([mu])
    elif mode == "labelled":
        iteration_mus = np.sqrt([config.pilot_fraction, 1.0 - config.pilot_fraction]) * mu
    else:
        iteration_mus = np.array([mu])
    dp_guarantee = mode != "oracle" and not domain.data_derived

    if mode == "oracle":
        allocation_source = "non-private fit"
    elif mode == "histogram_em" and count_release_share(config) > 0.0:
        allocation_source = "none: a noisy record count picks the grid, then every cell count gets the same noise"
    elif mode == "histogram_em":
        allocation_source = "none: one histogram release, every count with the same noise"
    elif config.allocation == "equal":
        allocation_source = "none: the equal split reads no statistics"
    elif mode == "labelled":
        allocation_source = "public prior" if public_prior else "private pilot release"
    elif public_prior:
        allocation_source = "public prior, then the previous private iterate"
    elif config.start == "kmeans":
        allocation_source = "private k-means start, then the previous private iterate"
    elif config.start == "histogram_em":
        allocation_source = "private histogram_em start, then the previous private iterate"
    else:
        allocation_source = "equal split, then the previous private iterate"

    grid_cells = histogram_bins(domain.n_features, config.histogram_cells) ** domain.n_features
    # The histogram_em mode and DP-EM's histogram_em start both release counts on this grid.
    uses_grid = mode == "histogram_em" or (mode == "dp_em" and config.start == "histogram_em" and not public_prior)
    planned_by_solver = mode != "histogram_em" and concrete_allocation(config) == "optax"

    start = None
    if mode == "dp_em" and public_prior:
        start = "public_prior"
    elif mode == "dp_em" and config.start == "histogram" and not uses_histogram_start(config, domain.n_features):
        # The histogram start falls back to the data-independent start on a grid over 2^16 cells.
        start = "data_independent"
    elif mode == "dp_em":
        start = config.start

    reasons = []
    if mode == "oracle":
        reasons.append("oracle mode plans the noise from the non-private fit")
    if domain.data_derived:
        reasons.append("the domain was derived from the data")

    return {
        "epsilon": epsilon,
        "delta": delta,
        "mu": mu,
        "iteration_mus": iteration_mus.tolist(),
        "n_releases": int(len(iteration_mus)),
        "composed_mu": compose_mu(iteration_mus),
        "composed_epsilon": epsilon_from_mu(compose_mu(iteration_mus), delta),
        "neighbouring_relation": NeighbouringRelation(config.relation).value,
        "mode": mode,
        "dp_guarantee": dp_guarantee,
        "no_guarantee_reasons": reasons,
        "allocation": None if mode == "histogram_em" else concrete_allocation(config),
        "allocation_source": allocation_source,
        "min_share": None if mode == "histogram_em" else config.min_share,
        "n_iter": config.n_iter if mode == "dp_em" else 1,
        "start": start,
        "start_share": config.start_share if mode == "dp_em" and start in PRIVATE_STARTS else None,
        "kmeans_iter": config.kmeans_iter if mode == "dp_em" and start == "kmeans" else None,
        "pilot_fraction": config.pilot_fraction if mode == "labelled" and not public_prior else None,
        "last_share": None if mode == "histogram_em" else config.last_share,
        "count_floor": config.count_floor,
        "eigenvalue_floor": config.eigenvalue_floor,
        "noise_floor_factor": None if mode == "histogram_em" else config.noise_floor_factor,
        "solver_draws": config.solver_draws if planned_by_solver else None,
        "solver_steps": config.solver_steps if planned_by_solver else None,
        # The grid's actual cell count, bins^d, which may be below the target.
        "histogram_cells": grid_cells if uses_grid else None,
        "histogram_threshold": config.histogram_threshold if uses_grid else None,
        "count_share": count_release_share(config) if mode == "histogram_em" else None,
        "domain": domain.describe(),
        "versions": package_versions(),
    }


def check_prior(prior, domain: Domain, n_components: int, dtype) -> Release:
    """Validate a public prior and return it as a planning input in mechanism coordinates.

    Raises:
        TypeError: if ``prior`` is not a ``PublicPrior``.
        ValueError: naming the invalid field and the fix.
    """
    if not isinstance(prior, PublicPrior):
        raise TypeError(
            f"prior must be a dpgmm_jax.PublicPrior(params, n_records), got {type(prior).__name__}"
        )
    try:
        params = validate_params(prior.params)
    except InvalidReleaseFileError as error:
        raise ValueError(f"prior.params is invalid: {error}") from None
    if params.weights.shape[0] != n_components:
        raise ValueError(
            f"prior has {params.weights.shape[0]} components, got n_components={n_components}; "
            "pass a prior with n_components components"
        )
    if params.means.shape[1] != domain.n_features:
        raise ValueError(
            f"prior has d={params.means.shape[1]} features but the domain has d={domain.n_features}; "
            "pass a prior in the domain's features"
        )
    n_records = prior.n_records
    is_number = isinstance(n_records, (int, float, np.integer, np.floating)) and not isinstance(n_records, bool)
    if not is_number or not np.isfinite(n_records) or n_records <= 0:
        raise ValueError(f"prior.n_records must be a finite number > 0, got n_records={n_records!r}")

    # The dtype JAX computes in: float64 records run in float32 unless jax_enable_x64 is set.
    dtype = jax.dtypes.canonicalize_dtype(dtype)
    mechanism = params_to_mechanism_coordinates(params, domain)
    mechanism = GMMParams(*(jnp.asarray(a, dtype=dtype) for a in mechanism))
    return prior_release(mechanism, jnp.asarray(float(n_records), dtype=dtype))


def auto_mode(n_features: int, config: ReleaseConfig, has_prior: bool, stacklevel: int = 3) -> str:
    """Return the mode that mode="auto" runs: "histogram_em" where its grid fits, else "dp_em".

    The choice reads public values only: d, the number of components, the
    grid setting, the start and whether a public prior is given. A prior or
    a private start selects DP-EM, the only mode that uses them. Where the
    default grid would fit but the settings rule the histogram out, a
    warning names the reason.
    """
    if has_prior or config.start in PRIVATE_STARTS:
        return "dp_em"
    try:
        check_histogram_grid(n_features, config.histogram_cells, config.n_components)
    except ValueError as error:
        if histogram_grid_usable(n_features, DEFAULT_HISTOGRAM_CELLS):
            warnings.warn(f"mode='auto' runs dp_em, because {error}", UserWarning, stacklevel=stacklevel)
        return "dp_em"
    return "histogram_em"


def check_labels(labels, n_records: int, n_components: int) -> np.ndarray:
    """Validate per-record component labels and return them as an int array."""
    if labels is None:
        raise ValueError("mode='labelled' needs labels: pass one integer label per record")
    labels = np.asarray(labels)
    if labels.shape != (n_records,):
        raise ValueError(f"labels must have shape ({n_records},), one per record, got shape {labels.shape}")
    if labels.dtype.kind not in "iu" and not (labels.dtype.kind == "f" and np.all(labels == np.round(labels))):
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= n_components:
        raise ValueError(
            f"labels must lie in [0, {n_components}), got values from {labels.min()} to {labels.max()}; "
            "map them to 0..n_components-1 or raise n_components"
        )
    return labels


def nonprivate_fit(y: np.ndarray, n_components: int, seed: int = 0, reg_covar: float = 1e-6) -> GMMParams:
    """Fit the non-private reference mixture: k-means starts (10 restarts), then EM.

    Reads the data freely, so the result carries no privacy guarantee.
    """
    kmeans = KMeans(n_components, n_init=10, random_state=seed).fit(y)
    init = initial_params_from_means(y, kmeans.cluster_centers_, reg_covar)
    result = fit_em(jnp.asarray(y), init, max_iter=1000, tol=1e-8, reg_covar=reg_covar)
    if not bool(result.converged):
        logger.warning("the non-private reference EM did not converge in 1000 iterations")
    return result.params


def release_gmm(
    x,
    *,
    epsilon: float,
    delta: float,
    domain: Domain,
    n_components: int,
    mode: str = "dp_em",
    key: jax.Array | None = None,
    labels=None,
    accountant=None,
    prior: PublicPrior | None = None,
    **config_options,
) -> tuple[GMMParams, dict]:
    """Release a Gaussian mixture of ``x`` under (epsilon, delta)-DP.

    Args:
        x: records, shape (N, d), numeric and finite.
        epsilon: privacy budget, > 0.
        delta: privacy parameter, in (0, 1).
        domain: the public domain; records outside it are projected onto it.
        n_components: number of components K >= 1.
        mode: "dp_em" (private end to end), "histogram_em" (EM on one
            noisy histogram, see ``dpgmm_jax.histogram``; d <= 4 at the
            default 256 cells), "auto" (``auto_mode``: histogram_em where
            its grid fits, dp_em otherwise), "labelled" (one release per label,
            components given by ``labels``) or "oracle" (NOT private, a
            reference that plans the noise from the non-private fit).
        key: PRNG key for the noise; None draws one from OS entropy.
        labels: integer component label of each record, in [0, n_components),
            required by mode "labelled" and rejected otherwise.
        accountant: a budget ledger such as ``dpgmm_jax.ledger.PrivacyAccountant``;
            its ``spend(epsilon, delta, description)`` is charged after
            validation and before any noise is drawn. It raises when the
            release would overspend.
        prior: a public ``PublicPrior`` (mixture in data units and a public
            estimate of N) to plan the allocation from, in place of the
            equal split. In mode "dp_em" it is also the start; in mode
            "labelled" it replaces the pilot, so the whole budget goes to
            one release. It must not be computed from ``x``.
        **config_options: further ``ReleaseConfig`` fields (n_iter,
            last_share, allocation, min_share, relation, count_floor,
            eigenvalue_floor, chunk_size, start, start_share, kmeans_iter,
            histogram_cells, histogram_threshold, count_share).

    Returns:
        ``(params, metadata)``: the released mixture in data units as NumPy
        arrays, and the dict of ``privacy_metadata``.

    Raises:
        ValueError, TypeError: on invalid arguments, naming the value.
    """
    epsilon = check_epsilon(epsilon)
    delta = check_delta(delta)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got mode={mode!r}")
    unknown = sorted(set(config_options) - set(ReleaseConfig._fields))
    if unknown:
        raise TypeError(
            f"release_gmm got unknown options {unknown}; pass ReleaseConfig fields such as n_iter (the estimator's "
            f"max_iter), start or allocation. The fields are {list(ReleaseConfig._fields[1:])}"
        )
    config = ReleaseConfig(n_components=n_components, **config_options).validate()

    y, _ = to_mechanism_coordinates(x, domain)
    if mode == "auto":
        mode = auto_mode(y.shape[1], config, prior is not None)
    if delta >= 1.0 / y.shape[0]:
        warnings.warn(
            f"delta={delta} is not below 1/N = {1.0 / y.shape[0]:.3g}; such a delta "
            "allows releasing a whole record with probability delta; choose a smaller delta",
            UserWarning,
            stacklevel=2,
        )
    if domain.data_derived:
        warnings.warn("releasing with a domain derived from the data: no DP guarantee", PrivacyLeakWarning, stacklevel=2)

    if mode == "labelled":
        labels = check_labels(labels, y.shape[0], n_components)
    elif labels is not None:
        raise ValueError(f"labels are only used by mode='labelled', got mode={mode!r}; drop labels or change mode")

    if mode == "histogram_em":
        check_release_grid(y.shape[1], config)

    if prior is not None:
        if mode == "oracle":
            raise ValueError("mode='oracle' plans from the non-private fit and takes no prior; drop prior")
        if mode == "histogram_em":
            raise ValueError("mode='histogram_em' splits no budget, so it takes no prior; drop prior")
        explicit_start = config_options.get("start", "auto")
        if mode == "dp_em" and explicit_start in PRIVATE_STARTS:
            raise ValueError(
                f"a public prior replaces the {explicit_start} start, so the two cannot be combined. "
                f"Drop prior or drop start={explicit_start!r}"
            )
        prior = check_prior(prior, domain, n_components, y.dtype)
        # The prior replaces the default start, which then spends nothing.
        config = config._replace(start="data_independent")

    if accountant is not None:
        accountant.spend(epsilon, delta, f"release_gmm(mode={mode!r}, n_components={n_components})")

    key = fresh_key() if key is None else key
    mu = mu_from_epsilon_delta(epsilon, delta)
    y_jax = jnp.asarray(y)

    if mode == "dp_em":
        release = dp_em(key, y_jax, mu, domain.radius, config, 1.0 if domain.bounded_box else None, prior)
    elif mode == "histogram_em":
        half_width = 1.0 if domain.bounded_box else domain.radius
        if config.count_share > 0.0:
            release, config = counted_histogram_em(key, y_jax, mu, domain.radius, half_width, config)
        else:
            release = histogram_em(key, y_jax, mu, domain.radius, half_width, config)
    elif mode == "labelled":
        release = labelled_release(key, y_jax, jnp.asarray(labels), mu, domain.radius, config, prior)
    else:
        warnings.warn(
            "oracle mode plans the noise from the non-private fit: the release is NOT differentially private",
            PrivacyLeakWarning,
            stacklevel=2,
        )
        fitted = nonprivate_fit(y, n_components)
        release = oracle_release(key, y_jax, fitted, mu, domain.radius, config)

    params = to_data_coordinates(jax.tree.map(np.asarray, release.params), domain)
    metadata = privacy_metadata(
        epsilon=epsilon, delta=delta, mode=mode, domain=domain, config=config, public_prior=prior is not None
    )
    return params, metadata
