"""The fused Mamba-2 path training runs on CUDA against the pure path: forward output and every
gradient, in float32 and under bf16 autocast, at the config's node and edge widths.

The fused side is the model's own dispatch: ``AutoMamba2.forward`` handing its parameters to
mamba_ssm's ``mamba_split_conv1d_scan_combined``. The reference is the pure path in float32.
Under bf16 the pure path's own bf16 error is measured too (``floor_*``): the fused path's error
reads against what bf16 costs anyway. Two runs share :func:`compare`:

- ``szdet check-kernels --interpret``: this module as a process of its own (``TRITON_INTERPRET=1``
  must be set before Triton loads), the kernels executed by Triton's interpreter on a short window
  that spans a chunk boundary and ends in a padded chunk (:func:`interpreted_dispatch`);
- the GPU check (szdet/gpu_check/run.py): on the GPU, at a training batch's row counts.

Run as ``python -m szdet.kernel_proof.parity MODEL_JSON``; prints JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from szdet.config import ModelConfig
from szdet.kernel_proof.check import mixer_sizes, outputs_and_grads, randomise
from szdet.kernel_proof.launches import interpreted, interpreter_dot_error
from szdet.kernel_proof.shims import cpu_kernels, patched
from szdet.models import kernels
from szdet.models.kernels import AutoMamba2
from szdet.models.mamba2 import Mamba2

# float32: a wrong argument to the fused kernel (a gate, a norm placement, a sign) shows as an
# error of order 1; TF32 dots on a GPU stay near 1e-3.
FLOAT32_TOL = 2e-3
# bf16 keeps 8 bits of mantissa (4e-3 per rounding). Gradients summed over every step (dt_bias,
# A_log) cancel and lose more: the pure path's own bf16 error there reaches ~0.1, so a bf16 error
# also passes within twice the pure path's (the floor).
BF16_TOL = 5e-2
TOLERANCES = {"float32": FLOAT32_TOL, "bf16": BF16_TOL}
INTERPRETER_ROWS = 2  # sequences per call under the interpreter


def relative_error(ref: Tensor, got: Tensor) -> float:
    """max |got - ref| / max |ref| (ref all zero: the absolute difference)."""
    scale = ref.abs().max().item()
    return (got - ref).abs().max().item() / (scale if scale > 0 else 1.0)


def stream_module(cfg: ModelConfig, stream: str, device: torch.device) -> AutoMamba2:
    """The node or edge stream's Mamba-2 at ``cfg``'s widths, parameters moved off their initial
    values, on ``device``; it takes the fused path wherever the model would."""
    size = next(s for s in mixer_sizes(cfg) if s.name == stream)
    torch.manual_seed(0)
    module = AutoMamba2(
        **size.kwargs(cfg), chunk_size=cfg.pure_chunk_size, kernel_chunk_size=cfg.chunk_size
    )
    randomise(module)
    return module.to(device)


def _errors(ref: dict[str, Tensor], got: dict[str, Tensor], prefix: str = "") -> dict[str, Any]:
    grads = {k: relative_error(ref[k], got[k]) for k in ref if k != "out"}
    worst = max(grads, key=lambda k: grads[k])
    return {
        f"{prefix}out_rel_err": relative_error(ref["out"], got["out"]),
        f"{prefix}grad_rel_err": grads[worst],
        f"{prefix}worst_grad": worst,
    }


def within_tolerance(row: dict[str, Any], dtype: str) -> bool:
    """Output and worst gradient under the dtype's bound, or (measured beside them, in bf16)
    within twice the error the same dtype costs the pure path."""
    return all(
        row[key] <= max(TOLERANCES[dtype], 2 * row.get(f"floor_{key}", 0.0))
        for key in ("out_rel_err", "grad_rel_err")
    )


def compare(
    module: AutoMamba2, u: Tensor, dtype: torch.dtype | None, rows_per_pass: int | None = None
) -> dict[str, Any]:
    """The fused path (one call over every row, as in training) against the float32 pure path
    (``rows_per_pass`` rows at a time, which bounds its memory); ``dtype``: under that autocast."""
    start = time.perf_counter()

    def pure(x: Tensor) -> Tensor:
        return Mamba2.forward(module, x)

    autocast = torch.autocast(u.device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    ref = outputs_and_grads(module, u, pure, rows_per_pass)
    with autocast:
        got = outputs_and_grads(module, u, module)
    row: dict[str, Any] = {
        "heads": module.nheads,
        "headdim": module.headdim,
        "d_state": module.d_state,
        "rows": u.shape[0],
        "steps": u.shape[1],
        "fused_calls": -(
            -u.shape[0] // kernels.rows_per_call(u.shape[1], module.kernel_chunk_size)
        ),
        **_errors(ref, got),
    }
    if dtype is not None:
        with autocast:
            row.update(_errors(ref, outputs_and_grads(module, u, pure, rows_per_pass), "floor_"))
    row["within_tolerance"] = within_tolerance(row, "bf16" if dtype else "float32")
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


@contextlib.contextmanager
def interpreted_dispatch(bf16: bool) -> Iterator[None]:
    """On this CPU, ``AutoMamba2.forward`` dispatches CPU tensors to the fused kernel executed by
    Triton's interpreter, as it dispatches CUDA tensors on a GPU; ``bf16``: mamba_ssm sees the
    autocast that training's CUDA autocast would show it (shims.py)."""
    with (
        cpu_kernels(autocast_bf16=bf16) as fused,
        interpreted(),
        patched(kernels, "KERNEL_DEVICE_TYPES", kernels.KERNEL_DEVICE_TYPES | {"cpu"}),
        patched(kernels, "fused_mamba2_kernel", lambda: fused),
        warnings.catch_warnings(),
    ):
        # mamba_ssm's backward re-enters the CUDA autocast its forward saw: a no-op here.
        warnings.filterwarnings("ignore", "CUDA is not available", UserWarning)
        yield


def interpreter_parity(cfg: ModelConfig) -> dict[str, Any]:
    """Both streams, float32 and bf16, under the interpreter (module docstring)."""
    steps = cfg.chunk_size + cfg.chunk_size // 2  # one full chunk, then a half-filled one
    report: dict[str, Any] = {
        "tolerance": TOLERANCES,
        # Why interpreted() widens bf16 dots: the interpreter's own result, left as it is.
        "interpreter_bf16_dot_rel_err": {
            "as_shipped": interpreter_dot_error(widened=False),
            "widened": interpreter_dot_error(widened=True),
        },
    }
    for name, dtype in (("float32", None), ("bf16", torch.bfloat16)):
        rows = {}
        for stream in ("node", "edge"):
            module = stream_module(cfg, stream, torch.device("cpu"))
            u = torch.randn(INTERPRETER_ROWS, steps, module.d_model)
            with interpreted_dispatch(bf16=dtype is not None):
                rows[stream] = compare(module, u, dtype)
        report[name] = rows
    return report


def main(argv: list[str]) -> int:
    if os.environ.get("TRITON_INTERPRET") != "1":
        print("parity: TRITON_INTERPRET=1 must be set before Triton loads", file=sys.stderr)
        return 2
    print(json.dumps(interpreter_parity(ModelConfig.model_validate_json(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
