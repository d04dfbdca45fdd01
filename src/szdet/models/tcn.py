"""TCN encoder: dilated convolutions over the signal, then a learned strided downsample.

At the full rate, layer i has dilation 2**i (1 ... 128 for 8 layers), so the receptive field grows
to (kernel - 1) * (2**layers - 1) + 1 samples (1531 = 6 s at 256 Hz for the reference). Convolutions
are centred ("same" padding): detection is offline, every step may see both sides.

Two speed variants, off by default, neither changing what a layer sees in seconds:

- Multi-rate (``pool_every=e > 0``): a parameter-free 2x average pool before every e-th layer
  halves the rate, and the layer's dilation shrinks by the pooling so far, so each layer still spans
  (kernel - 1) * 2**i input samples. An output step sees the same (kernel - 1) * (2**layers - 1) +
  downsample input samples at any e (1546 for the reference); the pools only smooth within them.
  The late, wide layers run at 1/8 of the rate (e=2, 8 layers), which cuts the reference TCN's MACs
  ~6x; the final strided downsample takes the remaining ``downsample / pooling``.
- Fused (``fused=True``): the same parameters and function, laid out for a GPU. Each convolution
  runs as a 2-D one on a channels-last (B, C, 1, L) view, the layout cuDNN's tensor-core kernels
  prefer, and GroupNorm + GELU + residual is one compiled kernel whose output stays in the
  convolution's dtype: under bf16 autocast the activations between blocks stay bf16.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TCNBlock(nn.Module):
    """[2x average pool] -> conv -> GroupNorm(1) -> GELU, plus a residual path (1x1 conv where the
    width changes).

    GroupNorm with one group normalises each window over channels and time: it bounds the scale
    of any input (1e4 or a flat line) without batch statistics or buffers.
    """

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int, dilation: int, pool: bool = False
    ) -> None:
        super().__init__()
        self.pool = pool  # a flag, not a module: the pool has no state, the state dict stays
        self.conv = nn.Conv1d(
            in_ch, out_ch, kernel_size, dilation=dilation, padding=dilation * (kernel_size - 1) // 2
        )
        self.norm = nn.GroupNorm(1, out_ch)
        self.act = nn.GELU()
        self.skip: nn.Module = nn.Identity() if in_ch == out_ch else nn.Conv1d(in_ch, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.pool:
            x = F.avg_pool1d(x, 2)
        h = self.conv(x)
        exporting = torch.onnx.is_in_onnx_export()
        h = group_norm_in_two_stages(h, self.norm) if exporting else self.norm(h)
        return self.act(h) + self.skip(x)


def group_norm_in_two_stages(h: Tensor, norm: nn.GroupNorm) -> Tensor:
    """``norm`` (one group) on (B, C, L), for the ONNX export: each statistic reduced over time,
    then over channels, the variance from centred values. onnxruntime runs GroupNorm as one
    InstanceNormalization whose float32 sums over all C x L values (7.9M for a 60 s window at 512
    channels) drift by ~1e-3; in two stages they stay within ~1e-6, as PyTorch's do."""
    mean = h.mean(-1, keepdim=True).mean(-2, keepdim=True)
    centred = h - mean
    var = centred.square().mean(-1, keepdim=True).mean(-2, keepdim=True)
    scale = torch.rsqrt(var + norm.eps) * norm.weight[:, None]
    return centred * scale + norm.bias[:, None]


def norm_gelu_residual(h: Tensor, skip: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """GELU(GroupNorm(1)(h)) + skip, returned in h's dtype (bf16 under autocast, not float32).

    The statistics are float32 whatever h is: bf16's 8 bits cannot hold a mean over C x L values.
    """
    y = F.gelu(F.group_norm(h.float(), 1, weight, bias, eps)) + skip
    return y.to(h.dtype).contiguous(memory_format=torch.channels_last)


@functools.cache
def compiled_norm_gelu_residual() -> Callable[..., Tensor]:
    # Built on first use: torch.compile imports its machinery, seconds that CPU-only runs never need.
    return torch.compile(norm_gelu_residual)


def conv_as_2d(conv: nn.Conv1d, x: Tensor) -> Tensor:
    """``conv`` applied to a (B, C, 1, L) view, its (out, in, k) weight viewed as (out, in, 1, k)."""
    return F.conv2d(
        x,
        conv.weight.unsqueeze(2),
        conv.bias,
        padding=(0, int(conv.padding[0])),  # int(): typed str | int, as padding may be "same"
        dilation=(1, conv.dilation[0]),
    )


class FusedTCNBlock(TCNBlock):
    """TCNBlock's parameters and function on (B, C, L); between blocks the memory stays (B, L, C)
    (channels-last), so each block's views and layout changes cost no copy."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)  # a copy for block 0 only
        if self.pool:
            x = F.avg_pool2d(x, (1, 2))
        h = conv_as_2d(self.conv, x)
        skip = conv_as_2d(self.skip, x) if isinstance(self.skip, nn.Conv1d) else x
        # Compiled on CUDA only: elsewhere (CPU tests, laptops, the meta device of model-summary)
        # the compile time buys nothing, and the eager function computes the same.
        fn = compiled_norm_gelu_residual() if x.is_cuda else norm_gelu_residual
        return fn(h, skip, self.norm.weight, self.norm.bias, self.norm.eps).squeeze(2)


class TCNEncoder(nn.Module):
    """(batch, in_channels, L) -> (batch, channels[-1], L / downsample); kernel_size odd.

    ``pool_every``: halve the rate before every this many layers (0: all at the full rate); the
    total pooling must divide ``downsample``. ``fused``: FusedTCNBlock, same state dict.
    """

    def __init__(
        self,
        in_channels: int,
        channels: list[int],
        kernel_size: int,
        downsample: int,
        pool_every: int = 0,
        fused: bool = False,
    ) -> None:
        super().__init__()
        block = FusedTCNBlock if fused else TCNBlock
        widths = [in_channels, *channels]
        blocks, pooling = [], 1
        for i in range(len(channels)):
            pool = pool_every > 0 and i > 0 and i % pool_every == 0
            pooling *= 2 if pool else 1
            # 2**i input samples between taps, as at the full rate: 2**i / pooling steps here.
            dilation = 2**i // pooling
            blocks.append(block(widths[i], widths[i + 1], kernel_size, dilation, pool=pool))
        if downsample % pooling:
            raise ValueError(f"TCN pooling {pooling} does not divide downsample {downsample}")
        self.blocks = nn.Sequential(*blocks)
        # A learned pooling: one output step per `downsample` input samples, no overlap.
        stride = downsample // pooling
        self.downsample = nn.Conv1d(channels[-1], channels[-1], stride, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(self.blocks(x))
