"""Mamba-2 in plain PyTorch: the chunked state-space-dual (SSD) scan, on any device and dtype.

The module keeps mamba_ssm's parameter names, shapes and initialisation
(``mamba_ssm.modules.mamba2.Mamba2`` with its defaults: ngroups groups of B/C, no D per head-dim,
gated RMSNorm after the gate, no projection biases), so one state dict loads strictly into either.

The recurrence per head h, with state S (headdim x d_state) and a scalar decay per step:

    S_t = exp(dt_t * A_h) * S_{t-1} + dt_t * x_t B_t^T        y_t = S_t C_t + D_h * x_t

``ssd_naive`` runs it step by step (the oracle). ``ssd_chunked`` computes the same thing in chunks
of Q steps: inside a chunk as a masked (Q x Q) attention-like product, across chunks by passing
one state per chunk, so the work is matrix products instead of a Python loop over time.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (x, dt, A, B, C) -> y: x (b, l, h, p), dt (b, l, h) > 0, A (h,) < 0, B/C (b, l, g, n).
ScanFn = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


def ssd_naive(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
    """The SSD recurrence one step at a time, in float32 (slow; a reference)."""
    b, length, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    heads_per_group = h // g
    x, dt, A, B, C = (t.float() for t in (x, dt, A, B, C))
    B = B.repeat_interleave(heads_per_group, dim=2)  # (b, l, h, n)
    C = C.repeat_interleave(heads_per_group, dim=2)
    state = x.new_zeros(b, h, p, n)
    ys = []
    for t in range(length):
        decay = torch.exp(dt[:, t] * A)  # (b, h)
        state = (
            decay[..., None, None] * state
            + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None, :]
        )
        ys.append(torch.einsum("bhpn,bhn->bhp", state, C[:, t]))
    return torch.stack(ys, dim=1)


# exp() of at most this stays finite in float32 and bfloat16 (largest: e^88.7).
_MAX_EXPONENT = 80.0


MAX_PURE_CHUNK = 16  # longest chunk whose decay factors stay below e^80 (see ssd_chunked)


def ssd_chunked(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int) -> Tensor:
    """The SSD recurrence in chunks of ``chunk_size`` (<= 16) steps; any length.

    Inside a chunk the decay between steps j <= i factorises around the chunk's middle m:
    exp(cum_i - cum_j) = exp(cum_i - m) * exp(m - cum_j), so the intra-chunk term is one masked
    (q x q) product per B/C group with no (q x q) tensor per head. Each factor stays below
    e^80 because the per-step log decay is floored at -160 / q (-10 for q = 16: the state keeps
    at most 4.5e-5 of itself per step there, i.e. it is already forgotten).

    Decays are built in float32; the products run in the autocast dtype when autocast is on,
    else in ``x``'s dtype (as mamba_ssm's kernels feed their dot products).
    """
    in_dtype, work = x.dtype, _work_dtype(x)
    b, length, h, p = x.shape
    g = B.shape[2]
    q = chunk_size
    dt, cum = _chunked_decays(dt, A, q)
    pad = (-length) % q
    x, B, C = (F.pad(t.to(work), (0, 0, 0, 0, 0, pad)) for t in (x, B, C))
    c = (length + pad) // q
    r = h // g  # heads per group

    # Chunked views: x (b, c, q, g, r, p); dt, cum (b, c, q, g, r); B, C (b, c, q, g, n).
    x = x.reshape(b, c, q, g, r, p)
    dt = dt.reshape(b, c, q, g, r)
    cum = cum.reshape(b, c, q, g, r)
    B = B.reshape(b, c, q, g, -1)
    C = C.reshape(b, c, q, g, -1)
    x_dt = x * dt[..., None].to(work)

    # 1. Within a chunk: y_i = exp(cum_i - m) sum_{j <= i} (C_i . B_j) exp(m - cum_j) x_j dt_j.
    mid = cum[:, :, q // 2 : q // 2 + 1]
    causal = torch.ones(q, q, dtype=torch.bool, device=x.device).tril()
    scores = torch.einsum("bcign,bcjgn->bcgij", C, B).masked_fill(~causal, 0.0)
    scaled = x_dt * torch.exp(mid - cum).to(work)[..., None]
    y = torch.einsum("bcgij,bcjgrp->bcigrp", scores, scaled)
    y = y * torch.exp(cum - mid).to(work)[..., None]

    # 2. Each chunk's final state from its own inputs: sum_j exp(cum_end - cum_j) x_j dt_j B_j.
    to_end = torch.exp(cum[:, :, -1:] - cum).to(work)  # (b, c, q, g, r), <= 1
    states = torch.einsum("bcjgn,bcjgrp->bcgrpn", B, x_dt * to_end[..., None])

    # 3. Across chunks.
    entering = _entering_states(cum, states)

    # 4. The entering state read out inside the chunk: y_i += exp(cum_i) C_i . S_in.
    readout = torch.einsum("bcign,bcgrpn->bcigrp", C, entering)
    y = y + readout * torch.exp(cum).to(work)[..., None]
    return y.reshape(b, c * q, h, p)[:, :length].to(in_dtype)


def _chunked_decays(dt: Tensor, A: Tensor, chunk_size: int) -> tuple[Tensor, Tensor]:
    """dt (b, l, h) -> dt and the log decay from each chunk's start (<= 0, floored per step as
    ``ssd_chunked`` says), both float32 (b, c, q, h) with the end zero-padded to whole chunks.

    Zero-padding the end is exact: padded steps carry no input (x = 0) and come after every
    real step, so the causal scan never lets them reach a real output.
    """
    if chunk_size > MAX_PURE_CHUNK:
        raise ValueError(
            f"chunk_size {chunk_size} > {MAX_PURE_CHUNK}: the decay factors could overflow"
        )
    b, length, h = dt.shape
    dt = F.pad(dt.float(), (0, 0, 0, (-length) % chunk_size)).reshape(b, -1, chunk_size, h)
    return dt, floored_log_decay(dt, A, chunk_size).cumsum(dim=2)


def floored_log_decay(dt: Tensor, A: Tensor, chunk_size: int) -> Tensor:
    """log of each step's decay, dt * A, floored as ``ssd_chunked`` says (float32)."""
    return (dt.float() * A.float()).clamp_min(-2 * _MAX_EXPONENT / chunk_size)


def _work_dtype(x: Tensor) -> torch.dtype:
    """The autocast dtype when autocast is on for ``x``'s device, else ``x``'s own."""
    device_type = x.device.type
    on = torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)
    return torch.get_autocast_dtype(device_type) if on else x.dtype


def _entering_states(cum: Tensor, states: Tensor) -> Tensor:
    """The state entering each chunk k: the sum of chunk m < k's final state decayed by the chunks
    in between, exp(total[m+1] + ... + total[k-1]). c is small (L / q), so one (c x c) product.
    ``cum`` (b, c, q, g, r) in float32, ``states`` (b, c, g, r, p, n) -> (b, c, g, r, p, n)."""
    c = cum.shape[1]
    total = cum[:, :, -1].permute(0, 2, 3, 1)  # (b, g, r, c): log decay over each whole chunk
    before = F.pad(total.cumsum(dim=-1), (1, 0))[..., :-1]  # sum of totals of chunks < k
    gap = before[..., :, None] - (before + total)[..., None, :]  # (b, g, r, k, m)
    earlier = torch.ones(c, c, dtype=torch.bool, device=cum.device).tril(-1)
    carry = torch.exp(gap.masked_fill(~earlier, -math.inf)).to(states.dtype)
    return torch.einsum("bgrkm,bmgrpn->bkgrpn", carry, states)


def ssd_chunked_inference(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int
) -> Tensor:
    """``ssd_chunked``'s function (the same chunks, the same floor on the log decay), rearranged
    for inference without autograd: fewer passes over x-sized tensors, and in place.

    Inside a chunk every factor refers to its middle m: the scaled input s_j = exp(m - cum_j)
    dt_j x_j (<= e^80) feeds both the intra-chunk product and the chunk's own state. States are
    carried between chunk ends, E_k = exp(cum_end_k) E_{k-1} + exp(cum_end_k - m_k) sum_j B_j
    s_j^T, by a sequential scan over the chunks whose every factor is a decay (<= 1; one that
    underflows to zero is the decay's own value). Carrying them at the middles instead would take
    a factor exp(m_k - m_{k-1}) down to e^-160, which float32 flushes to zero while the state it
    multiplies holds inputs scaled up to e^80: strong decays then lost the previous chunk's
    state. Then y_i = exp(cum_i - m) (sum_{j<=i} (C_i . B_j) s_j + C_i . exp(m_k) E_{k-1}): one
    batched product per chunk and group plus one in-place update and scale.
    """
    in_dtype, work = x.dtype, _work_dtype(x)
    b, length, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    q = chunk_size
    dt, cum = _chunked_decays(dt, A, q)  # (b, c, q, h)
    pad = (-length) % q
    c, r = (length + pad) // q, h // g
    mid = cum[:, :, q // 2]  # (b, c, h)
    scale_in = (dt * torch.exp(mid[:, :, None] - cum)).to(work)
    scale_out = torch.exp(cum - mid[:, :, None]).to(work)
    scaled = x.new_empty(b, c * q, h, p, dtype=work)
    scaled[:, length:] = 0
    torch.mul(x, scale_in.reshape(b, c * q, h, 1)[:, :length], out=scaled[:, :length])

    def by_group(t: Tensor) -> Tensor:  # (b, c*q, g, f) -> (b*c*g, q, f); a view when g = 1
        return t.reshape(b, c, q, g, -1).transpose(2, 3).reshape(b * c * g, q, -1)

    B_, C_ = (by_group(F.pad(t.to(work), (0, 0, 0, 0, 0, pad))) for t in (B, C))
    s = by_group(scaled)  # (b*c*g, q, r*p)

    def per_head(t: Tensor) -> Tensor:  # (b, c', h) float32 -> (b, c', g, 1, r, 1), work dtype
        return torch.exp(t).to(work).reshape(b, -1, g, 1, r, 1)

    ends = torch.bmm(B_.mT, s).reshape(b, c, g, n, r, p)  # each chunk's own inputs, at m
    ends.mul_(per_head(cum[:, :, -1] - mid))  # ... at its end
    whole_chunk = per_head(cum[:, 1:, -1])  # the decay over each chunk after the first
    for k in range(1, c):  # in place: E_k, the state at the end of chunk k
        torch.addcmul(ends[:, k], ends[:, k - 1], whole_chunk[:, k - 1], out=ends[:, k])
    carried = torch.empty_like(ends)  # the state entering each chunk, at its middle
    carried[:, 0] = 0  # nothing enters the first chunk
    torch.mul(ends[:, :-1], per_head(mid[:, 1:]), out=carried[:, 1:])
    causal = torch.ones(q, q, dtype=torch.bool, device=x.device).tril()
    y = torch.bmm(torch.bmm(C_, B_.mT).masked_fill_(~causal, 0.0), s)
    y.baddbmm_(C_, carried.reshape(b * c * g, n, r * p))
    y = y.reshape(b, c, g, q, r, p).mul_(scale_out.reshape(b, c, q, g, r, 1).transpose(2, 3))
    return y.transpose(2, 3).reshape(b, c * q, h, p)[:, :length].to(in_dtype)


def inferring() -> bool:
    """Whether the in-place inference code runs: without autograd, except in the ONNX export's
    capture (which traces the autograd path's plain tensor ops)."""
    return not torch.is_grad_enabled() and not torch.onnx.is_in_onnx_export()


class GatedRMSNorm(nn.Module):
    """RMSNorm of ``x * silu(z)`` per group of channels (mamba_ssm's RMSNorm, norm_before_gate=False)."""

    def __init__(self, dim: int, group_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.group_size = group_size
        self.eps = eps

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        gated = x.float() * F.silu(z.float())
        grouped = gated.unflatten(-1, (-1, self.group_size))
        normed = grouped * torch.rsqrt(grouped.square().mean(-1, keepdim=True) + self.eps)
        return (normed.flatten(-2) * self.weight.float()).to(x.dtype)

    def unweighted_in_place(self, x: Tensor, z: Tensor) -> Tensor:
        """``forward`` without autograd and before the weight (Mamba2 folds it into out_proj),
        computed in ``z``'s memory when z is float32: ``z`` is overwritten, ``x`` is not."""
        gated = F.silu(z.float(), inplace=True).mul_(x)
        grouped = gated.unflatten(-1, (-1, self.group_size))
        norm = torch.linalg.vector_norm(grouped, dim=-1, keepdim=True)
        grouped.mul_(norm.square_().div_(self.group_size).add_(self.eps).rsqrt_())
        return gated.to(x.dtype)


class Mamba2(nn.Module):
    """One Mamba-2 mixer: (batch, length, d_model) -> (batch, length, d_model), causal in time."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 128,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 64,
        ngroups: int = 1,
        chunk_size: int = 256,
        A_init_range: tuple[float, float] = (1.0, 16.0),
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
    ) -> None:
        super().__init__()
        d_inner = expand * d_model
        if d_inner % headdim:
            raise ValueError(
                f"expand * d_model ({d_inner}) must be a multiple of headdim ({headdim})"
            )
        nheads = d_inner // headdim
        if nheads % ngroups:
            raise ValueError(f"heads ({nheads}) must be a multiple of ngroups ({ngroups})")
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner, self.headdim, self.nheads = d_inner, headdim, nheads
        self.ngroups, self.chunk_size = ngroups, chunk_size

        # in_proj output order, as in mamba_ssm: [z, x, B, C, dt].
        self.in_proj = nn.Linear(d_model, 2 * d_inner + 2 * ngroups * d_state + nheads, bias=False)
        conv_dim = d_inner + 2 * ngroups * d_state
        self.conv1d = nn.Conv1d(
            conv_dim, conv_dim, d_conv, groups=conv_dim, padding=d_conv - 1, bias=True
        )
        # dt starts log-uniform in [dt_min, dt_max]; dt_bias stores its inverse softplus.
        dt = torch.exp(
            torch.rand(nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        ).clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.empty(nheads).uniform_(*A_init_range)))
        self.D = nn.Parameter(torch.ones(nheads))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True  # type: ignore[attr-defined]  # as mamba_ssm marks them
        self.norm = GatedRMSNorm(d_inner, group_size=d_inner // ngroups)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, u: Tensor, scan: ScanFn | None = None) -> Tensor:
        """``scan`` replaces the chunked SSD (e.g. with ``ssd_naive`` to check it)."""
        if scan is None and inferring():
            return self._inferred(u)
        z, xbc, dt = torch.split(
            self.in_proj(u),
            [self.d_inner, self.d_inner + 2 * self.ngroups * self.d_state, self.nheads],
            dim=-1,
        )
        xbc = F.silu(self._causal_conv(F.pad(xbc, (0, 0, self.d_conv - 1, 0))))
        x, B, C, dt, A = self._scan_inputs(xbc, dt)
        if scan is None:
            y = ssd_chunked(x, dt, A, B, C, self.pure_chunk_size)
        else:
            y = scan(x, dt, A, B, C).to(x.dtype)
        y = torch.addcmul(y.flatten(-2), x.flatten(-2), self._d_skip(x.dtype))
        return self.out_proj(self.norm(y, z))

    def _inferred(self, u: Tensor) -> Tensor:
        """``forward``'s function without autograd, in fewer passes over step-sized tensors.

        in_proj runs as three products, each output contiguous: z, so that the gate runs in
        place on it (silu of a strided view costs 3x); xBC over u with d_conv - 1 zero steps in
        front, which (no bias) are the causal conv's zero padding; and dt. The conv is the
        depthwise convolution read as a channels-last image ((B, C, 1, L) over xBC's own memory),
        7x faster than the shifted multiply-adds. On a CPU in float32 the scan, the D skip and the
        gated norm are one compiled loop (mamba2_cpu.py); elsewhere the chunked inference scan
        and in-place passes. The norm's weight is folded into out_proj's (a d_model x d_inner
        product instead of a pass over every step).
        """
        d, xbc_width, k = self.d_inner, self.d_inner + 2 * self.ngroups * self.d_state, self.d_conv
        weight = self.in_proj.weight
        padded = F.linear(F.pad(u, (0, 0, k - 1, 0)), weight[d : d + xbc_width])
        image = padded.unsqueeze(1).permute(0, 3, 1, 2)  # (b, xbc_width, 1, l + k - 1), a view
        conv = F.conv2d(image, self.conv1d.weight.unsqueeze(2), self.conv1d.bias, groups=xbc_width)
        xbc = F.silu(conv.permute(0, 2, 3, 1).squeeze(1), inplace=True)  # (b, l, xbc_width)
        x, B, C, dt, A = self._scan_inputs(xbc, F.linear(u, weight[d + xbc_width :]))
        z = F.linear(u, weight[:d])
        from szdet.models import mamba2_cpu  # here: numba takes 0.5 s to import

        if mamba2_cpu.available() and xbc.device.type == "cpu" and xbc.dtype == torch.float32:
            decay = floored_log_decay(dt, A, self.pure_chunk_size).exp_()
            gate = F.silu(z, inplace=True)
            gated = mamba2_cpu.scan_gate_norm(
                xbc, dt, decay, self.D, gate, self.norm.eps, self.ngroups
            )
        else:
            y = ssd_chunked_inference(x, dt, A, B, C, self.pure_chunk_size)
            y = y.flatten(-2).addcmul_(x.flatten(-2), self._d_skip(x.dtype))
            gated = self.norm.unweighted_in_place(y, z)
        return F.linear(gated, self.out_proj.weight * self.norm.weight.to(gated.dtype))

    @property
    def pure_chunk_size(self) -> int:
        # mamba_ssm's chunk_size (default 256) tunes its kernel; the pure scan's factorised
        # decays need chunks of at most 16, so it takes the smaller of the two.
        return min(self.chunk_size, MAX_PURE_CHUNK)

    def _scan_inputs(
        self, xbc: Tensor, dt: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The conv's output (b, l, d_inner + 2 g n) and dt's projection (b, l, h) -> the scan's
        x (b, l, h, p), B, C (b, l, g, n), dt (b, l, h) > 0 and A (h,) < 0."""
        x, B, C = torch.split(
            xbc, [self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1
        )
        x = x.unflatten(-1, (self.nheads, self.headdim))
        dt = F.softplus(dt.float() + self.dt_bias.float())
        A = -torch.exp(self.A_log.float())
        B = B.unflatten(-1, (self.ngroups, self.d_state))
        C = C.unflatten(-1, (self.ngroups, self.d_state))
        return x, B, C, dt, A

    def _d_skip(self, dtype: torch.dtype) -> Tensor:
        # D per channel (repeated over each head's channels): a contiguous broadcast, far faster
        # than one over a short innermost headdim.
        return self.D.to(dtype).repeat_interleave(self.headdim)

    def _causal_conv(self, padded: Tensor) -> Tensor:
        """``self.conv1d`` (depthwise, causal) as d_conv shifted multiply-adds, channels last, on
        xBC with its d_conv - 1 leading zero steps.

        Same result as the Conv1d module, without the transposes, and far faster in backward on
        CPU than the depthwise convolution kernel. Fused multiply-adds into one output tensor:
        each fresh x-sized tensor costs more than the arithmetic on it.
        """
        k = self.d_conv
        length = padded.shape[1] - (k - 1)
        weight = self.conv1d.weight.squeeze(1).to(padded.dtype)  # (channels, k)
        bias = self.conv1d.bias
        assert bias is not None  # built with bias=True, as mamba_ssm's
        out = torch.addcmul(bias.to(padded.dtype), padded[:, :length], weight[:, 0])
        for i in range(1, k):
            out.addcmul_(padded[:, i : i + length], weight[:, i])
        return out
