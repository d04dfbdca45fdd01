"""Inference on this CPU at the cloud model's size, in EEG-hours per CPU-hour: (a) the PyTorch path
`szdet detect` runs (eval mode, no_grad, pure Mamba-2 with its compiled CPU loop, eigh PE, the
windows in parallel, one forward per core: evaluate/cpu_workers.py), (a') the same without numba
(the chunked inference scan: mamba2_cpu.py's baseline) and (a'') one forward with every op over
all cores (torch's default, cpu_workers.py's baseline); (z) the network's autograd form without
gradients, on all cores: the streams as they ran before their inference forms (models/mamba2.py
`_inferred`, mamba2_cpu.py), near the path issue 18's speed goals start from; (b) the same network
exported to ONNX (models/onnx_export.py) and run by onnxruntime; (c) the multi-rate TCN variant in
all of these.
Ratios are to (a), measured in the same run, round-robin (each round times every engine once) so
that the machine's drift falls on all alike. Random weights (seed 0): the same compute as trained
ones. Also: (a'')'s time per component, the export's time and size.

    .venv/bin/python benchmarks/bench_cpu_inference.py [--config configs/cloud/train.yaml]
        [--threads 2] [--batch THREADS x evaluate.cpu_batch_size] [--repeats 3]

One EEG-hour is 3600 / windows.eval_stride_s windows of windows.length_s (overlapping windows are
averaged when stitched); EEG-hours per CPU-hour = EEG-hours processed / (wall s x threads / 3600).
"""

from __future__ import annotations

import argparse
import copy
import functools
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from szdet.config import Config
from szdet.config_load import load_config
from szdet.device import keep_freed_memory
from szdet.evaluate.cpu_workers import CoreWorkers
from szdet.evaluate.onnx_engine import OnnxNetwork
from szdet.gpu_check.variants import VARIANTS, variant_config
from szdet.models import build_model, mamba2_cpu
from szdet.models.onnx_export import export_onnx

ROOT = Path(__file__).resolve().parent.parent


class ComponentTimes:
    """Seconds spent in each top-level component of ``network`` per forward call (module hooks;
    on a CPU every op has finished when its module returns)."""

    def __init__(self, network: nn.Module) -> None:
        self.calls: list[dict[str, float]] = []
        self._started: dict[str, float] = {}
        network.register_forward_pre_hook(lambda *_: self.calls.append({}))
        network.register_forward_pre_hook(functools.partial(self._start, "total"))
        network.register_forward_hook(functools.partial(self._stop, "total"))
        for name, child in network.named_children():
            child.register_forward_pre_hook(functools.partial(self._start, name))
            child.register_forward_hook(functools.partial(self._stop, name))

    def _start(self, name: str, *_: object) -> None:
        self._started[name] = time.perf_counter()

    def _stop(self, name: str, *_: object) -> None:
        self.calls[-1][name] = time.perf_counter() - self._started[name]

    def fastest(self) -> dict[str, float]:
        return min(self.calls, key=lambda call: call["total"])


def best_times(
    engines: list[nn.Module], x: torch.Tensor, repeats: int
) -> tuple[list[float], list[torch.Tensor]]:
    """Best wall time of one forward of ``x`` per engine, round-robin, after one warm-up call
    each (allocator pools, onnxruntime's first-run planning); and the warm-up calls' logits."""
    best = [float("inf")] * len(engines)
    with torch.no_grad():
        logits = [engine(x) for engine in engines]
        for _ in range(repeats):
            for i, engine in enumerate(engines):
                start = time.perf_counter()
                engine(x)
                best[i] = min(best[i], time.perf_counter() - start)
    return best, logits


class WithoutNumba(nn.Module):
    """``network`` as it runs where numba is not installed."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        installed, mamba2_cpu.numba = mamba2_cpu.numba, None
        try:
            return self.network(x)
        finally:
            mamba2_cpu.numba = installed


class AutogradForm(nn.Module):
    """``network``'s training forward without gradients (frozen weights): what ran before the
    inference forms, which run only where autograd is off (models/mamba2.py ``inferring``)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = copy.deepcopy(network).requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            return self.network(x)


class OneCorePerForward(nn.Module):
    """``network`` as `detect` runs it on a CPU: the batch split over ``workers``' threads."""

    def __init__(self, network: nn.Module, workers: CoreWorkers) -> None:
        super().__init__()
        self.network, self.workers = network, workers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.workers.map(self.network, x))


def exported(cfg: Config, network: nn.Module, path: Path, threads: int) -> OnnxNetwork:
    start = time.perf_counter()
    export_onnx(cfg.model, network.state_dict(), cfg.window_samples, path)
    seconds = time.perf_counter() - start
    print(f"export {path.stem}: {seconds:.0f} s, {path.stat().st_size / 1e6:.1f} MB")
    return OnnxNetwork(path, threads=threads)


def print_components(times: dict[str, float]) -> None:
    total = times.pop("total")
    times["other (pair similarity, reshapes)"] = total - sum(times.values())
    print(f"(a'') per component, its fastest forward ({total:.2f} s):")
    for name, seconds in times.items():
        print(f"  {name:<36}{seconds:>8.2f} s{seconds / total:>8.1%}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs/cloud/train.yaml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, help="windows per round (default: one forward of "
                        "evaluate.cpu_batch_size windows per thread, as detect runs)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as `detect` does on a CPU (evaluate/inference.py load_detector)
    cfg = load_config(args.config)
    batch = args.batch or args.threads * cfg.evaluate.cpu_batch_size
    multirate = variant_config(cfg, next(v for v in VARIANTS if v.name == "multirate_tcn"))
    windows_per_eeg_hour = 3600 / cfg.windows.eval_stride_s
    print(f"{args.config}: {cfg.windows.length_s:g} s windows every {cfg.windows.eval_stride_s:g} s "
          f"({windows_per_eeg_hour:g} per EEG-hour), batch {batch}, {args.threads} threads")  # fmt: skip
    torch.manual_seed(0)
    reference, multirate_net = build_model(cfg.model).eval(), build_model(multirate.model).eval()
    all_cores = copy.deepcopy(reference)  # its own hooks: (a)'s forwards run at once
    timer = ComponentTimes(all_cores)
    with tempfile.TemporaryDirectory() as tmp, CoreWorkers(args.threads) as workers:
        engines = {
            "(a) torch, one forward per core": OneCorePerForward(reference, workers),
            "(a') torch, no numba": WithoutNumba(OneCorePerForward(reference, workers)),
            "(a'') torch, every op on all cores": all_cores,
            "(z) autograd form, all cores": AutogradForm(reference),
            "(b) onnxruntime": exported(cfg, reference, Path(tmp, "reference.onnx"), args.threads),
            "(c) torch, multi-rate TCN": OneCorePerForward(multirate_net, workers),
            "(c') multi-rate, no numba": WithoutNumba(OneCorePerForward(multirate_net, workers)),
            "(c'') multi-rate, all cores": multirate_net,
            "(c) onnxruntime, multi-rate": exported(
                multirate, multirate_net, Path(tmp, "multirate.onnx"), args.threads
            ),
        }
        x = torch.randn(batch, cfg.model.in_channels, cfg.window_samples)
        seconds, logits = best_times(list(engines.values()), x, args.repeats)
    names = list(engines)

    def at(label: str) -> int:  # an engine's place in the run, by the start of its name
        return next(i for i, name in enumerate(names) if name.startswith(label))

    pairs = ((at("(a) "), at("(b) "), "reference: onnxruntime"),
             (at("(c) torch"), at("(c) onnx"), "multi-rate: onnxruntime"),
             (at("(a) "), at("(a') "), "reference: no numba"),
             (at("(c) torch"), at("(c') "), "multi-rate: no numba"),
             (at("(a) "), at("(a'') "), "reference: all cores"),
             (at("(c) torch"), at("(c'') "), "multi-rate: all cores"),
             (at("(a) "), at("(z) "), "reference: autograd form"))  # fmt: skip
    for run, other, what in pairs:
        gap = (torch.sigmoid(logits[run]) - torch.sigmoid(logits[other])).abs()
        beyond = (gap > 1e-4).float().mean().item()  # top-k near-ties: tests/test_onnx.py
        print(f"{what} vs torch probabilities, max abs difference "
              f"{gap.max().item():.2g}, {beyond:.2%} of samples beyond 1e-4")  # fmt: skip
    print(
        f"{'engine':<36}{'windows/s':>11}{'s/window':>10}{'EEG-h/CPU-h':>13}{'vs (a)':>8}{'vs (z)':>8}"
    )
    for name, batch_seconds in zip(engines, seconds, strict=True):
        per_window = batch_seconds / batch
        eeg_hours = batch / windows_per_eeg_hour
        cpu_hours = batch_seconds * args.threads / 3600
        print(f"{name:<36}{1 / per_window:>11.2f}{per_window:>10.2f}{eeg_hours / cpu_hours:>13.1f}"
              f"{seconds[at('(a) ')] / batch_seconds:>7.2f}x"
              f"{seconds[at('(z) ')] / batch_seconds:>7.2f}x")  # fmt: skip
    print_components(timer.fastest())
    return 0


if __name__ == "__main__":
    sys.exit(main())
