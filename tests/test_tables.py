"""Markdown and LaTeX result tables."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from experiments.tables import method_table, summary_table

REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.fixture
def results():
    rows = []
    for method, guarantee, values in [("dp_em", True, [1.0, 2.0, 9.0]), ("sklearn", False, [0.5, 0.5, 0.5])]:
        for dataset, offset in [("wine", 0.0), ("iris", 10.0)]:
            for trial, value in enumerate(values):
                rows.append({"dataset": dataset, "method": method, "epsilon": 1.0, "trial": trial,
                             "kl_mc": value + offset, "dp_guarantee": guarantee})
    rows.append({"dataset": "wine", "method": "dp_em", "epsilon": 3.0, "trial": 0, "kl_mc": 100.0,
                 "dp_guarantee": True})
    return pd.DataFrame(rows)


def test_table_cells_are_median_and_mean(results):
    lines = method_table(results, 1.0).splitlines()
    assert lines[0] == "| method | wine | iris | DP |"
    assert lines[2] == "| dp_em | 2 (4) | 12 (14) | yes |"
    assert lines[3] == "| sklearn | 0.5 (0.5) | 10.5 (10.5) | no |"
    assert len(lines) == 4


def test_table_leaves_missing_pairs_empty(results):
    table = method_table(results[~((results.method == "sklearn") & (results.dataset == "iris"))], 1.0)
    assert table.splitlines()[3] == "| sklearn | 0.5 (0.5) |  | no |"


def test_table_formats_tiny_values(results):
    results.loc[results.method == "sklearn", "kl_mc"] = 2e-5
    assert "2.00e-05 (2.00e-05)" in method_table(results, 1.0)


@pytest.mark.parametrize("epsilon, metric, match", [(0.5, "kl_mc", "no rows at epsilon=0.5"),
                                                    (1.0, "heldout", "no column 'heldout'")])
def test_table_rejects_missing_rows_and_columns(results, epsilon, metric, match):
    with pytest.raises(ValueError, match=match):
        method_table(results, epsilon, metric)


def test_table_script_prints_table(results, tmp_path):
    results.to_csv(tmp_path / "results.csv", index=False)
    command = [sys.executable, "scripts/results_table.py", str(tmp_path), "--epsilon", "3"]
    completed = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "| dp_em | 100 (100) | yes |" in completed.stdout


def summary_rows():
    rows = []
    for dataset, d, n in [("faithful", 2, 272), ("synthetic", 2, 2000), ("synthetic", 3, 2000)]:
        for method, guarantee in [("dp_em_closed_form", True), ("oracle", False)]:
            for epsilon in (0.1, 1.0):
                for trial, value in enumerate([1.0, 2.0, 30.0]):
                    rows.append({"dataset": dataset, "d": d, "N": n, "method": method, "epsilon": epsilon,
                                 "trial": trial, "kl_mc": value * epsilon * d, "dp_guarantee": guarantee})
    return pd.DataFrame(rows)


def test_summary_markdown_has_medians_by_epsilon():
    lines = summary_table(summary_rows()).splitlines()
    assert lines[0] == "| dataset | method | eps 0.1 | eps 1 | DP |"
    assert lines[2] == "| faithful | dp_em_closed_form | 0.4 | 4 | yes |"
    assert lines[3] == "| faithful | oracle | 0.4 | 4 | no |"
    assert lines[4] == "| synthetic (d = 2, N = 2000) | dp_em_closed_form | 0.4 | 4 | yes |"
    assert lines[6] == "| synthetic (d = 3, N = 2000) | dp_em_closed_form | 0.6 | 6 | yes |"
    assert len(lines) == 8


def test_summary_marks_missing_cells():
    rows = summary_rows()
    rows = rows[~((rows.method == "oracle") & (rows.epsilon == 1.0))]
    assert summary_table(rows).splitlines()[3] == "| faithful | oracle | 0.4 | - | no |"


def test_summary_latex_escapes_and_groups():
    lines = summary_table(summary_rows(), style="latex").splitlines()
    assert lines[0] == "\\begin{tabular}{llrrc}"
    assert lines[2] == "dataset & method & $\\varepsilon = 0.1$ & $\\varepsilon = 1$ & DP \\\\"
    assert lines[4] == "faithful & dp\\_em\\_closed\\_form & 0.4 & 4 & yes \\\\"
    assert lines[5] == " & oracle & 0.4 & 4 & no \\\\"
    assert lines[6] == "\\midrule"
    assert lines[-1] == "\\end{tabular}"


def test_summary_columns_for_grid_values():
    rows = summary_rows()
    rows = rows[(rows.dataset == "synthetic") & (rows.epsilon == 1.0)]
    rows = rows.assign(sweep_parameter="n_features", sweep_value=rows.d)
    lines = summary_table(rows).splitlines()
    assert lines[0] == "| dataset | method | d = 2 | d = 3 | DP |"
    assert lines[2] == "| synthetic | dp_em_closed_form | 4 | 6 | yes |"


@pytest.mark.parametrize("metric, style, message", [("loss", "markdown", "no column 'loss'"),
                                                    ("kl_mc", "html", "style must be")])
def test_summary_rejects_bad_arguments(metric, style, message):
    with pytest.raises(ValueError, match=message):
        summary_table(summary_rows(), metric, style)


@pytest.mark.parametrize("flags, expected", [(["--summary"], "| faithful | oracle | 0.4 | 4 | no |"),
                                             (["--summary", "--latex"], " & oracle & 0.4 & 4 & no \\\\")])
def test_table_script_prints_summary(tmp_path, flags, expected):
    summary_rows().to_csv(tmp_path / "results.csv", index=False)
    command = [sys.executable, "scripts/results_table.py", str(tmp_path), *flags]
    completed = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert expected in completed.stdout.splitlines()


def test_table_script_rejects_latex_alone(tmp_path):
    summary_rows().to_csv(tmp_path / "results.csv", index=False)
    command = [sys.executable, "scripts/results_table.py", str(tmp_path), "--latex"]
    completed = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert "--latex needs --summary" in completed.stderr


def test_method_table_separates_shared_names():
    lines = method_table(summary_rows(), 1.0).splitlines()
    assert lines[0] == "| method | faithful | synthetic (d = 2, N = 2000) | synthetic (d = 3, N = 2000) | DP |"
    assert lines[2] == "| dp_em_closed_form | 4 (22) | 4 (22) | 6 (33) | yes |"


def test_method_table_lists_epsilons_plainly(results):
    with pytest.raises(ValueError, match=r"pass one of the run's epsilons \[1.0, 3.0\]"):
        method_table(results, 0.5)
