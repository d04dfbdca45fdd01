"""The GPU check's parts on this CPU (the whole check runs in tests/device/ on a bare Python)."""

import json
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from szdet.config_load import load_config
from szdet.errors import UserError
from szdet.gpu_check import bundle
from szdet.gpu_check.run import Report, one_line
from szdet.gpu_check.step import TrainStep, bf16_peak_tflops, flops_per_window

ROOT = Path(__file__).resolve().parent.parent


def test_a_bundle_for_another_python_is_named_with_the_command_that_makes_one(tmp_path):
    (tmp_path / "py3.99").mkdir()
    with pytest.raises(SystemExit, match=rf"no wheels for {bundle.python_tag()}.*DEVICE_PYTHON="):
        bundle.use_bundle(tmp_path)


def test_a_bundles_wheels_are_importable_after_the_machines_own_packages(tmp_path, monkeypatch):
    wheels = tmp_path / bundle.python_tag()
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "probe-1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("szdet_bundle_probe/__init__.py", "VALUE = 42\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    used = bundle.use_bundle(tmp_path)
    assert used["wheels"] == ["probe-1.0-py3-none-any.whl"] and used["kernel_sources"] == []
    assert sys.path[-1] == str(tmp_path / "kernels") and "szdet-bundle-" in sys.path[-2]
    import szdet_bundle_probe  # type: ignore[import-not-found]

    assert szdet_bundle_probe.VALUE == 42


def test_a_config_that_needs_the_fused_kernels_is_never_timed_on_the_pure_path():
    cloud = load_config(ROOT / "configs/cloud/train.yaml")
    with pytest.raises(UserError, match=r"model\.kernels is 'cuda'"):
        TrainStep(cloud, torch.device("cpu"), 1)


def test_the_peaks_mfu_is_measured_against():
    assert bf16_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bf16_peak_tflops("NVIDIA H100 80GB HBM3") == bf16_peak_tflops("NVIDIA H200") == 989.0
    assert bf16_peak_tflops("Tesla V100-SXM2-16GB") is None  # no MFU rather than a wrong one
    cloud = load_config(ROOT / "configs/cloud/train.yaml")
    # forward + backward ~ 3x the forward's 75.4 GMAC: the README's 452 GFLOP per window
    assert 440e9 < flops_per_window(cloud.model, cloud.window_samples) < 460e9


def test_the_report_is_whole_json_on_disk_after_every_stage(tmp_path):
    report = Report(tmp_path / "gpu_check.json")
    report.put("environment", {"device": "cpu"})
    report.put("parity", {"skipped": one_line(RuntimeError("no GPU here\nsecond line"))})
    assert json.loads(report.path.read_text()) == {
        "environment": {"device": "cpu"},
        "parity": {"skipped": "RuntimeError: no GPU here"},
    }
    assert [p.name for p in tmp_path.iterdir()] == ["gpu_check.json"]  # no temporary left
