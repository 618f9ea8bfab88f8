"""Run release methods on one dataset over a grid of epsilons and trials.

Each method becomes one compiled function of (keys, budgets) that vmaps over
trials and epsilons, so a sweep pays one compilation per method and dataset
and loops over neither in Python. The budget is the GDP parameter mu for
DP-EM and the oracle, and an RDP-calibrated noise multiplier for the
baselines of ``dpgmm_jax.baselines``. The scikit-learn reference is the one
exception: it runs once per trial in Python. KL divergences to the
non-private reference fit are evaluated the same way.
"""

import logging
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import DictConfig, OmegaConf

from dpgmm_jax.accounting import mu_from_epsilon_delta
from dpgmm_jax.algorithms import DEFAULT_N_ITER, ReleaseConfig, data_independent_init, dp_em_trace, oracle_release, prior_release
from dpgmm_jax.baselines import (
    DpsgdConfig,
    ParkConfig,
    dpsgd_gmm,
    dpsgd_noise_multiplier,
    park_dp_em,
    park_noise_multiplier,
    sklearn_fit,
)
from dpgmm_jax.data import Dataset, load_dataset
from dpgmm_jax.domain import Domain, to_data_coordinates, to_mechanism_coordinates
from dpgmm_jax.em import fit_em, log_prob
from dpgmm_jax.histogram import (
    bins_from_count,
    check_release_grid,
    count_release_share,
    histogram_bins,
    histogram_em,
    noisy_record_count,
)
from dpgmm_jax.kl import best_matching, kl_monte_carlo, matched_bound, permute_components, sample
from dpgmm_jax.release import nonprivate_fit, privacy_metadata
from dpgmm_jax.types import GMMParams, Release

logger = logging.getLogger(__name__)

ALGORITHMS = ("dp_em", "histogram_em", "oracle", "nonprivate", "park_dp_em", "dpsgd", "sklearn")
# Algorithms whose budget is an RDP-calibrated noise multiplier instead of mu.
RDP_ALGORITHMS = ("park_dp_em", "dpsgd")
# Algorithms whose output carries a differential privacy guarantee (given a public domain).
PRIVATE_ALGORITHMS = ("dp_em", "histogram_em", "park_dp_em", "dpsgd")
DPSGD_OPTIONS = ("batch_size", "epochs", "sampling", "l2_norm_clip", "learning_rate")
PRIORS = ("none", "public_sample")


class PreparedDataset(NamedTuple):
    """A dataset mapped into its public domain, with its non-private reference fit.

    Attributes:
        name: the dataset's name in results.
        dataset: the loaded records.
        domain: the declared public domain.
        y: training records in mechanism coordinates; every method fits these.
        n_components: K of every fit.
        reference: non-private fit of ``y``.
        y_test: held-out records in mechanism coordinates, not projected onto
            the domain, or None without a split.
        generating_model: the true mixture in mechanism coordinates for
            synthetic data, else None.
    """

    name: str
    dataset: Dataset
    domain: Domain
    y: jax.Array
    n_components: int
    reference: GMMParams
    y_test: jax.Array | None = None
    generating_model: GMMParams | None = None


def _broadcast(value, n_features: int | None) -> list:
    """Return a list of bounds; a scalar repeats once per feature, which needs ``n_features``."""
    if isinstance(value, (int, float)):
        if n_features is None:
            raise ValueError(f"a scalar domain bound ({value}) needs the number of features; write one per feature")
        return [float(value)] * n_features
    return list(value)


def domain_from_config(config: DictConfig, n_features: int | None = None) -> Domain:
    """Build the declared public domain: ``{centre, radius}`` or ``{lower, upper}``.

    A scalar centre or bound applies to every feature, so one config serves
    synthetic data of any dimension.
    """
    if "radius" in config:
        return Domain.from_ball(_broadcast(config.centre, n_features), config.radius)
    if "lower" in config:
        return Domain.from_bounds(_broadcast(config.lower, n_features), _broadcast(config.upper, n_features))
    raise ValueError(
        f"a dataset config must declare its public domain as centre and radius or as "
        f"lower and upper bounds, got domain keys {sorted(config)}"
    )


def split_records(n_records: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return train and test indices of a seeded random split; it reads only N and public settings."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got test_fraction={test_fraction}")
    order = np.random.default_rng(seed).permutation(n_records)
    n_test = int(round(test_fraction * n_records))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def prepare_dataset(config: DictConfig, dtype) -> PreparedDataset:
    """Load a dataset, split it, map it into its declared domain and fit the reference.

    ``config.test_fraction`` (default 0, no split) holds records out with a
    split seeded by ``config.split_seed``; the reference and every method see
    the training records only.
    """
    options = OmegaConf.to_container(config.options, resolve=True) if "options" in config else {}
    dataset = load_dataset(config.name, **options)
    domain = domain_from_config(config.domain, dataset.x.shape[1])

    train, test = split_records(dataset.x.shape[0], float(config.get("test_fraction", 0.0)),
                                int(config.get("split_seed", 0)))
    y, _ = to_mechanism_coordinates(dataset.x[train], domain)
    y = np.asarray(y, dtype=dtype)
    y_test = None
    if test.size:
        y_test = jnp.asarray((dataset.x[test] - domain.centre) / domain.scale, dtype=dtype)

    generating_model = None
    if dataset.generating_model is not None:
        model = dataset.generating_model
        scale = np.asarray(domain.scale)
        generating_model = GMMParams(
            jnp.asarray(model.weights, dtype=dtype),
            jnp.asarray((model.means - domain.centre) / scale, dtype=dtype),
            jnp.asarray(model.covariances / (scale[:, None] * scale[None, :]), dtype=dtype),
        )

    reference = nonprivate_fit(y, config.n_components)
    logger.info("dataset %s: N=%d (train), %d (test), d=%d, K=%d", config.name, y.shape[0], test.size, y.shape[1],
                config.n_components)
    return PreparedDataset(config.name, dataset, domain, jnp.asarray(y), int(config.n_components), reference,
                           y_test, generating_model)


def release_config(prepared: PreparedDataset, release: DictConfig, method: DictConfig) -> ReleaseConfig:
    """Combine the shared release settings with one method's own settings.

    A method entry may override any ``ReleaseConfig`` field by name, for
    example ``{algorithm: dp_em, allocation: closed_form, noise_floor_factor: 0.5}``.
    Every field found in either place reaches the config; where neither sets
    ``allocation`` the method gets the equal split. DP-EM's start="auto" and
    n_iter=None are resolved for the dataset's d; the baselines that iterate
    get n_iter=None as 10 iterations, whatever the start.
    """
    merged = {**OmegaConf.to_container(release, resolve=True), **OmegaConf.to_container(method, resolve=True)}
    options = {name: merged[name] for name in ReleaseConfig._fields if name in merged and name != "n_components"}
    options["allocation"] = str(merged.get("allocation", "equal"))
    config = ReleaseConfig(n_components=prepared.n_components, **options).validate()
    if str(method.get("algorithm")) == "dp_em":
        return config.resolve(prepared.y.shape[1])
    return config._replace(n_iter=DEFAULT_N_ITER) if config.n_iter is None else config


def trial_keys(seed: int, n_epsilons: int, n_trials: int) -> jax.Array:
    """Return keys of shape (n_epsilons, n_trials); trial t at epsilon e gets its own key."""
    base = jax.random.key(seed)
    return jax.vmap(lambda e: jax.vmap(lambda t: jax.random.fold_in(jax.random.fold_in(base, e), t))(
        jnp.arange(n_trials)))(jnp.arange(n_epsilons))


def dpsgd_config(prepared: PreparedDataset, method: DictConfig) -> DpsgdConfig:
    """Build the DP-SGD settings from a method entry; unset options keep ``DpsgdConfig``'s defaults."""
    options = {name: method[name] for name in DPSGD_OPTIONS if name in method}
    n_records = int(prepared.y.shape[0])
    if "batch_size" in options:
        options["batch_size"] = min(int(options["batch_size"]), n_records)
    else:
        options["batch_size"] = min(DpsgdConfig._field_defaults["batch_size"], n_records)
    return DpsgdConfig(n_components=prepared.n_components, n_records=n_records, **options).validate()


def budgets_for(prepared: PreparedDataset, algorithm: str, config: ReleaseConfig, method: DictConfig,
                epsilons, delta: float, mus: jax.Array) -> jax.Array:
    """Return the per-epsilon budget that ``run_method`` passes to each trial.

    Returns:
        Shape (E,): mu for GDP-accounted methods, the RDP-calibrated noise
        multiplier for "park_dp_em" and "dpsgd".
    """
    if algorithm == "park_dp_em":
        values = [park_noise_multiplier(e, delta, config.n_iter) for e in epsilons]
    elif algorithm == "dpsgd":
        dpsgd = dpsgd_config(prepared, method)
        values = [dpsgd_noise_multiplier(e, delta, dpsgd) for e in epsilons]
    else:
        return mus
    return jnp.asarray(values, dtype=prepared.y.dtype)


def public_sample_prior(prepared: PreparedDataset, n_public: int, seed: int) -> Release:
    """Fit a prior to a public sample drawn afresh from the generating model.

    The sample shares no record with the private data: it is a new draw
    from the synthetic generator, as a public survey of the same population
    would be. Its non-private fit and the public N of the dataset config
    plan DP-EM's first allocation and start it.

    Args:
        prepared: a synthetic dataset (one with a generating model).
        n_public: size of the public sample.
        seed: seed of the public draw, distinct from the data's seed.

    Returns:
        The prior as a planning input in mechanism coordinates.
    """
    if prepared.generating_model is None:
        raise ValueError(
            f"prior=public_sample needs a generating model, and dataset {prepared.name!r} has none; "
            "run it on synthetic data or drop the prior option"
        )
    if n_public < prepared.n_components:
        raise ValueError(f"prior_records must be >= K = {prepared.n_components}, got prior_records={n_public}")
    # The public records go through the same projection onto the domain as
    # the private ones, by way of data units.
    drawn = np.asarray(sample(jax.random.key(seed), prepared.generating_model, n_public))
    public, _ = to_mechanism_coordinates(drawn * prepared.domain.scale + prepared.domain.centre, prepared.domain)
    fitted = nonprivate_fit(public, prepared.n_components, seed=seed)
    fitted = GMMParams(*(jnp.asarray(a, dtype=prepared.y.dtype) for a in fitted))
    return prior_release(fitted, jnp.asarray(float(prepared.y.shape[0]), dtype=prepared.y.dtype))


def run_method(prepared: PreparedDataset, algorithm: str, config: ReleaseConfig, keys: jax.Array, mus: jax.Array,
               nonprivate_max_iter: int = 300, method: DictConfig | None = None, seed: int = 0,
               trace: dict | None = None) -> GMMParams:
    """Release with one method for every (epsilon, trial) pair.

    Args:
        prepared: the dataset.
        algorithm: one of ``ALGORITHMS``.
        config: static release settings; the baselines read n_iter,
            relation and the floors from it.
        keys: shape (E, T).
        mus: shape (E,), the budget per epsilon from ``budgets_for``: total
            GDP mu, or a noise multiplier for "park_dp_em" and "dpsgd".
        nonprivate_max_iter: EM iterations for the non-private methods.
        method: the method's config entry, read by "dpsgd" for its options
            and by "dp_em" for ``prior`` ("none" or "public_sample") and
            ``prior_records`` (size of the public sample, default 1000).
        seed: base ``random_state`` of the "sklearn" trials (seed + trial).
        trace: for "dp_em", a dict that receives under "shares" the last
            iteration's split of mu_t^2 over (weights, means, covariances),
            averaged over components with the released weights, shape (E, T, 3).
            For "histogram_em" it receives under "histogram_cells" the
            number of cells of each trial's grid, shape (E, T): bins^d of
            the fixed grid, or of the grid each trial picked from its noisy
            count when ``count_share`` > 0.

    Returns:
        Released parameters in mechanism coordinates, batched as (E, T, ...).
    """
    y, radius = prepared.y, prepared.domain.radius
    method = OmegaConf.create({}) if method is None else method

    half_width = 1.0 if prepared.domain.bounded_box else None
    if algorithm == "dp_em":
        prior_name = str(method.get("prior", "none"))
        if prior_name not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got prior={prior_name!r}")
        prior = None
        if prior_name == "public_sample":
            prior = public_sample_prior(prepared, int(method.get("prior_records", 1000)), seed + 1000)

        # The histogram_em start builds its grid at trace time, so the cube's half-width is passed as a static value.
        cube = float(radius) if half_width is None else half_width

        def single(key, mu):
            release, shares = dp_em_trace(key, y, mu, radius, config, cube, prior)
            return release.params, jnp.einsum("k,kg->g", release.params.weights, shares[-1])

        params, shares = jax.jit(jax.vmap(jax.vmap(single, in_axes=(0, None)), in_axes=(0, 0)))(keys, mus)
        if trace is not None:
            trace["shares"] = np.asarray(shares)
        return params
    elif algorithm == "histogram_em" and config.count_share > 0.0:
        return counted_histogram_trials(prepared, config, keys, mus, radius if half_width is None else half_width,
                                        trace)
    elif algorithm == "histogram_em":
        if trace is not None:
            bins = histogram_bins(y.shape[1], config.histogram_cells)
            trace["histogram_cells"] = np.full(keys.shape, bins ** y.shape[1])

        def single(key, mu):
            return histogram_em(key, y, mu, radius, radius if half_width is None else half_width, config).params
    elif algorithm == "oracle":
        def single(key, mu):
            return oracle_release(key, y, prepared.reference, mu, radius, config).params
    elif algorithm == "nonprivate":
        # Non-private EM from the same data-independent start as DP-EM: it
        # shows what the start alone costs, without noise.
        def single(key, mu):
            start = data_independent_init(key, config.n_components, y.shape[1], radius, y.dtype)
            return fit_em(y, start.params, max_iter=nonprivate_max_iter, tol=1e-6).params
    elif algorithm == "park_dp_em":
        park = ParkConfig(config.n_components, config.n_iter, config.relation, config.count_floor,
                          config.eigenvalue_floor, config.chunk_size)

        def single(key, noise_multiplier):
            return park_dp_em(key, y, noise_multiplier, radius, park)
    elif algorithm == "dpsgd":
        dpsgd = dpsgd_config(prepared, method)

        def single(key, noise_multiplier):
            return dpsgd_gmm(key, y, noise_multiplier, radius, dpsgd)
    elif algorithm == "sklearn":
        # scikit-learn is not traceable: one Python call per trial, repeated over epsilons.
        records = np.asarray(y)
        fits = [sklearn_fit(records, config.n_components, seed + t, nonprivate_max_iter) for t in range(keys.shape[1])]
        stacked = jax.tree.map(lambda *arrays: jnp.asarray(np.stack(arrays), dtype=y.dtype), *fits)
        return jax.tree.map(lambda a: jnp.broadcast_to(a, keys.shape + a.shape[1:]), stacked)
    else:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got algorithm={algorithm!r}")

    if algorithm == "nonprivate":
        # The fit does not depend on epsilon: run the trials once and repeat them.
        fits = jax.jit(jax.vmap(single, in_axes=(0, None)))(keys[0], mus[0])
        return jax.tree.map(lambda a: jnp.broadcast_to(a, keys.shape + a.shape[1:]), fits)

    batched = jax.jit(jax.vmap(jax.vmap(single, in_axes=(0, None)), in_axes=(0, 0)))
    return batched(keys, mus)


def counted_histogram_trials(prepared: PreparedDataset, config: ReleaseConfig, keys: jax.Array, mus: jax.Array,
                             half_width: float, trace: dict | None = None) -> GMMParams:
    """Run ``counted_histogram_em`` for every trial, batching the trials that chose the same grid.

    Each trial's grid comes from its own noisy count, so the grids differ
    between trials. The counts are drawn for all trials at once, and every
    group of trials with one grid runs as one vmapped ``histogram_em``, with
    the keys and budgets that ``counted_histogram_em`` would use. A ``trace``
    dict receives each trial's number of cells under "histogram_cells".
    """
    y, radius = prepared.y, prepared.domain.radius
    n_records, n_features = y.shape
    share = count_release_share(config)
    split = jax.vmap(jax.vmap(jax.random.split))(keys)
    count_keys, histogram_keys = split[..., 0], split[..., 1]
    histogram_mus = jnp.sqrt(1.0 - share) * mus

    if share > 0.0:
        count_mus = jnp.broadcast_to(jnp.sqrt(share) * mus[:, None], keys.shape)
        draw = jax.vmap(jax.vmap(lambda key, mu: noisy_record_count(key, n_records, mu)))
        counts = np.asarray(draw(count_keys, count_mus))
    else:
        counts = np.full(keys.shape, float(n_records))
    bins = np.array([[bins_from_count(counts[e, t], float(histogram_mus[e]), n_features, config.n_components)
                      for t in range(keys.shape[1])] for e in range(keys.shape[0])])

    if trace is not None:
        trace["histogram_cells"] = bins**n_features

    flat_keys = histogram_keys.reshape(-1)
    flat_mus = jnp.broadcast_to(histogram_mus[:, None], keys.shape).reshape(-1)
    flat_bins = bins.reshape(-1)
    released = None
    for grid_bins in np.unique(flat_bins):
        members = np.flatnonzero(flat_bins == grid_bins)
        grid_config = config._replace(histogram_cells=int(grid_bins) ** n_features)
        group = jax.jit(jax.vmap(lambda key, mu: histogram_em(key, y, mu, radius, half_width, grid_config).params))(
            flat_keys[members], flat_mus[members])
        if released is None:
            released = jax.tree.map(lambda a: jnp.zeros((flat_bins.size,) + a.shape[1:], a.dtype), group)
        released = jax.tree.map(lambda whole, part: whole.at[members].set(part), released, group)
    return jax.tree.map(lambda a: a.reshape(keys.shape + a.shape[1:]), released)


def evaluate_kl(key: jax.Array, reference: GMMParams, released: GMMParams, n_samples: int,
                direction: str = "forward") -> dict:
    """Monte Carlo KL with its standard error and the matched bound for a batch of releases.

    Args:
        key: PRNG key for the Monte Carlo samples.
        reference: the non-private fit.
        released: releases batched as (E, T, ...).
        n_samples: Monte Carlo samples per release.
        direction: "forward" for KL(reference || released), "reverse" for
            KL(released || reference).

    Returns:
        Arrays of shape (E, T) under keys kl_mc, kl_mc_se and kl_bound.
    """
    batch = released.weights.shape[:-1]

    # The bound matches components by an assignment on the measured direction's costs.
    # In reverse the released components are the rows, so the inverse permutation aligns them.
    if direction == "forward":
        permutation = best_matching(reference, released)
    else:
        broadcast_reference = jax.tree.map(lambda a: jnp.broadcast_to(a, batch + a.shape), reference)
        permutation = np.argsort(best_matching(released, broadcast_reference), axis=-1)
    aligned = permute_components(released, permutation)
    sample_keys = jax.random.split(key, batch[0] * batch[1]).reshape(batch)

    def one(sample_key, q):
        p, q_side = (reference, q) if direction == "forward" else (q, reference)
        estimate, standard_error = kl_monte_carlo(sample_key, p, q_side, n_samples)
        return estimate, standard_error, matched_bound(p, q_side)

    estimate, standard_error, bound = jax.jit(jax.vmap(jax.vmap(one)))(sample_keys, aligned)
    return {"kl_mc": np.asarray(estimate), "kl_mc_se": np.asarray(standard_error), "kl_bound": np.asarray(bound)}


def evaluate_heldout(released: GMMParams, y_test: jax.Array, domain: Domain) -> np.ndarray:
    """Return the mean held-out log-likelihood per release, in data units, shape (E, T).

    Records in mechanism coordinates are x / scale up to a shift, so the
    density in data units is the mechanism density minus sum_j log scale_j.
    """
    log_jacobian = float(np.sum(np.log(domain.scale)))
    mean_log_prob = jax.jit(jax.vmap(jax.vmap(lambda q: jnp.mean(log_prob(y_test, q)))))(released)
    return np.asarray(mean_log_prob) - log_jacobian


def method_metadata(algorithm: str, epsilon: float, delta: float, domain: Domain, config: ReleaseConfig,
                    noise_multiplier: float | None = None, relation: str | None = None,
                    public_prior: bool = False) -> dict:
    """Privacy metadata for one method at one epsilon.

    ``noise_multiplier`` and ``relation`` describe the RDP-accounted
    baselines; ``relation`` defaults to ``config.relation``.
    ``public_prior`` marks DP-EM planned and started from a public prior.
    """
    if algorithm in ("nonprivate", "sklearn"):
        reason = "scikit-learn GaussianMixture" if algorithm == "sklearn" else "non-private EM"
        return {"mode": algorithm, "dp_guarantee": False, "epsilon": None, "delta": None,
                "no_guarantee_reasons": [f"{reason} reads the data directly"], "domain": domain.describe()}
    if algorithm in RDP_ALGORITHMS:
        reasons = ["the domain was derived from the data"] if domain.data_derived else []
        relation = relation or config.relation
        return {"mode": algorithm, "dp_guarantee": not domain.data_derived, "epsilon": epsilon, "delta": delta,
                "accountant": "dp_accounting RdpAccountant", "noise_multiplier": noise_multiplier,
                "neighbouring_relation": relation, "no_guarantee_reasons": reasons, "domain": domain.describe()}
    mode = algorithm if algorithm in ("dp_em", "histogram_em") else "oracle"
    metadata = privacy_metadata(epsilon=epsilon, delta=delta, mode=mode, domain=domain, config=config,
                                public_prior=public_prior)
    if mode == "histogram_em" and config.count_share > 0.0:
        # Each trial picks its grid from its own noisy count, so run_dataset
        # fills in the grid of the trial it publishes.
        metadata["histogram_cells"] = None
    return metadata


def allocation_label(algorithm: str, config: ReleaseConfig) -> str:
    """Return the budget split a method uses, for the results table."""
    if algorithm in ("dp_em", "oracle"):
        return config.allocation
    return "equal" if algorithm == "park_dp_em" else "none"


def run_dataset(prepared: PreparedDataset, methods: DictConfig, release: DictConfig, epsilons, delta: float,
                n_trials: int, seed: int, kl_config: DictConfig, progress=None) -> tuple[list[dict], list[dict]]:
    """Run every method on one dataset; return result rows and first-trial releases."""
    epsilons = [float(e) for e in epsilons]
    mus = jnp.asarray([mu_from_epsilon_delta(e, delta) for e in epsilons], dtype=prepared.y.dtype)
    keys = trial_keys(seed, len(epsilons), n_trials)
    n_samples = int(kl_config.n_samples)
    direction = str(kl_config.get("direction", "forward"))

    rows, releases = [], []
    for method_name, method in methods.items():
        method_start = time.perf_counter()
        algorithm = str(method.algorithm)
        config = release_config(prepared, release, method)
        if algorithm == "histogram_em":
            try:
                check_release_grid(int(prepared.y.shape[1]), config)
            except ValueError as error:
                logger.warning("skipping %s on %s: %s", method_name, prepared.name, error)
                if progress is not None:
                    progress.update(1)
                continue
        budgets = budgets_for(prepared, algorithm, config, method, epsilons, delta, mus)
        trace = {}
        released = run_method(prepared, algorithm, config, keys, budgets, method=method, seed=seed, trace=trace)
        kl_key = jax.random.fold_in(jax.random.key(seed + 1), len(rows))
        metrics = evaluate_kl(kl_key, prepared.reference, released, n_samples, direction)
        if prepared.generating_model is not None:
            # A separate key stream, so this metric leaves the kl_mc draws unchanged.
            generating_key = jax.random.fold_in(jax.random.key(seed + 2), len(rows))
            generating = evaluate_kl(generating_key, prepared.generating_model, released, n_samples, "forward")
        if prepared.y_test is not None:
            heldout = evaluate_heldout(released, prepared.y_test, prepared.domain)
        dp_guarantee = algorithm in PRIVATE_ALGORITHMS and not prepared.domain.data_derived
        relation = None
        if algorithm == "dpsgd":
            relation = "add_or_remove_one" if dpsgd_config(prepared, method).sampling == "poisson" else "replace_one"

        for e, epsilon in enumerate(epsilons):
            for t in range(n_trials):
                rows.append({
                    "dataset": prepared.name, "method": method_name, "algorithm": algorithm,
                    "allocation": allocation_label(algorithm, config),
                    "epsilon": epsilon, "delta": delta, "mu": float(mus[e]),
                    "K": prepared.n_components, "d": int(prepared.y.shape[1]), "N": int(prepared.y.shape[0]),
                    "trial": t, "kl_direction": direction,
                    "kl_mc": float(metrics["kl_mc"][e, t]), "kl_mc_se": float(metrics["kl_mc_se"][e, t]),
                    "kl_bound": float(metrics["kl_bound"][e, t]), "dp_guarantee": dp_guarantee,
                })
                row = rows[-1]
                if algorithm in RDP_ALGORITHMS:
                    row["mu"] = float("nan")
                    row["noise_multiplier"] = float(budgets[e])
                if prepared.generating_model is not None:
                    row["kl_generating"] = float(generating["kl_mc"][e, t])
                    row["kl_generating_se"] = float(generating["kl_mc_se"][e, t])
                if prepared.y_test is not None:
                    row["heldout_loglik"] = float(heldout[e, t])
                if "shares" in trace:
                    for g, group in enumerate(("weights", "means", "covariances")):
                        row[f"share_{group}"] = float(trace["shares"][e, t, g])
                if "histogram_cells" in trace:
                    row["histogram_cells"] = int(trace["histogram_cells"][e, t])

            first = jax.tree.map(lambda a: np.asarray(a[e, 0]), released)
            params = to_data_coordinates(first, prepared.domain)
            privacy = method_metadata(algorithm, epsilon, delta, prepared.domain, config,
                                      float(budgets[e]) if algorithm in RDP_ALGORITHMS else None, relation,
                                      str(method.get("prior", "none")) != "none")
            if algorithm == "histogram_em" and config.count_share > 0.0:
                # The grid the first trial picked from its noisy count.
                privacy["histogram_cells"] = int(trace["histogram_cells"][e, 0])
            releases.append({
                "dataset": prepared.name, "method": method_name, "trial": 0,
                "weights": params.weights.tolist(), "means": params.means.tolist(),
                "covariances": params.covariances.tolist(), "privacy": privacy,
            })
        logger.info("%s on %s: %.1f s", method_name, prepared.name, time.perf_counter() - method_start)
        if progress is not None:
            progress.update(1)
    return rows, releases
