"""Probability tracks -> seizure events: hysteresis, minimum duration, merging, splitting.

The rules, in this order:
  1. hysteresis: an event starts at the first frame with p >= threshold_on and lasts while
     p >= threshold_off (it ends at the first frame below threshold_off);
  2. events shorter than min_duration_s are dropped;
  3. events separated by a gap shorter than merge_gap_s are merged;
  4. events longer than max_event_s are split into pieces of max_event_s (the last one shorter).

Frame k of a track covers [k / frame_hz, (k + 1) / frame_hz) seconds; event stops are clipped to
the recording's duration. An event's confidence is the mean probability over its frames at or
above threshold_off: the frames hysteresis kept, a merged event's gaps left out, so it lies in
[threshold_off, 1] (a split piece lying wholly in such a gap, possible only when merge_gap_s >
max_event_s, takes the mean over all its frames). Pure numpy: a whole split's tracks are
concatenated once (`TrackSet`) and every rule is one vectorised pass, so a threshold sweep over
hundreds of recording-hours is cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from szdet.config import EvaluateConfig
from szdet.evaluate.scoring import Events

_EPS_S = 1e-9  # float slack when comparing durations in seconds


@dataclass(frozen=True)
class EventRules:
    threshold_on: float
    threshold_off: float
    min_duration_s: float
    merge_gap_s: float
    max_event_s: float

    @classmethod
    def from_config(cls, cfg: EvaluateConfig, threshold_on: float | None = None) -> EventRules:
        """The configured rules, or those at another on-threshold (off = on x the same ratio)."""
        on = cfg.threshold_on if threshold_on is None else threshold_on
        return cls(
            threshold_on=on,
            threshold_off=on * cfg.threshold_off_ratio,
            min_duration_s=cfg.min_duration_s,
            merge_gap_s=cfg.merge_gap_s,
            max_event_s=cfg.max_event_s,
        )


class TrackSet:
    """The probability tracks of a split, concatenated with one -inf frame between recordings
    so that no hysteresis run crosses from one recording into the next."""

    def __init__(
        self, tracks: Sequence[np.ndarray], frame_hz: float, durations_s: Sequence[float]
    ) -> None:
        if len(tracks) != len(durations_s):
            raise ValueError(f"{len(tracks)} tracks but {len(durations_s)} durations")
        self.frame_hz = frame_hz
        self.durations_s = np.asarray(durations_s, dtype=np.float64)
        lengths = np.array([len(t) for t in tracks], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]]).astype(np.int64)
        values = np.full(int(lengths.sum() + len(tracks)), -np.inf, dtype=np.float32)
        for offset, track in zip(self.offsets, tracks, strict=True):
            values[offset : offset + len(track)] = track
        self.values = values

    def __len__(self) -> int:
        return len(self.durations_s)

    def events(self, rules: EventRules) -> Events:
        """All four rules applied to every track; times are seconds within each recording."""
        first, stop = hysteresis_runs(self.values, rules.threshold_on, rules.threshold_off)
        recording = np.searchsorted(self.offsets, first, side="right") - 1
        start_s = (first - self.offsets[recording]) / self.frame_hz
        stop_s = np.minimum(
            (stop - self.offsets[recording]) / self.frame_hz, self.durations_s[recording]
        )
        events = drop_short(Events(recording, start_s, stop_s), rules.min_duration_s)
        return split_long(merge_close(events, rules.merge_gap_s), rules.max_event_s)

    def confidence(self, events: Events, threshold_off: float) -> np.ndarray:
        """Each event's mean probability over its frames >= threshold_off (module docstring)."""
        kept = self.values >= threshold_off  # the -inf separators never count
        finite = np.where(np.isfinite(self.values), self.values, 0.0)
        kept_sum, kept_count = _prefix(np.where(kept, finite, 0.0)), _prefix(kept)
        all_sum = _prefix(finite)
        # The frames an event overlaps: k from ceil(start * hz) to ceil(stop * hz), exclusive.
        offset = self.offsets[events.recording]
        first = offset + np.ceil(events.start_s * self.frame_hz - _EPS_S).astype(np.int64)
        stop = offset + np.ceil(events.stop_s * self.frame_hz - _EPS_S).astype(np.int64)
        count = kept_count[stop] - kept_count[first]
        mean_kept = (kept_sum[stop] - kept_sum[first]) / np.maximum(count, 1)
        mean_all = (all_sum[stop] - all_sum[first]) / np.maximum(stop - first, 1)
        return np.where(count > 0, mean_kept, mean_all)


def _prefix(x: np.ndarray) -> np.ndarray:
    """Prefix sums with a leading 0, in float64: sum(x[a:b]) = p[b] - p[a]."""
    return np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])


def hysteresis_runs(values: np.ndarray, on: float, off: float) -> tuple[np.ndarray, np.ndarray]:
    """Frame ranges [start, stop) of hysteresis events: from the first frame >= on inside a run of
    frames >= off, to the end of that run."""
    above_off = np.concatenate([[False], values >= off, [False]])
    edges = np.flatnonzero(above_off[1:] != above_off[:-1])
    run_starts, run_stops = edges[0::2], edges[1::2]
    on_frames = np.flatnonzero(values >= on)
    if len(on_frames) == 0 or len(run_starts) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    k = np.minimum(np.searchsorted(on_frames, run_starts), len(on_frames) - 1)
    first_on = on_frames[k]
    keep = (first_on >= run_starts) & (first_on < run_stops)
    return first_on[keep], run_stops[keep]


def drop_short(events: Events, min_duration_s: float) -> Events:
    keep = events.stop_s - events.start_s >= min_duration_s - _EPS_S
    return Events(*(a[keep] for a in events))


def merge_close(events: Events, merge_gap_s: float) -> Events:
    """Merge neighbours of the same recording whose gap is shorter than ``merge_gap_s``."""
    if len(events.start_s) == 0:
        return events
    gap_s = events.start_s[1:] - events.stop_s[:-1]
    new_group = (gap_s >= merge_gap_s - _EPS_S) | (events.recording[1:] != events.recording[:-1])
    firsts = np.flatnonzero(np.concatenate([[True], new_group]))
    lasts = np.concatenate([firsts[1:] - 1, [len(events.start_s) - 1]])
    return Events(events.recording[firsts], events.start_s[firsts], events.stop_s[lasts])


def split_long(events: Events, max_event_s: float) -> Events:
    """Cut events longer than ``max_event_s`` into consecutive pieces of that length."""
    duration_s = events.stop_s - events.start_s
    pieces = np.maximum(1, np.ceil(duration_s / max_event_s - _EPS_S)).astype(np.int64)
    if np.all(pieces == 1):
        return events
    owner = np.repeat(np.arange(len(pieces)), pieces)
    index = np.arange(len(owner)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    start_s = events.start_s[owner] + index * max_event_s
    stop_s = np.minimum(start_s + max_event_s, events.stop_s[owner])
    return Events(events.recording[owner], start_s, stop_s)


def track_events(
    track: np.ndarray,
    frame_hz: float,
    rules: EventRules,
    duration_s: float | None = None,
    *,
    confidence: bool = False,
) -> np.ndarray:
    """Events of one probability track as an (n, 2) array of [start_s, stop_s], or with
    ``confidence`` an (n, 3) array of [start_s, stop_s, confidence]."""
    duration = len(track) / frame_hz if duration_s is None else duration_s
    tracks = TrackSet([track], frame_hz, [duration])
    events = tracks.events(rules)
    pairs = events.per_recording(1)[0]
    if not confidence:
        return pairs
    return np.column_stack([pairs, tracks.confidence(events, rules.threshold_off)])
