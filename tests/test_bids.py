"""BIDS trees (epilepsy2bids / SzCORE layout) as cache input: names, events, reuse, and the
subject-disjoint splits, hashed or from a user's file."""

import json
from pathlib import Path

import pytest

from montage_support import write_referential_edf
from szdet.cli import main
from szdet.data.bids import (
    SPLIT_PERCENT,
    SplitsFileError,
    assign_splits,
    hashed_split,
    read_splits_file,
)
from szdet.data.hed_tsv import write_events_tsv
from szdet.data.manifest import CacheSplit

SECONDS = 20.0


def _recording(root: Path, subject: str, run: int, seizures=((5.0, 9.0, 1.0),)) -> Path:
    folder = root / subject / "ses-01" / "eeg"
    name = f"{subject}_ses-01_task-szMonitoring_run-{run:02d}"
    edf = write_referential_edf(
        folder / f"{name}_eeg.edf", SECONDS, 256.0, "{}-Avg", seed=run, modern=True
    )
    write_events_tsv(folder / f"{name}_events.tsv", list(seizures), SECONDS, None)
    return edf


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "bids"
    root.mkdir()
    (root / "dataset_description.json").write_text('{"Name": "tiny", "BIDSVersion": "1.9.0"}')
    _recording(root, "sub-01", 0)
    _recording(root, "sub-01", 1, seizures=())
    _recording(root, "sub-02", 0)
    _recording(root, "sub-03", 0)
    return root


def _build(tree: Path, out: Path, split: str, splits: Path | None, *more: str) -> int:
    argv = ["cache", "build", "--data-root", str(tree), "--split", split, "--out", str(out)]
    return main([*argv, *(["--splits", str(splits)] if splits else []), *more])


def _splits(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_bids_tree_builds_with_subjects_sessions_and_sz_events(tree, tmp_path, capsys):
    splits = _splits(
        tmp_path / "mine.tsv", "subject\tsplit\nsub-01\ttrain\n02\ttrain\nsub-03\tdev\n"
    )
    assert _build(tree, tmp_path / "cache", "train", splits) == 0
    out = capsys.readouterr().out
    assert f"3 subjects: 2 train, 1 dev, 0 eval -> {tmp_path}/cache/splits.tsv" in out
    assert (tmp_path / "cache" / "splits.tsv").read_text() == (
        "subject\tsplit\nsub-01\ttrain\nsub-02\ttrain\nsub-03\tdev\n"
    )
    split = CacheSplit.open(tmp_path / "cache", "train")
    got = [(r.name, r.patient, r.session, r.setup, r.events) for r in split.recordings]
    assert got == [
        ("sub-01_ses-01_task-szMonitoring_run-00", "sub-01", "ses-01", "bids", [(5.0, 9.0)]),
        ("sub-01_ses-01_task-szMonitoring_run-01", "sub-01", "ses-01", "bids", []),
        ("sub-02_ses-01_task-szMonitoring_run-00", "sub-02", "ses-01", "bids", [(5.0, 9.0)]),
    ]
    assert split.recordings[0].file == "sub-01/sub-01_ses-01_task-szMonitoring_run-00.npy"
    assert split.recordings[0].duration_s == SECONDS
    assert split.signal(0).shape == (19, 256 * 20)


def test_the_events_tsv_is_part_of_the_source_identity(tree, tmp_path, capsys):
    splits = _splits(tmp_path / "s.tsv", "sub-01\ttrain\nsub-02\ttrain\nsub-03\teval\n")
    assert _build(tree, tmp_path / "cache", "train", splits) == 0
    record = tmp_path / "cache/train/sub-02/sub-02_ses-01_task-szMonitoring_run-00.json"
    sources = json.loads(record.read_text())["sources"]
    assert set(sources) == {
        "sub-02_ses-01_task-szMonitoring_run-00_eeg.edf",
        "sub-02_ses-01_task-szMonitoring_run-00_eeg.edf sha256",
        "sub-02_ses-01_task-szMonitoring_run-00_events.tsv",
    }
    tsv = tree / "sub-02/ses-01/eeg/sub-02_ses-01_task-szMonitoring_run-00_events.tsv"
    tsv.write_text(tsv.read_text().replace("5.00\t4.00", "6.00\t3.00"))  # same size
    capsys.readouterr()
    assert _build(tree, tmp_path / "cache", "train", splits) == 0
    assert "3 recordings (1 built, 2 reused)" in capsys.readouterr().out
    events = {r.name: r.events for r in CacheSplit.open(tmp_path / "cache", "train").recordings}
    assert events["sub-02_ses-01_task-szMonitoring_run-00"] == [(6.0, 9.0)]


def test_a_recording_without_its_events_file_is_skipped_with_the_reason(tree, tmp_path):
    (tree / "sub-03/ses-01/eeg/sub-03_ses-01_task-szMonitoring_run-00_events.tsv").unlink()
    splits = _splits(tmp_path / "s.tsv", "sub-01\tdev\nsub-02\tdev\nsub-03\ttrain\n")
    assert _build(tree, tmp_path / "cache", "train", splits) == 0
    manifest = json.loads((tmp_path / "cache/train/manifest.json").read_text())
    assert manifest["skipped"] == [
        {
            "file": "sub-03/ses-01/eeg/sub-03_ses-01_task-szMonitoring_run-00_eeg.edf",
            "reason": "no sub-03_ses-01_task-szMonitoring_run-00_events.tsv beside it",
        }
    ]


def test_default_splits_hash_the_subject_id_stably_and_disjointly(tree, tmp_path, capsys):
    subjects = [f"sub-{i:04d}" for i in range(3000)]
    shares = {s: sum(hashed_split(x) == s for x in subjects) / 3000 for s, _ in SPLIT_PERCENT}
    for split, percent in SPLIT_PERCENT:
        assert abs(shares[split] - percent / 100) < 0.03
    assert hashed_split("sub-01") == hashed_split("sub-01")
    assert assign_splits(tree, None) == {s: hashed_split(s) for s in ("sub-01", "sub-02", "sub-03")}

    built: dict[str, set[str]] = {}
    for split in ("train", "dev", "eval"):
        if split in assign_splits(tree, None).values():
            assert _build(tree, tmp_path / "cache", split, None) == 0
            built[split] = {
                r.patient for r in CacheSplit.open(tmp_path / "cache", split).recordings
            }
        else:  # an empty split is an error naming the tree and the assignment
            assert _build(tree, tmp_path / "cache", split, None) == 1
            assert f"{tree}: no *.edf recordings in split {split}" in capsys.readouterr().err
    assert sorted(s for subjects in built.values() for s in subjects) == [
        "sub-01",
        "sub-02",
        "sub-03",
    ]


def test_a_build_that_would_move_a_subject_to_another_split_is_refused(tree, tmp_path, capsys):
    first = _splits(tmp_path / "a.tsv", "sub-01\ttrain\nsub-02\ttrain\nsub-03\tdev\n")
    second = _splits(tmp_path / "b.tsv", "sub-01\tdev\nsub-02\ttrain\nsub-03\tdev\n")
    assert _build(tree, tmp_path / "cache", "train", first) == 0
    capsys.readouterr()
    assert _build(tree, tmp_path / "cache", "dev", second) == 1
    err = capsys.readouterr().err
    assert "splits.tsv: an earlier build put sub-01 in train, this one in dev" in err
    assert not (tmp_path / "cache" / "dev").exists()
    # The recorded file pins the assignment for the next split.
    assert _build(tree, tmp_path / "cache", "dev", tmp_path / "cache" / "splits.tsv") == 0


@pytest.mark.parametrize(
    "text, problem",
    [
        ("sub-01\ttrain\nsub-02\ttest\n", r"line 2: unknown split 'test' \(known: train, dev, eval\)"),
        ("sub-01\ttrain\nsub-02\tdev\n01\teval\n", r"line 3: subject sub-01 listed again \(first on line 1\)"),
        ("sub-01\ttrain\tx\n", r"line 1: expected 'subject<TAB>split', got"),
        ("sub-01\ttrain\nsub-02\tdev\n", r"subject sub-03 of .*bids is not listed"),
    ],
)  # fmt: skip
def test_a_bad_splits_file_is_one_line_naming_the_file_and_line(tree, tmp_path, text, problem):
    path = _splits(tmp_path / "s.tsv", text)
    with pytest.raises(SplitsFileError, match=rf"^{path}: {problem}"):
        assign_splits(tree, path)


def test_a_splits_file_may_be_csv_with_a_header_and_extra_subjects(tree, tmp_path):
    path = _splits(
        tmp_path / "s.csv", "Subject,Split\nsub-01,train\n02,dev\n\nsub-03,eval\nsub-09,dev\n"
    )
    assert read_splits_file(path)["sub-09"] == "dev"
    assert assign_splits(tree, path) == {"sub-01": "train", "sub-02": "dev", "sub-03": "eval"}


def test_splits_file_for_a_tusz_corpus_is_refused(tmp_path, capsys):
    (tmp_path / "corpus" / "edf" / "train").mkdir(parents=True)
    splits = _splits(tmp_path / "s.tsv", "sub-01\ttrain\n")
    assert _build(tmp_path / "corpus", tmp_path / "cache", "train", splits) == 1
    assert "--splits assigns BIDS subjects" in capsys.readouterr().err
