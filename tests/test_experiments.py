"""The Hydra app end to end, and what the main job's results must show."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments.run import dataset_trials

REPOSITORY = Path(__file__).resolve().parents[1]
REQUIRED_COLUMNS = {"dataset", "method", "epsilon", "delta", "K", "d", "trial", "kl_mc", "kl_mc_se", "kl_bound"}


def run_app(out_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "experiments.run", *overrides, f"hydra.run.dir={out_dir}"]
    completed = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def test_eps_grid_sweep_composes():
    with initialize_config_dir(config_dir=str(REPOSITORY / "conf"), version_base=None):
        config = compose("config", overrides=["+sweep=eps_grid"])
    assert list(config.datasets) == ["synthetic", "faithful", "wine"]
    assert list(config.epsilons) == [0.1, 0.3, 1.0, 3.0, 10.0]
    assert config.trials >= 20
    for dataset in config.datasets.values():
        assert "lower" in dataset.domain or "radius" in dataset.domain
    assert dataset_trials(config, config.datasets.synthetic) == 100
    assert dataset_trials(config, config.datasets.wine) == config.trials


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_kl_bound_uses_tightest_matching(direction):
    import itertools

    import jax
    import jax.numpy as jnp
    import numpy as np

    from dpgmm_jax.kl import matched_bound, permute_components
    from dpgmm_jax.types import GMMParams
    from experiments.harness import evaluate_kl

    rng = np.random.default_rng(4)

    def mixture(batch):
        factors = rng.normal(size=batch + (3, 2, 2))
        return GMMParams(jnp.asarray(rng.dirichlet(np.ones(3), size=batch)),
                         jnp.asarray(rng.normal(scale=2.0, size=batch + (3, 2))),
                         jnp.asarray(factors @ np.swapaxes(factors, -1, -2) + 0.1 * np.eye(2)))

    reference = mixture(())
    released = mixture((2, 3))
    metrics = evaluate_kl(jax.random.key(0), reference, released, 200, direction)

    for e, t in itertools.product(range(2), range(3)):
        q = jax.tree.map(lambda a: a[e, t], released)
        bounds = []
        for order in itertools.permutations(range(3)):
            aligned = permute_components(q, np.asarray(order))
            pair = (reference, aligned) if direction == "forward" else (aligned, reference)
            bounds.append(float(matched_bound(*pair)))
        assert metrics["kl_bound"][e, t] == pytest.approx(min(bounds), rel=1e-9)


def test_method_entry_reaches_every_release_field():
    from types import SimpleNamespace

    from dpgmm_jax.algorithms import ReleaseConfig
    from experiments.harness import release_config

    with initialize_config_dir(config_dir=str(REPOSITORY / "conf"), version_base=None):
        config = compose("config")
    overrides = {"histogram_threshold": 3.0, "histogram_cells": 64, "histogram_suppression": 2, "min_share": 0.1,
                 "noise_floor_factor": 0.25, "n_iter": 3, "start": "kmeans", "kmeans_iter": 2, "pilot_fraction": 0.2,
                 "chunk_size": 128, "count_floor": 2.0, "solver_draws": 8}
    prepared = SimpleNamespace(n_components=3, y=np.zeros((10, 2)))
    method = OmegaConf.create({"algorithm": "dp_em", "allocation": "optax", **overrides})
    release = release_config(prepared, config.release, method)
    assert isinstance(release, ReleaseConfig)
    assert release.allocation == "optax"
    for name, value in overrides.items():
        assert getattr(release, name) == value, name

    # The shared defaults resolve for d = 2: the histogram_em start, one iteration, the solver.
    shared = release_config(prepared, config.release, OmegaConf.create({"algorithm": "dp_em"}))
    assert shared.histogram_threshold == config.release.histogram_threshold
    assert (shared.start, shared.n_iter, shared.allocation) == ("histogram_em", 1, "optax")

    # A baseline keeps 10 iterations whatever DP-EM's start would be.
    park = release_config(prepared, config.release, OmegaConf.create({"algorithm": "park_dp_em"}))
    assert park.n_iter == 10

    # Where neither the method nor the shared block names a split, it is the equal split.
    without = OmegaConf.create({key: value for key, value in config.release.items() if key != "allocation"})
    assert release_config(prepared, without, OmegaConf.create({"algorithm": "dp_em"})).allocation == "equal"


def test_dataset_trials_rejects_non_positive():
    config = OmegaConf.create({"trials": 20})
    with pytest.raises(ValueError, match="trials of dataset 'wine' must be >= 1, got trials=0"):
        dataset_trials(config, OmegaConf.create({"name": "wine", "trials": 0}))


def test_tiny_run_writes_every_output(tmp_path):
    completed = run_app(tmp_path, "datasets.synthetic.options.n_samples=2000", "trials=2", "epsilons=[0.3,3.0]",
                        "kl.n_samples=500",
                        "run_methods=[dp_em,dp_em_closed_form,dp_em_equal,histogram_em,oracle,nonprivate]")
    assert str(tmp_path.resolve()) in completed.stdout

    results = pd.read_csv(tmp_path / "results.csv")
    assert REQUIRED_COLUMNS <= set(results.columns)
    assert set(results["dataset"]) == {"synthetic"}
    assert len(results) == results["method"].nunique() * 2 * 2
    assert results[["kl_mc", "kl_mc_se", "kl_bound"]].notna().all().all()
    for name in ("kl_vs_epsilon.png", "kl_vs_epsilon.pdf"):
        assert (tmp_path / name).stat().st_size > 1000

    summary = (tmp_path / "summary.md").read_text().splitlines()
    assert summary[0] == "Median KL(non-private || released) over trials."
    assert summary[2] == "| dataset | method | eps 0.3 | eps 3 | DP |"
    assert len(summary) == 4 + results["method"].nunique()
    latex = (tmp_path / "summary.tex").read_text().splitlines()
    assert latex[0] == "% Median KL(non-private || released) over trials. Needs \\usepackage{booktabs}."
    assert latex[-1] == "\\end{tabular}"

    releases = json.loads((tmp_path / "releases.json").read_text())
    assert all(release["trial"] == 0 for release in releases)
    by_method = {release["method"]: release["privacy"] for release in releases}
    assert by_method["dp_em_closed_form"]["dp_guarantee"] is True
    assert by_method["oracle"]["dp_guarantee"] is False
    assert by_method["nonprivate"]["dp_guarantee"] is False
    for key in ("epsilon", "delta", "mu", "neighbouring_relation", "mode", "domain", "versions"):
        assert key in by_method["dp_em_closed_form"]


def test_missing_domain_is_rejected(tmp_path):
    command = [sys.executable, "-m", "experiments.run", "~datasets.synthetic.domain", f"hydra.run.dir={tmp_path}"]
    completed = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
    assert completed.returncode != 0


@pytest.fixture(scope="module")
def main_job(tmp_path_factory) -> pd.DataFrame:
    out_dir = tmp_path_factory.mktemp("eps_grid")
    run_app(out_dir, "+sweep=eps_grid")
    return pd.read_csv(out_dir / "results.csv")


def median_kl(results, dataset, method, epsilon):
    rows = results[(results.dataset == dataset) & (results.method == method) & (results.epsilon == epsilon)]
    assert len(rows) >= 20
    return rows.kl_mc.median()


@pytest.mark.slow
def test_main_job_grid_is_complete(main_job):
    assert set(main_job.epsilon) == {0.1, 0.3, 1.0, 3.0, 10.0}
    assert set(main_job.delta) == {1e-5}
    counts = main_job.groupby(["dataset", "method", "epsilon"]).size()
    assert counts.min() >= 20


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["synthetic", "faithful", "wine"])
def test_dp_em_improves_tenfold_from_low_to_high_epsilon(main_job, dataset):
    # The first version's DP-EM: data-independent start, 10 iterations, no
    # noise-aware floor. The default drops less on wine; see the next test.
    low = median_kl(main_job, dataset, "dp_em_closed_form", 0.1)
    high = median_kl(main_job, dataset, "dp_em_closed_form", 10.0)
    assert high * 10 <= low, f"{dataset}: median KL {low:.4g} at epsilon 0.1, {high:.4g} at 10"


@pytest.mark.slow
@pytest.mark.parametrize("dataset, factor", [("synthetic", 10.0), ("faithful", 10.0), ("wine", 3.0)])
def test_default_dp_em_improves_with_epsilon(main_job, dataset, factor):
    # The main job measured 324x on synthetic, 16x on faithful and 3.8x on
    # wine. On wine the floor caps the KL at epsilon 0.1 near 32, where the
    # first version's DP-EM is at 5,470, so the ratio is smaller.
    low = median_kl(main_job, dataset, "dp_em", 0.1)
    high = median_kl(main_job, dataset, "dp_em", 10.0)
    assert high * factor <= low, f"{dataset}: median KL {low:.4g} at epsilon 0.1, {high:.4g} at 10"


@pytest.mark.slow
@pytest.mark.parametrize("epsilon", [0.1, 0.3, 1.0, 3.0, 10.0])
@pytest.mark.parametrize("dataset", ["synthetic", "faithful", "wine"])
def test_default_dp_em_at_or_below_equal_split(main_job, dataset, epsilon):
    # The default split against the equal split with the same start,
    # iterations and floor, in every cell of the main job.
    default = median_kl(main_job, dataset, "dp_em", epsilon)
    equal = median_kl(main_job, dataset, "dp_em_default_equal", epsilon)
    assert default <= equal, f"{dataset}, epsilon {epsilon}: dp_em {default:.5g}, equal split {equal:.5g}"


@pytest.mark.slow
@pytest.mark.parametrize("epsilon", [3.0, 10.0])
def test_default_dp_em_near_oracle_on_synthetic(main_job, epsilon):
    # Within 3x of the oracle; the main job measured 1.6x and 1.2x, and the
    # first version's DP-EM is at 47x and 73x.
    default = median_kl(main_job, "synthetic", "dp_em", epsilon)
    oracle = median_kl(main_job, "synthetic", "oracle", epsilon)
    assert default <= 3 * oracle, f"epsilon {epsilon}: dp_em {default:.4g}, oracle {oracle:.4g}"


@pytest.mark.slow
@pytest.mark.parametrize("epsilon", [1.0, 3.0, 10.0])
def test_closed_form_beats_equal_split_on_synthetic(main_job, epsilon):
    closed_form = median_kl(main_job, "synthetic", "dp_em_closed_form", epsilon)
    equal = median_kl(main_job, "synthetic", "dp_em_equal", epsilon)
    assert closed_form <= equal, f"epsilon {epsilon}: closed form {closed_form:.4g}, equal {equal:.4g}"


@pytest.mark.slow
@pytest.mark.parametrize("epsilon", [3.0, 10.0])
def test_kmeans_start_beats_data_independent_start_on_synthetic(main_job, epsilon):
    # A run with 100 trials measured 0.031 vs 0.169 at epsilon 3 and 0.013 vs
    # 0.041 at epsilon 10. The 2x margin leaves room for another Monte Carlo stream.
    kmeans = median_kl(main_job, "synthetic", "dp_em_kmeans_start", epsilon)
    data_independent = median_kl(main_job, "synthetic", "dp_em_closed_form", epsilon)
    assert 2 * kmeans <= data_independent, f"epsilon {epsilon}: k-means start {kmeans:.4g}, data-independent {data_independent:.4g}"


@pytest.mark.slow
@pytest.mark.parametrize("epsilon", [3.0, 10.0])
def test_histogram_em_within_three_times_oracle(main_job, epsilon):
    # The main job measured 0.00055 vs 0.0036 at epsilon 3 and 0.00047 vs
    # 0.00057 at epsilon 10. Near 5e-4 the Monte Carlo estimate's own error
    # is of the same size, so the margin at epsilon 10 is smaller than it looks.
    histogram = median_kl(main_job, "synthetic", "histogram_em", epsilon)
    oracle = median_kl(main_job, "synthetic", "oracle", epsilon)
    assert histogram <= 3 * oracle, f"epsilon {epsilon}: histogram_em {histogram:.4g}, oracle {oracle:.4g}"


@pytest.mark.slow
@pytest.mark.parametrize("epsilon", [0.1, 0.3, 1.0, 3.0, 10.0])
@pytest.mark.parametrize("dataset", ["synthetic", "faithful"])
def test_histogram_em_beats_dp_em_in_two_dimensions(main_job, dataset, epsilon):
    histogram = median_kl(main_job, dataset, "histogram_em", epsilon)
    for method in ("dp_em_closed_form", "dp_em_equal"):
        dp_em = median_kl(main_job, dataset, method, epsilon)
        assert histogram <= dp_em, f"{dataset}, epsilon {epsilon}: histogram_em {histogram:.4g}, {method} {dp_em:.4g}"


@pytest.mark.slow
def test_histogram_em_rows_record_their_grid(main_job):
    histogram = main_job.method == "histogram_em"
    assert (main_job[histogram].histogram_cells == 16**2).all()
    assert main_job[~histogram].histogram_cells.isna().all()


def test_histogram_em_skipped_on_wine(main_job):
    assert main_job[(main_job.dataset == "wine") & (main_job.method == "histogram_em")].empty


@pytest.mark.slow
def test_bound_dominates_monte_carlo_in_results(main_job):
    # About 1,800 rows are tested at once, so each gets 5 standard errors: a
    # one-sided normal tail of 3e-7 per row keeps false alarms near 5e-4 in all.
    slack = 5 * main_job.kl_mc_se + 1e-9
    violations = main_job[main_job.kl_bound < main_job.kl_mc - slack]
    assert violations.empty, violations[["dataset", "method", "epsilon", "trial", "kl_mc", "kl_bound"]].head()


def test_start_convergence_script_prints_rows():
    command = [sys.executable, "scripts/start_convergence.py", "--dataset", "faithful", "--trials", "2",
               "--iterations", "1", "3"]
    completed = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = [line for line in completed.stdout.splitlines() if line.startswith("| 1 |") or line.startswith("| 3 |")]
    assert len(rows) == 2
    medians = [float(row.split("|")[2]) for row in rows]
    assert all(math.isfinite(median) for median in medians), medians


def test_start_convergence_kmeans_and_oracle():
    command = [sys.executable, "scripts/start_convergence.py", "--dataset", "faithful", "--trials", "2",
               "--iterations", "2", "--start", "kmeans", "--epsilon", "3", "--oracle-shares", "1", "0.5"]
    completed = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "kmeans start on faithful (epsilon 3, start share 0.1)" in completed.stdout
    rows = [line for line in completed.stdout.splitlines() if line.split("|")[1:2] in ([" 2 "], [" 1 "], [" 0.5 "])]
    assert len(rows) == 3, completed.stdout
    assert all(math.isfinite(float(row.split("|")[2])) for row in rows)


def test_start_convergence_script_rejects_unknown_dataset():
    command = [sys.executable, "scripts/start_convergence.py", "--dataset", "iris"]
    completed = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2
    assert "dataset 'iris' is not in the eps_grid sweep" in completed.stderr


def test_iteration_study_with_histogram_em_start(tmp_path):
    out = tmp_path / "study.csv"
    command = [sys.executable, "scripts/iteration_study.py", "--datasets", "faithful", "--trials", "2",
               "--iterations", "1", "2", "--last-shares", "0.5", "--start", "histogram_em", "--allocation", "optax",
               "--noise-floor-factor", "0.5", "--out", str(out)]
    completed = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = pd.read_csv(out)
    assert set(rows.dataset) == {"faithful"}
    assert sorted(set(rows.n_iter)) == [1, 2]
    assert set(rows.allocation) == {"optax"}
    assert len(rows) == 2 * 5 * 2
    assert rows.kl_mc.notna().all()


def test_iteration_study_rejects_unknown_dataset():
    command = [sys.executable, "scripts/iteration_study.py", "--datasets", "iris"]
    completed = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2
    assert "--datasets ['iris'] are not in the eps_grid sweep" in completed.stderr


def test_iteration_study_skips_repeated_schedules():
    spec = importlib.util.spec_from_file_location("iteration_study", REPOSITORY / "scripts" / "iteration_study.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)

    settings = [(1, None), (1, 0.5), (2, None), (2, 0.5), (3, None), (3, 0.5)]
    assert study.unique_schedules(settings) == [(1, None), (2, None), (3, None), (3, 0.5)]


def test_iteration_study_rejects_histogram_em_start_on_wine():
    command = [sys.executable, "scripts/iteration_study.py", "--start", "histogram_em", "--datasets", "wine"]
    completed = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2
    assert "--start histogram_em needs d <= 4 at 256 cells, but wine has d=13" in completed.stderr
