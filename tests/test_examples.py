"""The example scripts run end to end and write their outputs.

Each script runs in a subprocess, as a user would run it, with a temporary
output directory.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, output_dir: Path, *options: str) -> str:
    """Run one example script and return its standard output."""
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / name), str(output_dir), *options],
        capture_output=True, text=True, timeout=600, cwd=EXAMPLES.parent,
    )
    assert completed.returncode == 0, f"{name} failed:\n{completed.stderr}"
    return completed.stdout


def test_release_csv(tmp_path):
    stdout = run_example("release_csv.py", tmp_path, "--epsilon", "2.0")

    release_path = tmp_path / "release.json"
    assert str(release_path) in stdout
    records = np.loadtxt(tmp_path / "records.csv", delimiter=",", skiprows=1)
    assert records.shape == (2000, 2)

    release = json.loads(release_path.read_text())
    weights = np.array(release["weights"])
    covariances = np.array(release["covariances"])
    assert weights.shape == (2,)
    assert weights.sum() == pytest.approx(1.0)
    assert np.array(release["means"]).shape == (2, 2)
    assert np.linalg.eigvalsh(covariances).min() > 0
    assert release["privacy"]["epsilon"] == 2.0
    assert release["privacy"]["dp_guarantee"] is True


def test_sample_synthetic(tmp_path):
    stdout = run_example("sample_synthetic.py", tmp_path, "--n-samples", "300")

    csv_path = tmp_path / "synthetic.csv"
    assert str(csv_path) in stdout
    table = np.loadtxt(csv_path, delimiter=",", skiprows=1)
    assert table.shape == (300, 3)
    assert np.all(np.isfinite(table))
    assert set(np.unique(table[:, 2])) <= {0.0, 1.0, 2.0}


def test_compare_epsilons(tmp_path):
    stdout = run_example("compare_epsilons.py", tmp_path)

    png_path = tmp_path / "compare_epsilons.png"
    assert str(png_path) in stdout
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    table = pd.read_csv(tmp_path / "compare_epsilons.csv")
    assert list(table.columns) == ["mode", "epsilon", "kl_mc", "kl_mc_se", "heldout_log_likelihood"]
    assert set(table["mode"]) == {"dp_em", "histogram_em"}
    for _, rows in table.groupby("mode"):
        assert np.all(np.diff(rows["epsilon"]) > 0)
    numbers = table.drop(columns="mode").to_numpy()
    assert np.all(np.isfinite(numbers))
    assert np.all(table["kl_mc_se"] > 0)
