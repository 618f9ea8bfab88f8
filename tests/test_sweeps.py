"""Tiny versions of every sweep: K grid, dimension grid, baselines, real data, multirun, figures."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dpgmm_jax.data import load_dataset
from experiments.harness import domain_from_config

REPOSITORY = Path(__file__).resolve().parents[1]
TINY = ("trials=2", "release.n_iter=3", "kl.n_samples=300")
REAL_DATASETS = ("iris", "breast_cancer", "diamonds", "flights", "penguins", "quakes")


def run_app(out_dir: Path, *overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "experiments.run", *(["-m"] if multirun else []), *overrides]
    command.append(f"hydra.{'sweep' if multirun else 'run'}.dir={out_dir}")
    completed = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=str(REPOSITORY / "conf"), version_base=None):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("sweep, parameter", [("k_grid", "n_components"), ("dim_grid", "n_features")])
def test_grid_sweeps_compose(sweep, parameter):
    config = compose_config(f"+sweep={sweep}")
    assert config.grid.parameter == parameter
    assert list(config.epsilons) == [1.0]
    assert min(config.grid["values"]) == 2
    assert max(config.grid["values"]) in (16, 32)
    assert {"park_dp_em", "dpsgd", "sklearn"} <= set(config.run_methods)


def test_baselines_sweep_keeps_main_job_grid():
    main = compose_config("+sweep=eps_grid")
    baselines = compose_config("+sweep=baselines")
    assert list(baselines.datasets) == list(main.datasets)
    assert list(baselines.epsilons) == list(main.epsilons)
    assert baselines.trials == main.trials
    assert "park_dp_em" not in main.run_methods
    assert "park_dp_em" not in main.methods


def test_histogram_cells_sweep_composes():
    config = compose_config("+sweep=histogram_cells")
    dimensions = {name: dataset.options.n_features for name, dataset in config.datasets.items() if "options" in dataset}
    assert dimensions == {"synthetic": 2, "synthetic_2000": 2, "box_d3": 3, "box_d3_2000": 3, "box_d4": 4}
    assert config.datasets.synthetic_2000.options.n_samples == 2000
    assert {"faithful", "iris"} <= set(config.datasets)
    cells = [config.methods[name].histogram_cells for name in config.run_methods if name != "dp_em_closed_form"]
    assert cells == sorted(cells)
    assert cells[0] == 16
    assert cells[-1] == 4096
    assert all(config.methods[name].algorithm == "histogram_em" for name in config.run_methods[1:])
    assert config.figures is True


def test_dataset_group_selects_one_dataset():
    config = compose_config("dataset=iris")
    assert config.dataset.name == "iris"


def test_histogram_real_sweep_composes():
    config = compose_config("+sweep=histogram_real")
    assert list(config.datasets) == ["penguins", "quakes", "diamonds_d3", "diamonds_d4"]
    for entry in config.datasets.values():
        options = OmegaConf.to_container(entry.options) if "options" in entry else {}
        assert load_dataset(entry.name, **options).x.shape[1] in (3, 4)
    for name in ("diamonds_d3", "diamonds_d4"):
        entry = config.datasets[name]
        assert len(entry.domain.lower) == len(entry.domain.upper) == len(entry.options.columns)
    assert config.methods.counted.count_share == 0.05
    assert list(config.run_methods) == ["dp_em_closed_form", "histogram_em", "counted"]


def test_histogram_real_records_grids(tmp_path):
    run_app(tmp_path, "+sweep=histogram_real", "dataset=quakes", "epsilons=[0.1,10.0]",
            "run_methods=[histogram_em,counted]", *TINY)
    results = pd.read_csv(tmp_path / "results.csv")
    assert set(results.dataset) == {"quakes"}
    # The fixed grid is 4 bins per axis in d = 4, and the counted grid grows with mu.
    assert (results[results.method == "histogram_em"].histogram_cells == 4**4).all()
    counted = results[results.method == "counted"].groupby("epsilon").histogram_cells.min()
    assert counted[10.0] > counted[0.1] >= 4**4
    releases = json.loads((tmp_path / "releases.json").read_text())
    for release in releases:
        cells = release["privacy"]["histogram_cells"]
        assert isinstance(cells, int) and round(cells ** 0.25) ** 4 == cells


@pytest.mark.parametrize("name", REAL_DATASETS)
def test_real_dataset_domain_is_declared_and_fits(name):
    config = OmegaConf.load(REPOSITORY / "conf" / "dataset" / f"{name}.yaml")
    dataset = load_dataset(config.name)
    domain = domain_from_config(config.domain, dataset.x.shape[1])
    assert domain.n_features == dataset.x.shape[1]
    assert not domain.data_derived
    assert np.all(np.isfinite(dataset.x))
    # A declared domain may project a few outliers, but it must hold most records.
    inside = np.all((dataset.x >= domain.centre - domain.scale) & (dataset.x <= domain.centre + domain.scale), axis=1)
    assert inside.mean() > 0.99, f"{name}: only {inside.mean():.3f} of records inside the declared domain"


def test_flights_keeps_every_complete_row():
    dataset = load_dataset("flights")
    assert dataset.x.shape == (327_346, 8)


def test_penguins_keep_measured_birds():
    dataset = load_dataset("penguins")
    assert dataset.x.shape == (342, 4)
    assert np.bincount(dataset.labels).tolist() == [151, 68, 123]


def test_diamonds_columns_select_and_order():
    full = load_dataset("diamonds")
    subset = load_dataset("diamonds", columns=["table", "carat"])
    assert subset.feature_names == ("table", "carat")
    np.testing.assert_array_equal(subset.x, full.x[:, [2, 0]])
    bad_columns = [(["carat", "colour"], r"unknown diamonds columns \['colour'\]"),
                   (["carat", "carat"], r"columns \['carat'\] appear more than once"),
                   ([], "columns is empty"),
                   ("carat", "must be a list of column names")]
    for bad, message in bad_columns:
        with pytest.raises(ValueError, match=message):
            load_dataset("diamonds", columns=bad)


def test_k_grid_tiny(tmp_path):
    run_app(tmp_path, "+sweep=k_grid", "grid.values=[2,3]", "datasets.synthetic.options.n_samples=1000",
            "run_methods=[dp_em_equal,park_dp_em]", *TINY)
    results = pd.read_csv(tmp_path / "results.csv")
    assert set(results.sweep_parameter) == {"n_components"}
    assert set(results.sweep_value) == {2, 3}
    assert (results.K == results.sweep_value).all()
    assert len(results) == 2 * 2 * 2
    assert results[["kl_mc", "kl_generating"]].notna().all().all()
    assert results[results.algorithm == "park_dp_em"].noise_multiplier.gt(0).all()
    assert results.dp_guarantee.all()
    for stem in ("kl_vs_n_components", "kl_generating_vs_n_components"):
        assert (tmp_path / f"{stem}.png").stat().st_size > 1000


def test_dim_grid_tiny_and_figures_redraw(tmp_path):
    run_app(tmp_path, "+sweep=dim_grid", "grid.values=[3]", "datasets.synthetic.options.n_samples=1000",
            "run_methods=[dpsgd,sklearn]", "methods.dpsgd.epochs=1", "methods.dpsgd.batch_size=200", *TINY)
    results = pd.read_csv(tmp_path / "results.csv")
    assert set(results.d) == {3}
    assert set(results.sweep_value) == {3}
    by_method = results.groupby("method").dp_guarantee.all()
    assert by_method["dpsgd"]
    assert not by_method["sklearn"]
    assert results.kl_generating.notna().all()
    releases = json.loads((tmp_path / "releases.json").read_text())
    privacy = {release["method"]: release["privacy"] for release in releases}
    # dim_grid switches DP-SGD to fixed-size batches, which are accounted under replace-one.
    assert privacy["dpsgd"]["neighbouring_relation"] == "replace_one"
    assert privacy["dpsgd"]["noise_multiplier"] > 0

    for path in tmp_path.glob("*.png"):
        path.unlink()
    command = [sys.executable, "scripts/make_figures.py", str(tmp_path)]
    completed = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert (tmp_path / "kl_vs_n_features.png").stat().st_size > 1000


def test_multirun_over_datasets_with_joblib(tmp_path):
    run_app(tmp_path, "dataset=iris,faithful", "hydra/launcher=joblib", "+baselines@methods=all",
            "run_methods=[park_dp_em]", *TINY, multirun=True)
    frames = [pd.read_csv(path) for path in sorted(tmp_path.glob("*/results.csv"))]
    assert len(frames) == 2
    datasets = {frame.dataset.iloc[0] for frame in frames}
    assert datasets == {"iris", "faithful"}
    iris = next(frame for frame in frames if frame.dataset.iloc[0] == "iris")
    # iris sets 30 of its 150 records aside, so the fit sees 120 and reports a held-out likelihood.
    assert set(iris.N) == {120}
    assert iris.heldout_loglik.notna().all()
    assert (tmp_path / "0" / "heldout_loglik_vs_epsilon.png").exists() or \
        (tmp_path / "1" / "heldout_loglik_vs_epsilon.png").exists()
