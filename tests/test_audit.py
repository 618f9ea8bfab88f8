"""The empirical privacy audit of scripts/audit.py, on the real and on a broken mechanism."""

import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "audit.py"


def load_audit_module():
    spec = importlib.util.spec_from_file_location("audit_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


audit_script = load_audit_module()
LOWER_BOUND = re.compile(r"95% lower bound \(Clopper-Pearson\)\s+([0-9.]+)")


def test_audit_lower_bound_below_claim_epsilon_1():
    result = audit_script.audit(1.0, 1e-5, n_releases=200_000, seed=1)
    assert result.n_evaluation == 100_000
    assert result.lower_bound <= 1.0
    # The audit must find some leakage, or it has no power at all.
    assert result.lower_bound > 0.25


def test_audit_main_passes_at_epsilon_4(capsys):
    status = audit_script.main(["--epsilon", "4", "--delta", "1e-5", "--n-releases", "200000", "--seed", "3"])
    printed = capsys.readouterr().out
    lower_bound = float(LOWER_BOUND.search(printed).group(1))

    assert status == 0
    assert "claimed epsilon          4" in printed
    assert lower_bound <= 4.0
    assert lower_bound > 1.0


def test_clopper_pearson_upper_covers_rate():
    upper = audit_script.clopper_pearson_upper([0, 10, 1000], 1000, 0.05)
    assert upper[0] == pytest.approx(1 - 0.05 ** (1 / 1000), rel=1e-9)
    assert 0.01 < upper[1] < 0.02
    assert upper[2] == 1.0


def test_audit_cli_exits_one_for_halved_noise():
    # Halving the noise doubles mu. At a claimed epsilon of 2 the broken copy's
    # true epsilon is about 4, which 200,000 draws can detect.
    broken = subprocess.run(
        [sys.executable, str(SCRIPT), "--epsilon", "2", "--delta", "1e-5", "--noise-multiplier-scale", "0.5"],
        capture_output=True, text=True, timeout=300,
    )
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "FAIL" in broken.stdout
    assert float(LOWER_BOUND.search(broken.stdout).group(1)) > 2.0


def test_histogram_audit_below_claim():
    result = audit_script.audit(1.0, 1e-5, n_releases=200_000, seed=1, mechanism="histogram")
    assert result.lower_bound <= 1.0
    assert result.lower_bound > 0.25, "the audit of the cell counts must find some leakage"


def test_histogram_audit_catches_half_noise():
    status = audit_script.main(["--epsilon", "2", "--delta", "1e-5", "--mechanism", "histogram",
                                "--noise-multiplier-scale", "0.5", "--seed", "2"])
    assert status == 1


def test_audit_rejects_unknown_mechanism():
    with pytest.raises(ValueError, match="mechanism must be one of"):
        audit_script.audit(1.0, 1e-5, mechanism="laplace")
