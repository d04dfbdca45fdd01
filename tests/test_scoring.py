"""Event scoring: hand-worked NEDC OVLP/TAES cases, SzCORE equal to timescoring, `szdet score`."""

import json
import logging
import math

import numpy as np
import pytest
from timescoring.annotations import Annotation as TsAnnotation
from timescoring.scoring import EventScoring

from szdet.cli import main
from szdet.data.tusz import Event, term_events, write_annotation
from szdet.evaluate.scoring import (
    Events,
    overlap_counts,
    score_all,
    score_ovlp,
    score_szcore,
    score_taes,
    szcore_recording,
    taes_recording,
)

DAY_S = 86_400.0


def scores(ref, hyp, duration_s=1000.0):
    return score_all(Events.from_lists([ref]), Events.from_lists([hyp]), [duration_s])


# --- hand-worked NEDC cases -------------------------------------------------------------------


def test_one_hypothesis_spanning_two_references():
    s = scores(ref=[(10, 20), (30, 40)], hyp=[(15, 35)])
    # OVLP: both references overlapped, the hypothesis overlaps something.
    assert (s["ovlp"].tp, s["ovlp"].fn, s["ovlp"].fp) == (2, 0, 0)
    # TAES: first reference hit 5/10 (miss 0.5), the hypothesis' 15 s outside it is a false alarm
    # capped at 1; the second reference it also touches is a full miss.
    assert (s["taes"].tp, s["taes"].fn, s["taes"].fp) == pytest.approx((0.5, 1.5, 1.0))
    assert s["taes"].sensitivity == pytest.approx(0.25)


def test_several_hypotheses_inside_one_reference():
    s = scores(ref=[(10, 110)], hyp=[(20, 30), (50, 60), (100, 120)])
    assert (s["ovlp"].tp, s["ovlp"].fn, s["ovlp"].fp) == (1, 0, 0)
    # TAES: 10 + 10 + 10 s of the 100 s reference hit; the last hypothesis' 10 s after it: 0.1 FA.
    assert (s["taes"].tp, s["taes"].fn, s["taes"].fp) == pytest.approx((0.3, 0.7, 0.1))


def test_partial_overlaps_misses_and_false_alarms():
    ref = [(100, 200), (500, 520)]
    hyp = [(50, 150), (300, 310), (800, 900)]
    s = scores(ref, hyp, duration_s=3600.0)
    assert (s["ovlp"].tp, s["ovlp"].fn, s["ovlp"].fp) == (1, 1, 2)
    assert s["ovlp"].fa_per_24h == pytest.approx(2 / 3600 * DAY_S)
    assert s["ovlp"].precision == pytest.approx(1 / 3)
    # TAES: (50,150) starts early: hit 0.5, FA 50/100; (500,520) missed; two hypotheses unmatched.
    assert (s["taes"].tp, s["taes"].fn, s["taes"].fp) == pytest.approx((0.5, 1.5, 2.5))
    assert s["taes"].f1 == pytest.approx(2 * 0.5 / (2 * 0.5 + 2.5 + 1.5))


def test_nedc_integer_second_overlap_is_reproduced():
    # NEDC pairs events whose integer-second spans meet: (3, 10.2) "touches" (10.5, 20.5), which is
    # processed because (12, 15) truly overlaps it. calc_hf then gives the small negative hit.
    hit, miss, fa = taes_recording([(10.5, 20.5)], [(3.0, 10.2), (12.0, 15.0)])
    assert hit == pytest.approx(-0.3 / 10 + 3 / 10)
    assert miss == pytest.approx(1 - hit)
    assert fa == pytest.approx(7.5 / 10)


def test_taes_false_alarm_per_pair_is_capped_at_one():
    # 50 s before a 10 s reference: the false alarm would be 5 reference durations; NEDC caps it.
    assert taes_recording([(100.0, 110.0)], [(50.0, 105.0)]) == pytest.approx((0.5, 0.5, 1.0))


def test_taes_needs_a_true_overlap_before_pairing():
    # Same integer second but no real overlap, and nothing else overlaps: a miss and a false alarm.
    assert taes_recording([(10.5, 20.0)], [(3.0, 10.2)]) == (0.0, 1.0, 1.0)


def test_hypothesis_ending_with_the_reference_takes_the_spanning_branch():
    # NEDC: hyp.stop >= ref.stop -> the "spanning" branch. (15, 20) ends with (10, 20): hit 0.5.
    # (20.5, 22) then touches (10, 20) in second 20: hit -0.05, FA 0.2, and it "spans" (21, 30),
    # which becomes a full miss inside that branch.
    hit, miss, fa = taes_recording([(10.0, 20.0), (21.0, 30.0)], [(15.0, 20.0), (20.5, 22.0)])
    assert (hit, miss, fa) == pytest.approx((0.45, 0.5 + 1.05 + 1.0, 0.2))


def test_no_events_at_all():
    for method, s in scores([], []).items():
        assert (s.tp, s.fn, s.fp) == (0, 0, 0), method
        assert s.sensitivity is None and s.precision is None and s.f1 is None
        assert s.fa_per_24h == 0.0


def test_hypotheses_only():
    for method, s in scores([], [(10, 20), (400, 420)], duration_s=43_200.0).items():
        assert (s.tp, s.fn, s.fp) == (0, 0, 2), method
        assert s.sensitivity is None
        assert s.precision == 0.0 and s.f1 == 0.0
        assert s.fa_per_24h == pytest.approx(4.0)


def test_references_only_are_all_missed():
    for method, s in scores([(10, 20), (400, 420)], []).items():
        assert (s.tp, s.fn, s.fp) == (0, 2, 0), method
        assert s.sensitivity == 0.0 and s.precision is None


def test_scores_sum_over_recordings_and_never_mix_them():
    ref = Events.from_lists([[(10, 20)], [], [(5, 6)]])
    hyp = Events.from_lists([[], [(10, 20)], [(5.5, 30)]])
    s = score_ovlp(ref, hyp, [100.0, 100.0, 100.0])
    assert (s.tp, s.fn, s.fp) == (1, 1, 1)  # the hypothesis in recording 1 overlaps nothing there
    assert s.duration_s == 300.0
    taes = score_taes(ref, hyp, [100.0, 100.0, 100.0])
    per_recording = [
        taes_recording(r, h)
        for r, h in zip(ref.per_recording(3), hyp.per_recording(3), strict=True)
    ]
    assert (taes.tp, taes.fn, taes.fp) == pytest.approx(tuple(np.sum(per_recording, axis=0)))
    assert (taes.tp, taes.fn, taes.fp) == pytest.approx((0.5, 1.5, 2.0))  # FA 24 s capped at 1


def test_overlap_counts_match_brute_force():
    rng = np.random.default_rng(0)
    a = _random_events(rng, 6, 2000.0, quantum=1.0)
    b = _random_events(rng, 6, 2000.0, quantum=1.0)
    got = overlap_counts(a, b)
    want = [
        sum(
            rb == ra and b1 > a0 and b0 < a1
            for rb, b0, b1 in zip(b.recording, b.start_s, b.stop_s, strict=True)
        )
        for ra, a0, a1 in zip(a.recording, a.start_s, a.stop_s, strict=True)
    ]
    assert got.tolist() == want


# --- SzCORE vs timescoring ----------------------------------------------------------------------


def _random_intervals(rng, duration_s, quantum):
    """Sorted disjoint events: short and long ones, close and far apart, some at the edges."""
    t = 0.0 if rng.random() < 0.3 else rng.exponential(200.0)
    out = []
    while True:
        length = rng.choice([rng.uniform(1, 60), rng.uniform(60, 900)], p=[0.7, 0.3])
        stop = min(t + length, duration_s)
        start, stop = round(t / quantum) * quantum, round(stop / quantum) * quantum
        if start >= duration_s or stop <= start:
            break
        out.append((float(start), float(stop)))
        if stop >= duration_s:
            break
        t = stop + rng.choice([rng.uniform(0.5, 90), rng.uniform(90, 1500)])
    return out


def _random_events(rng, n_recordings, duration_s, quantum=1e-4):
    return Events.from_lists(
        [_random_intervals(rng, duration_s, quantum) for _ in range(n_recordings)]
    )


def _timescoring(ref, hyp, duration_s, fs):
    n = round(duration_s * fs)
    return EventScoring(TsAnnotation(ref, fs, n), TsAnnotation(hyp, fs, n))


def _assert_same(ours, theirs):
    tp, n_ref, fp, duration_used = ours
    assert (tp, n_ref, fp) == (theirs.tp, theirs.refTrue, theirs.fp)
    assert duration_used == pytest.approx(theirs.numSamples / theirs.fs)


@pytest.mark.parametrize("seed", range(4))
def test_szcore_equals_timescoring_on_random_cases(seed):
    rng = np.random.default_rng(seed)
    for case in range(60):
        duration_s = float(rng.uniform(120, 7200))
        quantum = [1e-4, 0.25, 1.0][case % 3]
        ref = _random_intervals(rng, duration_s, quantum)
        hyp = _random_intervals(rng, duration_s, quantum)
        fs = [10, 1, 256][case % 3]
        if fs != 10:  # timescoring resamples from fs: give it the duration it will see
            duration_s = round(duration_s * fs) / fs
        _assert_same(szcore_recording(ref, hyp, duration_s), _timescoring(ref, hyp, duration_s, fs))


@pytest.mark.parametrize(
    ("ref", "hyp", "duration_s"),
    [
        ([(0.0, 12.0)], [(20.0, 30.0)], 300.0),  # reference at the start; hyp in its 60 s tail
        ([(280.0, 300.0)], [(245.0, 251.0)], 300.0),  # at the end; hyp in the 30 s before
        ([(100.0, 110.0)], [(40.0, 69.9)], 600.0),  # just outside the start tolerance
        ([(10.0, 1000.0)], [(700.0, 710.0)], 1200.0),  # long reference split into 4
        ([(10.0, 20.0), (100.0, 110.0)], [(105.0, 106.0)], 600.0),  # merged (gap 80 s < 90)
        ([(10.0, 20.0), (110.0, 120.0)], [(115.0, 116.0)], 600.0),  # not merged (gap 90 s)
        ([(50.0, 60.0)], [(0.0, 30.0), (35.0, 40.0), (400.0, 1300.0)], 1300.0),
        ([], [(0.0, 1300.0)], 1300.0),
        ([(0.0, 1300.0)], [], 1300.0),
        ([(3.05, 3.15)], [(3.1, 3.12)], 10.0),  # sub-sample events and 10 Hz rounding
        ([(130.0, 140.0)], [(10.0, 20.0)], 100.0),  # starts 30 s past the end: empty window
    ],
)
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # timescoring's 0/0
def test_szcore_equals_timescoring_on_edge_cases(ref, hyp, duration_s):
    theirs = _timescoring(ref, hyp, duration_s, fs=10)
    _assert_same(szcore_recording(ref, hyp, duration_s), theirs)
    s = score_szcore(Events.from_lists([ref]), Events.from_lists([hyp]), [duration_s])
    for ours, attr in [(s.sensitivity, "sensitivity"), (s.precision, "precision"), (s.f1, "f1")]:
        value = getattr(theirs, attr)
        assert (ours is None) if math.isnan(value) else ours == pytest.approx(value)
    assert s.fa_per_24h == pytest.approx(theirs.fpRate)


# --- szdet score ------------------------------------------------------------------------------


def _write(path, seizures, duration_s=600.0):
    write_annotation(path, term_events(seizures, duration_s), duration_s)


def test_score_command_on_two_files_prints_json_per_method(tmp_path, capsys):
    _write(tmp_path / "ref.csv_bi", [(10, 20), (30, 40)])
    _write(tmp_path / "hyp.csv_bi", [(15, 35)])
    argv = ["score", "--ref", str(tmp_path / "ref.csv_bi"), "--hyp", str(tmp_path / "hyp.csv_bi")]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"ovlp", "taes", "szcore"}
    for method in out.values():
        assert {"tp", "fn", "fp", "sensitivity", "precision", "f1", "fa_per_24h"} <= set(method)
    assert (out["taes"]["tp"], out["taes"]["fn"]) == pytest.approx((0.5, 1.5))
    assert out["ovlp"]["sensitivity"] == 1.0

    assert main([*argv, "--method", "taes"]) == 0
    table = capsys.readouterr().out
    assert "taes" in table and "ovlp" not in table and "0.2500" in table


def test_score_command_on_folders_matches_by_name(tmp_path, capsys):
    for side, events in [("ref", [[(10, 20)], [(100, 200)]]), ("hyp", [[], [(150, 160)]])]:
        _write(tmp_path / side / "x" / "a_s001_t000.csv_bi", events[0])
        _write(tmp_path / side / "b_s001_t000.csv_bi", events[1])  # another depth: name decides
    assert (
        main(
            [
                "score",
                "--ref",
                str(tmp_path / "ref"),
                "--hyp",
                str(tmp_path / "hyp"),
                "--method",
                "ovlp",
                "--json",
            ]
        )
        == 0
    )
    ovlp = json.loads(capsys.readouterr().out)["ovlp"]
    assert (ovlp["tp"], ovlp["fn"], ovlp["fp"]) == (1, 1, 0)
    assert ovlp["duration_s"] == 1200.0


def test_score_command_counts_a_missing_hypothesis_as_none_and_refuses_a_stray_one(
    tmp_path, capsys, caplog
):
    # szcore-evaluation scores a missing hypothesis as no detections: so do we, saying so.
    _write(tmp_path / "ref" / "a.csv_bi", [(10, 20)])
    _write(tmp_path / "ref" / "b.csv_bi", [(30, 40)])
    _write(tmp_path / "hyp" / "a.csv_bi", [(10, 20)])
    args = ["score", "--ref", str(tmp_path / "ref"), "--hyp", str(tmp_path / "hyp")]
    with caplog.at_level(logging.WARNING):
        assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["ovlp"]["tp"], out["ovlp"]["fn"], out["ovlp"]["fp"]) == (1, 1, 0)
    assert out["ovlp"]["duration_s"] == 1200.0
    assert out["no_hypothesis"] == [str(tmp_path / "ref" / "b.csv_bi")]
    [warning] = caplog.records
    assert "b.csv_bi" in warning.getMessage() and "no detections" in warning.getMessage()
    assert main(args) == 0
    assert "1 reference(s) without a usable hypothesis" in capsys.readouterr().out

    # A hypothesis with no reference would go unscored: refused, naming it.
    _write(tmp_path / "hyp" / "c.csv_bi", [])
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "c.csv_bi" in err[0] and err[0].startswith("szdet: error: ")


def test_score_command_refuses_mismatched_durations_and_bad_files(tmp_path, capsys):
    _write(tmp_path / "ref.csv_bi", [(10, 20)], duration_s=600.0)
    _write(tmp_path / "hyp.csv_bi", [(10, 20)], duration_s=900.0)
    assert (
        main(
            ["score", "--ref", str(tmp_path / "ref.csv_bi"), "--hyp", str(tmp_path / "hyp.csv_bi")]
        )
        == 1
    )
    assert "hyp.csv_bi: duration 900.00 s differs" in capsys.readouterr().err
    (tmp_path / "bad.csv_bi").write_text("not an annotation\n")
    assert (
        main(
            ["score", "--ref", str(tmp_path / "ref.csv_bi"), "--hyp", str(tmp_path / "bad.csv_bi")]
        )
        == 1
    )
    assert "bad.csv_bi" in capsys.readouterr().err


def test_score_reads_seizure_rows_of_any_seizure_label(tmp_path, capsys):
    write_annotation(tmp_path / "ref.csv_bi", [Event("TERM", 10, 20, "fnsz")], 600.0)
    _write(tmp_path / "hyp.csv_bi", [(12, 14)])
    assert (
        main(
            [
                "score",
                "--ref",
                str(tmp_path / "ref.csv_bi"),
                "--hyp",
                str(tmp_path / "hyp.csv_bi"),
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["ovlp"]["tp"] == 1


def test_touching_reference_events_are_scored_as_two(tmp_path, capsys):
    # Two TERM seizure rows that meet (20 s) are two events for NEDC, not one merged event.
    _write(tmp_path / "ref.csv_bi", [(10, 20), (20, 30)])
    _write(tmp_path / "hyp.csv_bi", [(12, 13), (50, 55), (55, 60)])
    args = ["score", "--ref", str(tmp_path / "ref.csv_bi"), "--hyp", str(tmp_path / "hyp.csv_bi")]
    assert main([*args, "--method", "all", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [result["ovlp"][k] for k in ("tp", "fn", "fp")] == [1, 1, 2]
    assert [result["taes"][k] for k in ("tp", "fn", "fp")] == pytest.approx([0.1, 1.9, 2.0])


def test_score_clips_events_to_the_recording_and_warns_about_the_hypothesis(
    tmp_path, capsys, caplog
):
    # An alarm past the file's end cannot have happened: scored up to the end (590 s), not 86,400 s.
    ref, hyp = tmp_path / "ref.csv_bi", tmp_path / "hyp.csv_bi"
    write_annotation(ref, [Event("TERM", 100, 120, "seiz"), Event("TERM", 595, 700, "seiz")], 590)
    past_end = [Event("TERM", 580, 86_400, "seiz"), Event("TERM", 600, 650, "seiz")]
    write_annotation(hyp, past_end, 590.0)
    with caplog.at_level(logging.WARNING, logger="szdet.evaluate.score_files"):
        assert main(["score", "--ref", str(ref), "--hyp", str(hyp), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for method in ("ovlp", "taes"):
        assert (out[method]["fn"], out[method]["fp"]) == (1, 1)  # the 600-650 s alarm is dropped
    assert out["ovlp"]["fa_per_24h"] == pytest.approx(86_400 / 590)
    assert out["szcore"]["fp"] == 1
    [warning] = caplog.records
    assert str(hyp) in warning.getMessage() and "past the recording's end" in warning.getMessage()
