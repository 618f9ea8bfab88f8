"""Measure how far non-private EM from DP-EM's start gets in T iterations.

Runs EM without noise from DP-EM's start on one eps_grid dataset for several
iteration counts and prints the median and interquartile range of
KL(non-private reference fit || result) over the trials. It separates what
the start costs from what the noise costs. The start is the data-independent
one, or the private k-means start with ``--start-share`` of mu^2 at
``--epsilon``. ``--oracle-shares`` also prints the oracle release (one
release planned from the reference fit, not private) with the given shares
of mu^2. It estimates the KL of a last DP-EM iteration with that share once
EM has converged.

    python scripts/start_convergence.py [--dataset synthetic] [--trials 20] [--iterations 5 10 20 50 100 300]
    python scripts/start_convergence.py --start kmeans --epsilon 10 --oracle-shares 1 0.45
"""

import argparse
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from hydra import compose, initialize_config_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpgmm_jax.accounting import mu_from_epsilon_delta  # noqa: E402
from dpgmm_jax.algorithms import ReleaseConfig, data_independent_init, kmeans_start, oracle_release  # noqa: E402
from dpgmm_jax.em import fit_em  # noqa: E402
from experiments.harness import evaluate_kl, prepare_dataset  # noqa: E402

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def kl_row(label, prepared, fits) -> str:
    """Return a table row with the median and interquartile range of KL over the trials."""
    fits = jax.tree.map(lambda a: a[None], fits)
    kl = evaluate_kl(jax.random.key(1), prepared.reference, fits, 5000)["kl_mc"]
    low, high = np.percentile(kl, [25, 75])
    return f"| {label} | {np.median(kl):.4g} | {low:.4g} to {high:.4g} |"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synthetic", help="a dataset of the eps_grid sweep")
    parser.add_argument("--trials", type=int, default=20, help="starts per iteration count")
    parser.add_argument("--iterations", type=int, nargs="+", default=[5, 10, 20, 50, 100, 300])
    parser.add_argument("--start", choices=["data_independent", "kmeans"], default="data_independent")
    parser.add_argument("--epsilon", type=float, default=10.0,
                        help="budget (delta 1e-5) of the k-means start and the oracle releases")
    parser.add_argument("--start-share", type=float, default=0.1, help="share of mu^2 the k-means start spends")
    parser.add_argument("--oracle-shares", type=float, nargs="*", default=[],
                        help="also print the oracle release with these shares of mu^2")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        config = compose("config", overrides=["+sweep=eps_grid"])
    if args.dataset not in config.datasets:
        parser.error(f"dataset {args.dataset!r} is not in the eps_grid sweep; choose one of {list(config.datasets)}")
    if not 0.0 < args.start_share < 1.0:
        parser.error(f"--start-share must be in (0, 1), got {args.start_share}")
    if any(not 0.0 < share <= 1.0 for share in args.oracle_shares):
        parser.error(f"--oracle-shares must be in (0, 1], got {args.oracle_shares}")
    prepared = prepare_dataset(config.datasets[args.dataset], "float64")
    y, radius = prepared.y, prepared.domain.radius
    n_features = y.shape[1]
    keys = jax.random.split(jax.random.key(0), args.trials)
    mu = mu_from_epsilon_delta(args.epsilon, 1e-5)
    # The settings of the README study: closed form, no noise-aware floor.
    release = ReleaseConfig(
        n_components=prepared.n_components, allocation="closed_form", noise_floor_factor=0.0
    ).validate()

    def start(key):
        if args.start == "kmeans":
            return kmeans_start(key, y, math.sqrt(args.start_share) * mu, radius, release).params
        return data_independent_init(key, prepared.n_components, n_features, radius, jnp.float64).params

    starts = jax.jit(jax.vmap(start))(keys)
    print(f"non-private EM from the {args.start} start on {args.dataset}"
          + (f" (epsilon {args.epsilon:g}, start share {args.start_share:g})" if args.start == "kmeans" else ""))
    print("| iterations | median KL | IQR |")
    print("|--:|--:|:--|")
    for n_iter in args.iterations:
        fits = jax.jit(jax.vmap(lambda init, n_iter=n_iter: fit_em(y, init, max_iter=n_iter, tol=0.0).params))(starts)
        print(kl_row(n_iter, prepared, fits))

    if args.oracle_shares:
        print(f"\noracle release (not private) at epsilon {args.epsilon:g}")
        print("| share of mu^2 | median KL | IQR |")
        print("|--:|--:|:--|")
    for share in args.oracle_shares:
        def oracle(key, share=share):
            return oracle_release(key, y, prepared.reference, math.sqrt(share) * mu, radius, release).params

        print(kl_row(f"{share:g}", prepared, jax.jit(jax.vmap(oracle))(keys)))


if __name__ == "__main__":
    main()
