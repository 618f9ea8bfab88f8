"""Run release methods on one dataset over a grid of epsilons and trials.

Each method becomes one compiled function of (keys, mus) that vmaps over
trials and epsilons, so a sweep pays one compilation per method and dataset
and loops over neither in Python. KL divergences to the non-private
reference fit are evaluated the same way.
"""

import logging
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import DictConfig, OmegaConf

from dpgmm_jax.accounting import mu_from_epsilon_delta
from dpgmm_jax.algorithms import ReleaseConfig, data_independent_init, dp_em, oracle_release
from dpgmm_jax.data import Dataset, load_dataset
from dpgmm_jax.domain import Domain, to_data_coordinates, to_mechanism_coordinates
from dpgmm_jax.em import fit_em
from dpgmm_jax.kl import best_matching, kl_monte_carlo, matched_bound, permute_components
from dpgmm_jax.release import nonprivate_fit, privacy_metadata
from dpgmm_jax.types import GMMParams

logger = logging.getLogger(__name__)

ALGORITHMS = ("dp_em", "oracle", "nonprivate")


class PreparedDataset(NamedTuple):
    """A dataset mapped into its public domain, with its non-private reference fit."""

    name: str
    dataset: Dataset
    domain: Domain
    y: jax.Array
    n_components: int
    reference: GMMParams


def domain_from_config(config: DictConfig) -> Domain:
    """Build the declared public domain: ``{centre, radius}`` or ``{lower, upper}``."""
    if "radius" in config:
        return Domain.from_ball(list(config.centre), config.radius)
    if "lower" in config:
        return Domain.from_bounds(list(config.lower), list(config.upper))
    raise ValueError(
        f"a dataset config must declare its public domain as centre and radius or as "
        f"lower and upper bounds, got domain keys {sorted(config)}"
    )


def prepare_dataset(config: DictConfig, dtype) -> PreparedDataset:
    """Load a dataset, map it into its declared domain and fit the reference."""
    options = OmegaConf.to_container(config.options, resolve=True) if "options" in config else {}
    dataset = load_dataset(config.name, **options)
    domain = domain_from_config(config.domain)

    y, _ = to_mechanism_coordinates(dataset.x, domain)
    y = np.asarray(y, dtype=dtype)
    reference = nonprivate_fit(y, config.n_components)
    logger.info("dataset %s: N=%d, d=%d, K=%d", config.name, y.shape[0], y.shape[1], config.n_components)
    return PreparedDataset(config.name, dataset, domain, jnp.asarray(y), int(config.n_components), reference)


def release_config(prepared: PreparedDataset, release: DictConfig, method: DictConfig) -> ReleaseConfig:
    """Combine the shared release settings with one method's own settings.

    A method entry may override any shared setting by name, for example
    ``{algorithm: dp_em, allocation: closed_form, noise_floor_factor: 0.5}``.
    """
    release = OmegaConf.merge(release, {key: value for key, value in method.items() if key in release})
    return ReleaseConfig(
        n_components=prepared.n_components,
        n_iter=int(release.n_iter),
        last_share=None if release.last_share is None else float(release.last_share),
        allocation=str(method.get("allocation", "equal")),
        min_share=float(release.min_share),
        relation=str(release.relation),
        count_floor=float(release.count_floor),
        eigenvalue_floor=float(release.eigenvalue_floor),
        noise_floor_factor=float(release.noise_floor_factor),
    ).validate()


def trial_keys(seed: int, n_epsilons: int, n_trials: int) -> jax.Array:
    """Return keys of shape (n_epsilons, n_trials); trial t at epsilon e gets its own key."""
    base = jax.random.key(seed)
    return jax.vmap(lambda e: jax.vmap(lambda t: jax.random.fold_in(jax.random.fold_in(base, e), t))(
        jnp.arange(n_trials)))(jnp.arange(n_epsilons))


def run_method(prepared: PreparedDataset, algorithm: str, config: ReleaseConfig, keys: jax.Array, mus: jax.Array,
               nonprivate_max_iter: int = 300) -> GMMParams:
    """Release with one method for every (epsilon, trial) pair.

    Args:
        prepared: the dataset.
        algorithm: "dp_em", "oracle" or "nonprivate".
        config: static release settings.
        keys: shape (E, T).
        mus: shape (E,), total GDP budget per epsilon.
        nonprivate_max_iter: EM iterations for the non-private method.

    Returns:
        Released parameters in mechanism coordinates, batched as (E, T, ...).
    """
    y, radius = prepared.y, prepared.domain.radius

    if algorithm == "dp_em":
        def single(key, mu):
            return dp_em(key, y, mu, radius, config).params
    elif algorithm == "oracle":
        def single(key, mu):
            return oracle_release(key, y, prepared.reference, mu, radius, config).params
    elif algorithm == "nonprivate":
        # Non-private EM from the same data-independent start as DP-EM: it
        # shows what the start alone costs, without noise.
        def single(key, mu):
            start = data_independent_init(key, config.n_components, y.shape[1], radius, y.dtype)
            return fit_em(y, start.params, max_iter=nonprivate_max_iter, tol=1e-6).params
    else:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got algorithm={algorithm!r}")

    if algorithm == "nonprivate":
        # The fit does not depend on epsilon: run the trials once and repeat them.
        fits = jax.jit(jax.vmap(single, in_axes=(0, None)))(keys[0], mus[0])
        return jax.tree.map(lambda a: jnp.broadcast_to(a, keys.shape + a.shape[1:]), fits)

    batched = jax.jit(jax.vmap(jax.vmap(single, in_axes=(0, None)), in_axes=(0, 0)))
    return batched(keys, mus)


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
    # The bound needs components matched; the best matching solves an
    # assignment problem on the forward costs.
    # NOTE: for direction="reverse" this matching is valid but may not be the tightest one.
    permutation = best_matching(reference, released)
    aligned = permute_components(released, permutation)
    sample_keys = jax.random.split(key, batch[0] * batch[1]).reshape(batch)

    def one(sample_key, q):
        p, q_side = (reference, q) if direction == "forward" else (q, reference)
        estimate, standard_error = kl_monte_carlo(sample_key, p, q_side, n_samples)
        return estimate, standard_error, matched_bound(p, q_side)

    estimate, standard_error, bound = jax.jit(jax.vmap(jax.vmap(one)))(sample_keys, aligned)
    return {"kl_mc": np.asarray(estimate), "kl_mc_se": np.asarray(standard_error), "kl_bound": np.asarray(bound)}


def method_metadata(algorithm: str, epsilon: float, delta: float, domain: Domain, config: ReleaseConfig) -> dict:
    """Privacy metadata for one method at one epsilon."""
    if algorithm == "nonprivate":
        return {"mode": "nonprivate", "dp_guarantee": False, "epsilon": None, "delta": None,
                "no_guarantee_reasons": ["non-private EM reads the data directly"], "domain": domain.describe()}
    mode = "dp_em" if algorithm == "dp_em" else "oracle"
    return privacy_metadata(epsilon=epsilon, delta=delta, mode=mode, domain=domain, config=config)


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
        algorithm = str(method.algorithm)
        config = release_config(prepared, release, method)
        released = run_method(prepared, algorithm, config, keys, mus)
        kl_key = jax.random.fold_in(jax.random.key(seed + 1), len(rows))
        metrics = evaluate_kl(kl_key, prepared.reference, released, n_samples, direction)
        dp_guarantee = algorithm == "dp_em" and not prepared.domain.data_derived

        for e, epsilon in enumerate(epsilons):
            for t in range(n_trials):
                rows.append({
                    "dataset": prepared.name, "method": method_name, "algorithm": algorithm,
                    "allocation": config.allocation if algorithm != "nonprivate" else "none",
                    "epsilon": epsilon, "delta": delta, "mu": float(mus[e]),
                    "K": prepared.n_components, "d": int(prepared.y.shape[1]), "N": int(prepared.y.shape[0]),
                    "trial": t, "kl_direction": direction,
                    "kl_mc": float(metrics["kl_mc"][e, t]), "kl_mc_se": float(metrics["kl_mc_se"][e, t]),
                    "kl_bound": float(metrics["kl_bound"][e, t]), "dp_guarantee": dp_guarantee,
                })

            first = jax.tree.map(lambda a: np.asarray(a[e, 0]), released)
            params = to_data_coordinates(first, prepared.domain)
            releases.append({
                "dataset": prepared.name, "method": method_name, "trial": 0,
                "weights": params.weights.tolist(), "means": params.means.tolist(),
                "covariances": params.covariances.tolist(),
                "privacy": method_metadata(algorithm, epsilon, delta, prepared.domain, config),
            })
        if progress is not None:
            progress.update(1)
    return rows, releases
