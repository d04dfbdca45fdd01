"""One process or many: the same `szdet train` under `torchrun --nproc_per_node N [--nnodes M]`.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (and the rendezvous address) for every process it
starts; without them the run is a single process and every collective below is a local no-op.
DDP uses gloo on CPU and nccl on CUDA. Only rank 0 writes files, logs to W&B and draws progress.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from szdet.device import fit_threads_to_cpus, pick_device

log = logging.getLogger(__name__)

# Collectives wait this long for a slow rank before failing the run (a stuck rank must not hang a
# paid GPU forever, but a long validation on rank 0 must not trip it either).
COLLECTIVE_TIMEOUT = timedelta(minutes=60)


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(requested_device: str) -> DistInfo:
    """Read torchrun's environment, pick the device and join the process group if there is one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        fit_threads_to_cpus()  # a container's CPU quota, not the host's core count
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend,
            timeout=COLLECTIVE_TIMEOUT,
            device_id=device if device.type == "cuda" else None,
        )
        log.info("rank %d of %d joined (%s on %s)", rank, world_size, backend, device)
    return DistInfo(rank, world_size, local_rank, device)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def sum_across_ranks_(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place, on its device (one all-reduce), and return it.

    Nothing comes back to the host: on CUDA the all-reduce is queued like a kernel, and the host
    waits only if and when it reads the result.
    """
    if info.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def min_across_ranks(value: int, info: DistInfo) -> int:
    if not info.is_distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=info.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def gather_to_main(obj: Any, info: DistInfo) -> list[Any] | None:
    """Every rank's ``obj``, in rank order, on rank 0; None elsewhere."""
    if not info.is_distributed:
        return [obj]
    gathered: list[Any] | None = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def broadcast_from_main(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.is_distributed:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
