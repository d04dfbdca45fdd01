"""What a training run checks and sets up before its first step, so that a machine's limits stop
it in one line at the start instead of hours in.

- The device: logged with the driver and torch's CUDA (device.py), so a log shows what ran.
- Shared memory: DataLoader workers hand every batch to the trainer through /dev/shm. Docker
  gives a container 64 MB unless run with ``--ipc=host`` or ``--shm-size``; 16 workers with two
  batches of 41 MB in flight each need ~1.3 GB, and running out is a bus error mid-epoch.
- Kernel caches: Triton and torch.compile keep compiled kernels in a folder that, by default,
  lives in the container and dies with it. Under the runs folder (the Modal volume, the SkyPilot
  bucket) a resumed run, a recovery or the next 24-hour segment reuses them instead of compiling
  and autotuning every kernel again.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch

from szdet.config import Config
from szdet.device import describe_cuda
from szdet.errors import UserError

log = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
PREFETCH_FACTOR = 2  # DataLoader's default: batches each worker keeps in flight
SHM_MARGIN = 1.25  # tensors in flight beyond the prefetched ones (pinning, collation)


def batch_bytes(cfg: Config, batch_size: int) -> int:
    """Bytes of one batch as a worker hands it over: float16 windows, float32 labels, int64 ids."""
    windows = batch_size * cfg.model.in_channels * cfg.window_samples * 2
    return windows + batch_size * cfg.window_samples * 4 + batch_size * 8


def shared_memory_needed(cfg: Config, processes: int = 1) -> int:
    """Bytes of /dev/shm the loaders of ``processes`` training processes on one machine may hold
    at once (0: no workers). A process's validation loader runs while its training loader waits."""
    largest = batch_bytes(cfg, max(cfg.train.batch_size, cfg.evaluate.batch_size))
    return int(processes * cfg.train.num_workers * PREFETCH_FACTOR * largest * SHM_MARGIN)


def check_shared_memory(cfg: Config, shm_dir: Path = SHM_DIR) -> None:
    """Refuse, in one line, loader workers that /dev/shm cannot hold."""
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # torchrun's processes on this node
    needed = shared_memory_needed(cfg, processes)
    if needed == 0 or not shm_dir.is_dir():  # no workers, or a platform without /dev/shm
        return
    free = shutil.disk_usage(shm_dir).free
    if free < needed:
        workers = (
            f"{processes} x {cfg.train.num_workers}" if processes > 1 else cfg.train.num_workers
        )
        raise UserError(
            f"{shm_dir}: {free / 1e9:.2f} GB free, but {workers} loader workers need "
            f"{needed / 1e9:.2f} GB for their batches: run the container with --ipc=host "
            "(or --shm-size), or lower train.num_workers"
        )


def kernel_cache_environment(cfg: Config) -> dict[str, str]:
    """Where Triton and torch.compile keep their compiled kernels: under the runs folder."""
    root = cfg.paths.runs_dir / ".kernel-cache"
    return {
        "TRITON_CACHE_DIR": str(root / "triton"),
        "TORCHINDUCTOR_CACHE_DIR": str(root / "inductor"),
    }


def prepare(cfg: Config, device: torch.device) -> None:
    """Every check and setting above, before the model is built."""
    check_shared_memory(cfg)
    if device.type != "cuda":
        return
    log.info("CUDA: %s", describe_cuda(device))
    for name, value in kernel_cache_environment(cfg).items():
        os.environ.setdefault(name, value)  # a folder the user chose stays theirs
        log.info("%s=%s", name, os.environ[name])
