"""Learning-rate schedule: linear warm-up, then cosine decay to ``min_lr_ratio`` of the peak."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LRScheduler


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak rate for optimizer step ``step`` (0-based).

    Warm-up climbs linearly to 1 over ``warmup_steps`` (step 0 already trains at 1/warmup), then a
    half cosine falls to ``min_lr_ratio`` at ``total_steps`` and stays there.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine(LRScheduler):
    """``lr_factor`` as a torch scheduler: call ``step()`` after each optimizer step.

    The rate is a closed form of the step count, so a state dict (``last_epoch`` and the settings)
    restores it exactly, whatever happened before the checkpoint.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int,
        total_steps: int,
        min_lr_ratio: float,
        last_epoch: int = -1,
    ) -> None:
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | torch.Tensor]:
        factor = lr_factor(self.last_epoch, self.warmup_steps, self.total_steps, self.min_lr_ratio)
        return [base_lr * factor for base_lr in self.base_lrs]
