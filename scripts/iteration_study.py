"""Study DP-EM's number of iterations and its split of mu^2 over iterations.

Runs the eps_grid datasets for n_iter in {5, 10, 20} (or --iterations) and
a last-iteration share of mu^2 in {uniform, 0.5}, with the given allocation
(closed form unless --allocation says otherwise) and start, and prints a
Markdown table of median KL(non-private || released) per setting.

    python scripts/iteration_study.py [--trials 20] [--start kmeans] [--iterations 3 5 10] [--out study.csv]
    python scripts/iteration_study.py --start histogram_em --datasets synthetic faithful --iterations 1 2 3 \
        --allocation optax --noise-floor-factor 0.5
"""

import argparse
import itertools
import logging
from pathlib import Path

import jax
import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tqdm import tqdm

from dpgmm_jax.accounting import iteration_schedule
from dpgmm_jax.histogram import histogram_grid_usable
from experiments.harness import prepare_dataset, run_dataset
from experiments.run import dataset_trials

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def unique_schedules(settings) -> list[tuple[int, float | None]]:
    """Drop (n_iter, last_share) pairs whose split of mu^2 repeats an earlier one, such as any share with n_iter=1."""
    unique, seen = [], set()
    for n_iter, last_share in settings:
        schedule = tuple(np.round(iteration_schedule(n_iter, last_share), 12))
        if schedule not in seen:
            seen.add(schedule)
            unique.append((n_iter, last_share))
    return unique


def main() -> None:
    # The defaults are the first version's DP-EM settings, under which the README's first study ran.
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--trials", type=int, default=20,
                        help="trials per setting and epsilon, unless the sweep sets a dataset's own (synthetic: 100)")
    parser.add_argument("--out", type=Path, default=Path("iteration_study.csv"), help="CSV of every trial")
    parser.add_argument("--noise-floor-factor", type=float, default=0.0, help="kappa of the noise-aware floor")
    parser.add_argument("--start", default="data_independent",
                        choices=["data_independent", "histogram", "histogram_em", "kmeans"], help="DP-EM start")
    parser.add_argument("--allocation", default="closed_form", choices=["closed_form", "equal", "optax"],
                        help="budget split of each release")
    parser.add_argument("--datasets", nargs="+", default=None,
                        help="eps_grid datasets to run (default: all); the histogram_em start needs d <= 4")
    parser.add_argument("--iterations", type=int, nargs="+", default=[5, 10, 20], help="values of n_iter")
    parser.add_argument("--last-shares", nargs="+", default=["uniform", "0.5"],
                        help="last-iteration shares of mu^2; 'uniform' splits mu^2 evenly")
    parser.add_argument("--start-share", type=float, default=0.1, help="share of mu^2 a private start spends")
    parser.add_argument("--kmeans-iter", type=int, default=3, help="noisy Lloyd steps of the k-means start")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    jax.config.update("jax_enable_x64", True)

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        config = compose("config", overrides=["+sweep=eps_grid"])

    unknown = sorted(set(args.datasets or []) - set(config.datasets))
    if unknown:
        parser.error(f"--datasets {unknown} are not in the eps_grid sweep; choose from {list(config.datasets)}")
    method = OmegaConf.create({"dp_em": {"algorithm": "dp_em", "allocation": args.allocation}})
    last_shares = [None if share == "uniform" else float(share) for share in args.last_shares]
    settings = unique_schedules(itertools.product(args.iterations, last_shares))
    config.trials = args.trials
    prepared = [(prepare_dataset(dataset, "float64"), dataset_trials(config, dataset))
                for name, dataset in config.datasets.items() if args.datasets is None or name in args.datasets]
    for dataset, _ in prepared:
        d = dataset.y.shape[1]
        if args.start == "histogram_em" and not histogram_grid_usable(d, config.release.histogram_cells,
                                                                      dataset.n_components):
            parser.error(f"--start histogram_em needs d <= 4 at {config.release.histogram_cells} cells, but "
                         f"{dataset.name} has d={d}; pass --datasets with the low-dimensional datasets only")

    rows = []
    for n_iter, last_share in tqdm(settings, desc="settings"):
        release = config.release.copy()
        release.n_iter, release.last_share = n_iter, last_share
        release.noise_floor_factor = args.noise_floor_factor
        release.start = args.start
        release.start_share = args.start_share
        release.kmeans_iter = args.kmeans_iter
        for dataset, trials in prepared:
            dataset_rows, _ = run_dataset(dataset, method, release, config.epsilons, config.delta,
                                          trials, config.seed, config.kl)
            for row in dataset_rows:
                row.update(n_iter=n_iter, last_share="uniform" if last_share is None else last_share,
                           start=args.start, start_share=args.start_share,
                           noise_floor_factor=args.noise_floor_factor)
            rows += dataset_rows

    results = pd.DataFrame(rows)
    results.to_csv(args.out, index=False)
    table = results.groupby(["dataset", "n_iter", "last_share", "epsilon"]).kl_mc.median().unstack()
    print("Median KL(non-private || released) per setting and epsilon:")
    print(table.map(lambda value: f"{value:.4g}").to_markdown())


if __name__ == "__main__":
    main()
