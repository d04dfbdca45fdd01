"""The cache end to end on small corpora: build, verify, resume after kill -9, shards, bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from edf_factory import write_corpus, write_recording
from szdet.cli import main
from szdet.config import CHANNELS_19, PreprocessConfig
from szdet.data.cache import build_cache, verify_cache
from szdet.data.manifest import CacheSplit, merge_shards
from szdet.data.tusz import Event, write_annotation
from szdet.errors import UserError

PRE = PreprocessConfig()
PATIENTS = {"train": ["aaaaaaaa", "aaaaaaab", "aaaaaaac"], "dev": ["aaaaaaad"]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """3 train patients x 2 recordings and 1 dev patient, 2 minutes each at 250/256/400/512 Hz."""
    return write_corpus(tmp_path_factory.mktemp("corpus"), PATIENTS, recordings=2, seconds=120)


def _build(corpus: Path, out: Path, split: str = "train", **kwargs):
    args = {"preprocess": PRE, "workers": 1, "shard": None, "max_recordings": None} | kwargs
    return build_cache(data_root=corpus, split=split, out=out, **args)


def _manifest(out: Path, split: str = "train") -> dict:
    return json.loads((out / split / "manifest.json").read_text())


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


# --- build and read back ----------------------------------------------------------------------


def test_build_writes_float16_arrays_and_a_complete_manifest(corpus, tmp_path, capsys):
    report = _build(corpus, tmp_path)
    assert (report.built, report.reused, report.skipped) == (6, 0, [])
    assert "cache train: 6 recordings (6 built, 0 reused), 0 skipped" in capsys.readouterr().out
    manifest = _manifest(tmp_path)
    assert manifest["format"] == "szdet-cache" and manifest["channels"] == list(CHANNELS_19)
    assert manifest["montage"] == "referential"
    assert manifest["preprocess_hash"] == PRE.fingerprint("referential")
    assert manifest["preprocess"] == PRE.model_dump(mode="json")
    record = manifest["recordings"][0]
    assert record["file"] == "aaaaaaaa/aaaaaaaa_s001_t000.npy"
    assert (record["patient"], record["session"], record["setup"]) == (
        "aaaaaaaa",
        "s001_2010",
        "01_tcp_ar",
    )
    assert record["events"] == [[40.0, 70.0]] and record["duration_s"] == 120.0
    assert (
        record["source_bytes"]
        == (corpus / "edf/train/aaaaaaaa/s001_2010/01_tcp_ar/aaaaaaaa_s001_t000.edf").stat().st_size
    )

    array = np.load(tmp_path / "train" / record["file"], mmap_mode="r")
    assert array.dtype == np.float16 and array.shape == (19, record["n_samples"]) == (19, 120 * 256)
    hours = sum(r["duration_s"] for r in manifest["recordings"]) / 3600
    assert sum(r["bytes"] for r in manifest["recordings"]) / hours <= 40e6


def test_cache_split_opens_memory_maps_matching_the_preprocessing(corpus, tmp_path):
    _build(corpus, tmp_path, max_recordings=2)
    split = CacheSplit.open(tmp_path, "train")
    assert len(split.recordings) == 2 and split.sample_rate_hz == 256.0
    assert split.preprocess_hash == PRE.fingerprint("referential")
    signal0 = split.signal(0)
    assert isinstance(signal0, np.memmap) and not signal0.flags.writeable
    assert split.signal(0) is signal0  # opened once per process
    from szdet.data.edf import load_edf

    source = corpus / "edf/train/aaaaaaaa/s001_2010/01_tcp_ar/aaaaaaaa_s001_t000.edf"
    np.testing.assert_allclose(signal0, load_edf(source, PRE).signal, atol=1e-2)
    assert len(CacheSplit.open(tmp_path, "train", max_recordings=1).recordings) == 1


def test_open_refuses_missing_unmerged_and_foreign_caches(corpus, tmp_path):
    with pytest.raises(UserError, match=r"train: no cache here"):
        CacheSplit.open(tmp_path, "train")
    _build(corpus, tmp_path, shard=(0, 2))
    with pytest.raises(UserError, match=r"incomplete cache, 1 shard manifest\(s\) not merged"):
        CacheSplit.open(tmp_path, "train")
    _build(corpus, tmp_path)
    path = tmp_path / "train" / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps(manifest | {"format_version": 1}))  # v1: "montage", not "setup"
    with pytest.raises(UserError) as e:
        CacheSplit.open(tmp_path, "train")
    assert str(e.value) == (
        f"{path}: cache format szdet-cache v1, expected szdet-cache v2; rebuild the cache"
    )


def test_build_reads_both_paths_from_the_config_and_a_flag_overrides_one(corpus, tmp_path):
    # paths.data_root and paths.cache_dir own where the corpus and cache are; --out is only sugar
    # for --set paths.cache_dir, and the config's notch (a setting) still applies to that cache.
    config = tmp_path / "c.yaml"
    config.write_text(
        f"paths:\n  data_root: {corpus}\n  cache_dir: {tmp_path / 'cache'}\n"
        "preprocess:\n  notch_hz: 50\n"
    )
    build = ["cache", "build", "--config", str(config), "--split", "dev"]
    assert main(build) == 0
    assert _manifest(tmp_path / "cache", "dev")["preprocess"]["notch_hz"] == 50
    assert main([*build, "--out", str(tmp_path / "other")]) == 0
    assert _manifest(tmp_path / "other", "dev")["preprocess"]["notch_hz"] == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "cache", "other"]


# --- verify -----------------------------------------------------------------------------------


def test_verify_json_summary_then_a_corrupt_byte_fails_naming_the_file(corpus, tmp_path, capsys):
    _build(corpus, tmp_path)
    _build(corpus, tmp_path, split="dev")
    capsys.readouterr()
    assert main(["cache", "verify", str(tmp_path), "--json", "--expect", "train=6,dev=2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] is True and set(summary["splits"]) == {"train", "dev"}
    train = summary["splits"]["train"]
    assert set(train) == {"recordings", "hours", "seizure_hours", "bytes", "skipped"}
    assert train["recordings"] == 6 and train["hours"] == pytest.approx(6 * 120 / 3600, abs=1e-3)
    assert train["seizure_hours"] == pytest.approx(6 * 30 / 3600, abs=1e-3)
    assert train["bytes"] == sum(r["bytes"] for r in _manifest(tmp_path)["recordings"])

    victim = tmp_path / "train" / _manifest(tmp_path)["recordings"][3]["file"]
    data = bytearray(victim.read_bytes())
    data[-100] ^= 0x01
    victim.write_bytes(bytes(data))
    assert main(["cache", "verify", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert (
        captured.err.strip().splitlines()[-1]
        == f"{victim}: sha256 differs from the manifest (contents changed since the build)"
    )
    assert "cache verify: FAILED" in captured.out

    victim.write_bytes(bytes(data[:-1]))
    ok, _ = verify_cache(tmp_path, {})
    assert (
        not ok
        and f"{victim}: {len(data) - 1} bytes, the manifest says {len(data)}"
        in capsys.readouterr().err
    )


def test_verify_counts_against_expect_and_unknown_folders(corpus, tmp_path, capsys):
    _build(corpus, tmp_path, split="dev")
    assert main(["cache", "verify", str(tmp_path), "--expect", "dev=3,train=6"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-2:] == [
        f"{tmp_path / 'dev'}: 2 recordings, expected 3",
        f"{tmp_path / 'train'}: 0 recordings, expected 6",
    ]
    assert main(["cache", "verify", str(tmp_path / "nowhere")]) == 1
    assert "nowhere: no such cache folder" in capsys.readouterr().err


# --- resume, shards, settings -----------------------------------------------------------------


def test_rerun_reuses_everything_and_rebuilds_only_a_changed_source(corpus, tmp_path):
    _build(corpus, tmp_path)
    arrays = {p: _stat(p) for p in (tmp_path / "train").rglob("*.npy")}
    report = _build(corpus, tmp_path)
    assert (report.built, report.reused) == (0, 6)
    assert {p: _stat(p) for p in arrays} == arrays

    changed = tmp_path / "corpus_copy"
    shutil.copytree(corpus, changed)
    csv_bi = changed / "edf/train/aaaaaaab/s001_2010/01_tcp_ar/aaaaaaab_s001_t001.csv_bi"
    write_annotation(csv_bi, [Event("TERM", 5.0, 15.0, "seiz")], 120.0)
    report = _build(changed, tmp_path)
    assert (report.built, report.reused) == (1, 5)
    events = {r["name"]: r["events"] for r in _manifest(tmp_path)["recordings"]}
    assert events["aaaaaaab_s001_t001"] == [[5.0, 15.0]]

    # A corrected label keeps the file's size ("seiz" and "bckg" have 4 letters): still rebuilt.
    size = csv_bi.stat().st_size
    csv_bi.write_text(csv_bi.read_text().replace(",seiz,", ",bckg,"))
    assert csv_bi.stat().st_size == size
    report = _build(changed, tmp_path)
    assert (report.built, report.reused) == (1, 5)
    events = {r["name"]: r["events"] for r in _manifest(tmp_path)["recordings"]}
    assert events["aaaaaaab_s001_t001"] == []


def test_rerun_repairs_an_array_that_verify_flags(corpus, tmp_path, capsys):
    _build(corpus, tmp_path)
    victim = tmp_path / "train" / _manifest(tmp_path)["recordings"][2]["file"]
    data = bytearray(victim.read_bytes())
    data[-100] ^= 0x01  # same size, other contents
    victim.write_bytes(bytes(data))
    assert not verify_cache(tmp_path, {})[0]
    report = _build(corpus, tmp_path)
    assert (report.built, report.reused) == (1, 5)
    assert verify_cache(tmp_path, {})[0]


@pytest.mark.slow
def test_kill_9_mid_build_then_rerun_completes_without_rebuilding(tmp_path):
    corpus = write_corpus(
        tmp_path / "corpus", {"train": ["bbbbbbba", "bbbbbbbb"]}, recordings=4, seconds=600
    )
    out = tmp_path / "cache"
    code = (
        "from szdet.cli import main; import sys; "
        f"sys.exit(main(['cache', 'build', '--data-root', {str(corpus)!r}, '--split', 'train', "
        f"'--out', {str(out)!r}]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], start_new_session=True, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while not list((out / "train").glob("*/*.json")):
        assert proc.poll() is None and time.monotonic() < deadline, "build ended before the kill"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, as a preempted machine
    proc.wait()

    assert not (out / "train" / "manifest.json").exists()
    done = {
        p.with_suffix(".npy"): _stat(p.with_suffix(".npy"))
        for p in (out / "train").glob("*/*.json")
    }
    assert 1 <= len(done) < 8
    report = _build(corpus, out)
    assert (report.built, report.reused) == (8 - len(done), len(done))
    assert {p: _stat(p) for p in done} == done  # finished arrays untouched
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert len(_manifest(out)["recordings"]) == 8
    ok, _ = verify_cache(out, {"train": 8})
    assert ok


def test_a_rerun_deletes_its_own_stale_temporary_files_but_not_other_shards(corpus, tmp_path):
    _build(corpus, tmp_path, shard=(0, 2))
    split_dir = tmp_path / "train"
    ours = [  # as a killed writer leaves them: shard 0 holds t000 of every patient
        split_dir / "aaaaaaaa" / ".aaaaaaaa_s001_t000.npy.999.tmp",
        split_dir / "aaaaaaab" / ".aaaaaaab_s001_t000.json.999.tmp",
        split_dir / ".manifest.shard-0-of-2.json.999.tmp",
        split_dir / ".preprocess.json.999.tmp",
    ]
    theirs = [split_dir / "aaaaaaaa" / ".aaaaaaaa_s001_t001.npy.998.tmp"]
    for path in ours + theirs:
        path.write_bytes(b"half written")
    _build(corpus, tmp_path, shard=(0, 2))
    assert [p.exists() for p in ours + theirs] == [False] * len(ours) + [True]


def test_two_shards_merged_equal_a_single_build(corpus, tmp_path):
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    _build(corpus, single)
    for i in range(2):
        report = _build(corpus, sharded, shard=(i, 2), workers=2)
        assert report.manifest.name == f"manifest.shard-{i}-of-2.json"
        assert report.built == 3
    merge_shards(sharded, "train")
    assert _manifest(sharded) == _manifest(single)
    for record in _manifest(single)["recordings"]:
        assert (sharded / "train" / record["file"]).read_bytes() == (
            single / "train" / record["file"]
        ).read_bytes()


def test_merge_refuses_a_missing_shard_or_mixed_settings(corpus, tmp_path):
    _build(corpus, tmp_path, shard=(0, 3))
    with pytest.raises(
        UserError,
        match=r"cannot merge, missing manifest.shard-1-of-3.json, manifest.shard-2-of-3.json",
    ):
        merge_shards(tmp_path, "train")
    other = tmp_path / "other"
    _build(corpus, other, shard=(1, 2), preprocess=PRE.model_copy(update={"notch_hz": 50.0}))
    _build(corpus, tmp_path, shard=(0, 2))
    shutil.copy(other / "train" / "manifest.shard-1-of-2.json", tmp_path / "train")
    with pytest.raises(UserError, match=r"shard manifests of different shard counts \[2, 3\]"):
        merge_shards(tmp_path, "train")
    (tmp_path / "train" / "manifest.shard-0-of-3.json").unlink()
    with pytest.raises(
        UserError, match=r"manifest.shard-1-of-2.json: preprocess_hash '\w+' differs"
    ):
        merge_shards(tmp_path, "train")


def test_a_folder_built_with_other_settings_is_refused_naming_both_hashes(corpus, tmp_path):
    _build(corpus, tmp_path, max_recordings=1)
    other = PRE.model_copy(update={"notch_hz": None})
    with pytest.raises(UserError) as e:
        _build(corpus, tmp_path, preprocess=other)
    assert str(e.value) == (
        f"{tmp_path / 'train' / 'preprocess.json'}: cache built with preprocess settings "
        f"{PRE.fingerprint('referential')}, this config's are {other.fingerprint('referential')}"
        ": notch_hz 60.0 (wanted None); use another --out, or delete this folder (a cache "
        "never mixes settings)"
    )


def test_splits_sharing_a_patient_are_refused_before_building(tmp_path):
    corpus = write_corpus(
        tmp_path / "c", {"train": ["cccccccc"], "dev": ["cccccccc"]}, recordings=1, seconds=60
    )
    with pytest.raises(UserError, match="patient cccccccc appears in splits dev, train"):
        _build(corpus, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


# --- bad input --------------------------------------------------------------------------------


def _bad_corpus(root: Path) -> dict[str, Path]:
    """One recording per kind of bad input, plus a good one."""
    names = [
        "good",
        "truncated",
        "garbage",
        "no_c3",
        "flat",
        "bad_row",
        "bad_label",
        "no_notes",
        "csv_only",
        "too_long",
        "other_duration",
    ]
    edfs = {}
    for i, kind in enumerate(names):
        patient = f"d{i:07d}"
        drop = ("C3",) if kind == "no_c3" else ()
        edfs[kind] = write_recording(
            root, "train", patient, seconds=60, seizures=((20.0, 30.0),), drop=drop, seed=i
        )
    data = edfs["truncated"].read_bytes()
    edfs["truncated"].write_bytes(data[: len(data) * 2 // 3])
    edfs["garbage"].write_bytes(b"\x00garbage" * 500)
    _flatten_channel(edfs["flat"], "EEG O1-REF")
    bi = edfs["bad_row"].with_suffix(".csv_bi")
    bi.write_text(bi.read_text() + "TERM,50.0,55.0,seiz\n")
    bi = edfs["bad_label"].with_suffix(".csv_bi")
    bi.write_text(bi.read_text().replace("seiz", "sz"))
    for suffix in (".csv", ".csv_bi"):
        edfs["no_notes"].with_suffix(suffix).unlink()
    edfs["csv_only"].with_suffix(".csv_bi").unlink()
    # An event past the end of a header that matches the EDF: clipped, with a note.
    write_annotation(
        edfs["too_long"].with_suffix(".csv_bi"), [Event("TERM", 50.0, 75.0, "seiz")], 60.0
    )
    # A header 15 s longer than the EDF: the annotation of another recording.
    write_annotation(
        edfs["other_duration"].with_suffix(".csv_bi"), [Event("TERM", 50.0, 75.0, "seiz")], 75.0
    )
    return edfs


def _flatten_channel(edf: Path, label: str) -> None:
    import edfio

    recording = edfio.read_edf(edf)
    for sig in recording.signals:
        if sig.label == label:
            sig.update_data(np.zeros_like(sig.data))
    recording.write(edf)


def test_bad_inputs_are_skipped_with_one_line_reasons_and_the_build_goes_on(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    edfs = _bad_corpus(corpus)
    out = tmp_path / "cache"
    argv = ["cache", "build", "--data-root", str(corpus), "--split", "train", "--out", str(out)]
    assert main(argv) == 0
    manifest = _manifest(out)
    reasons = {Path(s["file"]).stem[:8]: s["reason"] for s in manifest["skipped"]}
    rel = {kind: edf.relative_to(corpus / "edf").as_posix() for kind, edf in edfs.items()}
    assert set(reasons) == {
        "d0000001",
        "d0000002",
        "d0000003",
        "d0000004",
        "d0000005",
        "d0000006",
        "d0000007",
        "d0000010",
    }
    # The reason does not repeat the EDF its "file" names; another file it blames is named.
    assert reasons["d0000001"].startswith("truncated EDF")
    assert reasons["d0000002"].startswith("not a readable EDF")
    assert reasons["d0000003"] == "missing required channel(s) C3"
    assert reasons["d0000004"] == "channel O1 is flat"
    assert (
        reasons["d0000005"]
        == f"{rel['bad_row'][:-4]}.csv_bi: line 10: expected 5 comma-separated fields, got 4"
    )
    assert reasons["d0000006"].startswith(
        f"{rel['bad_label'][:-4]}.csv_bi: line 8: unknown label 'sz'"
    )
    assert reasons["d0000007"] == "no .csv_bi or .csv annotation file beside it"
    assert reasons["d0000010"] == (
        f"{rel['other_duration'][:-4]}.csv_bi: annotated duration 75.00 s differs from the "
        "EDF's 60.00 s (an annotation of another recording?)"
    )
    assert all("\n" not in r for r in reasons.values())

    built = {r["patient"]: r for r in manifest["recordings"]}
    assert set(built) == {"d0000000", "d0000008", "d0000009"}
    assert built["d0000008"]["events"] == [[20.0, 30.0]]  # from the .csv
    assert built["d0000009"]["events"] == [[50.0, 60.0]]
    assert built["d0000009"]["notes"] == [
        "annotation ends at 75.00 s, past the recording's end (60.00 s): clipped"
    ]
    assert "3 recordings (3 built, 0 reused), 8 skipped" in capsys.readouterr().out

    assert main([*argv, "--strict"]) == 1  # rerun: nothing rebuilt, the skips remembered
    assert "8 file(s) skipped (--strict)" in capsys.readouterr().err


# --- the synthetic corpus end to end ----------------------------------------------------------


@pytest.mark.slow
def test_synthetic_corpus_builds_verifies_and_feeds_windows(tmp_path, capsys):
    from szdet.data.tusz import find_recordings, merge_intervals, read_annotation
    from szdet.data.windows import BalancedSampler, WindowDataset, WindowIndex
    from szdet.synth.corpus import write_corpus as write_synthetic

    corpus, out = tmp_path / "corpus", tmp_path / "cache"
    write_synthetic(corpus, patients=4, minutes=6, seed=1)
    for split in ("train", "dev"):
        argv = ["cache", "build", "--data-root", str(corpus), "--split", split, "--out", str(out)]
        assert main([*argv, "--workers", "2"]) == 0
    capsys.readouterr()
    assert main(["cache", "verify", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    sources = find_recordings(corpus, "train")
    assert summary["splits"]["train"]["recordings"] == len(sources)
    assert summary["splits"]["train"]["skipped"] == []

    split = CacheSplit.open(out, "train")
    by_name = {r.name: r for r in split.recordings}
    for files in sources:  # events are the .csv_bi's seizures, clipped to the recording
        annotated = read_annotation(files.csv_bi).seizure_intervals()
        expected = [(a, min(b, by_name[files.name].duration_s)) for a, b in annotated]
        np.testing.assert_allclose(by_name[files.name].events, expected, atol=1e-6)
        # ... and the .csv's per-channel rows are kept, their union those events
        rows = by_name[files.name].channel_seizures
        assert {c for c, _, _ in rows} <= {e.channel for e in read_annotation(files.csv).events}
        np.testing.assert_allclose(merge_intervals((a, b) for _, a, b in rows), expected, atol=1e-3)
    assert sum(r.seizure_s for r in split.recordings) > 0

    index = WindowIndex.build(split, 60.0, 10.0)
    sampler = BalancedSampler(index, 0.3, 2.5, seed=0)
    loader = torch.utils.data.DataLoader(WindowDataset(split, index), batch_size=4, sampler=sampler)
    x, y, _ = next(iter(loader))
    assert x.shape == (4, 19, 15360) and y.shape == (4, 15360) and torch.isfinite(x).all()
    assert x.abs().max() <= PRE.clip and set(y.unique().tolist()) <= {0.0, 1.0}
