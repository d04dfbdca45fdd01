"""Stage 0: what this machine is, and which Mamba-2 kernels it runs."""

from __future__ import annotations

import functools
import importlib
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from szdet.device import cuda_description
from szdet.kernel_proof.shims import install_kernel_sources
from szdet.models.kernels import describe_path
from szdet.train.preflight import SHM_DIR


def _version(module: str) -> str | None:
    try:
        return str(importlib.import_module(module).__version__)
    except ImportError:
        return None


@functools.cache
def kernels(device: torch.device) -> dict[str, Any]:
    """Load mamba_ssm's kernels (stand-ins where their CUDA builds do not import, shims.py)
    before anything asks for them, and say what serves each and which path the model takes."""
    try:
        sources: dict[str, str] | str = install_kernel_sources()
    except Exception as error:  # no Triton or no sources: the pure path is all there is
        sources = f"not loaded: {error}"
    return {"sources": sources, "mamba2_path": describe_path("auto", device)}


def _shared_memory_gb() -> dict[str, float] | None:
    if not SHM_DIR.is_dir():
        return None
    usage = shutil.disk_usage(SHM_DIR)
    return {"total": round(usage.total / 1e9, 3), "free": round(usage.free / 1e9, 3)}


def describe(device: torch.device, bundle: dict[str, Any] | None) -> dict[str, Any]:
    pydantic = sys.modules.get("pydantic")  # imported by the config, from the bundle or not
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": device.type,
        **cuda_description(device if device.type == "cuda" else None),
        "triton": _version("triton"),
        "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1",
        "numpy": _version("numpy"),
        "pydantic": {
            "version": _version("pydantic"),
            "from": str(Path(pydantic.__file__).parent.parent)
            if pydantic and pydantic.__file__
            else None,
        },
        "dev_shm_gb": _shared_memory_gb(),
        "kernels": kernels(device),
        "bundle": bundle,
    }
