"""Focal loss on per-sample seizure logits (Lin et al. 2017), the training objective.

Seizure samples are a few percent of the signal; the focal term (1 - p_t)^gamma shrinks the loss of
samples the model already gets right, so the many easy background samples do not drown the rare
hard ones, and alpha balances the two classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.5,
    gamma: float = 2.0,
    known: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean focal loss of ``logits`` against 0/1 ``targets`` (same shape), as a float32 scalar;
    with ``known`` (bool, same shape), the mean over the known elements only (0 if none is).

    Computed from log-sigmoids, never from probabilities, so logits of any size stay finite; and in
    float32 even inside a bf16 autocast region, whose 8-bit mantissa would flatten the focal term.
    """
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logits = logits.float()
        targets = targets.float()
        if known is not None:  # an unknown target may hold anything (NaN, -1): it must not reach
            targets = torch.where(known, targets, 0.0)  # even a gradient that is then masked
        log_p = F.logsigmoid(logits)  # log P(seizure)
        log_q = F.logsigmoid(-logits)  # log P(background)
        log_pt = targets * log_p + (1.0 - targets) * log_q  # log-probability of the true class
        # 1 - p_t as -expm1(log p_t): exact near p_t = 1, where 1 - exp() would cancel to zero.
        miss = (-torch.expm1(log_pt)).clamp_min(0.0)
        alpha_t = alpha * targets + (1.0 - alpha) * (1.0 - targets)
        loss = -alpha_t * miss.pow(gamma) * log_pt
        if known is None:
            return loss.mean()
        return torch.where(known, loss, 0.0).sum() / known.sum().clamp_min(1)
