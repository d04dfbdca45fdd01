"""One optimizer step: forward under autocast, focal loss (the detection's, plus the nodes' where
``train.node_loss_weight`` is set), backward, clip, AdamW, schedule.

The step never waits for the device. Whether it updates the weights is decided there (a
non-finite loss on any rank, or a non-finite gradient, skips the update); its loss, gradient norm
and verdict stay there as tensors, summed up by the monitor and read by the host only at the
loop's boundaries (monitor.py). On CUDA the one wait left is inside ``torch.linalg.eigh``
(models/graph.py), which checks its error codes on the host and has no variant that does not.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass

import torch

from szdet.config import TrainConfig
from szdet.train.distributed import DistInfo, sum_across_ranks_
from szdet.train.losses import focal_loss


@dataclass(frozen=True)
class StepResult:
    """What a step did. The tensors are on the device: reading one waits for it."""

    loss: torch.Tensor  # this rank's focal loss, float32 (non-finite ones are ``bad_here``)
    grad_norm: torch.Tensor  # before clipping, of the gradients all ranks share
    skipped: torch.Tensor  # bool, equal on every rank: the update was skipped
    bad_here: torch.Tensor  # bool: this rank's own loss, or the gradient, was non-finite
    lr: float  # the rate this step used


class Stepper:
    def __init__(
        self,
        cfg: TrainConfig,
        info: DistInfo,
        model: torch.nn.Module,
        ddp_model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        autocast_dtype: torch.dtype | None,
    ) -> None:
        self.cfg, self.info = cfg, info
        self.model, self.ddp_model = model, ddp_model
        self.optimizer, self.scheduler = optimizer, scheduler
        self.autocast_dtype = autocast_dtype

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, node_y: torch.Tensor | None = None
    ) -> StepResult:
        """Train on one batch as the loader gives it: ``x`` float16 (pinned on CUDA), ``y`` the
        per-sample labels, ``node_y`` the per-node ones (data/windows.py ``NodeRows``)."""
        device = self.info.device
        # float16 crosses (half the bytes of float32) and is widened on the device.
        x = x.to(device, non_blocking=True).float()
        y = y.to(device, non_blocking=True)
        if node_y is not None and self.cfg.node_loss_weight > 0:
            node_y = node_y.to(device, non_blocking=True)
        else:
            node_y = None
        try:
            loss = self._loss(x, y, node_y)
        except torch.linalg.LinAlgError:
            # eigh failed on finite input (non-finite input never reaches it, models/graph.py).
            # This rank must still backpropagate with the others (DDP all-reduces gradients in
            # backward): a forward of silence, times NaN, makes every gradient NaN on every rank,
            # so all skip alike.
            loss = self._loss(torch.zeros_like(x), y, node_y) * math.nan
        bad_loss = ~torch.isfinite(loss.detach())
        # Any rank's non-finite loss skips the update on all of them.
        bad_anywhere = sum_across_ranks_(bad_loss.float(), self.info) > 0
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip_norm)
        # Gradients are all-reduced by now: every rank sees this same norm.
        bad_norm = ~torch.isfinite(norm)
        skipped = bad_anywhere | bad_norm
        self._update(skipped)
        self.optimizer.zero_grad(set_to_none=True)
        lr = float(self.scheduler.get_last_lr()[0])
        with warnings.catch_warnings():
            # The schedule follows batches consumed, skipped ones included; torch warns when the
            # very first optimizer step was one of those, which is intended here.
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            self.scheduler.step()
        return StepResult(loss.detach(), norm, skipped, bad_loss | bad_norm, lr)

    def _loss(self, x: torch.Tensor, y: torch.Tensor, node_y: torch.Tensor | None) -> torch.Tensor:
        autocast = (
            torch.autocast(x.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        alpha, gamma = self.cfg.focal_alpha, self.cfg.focal_gamma
        with autocast:
            if node_y is None:
                return focal_loss(self.ddp_model(x), y, alpha, gamma)
            logits, node_logits = self.ddp_model(x, with_nodes=True)
        loss = focal_loss(logits, y, alpha, gamma)
        known = node_y >= 0  # UNKNOWN_NODE: a recording with seizures but no per-channel labels
        node_loss = focal_loss(node_logits, node_y, alpha, gamma, known)
        return loss + self.cfg.node_loss_weight * node_loss

    def _update(self, skipped: torch.Tensor) -> None:
        if self.optimizer.defaults.get("fused"):
            # Fused AdamW (the CUDA one, loop.py) takes the skip as a tensor, as under a
            # GradScaler: where ``found_inf`` is 1 it leaves weights, moments and step count be.
            self.optimizer.found_inf = skipped.float()  # type: ignore[attr-defined]
            self.optimizer.step()
            del self.optimizer.found_inf  # type: ignore[attr-defined]
        elif not skipped.item():  # the unfused AdamW has no such input; on the CPU a read is free
            self.optimizer.step()
