"""Every Triton launch of one training step and one validation batch, checked against CUDA's limits.

The whole model runs on the meta device (shapes and dtypes, no data: batch 64 costs nothing),
with the fused Mamba-2 path switched on for meta as it is for CUDA, so the shapes the kernels see
are the ones the model's own code hands them. Training's bf16 autocast is reproduced where it
reaches the kernels: each Mamba-2's ``in_proj`` output is bf16 (autocast's linear), and mamba_ssm
sees autocast enabled (shims.py). The step is forward and backward at ``train.batch_size``; the
validation batch is a no-grad forward at ``evaluate.batch_size``, both at the window's length.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from szdet.config import Config
from szdet.kernel_proof.launches import Launch, recording
from szdet.kernel_proof.shims import GpuModel, cpu_kernels, patched
from szdet.models import build_model, kernels

GRID_LIMITS = (2**31 - 1, kernels.CUDA_GRID_YZ_MAX, kernels.CUDA_GRID_YZ_MAX)


def _bf16_in_proj(model: nn.Module) -> list[Any]:
    """Hooks that make every Mamba-2 ``in_proj`` return bf16, as under CUDA autocast."""
    return [
        module.in_proj.register_forward_hook(lambda _m, _i, out: out.to(torch.bfloat16))
        for module in model.modules()
        if isinstance(module, kernels.AutoMamba2)
    ]


def model_launches(cfg: Config, gpu: GpuModel) -> dict[str, list[Launch]]:
    """The recorded launches of a training step ("train") and a validation batch ("validate")."""
    window = cfg.window_samples
    model_cfg = cfg.model.model_copy(update={"kernels": "cuda"})
    with torch.device("meta"):
        model = build_model(model_cfg)
    hooks = _bf16_in_proj(model)
    device_types = kernels.KERNEL_DEVICE_TYPES | {"meta"}
    out: dict[str, list[Launch]] = {}
    with (
        cpu_kernels(gpu, autocast_bf16=True) as fused,
        patched(kernels, "KERNEL_DEVICE_TYPES", device_types),
        patched(kernels, "fused_mamba2_kernel", lambda: fused),
    ):
        model.train()
        x = torch.empty(cfg.train.batch_size, cfg.model.in_channels, window, device="meta")
        with recording() as out["train"]:
            model(x).float().mean().backward()
        model.eval()
        x = torch.empty(cfg.evaluate.batch_size, cfg.model.in_channels, window, device="meta")
        with recording() as out["validate"], torch.no_grad():
            model(x)
    for hook in hooks:
        hook.remove()
    return out


def grid_report(launches: list[Launch]) -> tuple[dict[str, list[int]], list[dict[str, Any]]]:
    """(largest grid per kernel, one entry per kernel whose launches exceed a limit)."""
    largest: dict[str, list[int]] = {}
    for launch in launches:
        old = largest.get(launch.kernel, [0, 0, 0])
        largest[launch.kernel] = [max(a, b) for a, b in zip(old, launch.grid, strict=True)]
    over = [
        {"kernel": name, "grid": grid, "limits": list(GRID_LIMITS)}
        for name, grid in sorted(largest.items())
        if any(d > limit for d, limit in zip(grid, GRID_LIMITS, strict=True))
    ]
    return largest, over


def launch_audit(cfg: Config, recorded: list[dict[str, list[Launch]]]) -> dict[str, Any]:
    """The audit's JSON: largest grid per kernel over every recording, and what exceeds a limit."""
    largest, over = grid_report(
        [launch for phases in recorded for g in phases.values() for launch in g]
    )
    return {
        "batch": cfg.train.batch_size,
        "validation_batch": cfg.evaluate.batch_size,
        "window_samples": cfg.window_samples,
        "launches": {phase: len(group) for phase, group in recorded[0].items()},
        "kernels": len(largest),
        "max_grid": largest,
        "limits": list(GRID_LIMITS),
        "over_limit": over,
        "max_blocks_per_launch": max((math.prod(g) for g in largest.values()), default=0),
    }
