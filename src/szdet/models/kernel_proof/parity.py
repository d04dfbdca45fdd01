"""The fused path training runs on CUDA, executed on this CPU by Triton's interpreter, against
the pure path: forward output and every gradient, at the config's node and edge widths.

The fused side is ``AutoMamba2.fused_scan`` itself (mamba_ssm's ``mamba_split_conv1d_scan_combined``
with our parameters, causal-conv1d replaced by its checked reference, shims.py). The window is
short (the interpreter runs each Triton program in numpy) but spans a chunk boundary and ends in a
padded chunk, so state passing between chunks and the ragged tail are both exercised.

Run as ``python -m szdet.models.kernel_proof.parity MODEL_JSON``: ``TRITON_INTERPRET=1`` must be
set before Triton is imported, so check.py starts this in a process of its own. Prints JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import torch
from torch import Tensor

from szdet.config import ModelConfig
from szdet.models.check import mixer_sizes, outputs_and_grads, randomise
from szdet.models.kernel_proof.launches import one_config
from szdet.models.kernel_proof.shims import cpu_kernels
from szdet.models.kernels import AutoMamba2
from szdet.models.mamba2 import Mamba2

ROWS = 2  # sequences per call


def parity_length(chunk_size: int) -> int:
    return chunk_size + chunk_size // 2  # one full chunk, then a half-filled one


def relative_error(ref: Tensor, got: Tensor) -> float:
    """max |got - ref| / max |ref| (ref all zero: the absolute difference)."""
    scale = ref.abs().max().item()
    return (got - ref).abs().max().item() / (scale if scale > 0 else 1.0)


def stream_parity(cfg: ModelConfig, name: str) -> dict[str, Any]:
    size = next(s for s in mixer_sizes(cfg) if s.name == name)
    torch.manual_seed(0)
    module = AutoMamba2(
        **size.kwargs(cfg), chunk_size=cfg.pure_chunk_size, kernel_chunk_size=cfg.chunk_size
    )
    randomise(module)
    u = torch.randn(ROWS, parity_length(cfg.chunk_size), size.d_model)
    start = time.perf_counter()
    pure = outputs_and_grads(module, u, lambda x: Mamba2.forward(module, x))
    with cpu_kernels() as fused, one_config():
        got = outputs_and_grads(module, u, lambda x: module.fused_scan(module.in_proj(x), fused))
    grads = {k: relative_error(pure[k], got[k]) for k in pure if k != "out"}
    worst = max(grads, key=lambda k: grads[k])
    return {
        "d_model": size.d_model,
        "heads": cfg.expand * size.d_model // size.headdim,
        "headdim": size.headdim,
        "d_state": size.d_state,
        "rows": ROWS,
        "steps": u.shape[1],
        "out_rel_err": relative_error(pure["out"], got["out"]),
        "grad_rel_err": grads[worst],
        "worst_grad": worst,
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str]) -> int:
    if os.environ.get("TRITON_INTERPRET") != "1":
        print("parity: TRITON_INTERPRET=1 must be set before Triton loads", file=sys.stderr)
        return 2
    cfg = ModelConfig.model_validate_json(argv[0])
    print(json.dumps({name: stream_parity(cfg, name) for name in ("node", "edge")}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
