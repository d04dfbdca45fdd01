"""Which Mamba-2 implementation runs: mamba_ssm's fused CUDA kernel, or the pure-PyTorch path.

The switch is made per call, not by swapping modules. Every Mamba-2 in the model is an
``AutoMamba2``: the pure ``Mamba2`` module (same parameters, same state dict) whose forward hands
its own parameters to mamba_ssm's fused kernel ``mamba_split_conv1d_scan_combined`` (the function
``mamba_ssm.modules.mamba2.Mamba2.forward`` itself calls) when all of these hold:

- the config says ``model.kernels: auto`` (``pure`` forces the pure path everywhere);
- the input is on a CUDA device;
- mamba_ssm and causal_conv1d import.

Otherwise it runs the pure chunked scan. So a model is built once on the CPU, ``.to("cuda")`` is
all it takes to use the kernels, and a checkpoint from either path loads strictly into the other
(and into ``mamba_ssm.modules.mamba2.Mamba2`` itself, which ``szdet check-kernels`` verifies).
mamba_ssm is imported lazily: it is a CUDA-only build and is not part of the CPU install.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from szdet.models.mamba2 import Mamba2, ScanFn

log = logging.getLogger(__name__)

KernelChoice = Literal["auto", "pure"]


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
        kernels == "auto"
        and torch.device(device).type == "cuda"
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
        if scan is None and u.is_cuda and uses_cuda_kernels(self.kernels, u.device):
            return self._fused_forward(u)
        if scan is None and self.recompute and torch.is_grad_enabled():
            out: Tensor = checkpoint(super().forward, u, use_reentrant=False)
            return out
        return super().forward(u, scan)

    def _fused_forward(self, u: Tensor) -> Tensor:
        fused = fused_mamba2_kernel()
        assert fused is not None
        return fused(
            self.in_proj(u),
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


def mamba2_factory(kernels: KernelChoice, **sizes: Any) -> Callable[[], Mamba2]:
    """A constructor of identically sized ``AutoMamba2`` mixers, for the bidirectional stacks."""
    return functools.partial(AutoMamba2, kernels=kernels, **sizes)
