"""`szdet check-kernels` on a CPU, and the prepared GPU script run here with tiny settings."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from szdet.cli import main
from szdet.models import check

ROOT = Path(__file__).resolve().parent.parent


# Timings are not under test, parity is: 3-s windows time 48 steps, not 960.
SHORT_WINDOWS = ["--set", "windows.length_s=3"]


def test_cpu_check_names_the_pure_path_and_passes(capsys):
    assert main(["check-kernels", *SHORT_WINDOWS]) == 0
    out = capsys.readouterr().out
    assert "pure PyTorch chunked SSD (device is cpu)" in out
    assert out.count("-> OK") == 2  # node and edge sizes
    assert "(19 x 48 steps)" in out  # timed at the configured window's length
    assert "all checks passed" in out


def test_require_cuda_kernels_fails_without_them(capsys):
    assert main(["check-kernels", "--require-cuda-kernels", *SHORT_WINDOWS]) == 1
    assert "--require-cuda-kernels" in capsys.readouterr().out


def test_a_difference_beyond_tolerance_fails(monkeypatch, capsys):
    monkeypatch.setattr(check, "PURE_VS_NAIVE_TOL", 0.0)  # float32 rounding now exceeds it
    assert main(["check-kernels", *SHORT_WINDOWS]) == 1
    assert "FAIL" in capsys.readouterr().out


@pytest.mark.slow
def test_gpu_script_runs_on_cpu_with_tiny_settings(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts/gpu_check.sh"), "--device", "cpu", "--batch", "1",
         "--steps", "1", "--warmup", "0", "--config", str(ROOT / "configs/local/smoke.yaml"),
         "--train-steps", "2"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all checks passed" in (tmp_path / "check_kernels.txt").read_text()
    step = json.loads((tmp_path / "train_step.json").read_text())
    assert step["batch"] == 1 and step["windows_per_s"] > 0 and step["losses_finite"]
    assert step["model_gflop_per_window_fwd_bwd"] > 0
    validation = json.loads((tmp_path / "validation.json").read_text())
    assert validation["wall_s"] > 0 and any("val/auroc" in row for row in validation["rows"])
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["exit_codes"] == {"check_kernels": 0, "train_step": 0, "train_validate": 0}
