"""TCN encoder: dilated convolutions over the full-rate signal, then a strided downsample.

Layer i has dilation 2**i (1 ... 128 for 8 layers), so the receptive field grows to
(kernel - 1) * (2**layers - 1) + 1 samples (1531 = 6 s at 256 Hz for the reference). Convolutions
are centred ("same" padding): detection is offline, every step may see both sides.
"""

from __future__ import annotations

from torch import Tensor, nn


class TCNBlock(nn.Module):
    """conv -> GroupNorm(1) -> GELU, plus a residual path (1x1 conv where the width changes).

    GroupNorm with one group normalises each window over channels and time: it bounds the scale
    of any input (1e4 or a flat line) without batch statistics or buffers.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(
            in_ch, out_ch, kernel_size, dilation=dilation, padding=dilation * (kernel_size - 1) // 2
        )
        self.norm = nn.GroupNorm(1, out_ch)
        self.act = nn.GELU()
        self.skip: nn.Module = nn.Identity() if in_ch == out_ch else nn.Conv1d(in_ch, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x))) + self.skip(x)


class TCNEncoder(nn.Module):
    """(batch, in_channels, L) -> (batch, channels[-1], L / downsample); kernel_size odd."""

    def __init__(
        self, in_channels: int, channels: list[int], kernel_size: int, downsample: int
    ) -> None:
        super().__init__()
        widths = [in_channels, *channels]
        self.blocks = nn.Sequential(
            *(
                TCNBlock(widths[i], widths[i + 1], kernel_size, dilation=2**i)
                for i in range(len(channels))
            )
        )
        # A learned pooling: one output step per `downsample` input samples, no overlap.
        self.downsample = nn.Conv1d(channels[-1], channels[-1], downsample, stride=downsample)

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(self.blocks(x))
