"""A trained detector ready to run: checkpoint or bundle -> config, model on the best device,
autocast, operating points.

Shared by `szdet evaluate` and `szdet detect`, so both see the model exactly as training left it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import torch

from szdet.config import Config
from szdet.config_load import with_overrides
from szdet.data.edf import EdfSignal
from szdet.data.manifest import CacheSplit
from szdet.data.windows import SplitLike, WindowIndex
from szdet.device import autocast_dtype, fit_threads_to_cpus, keep_freed_memory, pick_device
from szdet.errors import UserError
from szdet.evaluate.onnx_engine import OnnxNetwork
from szdet.evaluate.stitch import Stitcher, predict_into
from szdet.progress import eeg_hours_bar
from szdet.state.contents import load_for_inference


@dataclass(frozen=True)
class StreamRecording:
    name: str
    n_samples: int
    events: list[tuple[float, float]]


class SignalBuffer:
    """The preprocessed samples of one recording that its windows still need, in float16 as the
    cache holds them (so detect sees what training saw), sliced by the recording's sample
    numbers: ``buffer[:, a:b]`` is samples a..b-1 wherever the buffer starts."""

    def __init__(self, n_rows: int) -> None:
        self.first = 0
        self._data = np.zeros((n_rows, 0), dtype=np.float16)

    def append(self, block: np.ndarray) -> None:
        self._data = np.concatenate([self._data, block.astype(np.float16)], axis=1)

    def drop_before(self, sample: int) -> None:
        cut = min(sample - self.first, self._data.shape[1])
        if cut > 0:
            self._data, self.first = self._data[:, cut:].copy(), self.first + cut

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        rows, columns = key
        if columns.start < self.first:
            raise IndexError(
                f"sample {columns.start} was dropped (the buffer starts at {self.first})"
            )
        return self._data[rows, columns.start - self.first : columns.stop - self.first]


class StreamSplit:
    """One recording being read chunk by chunk, shaped like a CacheSplit so the same windows,
    batches and stitching run over it (`szdet detect` on an EDF of any length)."""

    def __init__(self, name: str, n_samples: int, sample_rate_hz: float, n_rows: int) -> None:
        self.sample_rate_hz = sample_rate_hz
        self.recordings = [StreamRecording(name, n_samples, [])]
        self.buffer = SignalBuffer(n_rows)

    def signal(self, i: int) -> SignalBuffer:
        return self.buffer


@dataclass
class Detector:
    cfg: Config
    model: torch.nn.Module
    device: torch.device
    autocast_dtype: torch.dtype | None
    checkpoint: Path
    step: int | None  # the training steps behind the weights
    operating_points: dict[str, Any] | None  # a bundle's (state/bundle.py); None: a checkpoint

    @property
    def cpu_workers(self) -> int:
        """Forwards at once on a CPU, one core each (1: one forward over torch's threads, as on
        a GPU and on onnxruntime, which runs its own)."""
        if self.device.type != "cpu" or isinstance(self.model, OnnxNetwork):
            return 1
        return self.cfg.evaluate.cpu_workers or torch.get_num_threads()

    @property
    def batch_size(self) -> int:
        evaluate = self.cfg.evaluate
        if self.device.type == "cuda":
            return evaluate.batch_size
        return evaluate.cpu_batch_size * self.cpu_workers

    @overload
    def predict(self, split: CacheSplit, evidence: Literal[False] = False) -> list[np.ndarray]: ...

    @overload
    def predict(
        self, split: CacheSplit, evidence: Literal[True]
    ) -> tuple[list[np.ndarray], Sequence[np.ndarray]]: ...

    def predict(
        self, split: CacheSplit, evidence: bool = False
    ) -> list[np.ndarray] | tuple[list[np.ndarray], Sequence[np.ndarray]]:
        """Stitched per-recording probability tracks at ``evaluate.frame_hz``; with
        ``evidence``, also each recording's per-node evidence (nodes, frames), stitched alike
        (only then: its rows cost a stitch of their own)."""
        sizes = [r.n_samples for r in split.recordings]
        stitcher = self._stitcher(sizes, split.sample_rate_hz, evidence)
        self._predict_into(stitcher, split, self._windows(split))
        tracks = stitcher.tracks()
        return (tracks, stitcher.evidence_tracks()) if evidence else tracks

    def predict_edf(
        self, edf: EdfSignal, show_progress: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """One EDF's stitched probability track and each node's evidence (nodes, frames), read,
        preprocessed and inferred a chunk (``evaluate.chunk_s``, set when ``edf`` was opened) at
        a time: each chunk's windows run once the signal they cover is in, and the samples no
        later window needs are dropped, so memory stays that of a chunk and a window at any
        length. The windows, their order and the stitching are those of `predict` over the whole
        recording, so the track is the same."""
        rate_hz = edf.sample_rate_hz
        split = StreamSplit(edf.path.stem, edf.n_samples, rate_hz, len(edf.channels))
        index = self._windows(split)
        stitcher = self._stitcher([edf.n_samples], rate_hz, evidence=True)
        window_stops = index.start + index.length
        done = 0
        hours = edf.duration_s / 3600
        with eeg_hours_bar(hours, edf.path.name, disable=not show_progress) as bar:
            for first, block in edf.blocks():
                split.buffer.append(block)
                stop = first + block.shape[1]
                ready = (
                    len(index)
                    if stop == edf.n_samples
                    else int(np.searchsorted(window_stops, stop, side="right"))
                )
                if ready > done:
                    self._predict_into(stitcher, split, index.part(done, ready), progress=False)
                    done = ready
                split.buffer.drop_before(int(index.start[done]) if done < len(index) else stop)
                bar.update(min(hours, stop / rate_hz / 3600) - bar.n)
        return stitcher.tracks()[0], stitcher.evidence_tracks()[0]

    def _windows(self, split: SplitLike) -> WindowIndex:
        windows = self.cfg.windows
        return WindowIndex.build(split, windows.length_s, windows.eval_stride_s)

    def _stitcher(self, n_samples: list[int], rate_hz: float, evidence: bool) -> Stitcher:
        rows = self.cfg.model.in_channels if evidence else 0  # one evidence row per node
        return Stitcher(n_samples, rate_hz, self.cfg.evaluate.frame_hz, rows)

    def _predict_into(
        self, stitcher: Stitcher, split: SplitLike, index: WindowIndex, progress: bool = True
    ) -> None:
        predict_into(
            stitcher,
            self.model,
            split,
            index,
            self.batch_size,
            self.device,
            self.autocast_dtype,
            show_progress=progress,
            cpu_workers=self.cpu_workers,
        )


def onnx_path(detector: Path) -> Path:
    """Where `szdet export --onnx` writes a detector's network: beside it, ``<DETECTOR>.onnx``."""
    return detector.with_name(detector.name + ".onnx")


def load_detector(
    checkpoint: str | Path, overrides: Sequence[str] = (), engine: str = "torch"
) -> Detector:
    """The model of a checkpoint or detector bundle in eval mode; ``overrides`` may change only
    ``evaluate.*``. ``engine="onnx"``: the bundle's exported network on onnxruntime (CPU)."""
    fit_threads_to_cpus()  # before onnxruntime and the workers count torch's threads
    path = Path(checkpoint)
    loaded = load_for_inference(path)
    cfg = with_overrides(loaded.cfg, list(overrides), sections=("evaluate",))
    model: torch.nn.Module
    if engine == "onnx":
        if loaded.operating_points is None:
            raise UserError(f"{path}: --engine onnx runs a detector made by `szdet export --onnx`")
        device, dtype = torch.device("cpu"), None
        model = OnnxNetwork(onnx_path(path))
        if not model.localises:
            raise UserError(
                f"{onnx_path(path)}: network gives no per-node evidence (exported by an earlier "
                "szdet); export it again with `szdet export --onnx`"
            )
    else:
        device = pick_device("auto", local_rank=0)
        model, dtype = loaded.model.to(device), autocast_dtype(device, cfg.train.precision)
    if device.type == "cpu":
        keep_freed_memory()
    return Detector(cfg, model, device, dtype, path, loaded.step, loaded.operating_points)
