"""The SzCORE challenge's numbers, as szcore-evaluation 0.0.7's ``evaluate_dataset`` computes them.

Per recording, both annotations become 1 Hz masks as epilepsy2bids' ``getMask`` builds them
(``int(recordingDuration)`` samples; a seizure covers ``int(onset) .. int(onset + duration)``), and
the masks' runs become whole-second events again. Those are scored twice, with timescoring's
defaults: sample scoring on the 1 Hz masks (tp = samples in both, fp = hypothesis samples outside
the reference) and event scoring at 10 Hz (scoring.szcore_recording). Counts are summed per subject;
each subject gets sensitivity, precision, f1 and false positives per 24 h from its sums (NaN where a
ratio is undefined), and the dataset gets their NaN-ignoring mean and (population) std over
subjects. A recording without a usable hypothesis counts as no detections, as there.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from szdet.evaluate.scoring import EventScore, Interval, szcore_recording

MASK_HZ = 1  # szcore-evaluation scores on 1 Hz masks
METRICS = ("sensitivity", "precision", "f1", "fpRate")  # szcore-evaluation's names
LEVELS = ("sample_results", "event_results")


@dataclass(frozen=True)
class ChallengeRecording:
    subject: str
    ref: Sequence[Interval]
    hyp: Sequence[Interval] | None  # None: no usable hypothesis, scored as no detections
    duration_s: float  # the reference's recordingDuration


def mask_samples(duration_s: float) -> int:
    """The length of epilepsy2bids' mask of a recording."""
    return int(duration_s * MASK_HZ)


def one_hz_mask(events: Iterable[Interval], n: int) -> np.ndarray:
    """epilepsy2bids' getMask: truncated sample indices, cut to the mask's end."""
    mask = np.zeros(n, dtype=bool)
    for start_s, stop_s in events:
        mask[int(start_s * MASK_HZ) : int(stop_s * MASK_HZ)] = True
    return mask


def mask_runs(mask: np.ndarray) -> list[Interval]:
    """The mask's runs of True as [start_s, stop_s) events (timescoring's mask -> events)."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [(a / MASK_HZ, b / MASK_HZ) for a, b in zip(edges[0::2], edges[1::2], strict=True)]


def recording_scores(recording: ChallengeRecording) -> tuple[EventScore, EventScore]:
    """(sample, event) counts of one recording."""
    n = mask_samples(recording.duration_s)
    ref = one_hz_mask(recording.ref, n)
    hyp = one_hz_mask(recording.hyp or (), n)
    sample = EventScore(
        tp=int(np.sum(ref & hyp)),
        fn=int(np.sum(ref & ~hyp)),
        fp=int(np.sum(~ref & hyp)),
        duration_s=n / MASK_HZ,
    )
    tp, n_ref, fp, duration_s = szcore_recording(mask_runs(ref), mask_runs(hyp), n / MASK_HZ)
    return sample, EventScore(tp, n_ref - tp, fp, duration_s)


def _sum(scores: Iterable[EventScore]) -> EventScore:
    tp = fn = fp = duration_s = 0.0
    for s in scores:
        tp, fn, fp, duration_s = tp + s.tp, fn + s.fn, fp + s.fp, duration_s + s.duration_s
    return EventScore(tp, fn, fp, duration_s)


def _metrics(score: EventScore) -> dict[str, float]:
    values = (score.sensitivity, score.precision, score.f1, score.fa_per_24h)
    return {m: math.nan if v is None else v for m, v in zip(METRICS, values, strict=True)}


def _nan_stats(values: list[float]) -> tuple[float, float]:
    """numpy's nanmean and nanstd, NaN (without numpy's warning) where every value is NaN."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, math.nan
    return float(np.mean(finite)), float(np.std(finite))


def challenge_scores(recordings: Iterable[ChallengeRecording]) -> dict[str, dict[str, float]]:
    """szcore-evaluation's output: per level, each metric's mean and ``<metric>_std`` over
    subjects."""
    per_subject: dict[str, list[tuple[EventScore, EventScore]]] = defaultdict(list)
    for recording in recordings:
        per_subject[recording.subject].append(recording_scores(recording))
    out: dict[str, dict[str, float]] = {}
    for index, level in enumerate(LEVELS):
        subjects = [_metrics(_sum(s[index] for s in scores)) for scores in per_subject.values()]
        out[level] = {}
        for metric in METRICS:
            mean, std = _nan_stats([s[metric] for s in subjects])
            out[level][metric], out[level][f"{metric}_std"] = mean, std
    return out


def challenge_table(results: dict[str, dict[str, float]], n_subjects: int) -> str:
    def cell(level: str, metric: str) -> str:
        mean, std = results[level][metric], results[level][f"{metric}_std"]
        digits = 2 if metric == "fpRate" else 4
        text = "-" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"
        return f"{text:>20}"

    lines = [f"{'SzCORE':<8}{'sens':>20}{'prec':>20}{'f1':>20}{'FP/24h':>20}"]
    for level in LEVELS:
        lines.append(f"{level.split('_')[0]:<8}" + "".join(cell(level, m) for m in METRICS))
    lines.append(
        f"(szcore-evaluation 0.0.7's numbers: 1 Hz masks, mean ± std over {n_subjects} subject(s))"
    )
    return "\n".join(lines)
