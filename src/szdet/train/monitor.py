"""What a long run reports as it goes: loss, throughput, ETA, non-finite steps, GPU peak memory.

The per-step figures stay on the device: each step adds to running sums there (``record``) and the
host fetches them all at once (``read``) at the loop's boundaries (loop.py). A host read waits for
every kernel queued before it; once a step, the GPU would idle while the host queued the next one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

from szdet.train.distributed import DistInfo, sum_across_ranks_
from szdet.train.step import StepResult

log = logging.getLogger(__name__)

# The device's running sums, in the order a read fetches them. The first are this rank's own, and a
# read sums them over ranks (losses; the checkpoint/stop wishes); the rest are equal on every rank
# (all skip alike), but for the index of this rank's last bad batch.
_SUMMED = ("interval_loss_sum", "epoch_loss_sum", "save", "stop")
_AGREED = ("interval_steps", "epoch_steps", "nonfinite_total", "nonfinite_in_row", "peak_in_row")
_SLOTS = (*_SUMMED, *_AGREED, "grad_norm", "bad_batch")
# What the host keeps of them between reads, and the checkpoint keeps.
_STATE = (
    "interval_loss_sum",
    "interval_steps",
    "epoch_loss_sum",
    "epoch_steps",
    "nonfinite_total",
    "nonfinite_in_row",
)


@dataclass(frozen=True)
class Boundary:
    """What a read found besides the counters the monitor keeps; every rank agrees on all but
    ``bad_ids``."""

    save: bool  # a periodic checkpoint is due (rank 0 keeps the clocks)
    stop: bool  # time limit, or a stop signal on any rank
    peak_in_row: int  # the longest run of skipped steps since the previous read
    grad_norm: float | None  # the last step's, before clipping; None if it was skipped
    bad_ids: torch.Tensor | None  # this rank's last batch with a non-finite loss or gradient


class StepMonitor:
    """Accumulates per-step statistics between log rows and over the epoch.

    The counters that outlive a row (non-finite totals and runs, the epoch's loss sums) are part
    of the checkpoint, so a resumed run reports exactly what an uninterrupted one would. The host
    copies (these attributes) are as of the last ``read``.
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
        self._sums = {n: torch.zeros((), dtype=torch.float64, device=device) for n in _SLOTS}
        self._sums["bad_batch"].fill_(-1)
        self._ids: list[torch.Tensor] = []  # the batches since the last read
        self.interval_loss_sum = self.epoch_loss_sum = 0.0
        self.interval_steps = self.epoch_steps = self.nonfinite_total = self.nonfinite_in_row = 0
        self._interval_start = time.perf_counter()
        self._interval_start_step = 0
        self._warned_memory = False

    def record(self, result: StepResult, ids: torch.Tensor) -> None:
        """One finished step, on the device; a skipped one adds no loss and extends the run."""
        s, skipped = self._sums, result.skipped
        # Float64 sums in step order: the same figures as adding the losses up on the host.
        loss = torch.where(skipped, 0.0, result.loss.double())
        s["interval_loss_sum"] += loss
        s["epoch_loss_sum"] += loss
        s["interval_steps"] += ~skipped
        s["epoch_steps"] += ~skipped
        s["nonfinite_total"] += skipped
        s["nonfinite_in_row"].add_(1).mul_(skipped)
        s["peak_in_row"].copy_(torch.maximum(s["peak_in_row"], s["nonfinite_in_row"]))
        s["grad_norm"].copy_(torch.where(skipped, torch.nan, result.grad_norm.double()))
        s["bad_batch"].masked_fill_(result.bad_here, len(self._ids))
        self._ids.append(ids)

    def read(self, save_due: bool, stop_due: bool, info: DistInfo) -> Boundary:
        """Fetch the sums (the one wait for the device) and share this rank's wishes; every rank
        calls this at the same step."""
        s = self._sums
        s["save"].fill_(float(save_due))
        s["stop"].fill_(float(stop_due))
        values = torch.stack([s[n] for n in _SLOTS])
        sum_across_ranks_(values[: len(_SUMMED)], info)
        v = dict(zip(_SLOTS, values.tolist(), strict=True))
        for name in _STATE:  # the losses summed over ranks -> their mean, as the rows report
            setattr(self, name, v[name] / info.world_size if name in _SUMMED else int(v[name]))
        bad = int(v["bad_batch"])
        boundary = Boundary(
            save=v["save"] > 0,
            stop=v["stop"] > 0,
            peak_in_row=int(v["peak_in_row"]),
            grad_norm=None if v["grad_norm"] != v["grad_norm"] else v["grad_norm"],
            bad_ids=self._ids[bad] if bad >= 0 else None,
        )
        s["peak_in_row"].copy_(s["nonfinite_in_row"])  # a run goes on across reads
        s["bad_batch"].fill_(-1)
        self._ids = []
        return boundary

    def step_row(self, step: int, epoch: int, lr: float, grad_norm: float | None) -> dict[str, Any]:
        """The metrics.jsonl row for ``step``; starts a new interval (every rank calls this)."""
        now = time.perf_counter()
        steps_done = step - self._interval_start_step
        elapsed_s = max(now - self._interval_start, 1e-9)
        steps_per_s = steps_done / elapsed_s
        row: dict[str, Any] = {
            "kind": "step",
            "step": step,
            "epoch": epoch,
            "loss": self.interval_loss_sum / self.interval_steps if self.interval_steps else None,
            "lr": lr,
            "grad_norm": grad_norm,
            "windows_per_s": steps_per_s * self.windows_per_step,
            "eta_s": (self.total_steps - step) / steps_per_s,
            "nonfinite_total": self.nonfinite_total,
        }
        if (peak := self.gpu_peak_gb()) is not None:
            row["gpu_peak_gb"] = peak
        self._set("interval_loss_sum", 0.0)
        self._set("interval_steps", 0)
        self._interval_start, self._interval_start_step = now, step
        return row

    def describe(self, row: dict[str, Any]) -> str:
        """The log line of a step row."""
        return (
            f"step {row['step']}/{self.total_steps} loss {format_value(row['loss'])} "
            f"lr {row['lr']:.2e} {row['windows_per_s']:.1f} windows/s "
            f"ETA {format_duration(row['eta_s'])} non-finite {row['nonfinite_total']}"
        )

    def end_epoch(self) -> float | None:
        """The epoch's mean training loss over finite steps; resets the epoch sums."""
        mean = self.epoch_loss_sum / self.epoch_steps if self.epoch_steps else None
        self._set("epoch_loss_sum", 0.0)
        self._set("epoch_steps", 0)
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
        assert not self._ids, "steps since the last read: read first"
        return {name: getattr(self, name) for name in _STATE}

    def load_state_dict(self, state: dict[str, Any], start_step: int) -> None:
        """Restore the counters of a checkpoint taken after step ``start_step``."""
        self._interval_start, self._interval_start_step = time.perf_counter(), start_step
        for name in _STATE:
            self._set(name, state[name])
        self._sums["peak_in_row"].fill_(state["nonfinite_in_row"])

    def _set(self, name: str, value: float) -> None:
        """One counter, on the host and the device alike. Each rank may hold the same loss sum
        (a checkpoint's, over all ranks): a read sums them and divides by the number of ranks."""
        self._sums[name].fill_(value)
        setattr(self, name, value)


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def format_value(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.4f}"
