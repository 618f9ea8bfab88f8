"""Hydra entry point for privacy/utility sweeps.

    python -m experiments.run +sweep=eps_grid

runs every configured method on every configured dataset over the epsilon
grid and writes results.csv, kl_vs_epsilon.png and .pdf and releases.json to
the run directory, which it prints.
"""

import json
import logging
import time
from pathlib import Path

import hydra
import jax
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from tqdm import tqdm

from dpgmm_jax.validation import check_delta, check_epsilon
from experiments.figures import plot_kl_vs_epsilon
from experiments.harness import prepare_dataset, run_dataset

logger = logging.getLogger(__name__)


def run_experiment(config: DictConfig, out_dir: Path) -> pd.DataFrame:
    """Run the configured sweep and write its outputs to ``out_dir``."""
    if config.precision == "float64":
        jax.config.update("jax_enable_x64", True)
    elif config.precision != "float32":
        raise ValueError(f"precision must be float32 or float64, got precision={config.precision!r}")
    dtype = config.precision

    epsilons = [check_epsilon(e) for e in config.epsilons]
    delta = check_delta(config.delta)
    if int(config.trials) < 1:
        raise ValueError(f"trials must be >= 1, got trials={config.trials}")
    out_dir.mkdir(parents=True, exist_ok=True)

    rows, releases = [], []
    start = time.perf_counter()
    with tqdm(total=len(config.datasets) * len(config.methods), desc="methods x datasets") as progress:
        for dataset_config in config.datasets.values():
            prepared = prepare_dataset(dataset_config, dtype)
            dataset_rows, dataset_releases = run_dataset(
                prepared, config.methods, config.release, epsilons, delta, int(config.trials),
                int(config.seed), config.kl, progress,
            )
            rows += dataset_rows
            releases += dataset_releases

    results = pd.DataFrame(rows)
    results.to_csv(out_dir / "results.csv", index=False)
    with open(out_dir / "releases.json", "w") as handle:
        json.dump(releases, handle, indent=1)
    if config.figures:
        plot_kl_vs_epsilon(results, out_dir)
    logger.info("sweep finished in %.1f s", time.perf_counter() - start)
    return results


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(config: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    run_experiment(config, out_dir)
    print(f"outputs written to {out_dir.resolve()}")


if __name__ == "__main__":
    main()
