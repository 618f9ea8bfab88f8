"""Hydra entry point for privacy/utility sweeps.

    python -m experiments.run +sweep=eps_grid
    python -m experiments.run +sweep=k_grid
    python -m experiments.run dataset=iris

runs every configured method on every configured dataset over the epsilon
grid, and over the values of ``grid`` when a sweep sets one, and writes
results.csv, the figures of ``experiments.figures`` and releases.json to the
run directory, which it prints. ``dataset=<name>`` replaces the ``datasets``
dict by that one dataset, so a Hydra multirun such as
``-m dataset=iris,wine`` runs one job per dataset.
"""

import copy
import json
import logging
import time
from pathlib import Path

import hydra
import jax
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from dpgmm_jax.validation import check_delta, check_epsilon
from experiments.figures import draw_all_figures, metric_label
from experiments.harness import prepare_dataset, run_dataset
from experiments.tables import summary_table

logger = logging.getLogger(__name__)

# Grid parameters a sweep may vary, and the dataset config keys each one sets.
GRID_PARAMETERS = {
    "n_components": ("n_components", "options.n_components"),
    "n_features": ("options.n_features",),
}


def selected_datasets(config: DictConfig) -> dict:
    """Return the dataset configs to run: the ``dataset`` group selection alone, else ``datasets``."""
    if config.get("dataset") is not None:
        return {str(config.dataset.name): config.dataset}
    return dict(config.datasets)


def selected_methods(config: DictConfig) -> DictConfig:
    """Return the method entries named in ``run_methods``, or every entry when it is unset."""
    names = config.get("run_methods")
    if names is None:
        return config.methods
    missing = [name for name in names if name not in config.methods]
    if missing:
        raise ValueError(f"run_methods names {missing}, which are not in methods; defined: {list(config.methods)}")
    return OmegaConf.create({name: config.methods[name] for name in names})


def methods_for_dataset(methods: DictConfig, dataset_config: DictConfig) -> DictConfig:
    """Merge a dataset's ``method_options`` into the method entries of the same name."""
    options = dataset_config.get("method_options")
    if options is None:
        return methods
    merged = OmegaConf.create(OmegaConf.to_container(methods, resolve=True))
    for name, entry in options.items():
        if name in merged:
            merged[name] = OmegaConf.merge(merged[name], entry)
    return merged


def grid_points(config: DictConfig) -> list[tuple[str | None, object]]:
    """Return (parameter, value) pairs of the sweep grid, or [(None, None)] without one."""
    grid = config.get("grid")
    if grid is None:
        return [(None, None)]
    if grid.parameter not in GRID_PARAMETERS:
        raise ValueError(f"grid.parameter must be one of {sorted(GRID_PARAMETERS)}, got {grid.parameter!r}")
    if not grid["values"]:
        raise ValueError("grid.values is empty; list at least one value")
    return [(str(grid.parameter), value) for value in grid["values"]]


def at_grid_point(dataset_config: DictConfig, parameter: str | None, value) -> DictConfig:
    """Return a copy of a dataset config with the grid parameter set to ``value``."""
    if parameter is None:
        return dataset_config
    updated = copy.deepcopy(dataset_config)
    keys = GRID_PARAMETERS[parameter]
    for key in keys:
        if key.startswith("options.") and "options" not in updated:
            if parameter == "n_features":
                raise ValueError(f"dataset {updated.name!r} has no loader options, so n_features cannot vary; "
                                 "sweep n_features on synthetic data")
            continue
        OmegaConf.update(updated, key, value, merge=False)
    return updated


def dataset_trials(config: DictConfig, dataset_config: DictConfig) -> int:
    """Return a dataset's number of trials: its own ``trials`` entry, else the run's.

    A sweep may give a cheap dataset more trials where a small difference
    between methods needs them, without slowing the others.
    """
    trials = int(dataset_config.get("trials", config.trials))
    if trials < 1:
        raise ValueError(f"trials of dataset {dataset_config.name!r} must be >= 1, got trials={trials}")
    return trials


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
    datasets = selected_datasets(config)
    for dataset_config in datasets.values():
        dataset_trials(config, dataset_config)
    out_dir.mkdir(parents=True, exist_ok=True)

    methods = selected_methods(config)
    points = grid_points(config)

    rows, releases = [], []
    start = time.perf_counter()
    total = len(points) * len(datasets) * len(methods)
    with tqdm(total=total, desc="grid x datasets x methods") as progress:
        for parameter, value in points:
            for dataset_config in datasets.values():
                prepared = prepare_dataset(at_grid_point(dataset_config, parameter, value), dtype)
                n_trials = dataset_trials(config, dataset_config)
                dataset_rows, dataset_releases = run_dataset(
                    prepared, methods_for_dataset(methods, dataset_config), config.release, epsilons, delta, n_trials,
                    int(config.seed), config.kl, progress,
                )
                if parameter is not None:
                    for record in dataset_rows + dataset_releases:
                        record["sweep_parameter"] = parameter
                        record["sweep_value"] = value
                rows += dataset_rows
                releases += dataset_releases

    results = pd.DataFrame(rows)
    results.to_csv(out_dir / "results.csv", index=False)
    if not results.empty:
        # The median KL per dataset, method and epsilon (or grid value), ready for a paper.
        caption = f"Median {metric_label(results, 'kl_mc')} over trials."
        (out_dir / "summary.md").write_text(f"{caption}\n\n{summary_table(results)}\n")
        latex = summary_table(results, style="latex")
        (out_dir / "summary.tex").write_text(f"% {caption} Needs \\usepackage{{booktabs}}.\n{latex}\n")
    with open(out_dir / "releases.json", "w") as handle:
        json.dump(releases, handle, indent=1)
    if config.figures:
        draw_all_figures(results, out_dir)
    logger.info("sweep finished in %.1f s", time.perf_counter() - start)
    return results


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(config: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    run_experiment(config, out_dir)
    print(f"outputs written to {out_dir.resolve()}")


if __name__ == "__main__":
    main()
