"""What a long run reports as it goes: loss, throughput, ETA, non-finite steps, GPU peak memory."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

log = logging.getLogger(__name__)


class StepMonitor:
    """Accumulates per-step statistics between log rows and over the epoch.

    The counters that outlive a row (non-finite totals and runs, the epoch's loss sums) are part
    of the checkpoint, so a resumed run reports exactly what an uninterrupted one would.
    """

    def __init__(
        self,
        total_steps: int,
        windows_per_step: int,
        device: torch.device,
        gpu_memory_warn_gb: float,
    ) -> None:
        self.total_steps = total_steps
        self.windows_per_step = windows_per_step
        self.device = device
        self.gpu_memory_warn_gb = gpu_memory_warn_gb
        self.nonfinite_total = 0
        self.nonfinite_in_row = 0
        self.epoch_loss_sum = 0.0
        self.epoch_steps = 0
        self._interval_loss_sum = 0.0
        self._interval_steps = 0
        self._interval_start = time.perf_counter()
        self._interval_start_step = 0
        self._warned_memory = False

    def record(self, loss: float | None) -> None:
        """One finished step; ``loss`` None for a skipped, non-finite step."""
        if loss is None:
            self.nonfinite_total += 1
            self.nonfinite_in_row += 1
            return
        self.nonfinite_in_row = 0
        self._interval_loss_sum += loss
        self._interval_steps += 1
        self.epoch_loss_sum += loss
        self.epoch_steps += 1

    def step_row(self, step: int, epoch: int, lr: float, grad_norm: float | None) -> dict[str, Any]:
        """The metrics.jsonl row for ``step``; starts a new throughput interval."""
        now = time.perf_counter()
        steps_done = step - self._interval_start_step
        elapsed_s = max(now - self._interval_start, 1e-9)
        steps_per_s = steps_done / elapsed_s
        row: dict[str, Any] = {
            "kind": "step",
            "step": step,
            "epoch": epoch,
            "loss": self._interval_loss_sum / self._interval_steps
            if self._interval_steps
            else None,
            "lr": lr,
            "grad_norm": grad_norm,
            "windows_per_s": steps_per_s * self.windows_per_step,
            "eta_s": (self.total_steps - step) / steps_per_s,
            "nonfinite_total": self.nonfinite_total,
        }
        if (peak := self.gpu_peak_gb()) is not None:
            row["gpu_peak_gb"] = peak
        self._interval_loss_sum, self._interval_steps = 0.0, 0
        self._interval_start, self._interval_start_step = now, step
        return row

    def end_epoch(self) -> float | None:
        """The epoch's mean training loss over finite steps; resets the epoch sums."""
        mean = self.epoch_loss_sum / self.epoch_steps if self.epoch_steps else None
        self.epoch_loss_sum, self.epoch_steps = 0.0, 0
        return mean

    def gpu_peak_gb(self) -> float | None:
        """Peak GPU memory allocated by this process so far; warns once above the limit."""
        if self.device.type != "cuda":
            return None
        peak_gb = torch.cuda.max_memory_allocated(self.device) / 1e9
        if peak_gb > self.gpu_memory_warn_gb and not self._warned_memory:
            log.warning(
                "GPU peak memory %.1f GB exceeds train.gpu_memory_warn_gb=%.1f GB",
                peak_gb,
                self.gpu_memory_warn_gb,
            )
            self._warned_memory = True
        return peak_gb

    def state_dict(self) -> dict[str, Any]:
        return {
            "nonfinite_total": self.nonfinite_total,
            "nonfinite_in_row": self.nonfinite_in_row,
            "epoch_loss_sum": self.epoch_loss_sum,
            "epoch_steps": self.epoch_steps,
            "interval_loss_sum": self._interval_loss_sum,
            "interval_steps": self._interval_steps,
        }

    def load_state_dict(self, state: dict[str, Any], start_step: int) -> None:
        """Restore the counters of a checkpoint taken after step ``start_step``."""
        self._interval_start, self._interval_start_step = time.perf_counter(), start_step
        self.nonfinite_total = state["nonfinite_total"]
        self.nonfinite_in_row = state["nonfinite_in_row"]
        self.epoch_loss_sum = state["epoch_loss_sum"]
        self.epoch_steps = state["epoch_steps"]
        self._interval_loss_sum = state["interval_loss_sum"]
        self._interval_steps = state["interval_steps"]


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
