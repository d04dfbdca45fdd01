"""Sample AUROC/AUPRC vs brute force; FA-target threshold choice; the per-split metrics dict."""

import itertools
import json

import numpy as np
import pytest

from szdet.config import EvaluateConfig
from szdet.evaluate.metrics import (
    auprc,
    auroc,
    evaluate_tracks,
    roc_curve,
    thresholds_from_metrics,
)

FRAME_HZ = 4.0


def brute_auroc(scores, labels):
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def brute_auprc(scores, labels):
    """Mean over positives of the precision when everything scoring at least as high is flagged."""
    return np.mean([labels[scores >= s].mean() for s in scores[labels == 1]])


@pytest.mark.parametrize("seed", range(5))
def test_auroc_and_auprc_equal_their_brute_force_definitions(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    labels = (rng.random(n) < 0.3).astype(np.uint8)
    labels[:2] = [0, 1]  # both classes present
    scores = rng.random(n)
    if seed % 2:  # many ties
        scores = np.round(scores * 4) / 4
    assert auroc(scores, labels) == pytest.approx(brute_auroc(scores, labels))
    assert auprc(scores, labels) == pytest.approx(brute_auprc(scores, labels))


def test_curves_with_one_class_are_undefined():
    assert auroc(np.array([0.1, 0.9]), np.array([0, 0])) is None
    assert auroc(np.array([0.1, 0.9]), np.array([1, 1])) is None
    assert auprc(np.array([0.1, 0.9]), np.array([0, 0])) is None
    fpr, tpr, _ = roc_curve(np.array([0.2, 0.4, 0.4, 0.9]), np.array([0, 1, 0, 1]))
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert len(fpr) == 4  # the origin plus one point per distinct score


# --- a split whose FA/24h per threshold is known ----------------------------------------------

HOUR_S = 3600.0


def plateau_tracks(seizure_heights, blip_heights, n_recordings=4):
    """One hour per recording; 40 s seizures and 10 s false blips as flat plateaus of the given
    heights, spread round-robin over the recordings. Each blip is 6 FA/24h over 4 hours."""
    tracks = [np.full(int(HOUR_S * FRAME_HZ), 0.01, dtype=np.float32) for _ in range(n_recordings)]
    events = [[] for _ in range(n_recordings)]
    for k, height in enumerate(seizure_heights):
        r, start_s = k % n_recordings, 300.0 + 600.0 * (k // n_recordings)
        tracks[r][int(start_s * FRAME_HZ) : int((start_s + 40) * FRAME_HZ)] = height
        events[r].append((start_s, start_s + 40))
    for k, height in enumerate(blip_heights):
        r, start_s = k % n_recordings, 2000.0 + 600.0 * (k // n_recordings)
        tracks[r][int(start_s * FRAME_HZ) : int((start_s + 10) * FRAME_HZ)] = height
    return tracks, events, [HOUR_S] * n_recordings


def test_threshold_choice_respects_each_fa_target():
    cfg = EvaluateConfig()
    tracks, events, durations = plateau_tracks([0.95, 0.85, 0.7, 0.55], [0.9, 0.8, 0.6, 0.6, 0.52])
    m = evaluate_tracks(tracks, events, durations, cfg)
    at = m["sens_at_fa"]
    assert list(at) == ["10", "5", "2.5", "1", "0.5"]
    # <= 10 FA/24h allows one blip: the 0.9 one, so the threshold sits in (0.80, 0.85]
    assert (at["10"]["sensitivity"], at["10"]["fa_per_24h"]) == (0.5, pytest.approx(6.0))
    assert 0.80 < at["10"]["threshold"] <= 0.85
    # every threshold in that range scores the same on this split: the strictest one is taken
    grid = m["sweep"]["threshold_on"]
    assert at["10"]["threshold"] == max(t for t in grid if 0.80 < t <= 0.85)
    for target in ["5", "2.5", "1", "0.5"]:  # no blip allowed: only the 0.95 seizure is left
        assert (at[target]["sensitivity"], at[target]["fa_per_24h"]) == (0.25, 0.0)
        assert 0.90 < at[target]["threshold"] <= 0.95
    # the sweep agrees: nothing within a target has a higher sensitivity
    sweep = m["sweep"]
    for target, entry in at.items():
        feasible = [
            s
            for s, fa in zip(sweep["sensitivity"], sweep["fa_per_24h"], strict=True)
            if fa <= float(target)
        ]
        assert entry["sensitivity"] == max(feasible)
    assert m["thresholds_source"] == "chosen on this split"


def test_given_thresholds_are_applied_unchanged_never_retuned():
    cfg = EvaluateConfig()
    dev = evaluate_tracks(*plateau_tracks([0.95, 0.85, 0.7, 0.55], [0.9, 0.8, 0.6, 0.6, 0.52]), cfg)
    chosen = thresholds_from_metrics(json.loads(json.dumps(dev)))  # as read back from metrics.json
    # On this split every blip is low: re-tuning would pick a low threshold and find all seizures.
    eval_split = plateau_tracks([0.97, 0.88, 0.75, 0.6], [0.3, 0.3])
    retuned = evaluate_tracks(*eval_split, cfg)
    assert retuned["sens_at_fa"]["10"]["sensitivity"] == 1.0
    applied = evaluate_tracks(*eval_split, cfg, thresholds=chosen)
    assert applied["thresholds_source"] == "given"
    for target, entry in applied["sens_at_fa"].items():
        assert entry["threshold"] == dev["sens_at_fa"][target]["threshold"]
    assert applied["sens_at_fa"]["10"]["sensitivity"] == 0.5  # 0.97 and 0.88 pass (0.80, 0.85]
    assert applied["sens_at_fa"]["1"]["sensitivity"] == 0.25


def test_a_target_no_threshold_meets_detects_nothing_and_that_is_applied_too():
    cfg = EvaluateConfig(fa_targets_per_24h=[1.0])
    saturated = [np.full(400, 0.9999, np.float32)]  # even the top threshold fires everywhere
    m = evaluate_tracks(saturated, [[]], [100.0], cfg)
    assert m["sens_at_fa"]["1"] == {"threshold": None, "sensitivity": None, "fa_per_24h": 0.0}
    tracks, events, durations = plateau_tracks([0.9], [0.9])
    applied = evaluate_tracks(tracks, events, durations, cfg, thresholds={1.0: None})
    assert applied["sens_at_fa"]["1"] == {"threshold": None, "sensitivity": 0.0, "fa_per_24h": 0.0}
    with pytest.raises(ValueError, match="no threshold given"):
        evaluate_tracks(tracks, events, durations, cfg, thresholds={10.0: 0.5})


def test_metrics_dict_is_plain_json_with_every_score():
    cfg = EvaluateConfig()
    tracks, events, durations = plateau_tracks([0.95, 0.6], [0.7])
    m = evaluate_tracks(tracks, events, durations, cfg)
    json.dumps(m, allow_nan=False)  # no NaN, no numpy types
    assert m["recordings"] == 4 and m["hours"] == pytest.approx(4.0) and m["seizure_events"] == 2
    assert 0.5 < m["auroc"] <= 1.0 and 0.0 < m["auprc"] <= 1.0
    # at the configured 0.5 / 0.35: both seizures found, the 0.7 blip is one false alarm
    assert (m["ovlp"]["tp"], m["ovlp"]["fn"], m["ovlp"]["fp"]) == (2, 0, 1)
    assert m["fa_per_24h"] == pytest.approx(6.0)
    assert m["taes"]["tp"] == pytest.approx(2.0) and m["szcore"]["tp"] == 2
    assert len(m["sweep"]["threshold_on"]) == cfg.sweep_points
    assert m["roc"]["fpr"][0] == 0.0 and m["roc"]["tpr"][-1] == 1.0
