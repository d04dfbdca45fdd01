"""Where a seizure is: each detected event's channels, from each node's own seizure logit
(models/detector.py ``V3Detector.localised``: the per-node scores the head fuses into the logit,
trained against per-channel labels by the auxiliary loss, train/step.py), and how well they agree
with per-channel reference labels.

Evidence: per node and frame, the node's logit, stitched as the probabilities are
(evaluate/stitch.py), less the node's median over the recording (a node that always weighs the same
says nothing about place). An event's channels are the nodes whose mean evidence over the event is
positive and at least CARRY_SHARE of the strongest node's, strongest first: the first is its focus.

Reference: the per-channel seizure rows (TUSZ's and the synthetic corpus's ``.csv``, cached as
``channel_seizures``) that overlap a reference event. Its focus: the electrodes common to the rows
that start first (a derivation starts when either electrode does, so the focus is in each first
row; with none in common, all of theirs); its side: left, right or both, from the electrodes of all
its rows (midline electrodes are on neither side).

Scores, over the reference events that a detected event overlaps (the one overlapping most):
focus, some focus electrode among the detected event's channels (for derivations: in one of
them); side, the channels' side equal to the reference's. Beside each, the same score for channel
sets of the same size drawn at random (RANDOM_DRAWS per event, seeded): what a detector that knows
nothing of place would reach.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from szdet.config import Config, montage_channels
from szdet.data.manifest import CachedRecording
from szdet.data.montage import electrodes
from szdet.evaluate.postprocess import EventRules, track_events

CARRY_SHARE = 0.5
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
    """Per event, the channels that carry it, strongest first; ``evidence``: (nodes, frames)."""
    if evidence.shape[0] != len(names):
        raise ValueError(f"evidence of {evidence.shape[0]} nodes for {len(names)} channel names")
    background = np.median(evidence, axis=1) if evidence.shape[1] else np.zeros(len(names))
    carried = []
    for start_s, stop_s in events:
        first = max(0, int(start_s * frame_hz))
        stop = max(first + 1, min(evidence.shape[1], int(np.ceil(stop_s * frame_hz))))
        strength = evidence[:, first:stop].mean(axis=1) - background
        order = np.argsort(-strength, kind="stable")
        top = strength[order[0]]
        keep = [
            i for i in order if top > 0 and strength[i] > 0 and strength[i] >= CARRY_SHARE * top
        ]
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


def localisation_scores(
    recordings: Sequence[tuple[Sequence[Event], Sequence[tuple[str, ...]], Sequence[ChannelRow]]],
    reference_events: Sequence[Sequence[Event]],
    names: Sequence[str],
    seed: int = 0,
) -> dict[str, Any]:
    """Focus and side agreement, and their random baselines, over a split. Per recording:
    (detected events, their channels, reference channel rows); ``reference_events``: the
    merged reference seizures per recording."""
    rng = np.random.default_rng(seed)
    focus_hits, side_hits, random_focus, random_side = [], [], [], []
    for (detected, channels, rows), references in zip(recordings, reference_events, strict=True):
        for reference in references:
            own = [r for r in rows if _overlap((r[1], r[2]), reference) > 0]
            overlaps = [_overlap(d, reference) for d in detected]
            if not own or not overlaps or max(overlaps) <= 0:
                continue  # no per-channel labels, or not detected: nothing to place
            chosen = channels[int(np.argmax(overlaps))]
            if not chosen:
                continue
            focus, true_side = reference_place(own)
            focus_hits.append(_focus_hit(chosen, focus))
            side_hits.append(side(chosen) == true_side)
            draws = [
                rng.choice(len(names), len(chosen), replace=False) for _ in range(RANDOM_DRAWS)
            ]
            random_focus.append(np.mean([_focus_hit([names[i] for i in d], focus) for d in draws]))
            random_side.append(np.mean([side([names[i] for i in d]) == true_side for d in draws]))
    if not focus_hits:
        return {"events": 0, "focus_hit_rate": None, "side_accuracy": None}
    return {
        "events": len(focus_hits),
        "focus_hit_rate": float(np.mean(focus_hits)),
        "side_accuracy": float(np.mean(side_hits)),
        "random_focus_hit_rate": float(np.mean(random_focus)),
        "random_side_accuracy": float(np.mean(random_side)),
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
