"""What it takes to load mamba_ssm's Triton kernels without their CUDA builds, and nothing more.

mamba_ssm is a CUDA build. Where only its Python sources are on the path (a CPU machine with
`make kernel-tools`, or a bare GPU machine with `make device-bundle`, scripts/gpu_check.sh), they
import with these stand-ins, each used only where the real thing does not import
(:func:`install_kernel_sources`):

- the package ``__init__`` is skipped: it imports the selective-scan CUDA extension and language
  models we never use; ``mamba_ssm.ops.triton.ssd_combined`` (what training calls) loads as is;
- ``causal_conv1d_cuda``, causal-conv1d's C++ extension, becomes a reference convolution that
  enforces the same input checks as its C++ entry points (csrc/causal_conv1d.cpp upstream): a
  layout the real kernel refuses is refused here too. It is plain torch, so it runs on a GPU too.

On a CPU, :func:`cpu_kernels` adds:

- ``torch.cuda.device`` is a null context and ``torch.cuda.get_device_properties`` describes the
  target GPU (the kernels size some grids by its SM count);
- optionally, autocast reads as enabled in bf16, so that mamba_ssm casts its output projection as
  it does under training's autocast (meta tensors cannot autocast).

The torch patches last while :func:`cpu_kernels` is open; the stand-in modules stay loaded. The
Triton side (interpreting or recording launches) is in launches.py; training never imports this
package.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from szdet.errors import UserError

KERNEL_PACKAGES = ("triton", "mamba_ssm", "causal_conv1d")
INSTALL_HINT = "make kernel-tools, then run .venv-kernels/bin/python -m szdet.cli"


@dataclass(frozen=True)
class GpuModel:
    name: str
    capability: int  # 80: sm_80
    sm_count: int
    shared_mem_per_block_bytes: int  # the opt-in maximum a kernel may use


A100 = GpuModel("A100-80GB", 80, 108, 163 * 1024)
H100 = GpuModel("H100/H200", 90, 132, 227 * 1024)
TARGETS = (A100, H100)


def kernel_target(device: torch.device) -> GpuModel:
    """The GPU at ``device`` described as a compile target."""
    props = torch.cuda.get_device_properties(device)
    capability = props.major * 10 + props.minor
    known = {gpu.capability: gpu.shared_mem_per_block_bytes for gpu in TARGETS}
    shared = getattr(props, "shared_memory_per_block_optin", None) or known[capability]
    return GpuModel(props.name, capability, props.multi_processor_count, shared)


def missing_packages() -> list[str]:
    return [name for name in KERNEL_PACKAGES if importlib.util.find_spec(name) is None]


def require_kernel_sources() -> None:
    missing = missing_packages()
    if missing:
        raise UserError(
            f"check-kernels --interpret needs {', '.join(missing)} (the kernel sources, not their "
            f"CUDA builds): {INSTALL_HINT}"
        )


# --- causal_conv1d_cuda: a reference with the C++ checks ----------------------------------------


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise RuntimeError(f"causal_conv1d: {message}")  # what TORCH_CHECK raises


def _check_conv_inputs(x: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    floats = (torch.float32, torch.float16, torch.bfloat16)
    _check(x.dtype in floats and weight.dtype in floats, "input and weight must be float/half/bf16")
    dim = x.shape[1]
    width = weight.shape[-1]
    _check(tuple(weight.shape) == (dim, width), "weight must have shape (dim, width)")
    _check(x.stride(2) == 1 or x.stride(1) == 1, "x must be contiguous in length or channels")
    if x.stride(1) == 1 and x.stride(2) > 1:  # channel-last
        _check(dim % 8 == 0, "only supports channel dimension divisible by 8 for now")
        _check(
            x.stride(2) % 8 == 0 and x.stride(0) % 8 == 0,
            "channel last layout requires strides (x.stride(0) and x.stride(2)) to be multiples of 8",
        )
    _check(2 <= width <= 4, "only supports width between 2 and 4")
    if bias is not None:
        _check(bias.dtype == weight.dtype and bias.stride(-1) == 1, "bias must match weight")
        _check(tuple(bias.shape) == (dim,), "bias must have shape (dim,)")


def _reference_conv(x: Tensor, weight: Tensor, bias: Tensor | None, silu: bool) -> Tensor:
    width = weight.shape[-1]
    out = F.conv1d(F.pad(x.float(), (width - 1, 0)), weight.float().unsqueeze(1), None,
                   groups=x.shape[1])  # fmt: skip
    if bias is not None:
        out = out + bias.float()[:, None]
    return F.silu(out) if silu else out


def causal_conv1d_fwd(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    seq_idx: Tensor | None,
    initial_states: Tensor | None,
    out: Tensor,
    final_states_out: Tensor | None,
    silu: bool,
) -> None:
    _check_conv_inputs(x, weight, bias)
    _check(seq_idx is None and initial_states is None and final_states_out is None,
           "seq_idx/initial/final states are not used by szdet")  # fmt: skip
    out.copy_(_reference_conv(x, weight, bias, silu))


def causal_conv1d_bwd(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    dout: Tensor,
    seq_idx: Tensor | None,
    initial_states: Tensor | None,
    dfinal_states: Tensor | None,
    dx: Tensor,
    dweight: Tensor,
    dbias: Tensor | None,
    dinitial_states: Tensor | None,
    silu: bool,
) -> None:
    _check_conv_inputs(x, weight, bias)
    _check(tuple(dout.shape) == tuple(x.shape), "dout must have the shape of x")
    _check((bias is None) == (dbias is None), "bias and dbias go together")
    _check(dx.dtype == x.dtype, "dx must have the dtype of x")
    if x.stride(1) == 1 and x.stride(2) > 1:  # channel-last; C++ first makes dout so too
        _check(dx.stride(1) == 1, "channel last layout requires dx.stride(1) == 1")
    else:
        _check(dx.stride(2) == 1, "dx must be contiguous in length")
    # The op runs below autograd (torch.library), so the gradient is taken by hand: silu's
    # derivative, then the convolution's own backward on the left-padded input.
    width = weight.shape[-1]
    padded = F.pad(x.float(), (width - 1, 0))
    w = weight.float().unsqueeze(1)
    grad = dout.float()
    if silu:
        pre = F.conv1d(padded, w, bias.float() if bias is not None else None, groups=x.shape[1])
        sig = torch.sigmoid(pre)
        grad = grad * sig * (1 + pre * (1 - sig))
    d_padded, d_weight, d_bias = torch.ops.aten.convolution_backward(
        grad, padded, w, [x.shape[1]], [1], [0], [1], False, [0], x.shape[1], [True, True, True]
    )
    dx.copy_(d_padded[..., width - 1 :])
    dweight.copy_(d_weight.squeeze(1))
    if dbias is not None:
        dbias.copy_(d_bias)


def _causal_conv1d_extension() -> types.ModuleType:
    module = types.ModuleType("causal_conv1d_cuda")
    module.__dict__.update(causal_conv1d_fwd=causal_conv1d_fwd, causal_conv1d_bwd=causal_conv1d_bwd)
    return module


# --- the context ----------------------------------------------------------------------------------


@contextlib.contextmanager
def patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


def _bare_package(name: str) -> types.ModuleType:
    """``name`` as a package whose ``__init__`` does not run (its submodules import normally)."""
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations is not None
    package = types.ModuleType(name)
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    return package


def _device_properties(gpu: GpuModel) -> Callable[..., Any]:
    def properties(device: Any = None) -> types.SimpleNamespace:
        return types.SimpleNamespace(
            name=gpu.name,
            major=gpu.capability // 10,
            minor=gpu.capability % 10,
            multi_processor_count=gpu.sm_count,
        )

    return properties


def _imports(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:  # absent, or a CUDA build that does not load on this machine
        return False
    return True


@functools.cache
def install_kernel_sources() -> dict[str, str]:
    """Make ``mamba_ssm.ops.triton.ssd_combined`` importable wherever the kernels' Python sources
    are, each stand-in (module docstring) taking the place of a CUDA build that does not import.
    Once per process: causal-conv1d registers its torch.library ops at import time. Returns what
    serves each: {"mamba_ssm": ..., "causal_conv1d": ...}."""
    require_kernel_sources()
    loaded = {}
    if _imports("causal_conv1d_cuda"):
        loaded["causal_conv1d"] = "CUDA extension"
    else:
        sys.modules["causal_conv1d_cuda"] = _causal_conv1d_extension()
        loaded["causal_conv1d"] = "reference convolution with the C++ extension's checks"
    # The selective-scan extension is what the package __init__ needs and the SSD kernels do not.
    if _imports("selective_scan_cuda"):
        loaded["mamba_ssm"] = "installed package"
    else:
        sys.modules["mamba_ssm"] = _bare_package("mamba_ssm")
        loaded["mamba_ssm"] = (
            "Triton SSD kernels from the Python sources (package __init__ skipped)"
        )
    return loaded


def _load_fused() -> Callable[..., Tensor]:
    install_kernel_sources()
    combined = importlib.import_module("mamba_ssm.ops.triton.ssd_combined")
    fused: Callable[..., Tensor] = combined.mamba_split_conv1d_scan_combined
    return fused


@contextlib.contextmanager
def cpu_kernels(
    gpu: GpuModel = A100, autocast_bf16: bool = False
) -> Iterator[Callable[..., Tensor]]:
    """Yield mamba_ssm's ``mamba_split_conv1d_scan_combined``, callable on this CPU machine while
    the context lasts (module docstring)."""
    require_kernel_sources()
    with contextlib.ExitStack() as stack:
        stack.enter_context(patched(torch.cuda, "device", lambda *_: contextlib.nullcontext()))
        stack.enter_context(patched(torch.cuda, "get_device_properties", _device_properties(gpu)))
        if autocast_bf16:
            enabled, dtype = torch.is_autocast_enabled, torch.get_autocast_dtype
            # CUDA's autocast (asked with no device, as mamba_ssm does, or "cuda") reads as on; a
            # real CPU autocast keeps its own state, so its contexts save and restore it intact.
            stack.enter_context(patched(torch, "is_autocast_enabled",
                lambda device="cuda": True if device == "cuda" else enabled(device)))  # fmt: skip
            stack.enter_context(patched(torch, "get_autocast_dtype",
                lambda device: torch.bfloat16 if device == "cuda" else dtype(device)))  # fmt: skip
            stack.enter_context(patched(torch, "get_autocast_gpu_dtype", lambda: torch.bfloat16))
        yield _load_fused()
