"""Where a seizure is: each detected event's channels, from each node's own seizure logit
(models/detector.py ``V3Detector.localised``: the per-node scores the head fuses into the logit,
trained against per-channel labels by the auxiliary loss, train/step.py), and how well they agree
with per-channel reference labels.

Evidence: per node and frame, the node's logit, stitched as the probabilities are
(evaluate/stitch.py). An event's channels are the nodes the model calls seizing over it: mean
probability at least NODE_SEIZING, strongest first (the strongest alone when none is: a detected
event is somewhere).

Reference: the per-channel seizure rows (TUSZ's and the synthetic corpus's ``.csv``, cached as
``channel_seizures``) that overlap a reference event. Its focus: the electrodes common to the rows
that start first (a derivation starts when either electrode does, so the focus is in each first
row; with none in common, all of theirs); its side: left, right or both, from the electrodes of all
its rows (midline electrodes are on neither side).

Scores, over the reference events that a detected event overlaps (the one overlapping most):
focus, some focus electrode among the detected event's channels (for derivations: in one of
them); side, the channels' side equal to the reference's; overlap, the Jaccard index of the
electrodes the channels hold and those the reference's rows hold (naming all 19 buys focus and
side, not overlap). Beside each, the same score for channel sets of the same size drawn at random
(RANDOM_DRAWS per event, seeded): what a detector that knows nothing of place would reach.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from szdet.config import Config, montage_channels
from szdet.data.manifest import CachedRecording
from szdet.data.montage import electrodes
from szdet.evaluate.postprocess import EventRules, track_events

NODE_SEIZING = 0.5
FIRST_ROW_TOLERANCE_S = 1e-3  # rows written to 4 decimals; later electrodes start >= 0.05 s after
RANDOM_DRAWS = 200
LEFT = frozenset({"FP1", "F7", "F3", "T3", "C3", "T5", "P3", "O1", "A1"})
RIGHT = frozenset({"FP2", "F8", "F4", "T4", "C4", "T6", "P4", "O2", "A2"})

Event = tuple[float, float]
ChannelRow = tuple[str, float, float]  # (channel, start_s, stop_s)


def side(channels: Sequence[str]) -> str | None:
    """left, right or both, from the channels' electrodes; None when all are on the midline."""
    heads = frozenset().union(*(electrodes(c) for c in channels)) if channels else frozenset()
    left, right = bool(heads & LEFT), bool(heads & RIGHT)
    return "both" if left and right else "left" if left else "right" if right else None


def event_channels(
    evidence: np.ndarray, events: Sequence[Event], frame_hz: float, names: Sequence[str]
) -> list[tuple[str, ...]]:
    """Per event, the channels that carry it, strongest first; ``evidence``: (nodes, frames) of
    node logits."""
    if evidence.shape[0] != len(names):
        raise ValueError(f"evidence of {evidence.shape[0]} nodes for {len(names)} channel names")
    carried = []
    for start_s, stop_s in events:
        first = max(0, int(start_s * frame_hz))
        stop = max(first + 1, min(evidence.shape[1], int(np.ceil(stop_s * frame_hz))))
        seizing = (1.0 / (1.0 + np.exp(-evidence[:, first:stop].astype(np.float64)))).mean(axis=1)
        order = np.argsort(-seizing, kind="stable")
        keep = [i for i in order if seizing[i] >= NODE_SEIZING] or list(order[:1])
        carried.append(tuple(names[i] for i in keep))
    return carried


def reference_place(rows: Sequence[ChannelRow]) -> tuple[frozenset[str], str | None]:
    """The focus electrodes and the side of one reference seizure, from its channel rows."""
    first_s = min(start for _, start, _ in rows)
    first = [electrodes(c) for c, start, _ in rows if start - first_s <= FIRST_ROW_TOLERANCE_S]
    focus = frozenset.intersection(*first) or frozenset().union(*first)
    return focus, side([c for c, _, _ in rows])


def _overlap(a: Event, b: Event) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def _focus_hit(channels: Sequence[str], focus: frozenset[str]) -> bool:
    return any(electrodes(c) & focus for c in channels)


def _held(channels: Sequence[str]) -> frozenset[str]:
    return frozenset().union(*(electrodes(c) for c in channels)) if channels else frozenset()


def _agreement(
    chosen: Sequence[str], focus: frozenset[str], true_side: str | None, held: frozenset[str]
) -> dict[str, float]:
    """One event's scores: its channels ``chosen`` against the reference's place."""
    mine = _held(chosen)
    return {
        "focus": float(_focus_hit(chosen, focus)),
        "side": float(side(chosen) == true_side),
        "overlap": len(mine & held) / len(mine | held) if mine | held else 1.0,
    }


def localisation_scores(
    recordings: Sequence[tuple[Sequence[Event], Sequence[tuple[str, ...]], Sequence[ChannelRow]]],
    reference_events: Sequence[Sequence[Event]],
    names: Sequence[str],
    seed: int = 0,
) -> dict[str, Any]:
    """Focus, side and electrode overlap, and their random baselines, over a split. Per recording:
    (detected events, their channels, reference channel rows); ``reference_events``: the
    merged reference seizures per recording."""
    rng = np.random.default_rng(seed)
    scores: dict[str, list[float]] = {k: [] for k in ("focus", "side", "overlap")}
    chance: dict[str, list[float]] = {k: [] for k in scores}
    for (detected, channels, rows), references in zip(recordings, reference_events, strict=True):
        for reference in references:
            own = [r for r in rows if _overlap((r[1], r[2]), reference) > 0]
            overlaps = [_overlap(d, reference) for d in detected]
            if not own or not overlaps or max(overlaps) <= 0:
                continue  # no per-channel labels, or not detected: nothing to place
            chosen = channels[int(np.argmax(overlaps))]
            if not chosen:
                continue
            truth = (*reference_place(own), _held([c for c, _, _ in own]))
            for key, value in _agreement(chosen, *truth).items():
                scores[key].append(value)
            draws = [
                _agreement(
                    [names[i] for i in rng.choice(len(names), len(chosen), replace=False)], *truth
                )
                for _ in range(RANDOM_DRAWS)
            ]
            for key in chance:
                chance[key].append(float(np.mean([d[key] for d in draws])))
    if not scores["focus"]:
        return {"events": 0, "focus_hit_rate": None, "side_accuracy": None, "overlap": None}
    return {
        "events": len(scores["focus"]),
        "focus_hit_rate": float(np.mean(scores["focus"])),
        "side_accuracy": float(np.mean(scores["side"])),
        "overlap": float(np.mean(scores["overlap"])),
        "random_focus_hit_rate": float(np.mean(chance["focus"])),
        "random_side_accuracy": float(np.mean(chance["side"])),
        "random_overlap": float(np.mean(chance["overlap"])),
        "mean_channels": float(np.mean([len(c) for r in recordings for c in r[1]] or [0])),
    }


def split_localisation(
    cfg: Config,
    recordings: Sequence[CachedRecording],
    tracks: Sequence[np.ndarray],
    evidence: Sequence[np.ndarray],
    threshold_on: float,
) -> dict[str, Any]:
    """`localisation_scores` of a cached split, its events detected at ``threshold_on``."""
    frame_hz, names = cfg.evaluate.frame_hz, montage_channels(cfg.data.montage)
    rules = EventRules.from_config(cfg.evaluate, threshold_on)
    per_recording = []
    for recording, track, nodes in zip(recordings, tracks, evidence, strict=True):
        events = track_events(track, frame_hz, rules, recording.duration_s)
        detected = [(float(a), float(b)) for a, b in events]
        channels = event_channels(nodes, detected, frame_hz, names)
        per_recording.append((detected, channels, recording.channel_seizures))
    scores = localisation_scores(per_recording, [r.events for r in recordings], names)
    return {"threshold_on": threshold_on, **scores}
