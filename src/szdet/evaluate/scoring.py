"""Event scoring of reference vs hypothesis seizure intervals: OVLP, TAES (NEDC v6) and SzCORE.

Every method scores each recording and sums over the corpus; all return an `EventScore` with tp, fn,
fp, the total duration used, and sensitivity, precision, f1 and false alarms per 24 h derived from
those sums (undefined ratios are ``None``). Only the seizure class is scored: background events
never interact with seizure events in NEDC's algorithms, so they are left out.

OVLP (NEDC ``nedc_eeg_eval_ovlp``): a reference event is a hit if any hypothesis overlaps it
(``hyp.stop > ref.start and hyp.start < ref.stop``), else a miss; a hypothesis overlapping no
reference is a false alarm. Vectorised over the whole corpus, so threshold sweeps stay fast.

TAES (NEDC ``nedc_eeg_eval_taes``), our reading of v6.0.0, reproduced step by step:
  * Reference events are visited in order. One is processed only if some hypothesis truly overlaps
    it and it was not already consumed; then every unconsumed hypothesis is paired with it in order.
  * A pair counts only if NEDC's ``anyovlp`` holds: the integer-second spans
    ``[int(start), int(stop)]`` intersect. This is looser than a true overlap (events within the same
    second "overlap"); we keep it so our numbers match NEDC's, including the rare negative partial
    hit it gives a hypothesis that ends in the same second a reference starts.
  * ``calc_hf`` gives a pair's partial hit (overlap / reference duration) and partial false alarm
    (hypothesis time outside the reference / reference duration, capped at 1).
  * If the hypothesis ends at or after the reference (it may span several): the reference gets
    hit h and miss 1 - h; every later reference the same hypothesis touches is consumed and adds a
    full miss of 1 (the "one hypothesis spanning two references" case).
  * Otherwise (the reference outlasts it): every later hypothesis touching the same reference is
    consumed too, its partial hit and false alarm added and its hit taken off the miss (the
    "several hypotheses inside one reference" case).
  * Unconsumed references add a miss of 1 each, unconsumed hypotheses a false alarm of 1 each.
  tp, fn, fp are these fractional hit, miss and false-alarm sums.

SzCORE: the `timescoring` package's event scoring, reimplemented exactly (10 Hz masks; events < 90 s
apart merged, then events > 300 s split; a reference extended 30 s before and 60 s after is detected
if any hypothesis sample falls inside; a hypothesis is a false alarm if no sample of it falls inside
a detected, extended reference).

FA/24h = false alarms / total recording duration x 86,400 s. Reading the files `szdet score` scores
is evaluate/score_files.py's part; the SzCORE challenge's per-subject averages are
evaluate/szcore.py's.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

SECONDS_PER_DAY = 86_400.0
METHODS = ("ovlp", "taes", "szcore")

Interval = tuple[float, float]
Intervals = Sequence[Interval] | np.ndarray  # (n, 2) [start_s, stop_s]
Durations = Sequence[float] | np.ndarray


class Events(NamedTuple):
    """Seizure events of a corpus, flattened: event i belongs to recording ``recording[i]``.

    Within a recording events are sorted by start time and do not overlap.
    """

    recording: np.ndarray  # int64
    start_s: np.ndarray  # float64, seconds from the recording's start
    stop_s: np.ndarray

    @classmethod
    def from_lists(cls, per_recording: Iterable[Iterable[Interval] | np.ndarray]) -> Events:
        arrays = [
            np.asarray(ev if isinstance(ev, np.ndarray) else list(ev), np.float64).reshape(-1, 2)
            for ev in per_recording
        ]
        recording = np.repeat(np.arange(len(arrays), dtype=np.int64), [len(a) for a in arrays])
        flat = np.concatenate(arrays) if arrays else np.zeros((0, 2))
        return cls(recording, flat[:, 0].copy(), flat[:, 1].copy())

    @classmethod
    def empty(cls) -> Events:
        return cls(np.zeros(0, np.int64), np.zeros(0), np.zeros(0))

    def per_recording(self, n_recordings: int) -> list[np.ndarray]:
        """Split back into one (n, 2) array of [start_s, stop_s] per recording."""
        bounds = np.searchsorted(self.recording, np.arange(n_recordings + 1))
        pairs = np.stack([self.start_s, self.stop_s], axis=1)
        return [pairs[a:b] for a, b in itertools.pairwise(bounds)]


@dataclass(frozen=True)
class EventScore:
    tp: float
    fn: float
    fp: float
    duration_s: float

    @property
    def sensitivity(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def precision(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def f1(self) -> float | None:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def fa_per_24h(self) -> float | None:
        return _ratio(self.fp * SECONDS_PER_DAY, self.duration_s)

    def to_dict(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {k: float(v) for k, v in asdict(self).items()}
        for name in ("sensitivity", "precision", "f1", "fa_per_24h"):
            out[name] = getattr(self, name)
        return out


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


# --- OVLP -------------------------------------------------------------------------------------


def overlap_counts(a: Events, b: Events) -> np.ndarray:
    """For each event of ``a``, how many events of ``b`` in the same recording overlap it.

    Times become exact ranks (``np.unique``) so (recording, time) pairs sort as one int64 key; then
    count(b.start < a.stop) - count(b.stop <= a.start) is the number overlapping, for any b with
    start <= stop.
    """
    times = np.unique(np.concatenate([a.start_s, a.stop_s, b.start_s, b.stop_s]))
    width = len(times) + 1

    def key(recording: np.ndarray, t: np.ndarray) -> np.ndarray:
        return recording.astype(np.int64) * width + np.searchsorted(times, t)

    b_starts = np.sort(key(b.recording, b.start_s))
    b_stops = np.sort(key(b.recording, b.stop_s))
    started_before_end = np.searchsorted(b_starts, key(a.recording, a.stop_s), side="left")
    ended_before_start = np.searchsorted(b_stops, key(a.recording, a.start_s), side="right")
    return started_before_end - ended_before_start


def score_ovlp(ref: Events, hyp: Events, durations_s: Durations) -> EventScore:
    hits = int(np.count_nonzero(overlap_counts(ref, hyp) > 0))
    false_alarms = int(np.count_nonzero(overlap_counts(hyp, ref) == 0))
    return EventScore(hits, len(ref.start_s) - hits, false_alarms, float(np.sum(durations_s)))


# --- TAES -------------------------------------------------------------------------------------


def _nedc_anyovlp(a: Interval, b: Interval) -> bool:
    """NEDC's ``anyovlp``: the inclusive integer-second spans intersect."""
    return int(a[0]) <= int(b[1]) and int(b[0]) <= int(a[1])


def _calc_hf(ref: Interval, hyp: Interval) -> tuple[float, float]:
    """NEDC's ``calc_hf``: partial hit and false alarm of one pair, relative to the reference."""
    (r0, r1), (h0, h1) = ref, hyp
    ref_dur = r1 - r0
    if h0 <= r0 and h1 <= r1:  # starts early
        return (h1 - r0) / ref_dur, min(1.0, (r0 - h0) / ref_dur)
    if h0 >= r0 and h1 >= r1:  # ends late
        return (r1 - h0) / ref_dur, min(1.0, (h1 - r1) / ref_dur)
    if h0 < r0 and h1 > r1:  # covers the whole reference
        return 1.0, min(1.0, ((h1 - r1) + (r0 - h0)) / ref_dur)
    return (h1 - h0) / ref_dur, 0.0  # inside the reference


def taes_recording(ref: Sequence[Interval], hyp: Sequence[Interval]) -> tuple[float, float, float]:
    """(hit, miss, false alarm) of one recording, NEDC's sequence (see the module docstring)."""
    ref_free, hyp_free = [True] * len(ref), [True] * len(hyp)
    hit = miss = fa = 0.0
    for i, r in enumerate(ref):
        truly_overlapped = any(h[1] > r[0] and h[0] < r[1] for h in hyp)
        if not (truly_overlapped and ref_free[i]):
            continue
        for j, h in enumerate(hyp):
            if not hyp_free[j] or not _nedc_anyovlp(r, h):
                continue
            p_hit, p_fa = _calc_hf(r, h)
            p_miss = 1.0 - p_hit
            ref_free[i] = hyp_free[j] = False
            if h[1] >= r[1]:  # the hypothesis may span later references: each is a full miss
                for k in range(i + 1, len(ref)):
                    if _nedc_anyovlp(ref[k], h):
                        ref_free[k] = False
                        p_miss += 1.0
            else:  # later hypotheses inside the same reference add their partial credit
                for k in range(j + 1, len(hyp)):
                    if _nedc_anyovlp(r, hyp[k]):
                        hyp_free[k] = False
                        k_hit, k_fa = _calc_hf(r, hyp[k])
                        p_hit, p_miss, p_fa = p_hit + k_hit, p_miss - k_hit, p_fa + k_fa
            hit, miss, fa = hit + p_hit, miss + p_miss, fa + p_fa
    return hit, miss + sum(ref_free), fa + sum(hyp_free)


def _as_pairs(events: Intervals) -> list[Interval]:
    return [(float(a), float(b)) for a, b in events]


def score_taes(ref: Events, hyp: Events, durations_s: Durations) -> EventScore:
    n = len(durations_s)
    totals = np.zeros(3)
    for r, h in zip(ref.per_recording(n), hyp.per_recording(n), strict=True):
        if len(r) or len(h):
            totals += taes_recording([tuple(x) for x in r], [tuple(x) for x in h])
    hit, miss, false_alarm = (float(x) for x in totals)
    return EventScore(hit, miss, false_alarm, float(np.sum(durations_s)))


# --- SzCORE (timescoring's EventScoring, default parameters) -----------------------------------

SZCORE_FS_HZ = 10  # timescoring's event scoring works on 10 Hz masks
SZCORE_TOLERANCE_START_S = 30.0
SZCORE_TOLERANCE_END_S = 60.0
SZCORE_MERGE_BELOW_S = 90.0
SZCORE_SPLIT_ABOVE_S = 300.0
SZCORE_MIN_OVERLAP = 0.0


def _szcore_merge(events: list[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for start, stop in events:
        if merged and start - merged[-1][1] < SZCORE_MERGE_BELOW_S:
            merged[-1] = (merged[-1][0], stop)  # timescoring keeps the later event's end as is
        else:
            merged.append((start, stop))
    return merged


def _szcore_split(events: list[Interval]) -> list[Interval]:
    pieces: list[Interval] = []
    for start, stop in events:
        while stop - start > SZCORE_SPLIT_ABOVE_S:  # same float steps as timescoring
            pieces.append((start, start + SZCORE_SPLIT_ABOVE_S))
            start = start + SZCORE_SPLIT_ABOVE_S
        pieces.append((start, stop))
    return pieces


def _samples_in(prefix: np.ndarray, fs_hz: float, start_s: float, stop_s: float) -> int:
    """How many True samples a mask has in ``mask[round(start*fs):round(stop*fs)]``."""
    n = len(prefix) - 1
    a = min(round(start_s * fs_hz), n)
    b = min(round(stop_s * fs_hz), n)
    return int(prefix[b] - prefix[a]) if b > a else 0


def event_mask(events: Iterable[Interval], fs_hz: float, n: int) -> np.ndarray:
    """timescoring's Annotation mask: samples ``round(start*fs):round(stop*fs)`` of each event."""
    mask = np.zeros(n, dtype=bool)
    for start, stop in events:
        mask[round(start * fs_hz) : round(stop * fs_hz)] = True
    return mask


def szcore_recording(
    ref: Intervals, hyp: Intervals, duration_s: float, fs_hz: float = SZCORE_FS_HZ
) -> tuple[int, int, int, float]:
    """(tp, n_reference_events, fp, duration used) of one recording, as timescoring counts them
    on ``fs_hz`` masks (its EventScoring uses 10 Hz)."""
    n = round(duration_s * fs_hz)
    ref_events = _szcore_split(_szcore_merge(_as_pairs(ref)))
    hyp_events = _szcore_split(_szcore_merge(_as_pairs(hyp)))
    hyp_prefix = np.concatenate([[0], np.cumsum(event_mask(hyp_events, fs_hz, n))])

    file_duration_s = n / fs_hz
    detected: list[Interval] = []
    for start, stop in ref_events:
        lo = max(0, start - SZCORE_TOLERANCE_START_S)
        hi = min(file_duration_s, stop + SZCORE_TOLERANCE_END_S)
        covered_s = _samples_in(hyp_prefix, fs_hz, lo, hi) / fs_hz
        # An event starting 30 s or more past the file's end has an empty window: timescoring's
        # 0/0 is NaN there, which is no hit.
        if hi > lo and covered_s / (hi - lo) > SZCORE_MIN_OVERLAP + 1e-6:
            detected.append((lo, hi))
    tp_prefix = np.concatenate([[0], np.cumsum(event_mask(detected, fs_hz, n))])
    fp = sum(_samples_in(tp_prefix, fs_hz, start, stop) == 0 for start, stop in hyp_events)
    return len(detected), len(ref_events), int(fp), file_duration_s


def score_szcore(ref: Events, hyp: Events, durations_s: Durations) -> EventScore:
    n = len(durations_s)
    tp = n_ref = fp = 0
    duration_s = 0.0
    for r, h, d in zip(ref.per_recording(n), hyp.per_recording(n), durations_s, strict=True):
        r_tp, r_ref, r_fp, r_dur = szcore_recording(r, h, d)
        tp, n_ref, fp, duration_s = tp + r_tp, n_ref + r_ref, fp + r_fp, duration_s + r_dur
    return EventScore(tp, n_ref - tp, fp, duration_s)


SCORERS = {"ovlp": score_ovlp, "taes": score_taes, "szcore": score_szcore}


def score_all(
    ref: Events, hyp: Events, durations_s: Durations, methods: Sequence[str] = METHODS
) -> dict[str, EventScore]:
    return {m: SCORERS[m](ref, hyp, durations_s) for m in methods}
