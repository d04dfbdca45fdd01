"""Model benchmarks (issue 3). Each figure is printed against a baseline measured in the same run.

    .venv/bin/python benchmarks/bench_model.py              # the CPU figures, ~2-3 minutes on 2 cores
    .venv/bin/python benchmarks/bench_model.py train-step --config configs/cloud/train.yaml \\
        --batch 64 --steps 10 --json out.json                # the trainer's step: windows/s, memory, MFU

CPU figures: chunked SSD vs the naive recurrence (L = 960, d_model 64; target >= 10x); the batched
graph stage vs a per-graph Python loop (B = 4, T = 960; target >= 50x); the full model's
forward+backward windows/s for the local and cloud configs (ratio: the TCN alone in the same run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from szdet.config import Config, ModelConfig
from szdet.config_load import load_config
from szdet.models import build_model, param_groups
from szdet.models.graph import GraphStage
from szdet.models.kernels import describe_path
from szdet.models.mamba2 import ssd_chunked, ssd_naive

ROOT = Path(__file__).resolve().parent.parent
WINDOW = Config().window_samples  # the reference window: 60 s at 256 Hz
H100_H200_BF16_DENSE_TFLOPS = 989.0  # NVIDIA's figure for the SXM parts, without sparsity


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Best time of ``repeats`` calls after a warm-up; repeats=0: the one call, no warm-up."""
    if repeats == 0:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_ssd() -> None:
    """Node-stream sizes: d_model 64 -> 16 heads of 8, d_state 16; one window's 19 sequences.

    Training pays forward + backward, where the naive loop's 960-step autograd graph costs most;
    the forward alone is printed too (both vectorise over batch, heads and state).
    """
    torch.manual_seed(0)
    b, length, h, p, n = 19, 960, 16, 8, 16
    inputs = [
        torch.randn(b, length, h, p),
        torch.rand(b, length, h) * 0.1,
        -torch.rand(h) * 15 - 1,
        torch.randn(b, length, 1, n),
        torch.randn(b, length, 1, n),
    ]
    leaves = [t.requires_grad_(True) for t in inputs]

    def chunked() -> torch.Tensor:
        return ssd_chunked(*leaves, chunk_size=16)

    def naive() -> torch.Tensor:
        return ssd_naive(*leaves)

    def train(scan: Callable[[], torch.Tensor]) -> None:
        scan().square().mean().backward()

    t_naive = best_of(lambda: train(naive), 0)
    t_chunked = best_of(lambda: train(chunked), 3)
    with torch.no_grad():
        f_naive = best_of(naive, 1)
        f_chunked = best_of(chunked, 3)
    print(
        f"SSD scan, L=960, d_model 64 (19 seqs x 16 heads x 8 x 16 state): fwd+bwd chunked "
        f"{t_chunked * 1e3:.0f} ms vs naive {t_naive * 1e3:.0f} ms = {t_naive / t_chunked:.0f}x "
        f"(target >= 10x); forward only {f_chunked * 1e3:.0f} vs {f_naive * 1e3:.0f} ms = "
        f"{f_naive / f_chunked:.1f}x"
    )


def bench_graph() -> None:
    """The whole graph stage (adjacency, PE, 2 SSGConv layers) on B x T graphs at once vs one by one."""
    torch.manual_seed(0)
    cfg = ModelConfig()
    stage = GraphStage(
        64, cfg.pe_dim, cfg.gnn_layers, cfg.gnn_alpha, cfg.gnn_hops, cfg.top_k, False
    )
    b, t, n = 4, 960, cfg.in_channels
    nodes = torch.randn(b, t, n, 64)
    weights = torch.rand(b, t, n * (n - 1) // 2)

    def loop() -> None:
        for i in range(b):
            for j in range(t):
                stage(nodes[i : i + 1, j : j + 1], weights[i : i + 1, j : j + 1])

    laplacians = torch.randn(b * t, n, n)
    laplacians = laplacians + laplacians.mT
    with torch.no_grad():
        t_loop = best_of(loop, 1)
        t_batched = best_of(lambda: stage(nodes, weights), 3)
        t_eigh = best_of(lambda: torch.linalg.eigh(laplacians), 3)
    print(
        f"graph stage, B=4 x T=960 graphs, forward: batched {t_batched * 1e3:.1f} ms vs per-graph "
        f"loop {t_loop * 1e3:.0f} ms = {t_loop / t_batched:.0f}x (target >= 50x); "
        f"{t_eigh * 1e3:.0f} ms of the batched time is LAPACK's eigh of the {b * t} 19x19 "
        f"Laplacians (the PE), which batching cannot shrink on a CPU"
    )


def bench_model(name: str, config: Path, batch: int) -> None:
    torch.manual_seed(0)
    cfg = load_config(config).model
    model = build_model(cfg)
    x = torch.randn(batch, cfg.in_channels, WINDOW)

    def step(module: torch.nn.Module) -> None:
        module(x).float().square().mean().backward()

    t_model = best_of(lambda: step(model), 2)
    t_tcn = best_of(lambda: step(model.tcn), 2)
    print(
        f"{name} model ({config.relative_to(ROOT)}), fwd+bwd, batch {batch}: "
        f"{batch / t_model:.2f} windows/s ({t_model:.2f} s/step); "
        f"{t_model / t_tcn:.1f}x the TCN alone ({batch / t_tcn:.2f} windows/s)"
    )


def model_flops_per_window(cfg: ModelConfig) -> int:
    """Forward+backward FLOPs of one window (matrix products and convolutions), no recompute."""
    cfg = cfg.model_copy(update={"recompute_pure_mamba": False})
    with torch.device("meta"):
        model = build_model(cfg)
        x = torch.zeros(1, cfg.in_channels, WINDOW)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x).sum().backward()
    return int(counter.get_total_flops())


def train_step(args: argparse.Namespace) -> dict:
    """The trainer's own step (Stepper: autocast, focal loss, clip, fused AdamW) on random data."""
    from szdet.device import autocast_dtype
    from szdet.train.distributed import DistInfo
    from szdet.train.schedule import WarmupCosine
    from szdet.train.step import Stepper

    cfg = load_config(args.config)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device)
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.train.weight_decay), lr=cfg.train.lr, fused=device.type == "cuda"
    )
    scheduler = WarmupCosine(optimizer, 0, args.warmup + args.steps, cfg.train.min_lr_ratio)
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    autocast = autocast_dtype(device, cfg.train.precision)
    stepper = Stepper(cfg.train, info, model, model, optimizer, scheduler, autocast)
    # float16, as the loader hands windows over (the step widens them on the device)
    x = torch.randn(args.batch, cfg.model.in_channels, WINDOW, device=device, dtype=torch.float16)
    y = (torch.rand(args.batch, WINDOW, device=device) < 0.1).float()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        stepper(x, y)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    results = [stepper(x, y) for _ in range(args.steps)]  # read only after the clock stops
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    windows_per_s = args.batch / seconds
    flops = model_flops_per_window(cfg.model)
    achieved_tflops = flops * windows_per_s / 1e12
    audit = audit_launches(lambda: stepper(x, y)) if args.audit_launches else None
    return {
        "config": str(args.config),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "mamba2_path": describe_path(cfg.model.kernels, device),
        "precision": "bf16 autocast" if autocast is not None else "fp32",
        "recompute_pure_mamba": cfg.model.recompute_pure_mamba,
        "batch": args.batch,
        "steps_timed": args.steps,
        "seconds_per_step": seconds,
        "windows_per_s": windows_per_s,
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 1e9
        if device.type == "cuda"
        else None,
        "model_gflop_per_window_fwd_bwd": flops / 1e9,
        "achieved_tflops": achieved_tflops,
        "mfu_vs_bf16_dense_peak": achieved_tflops / args.peak_tflops,
        "peak_tflops_assumed": args.peak_tflops,
        "losses_finite": not any(bool(r.skipped) for r in results),
        "launch_audit": audit,
    }


def audit_launches(step: Callable[[], object]) -> dict:
    """One more step, every Triton launch's grid recorded as it runs (after the timing: the
    recording costs host time): the launch audit on the real device."""
    from szdet.models.kernel_proof.audit import grid_report
    from szdet.models.kernel_proof.launches import recording

    with recording(execute=True) as launches:
        step()
        torch.cuda.synchronize()
    largest, over = grid_report(launches)
    return {"launches": len(launches), "max_grid": largest, "over_limit": over}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what")
    p = sub.add_parser("train-step", help="windows/s, peak memory and MFU of one training step")
    p.add_argument("--config", type=Path, default=ROOT / "configs/cloud/train.yaml")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--peak-tflops", type=float, default=H100_H200_BF16_DENSE_TFLOPS)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument(
        "--audit-launches", action="store_true", help="CUDA: record every Triton grid of a step"
    )
    args = parser.parse_args(argv)
    if args.what == "train-step":
        result = train_step(args)
        text = json.dumps(result, indent=2)
        print(text)
        if args.json:
            args.json.write_text(text + "\n")
        return 0
    bench_ssd()
    bench_graph()
    bench_model("local", ROOT / "configs/local/smoke.yaml", batch=8)
    bench_model("cloud", ROOT / "configs/cloud/train.yaml", batch=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
