"""Bidirectional Mamba-2: each step sees its past through one mixer and its future through a
second, time-reversed one (models/mamba2.py), in pre-norm residual layers."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from szdet.models.mamba2 import Mamba2, inferring

# Elements of a mixer's in_proj output per block of rows at inference on a CPU (BiMamba2Stack):
# 16 MiB in float32, about one 60 s window of the cloud size's node stream.
INFERENCE_BLOCK_ELEMENTS = 4 * 2**20


class BiMamba2Layer(nn.Module):
    """Pre-norm residual layer: a forward and a time-reversed Mamba-2 (separate weights), summed."""

    def __init__(self, d_model: int, make_mixer: Callable[[], Mamba2], dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.fwd = make_mixer()
        self.bwd = make_mixer()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        mixed = self.fwd(h) + self.bwd(h.flip(1)).flip(1)  # bwd sees each step's future
        return x + self.dropout(mixed)


class BiMamba2Stack(nn.Module):
    """``layers`` bidirectional layers and a final norm: (batch, length, d) -> same shape."""

    def __init__(
        self, d_model: int, layers: int, make_mixer: Callable[[], Mamba2], dropout: float
    ) -> None:
        super().__init__()
        built = [BiMamba2Layer(d_model, make_mixer, dropout) for _ in range(layers)]
        self.step_width = built[0].fwd.in_proj.out_features  # a mixer's widest tensor per step
        self.layers = nn.ModuleList(built)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        if inferring() and x.device.type == "cpu":
            # Rows are independent sequences. A CPU pays more for a fresh large tensor (page
            # faults) than for the arithmetic on it: blocks of rows keep each mixer's tensors
            # small enough for the allocator to reuse its memory (4x faster at 4 windows).
            rows = max(1, INFERENCE_BLOCK_ELEMENTS // (x.shape[1] * self.step_width))
            if x.shape[0] > rows:
                return torch.cat([self._layers(block) for block in x.split(rows)])
        return self._layers(x)

    def _layers(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)
