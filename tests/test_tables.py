"""Markdown result tables."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from experiments.tables import method_table

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
