"""Before stage 1 on a GPU: every Triton binary the stages will launch, compiled on every core.

Triton's autotuner compiles its configs one by one as it meets them, a second or more each, and
the stages meet a few hundred (each autotune config of each kernel, at two head widths). The CPU
proof already knows them all: the launch recording (kernel_proof/audit.py) lists each
launch of a training step with every config, and the AOT compile (kernel_proof/aot.py)
builds each distinct binary exactly as ``JITFunction.run`` would, in a process per core. Built
here for this GPU, they land in Triton's cache, and the autotuner only times them.
"""

from __future__ import annotations

from typing import Any

import torch

from szdet.config import Config
from szdet.gpu_check.variants import VARIANTS, variant_config
from szdet.kernel_proof.aot import compile_all
from szdet.kernel_proof.audit import model_launches
from szdet.kernel_proof.launches import Launch
from szdet.kernel_proof.shims import GpuModel, kernel_target


def launches_to_compile(cfg: Config, batch: int, gpu: GpuModel) -> list[Launch]:
    """The launches of a training step and a validation batch at ``batch``, for ``cfg`` and its
    wide-heads variant (the one variant with kernels of its own)."""
    wide = next(v for v in VARIANTS if v.name == "wide_heads")
    launches: list[Launch] = []
    for each in (cfg, variant_config(cfg, wide)):
        each = each.model_copy(deep=True)
        each.train.batch_size = batch
        launches += [x for phase in model_launches(each, gpu).values() for x in phase]
    return launches


def precompile(cfg: Config, batch: int, device: torch.device) -> dict[str, Any]:
    gpu = kernel_target(device)
    compiled = compile_all({gpu: launches_to_compile(cfg, batch, gpu)})
    target = compiled["targets"][f"sm_{gpu.capability}"]
    return {
        "target": f"sm_{gpu.capability}",
        "binaries": target["binaries"],
        "failed": compiled["failed"][:5],
        "compile_s": compiled["compile_s"],
    }
