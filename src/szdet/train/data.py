"""The training data of one rank: cached train split, window index, balanced sampler, loader."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from szdet.config import Config, montage_channels
from szdet.data.manifest import CacheSplit
from szdet.data.windows import BalancedSampler, NodeLabelledWindows, WindowIndex
from szdet.errors import UserError
from szdet.train.distributed import DistInfo, min_across_ranks


@dataclass
class TrainData:
    split: CacheSplit
    index: WindowIndex
    sampler: BalancedSampler
    loader: DataLoader
    steps_per_epoch: int  # equal on every rank

    @classmethod
    def build(cls, cfg: Config, info: DistInfo, device: torch.device) -> TrainData:
        split = CacheSplit.of_config(cfg, cfg.data.train_split)
        index = WindowIndex.build(split, cfg.windows.length_s, cfg.windows.train_stride_s)
        sampler = BalancedSampler(
            index,
            cfg.windows.full_seizure_ratio,
            cfg.windows.background_ratio,
            seed=cfg.train.seed,
            rank=info.rank,
            world_size=info.world_size,
        )
        loader = DataLoader(
            NodeLabelledWindows(
                split, index, montage_channels(cfg.data.montage), cfg.model.downsample
            ),
            batch_size=cfg.train.batch_size,
            sampler=sampler,
            num_workers=cfg.train.num_workers,
            pin_memory=device.type == "cuda",
            drop_last=True,
            persistent_workers=cfg.train.num_workers > 0,
            # Its own generator: creating an iterator must not draw from the global torch RNG,
            # or a mid-epoch resume would shift the dropout masks of every later step.
            generator=torch.Generator().manual_seed(cfg.train.seed),
        )
        steps = len(sampler) // cfg.train.batch_size
        if cfg.train.max_steps_per_epoch is not None:
            steps = min(steps, cfg.train.max_steps_per_epoch)
        steps = min_across_ranks(steps, info)
        if steps == 0:
            raise UserError(
                f"{split.dir}: {len(sampler)} training windows per process, fewer than one "
                f"batch of train.batch_size={cfg.train.batch_size}"
            )
        return cls(split, index, sampler, loader, steps)

    def describe_batch(self, ids: torch.Tensor) -> str:
        """``recording@start`` of each window in a batch, for diagnostics."""
        rate = self.split.sample_rate_hz
        return ", ".join(
            f"{self.split.recordings[int(self.index.recording[i])].name}"
            f"@{self.index.start[i] / rate:.1f}s"
            for i in ids.tolist()
        )
