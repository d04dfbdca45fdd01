"""`szdet check-kernels --interpret` in its own environment (`make kernel-tools`), as CI runs it:
the cloud config, and the same at 8x the batch. Triton compiles for sm_80/sm_90; no GPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from szdet.config_load import load_config
from szdet.gpu_check.precompile import launches_to_compile
from szdet.kernel_proof.aot import _variants
from szdet.kernel_proof.audit import launch_audit, model_launches
from szdet.kernel_proof.parity import BF16_TOL, FLOAT32_TOL
from szdet.kernel_proof.shims import A100, H100, TARGETS
from szdet.models import kernels

ROOT = Path(__file__).resolve().parents[2]
CLOUD = ROOT / "configs/cloud/train.yaml"
# The kernels whose grids put (rows x chunks) on grid y: over CUDA's 65,535 at batch 64 unsplit.
ROWS_TIMES_CHUNKS = {
    "_chunk_state_fwd_kernel", "_chunk_scan_fwd_kernel", "_chunk_scan_bwd_dstates_kernel",
    "_chunk_scan_chunk_state_bwd_dx_kernel", "_chunk_state_bwd_db_kernel",
    "_chunk_scan_bwd_dc_kernel", "_chunk_scan_bwd_dcb_kernel",
    "_chunk_scan_bwd_ddAcs_stable_kernel",
}  # fmt: skip


@pytest.fixture(scope="module")
def triton_cache(tmp_path_factory):
    """A cold compile cache shared by this file's runs, as on a fresh CI machine."""
    return str(tmp_path_factory.mktemp("triton-cache"))


def _check(cache_dir: str, *extra: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "szdet.cli", "check-kernels", "--interpret", "--json",
         "--config", str(CLOUD), *extra],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
        env={**os.environ, "TRITON_CACHE_DIR": cache_dir},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _assert_all_fit(report: dict, batch: int) -> None:
    audit = report["launch_audit"]
    assert audit["batch"] == batch and audit["window_samples"] == 15360
    assert audit["over_limit"] == [] and report["problems"] == []
    assert set(audit["max_grid"]) >= ROWS_TIMES_CHUNKS
    for grid in audit["max_grid"].values():
        assert grid[0] <= 2**31 - 1 and max(grid[1:]) <= 65535
    aot = report["aot"]
    assert aot["failed"] == [] and aot["over_shared_memory"] == []
    assert set(aot["targets"]) == {"sm_80", "sm_90"}
    for target in aot["targets"].values():
        assert set(target["kernels"]) >= ROWS_TIMES_CHUNKS
        worst = max(k["max_shared_bytes"] for k in target["kernels"].values())
        assert 0 < worst <= target["shared_limit_bytes"]


@pytest.mark.slow
def test_cloud_config_every_check_passes(triton_cache):
    report = _check(triton_cache)
    parity = report["parity"]
    for stream, heads in (("node", 16), ("edge", 8)):
        exact, bf16 = parity["float32"][stream], parity["bf16"][stream]
        assert exact["heads"] == heads and exact["steps"] > 64  # spans a chunk boundary
        assert exact["out_rel_err"] <= FLOAT32_TOL and exact["grad_rel_err"] <= FLOAT32_TOL
        assert exact["within_tolerance"] and bf16["within_tolerance"]
        # bf16 costs the fused path what it costs the pure path, not an order of magnitude more
        assert 1e-4 < bf16["out_rel_err"] <= BF16_TOL
        assert bf16["out_rel_err"] <= 3 * bf16["floor_out_rel_err"]
    # The interpreter's own bf16 dot multiplies bit patterns; widened, it is exact (launches.py).
    assert parity["interpreter_bf16_dot_rel_err"]["as_shipped"] > 1
    assert parity["interpreter_bf16_dot_rel_err"]["widened"] < 1e-6
    _assert_all_fit(report, batch=64)


def test_eight_times_the_batch_still_fits():
    """The launch audit at batch 512 (grids grow with the batch). Its AOT compile is left to
    `make kernel-check`: batch 512 needs the same 242 binaries per target as batch 64, which
    the test above compiles (measured with aot._variants on both batches' launches)."""
    cfg = load_config(CLOUD, ["train.batch_size=512"])
    audit = launch_audit(cfg, [model_launches(cfg, gpu) for gpu in TARGETS])
    assert audit["batch"] == 512 and audit["over_limit"] == []
    assert set(audit["max_grid"]) >= ROWS_TIMES_CHUNKS
    assert max(grid[1] for grid in audit["max_grid"].values()) > 60_000  # near the limit, under


def test_the_audit_catches_unsplit_calls(monkeypatch):
    """Without splitting (the code before the fix) the audit names every kernel over the limit."""
    cfg = load_config(CLOUD)
    monkeypatch.setattr(kernels, "rows_per_call", lambda seqlen, chunk_size: 10**9)
    audit = launch_audit(cfg, [model_launches(cfg, A100)])
    over = {row["kernel"]: row["grid"] for row in audit["over_limit"]}
    assert set(over) == ROWS_TIMES_CHUNKS
    assert max(grid[1] for grid in over.values()) == 64 * 171 * 15  # B x pairs x chunks


def test_the_gpu_check_precompiles_both_head_widths():
    """The GPU check compiles, before its stages, the binaries of the config and of its
    wide-heads variant (gpu_check/precompile.py): the variant's kernels are binaries of their own."""
    cfg = load_config(CLOUD)
    alone = _variants([x for g in model_launches(cfg, H100).values() for x in g], H100)
    both = _variants(launches_to_compile(cfg, 64, H100), H100)
    assert len(both) > len(alone) > 100
    assert {name for name, _, _ in both} == {name for name, _, _ in alone}
