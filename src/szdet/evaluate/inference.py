"""A trained detector ready to run: checkpoint or bundle -> config, model on the best device,
autocast, operating points.

Shared by `szdet evaluate` and `szdet detect`, so both see the model exactly as training left it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from szdet.config import Config
from szdet.config_load import with_overrides
from szdet.data.manifest import CacheSplit
from szdet.data.windows import WindowIndex
from szdet.device import autocast_dtype, pick_device
from szdet.errors import UserError
from szdet.evaluate.onnx_engine import OnnxNetwork
from szdet.evaluate.stitch import predict_tracks
from szdet.state.contents import load_for_inference


@dataclass(frozen=True)
class MemoryRecording:
    name: str
    n_samples: int
    events: list[tuple[float, float]]


class MemorySplit:
    """One preprocessed recording held in memory, shaped like a CacheSplit so the same windows,
    batches and stitching run over it (`szdet detect` on an EDF that is not in any cache)."""

    def __init__(self, name: str, signal: np.ndarray, sample_rate_hz: float) -> None:
        # Round through float16 as the cache does, so detect sees what training saw.
        self._signal = signal.astype(np.float16)
        self.sample_rate_hz = sample_rate_hz
        self.recordings = [MemoryRecording(name, signal.shape[1], [])]

    def signal(self, i: int) -> np.ndarray:
        return self._signal


@dataclass
class Detector:
    cfg: Config
    model: torch.nn.Module
    device: torch.device
    autocast_dtype: torch.dtype | None
    checkpoint: Path
    step: int | None  # the training steps behind the weights
    operating_points: dict[str, Any] | None  # a bundle's (state/bundle.py); None: a checkpoint

    def predict(self, split: CacheSplit | MemorySplit) -> list[np.ndarray]:
        """Stitched per-recording probability tracks at ``evaluate.frame_hz``."""
        cfg = self.cfg
        index = WindowIndex.build(split, cfg.windows.length_s, cfg.windows.eval_stride_s)
        return predict_tracks(
            self.model,
            split,
            index,
            cfg.evaluate.batch_size,
            self.device,
            self.autocast_dtype,
            frame_hz=cfg.evaluate.frame_hz,
        )


def onnx_path(detector: Path) -> Path:
    """Where `szdet export --onnx` writes a detector's network: beside it, ``<DETECTOR>.onnx``."""
    return detector.with_name(detector.name + ".onnx")


def load_detector(
    checkpoint: str | Path, overrides: Sequence[str] = (), engine: str = "torch"
) -> Detector:
    """The model of a checkpoint or detector bundle in eval mode; ``overrides`` may change only
    ``evaluate.*``. ``engine="onnx"``: the bundle's exported network on onnxruntime (CPU)."""
    path = Path(checkpoint)
    loaded = load_for_inference(path)
    cfg = with_overrides(loaded.cfg, list(overrides), sections=("evaluate",))
    model: torch.nn.Module
    if engine == "onnx":
        if loaded.operating_points is None:
            raise UserError(f"{path}: --engine onnx runs a detector made by `szdet export --onnx`")
        device, dtype = torch.device("cpu"), None
        model = OnnxNetwork(onnx_path(path))
    else:
        device = pick_device("auto", local_rank=0)
        model, dtype = loaded.model.to(device), autocast_dtype(device, cfg.train.precision)
    return Detector(cfg, model, device, dtype, path, loaded.step, loaded.operating_points)
