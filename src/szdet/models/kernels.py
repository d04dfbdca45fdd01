"""Which Mamba-2 implementation runs: mamba_ssm's fused CUDA kernel, or the pure-PyTorch path.

The switch is made per call, not by swapping modules. Every Mamba-2 in the model is an
``AutoMamba2``: the pure ``Mamba2`` module (same parameters, same state dict) whose forward hands
its own parameters to mamba_ssm's fused kernel ``mamba_split_conv1d_scan_combined`` (the function
``mamba_ssm.modules.mamba2.Mamba2.forward`` itself calls) when all of these hold:

- the config says ``model.kernels: auto`` or ``cuda`` (``pure`` forces the pure path everywhere);
- the input is on a CUDA device;
- mamba_ssm and causal_conv1d import.

Otherwise it runs the pure chunked scan, except that ``cuda`` on a GPU without importable kernels
is an error (:func:`select_path`): a cloud run never falls back to a path ~30x slower. So a model
is built once on the CPU, ``.to("cuda")`` is all it takes to use the kernels, and a checkpoint
from either path loads strictly into the other (and into ``mamba_ssm.modules.mamba2.Mamba2``
itself, which ``szdet check-kernels`` verifies). mamba_ssm is imported lazily: it is a CUDA-only
build and is not part of the CPU install.

CUDA caps a launch grid's y and z at 65,535 blocks, and ten of mamba_ssm's SSD kernels launch
``(..., rows * nchunks, nheads)``: the edge stream alone hands over B x 171 rows (164,160 at batch
64 with 15 chunks). ``AutoMamba2.fused_scan`` therefore splits the rows into calls that fit; rows
are independent sequences, so the split is exact. ``szdet check-kernels --interpret`` audits every
launch of a training step against these limits (szdet/kernel_proof/).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from szdet.errors import UserError
from szdet.models.mamba2 import Mamba2, ScanFn

log = logging.getLogger(__name__)

KernelChoice = Literal["auto", "pure", "cuda"]
CUDA_GRID_YZ_MAX = 65_535  # blocks per launch in grid y and z (x allows 2**31 - 1)
# Device types on which the fused kernel runs; the launch audit adds "meta" (szdet/kernel_proof/).
KERNEL_DEVICE_TYPES = frozenset({"cuda"})


@functools.cache
def fused_mamba2_kernel() -> Callable[..., Tensor] | None:
    """mamba_ssm's fused conv + scan + norm + out_proj function, or None when it cannot load."""
    try:
        import causal_conv1d  # noqa: F401  (the fused path runs its CUDA conv)
        from mamba_ssm.ops.triton.ssd_combined import mamba_split_conv1d_scan_combined
    except Exception as e:  # ImportError, or a CUDA library that fails to load
        log.debug("mamba_ssm kernels unavailable: %s", e)
        return None
    return mamba_split_conv1d_scan_combined


def uses_cuda_kernels(kernels: KernelChoice, device: torch.device | str) -> bool:
    """Whether a Mamba-2 with this setting runs mamba_ssm's kernel on ``device``."""
    return (
        kernels != "pure"
        and torch.device(device).type in KERNEL_DEVICE_TYPES
        and fused_mamba2_kernel() is not None
    )


def describe_path(kernels: KernelChoice, device: torch.device | str) -> str:
    """One line naming the Mamba-2 implementation in use on ``device``, and why."""
    if uses_cuda_kernels(kernels, device):
        return "mamba_ssm CUDA kernels (mamba_split_conv1d_scan_combined)"
    if kernels == "pure":
        why = "model.kernels is 'pure'"
    elif torch.device(device).type != "cuda":
        why = f"device is {torch.device(device).type}"
    else:
        why = "mamba_ssm/causal_conv1d not importable"
    return f"pure PyTorch chunked SSD ({why})"


def select_path(kernels: KernelChoice, device: torch.device | str) -> str:
    """``describe_path``, refusing in one line a run that requires the kernels and lacks them:
    on a device other than a GPU (a container whose CUDA does not work would otherwise train on
    the CPU for days), or on a GPU where they do not import."""
    described = describe_path(kernels, device)
    if kernels == "cuda" and torch.device(device).type != "cuda":
        raise UserError(
            f"model.kernels is 'cuda' but training runs on {torch.device(device).type} "
            "(set train.device=cuda on a GPU, or model.kernels=auto to allow the pure path)"
        )
    if kernels == "cuda" and fused_mamba2_kernel() is None:
        raise UserError(
            "model.kernels is 'cuda' but mamba_ssm/causal_conv1d do not import on this GPU "
            "(run `szdet check-kernels` for the reason, or set model.kernels=auto to allow the "
            "~30x slower pure path)"
        )
    return described


def rows_per_call(seqlen: int, chunk_size: int) -> int:
    """How many sequences one fused call may take: the SSD kernels' grids hold rows x chunks."""
    nchunks = math.ceil(seqlen / chunk_size)
    if nchunks > CUDA_GRID_YZ_MAX:
        raise ValueError(
            f"{seqlen} steps make {nchunks} chunks of {chunk_size}: more than CUDA's "
            f"{CUDA_GRID_YZ_MAX} grid blocks; raise model.chunk_size or shorten the window"
        )
    return CUDA_GRID_YZ_MAX // nchunks


class AutoMamba2(Mamba2):
    """A ``Mamba2`` that runs mamba_ssm's fused kernel on CUDA when allowed (module docstring)."""

    def __init__(
        self,
        *args: Any,
        kernels: KernelChoice = "auto",
        kernel_chunk_size: int = 64,
        recompute: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.kernels: KernelChoice = kernels
        # The pure scan is fastest and leanest with short chunks (``chunk_size``); mamba_ssm's
        # Triton kernels are tuned and tested for 64 and up.
        self.kernel_chunk_size = kernel_chunk_size
        # The pure path keeps ~9 KB of activations per token and mixer; recomputing them in
        # backward keeps only the input (mamba_ssm's fused kernel is lean already).
        self.recompute = recompute

    def forward(self, u: Tensor, scan: ScanFn | None = None) -> Tensor:
        if scan is None and uses_cuda_kernels(self.kernels, u.device):
            fused = fused_mamba2_kernel()
            assert fused is not None
            return self.fused_scan(self.in_proj(u), fused)
        if scan is None and self.recompute and torch.is_grad_enabled():
            out: Tensor = checkpoint(super().forward, u, use_reentrant=False)
            return out
        return super().forward(u, scan)

    def fused_scan(self, zxbcdt: Tensor, fused: Callable[..., Tensor]) -> Tensor:
        """Everything after ``in_proj`` through mamba_ssm's fused kernel, in calls whose launch
        grids fit CUDA's limits (module docstring). The launch audit calls this very method."""
        per_call = rows_per_call(zxbcdt.shape[1], self.kernel_chunk_size)
        # Multiples of 16 rows: Triton specialises integer arguments on divisibility by 16, so
        # near-equal pieces (4,369 and 4,368 rows) would each be autotuned and compiled.
        per_call = per_call // 16 * 16 or per_call
        pieces = [
            fused(
                rows,
                self.conv1d.weight.squeeze(1),
                self.conv1d.bias,
                self.dt_bias,
                -torch.exp(self.A_log.float()),
                D=self.D,
                chunk_size=self.kernel_chunk_size,
                activation="silu",
                rmsnorm_weight=self.norm.weight,
                rmsnorm_eps=self.norm.eps,
                outproj_weight=self.out_proj.weight,
                outproj_bias=None,
                headdim=self.headdim,
                ngroups=self.ngroups,
                norm_before_gate=False,
            )
            for rows in zxbcdt.split(per_call)
        ]
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def mamba2_factory(kernels: KernelChoice, **sizes: Any) -> Callable[[], Mamba2]:
    """A constructor of identically sized ``AutoMamba2`` mixers, for the bidirectional stacks."""
    return functools.partial(AutoMamba2, kernels=kernels, **sizes)
