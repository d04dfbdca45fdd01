"""`szdet check-kernels`: is the Mamba-2 in use correct and how fast, on this machine?

For the node and edge Mamba-2 sizes of the reference model:
- always: the pure chunked path against the naive step-by-step recurrence (float32, a length
  that is not a multiple of any chunk), forward output and every gradient;
- on CUDA with mamba_ssm: ``mamba_ssm.modules.mamba2.Mamba2`` loaded strictly from the pure
  module's state dict, and our ``AutoMamba2`` on its fused-kernel path (what training runs), each
  run on the same input as the pure module, forward and backward compared;
- time per forward+backward call of each, at the window's 960 steps.
Exit 1 when a difference exceeds its tolerance, or with ``--require-cuda-kernels`` when the
mamba_ssm kernels cannot run here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from szdet.config import Config, ModelConfig
from szdet.models.kernels import (
    AutoMamba2,
    describe_path,
    fused_mamba2_kernel,
    uses_cuda_kernels,
)
from szdet.models.mamba2 import Mamba2, ssd_naive

PURE_VS_NAIVE_TOL = 1e-4  # float32: max |difference| / max(1, max |reference|)
# mamba_ssm's Triton kernels take TF32/bf16 dot products (10-bit mantissa): relative 1e-2.
KERNEL_VS_PURE_TOL = 1e-2
PARITY_LENGTH = 200  # not a multiple of 16 or 64: the padded last chunk is exercised


@dataclass(frozen=True)
class MixerSize:
    name: str
    d_model: int
    d_state: int
    headdim: int
    sequences: int  # per window: 19 electrodes, or 171 electrode pairs

    def kwargs(self, cfg: ModelConfig) -> dict[str, Any]:
        return {
            "d_model": self.d_model,
            "d_state": self.d_state,
            "headdim": self.headdim,
            "d_conv": cfg.d_conv,
            "expand": cfg.expand,
        }


def mixer_sizes(cfg: ModelConfig) -> list[MixerSize]:
    n = cfg.in_channels
    return [
        MixerSize("node", cfg.node_dim, cfg.node_d_state, cfg.node_headdim, n),
        MixerSize("edge", cfg.edge_dim, cfg.edge_d_state, cfg.edge_headdim, n * (n - 1) // 2),
    ]


def randomise(module: Mamba2) -> Mamba2:
    """Move dt_bias and D off their initial values so that every term is exercised."""
    with torch.no_grad():
        module.dt_bias.normal_(-2.0, 1.0)
        module.D.normal_()
        module.norm.weight.normal_(1.0, 0.2)
    return module


def outputs_and_grads(
    module: nn.Module, u: Tensor, run: Callable[[Tensor], Tensor], rows_per_pass: int | None = None
) -> dict:
    """``run(u)``'s output and the gradients of its mean square, for ``u`` and every parameter.

    ``rows_per_pass`` runs the rows (independent sequences) a slice at a time: the loss is a sum
    over rows, so the gradients accumulate to the whole batch's, in the memory of one slice.
    """
    u = u.detach().clone().requires_grad_(True)
    module.zero_grad(set_to_none=True)
    outs = []
    for rows in u.split(rows_per_pass or len(u)):
        out = run(rows)
        (out.float().square().sum() / u.numel()).backward()  # one term of the mean over u
        outs.append(out.detach().float())
    out = torch.cat(outs)
    grads = {
        name: torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
        for name, p in module.named_parameters()
    }
    assert u.grad is not None
    return {"out": out.detach().float(), "input": u.grad.detach().float(), **grads}


def _worst_relative(ref: dict, other: dict) -> tuple[str, float, float]:
    """(tensor name, max |diff|, max |diff| / max(1, max |ref|)) of the worst tensor."""
    worst = ("", 0.0, 0.0)
    for name, ref_t in ref.items():
        diff = (ref_t.float() - other[name].float()).abs().max().item()
        scale = max(1.0, ref_t.float().abs().max().item())
        if diff / scale >= worst[2]:
            worst = (name, diff, diff / scale)
    return worst


def _time_per_call(
    run: Callable[[Tensor], Tensor], u: Tensor, repeats: int = 3, backward: bool = True
) -> float:
    def once() -> None:
        if not backward:
            with torch.no_grad():
                run(u)
            return
        x = u.detach().requires_grad_(True)
        run(x).float().square().mean().backward()

    once()  # warm-up: allocator, kernels' autotuning
    if u.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        once()
    if u.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def check_pure_vs_naive(
    size: MixerSize, cfg: ModelConfig, device: torch.device, timing_steps: int
) -> bool:
    torch.manual_seed(0)
    pure = randomise(Mamba2(**size.kwargs(cfg), chunk_size=cfg.pure_chunk_size)).to(device)
    u = torch.randn(2, PARITY_LENGTH, size.d_model, device=device)
    chunked = outputs_and_grads(pure, u, pure)
    naive = outputs_and_grads(pure, u, lambda x: pure(x, scan=ssd_naive))
    name, diff, rel = _worst_relative(naive, chunked)
    ok = rel <= PURE_VS_NAIVE_TOL
    print(
        f"[{size.name}] pure chunked vs naive recurrence (float32, {device.type}, L={PARITY_LENGTH}):"
        f" max |diff| {diff:.2e} (worst: {name}), relative {rel:.2e}, tol {PURE_VS_NAIVE_TOL:.0e}"
        f" -> {'OK' if ok else 'FAIL'}"
    )
    timing_u = torch.randn(size.sequences, timing_steps, size.d_model, device=device)
    # Forward only: the naive loop's backward takes minutes at this length.
    t_pure = _time_per_call(pure, timing_u, backward=False)
    t_naive = _time_per_call(lambda x: pure(x, scan=ssd_naive), timing_u, 1, backward=False)
    print(
        f"    forward per call ({size.sequences} x {timing_steps} steps): pure"
        f" {t_pure * 1e3:.1f} ms, naive {t_naive * 1e3:.1f} ms ({t_naive / t_pure:.0f}x)"
    )
    return ok


def check_kernel_vs_pure(
    size: MixerSize, cfg: ModelConfig, device: torch.device, timing_steps: int
) -> bool:
    from mamba_ssm.modules.mamba2 import Mamba2 as KernelMamba2

    torch.manual_seed(0)
    pure = randomise(Mamba2(**size.kwargs(cfg), chunk_size=cfg.pure_chunk_size)).to(device)
    kernel = KernelMamba2(**size.kwargs(cfg), chunk_size=cfg.chunk_size).to(device)
    kernel.load_state_dict(pure.state_dict(), strict=True)  # the checkpoint contract itself
    u = torch.randn(size.sequences, timing_steps, size.d_model, device=device)
    ref = outputs_and_grads(pure, u, pure)
    got = outputs_and_grads(kernel, u, kernel)
    # ... and the module training really runs: our AutoMamba2 handing its own parameters to the
    # fused kernel (a wrong argument there would pass the line above and train another model).
    auto = AutoMamba2(
        **size.kwargs(cfg),
        chunk_size=cfg.pure_chunk_size,
        kernels="auto",
        kernel_chunk_size=cfg.chunk_size,
    ).to(device)
    auto.load_state_dict(pure.state_dict(), strict=True)
    got_auto = outputs_and_grads(auto, u, auto)
    ok = True
    candidates = [("mamba_ssm Mamba2", kernel, got), ("szdet AutoMamba2", auto, got_auto)]
    for label, module, outputs in candidates:
        name, diff, rel = _worst_relative(ref, outputs)
        ok = ok and rel <= KERNEL_VS_PURE_TOL
        t_kernel = _time_per_call(module, u, repeats=10)
        print(
            f"[{size.name}] {label} (CUDA kernels) vs pure (float32, state dict loaded strictly):"
            f" max |diff| {diff:.2e} (worst: {name}), relative {rel:.2e},"
            f" tol {KERNEL_VS_PURE_TOL:.0e} -> {'OK' if rel <= KERNEL_VS_PURE_TOL else 'FAIL'};"
            f" fwd+bwd per call ({size.sequences} x {timing_steps} steps) {t_kernel * 1e3:.2f} ms"
        )
    t_pure = _time_per_call(pure, u, repeats=10)
    print(f"[{size.name}] pure fwd+bwd per call {t_pure * 1e3:.2f} ms")
    return ok


def check_kernels(config: Config, require_cuda_kernels: bool) -> int:
    """Parity of the Mamba-2 paths at ``config``'s sizes (the reference sizes by default), timed
    at the steps of one window after the TCN's downsample."""
    cfg = config.model
    timing_steps = config.window_samples // cfg.downsample
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    where = torch.cuda.get_device_name(device) if cuda else "CPU (no CUDA device)"
    print(f"torch {torch.__version__} on {where}")
    print(f"Mamba-2 path with model.kernels=auto: {describe_path('auto', device)}")
    kernels_usable = uses_cuda_kernels("auto", device)
    if require_cuda_kernels and not kernels_usable:  # say so before minutes of other checks
        print("FAIL: --require-cuda-kernels, but the mamba_ssm CUDA kernels cannot run here")
        return 1
    ok = True
    for size in mixer_sizes(cfg):
        ok = check_pure_vs_naive(size, cfg, device, timing_steps) and ok
        if kernels_usable:
            ok = check_kernel_vs_pure(size, cfg, device, timing_steps) and ok
    if cuda and not kernels_usable:
        reason = "not importable" if fused_mamba2_kernel() is None else "not usable"
        print(f"mamba_ssm kernels {reason}: only the pure path was checked")
    print("all checks passed" if ok else "FAIL: a difference exceeds its tolerance")
    return 0 if ok else 1
