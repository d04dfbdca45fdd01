"""V3, the dual-stream detector: (B, 19, L) EEG -> (B, L) per-sample seizure logits.

TCN at the full rate, strided downsample, projection to electrodes (B, N, T, D); then two streams:
nodes through a bidirectional Mamba-2 per electrode, and each pair's cosine similarity through the
edge stream to a weight per pair and step. The weights make each step's adjacency (and its
Laplacian PE) for an SSGConv over the node features; a head maps the nodes back to (B, L) logits,
and (``localised``) each node's own seizure logit too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from szdet.config import ModelConfig
from szdet.models.bimamba2 import BiMamba2Stack
from szdet.models.graph import EdgeStream, GraphStage, pairwise_cosine
from szdet.models.kernels import mamba2_factory
from szdet.models.tcn import TCNEncoder


class ElectrodeProjection(nn.Module):
    """(B, C, T) features -> (B, N, T, D): one D-vector per electrode and step."""

    def __init__(self, in_dim: int, n_nodes: int, node_dim: int) -> None:
        super().__init__()
        self.n_nodes, self.node_dim = n_nodes, node_dim
        self.proj = nn.Linear(in_dim, n_nodes * node_dim)

    def forward(self, feats: Tensor) -> Tensor:
        b, _, t = feats.shape
        nodes = self.proj(feats.transpose(1, 2))  # (B, T, N * D)
        return nodes.reshape(b, t, self.n_nodes, self.node_dim).permute(0, 2, 1, 3)


class Head(nn.Module):
    """Per-electrode projection to one score, fused over electrodes, upsampled to the input rate.

    Each electrode's score is also its own seizure logit: an auxiliary loss trains it against
    per-channel labels (train/step.py), so it says where a seizure is (evaluate/localise.py).
    Fusing (a linear map over electrodes) and linear upsampling commute, so fusing first gives
    the same logits at 1/N of the upsampling cost.
    """

    def __init__(self, node_dim: int, n_nodes: int, upsample: int, dropout: float) -> None:
        super().__init__()
        self.upsample = upsample
        self.norm = nn.LayerNorm(node_dim)
        self.dropout = nn.Dropout(dropout)
        self.electrode = nn.Linear(node_dim, 1)
        self.fuse = nn.Linear(n_nodes, 1)

    def forward(self, nodes: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, N, D) -> logits (B, T * upsample), node logits (B, N, T) at the model's steps."""
        scores = self.electrode(self.dropout(self.norm(nodes))).squeeze(-1)  # (B, T, N)
        logits = self.fuse(scores).transpose(1, 2)  # (B, 1, T)
        return self.upsampled(logits).squeeze(1), scores.transpose(1, 2)

    def upsampled(self, x: Tensor) -> Tensor:  # (B, C, T) -> (B, C, T * upsample)
        return F.interpolate(x, scale_factor=self.upsample, mode="linear", align_corners=False)


class V3Detector(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_nodes, self.downsample = cfg.in_channels, cfg.downsample
        self.tcn = TCNEncoder(
            cfg.in_channels,
            cfg.tcn_channels,
            cfg.tcn_kernel_size,
            cfg.downsample,
            pool_every=cfg.tcn_pool_every,
            fused=cfg.tcn_fused,
        )
        self.electrodes = ElectrodeProjection(cfg.tcn_channels[-1], cfg.in_channels, cfg.node_dim)
        shared = {
            "d_conv": cfg.d_conv,
            "expand": cfg.expand,
            "chunk_size": cfg.pure_chunk_size,
            "kernel_chunk_size": cfg.chunk_size,
            "recompute": cfg.recompute_pure_mamba,
        }
        node_mixer = mamba2_factory(
            cfg.kernels,
            d_model=cfg.node_dim,
            d_state=cfg.node_d_state,
            headdim=cfg.node_headdim,
            **shared,
        )
        self.node_stream = BiMamba2Stack(cfg.node_dim, cfg.node_layers, node_mixer, cfg.dropout)
        edge_mixer = mamba2_factory(
            cfg.kernels,
            d_model=cfg.edge_dim,
            d_state=cfg.edge_d_state,
            headdim=cfg.edge_headdim,
            **shared,
        )
        self.edge_stream = EdgeStream(
            cfg.edge_dim,
            cfg.edge_layers,
            edge_mixer,
            bound=cfg.edge_clamp,
            init_gain=cfg.edge_init_gain,
            dropout=cfg.dropout,
        )
        self.graph = GraphStage(
            cfg.node_dim,
            cfg.pe_dim,
            cfg.gnn_layers,
            alpha=cfg.gnn_alpha,
            hops=cfg.gnn_hops,
            top_k=cfg.top_k,
            pe_grad=cfg.pe_grad,
            pe_every_steps=cfg.pe_every_steps,
            eigensolver=cfg.eigensolver,
        )
        self.head = Head(cfg.node_dim, cfg.in_channels, cfg.downsample, cfg.dropout)

    def forward(self, x: Tensor, with_nodes: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Logits (B, L); ``with_nodes``: and the node logits (B, N, T) the auxiliary loss reads
        (an argument, not a method, so that DDP's forward hooks see the training forward)."""
        logits, node_logits = self.head(self._fused_nodes(x))
        return (logits, node_logits) if with_nodes else logits

    def localised(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The logits (B, L) and each node's own seizure logit (B, N, L): where the seizure is."""
        logits, node_logits = self.head(self._fused_nodes(x))
        return logits, self.head.upsampled(node_logits)

    def _fused_nodes(self, x: Tensor) -> Tensor:  # (B, N, L) -> (B, T, N, D)
        b, n, length = x.shape
        if n != self.n_nodes or length % self.downsample:
            raise ValueError(
                f"input (B, {n}, {length}): expected {self.n_nodes} channels and a length "
                f"divisible by downsample={self.downsample}"
            )
        x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)  # the one sanitising step
        nodes = self.electrodes(self.tcn(x))  # (B, N, T, D)
        t, d = nodes.shape[2], nodes.shape[3]
        node_seq = self.node_stream(nodes.reshape(b * n, t, d)).reshape(b, n, t, d)
        edge_weights = self.edge_stream(pairwise_cosine(nodes))  # (B, T, P)
        return self.graph(node_seq.transpose(1, 2), edge_weights)  # (B, T, N, D)
