"""A batched Jacobi eigensolver for small symmetric matrices, in plain tensor ops.

``torch.linalg.eigh`` of many 19 x 19 matrices is LAPACK, one matrix at a time, on a CPU, and on a
GPU a cuSOLVER routine chosen by heuristics that syncs with the host; ONNX has no eigh at all.
``jacobi_eigh`` is the textbook cyclic Jacobi method written out as a fixed number of sweeps of
gathers and elementwise ops, with one sort at the end: it runs where the tensors are, never waits
on the host, and traces (``torch.export``, ONNX). A reference kernel, meant to be read top to
bottom. On a CPU, LAPACK's eigh is the faster choice (benchmarks/bench_model.py).

Each rotation J zeroes one off-diagonal entry a_pq: A <- J^T A J, V <- V J. The rotations of a
round act on disjoint pairs (p, q), so they commute and run as one batched update (the parallel
ordering); the m - 1 rounds of a sweep meet every pair once.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor
from torch._higher_order_ops.scan import scan  # torch.scan (a prototype): the ONNX export only

# Measured on float32 19 x 19 matrices, 4096 each of: normalised Laplacians of top-3 learned
# graphs, of dense ones, and random symmetric ones. The largest off-diagonal Frobenius norm of
# V^T A V relative to A's is 1e-2 after 4 sweeps, 1e-3 after 5 and 1e-6 after 6 (the float32
# floor: 6e-7); then every eigenvalue is within 4e-6 of float64 eigh relative to the spectrum's
# scale (float32 eigh: 1.3e-6), residuals |A v - lambda v| and |V^T V - I| are 5e-6. After 5
# sweeps 5 of 61,440 Laplacians' eigenvalues are still up to 4e-5 off; a 7th sweep moves none.
SWEEPS = 6


def _schedule(m: int, sweeps: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Each round's gather from the last round's order into its own (p's, then q's), as rows
    (rounds, m) and as cells of the flattened matrix (rounds, m * m).

    The circle method with the last index K = m - 1 fixed: round r pairs (K, r) and
    ((r + i) mod K, (r - i) mod K) for i = 1 .. m/2 - 1, which meets every pair once in K rounds.
    Built with tensor ops on the device: no host-to-device copy, which would sync.
    """
    k, h = m - 1, m // 2
    r = torch.arange(k, device=device)[:, None]
    i = torch.arange(h, device=device)[None, :]
    p = torch.where(i == 0, k, (r + i) % k)
    orders = torch.cat([p, (r - i) % k], dim=1).repeat(sweeps, 1)
    # Row j of argsort(order) is where index j sits: composing with it re-orders from the layout
    # the last round left (the identity before the first).
    where = torch.cat([torch.arange(m, device=device)[None], orders[:-1].argsort(dim=1)])
    rows = where.gather(1, orders)
    return rows, (rows[:, :, None] * m + rows[:, None, :]).flatten(1)


def _rotate(x: Tensor, c: Tensor, s: Tensor, dim: int, in_place: bool) -> Tensor:
    """Rotates x's p entries (first half along ``dim``) and q entries (second half) by (c, s),
    pair by pair. In place, into this round's own gathered copy: on a CPU, a fresh ~100 MB
    temporary per op of a training batch is a fresh mmap that page-faults, and writing in place
    halved the time of a sweep over 61,440 matrices. Out of place for the ONNX export: addcmul
    is a fused multiply-add on a CPU, which ONNX lacks (the same products, rounded once more)."""
    top, bottom = x.chunk(2, dim=dim)
    if not in_place:
        return torch.cat([top * c - s * bottom, bottom * c + s * top], dim=dim)
    old_top = top.clone()
    top.mul_(c).addcmul_(s, bottom, value=-1)
    bottom.mul_(c).addcmul_(s, old_top)
    return x


Pair = tuple[Tensor, Tensor]


def _round(carry: Pair, schedule: Pair, in_place: bool = True) -> tuple[Pair, list[Tensor]]:
    """One round of rotations: (A (m, m, batch), V^T (m, m, batch)) -> the same, rotated.
    ``schedule``: this round's rows and cells (``_schedule``). Shaped as a scan body: (carry,
    slice) -> (carry, no per-round output)."""
    a, vt = carry
    rows, cells = schedule
    m, h = a.shape[0], a.shape[0] // 2
    # Rows and columns of A, rows of V^T, into this round's order: p's on top, q's below
    # (one flat gather: CPU advanced indexing costs ~5 ms a call whatever the size).
    a = a.flatten(0, 1).index_select(0, cells).unflatten(0, (m, m))
    vt = vt.index_select(0, rows)
    a_pp, a_qq = a.diagonal()[:, :h].mT, a.diagonal()[:, h:].mT  # (h, batch)
    a_pq = a[:h, h:].diagonal().mT
    # t = tan(theta) of the rotation that zeroes a_pq: the smaller root of
    # t^2 + (tau / a_pq) t - 1 = 0 in the form that does not cancel. a_pq = tau = 0 (a pair
    # already diagonal, or the padded index) gives 0 / tiny = 0: the identity.
    tau = a_qq - a_pp
    root = tau.abs() + torch.sqrt(tau * tau + 4 * a_pq * a_pq)
    t = torch.where(tau < 0, -2.0, 2.0) * a_pq / root.clamp_min(torch.finfo(a.dtype).tiny)
    c = torch.rsqrt(1 + t * t)
    s = t * c
    a = _rotate(a, c[:, None], s[:, None], dim=0, in_place=in_place)  # J^T A
    vt = _rotate(vt, c[:, None], s[:, None], dim=0, in_place=in_place)
    a = _rotate(a, c, s, dim=1, in_place=in_place)  # (J^T A) J
    return (a, vt), []


def jacobi_eigh(sym: Tensor, sweeps: int = SWEEPS) -> tuple[Tensor, Tensor]:
    """Eigenvalues (ascending) and eigenvectors (columns) of symmetric (..., n, n), as
    ``torch.linalg.eigh``; no gradients of its own (graph.stable_eigh gives them)."""
    n, batch = sym.shape[-1], sym.shape[:-2]
    m = n + n % 2  # an even size gives every index a partner each round
    # The padded index m - 1 has zero off-diagonal entries, so every rotation that touches it is
    # the identity (t = 0 below); it ends at position 0 of the last round's order, dropped there.
    # The batch goes last: every op then runs along contiguous batch-long rows (3.5x faster on a
    # CPU at 16k matrices than batch first).
    a = F.pad(sym, (0, m - n, 0, m - n)).reshape(-1, m, m).permute(1, 2, 0)
    vt = torch.eye(m, dtype=a.dtype, device=a.device)[..., None].expand_as(a)  # rows: eigenvectors
    schedule = _schedule(m, sweeps, a.device)
    if torch.onnx.is_in_onnx_export():
        # Unrolled, the sweeps x (m - 1) rounds are ~8k graph nodes at m = 20, which the ONNX
        # exporter takes many minutes over; as a scan they are one ONNX Scan node, the round
        # written once.
        body = functools.partial(_round, in_place=False)
        (a, vt), _ = scan(body, (a.contiguous(), vt.contiguous()), schedule)
    else:
        for rows, cells in zip(*schedule, strict=True):
            (a, vt), _ = _round((a, vt), (rows, cells))
    evals, order = a.diagonal()[:, m - n :].sort(dim=-1)  # (batch, n)
    vt = vt[m - n :, :n].permute(2, 0, 1)  # (batch, eigenvector, coordinate)
    evecs = vt.gather(1, order[..., None].expand(*order.shape, n)).mT
    return evals.reshape(*batch, n), evecs.reshape(*batch, n, n)
