"""One optimizer step: forward under autocast, focal loss, backward, clip, AdamW, schedule."""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass

import torch

from szdet.config import TrainConfig
from szdet.train.distributed import DistInfo, sum_across_ranks
from szdet.train.losses import focal_loss


@dataclass(frozen=True)
class StepResult:
    loss: float | None  # mean over ranks; None: a non-finite loss or gradient skipped the update
    grad_norm: float | None  # before clipping
    lr: float  # the rate this step used
    bad_here: bool  # this rank's own loss or gradient was non-finite
    save_now: bool  # a periodic checkpoint is due (agreed by every rank)
    stop_now: bool  # time limit or SIGTERM (agreed by every rank)


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
        self, x: torch.Tensor, y: torch.Tensor, save_due: bool, stop_due: bool
    ) -> StepResult:
        """Train on one batch. ``save_due``/``stop_due`` are rank 0's wishes, shared here."""
        device = self.info.device
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        autocast = (
            torch.autocast(device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        loss: torch.Tensor | None = None
        try:
            with autocast:
                logits = self.ddp_model(x)
            loss = focal_loss(logits, y, self.cfg.focal_alpha, self.cfg.focal_gamma)
            loss_value = float(loss.detach())
        except torch.linalg.LinAlgError:
            # eigh/solve on non-finite activations raise instead of returning NaN: the same
            # numerical failure as a NaN loss, counted and skipped alike.
            loss_value = math.nan
        finite = math.isfinite(loss_value)
        # One small all-reduce agrees on what every rank must do alike: skip the update if any
        # rank's loss is non-finite (DDP's gradient all-reduce would spread its NaN to all), and
        # checkpoint or stop when rank 0 says so.
        loss_sum, bad_ranks, save, stop = sum_across_ranks(
            [loss_value if finite else 0.0, float(not finite), float(save_due), float(stop_due)],
            self.info,
        )
        skip, grad_norm = bad_ranks > 0, None
        if not skip:
            assert loss is not None
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip_norm)
            grad_norm = float(norm)
            # Gradients are already all-reduced: every rank sees this same norm and skips alike.
            skip = not math.isfinite(grad_norm)
            if not skip:
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        lr = float(self.scheduler.get_last_lr()[0])
        with warnings.catch_warnings():
            # The schedule follows batches consumed, skipped ones included; torch warns when the
            # very first optimizer step was one of those, which is intended here.
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            self.scheduler.step()
        return StepResult(
            loss=None if skip else loss_sum / self.info.world_size,
            grad_norm=None if skip else grad_norm,
            lr=lr,
            bad_here=not finite or (skip and bad_ranks == 0),
            save_now=save > 0,
            stop_now=stop > 0,
        )
