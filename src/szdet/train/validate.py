"""Validation on dev after each epoch: the same stitched, per-recording evaluation as `evaluate`."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from szdet.config import Config
from szdet.data.manifest import CacheSplit
from szdet.data.windows import WindowIndex
from szdet.evaluate.metrics import evaluate_tracks, target_key
from szdet.evaluate.plots import plot_training_curves, write_split_plots
from szdet.evaluate.stitch import predict_tracks
from szdet.train.distributed import DistInfo, gather_to_main

log = logging.getLogger(__name__)


@dataclass
class ValidationSummary:
    epoch: int
    metrics: dict[str, Any]  # evaluate_tracks' full dict
    tracks: list[np.ndarray] = field(repr=False)
    # The sens_at_fa key early stopping follows: the first of evaluate.fa_targets_per_24h.
    early_stop_target: str

    @property
    def auroc(self) -> float:
        return _float(self.metrics.get("auroc"))

    @property
    def early_stop_score(self) -> float:
        return _float(self.metrics["sens_at_fa"][self.early_stop_target]["sensitivity"])

    @property
    def scalars(self) -> dict[str, float]:
        """Flat ``val/...`` numbers for metrics.jsonl and W&B."""
        out = {
            "val/auroc": self.auroc,
            "val/auprc": _float(self.metrics.get("auprc")),
            "val/fa_per_24h": _float(self.metrics.get("fa_per_24h")),
            "val/ovlp_sensitivity": _float(self.metrics["ovlp"].get("sensitivity")),
        }
        for target, at in self.metrics["sens_at_fa"].items():
            out[f"val/sens_at_{target}fa"] = _float(at.get("sensitivity"))
            out[f"val/threshold_at_{target}fa"] = _float(at.get("threshold"))
        return out


class Validator:
    """Opens dev once; ``run`` scores a model on it, ``write_plots`` draws the run's figures.

    Under DDP every rank predicts its share of the dev recordings (balanced by window count) and
    rank 0 gathers the tracks and scores them, so validation time shrinks with the world size.
    """

    def __init__(
        self,
        cfg: Config,
        info: DistInfo,
        autocast_dtype: torch.dtype | None,
        plots_dir: Path,
    ) -> None:
        self.cfg, self.info, self.autocast_dtype = cfg, info, autocast_dtype
        self.plots_dir = plots_dir
        self.split = CacheSplit.of_config(cfg, cfg.data.dev_split)
        index = WindowIndex.build(self.split, cfg.windows.length_s, cfg.windows.eval_stride_s)
        owner = assign_recordings(index, len(self.split.recordings), info.world_size)
        self.mine = np.flatnonzero(owner == info.rank)
        keep = owner[index.recording] == info.rank
        self.index = WindowIndex(
            index.recording[keep], index.start[keep], index.kind[keep], index.length
        )

    def run(self, model: torch.nn.Module, epoch: int) -> ValidationSummary | None:
        """Every rank calls this; rank 0 gets the summary, the others None."""
        tracks = predict_tracks(
            model,
            self.split,
            self.index,
            self.cfg.evaluate.batch_size,
            self.info.device,
            self.autocast_dtype,
            frame_hz=self.cfg.evaluate.frame_hz,
            num_workers=self.cfg.train.num_workers,
            show_progress=self.info.is_main,
        )
        shares = gather_to_main({int(i): tracks[i] for i in self.mine}, self.info)
        if shares is None:
            return None
        merged = {i: track for share in shares for i, track in share.items()}
        tracks = [merged[i] for i in range(len(self.split.recordings))]
        recordings = self.split.recordings
        metrics = evaluate_tracks(
            tracks,
            [r.events for r in recordings],
            [r.duration_s for r in recordings],
            self.cfg.evaluate,
        )
        return ValidationSummary(
            epoch, metrics, tracks, target_key(self.cfg.evaluate.fa_targets_per_24h[0])
        )

    def write_plots(self, metrics_path: Path, summary: ValidationSummary) -> dict[str, Path]:
        """Training curves, and dev ROC, sensitivity vs FA/24h and timelines of this epoch, as PNGs
        in the run's plots/ (each epoch replaces the last); returns {W&B key: path}."""
        recordings = self.split.recordings
        written = {
            "training_curves": plot_training_curves(
                metrics_path, self.plots_dir / "training_curves.png", summary.early_stop_target
            ),
            **write_split_plots(
                self.plots_dir,
                summary.metrics,
                summary.tracks,
                [r.events for r in recordings],
                [r.name for r in recordings],
                self.cfg.evaluate,
                split=self.split.split,
            ),
        }
        return {f"plots/{name}": path for name, path in written.items()}


def assign_recordings(index: WindowIndex, n_recordings: int, world_size: int) -> np.ndarray:
    """The rank that predicts each recording: largest first to the least loaded rank."""
    windows = np.bincount(index.recording, minlength=n_recordings)
    owner = np.zeros(n_recordings, dtype=np.int64)
    load = np.zeros(world_size, dtype=np.int64)
    for i in np.argsort(-windows, kind="stable"):
        owner[i] = int(np.argmin(load))
        load[owner[i]] += windows[i]
    return owner


def _float(value: Any) -> float:
    """Metrics are None when undefined (no seizure on dev, say): NaN keeps them numeric."""
    return math.nan if value is None else float(value)
