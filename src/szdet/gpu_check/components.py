"""Stage 3: where a training step's time goes, component by component.

Each of the model's own modules runs forward and backward under training's autocast, on inputs
of the shapes it sees at the config's batch: the TCN on windows, the node stream on every
electrode's sequence, the edge stream on every pair's similarity, the graph stage on nodes and
edge weights. The Laplacian PE runs alone too, forward only (training stops gradients there
unless ``model.pe_grad``): the eigendecomposition of every step's graph, in whichever solver the
config names. Each figure is the median of timed repeats after a warm-up.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from szdet.config import Config
from szdet.device import autocast_dtype
from szdet.gpu_check.step import StepClock, sync
from szdet.models.detector import V3Detector
from szdet.models.graph import laplacian_pe, learned_adjacency


def _median_ms(run: Callable[[], Any], device: torch.device, repeats: int) -> float:
    run()  # warm-up: allocation, cuDNN's search, kernels' autotuning
    sync(device)
    clock = StepClock(device)
    clock.mark()
    for _ in range(repeats):
        run()
        clock.mark()
    return statistics.median(clock.intervals_s()) * 1e3


def time_components(cfg: Config, device: torch.device, batch: int, repeats: int) -> dict[str, Any]:
    model = V3Detector(cfg.model).to(device).train()
    m = cfg.model
    steps = cfg.window_samples // m.downsample
    n, pairs = m.in_channels, m.in_channels * (m.in_channels - 1) // 2
    dtype = autocast_dtype(device, cfg.train.precision)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()

    def train(module: Callable[..., Tensor], *inputs: Tensor) -> Callable[[], None]:
        leaves = [x.requires_grad_(True) for x in inputs]

        def run() -> None:
            with autocast:
                out = module(*leaves)
            out.float().square().mean().backward()

        return run

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, device=device)

    def weights() -> Tensor:  # pair similarities and edge weights alike lie in [0, 1) here
        return torch.rand(batch, steps, pairs, device=device)

    adjacency = learned_adjacency(weights(), n, m.top_k)

    def pe_only() -> None:
        with torch.no_grad():
            laplacian_pe(adjacency[:, :: m.pe_every_steps], m.pe_dim, False, m.eigensolver)

    timed = {
        "tcn": train(model.tcn, randn(batch, n, cfg.window_samples)),
        "node_stream": train(model.node_stream, randn(batch * n, steps, m.node_dim)),
        "edge_stream": train(model.edge_stream, weights()),
        "graph_stage": train(model.graph, randn(batch, steps, n, m.node_dim), weights()),
        "pe_eigensolver_forward": pe_only,
    }
    result: dict[str, Any] = {"batch": batch, "unit": "ms per call, forward+backward"}
    for name, run in timed.items():
        result[name] = _median_ms(run, device, repeats)
        model.zero_grad(set_to_none=True)
    result["eigensolver"] = m.eigensolver
    result["pe_matrices"] = batch * -(-steps // m.pe_every_steps)
    return result
