"""Measure how far non-private EM from DP-EM's data-independent start gets in T iterations.

Runs EM without noise from ``data_independent_init`` on one eps_grid dataset
for several iteration counts and prints the median and interquartile range
of KL(non-private reference fit || result) over the trials. It separates
what the start costs from what the noise costs.

    python scripts/start_convergence.py [--dataset synthetic] [--trials 20] [--iterations 5 10 20 50 100 300]
"""

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from hydra import compose, initialize_config_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpgmm_jax.algorithms import data_independent_init  # noqa: E402
from dpgmm_jax.em import fit_em  # noqa: E402
from experiments.harness import evaluate_kl, prepare_dataset  # noqa: E402

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synthetic", help="a dataset of the eps_grid sweep")
    parser.add_argument("--trials", type=int, default=20, help="starts per iteration count")
    parser.add_argument("--iterations", type=int, nargs="+", default=[5, 10, 20, 50, 100, 300])
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        config = compose("config", overrides=["+sweep=eps_grid"])
    if args.dataset not in config.datasets:
        parser.error(f"dataset {args.dataset!r} is not in the eps_grid sweep; choose one of {list(config.datasets)}")
    prepared = prepare_dataset(config.datasets[args.dataset], "float64")
    n_features = prepared.y.shape[1]
    keys = jax.random.split(jax.random.key(0), args.trials)

    print("| iterations | median KL | IQR |")
    print("|--:|--:|:--|")
    for n_iter in args.iterations:
        def fit(key, n_iter=n_iter):
            start = data_independent_init(key, prepared.n_components, n_features, prepared.domain.radius, jnp.float64)
            return fit_em(prepared.y, start.params, max_iter=n_iter, tol=0.0).params

        fits = jax.tree.map(lambda a: a[None], jax.jit(jax.vmap(fit))(keys))
        kl = evaluate_kl(jax.random.key(1), prepared.reference, fits, 5000)["kl_mc"]
        low, high = np.percentile(kl, [25, 75])
        print(f"| {n_iter} | {np.median(kl):.4g} | {low:.4g} to {high:.4g} |")


if __name__ == "__main__":
    main()
