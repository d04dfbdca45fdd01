"""The GPU check's dry run on a bare machine, imitated on this CPU: a Python holding only what a
bare CUDA machine has (requirements/bare.txt: torch, Triton, the scientific stack; no pydantic,
mne, pyEDFlib, boto3, wandb, mamba_ssm or causal_conv1d) plus `make device-bundle` for its
version. `make test` builds both; every stage must run, the parity stage under Triton's
interpreter, and every number it writes must be finite.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BARE_PYTHON = ROOT / ".venv-bare/bin/python"
ABSENT = ("pydantic", "mne", "pyedflib", "boto3", "wandb", "mamba_ssm", "causal_conv1d")
STAGES = ("environment", "parity", "train_step", "components", "variants", "loader")
# Only a GPU has these to report; on the CPU they are null, and nothing else may be.
GPU_ONLY = {"peak_allocated_gb", "peak_reserved_gb", "mfu", "gpu", "driver", "torch_cuda"}


def _bare_version() -> str:
    out = subprocess.run([BARE_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    major, minor = eval(out)
    return f"py{major}.{minor}"


def _numbers(obj, path=""):
    """(dotted path, value) of every scalar in a JSON document."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _numbers(value, f"{path}.{key}" if path else key)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _numbers(value, f"{path}[{i}]")
    else:
        yield path, obj


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    assert BARE_PYTHON.exists(), "make .venv-bare/.installed (make setup) builds the bare Python"
    assert (ROOT / "device-bundle" / _bare_version()).is_dir(), (
        "make device-bundle DEVICE_PYTHON=..."
    )
    out = tmp_path_factory.mktemp("gpu_out")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--device", "cpu", "--config", "configs/local/smoke.yaml",
         "--workers", "2"],
        cwd=ROOT, env={**env, "PYTHON": str(BARE_PYTHON), "OUT": str(out)},
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert (out / "gpu_check.log").read_text().strip().endswith("stages skipped: none")
    return json.loads((out / "gpu_check.json").read_text())


def test_the_bare_python_lacks_what_szdet_adds():
    probe = f"import importlib.util as u; print([m for m in {ABSENT!r} if u.find_spec(m)])"
    found = subprocess.run([BARE_PYTHON, "-c", probe], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"
    assert sys.executable != str(BARE_PYTHON)


def test_every_stage_ran_and_every_number_is_finite(report):
    assert list(report) == list(STAGES)
    for stage in STAGES:
        assert "skipped" not in report[stage], report[stage]
    for path, value in _numbers(report):
        if value is None:
            assert path.split(".")[-1] in GPU_ONLY, f"{path} is null"
        elif isinstance(value, float):
            assert math.isfinite(value), path


def test_the_bundle_and_the_kernel_stand_ins_served(report):
    env = report["environment"]
    assert env["device"] == "cpu" and env["triton_interpret"] is True
    assert env["bundle"]["wheels"] and env["bundle"]["kernel_sources"] == [
        "causal_conv1d",
        "mamba_ssm",
    ]
    assert "szdet-bundle-" in env["pydantic"]["from"]  # unpacked from the bundle's wheel
    sources = env["kernels"]["sources"]
    assert sources["mamba_ssm"].startswith("Triton SSD kernels from the Python sources")
    assert sources["causal_conv1d"].startswith("reference convolution")


def test_parity_ran_the_kernels_in_float32_and_bf16(report):
    parity = report["parity"]
    for dtype in ("float32", "bf16"):
        for stream in ("node", "edge"):
            row = parity[dtype][stream]
            assert row["within_tolerance"] and row["steps"] > 64  # across a chunk boundary
    assert parity["interpreter_bf16_dot_rel_err"]["widened"] < 1e-6


def test_the_step_components_variants_and_loader_measured(report):
    step = report["train_step"]
    assert (
        step["windows_per_s"] > 0 and step["losses_finite"] and step["gflop_per_window_fwd_bwd"] > 0
    )
    assert "pure PyTorch" in step["mamba2_path"] and "skipped" in step["launch_audit"]
    parts = report["components"]
    for name in ("tcn", "node_stream", "edge_stream", "graph_stage", "pe_eigensolver_forward"):
        assert parts[name] > 0
    variants = report["variants"]
    names = [k for k, v in variants.items() if isinstance(v, dict)]
    assert names == [
        "wide_heads",
        "multirate_tcn",
        "fused_tcn",
        "jacobi_pe",
        "pe_every_4",
        "combined",
    ]
    for name in names:
        assert variants[name]["windows_per_s"] > 0 and variants[name]["set"].startswith(
            "--set model."
        )
    loader = report["loader"]
    assert loader["workers"] == 2 and loader["windows_per_s"] > 0 and loader["batches_timed"] >= 1
