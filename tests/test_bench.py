"""Check that scripts/bench.py runs and writes its JSON. The timings are not tested."""

import json
import math
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def test_quick_bench_writes_results(tmp_path):
    output = tmp_path / "bench.json"
    command = [sys.executable, "scripts/bench.py", str(output), "--quick", "--repeats", "1",
               "--only", "releases", "kl_monte_carlo", "compilation"]
    completed = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]

    results = json.loads(output.read_text())["results"]
    assert set(results) == {"releases", "kl_monte_carlo", "compilation"}
    for name in ("releases", "kl_monte_carlo"):
        assert math.isfinite(results[name]["ratio"])
        assert results[name]["ratio"] > 0
    assert 0.0 <= results["releases"]["clipped_fraction"] <= 1.0
    assert results["releases"]["ratio_ceiling_with_eigh"] > 0

    # Both sides estimate the same KL from independent samples.
    kl = results["kl_monte_carlo"]
    assert abs(kl["kl_jax"] - kl["kl_numpy"]) <= 5 * math.hypot(kl["se_jax"], kl["se_numpy"])
