"""The V3 dual-stream detector: TCN encoder, Mamba-2 node and edge streams, dynamic graph.

``build_model(cfg)`` builds it on the CPU with the pure-PyTorch Mamba-2; moving it to CUDA with
``model.kernels: auto`` and mamba_ssm installed makes every Mamba-2 call mamba_ssm's fused kernel
(see ``kernels.py``), with the same state dict either way.
"""

from __future__ import annotations

from torch import nn

from szdet.config import ModelConfig
from szdet.models.detector import V3Detector


def build_model(cfg: ModelConfig) -> nn.Module:
    """forward(x: (B, in_channels, L) float) -> logits (B, L), L divisible by cfg.downsample;
    ``with_nodes=True`` also each node's logit per model step, (B, in_channels, L / downsample)."""
    return V3Detector(cfg)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: weight decay for matrices and kernels; none for biases, norm weights,
    A_log, D, dt_bias (every 1-D parameter) and anything marked ``_no_weight_decay``."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        exempt = param.ndim < 2 or getattr(param, "_no_weight_decay", False)
        (no_decay if exempt else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


__all__ = ["build_model", "param_groups"]
