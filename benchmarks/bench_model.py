"""Model benchmarks on this CPU. Each figure is printed against a baseline measured in the same run.

    .venv/bin/python benchmarks/bench_model.py              # ~4 minutes on 2 idle cores

Chunked SSD vs the naive recurrence (L = 960, d_model 64; target >= 10x); the batched graph stage
vs a per-graph Python loop (B = 4, T = 960; target >= 50x), and the PE's two eigensolvers on a
training batch's 61,440 Laplacians; the full model's forward+backward windows/s for the local and
cloud configs (ratio: the TCN alone in the same run). The trainer's step on a GPU (windows/s,
memory, MFU) is stage 2 of scripts/gpu_check.sh; the speed variants are benchmarks/bench_variants.py.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from szdet.config import Config, ModelConfig
from szdet.config_load import load_config
from szdet.models import build_model
from szdet.models.eigen import SWEEPS, jacobi_eigh
from szdet.models.graph import GraphStage
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
    # The PE's solve for a training batch (B=64 x T=960) both ways (model.eigensolver).
    sym = torch.randn(64 * t, n, n)
    sym = sym + sym.mT
    with torch.no_grad():
        t_lapack = best_of(lambda: torch.linalg.eigh(sym), 3)
        t_jacobi = best_of(lambda: jacobi_eigh(sym), 1)  # ~25 s a call here
    print(
        f"eigensolvers, {64 * t} symmetric 19x19 (the PE of a B=64 x T=960 batch), forward: "
        f"jacobi_eigh ({SWEEPS} sweeps) {t_jacobi * 1e3:.0f} ms vs LAPACK eigh "
        f"{t_lapack * 1e3:.0f} ms = {t_jacobi / t_lapack:.1f}x slower on a CPU (jacobi is for a "
        f"GPU and ONNX: plain tensor ops, no host sync, no solver heuristics)"
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


def main() -> int:
    bench_ssd()
    bench_graph()
    bench_model("local", ROOT / "configs/local/smoke.yaml", batch=8)
    bench_model("cloud", ROOT / "configs/cloud/train.yaml", batch=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
