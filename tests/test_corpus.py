"""Corpus discovery in both layouts: which layout a root holds, EDFs of any suffix case, symlinked
folders (loops included), dangling links, annotations of another recording, an empty split, and
the seizure events read beside an EDF."""

import json
import os
import time
from pathlib import Path

import pytest

from edf_factory import write_recording
from montage_support import write_referential_edf
from szdet.cli import main
from szdet.config import PreprocessConfig
from szdet.data.cache import build_cache, verify_cache
from szdet.data.corpus import annotated_seizures, detect_layout, find_split
from szdet.data.hed_tsv import write_events_tsv
from szdet.data.tusz import (
    AnnotationError,
    Event,
    RecordingFiles,
    check_patient_disjoint,
    clip_intervals,
    find_recordings,
    tusz_recording,
    write_annotation,
)
from szdet.errors import UserError

PRE = PreprocessConfig()


def _touch_tusz(root: Path, split: str, patient: str, token: str = "t000", suffix=".edf") -> Path:
    folder = root / "edf" / split / patient / "s001_2010" / "01_tcp_ar"
    folder.mkdir(parents=True, exist_ok=True)
    edf = folder / f"{patient}_s001_{token}{suffix}"
    edf.write_bytes(b"")
    edf.with_suffix(".csv_bi").write_text("")
    return edf


def _touch_bids(root: Path, subject: str, run: int = 0, suffix: str = ".edf") -> Path:
    folder = root / subject / "ses-01" / "eeg"
    folder.mkdir(parents=True, exist_ok=True)
    edf = folder / f"{subject}_ses-01_task-szMonitoring_run-{run:02d}_eeg{suffix}"
    edf.write_bytes(b"")
    return edf


# --- layout -----------------------------------------------------------------------------------


def test_the_layout_is_detected_and_a_root_of_neither_is_named(tmp_path):
    _touch_tusz(tmp_path / "tusz", "dev", "aaaaaaaa")
    assert detect_layout(tmp_path / "tusz") == detect_layout(tmp_path / "tusz" / "edf") == "tusz"
    (tmp_path / "described").mkdir()
    (tmp_path / "described" / "dataset_description.json").write_text("{}")
    assert detect_layout(tmp_path / "described") == "bids"
    _touch_bids(tmp_path / "subjects", "sub-01")
    assert detect_layout(tmp_path / "subjects") == "bids"
    (tmp_path / "other").mkdir()
    with pytest.raises(UserError, match=r"other: neither a TUSZ corpus .* nor a BIDS tree"):
        detect_layout(tmp_path / "other")
    with pytest.raises(UserError, match=r"missing: no such data folder"):
        detect_layout(tmp_path / "missing")


# --- discovery --------------------------------------------------------------------------------


def test_an_edf_suffix_of_any_case_is_found_in_both_layouts(tmp_path):
    upper = _touch_tusz(tmp_path / "tusz", "train", "aaaaaaaa", suffix=".EDF")
    mixed = _touch_tusz(tmp_path / "tusz", "train", "aaaaaaab", suffix=".Edf")
    found = find_recordings(tmp_path / "tusz", "train")
    assert [f.edf for f in found] == [upper, mixed]
    assert found[0].name == "aaaaaaaa_s001_t000"
    assert found[0].csv_bi == upper.with_suffix(".csv_bi")  # TUSZ names keep their case

    edf = _touch_bids(tmp_path / "bids", "sub-01", suffix=".EDF")
    split = find_split(tmp_path / "bids", "train", _splits(tmp_path, "sub-01\ttrain\n"))
    assert [(f.edf, f.name) for f in split.recordings] == [
        (edf, "sub-01_ses-01_task-szMonitoring_run-00")
    ]


def _splits(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "splits.tsv"
    path.write_text(text)
    return path


def test_symlinked_folders_are_followed_and_a_loop_ends(tmp_path):
    corpus, elsewhere = tmp_path / "corpus", tmp_path / "other_disk"
    _touch_tusz(corpus, "train", "aaaaaaaa")
    linked = _touch_tusz(elsewhere, "train", "aaaaaaab")
    (corpus / "edf" / "train" / "aaaaaaab").symlink_to(elsewhere / "edf" / "train" / "aaaaaaab")
    loop = corpus / "edf" / "train" / "aaaaaaaa" / "s001_2010" / "01_tcp_ar" / "back"
    loop.symlink_to(corpus / "edf" / "train", target_is_directory=True)
    started = time.monotonic()
    found = find_recordings(corpus, "train")
    assert time.monotonic() - started < 5
    assert [f.patient for f in found] == ["aaaaaaaa", "aaaaaaab"]
    assert found[1].edf.name == linked.name
    assert found[1].edf.is_relative_to(corpus)  # named by its path inside the corpus

    # The disjointness check walks the same way: a patient reached only through a link counts.
    (corpus / "edf" / "dev").mkdir()
    (corpus / "edf" / "dev" / "aaaaaaab").symlink_to(elsewhere / "edf" / "train" / "aaaaaaab")
    with pytest.raises(UserError, match="patient aaaaaaab appears in splits dev, train"):
        check_patient_disjoint(corpus)


def test_a_dangling_link_is_skipped_naming_it_and_the_rest_are_built(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    write_recording(corpus, "train", "aaaaaaaa", seconds=20, seizures=((5.0, 9.0),))
    folder = corpus / "edf" / "train" / "aaaaaaab" / "s001_2010" / "01_tcp_ar"
    folder.mkdir(parents=True)
    (folder / "aaaaaaab_s001_t000.edf").symlink_to(tmp_path / "unmounted" / "x.edf")
    report = build_cache(corpus, "train", tmp_path / "cache", PRE, 1, None, None)
    assert report.built == 1
    assert report.skipped == [
        {
            "file": "train/aaaaaaab/s001_2010/01_tcp_ar/aaaaaaab_s001_t000.edf",
            "reason": f"dangling symlink (to {tmp_path / 'unmounted' / 'x.edf'})",
        }
    ]
    assert build_cache(corpus, "train", tmp_path / "cache", PRE, 1, None, None).reused == 1


def test_discovery_of_2000_files_is_linear_and_quick(tmp_path):
    for p in range(200):
        for t in range(10):
            _touch_tusz(tmp_path, "train", f"p{p:07d}", f"t{t:03d}")
    for s in range(100):
        for r in range(10):
            _touch_bids(tmp_path / "bids", f"sub-{s:03d}", r)
    open_fds = len(os.listdir("/proc/self/fd"))
    started = time.monotonic()
    assert len(find_recordings(tmp_path, "train")) == 2000
    check_patient_disjoint(tmp_path)
    tusz_s = time.monotonic() - started
    started = time.monotonic()
    assigned = [find_split(tmp_path / "bids", s).recordings for s in ("train", "dev", "eval")]
    bids_s = time.monotonic() - started
    assert sum(map(len, assigned)) == 1000
    print(f"discovery: 2000 TUSZ files {tusz_s:.2f} s (walked twice), 1000 BIDS {bids_s:.2f} s")
    assert tusz_s < 10 and bids_s < 10
    assert len(os.listdir("/proc/self/fd")) <= open_fds  # nothing left open


# --- an empty split ---------------------------------------------------------------------------


def test_building_an_empty_split_exits_1_naming_the_folder(tmp_path, capsys):
    _touch_tusz(tmp_path / "corpus", "train", "aaaaaaaa")
    (tmp_path / "corpus" / "edf" / "dev").mkdir()
    argv = ["cache", "build", "--data-root", str(tmp_path / "corpus"), "--split", "dev"]
    assert main([*argv, "--out", str(tmp_path / "cache")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{tmp_path}/corpus/edf/dev: no *.edf recordings in this split")
    assert "\n" not in err
    assert not (tmp_path / "cache").exists()


def test_verify_reports_a_manifest_of_zero_recordings_without_expect(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    write_recording(corpus, "train", "aaaaaaaa", seconds=20, seizures=())
    build_cache(corpus, "train", tmp_path / "cache", PRE, 1, None, None)
    manifest = tmp_path / "cache" / "train" / "manifest.json"
    emptied = json.loads(manifest.read_text()) | {"recordings": []}
    manifest.write_text(json.dumps(emptied))
    ok, _ = verify_cache(tmp_path / "cache", {})
    assert not ok
    assert (
        f"{tmp_path}/cache/train: its manifest.json holds no recordings" in capsys.readouterr().err
    )


# --- annotations and their duration -----------------------------------------------------------


def test_events_prefer_csv_bi_and_are_clipped(tmp_path):
    edf = write_recording(tmp_path, "train", "aaaaaaaa", seconds=60, seizures=((10.0, 20.0),))
    write_annotation(edf.with_suffix(".csv_bi"), [Event("TERM", 50.0, 75.0, "seiz")], 60.0)
    events, notes = annotated_seizures(tusz_recording("train", edf)).events_for(60.0)
    assert events == [(50.0, 60.0)]
    assert notes == ["annotation ends at 75.00 s, past the recording's end (60.00 s): clipped"]


def test_events_fall_back_to_the_csv_union_over_channels(tmp_path):
    edf = tmp_path / "r.edf"
    rows = [
        Event("FP1-F7", 10.0, 20.0, "fnsz"),
        Event("F7-T3", 15.0, 25.0, "fnsz"),
        Event("T3-T5", 40.0, 45.0, "cpsz"),
        Event("T3-T5", 0.0, 40.0, "bckg"),
    ]
    write_annotation(tmp_path / "r.csv", rows, 60.0)
    files = RecordingFiles("train", edf, "r", "r", "s001", "01_tcp_ar", csv=tmp_path / "r.csv")
    annotated = annotated_seizures(files)
    assert clip_intervals(annotated.seizures, 60.0) == [(10.0, 25.0), (40.0, 45.0)]
    assert annotated.duration_s == 60.0


def test_events_without_any_annotation_file_are_an_error(tmp_path):
    files = RecordingFiles("train", tmp_path / "r.edf", "r", "r", "s001", "01_tcp_ar")
    with pytest.raises(AnnotationError, match=r"r\.edf: no \.csv_bi or \.csv annotation file"):
        annotated_seizures(files)


@pytest.mark.parametrize("annotated_s, refused", [(60.9, False), (61.2, True), (58.8, True)])
def test_an_annotation_of_another_duration_is_refused_naming_both(tmp_path, annotated_s, refused):
    edf = write_referential_edf(tmp_path / "sub-01_eeg.edf", 60.0, 256.0, "{}-Avg", modern=True)
    write_events_tsv(tmp_path / "sub-01_events.tsv", [(10.0, 20.0, 1.0)], annotated_s, None)
    files = RecordingFiles(
        "train", edf, "sub-01", "sub-01", "", "bids", events_tsv=tmp_path / "sub-01_events.tsv"
    )
    annotated = annotated_seizures(files)
    if not refused:
        assert annotated.events_for(60.0) == ([(10.0, 20.0)], [])
        return
    with pytest.raises(
        AnnotationError,
        match=rf"sub-01_events.tsv: annotated duration {annotated_s:.2f} s differs from the "
        r"EDF's 60.00 s",
    ):
        annotated.events_for(60.0)
