"""Split-level metrics from stitched tracks: sample AUROC/AUPRC, event scores, sensitivity at FA/24h.

Sensitivity at a false-alarm target: the on-threshold is swept over a grid (off = on x the
configured off/on ratio), each setting post-processed and OVLP-scored over the whole split; for each
target the threshold with the highest sensitivity whose FA/24h stays within the target wins (ties:
lower FA/24h, then the higher, stricter threshold). Thresholds chosen on dev are passed to the
evaluation of another split and applied unchanged there, never re-tuned. Events always come from the stitched
tracks, so an event under several overlapping windows counts once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from szdet.config import EvaluateConfig
from szdet.evaluate.postprocess import EventRules, TrackSet
from szdet.evaluate.scoring import Events, score_all, score_ovlp
from szdet.evaluate.stitch import label_track

ROC_PLOT_POINTS = 256  # the ROC kept in metrics.json, for plots


# --- sample-level curves ----------------------------------------------------------------------


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), one point per distinct score (descending) plus the origin.

    Exact: tied scores move together, so the area is the Mann-Whitney statistic with ties at 1/2.
    """
    tps, fps, thresholds = _cumulative_counts(scores, labels)
    positives, negatives = tps[-1] if len(tps) else 0, fps[-1] if len(fps) else 0
    tpr = np.concatenate([[0.0], tps / positives]) if positives else np.zeros(len(tps) + 1)
    fpr = np.concatenate([[0.0], fps / negatives]) if negatives else np.zeros(len(fps) + 1)
    return fpr, tpr, np.concatenate([[np.inf], thresholds])


def _cumulative_counts(
    scores: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives when predicting positive at each distinct score, high to low."""
    scores = np.asarray(scores).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    order = np.argsort(scores, kind="stable")[::-1]
    sorted_scores = scores[order]
    last_of_tie = np.concatenate([np.flatnonzero(np.diff(sorted_scores)), [len(scores) - 1]])
    if len(scores) == 0:
        last_of_tie = np.zeros(0, dtype=np.int64)
    tps = np.cumsum(labels[order], dtype=np.float64)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    return tps, fps, sorted_scores[last_of_tie]


def auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve; None when only one class is present."""
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        return None
    fpr, tpr, _ = roc_curve(scores, labels)
    return float(np.trapezoid(tpr, fpr))


def auprc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Average precision: sum over distinct thresholds of recall gained x precision there."""
    tps, fps, _ = _cumulative_counts(scores, labels)
    if len(tps) == 0 or tps[-1] == 0:
        return None
    recall_gain = np.diff(np.concatenate([[0.0], tps])) / tps[-1]
    return float(np.sum(recall_gain * tps / (tps + fps)))


def _roc_for_plot(fpr: np.ndarray, tpr: np.ndarray) -> dict[str, list[float]]:
    grid = np.unique(
        np.concatenate(
            [np.linspace(0, 1, ROC_PLOT_POINTS // 2), np.logspace(-6, 0, ROC_PLOT_POINTS // 2)]
        )
    )
    keep = np.unique(
        np.concatenate([[0, len(fpr) - 1], np.searchsorted(fpr, grid).clip(0, len(fpr) - 1)])
    )
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}


# --- threshold sweep --------------------------------------------------------------------------


def threshold_grid(points: int) -> np.ndarray:
    """On-thresholds evenly spaced in logit space: fine near 0 and 1, where detectors saturate."""
    return 1.0 / (1.0 + np.exp(-np.linspace(-8.0, 8.0, points)))


@dataclass(frozen=True)
class Sweep:
    threshold_on: np.ndarray
    sensitivity: np.ndarray  # NaN where the split has no seizure
    fa_per_24h: np.ndarray

    def to_dict(self) -> dict[str, list[float | None]]:
        return {
            name: _json_floats(getattr(self, name))
            for name in ("threshold_on", "sensitivity", "fa_per_24h")
        }


def sweep_ovlp(
    tracks: TrackSet, ref: Events, cfg: EvaluateConfig, thresholds_on: np.ndarray
) -> Sweep:
    """OVLP sensitivity and FA/24h over the split at each on-threshold."""
    sensitivity, fa = [], []
    for on in thresholds_on:
        score = score_ovlp(
            ref, tracks.events(EventRules.from_config(cfg, float(on))), tracks.durations_s
        )
        sensitivity.append(np.nan if score.sensitivity is None else score.sensitivity)
        fa.append(score.fa_per_24h or 0.0)
    return Sweep(np.asarray(thresholds_on, dtype=np.float64), np.array(sensitivity), np.array(fa))


def choose_thresholds(sweep: Sweep, fa_targets: Sequence[float]) -> dict[float, float | None]:
    """Per FA/24h target, the on-threshold of highest sensitivity within it (None: none is)."""
    sensitivity = np.nan_to_num(sweep.sensitivity, nan=0.0)
    chosen: dict[float, float | None] = {}
    for target in fa_targets:
        feasible = np.flatnonzero(sweep.fa_per_24h <= target + 1e-9)
        if len(feasible) == 0:
            chosen[target] = None
            continue
        # lexsort: last key is primary -> max sensitivity, then min FA, then the HIGHEST
        # threshold: among equals on dev, the strictest one raises fewer alarms elsewhere.
        order = np.lexsort(
            (-sweep.threshold_on[feasible], sweep.fa_per_24h[feasible], -sensitivity[feasible])
        )
        chosen[target] = float(sweep.threshold_on[feasible[order[0]]])
    return chosen


def target_key(target: float | str) -> str:
    """An FA/24h target as metrics' ``sens_at_fa`` keys spell it: 10.0 -> "10", 2.5 -> "2.5"."""
    return f"{float(target):g}"


def thresholds_from_metrics(metrics: Mapping[str, Any]) -> dict[float, float | None]:
    """The thresholds chosen on a split (e.g. dev's metrics.json), to apply to another."""
    return {float(k): v["threshold"] for k, v in metrics["sens_at_fa"].items()}


# --- the per-split metrics dict ---------------------------------------------------------------


def evaluate_tracks(
    tracks: Sequence[np.ndarray],
    events: Sequence[Sequence[tuple[float, float]] | np.ndarray],
    durations: Sequence[float],
    cfg: EvaluateConfig,
    thresholds: Mapping[float | str, float | None] | None = None,
) -> dict[str, Any]:
    """All metrics of one split as a JSON-able dict.

    ``tracks``: stitched probabilities per recording at ``cfg.frame_hz``; ``events``: reference
    seizure intervals (seconds) per recording; ``durations``: recording lengths in seconds;
    ``thresholds``: on-threshold per FA/24h target chosen on dev (None: choose them here).
    """
    if not len(tracks) == len(events) == len(durations):
        raise ValueError(
            f"{len(tracks)} tracks, {len(events)} event lists, {len(durations)} durations"
        )
    ref = Events.from_lists(events)
    track_set = TrackSet(tracks, cfg.frame_hz, durations)
    scores, labels = _frames(tracks, events, cfg.frame_hz)
    configured = score_all(ref, track_set.events(EventRules.from_config(cfg)), durations)
    sweep = sweep_ovlp(track_set, ref, cfg, threshold_grid(cfg.sweep_points))
    if thresholds is None:
        chosen, source = choose_thresholds(sweep, cfg.fa_targets_per_24h), "chosen on this split"
    else:
        chosen, source = _given_thresholds(thresholds, cfg.fa_targets_per_24h), "given"

    fpr, tpr, _ = roc_curve(scores, labels)
    return {
        "recordings": len(tracks),
        "hours": float(np.sum(durations) / 3600.0),
        "seizure_events": len(ref.start_s),
        "frame_hz": cfg.frame_hz,
        "auroc": auroc(scores, labels),
        "auprc": auprc(scores, labels),
        "threshold_on": cfg.threshold_on,
        "threshold_off_ratio": cfg.threshold_off_ratio,
        "fa_per_24h": configured["ovlp"].fa_per_24h,
        **{method: score.to_dict() for method, score in configured.items()},
        "thresholds_source": source,
        "sens_at_fa": {
            target_key(t): _at_threshold(track_set, ref, cfg, on) for t, on in chosen.items()
        },
        "sweep": sweep.to_dict(),
        "roc": _roc_for_plot(fpr, tpr),
    }


def _frames(
    tracks: Sequence[np.ndarray],
    events: Sequence[Sequence[tuple[float, float]] | np.ndarray],
    frame_hz: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of the split: its probability and its reference label."""
    if not tracks:
        return np.zeros(0, np.float32), np.zeros(0, np.uint8)
    labels = [label_track(e, len(t), frame_hz) for t, e in zip(tracks, events, strict=True)]
    return np.concatenate([np.asarray(t, np.float32) for t in tracks]), np.concatenate(labels)


def _given_thresholds(
    thresholds: Mapping[float | str, float | None], fa_targets: Sequence[float]
) -> dict[float, float | None]:
    given = {target_key(k): v for k, v in thresholds.items()}
    missing = [t for t in fa_targets if target_key(t) not in given]
    if missing:
        raise ValueError(f"no threshold given for FA/24h target(s) {missing}")
    return {t: given[target_key(t)] for t in fa_targets}


def _at_threshold(
    tracks: TrackSet, ref: Events, cfg: EvaluateConfig, threshold_on: float | None
) -> dict[str, float | None]:
    """OVLP sensitivity and FA/24h with this on-threshold; None detects nothing."""
    hyp = (
        Events.empty()
        if threshold_on is None
        else tracks.events(EventRules.from_config(cfg, threshold_on))
    )
    score = score_ovlp(ref, hyp, tracks.durations_s)
    return {
        "threshold": threshold_on,
        "sensitivity": score.sensitivity,
        "fa_per_24h": score.fa_per_24h,
    }


def _json_floats(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]
