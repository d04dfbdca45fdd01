"""Where a model runs and in which precision: one rule for training, evaluation and benchmarks."""

from __future__ import annotations

import ctypes
import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Literal

import torch

from szdet.errors import UserError

_DRIVER_FILE = Path("/proc/driver/nvidia/version")  # the kernel module's, no tool needed


def driver_version() -> str | None:
    """The NVIDIA driver's version, from the kernel module or nvidia-smi; None without one."""
    try:
        found = re.search(r"Kernel Module\s+(\d[\d.]*)", _DRIVER_FILE.read_text())
        if found:
            return found.group(1)
    except OSError:
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def cuda_description(device: torch.device | None = None) -> dict[str, Any]:
    """What a CUDA run depends on: torch and its CUDA, the driver, and the GPU (None without)."""
    found: dict[str, Any] = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "driver": driver_version(),
        "gpu": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(device or torch.cuda.current_device())
        found["gpu"] = {
            "name": props.name,
            "capability": f"sm_{props.major}{props.minor}",
            "sm_count": props.multi_processor_count,
            "memory_gb": round(props.total_memory / 1e9, 1),
        }
    return found


def describe_cuda(device: torch.device | None = None) -> str:
    """``cuda_description`` as one line for a log."""
    found = cuda_description(device)
    gpu = found["gpu"]
    where = (
        f"{gpu['name']} ({gpu['capability']}, {gpu['sm_count']} SMs, {gpu['memory_gb']} GB)"
        if gpu
        else "no usable GPU"
    )
    return (
        f"{where}; driver {found['driver'] or 'not found'}; torch {found['torch']} built for "
        f"CUDA {found['torch_cuda'] or 'none (a CPU build)'}"
    )


def pick_device(requested: str, local_rank: int) -> torch.device:
    """``auto`` takes this process's GPU when CUDA is available, else the CPU; a GPU comes with
    cuDNN autotuning on. ``cuda`` without a usable GPU is refused, naming the driver and torch's
    CUDA (a driver older than the CUDA torch was built for hides the GPU)."""
    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        raise UserError(f"train.device is cuda, but CUDA is not usable here: {describe_cuda()}")
    if requested == "cpu" or not has_cuda:
        return torch.device("cpu")
    if local_rank >= torch.cuda.device_count():
        raise UserError(
            f"train: local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible)"
        )
    # Training and prediction see one window shape (and a last, smaller batch): cuDNN may time
    # its convolution algorithms once per shape and keep the fastest.
    torch.backends.cudnn.benchmark = True
    return torch.device("cuda", local_rank)


def autocast_dtype(device: torch.device, precision: Literal["bf16", "fp32"]) -> torch.dtype | None:
    """bf16 autocast on CUDA when ``train.precision`` asks for it (for the tensor cores); the CPU
    always runs float32."""
    return torch.bfloat16 if device.type == "cuda" and precision == "bf16" else None


# mallopt's parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEEP_BYTES = 2**31 - 1  # the largest an int takes: every block stays in the heap


def keep_freed_memory() -> bool:
    """Keep freed large blocks in the process's heap for the next tensor (glibc only; False
    elsewhere). By default glibc maps each block above its mmap threshold (at most 32 MB) afresh
    and unmaps it when freed, so every fresh activation of a CPU forward page-faults again: ~5x
    the arithmetic on it (measured, README "Speed on a CPU"). Freed memory is reused instead, and
    given back to the system only when the process ends."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(
            libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES)
            and libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES)
        )
    except (OSError, AttributeError):
        return False


CGROUP_ROOT = Path("/sys/fs/cgroup")  # in a container (its own cgroup namespace): its own limits


def cpu_quota_cores(cgroup_root: Path | None = None) -> int | None:
    """Whole cores a CPU quota grants this process (``docker run --cpus``, a Kubernetes limit):
    cgroup v2's cpu.max or v1's cfs quota over its period, rounded down, at least 1; None
    without a quota. A quota is time, not cores: torch still sees every core of the host."""
    cgroup_root = cgroup_root or CGROUP_ROOT
    try:
        if (cgroup_root / "cpu.max").exists():
            quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
        else:
            v1 = cgroup_root / "cpu"
            quota = (v1 / "cpu.cfs_quota_us").read_text().strip()
            period = (v1 / "cpu.cfs_period_us").read_text().strip()
        if quota in ("max", "-1"):
            return None
        return max(1, math.floor(int(quota) / int(period)))
    except (OSError, ValueError):  # no cgroup files (not Linux) or a format not known here
        return None


def fit_threads_to_cpus(cgroup_root: Path | None = None) -> int:
    """Lower torch's intra-op threads to the cores this process may use (its CPU affinity and
    quota), never raise them, and return the count. torch counts the host's cores: under a
    quota of 10 on a 64-core host it would run 64 threads (each stalled by the quota) and,
    at inference on a CPU, 64 forwards at once (evaluate/cpu_workers.py, ~0.4 GB each)."""
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    usable = len(affinity) if affinity else os.cpu_count() or 1
    cores = min(usable, cpu_quota_cores(cgroup_root) or usable)
    if torch.get_num_threads() > cores:
        torch.set_num_threads(cores)
    return torch.get_num_threads()
