"""Fixed-length windows over the cached recordings, their labels, and the balanced sampler.

Window index (the tail rule). A recording of ``n`` samples gets windows starting at
``0, stride, 2*stride, ...`` while they fit, plus one final window aligned to the recording's end
(starting at ``n - length``) when the last fitting one stops short of it, so every sample is
covered and no window reads past the end. A recording shorter than one window gets a single window
at 0, zero-padded past its end (padding is labelled background). Each window is BACKGROUND (no
seizure sample), PARTIAL (some) or FULL (every sample seizure).

Balanced sampling. Each epoch draws every PARTIAL window, ``full_ratio`` times their
count of FULL windows and ``background_ratio`` times their count of BACKGROUND windows. A class
with fewer windows than wanted contributes each of them once and the remainder drawn with
replacement; a class with enough is drawn without replacement. With no PARTIAL windows the FULL
windows stand in for them (all FULL, ``background_ratio`` x as many background); with no seizure
windows at all, an epoch is every background window once. The draw is shuffled and is a pure
function of (seed, epoch); every DDP rank computes the same draw, cut to a multiple of the world
size, and takes every ``world_size``-th window from its rank on, so ranks are disjoint and equal.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from szdet.data.montage import electrodes

BACKGROUND, PARTIAL, FULL = 0, 1, 2
UNKNOWN_NODE = -1  # node label where a recording says there is a seizure but not where


class RecordingLike(Protocol):
    @property
    def n_samples(self) -> int: ...
    @property
    def events(self) -> list[tuple[float, float]]: ...


class ChannelLabelled(RecordingLike, Protocol):
    @property
    def channel_seizures(self) -> list[tuple[str, float, float]]: ...  # (channel, start_s, stop_s)


class SignalLike(Protocol):
    """A recording's (channels, n) signal: an array, a memory map, or the part of it a
    recording read in chunks still holds (evaluate/inference.py), sliced by sample number."""

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray: ...


class SplitLike(Protocol):
    """What windows need of a split: a CacheSplit, or one recording in memory (`szdet detect`)."""

    @property
    def sample_rate_hz(self) -> float: ...
    @property
    def recordings(self) -> Sequence[RecordingLike]: ...
    def signal(self, i: int) -> SignalLike: ...


def _event_bounds(events: Sequence[tuple[float, float]], sample_rate_hz: float) -> np.ndarray:
    """Events as (k, 2) int64 sample ranges [first, stop)."""
    return np.round(np.asarray(events, dtype=np.float64).reshape(-1, 2) * sample_rate_hz).astype(
        np.int64
    )


def sample_labels(
    events: Sequence[tuple[float, float]], start: int, length: int, sample_rate_hz: float
) -> np.ndarray:
    """Per-sample seizure labels (float32 0/1) of the window [start, start + length)."""
    labels = np.zeros(length, dtype=np.float32)
    for first, stop in _event_bounds(events, sample_rate_hz):
        lo, hi = max(first - start, 0), min(stop - start, length)
        if lo < hi:
            labels[lo:hi] = 1.0
    return labels


@functools.lru_cache(maxsize=4096)  # a corpus names few channels; each window reads many rows
def channel_nodes(channel: str, names: tuple[str, ...]) -> tuple[int, ...]:
    """The nodes a labelled channel marks, by the rule of the module docstring."""
    marked = electrodes(channel)
    return tuple(
        i
        for i, name in enumerate(names)
        if electrodes(name) <= marked or marked <= electrodes(name)
    )


@dataclass(frozen=True)
class NodeRows:
    """A recording's per-channel seizure rows as arrays, once: the nodes each row marks and its
    [first, stop) samples, so that a window's labels cost the rows it overlaps, not all of them
    (a recording with 100 seizures has ~2,000 rows)."""

    marks: np.ndarray  # (rows, nodes) bool
    bounds: np.ndarray  # (rows, 2) float64 sample numbers, rounded
    n_nodes: int
    unknown: bool  # seizures but no rows: UNKNOWN_NODE throughout

    @classmethod
    def of(cls, recording: ChannelLabelled, names: tuple[str, ...], rate_hz: float) -> NodeRows:
        rows = recording.channel_seizures
        marks = np.zeros((len(rows), len(names)), dtype=bool)
        for k, (channel, _, _) in enumerate(rows):
            marks[k, list(channel_nodes(channel, names))] = True
        seconds = np.array([(a, b) for _, a, b in rows], dtype=np.float64).reshape(-1, 2)
        unknown = bool(recording.events) and not rows
        return cls(marks, np.round(seconds * rate_hz), len(names), unknown)

    def labels(self, start: int, length: int, downsample: int) -> np.ndarray:
        """Per-node labels (int8 0/1, or UNKNOWN_NODE) of the window [start, start + length),
        one per model step: (nodes, length // downsample)."""
        steps = length // downsample
        if self.unknown:
            return np.full((self.n_nodes, steps), UNKNOWN_NODE, dtype=np.int8)
        labels = np.zeros((self.n_nodes, steps), dtype=np.int8)
        middles = start + np.arange(steps) * downsample + downsample // 2
        first, stop = np.searchsorted(middles, self.bounds.ravel()).reshape(2, -1, order="F")
        inside = np.flatnonzero(stop > first)  # the rows with a step in this window
        for k in inside:
            labels[self.marks[k], first[k] : stop[k]] = 1
        return labels


def window_starts(n_samples: int, length: int, stride: int) -> np.ndarray:
    """First samples of a recording's windows, by the tail rule of the module docstring."""
    if n_samples <= length:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, n_samples - length + 1, stride, dtype=np.int64)
    if starts[-1] + length < n_samples:
        starts = np.append(starts, n_samples - length)
    return starts


def window_kinds(bounds: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """BACKGROUND / PARTIAL / FULL per window, from the seizure samples each one holds."""
    seizure = np.zeros(len(starts), dtype=np.int64)
    for first, stop in bounds:  # events are disjoint (merged when read), so overlaps add up
        seizure += np.clip(np.minimum(stop, starts + length) - np.maximum(first, starts), 0, None)
    kinds = np.full(len(starts), PARTIAL, dtype=np.int8)
    kinds[seizure == 0] = BACKGROUND
    kinds[seizure >= length] = FULL
    return kinds


@dataclass
class WindowIndex:
    recording: np.ndarray  # int32, index into CacheSplit.recordings
    start: np.ndarray  # int64, first sample
    kind: np.ndarray  # int8: BACKGROUND / PARTIAL / FULL
    length: int  # samples per window

    @classmethod
    def build(cls, split: SplitLike, length_s: float, stride_s: float) -> WindowIndex:
        length = round(length_s * split.sample_rate_hz)
        stride = max(1, round(stride_s * split.sample_rate_hz))
        recordings, starts, kinds = [], [], []
        for i, record in enumerate(split.recordings):
            rec_starts = window_starts(record.n_samples, length, stride)
            bounds = _event_bounds(record.events, split.sample_rate_hz)
            recordings.append(np.full(len(rec_starts), i, dtype=np.int32))
            starts.append(rec_starts)
            kinds.append(window_kinds(bounds, rec_starts, length))
        if not recordings:
            return cls(np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int8), length)
        return cls(
            np.concatenate(recordings), np.concatenate(starts), np.concatenate(kinds), length
        )

    def __len__(self) -> int:
        return len(self.start)

    def part(self, first: int, stop: int) -> WindowIndex:
        """Windows [first, stop) of this index (a long recording inferred chunk by chunk)."""
        cut = slice(first, stop)
        return WindowIndex(self.recording[cut], self.start[cut], self.kind[cut], self.length)

    def counts(self) -> dict[str, int]:
        return {
            name: int((self.kind == kind).sum())
            for name, kind in (("background", BACKGROUND), ("partial", PARTIAL), ("full", FULL))
        }


def _draw(rng: np.random.Generator, pool: np.ndarray, wanted: int) -> np.ndarray:
    """``wanted`` windows of ``pool``: without replacement if it has enough, else all of it once
    and the rest with replacement (nothing from an empty pool)."""
    if wanted <= len(pool):
        return rng.choice(pool, wanted, replace=False)
    if len(pool) == 0:
        return pool
    return np.concatenate([pool, rng.choice(pool, wanted - len(pool), replace=True)])


class BalancedSampler(Sampler[int]):
    """The per-epoch balanced draw of the module docstring, this rank's share of it, resumable.

    Call ``set_epoch(epoch)`` before each epoch (as with DistributedSampler). To resume mid-epoch,
    save ``state_dict(consumed)`` with the number of samples this rank has used since ``start``
    (a DataLoader prefetches, so what the iterator has yielded runs ahead of what was used), and
    ``load_state_dict`` it on resume: the rest of the same draw follows. A resume on another world size continues at the same global
    position, rounded down to a multiple of the new world size.
    """

    def __init__(
        self,
        index: WindowIndex,
        full_ratio: float,
        background_ratio: float,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.pools = {
            kind: np.flatnonzero(index.kind == kind) for kind in (BACKGROUND, PARTIAL, FULL)
        }
        self.full_ratio, self.background_ratio = full_ratio, background_ratio
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.set_epoch(0)

    def class_counts(self) -> dict[int, int]:
        """Windows drawn per kind each epoch (before the cut to a multiple of the world size)."""
        n_partial, n_full = len(self.pools[PARTIAL]), len(self.pools[FULL])
        if n_partial:
            full, background = self.full_ratio * n_partial, self.background_ratio * n_partial
            return {PARTIAL: n_partial, FULL: round(full), BACKGROUND: round(background)}
        if n_full:
            return {PARTIAL: 0, FULL: n_full, BACKGROUND: round(self.background_ratio * n_full)}
        return {PARTIAL: 0, FULL: 0, BACKGROUND: len(self.pools[BACKGROUND])}

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The whole epoch's shuffled draw (every rank's), a pure function of seed and epoch."""
        rng = np.random.default_rng([self.seed, epoch])
        drawn = [_draw(rng, self.pools[kind], n) for kind, n in sorted(self.class_counts().items())]
        order = np.concatenate(drawn)
        rng.shuffle(order)
        return order[: len(order) // self.world_size * self.world_size]

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self._share = self.epoch_order(epoch)[self.rank :: self.world_size]
        if not 0 <= start <= len(self._share):
            raise ValueError(f"start {start} outside this epoch's {len(self._share)} samples")
        self.start = start
        self._yielded = 0

    def __iter__(self) -> Iterator[int]:
        self._yielded = 0
        for i in self._share[self.start :]:
            self._yielded += 1
            yield int(i)

    def __len__(self) -> int:
        return len(self._share)

    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """``consumed``: samples this rank has used since ``start`` (where this epoch's iteration
        began, 0 unless resumed); by default what the iterator has yielded."""
        position = self.start + (self._yielded if consumed is None else consumed)
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "global_position": position * self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"sampler state has seed {state['seed']}, this sampler {self.seed}")
        self.set_epoch(state["epoch"], start=state["global_position"] // self.world_size)


class WindowDataset(Dataset):
    """Windows of a cached split as (x (19, L) as stored, y float32 (L,), index).

    x keeps the cache's float16: half the bytes of float32 through the loader and across to the
    device, which widens it there (train/step.py, evaluate/stitch.py).
    """

    def __init__(self, split: SplitLike, index: WindowIndex) -> None:
        self.split, self.index = split, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        recording, start = int(self.index.recording[i]), int(self.index.start[i])
        length = self.index.length
        signal = self.split.signal(recording)  # a memory map: the slice reads only this window
        x = torch.from_numpy(np.array(signal[:, start : start + length], order="C"))
        if x.shape[1] < length:
            x = torch.nn.functional.pad(x, (0, length - x.shape[1]))
        events = self.split.recordings[recording].events
        y = sample_labels(events, start, length, self.split.sample_rate_hz)
        return x, torch.from_numpy(y), i


class NodeLabelledWindows(Dataset):
    """Training windows with their node labels: (x, y, node_y int8 (N, L // downsample), index)."""

    def __init__(
        self, split: SplitLike, index: WindowIndex, names: Sequence[str], downsample: int
    ) -> None:
        self.windows = WindowDataset(split, index)
        self.downsample = downsample
        recordings = cast(Sequence[ChannelLabelled], split.recordings)
        self.rows = [NodeRows.of(r, tuple(names), split.sample_rate_hz) for r in recordings]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        x, y, _ = self.windows[i]
        index = self.windows.index
        rows = self.rows[int(index.recording[i])]
        nodes = rows.labels(int(index.start[i]), index.length, self.downsample)
        return x, y, torch.from_numpy(nodes), i
