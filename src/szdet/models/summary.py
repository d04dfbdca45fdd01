"""`szdet model-summary`: parameters and FLOPs per component of the V3 model, for one window."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from szdet.config import Config, ModelConfig
from szdet.models import build_model
from szdet.models.kernels import describe_path


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def forward_flops(cfg: ModelConfig, samples: int) -> dict[str, int]:
    """FLOPs (2 per multiply-add) of one window's forward pass, per top-level component.

    Counted by torch's FlopCounterMode (matrix products and convolutions) on the meta device:
    no memory, no compute, a second or two even at full size.
    """
    with torch.device("meta"):
        model = build_model(cfg)
        window = torch.zeros(1, cfg.in_channels, samples)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(window)
    per_module = counter.get_flop_counts()
    prefix = type(model).__name__
    out = {
        name: int(sum(per_module.get(f"{prefix}.{name}", {}).values()))
        for name, _ in model.named_children()
    }
    out["total"] = int(counter.get_total_flops())
    return out


def print_summary(config: Config) -> None:
    """Parameters and forward FLOPs per component, for one window of ``config``'s length."""
    cfg, samples = config.model, config.window_samples
    model = build_model(cfg)
    flops = forward_flops(cfg, samples)
    total = count_parameters(model)
    print(f"V3 detector: {cfg.in_channels} channels x {samples} samples -> logits")
    print(f"{'component':<14}{'parameters':>14}{'share':>8}{'GMAC/window fwd':>18}")
    for name, child in model.named_children():
        count = count_parameters(child)
        print(f"{name:<14}{count:>14,}{count / total:>8.1%}{flops[name] / 2e9:>18.2f}")
    print(f"{'total':<14}{total:>14,}{1:>8.0%}{flops['total'] / 2e9:>18.2f}")
    print(f"Mamba-2 on CUDA: {describe_path(cfg.kernels, 'cuda')}")
    print(f"Mamba-2 on CPU:  {describe_path(cfg.kernels, 'cpu')}")
