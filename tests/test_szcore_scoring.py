"""`szdet score` on SzCORE events TSVs: every challenge number equal to szcore-evaluation's own."""

import json
import math

import numpy as np
import pytest
from epilepsy2bids.annotations import Annotations
from szcore_evaluation.evaluate import evaluate_dataset
from timescoring.annotations import Annotation as TsAnnotation
from timescoring.scoring import EventScoring, SampleScoring

from szdet.cli import main
from szdet.data.hed_tsv import read_events_tsv, write_events_tsv
from szdet.evaluate.score_files import subject_of
from szdet.evaluate.szcore import ChallengeRecording, recording_scores

# timescoring divides by zero for an empty reference window, as scoring.py's tests note
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


def _random_events(rng, duration_s):
    """Sorted disjoint events at 10 ms: empty recordings, events at both ends, gaps under 90 s,
    events over 5 min, sub-second ones."""
    if rng.random() < 0.2:
        return []
    t = 0.0 if rng.random() < 0.3 else float(rng.exponential(150.0))
    out = []
    while t < duration_s:
        length = rng.choice([rng.uniform(0.2, 3), rng.uniform(3, 60), rng.uniform(300, 700)])
        stop = min(t + length, duration_s) if rng.random() < 0.9 else duration_s
        start, stop = round(t, 2), round(stop, 2)
        if stop > start:
            out.append((start, stop, float(rng.uniform(0.3, 1))))
        t = stop + rng.choice([rng.uniform(0.5, 90), rng.uniform(90, 1200)])
    return out


def _write_trees(root, seed):
    """A BIDS-shaped reference tree and hypothesis tree; some hypotheses missing, one of another
    recordingDuration (both count as no detections there)."""
    rng = np.random.default_rng(seed)
    names = []
    for subject in range(4):
        for session in range(int(rng.integers(1, 3))):
            for run in range(int(rng.integers(1, 3))):
                sub, ses = f"sub-{subject:02d}", f"ses-{session:02d}"
                name = f"{sub}_{ses}_task-szMonitoring_run-{run:02d}_events.tsv"
                rel = f"{sub}/{ses}/eeg/{name}"
                duration_s = round(float(rng.uniform(100, 4000)), 2)
                for side in ("ref", "hyp"):
                    path = root / side / rel
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_events_tsv(path, _random_events(rng, duration_s), duration_s, None)
                names.append(rel)
    for side in ("ref", "hyp"):  # a subject without a seizure or an alarm: NaN ratios there
        write_events_tsv(root / side / "sub-99" / "sub-99_run-00_events.tsv", [], 321.0, None)
    (root / "hyp" / names[1]).unlink()
    ref = read_events_tsv(root / "ref" / names[2])  # a hypothesis right but for its duration
    events = [(a, b, 0.9) for a, b in ref.seizure_intervals()] or [(0.0, 5.0, 0.9)]
    write_events_tsv(root / "hyp" / names[2], events, ref.recording_duration_s + 1.5, None)
    return names


def _ours(root, capsys):
    assert main(["score", "--ref", str(root / "ref"), "--hyp", str(root / "hyp"), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("seed", range(3))
def test_challenge_numbers_equal_szcore_evaluation(tmp_path, capsys, seed):
    _write_trees(tmp_path, seed)
    theirs = evaluate_dataset(tmp_path / "ref", tmp_path / "hyp", tmp_path / "theirs.json")
    capsys.readouterr()  # its prints about the mismatched file
    ours = _ours(tmp_path, capsys)["challenge"]
    assert ours["subjects"] == 5
    for level in ("sample_results", "event_results"):
        assert set(ours[level]) == set(theirs[level])
        for key, value in theirs[level].items():
            if math.isnan(value):
                assert ours[level][key] is None, (level, key)
            else:
                assert ours[level][key] == pytest.approx(value, abs=1e-9, rel=0), (level, key)


def _their_masks(ref_tsv, hyp_tsv):
    ref = TsAnnotation(Annotations.loadTsv(ref_tsv).getMask(1), 1)
    return ref, TsAnnotation(Annotations.loadTsv(hyp_tsv).getMask(1), 1)


def test_nan_where_no_subject_defines_a_ratio(tmp_path, capsys):
    for side, events in (("ref", []), ("hyp", [])):
        write_events_tsv(tmp_path / side / "sub-01" / "sub-01_events.tsv", events, 600.0, None)
    theirs = evaluate_dataset(tmp_path / "ref", tmp_path / "hyp", tmp_path / "theirs.json")
    ours = _ours(tmp_path, capsys)["challenge"]
    for level in ("sample_results", "event_results"):
        for key in ("sensitivity", "precision", "f1"):
            assert math.isnan(theirs[level][key]) and ours[level][key] is None
        assert ours[level]["fpRate"] == theirs[level]["fpRate"] == 0.0


@pytest.mark.parametrize("seed", range(3, 6))
def test_sample_and_event_counts_equal_timescoring_per_recording(tmp_path, seed):
    for rel in _write_trees(tmp_path, seed):
        ref_tsv, hyp_tsv = tmp_path / "ref" / rel, tmp_path / "hyp" / rel
        if not hyp_tsv.exists():
            continue
        ref, hyp = read_events_tsv(ref_tsv), read_events_tsv(hyp_tsv)
        if int(ref.recording_duration_s) != int(hyp.recording_duration_s):
            continue
        recording = ChallengeRecording(
            "s", ref.seizure_intervals(), hyp.seizure_intervals(), ref.recording_duration_s
        )
        sample, event = recording_scores(recording)
        ts_ref, ts_hyp = _their_masks(ref_tsv, hyp_tsv)
        their_sample, their_event = SampleScoring(ts_ref, ts_hyp), EventScoring(ts_ref, ts_hyp)
        for ours, theirs in ((sample, their_sample), (event, their_event)):
            assert (ours.tp, ours.tp + ours.fn, ours.fp) == (
                theirs.tp,
                theirs.refTrue,
                theirs.fp,
            ), rel
            assert ours.duration_s == theirs.numSamples / theirs.fs


def test_tsv_scores_print_both_tables_and_warn_of_what_scores_as_nothing(tmp_path, capsys):
    names = _write_trees(tmp_path, 7)
    assert main(["score", "--ref", str(tmp_path / "ref"), "--hyp", str(tmp_path / "hyp")]) == 0
    out = capsys.readouterr().out
    assert "ovlp" in out and "taes" in out and "SzCORE" in out and "over 5 subject(s)" in out
    assert "2 reference(s) without a usable hypothesis" in out
    result = _ours(tmp_path, capsys)
    assert sorted(result["no_hypothesis"]) == sorted(str(tmp_path / "ref" / n) for n in names[1:3])
    durations = [read_events_tsv(tmp_path / "ref" / n).recording_duration_s for n in names]
    assert result["szcore"]["duration_s"] == pytest.approx(sum(durations) + 321.0)


def test_formats_never_mix_and_a_both_folder_scores_by_the_reference(tmp_path, capsys):
    write_events_tsv(tmp_path / "ref" / "x_events.tsv", [(10.0, 20.0, 0.9)], 600.0, None)
    write_events_tsv(tmp_path / "hyp" / "x_events.tsv", [(12.0, 30.0, 0.8)], 600.0, None)
    (tmp_path / "hyp" / "x.csv_bi").write_text("ignored: the reference is a TSV\n")
    args = ["score", "--ref", str(tmp_path / "ref"), "--hyp", str(tmp_path / "hyp"), "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["ovlp"]["tp"] == 1

    (tmp_path / "hyp" / "x_events.tsv").unlink()
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds .csv_bi files, the reference _events.tsv ones" in err[0]
    ref_file = str(tmp_path / "ref" / "x_events.tsv")
    assert main(["score", "--ref", ref_file, "--hyp", str(tmp_path / "hyp" / "x.csv_bi")]) == 1
    assert "not a _events.tsv file like the reference" in capsys.readouterr().err


def test_subject_is_the_sub_folder_else_the_name_prefix(tmp_path):
    root = tmp_path / "bids"
    assert subject_of(root / "sub-07/ses-01/eeg/sub-07_ses-01_events.tsv", root) == "sub-07"
    assert subject_of(root / "flat/sub-03_ses-01_run-00_events.tsv", root) == "sub-03"
    assert subject_of(tmp_path / "x_events.tsv", None) == "x"


def test_a_hypothesis_past_recording_duration_is_clipped_as_szcore_evaluation_scores_it(
    tmp_path, capsys, caplog
):
    """An alarm running past recordingDuration, and one starting after it: clipped and dropped
    with a warning, and the run goes on to szcore-evaluation's own numbers."""
    for sub, hyp in (("sub-01", [(150.0, 180.0, 0.9), (550.0, 700.0, 0.8), (620.0, 650.0, 0.7)]),
                     ("sub-02", [(10.0, 40.0, 0.9)])):  # fmt: skip
        write_events_tsv(tmp_path / "ref" / sub / f"{sub}_events.tsv", [(100.0, 200.0, 1.0)],
                         600.0, None)  # fmt: skip
        write_events_tsv(tmp_path / "hyp" / sub / f"{sub}_events.tsv", hyp, 600.0, None)
    theirs = evaluate_dataset(tmp_path / "ref", tmp_path / "hyp", tmp_path / "theirs.json")
    with caplog.at_level("WARNING", logger="szdet.evaluate.score_files"):
        ours = _ours(tmp_path, capsys)
    assert (
        "past the recording's end (600.00 s)" in caplog.text and "sub-01_events.tsv" in caplog.text
    )
    for level in ("sample_results", "event_results"):
        for key, value in theirs[level].items():
            assert ours["challenge"][level][key] == pytest.approx(value, abs=1e-9, rel=0)
    assert ours["ovlp"]["fp"] == 2  # 550-600 s and sub-02's; the one after the end is dropped
