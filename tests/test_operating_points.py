"""Operating points by false-alarm budget (src/szdet/evaluate/operating_points.py): thresholds
chosen per budget, intervals from a bootstrap over patients, and the pick `detect` makes.

The tracks here are built by hand so that each expectation follows from their construction: one
probability bump per seizure (its height the patient's) and false bumps of known heights."""

import numpy as np
import pytest

from szdet.config import EvaluateConfig
from szdet.errors import UserError
from szdet.evaluate.operating_points import calibrate, patient_counts, patient_index, pick
from szdet.evaluate.postprocess import EventRules, TrackSet
from szdet.evaluate.scoring import METHODS, Events, score_all

FRAME_HZ = 4.0
HOUR_S = 3600.0


def _recording(seizures_at_s, seizure_p, false_at_s, false_p):
    """One hour at 4 Hz: 0.05 everywhere, 30 s bumps at the given starts and heights."""
    track = np.full(int(HOUR_S * FRAME_HZ), 0.05)
    for start_s, p in [
        *zip(seizures_at_s, seizure_p, strict=True),
        *zip(false_at_s, false_p, strict=True),
    ]:
        track[int(start_s * FRAME_HZ) : int((start_s + 30) * FRAME_HZ)] = p
    return track, [(s, s + 30.0) for s in seizures_at_s]


def _split():
    """Four patients, two recordings each. Seizure bumps of 0.9 (patients a, b) or 0.6 (c, d);
    false bumps of 0.95 (one, patient a), 0.7 (two, patient b) and 0.4 (many, everywhere)."""
    recordings, patients = [], []
    for patient, sz_p, false in (
        ("a", 0.9, [(2000, 0.95)]),
        ("b", 0.9, [(2000, 0.7), (2600, 0.7)]),
        ("c", 0.6, []),
        ("d", 0.6, []),
    ):
        for k in range(2):
            extra = [(3000 + 100 * i, 0.4) for i in range(3)]
            falses = (false if k == 0 else []) + extra
            recordings.append(
                _recording(
                    [500.0, 1200.0], [sz_p] * 2, [f for f, _ in falses], [p for _, p in falses]
                )
            )
            patients.append(patient)
    tracks = [t for t, _ in recordings]
    events = [e for _, e in recordings]
    return tracks, events, [HOUR_S] * len(tracks), patients


def _cfg(**kw) -> EvaluateConfig:
    settings = {
        "fa_targets_per_24h": [1, 3, 9, 100],
        "bootstrap_samples": 400,
        "calibration_points": 200,
    }
    return EvaluateConfig(**{**settings, **kw})


def test_budgets_pick_the_thresholds_their_false_alarms_allow():
    calibration = calibrate(*_split(), _cfg(), "dev")
    points = {p["fa_per_24h_budget"]: p for p in calibration["points"]}
    # 8 h: one false alarm is 3 FA/24h. Within 1 none may fire: above the 0.95 bump, no seizure.
    assert points[1]["threshold_on"] > 0.95
    assert points[1]["ovlp"]["sensitivity"]["value"] == 0.0
    assert points[1]["ovlp"]["fa_per_24h"]["value"] == 0.0
    # 3 allows one: the 0.9 seizures (patients a, b) at the cost of the 0.95 bump
    assert 0.7 < points[3]["threshold_on"] <= 0.9
    assert points[3]["ovlp"]["sensitivity"]["value"] == 0.5
    assert points[3]["ovlp"]["fa_per_24h"]["value"] == pytest.approx(3.0)
    # 9 allows three: the 0.6 seizures too, with the two 0.7 bumps
    assert 0.4 < points[9]["threshold_on"] <= 0.6
    assert points[9]["ovlp"]["sensitivity"]["value"] == 1.0
    assert points[9]["ovlp"]["fa_per_24h"]["value"] == pytest.approx(9.0)
    # 100 would take the 24 bumps of 0.4 as well, for no more sensitivity: the same point
    assert points[100]["threshold_on"] == points[9]["threshold_on"]
    thresholds = [p["threshold_on"] for p in calibration["points"]]
    assert len(set(thresholds)) == 3 and thresholds == sorted(thresholds, reverse=True)
    sensitivities = [p["ovlp"]["sensitivity"]["value"] for p in calibration["points"]]
    assert sensitivities == [0.0, 0.5, 1.0, 1.0]


def test_intervals_are_ordered_and_widen_where_patients_differ():
    calibration = calibrate(*_split(), _cfg(), "dev")
    widths = []
    for point in calibration["points"]:
        for method in METHODS:
            for rate in ("sensitivity", "fa_per_24h"):
                r = point[method][rate]
                assert r["low"] <= r["value"] <= r["high"], (point["fa_per_24h_budget"], method)
                widths.append(r["high"] - r["low"])
    # At 3 FA/24h half the patients' seizures are found: resampling patients moves sensitivity
    at_3 = calibration["points"][1]["ovlp"]["sensitivity"]
    assert at_3["low"] < 0.5 < at_3["high"]
    assert max(widths) > 0
    curve = calibration["curve"]
    assert len(curve["threshold_on"]) == 200 and len(curve["sensitivity_low"]) == 200


def test_per_patient_counts_sum_to_the_split_score():
    tracks, events, durations, patients = _split()
    ref = Events.from_lists(events)
    hyp = TrackSet(tracks, FRAME_HZ, durations).events(EventRules.from_config(_cfg(), 0.5))
    whole = score_all(ref, hyp, durations)
    for method in METHODS:
        counts = patient_counts(ref, hyp, np.asarray(durations), patient_index(patients), method)
        tp, fn, fp, seconds = counts.sum(axis=0)
        s = whole[method]
        assert (tp, fn, fp, seconds) == pytest.approx((s.tp, s.fn, s.fp, s.duration_s)), method


def test_one_patient_gives_intervals_of_no_width():
    tracks, events, durations, _ = _split()
    calibration = calibrate(tracks, events, durations, ["p"] * len(tracks), _cfg(), "dev")
    for point in calibration["points"]:
        r = point["ovlp"]["sensitivity"]
        assert r["low"] == r["value"] == r["high"]


def test_pick_takes_the_largest_calibrated_budget_within_and_refuses_outside():
    calibration = calibrate(*_split(), _cfg(), "dev")
    assert pick(calibration, 3)["fa_per_24h_budget"] == 3
    assert pick(calibration, 8.9)["fa_per_24h_budget"] == 3  # never a looser point than asked
    with pytest.raises(UserError, match=r"^no operating point for 0.5 FA/24h: .* 1, 3, 9, 100 FA"):
        pick(calibration, 0.5)
    with pytest.raises(UserError, match="calibrated on dev for 1, 3, 9, 100 FA/24h"):
        pick(calibration, 1000)
