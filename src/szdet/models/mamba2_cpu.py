"""Mamba-2's scan, D skip, gate and norm for inference on a CPU: one compiled loop per sequence.

The chunked scan (mamba2.py) turns the recurrence into matrix products for a GPU's matrix units.
A CPU has none to fill, and this model's states are small (d_state 16 and 8), so the recurrence
itself is cheaper there: 2 d_state d_inner multiply-adds per step on a state that stays in L1,
with the D skip, the gate and the RMS norm done on the step's outputs while they are in L1.
Nothing step-sized is written but the result. numba compiles it (cached on disk after the first
run); without numba, Mamba2 runs the chunked inference form instead (the same function).

Per row, step t, channel c of head h(c) and state index i (group of c):
    S[i, c] = decay[t, h] S[i, c] + dt[t, h] x[t, c] B[t, i];    y[c] = sum_i S[i, c] C[t, i]
    out[t, c] = norm((y[c] + D[h] x[t, c]) * gate[t, c]) (RMS over c's group, before its weight)
with decay = exp(max(dt A, floor)): the chunked scan's floor, so that both compute one function.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

try:
    import numba
except ImportError:  # an optional accelerator: absent, Mamba2 uses its torch inference form
    numba = None


def available() -> bool:
    return numba is not None


def scan_gate_norm(
    xbc: Tensor, dt: Tensor, decay: Tensor, D: Tensor, gate: Tensor, eps: float, ngroups: int
) -> Tensor:
    """xbc (b, l, d_inner + 2 g n): the conv's output [x | B | C]; dt, decay (b, l, h); D (h,);
    gate (b, l, d_inner): silu(z), overwritten with the normalised gated output and returned.
    All float32 on the CPU. Rows are split over torch's thread count: Python threads, each
    running the compiled loop without the GIL (no OpenMP pool of numba's own, which a forked
    process could not use)."""
    h = dt.shape[-1]
    d_inner = gate.shape[-1]
    d_state = (xbc.shape[-1] - d_inner) // (2 * ngroups)
    head = np.repeat(np.arange(h, dtype=np.int64), d_inner // h)  # each channel's head
    arrays = [t.detach().contiguous().numpy() for t in (xbc, dt, decay, D)]
    if not gate.is_contiguous() or gate.dtype != torch.float32:
        raise ValueError(f"gate must be contiguous float32, got {gate.dtype} {gate.stride()}")
    args = (*arrays, head, gate.numpy(), np.float32(eps), ngroups, d_state)
    rows = xbc.shape[0]
    bounds = np.linspace(0, rows, min(torch.get_num_threads(), rows) + 1).astype(int).tolist()
    spans = list(itertools.pairwise(bounds))
    failures: list[BaseException] = []

    def run(first: int, stop: int) -> None:
        try:
            _rows(first, stop, *args)
        except BaseException as error:  # re-raised in the caller's thread below
            failures.append(error)

    threads = [threading.Thread(target=run, args=span) for span in spans[1:]]
    for thread in threads:
        thread.start()
    run(*spans[0])
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return gate


def _jit(function: Callable[..., Any]) -> Callable[..., Any]:
    """numba's njit, cached on disk when a cache directory is writable (beside this file, else
    the user's cache): a read-only install compiles on each run instead (about 4 s)."""
    # Reassociation and fused multiply-adds (what vectorising the sums needs), but not fastmath's
    # no-NaN/no-Inf promises: a non-finite activation must stay visible downstream.
    options = {"fastmath": {"reassoc", "contract"}, "nogil": True}
    try:
        return numba.njit(cache=True, **options)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(**options)(function)


if numba is not None:

    @_jit
    def _row(xbc, dt, decay, D, head, gate, eps, ngroups, d_state, state, step_decay, dt_x, y):
        """One sequence. Loops run over whole contiguous rows of channels so that they vectorise;
        ``state`` (g n, d_inner / g) and the three d_inner vectors are this row's scratch."""
        d_inner = gate.shape[1]
        group_size = d_inner // ngroups
        state[:] = 0
        for t in range(xbc.shape[0]):
            x = xbc[t]
            for c in range(d_inner):
                step_decay[c] = decay[t, head[c]]
                dt_x[c] = dt[t, head[c]] * x[c]
                y[c] = D[head[c]] * x[c]
            for g in range(ngroups):
                lo = g * group_size
                decay_g = step_decay[lo : lo + group_size]
                dt_x_g = dt_x[lo : lo + group_size]
                y_g = y[lo : lo + group_size]
                for i in range(d_state):
                    b_i = x[d_inner + g * d_state + i]
                    c_i = x[d_inner + (ngroups + g) * d_state + i]
                    s = state[g * d_state + i]
                    for c in range(group_size):
                        v = decay_g[c] * s[c] + dt_x_g[c] * b_i
                        s[c] = v
                        y_g[c] += v * c_i
                gate_g = gate[t, lo : lo + group_size]
                square_sum = np.float32(0.0)
                for c in range(group_size):
                    gated = y_g[c] * gate_g[c]
                    y_g[c] = gated
                    square_sum += gated * gated
                scale = np.float32(1.0) / np.sqrt(square_sum / group_size + eps)
                for c in range(group_size):
                    gate_g[c] = y_g[c] * scale

    @_jit
    def _rows(first, stop, xbc, dt, decay, D, head, gate, eps, ngroups, d_state):
        """Rows first..stop - 1, one after another, on one set of scratch arrays."""
        d_inner = gate.shape[2]
        state = np.empty((ngroups * d_state, d_inner // ngroups), np.float32)
        step_decay = np.empty(d_inner, np.float32)
        dt_x = np.empty(d_inner, np.float32)
        y = np.empty(d_inner, np.float32)
        for row in range(first, stop):
            _row(
                xbc[row], dt[row], decay[row], D, head, gate[row], eps, ngroups, d_state,
                state, step_decay, dt_x, y,
            )  # fmt: skip
