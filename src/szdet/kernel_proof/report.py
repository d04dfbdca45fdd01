"""`szdet check-kernels --interpret`: the CUDA training path proven on a CPU, as one JSON report.

- ``parity``: the fused path against the pure one under Triton's interpreter, float32 and bf16
  (parity.py, in a process of its own, running while the rest is worked out here);
- ``launch_audit``: every launch of a training step and a validation batch at the config's sizes,
  against CUDA's grid limits, recorded once per target GPU because some grids follow the SM count
  (audit.py);
- ``aot``: every variant of those launches compiled for sm_80 and sm_90, shared memory against
  each GPU's per-block limit (aot.py).

Exit 1 naming the first problem. Needs ``make kernel-tools`` (triton and the kernel sources).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from szdet.config import Config
from szdet.kernel_proof.aot import compile_all
from szdet.kernel_proof.audit import launch_audit, model_launches
from szdet.kernel_proof.parity import TOLERANCES
from szdet.kernel_proof.shims import TARGETS, require_kernel_sources


def _start_parity(cfg: Config) -> subprocess.Popen[str]:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    command = [
        sys.executable,
        "-m",
        "szdet.kernel_proof.parity",
        cfg.model.model_dump_json(),
    ]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def _finish_parity(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate()
    if proc.returncode != 0:
        tail = err.strip().splitlines()[-1:] or ["no output"]
        return {"error": f"parity run exited {proc.returncode}: {tail[0]}"}
    result: dict[str, Any] = json.loads(out)
    return result


def problems(report: dict[str, Any]) -> list[str]:
    """Every failed check, most basic first: numbers, then launch limits, then compilation."""
    found: list[str] = []
    parity = report["parity"]
    if "error" in parity:
        found.append(f"parity: {parity['error']}")
    for dtype in TOLERANCES:
        for stream, row in parity.get(dtype, {}).items():
            if not row["within_tolerance"]:
                found.append(
                    f"parity: {stream} stream in {dtype}: output {row['out_rel_err']:.2e}, "
                    f"gradient {row['grad_rel_err']:.2e} ({row['worst_grad']}) beyond tolerance"
                )
    for over in report["launch_audit"]["over_limit"]:
        found.append(
            f"launch_audit: {over['kernel']} launches grid {over['grid']} at batch "
            f"{report['launch_audit']['batch']}, over CUDA's limits {over['limits']}"
        )
    for failed in report["aot"]["failed"]:
        found.append(
            f"aot: {failed['kernel']} does not compile for {failed['target']}: {failed['error']}"
        )
    for over in report["aot"]["over_shared_memory"]:
        found.append(
            f"aot: {over['kernel']} needs {over['shared_bytes']} B of shared memory, over the "
            f"{over['target']}'s {over['limit_bytes']} B"
        )
    return found


def build_report(cfg: Config) -> dict[str, Any]:
    require_kernel_sources()
    parity = _start_parity(cfg)
    try:
        recorded = {gpu: model_launches(cfg, gpu) for gpu in TARGETS}
        audit = launch_audit(cfg, list(recorded.values()))
        audit["gpus"] = [f"{gpu.name} ({gpu.sm_count} SMs)" for gpu in TARGETS]
        aot = compile_all({gpu: [x for g in recorded[gpu].values() for x in g] for gpu in TARGETS})
    except BaseException:
        parity.kill()
        raise
    report: dict[str, Any] = {"parity": _finish_parity(parity), "launch_audit": audit, "aot": aot}
    report["problems"] = problems(report)
    return report


def _summary(report: dict[str, Any]) -> str:
    lines = []
    for dtype in TOLERANCES:
        for stream, row in report["parity"].get(dtype, {}).items():
            floor = (
                f" (pure bf16: {row['floor_out_rel_err']:.1e})"
                if "floor_out_rel_err" in row
                else ""
            )
            lines.append(
                f"parity {dtype} [{stream}] {row['heads']} heads of {row['headdim']}, "
                f"{row['steps']} steps: out {row['out_rel_err']:.1e}{floor}, worst grad "
                f"{row['grad_rel_err']:.1e} ({row['worst_grad']}) in {row['seconds']} s"
            )
    audit = report["launch_audit"]
    lines.append(
        f"launch audit at batch {audit['batch']} (validation {audit['validation_batch']}): "
        f"{audit['kernels']} kernels, {sum(audit['launches'].values())} launches, "
        f"{len(audit['over_limit'])} over CUDA's grid limits"
    )
    for target, row in report["aot"]["targets"].items():
        worst = max((k["max_shared_bytes"] for k in row["kernels"].values()), default=0)
        lines.append(
            f"aot {target} ({row['gpu']}): {len(row['kernels'])} kernels in {row['binaries']} "
            f"binaries, max shared memory {worst} B of {row['shared_limit_bytes']}"
        )
    lines.append(f"aot compile time {report['aot']['compile_s']} s")
    lines.extend(f"FAIL: {p}" for p in report["problems"])
    lines.append("all checks passed" if not report["problems"] else "")
    return "\n".join(line for line in lines if line)


def check_interpret(cfg: Config, as_json: bool) -> int:
    report = build_report(cfg)
    print(json.dumps(report, indent=2) if as_json else _summary(report))
    if report["problems"]:
        print(f"szdet: check-kernels: {report['problems'][0]}", file=sys.stderr)
        return 1
    return 0
