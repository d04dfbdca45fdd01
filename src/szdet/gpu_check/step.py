"""The trainer's own optimizer step, timed: stages 2 (train_step) and 4 (variants).

It is ``szdet.train.step.Stepper`` as training builds it (autocast, focal losses, clipping, AdamW,
fused on CUDA, the schedule) on random windows of the config's length and random labels, as the
loader hands them over. The first step is timed apart: it pays cuDNN's algorithm search and Triton's
compile and autotune. Then warm-up steps, then each timed step between device events; the figure
is the median. MFU counts the matrix products and convolutions of one window's forward and
backward (FlopCounterMode on the meta device) against the detected GPU's dense bf16 peak.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from szdet.config import Config, ModelConfig
from szdet.device import autocast_dtype
from szdet.models import build_model, param_groups
from szdet.models.kernels import select_path
from szdet.train.distributed import DistInfo
from szdet.train.schedule import WarmupCosine
from szdet.train.step import Stepper

# Dense bf16 tensor-core peaks, without sparsity (NVIDIA's datasheets; SXM parts).
BF16_PEAK_TFLOPS = {"A100": 312.0, "H100": 989.0, "H200": 989.0}


def bf16_peak_tflops(gpu_name: str) -> float | None:
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in gpu_name), None)


def flops_per_window(cfg: ModelConfig, samples: int) -> int:
    """Forward+backward FLOPs of one window (matrix products and convolutions), no recompute."""
    cfg = cfg.model_copy(update={"recompute_pure_mamba": False})
    with torch.device("meta"):
        model = build_model(cfg)
        x = torch.zeros(1, cfg.in_channels, samples)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x).sum().backward()
    return int(counter.get_total_flops())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock:
    """Durations of device work: CUDA events on a GPU, the host clock elsewhere."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.marks: list[Any] = []

    def mark(self) -> None:
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def intervals_s(self) -> list[float]:
        sync(self.device)
        pairs = zip(self.marks, self.marks[1:], strict=False)
        if self.device.type == "cuda":
            return [a.elapsed_time(b) / 1e3 for a, b in pairs]
        return [b - a for a, b in pairs]


class TrainStep:
    """A model, its optimizer and the trainer's Stepper at ``batch`` on ``device``."""

    def __init__(self, cfg: Config, device: torch.device, batch: int) -> None:
        self.cfg, self.device, self.batch = cfg, device, batch
        # As training does: a config that requires the fused kernels is refused where they did
        # not load, rather than timing the pure path in their place.
        self.mamba2_path = select_path(cfg.model.kernels, device)
        torch.manual_seed(0)
        self.model = build_model(cfg.model).to(device)
        optimizer = torch.optim.AdamW(
            param_groups(self.model, cfg.train.weight_decay),
            lr=cfg.train.lr,
            fused=device.type == "cuda",
        )
        scheduler = WarmupCosine(optimizer, 10, 10_000, cfg.train.min_lr_ratio)
        self.autocast = autocast_dtype(device, cfg.train.precision)
        info = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
        self.stepper = Stepper(
            cfg.train, info, self.model, self.model, optimizer, scheduler, self.autocast
        )
        window = cfg.window_samples
        self.x = torch.randn(batch, cfg.model.in_channels, window, device=device).half()
        self.y = (torch.rand(batch, window, device=device) < 0.1).float()
        # Per-node labels as the loader gives them (data/windows.py): 0/1, some unknown (-1).
        steps = (batch, cfg.model.in_channels, window // cfg.model.downsample)
        self.node_y = torch.randint(-1, 2, steps, dtype=torch.int8, device=device)

    def step(self) -> Any:
        return self.stepper(self.x, self.y, self.node_y)

    def measure(self, warmup: int, steps: int) -> dict[str, Any]:
        """Windows/s and memory of ``steps`` timed steps after the first and ``warmup`` more."""
        start = time.perf_counter()
        results = [self.step()]
        sync(self.device)
        first_step_s = time.perf_counter() - start
        results += [self.step() for _ in range(warmup)]
        sync(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        clock = StepClock(self.device)
        clock.mark()
        for _ in range(steps):
            results.append(self.step())
            clock.mark()
        step_s = statistics.median(clock.intervals_s())
        cfg = self.cfg
        gflop = flops_per_window(cfg.model, cfg.window_samples) / 1e9
        windows_per_s = self.batch / step_s
        measured: dict[str, Any] = {
            "batch": self.batch,
            "mamba2_path": self.mamba2_path,
            "precision": "bf16 autocast" if self.autocast is not None else "float32",
            "first_step_s": round(first_step_s, 3),
            "steps_timed": steps,
            "step_s_median": step_s,
            "windows_per_s": windows_per_s,
            "gflop_per_window_fwd_bwd": gflop,
            "achieved_tflops": gflop * windows_per_s / 1e3,
            "losses_finite": not any(bool(r.skipped) for r in results),
        }
        return {**measured, **self._device_figures(measured["achieved_tflops"])}

    def _device_figures(self, achieved_tflops: float) -> dict[str, Any]:
        """Peak memory and MFU: GPU figures (None on a CPU, which has neither to report)."""
        if self.device.type != "cuda":
            return {"peak_allocated_gb": None, "peak_reserved_gb": None, "mfu": None}
        peak = bf16_peak_tflops(torch.cuda.get_device_name(self.device))
        return {
            "peak_allocated_gb": torch.cuda.max_memory_allocated(self.device) / 1e9,
            "peak_reserved_gb": torch.cuda.max_memory_reserved(self.device) / 1e9,
            "bf16_peak_tflops": peak,
            "mfu": achieved_tflops / peak if peak else None,
        }

    def launch_audit(self) -> dict[str, Any]:
        """One more step with every Triton launch's grid recorded as it runs, against CUDA's
        limits (kernel_proof/audit.py): the audit the CPU proof makes, on the device."""
        if self.device.type != "cuda":
            return {"skipped": "the CPU runs the pure path: no Triton launches to audit"}
        from szdet.kernel_proof.audit import grid_report
        from szdet.kernel_proof.launches import recording

        with recording(execute=True) as launches:
            self.step()
            sync(self.device)
        largest, over = grid_report(launches)
        return {"launches": len(launches), "max_grid": largest, "over_limit": over}


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error)
