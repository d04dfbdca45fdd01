"""The graph half of V3: edge stream, learned adjacency, Laplacian PE and the SSGConv GNN.

Every function works on all (batch x time) graphs at once as dense (N x N) tensors: N = 19
electrodes is small, so batched matrix products beat any sparse gather, and there is no Python
loop over graphs. Shapes: nodes (B, T, N, D); edge weights (B, T, P) with P = N (N - 1) / 2
pairs in ``torch.triu_indices(N, N, 1)`` order; adjacency (B, T, N, N).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from szdet.models.bimamba2 import BiMamba2Stack
from szdet.models.eigen import jacobi_eigh
from szdet.models.mamba2 import Mamba2

_EPS = 1e-6
Eigensolver = Callable[[Tensor], tuple[Tensor, Tensor]]


def lapack_eigh(sym: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.linalg.eigh``, looked up when called (so a patched one is the one that runs)."""
    evals, evecs = torch.linalg.eigh(sym)
    return evals, evecs


# The same function computed two ways (config.py: model.eigensolver).
EIGENSOLVERS: dict[str, Eigensolver] = {"eigh": lapack_eigh, "jacobi": jacobi_eigh}


def pairwise_cosine(nodes: Tensor) -> Tensor:
    """Cosine similarity of every electrode pair per step: (B, N, T, D) -> (B, T, P).

    A zero vector (flat electrode) has similarity 0 with everything, with finite gradients.
    """
    n = nodes.shape[1]
    unit = nodes * torch.rsqrt(nodes.square().sum(-1, keepdim=True) + _EPS)
    gram = torch.einsum("bntd,bmtd->btnm", unit, unit)
    rows, cols = torch.triu_indices(n, n, 1, device=nodes.device)
    return gram[..., rows, cols]


class EdgeStream(nn.Module):
    """Similarity sequences of every pair -> one positive weight per pair and step.

    The 1 -> dim lift starts small (Xavier, gain ``init_gain``) and is bounded smoothly to
    (-bound, bound) by ``bound * tanh(v / bound)``: the same range as a clamp, but it never
    stops gradients.
    """

    def __init__(
        self,
        dim: int,
        layers: int,
        make_mixer: Callable[[], Mamba2],
        bound: float,
        init_gain: float,
        dropout: float,
    ) -> None:
        super().__init__()
        self.lift = nn.Linear(1, dim)
        nn.init.xavier_uniform_(self.lift.weight, gain=init_gain)
        nn.init.zeros_(self.lift.bias)
        self.bound = bound
        self.stack = BiMamba2Stack(dim, layers, make_mixer, dropout)
        self.readout = nn.Linear(dim, 1)

    def forward(self, similarity: Tensor) -> Tensor:
        b, t, p = similarity.shape
        seq = similarity.transpose(1, 2).reshape(b * p, t, 1)
        # The 1 -> dim lift is an outer product: one pass (addcmul) with the 1 / bound folded into
        # its weight and bias, not a K=1 matrix product and a division over every step.
        scale, shift = self.lift.weight[:, 0] / self.bound, self.lift.bias / self.bound
        lifted = torch.addcmul(shift, seq, scale).tanh_() * self.bound
        weight = F.softplus(self.readout(self.stack(lifted)))  # (b * p, t, 1)
        return weight.reshape(b, p, t).transpose(1, 2)


def learned_adjacency(edge_weights: Tensor, n_nodes: int, top_k: int) -> Tensor:
    """Symmetric, zero-diagonal adjacency keeping each node's ``top_k`` strongest edges.

    An edge survives if either end keeps it (re-symmetrised); a node left with no edge of
    non-zero weight gets a self-loop of weight 1 so that it stays part of the graph.
    """
    rows, cols = torch.triu_indices(n_nodes, n_nodes, 1, device=edge_weights.device)
    upper = edge_weights.new_zeros(*edge_weights.shape[:-1], n_nodes, n_nodes)
    upper[..., rows, cols] = edge_weights
    adj = upper + upper.transpose(-1, -2)
    eye = torch.eye(n_nodes, dtype=torch.bool, device=adj.device)
    top = adj.masked_fill(eye, -torch.inf).topk(top_k, dim=-1).indices
    keep = torch.zeros_like(adj, dtype=torch.bool).scatter_(-1, top, True)
    adj = torch.where(keep | keep.transpose(-1, -2), adj, 0.0)
    isolated = adj.sum(-1) == 0
    return adj + torch.diag_embed(isolated.to(adj.dtype))


class _StableEigh(torch.autograd.Function):
    """An eigensolver whose backward stays finite for repeated eigenvalues.

    The exact gradient divides by eigenvalue gaps (lambda_j - lambda_i); identical electrodes give
    zero gaps and so inf. Here 1 / gap becomes gap / (gap^2 + eps): the same for separated
    eigenvalues, bounded for (near-)equal ones. It needs only the eigenvalues and eigenvectors, so
    it serves every solver.
    """

    @staticmethod
    def forward(ctx, sym: Tensor, solver: Eigensolver) -> tuple[Tensor, Tensor]:
        evals, evecs = solver(sym)
        ctx.save_for_backward(evals, evecs)
        return evals, evecs

    @staticmethod
    def backward(ctx, g_evals: Tensor, g_evecs: Tensor) -> tuple[Tensor, None]:
        evals, evecs = ctx.saved_tensors
        vt_g = evecs.mT @ g_evecs
        skew = (vt_g - vt_g.mT) / 2
        gap = evals[..., None, :] - evals[..., :, None]
        inner = skew * gap / (gap.square() + 1e-10) + torch.diag_embed(g_evals)
        return evecs @ inner @ evecs.mT, None


def stable_eigh(sym: Tensor, eigensolver: str = "eigh") -> tuple[Tensor, Tensor]:
    evals, evecs = _StableEigh.apply(sym, EIGENSOLVERS[eigensolver])
    return evals, evecs


def normalised_laplacian(adj: Tensor) -> Tensor:
    """I - D^-1/2 A D^-1/2 of the edges (self-loops dropped; an isolated node's row is I's).

    Non-finite input would make eigh raise on this rank alone, while DDP needs every rank to go on
    to backward (train/step.py); zeros keep the solver going, and the NaN still reaches the loss
    through the adjacency. Finite input passes unchanged.
    """
    eye = torch.eye(adj.shape[-1], dtype=adj.dtype, device=adj.device)
    a = adj * (1 - eye)  # structure only: the isolated nodes' self-loops are not edges
    deg = a.sum(-1)
    inv_sqrt = torch.where(deg > 0, deg.clamp_min(1e-12).rsqrt(), 0.0)
    lap = eye - inv_sqrt[..., :, None] * a * inv_sqrt[..., None, :]
    return torch.nan_to_num(lap, nan=0.0, posinf=0.0, neginf=0.0)


def laplacian_pe(adj: Tensor, dim: int, grad: bool, eigensolver: str = "eigh") -> Tensor:
    """Eigenvectors 2 .. dim+1 of the normalised Laplacian, sign-fixed: (..., N, N) -> (..., N, dim).

    Computed in float32 whatever the autocast, by ``EIGENSOLVERS[eigensolver]``. Sign rule: each
    eigenvector's entry of largest magnitude is positive, so the result is deterministic and
    permuting the nodes permutes it (for distinct eigenvalues). ``grad=False`` stops gradients
    through the solver.
    """
    device_type = adj.device.type
    autocast_off = (
        torch.autocast(device_type, enabled=False)
        if torch.amp.is_autocast_available(device_type)
        else contextlib.nullcontext()
    )
    with autocast_off:
        lap = normalised_laplacian(adj.float() if grad else adj.detach().float())
        _, evecs = stable_eigh(lap, eigensolver) if grad else EIGENSOLVERS[eigensolver](lap)
        vecs = evecs[..., 1 : dim + 1]  # the first is trivial (D^1/2 1 for a connected graph)
        peak = vecs.gather(-2, vecs.abs().argmax(dim=-2, keepdim=True))
        return vecs * torch.where(peak < 0, -1.0, 1.0)


def held_laplacian_pe(
    adj: Tensor, dim: int, grad: bool, every_steps: int, eigensolver: str = "eigh"
) -> Tensor:
    """``laplacian_pe`` of steps 0, k, 2k, ... of (B, T, N, N) only, each held over the k steps
    from it: (B, T, N, dim). The graph changes slowly next to a step, and the PE is the stage's
    one solver call, so k > 1 divides its cost by k."""
    pe = laplacian_pe(adj[:, ::every_steps], dim, grad, eigensolver)
    return pe.repeat_interleave(every_steps, dim=1)[:, : adj.shape[1]]


def gcn_propagation(adj: Tensor) -> Tensor:
    """PyG's ``gcn_norm`` as a dense matrix P, so that ``P @ x`` is one propagation step.

    Self-loops of weight 1 are added where a node has none (add_remaining_self_loops), then
    norm_ij = d_i^-1/2 a_ij d_j^-1/2 with d the in-degree; messages flow along i -> j, so P is the
    transpose of the normalised adjacency.
    """
    n = adj.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=adj.device)
    diag = adj.diagonal(dim1=-2, dim2=-1)
    a_hat = adj.masked_fill(eye, 0.0) + torch.diag_embed(torch.where(diag != 0, diag, 1.0))
    deg = a_hat.sum(-2)
    inv_sqrt = torch.where(deg > 0, deg.clamp_min(1e-12).rsqrt(), 0.0)
    return (inv_sqrt[..., :, None] * a_hat * inv_sqrt[..., None, :]).mT


def ssg_operator(prop: Tensor, alpha: float, hops: int) -> Tensor:
    """SSGConv's propagation as one (N x N) matrix per graph:
    alpha I + (1 - alpha) / K * sum_{k=1..K} P^k. Built once per graph and shared by every GNN
    layer, it turns each layer's K feature-sized products into one."""
    eye = torch.eye(prop.shape[-1], dtype=prop.dtype, device=prop.device)
    power, total = prop, prop
    for _ in range(hops - 1):
        power = power @ prop
        total = total + power
    return alpha * eye + (1 - alpha) / hops * total


class DenseSSGConv(nn.Module):
    """SSGConv (Zhu & Koniusz 2021; PyG semantics) on dense batched graphs:
    h = alpha x + (1 - alpha) / K * sum_{k=1..K} P^k x, then a linear layer, with the propagation
    given as ``ssg_operator(P, alpha, K)``."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.lin = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor, operator: Tensor) -> Tensor:
        return self.lin(operator @ x)


class GraphStage(nn.Module):
    """Adjacency from edge weights, dynamic PE, GNN layers, residual + norm: nodes -> nodes.

    The PE is that of every ``pe_every_steps``-th step, solved by ``EIGENSOLVERS[eigensolver]``.
    """

    def __init__(
        self,
        node_dim: int,
        pe_dim: int,
        layers: int,
        alpha: float,
        hops: int,
        top_k: int,
        pe_grad: bool,
        pe_every_steps: int = 1,
        eigensolver: str = "eigh",
    ) -> None:
        super().__init__()
        if eigensolver not in EIGENSOLVERS or pe_every_steps < 1:
            raise ValueError(
                f"eigensolver {eigensolver!r} must be one of {sorted(EIGENSOLVERS)} and "
                f"pe_every_steps ({pe_every_steps}) at least 1"
            )
        self.pe_dim, self.top_k, self.pe_grad = pe_dim, top_k, pe_grad
        self.pe_every_steps, self.eigensolver = pe_every_steps, eigensolver
        self.alpha, self.hops = alpha, hops
        dims = [node_dim + pe_dim] + [node_dim] * layers
        self.convs = nn.ModuleList(DenseSSGConv(dims[i], dims[i + 1]) for i in range(layers))
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(node_dim)

    def forward(self, nodes: Tensor, edge_weights: Tensor) -> Tensor:
        adj = learned_adjacency(edge_weights, nodes.shape[-2], self.top_k)
        k, solver = self.pe_every_steps, self.eigensolver
        pe = held_laplacian_pe(adj, self.pe_dim, self.pe_grad, k, solver)  # held over k steps
        operator = ssg_operator(gcn_propagation(adj), self.alpha, self.hops)  # every step's own
        h = torch.cat([nodes, pe.to(nodes.dtype)], dim=-1)
        for i, conv in enumerate(self.convs):
            h = conv(h, operator.to(h.dtype))
            if i < len(self.convs) - 1:
                h = self.act(h)
        return self.norm(nodes + h)
