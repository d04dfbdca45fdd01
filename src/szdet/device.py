"""Where a model runs and in which precision: one rule for training, evaluation and benchmarks."""

from __future__ import annotations

from typing import Literal

import torch

from szdet.errors import UserError


def pick_device(requested: str, local_rank: int) -> torch.device:
    """``auto`` takes this process's GPU when CUDA is available, else the CPU; a GPU comes with
    cuDNN autotuning on."""
    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        raise UserError("train.device: cuda requested but no CUDA device is available")
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
