"""`szdet evaluate` and `szdet detect` end to end: a tiny trained checkpoint on a synthetic cache."""

import itertools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from montage_support import write_chb_mit_edf, write_referential_edf
from szdet.cli import main
from szdet.config import Config
from szdet.config_load import load_config
from szdet.data.cache import build_cache
from szdet.data.edf import EdfSignal, load_edf
from szdet.data.manifest import CacheSplit
from szdet.data.tusz import find_recordings, read_annotation
from szdet.evaluate import report
from szdet.evaluate.inference import load_detector
from szdet.evaluate.postprocess import EventRules, track_events
from train_support import build_tiny_cache, train, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    cache = build_tiny_cache(root)
    config = write_config(root, cache)
    proc = train(config)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = load_config(config).run_dir
    return {"root": root, "cache": cache, "best": run_dir / "checkpoints" / "best.pt"}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def spill_into(monkeypatch, folder: Path) -> list[Path]:
    """Temporary files go into ``folder`` from now on; returns the .npy files in it while the
    evidence is being placed (evaluate/localise.py)."""
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    seen: list[Path] = []
    place = report.split_localisation

    def placing(*args, **kwargs):
        seen.extend(folder.rglob("*.npy"))
        return place(*args, **kwargs)

    monkeypatch.setattr(report, "split_localisation", placing)
    return seen


def test_evaluate_dev_writes_metrics_and_plots(trained, tmp_path, capsys, monkeypatch):
    spilled = spill_into(monkeypatch, tmp_path / "tmp")
    out = tmp_path / "dev"
    code, stdout, _ = run_cli(
        capsys, "evaluate", "--checkpoint", trained["best"], "--cache", trained["cache"],
        "--split", "dev", "--out", out,
    )  # fmt: skip
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    split = CacheSplit.open(trained["cache"], "dev")
    assert metrics["split"] == "dev" and metrics["recordings"] == len(split)
    assert metrics["hours"] == pytest.approx(sum(r.duration_s for r in split.recordings) / 3600)
    assert metrics["thresholds_source"] == "chosen on this split"
    assert set(metrics["sens_at_fa"]) == {"10", "5", "2.5", "1", "0.5"}
    for method in ("ovlp", "taes", "szcore"):
        assert {"tp", "fn", "fp", "sensitivity", "fa_per_24h"} <= set(metrics[method])
    assert (out / "roc.png").stat().st_size > 5000 and (out / "sens_vs_fa.png").is_file()
    assert "AUROC" in stdout and "sensitivity at  10 FA/24h" in stdout
    # where: the synthetic corpus's per-channel .csv labels place each detected seizure
    where = metrics["localisation"]
    assert where["threshold_on"] == metrics["sens_at_fa"]["10"]["threshold"]
    if where["events"]:  # a tiny model may detect none at that threshold
        assert 0 <= where["focus_hit_rate"] <= 1 and 0 < where["random_focus_hit_rate"] < 1
        assert 0 <= where["overlap"] <= 1 and 0 < where["random_overlap"] < 1
        assert "where: focus among the event's channels" in stdout and "overlap" in stdout
    else:
        assert "where: no detected seizure" in stdout
    # A split this short cannot hold one false alarm within 10 FA/24h, and the summary says so.
    assert metrics["hours"] < 2.4 and "a single false alarm is" in stdout
    # the evidence waited on disk, a file per recording, and is gone
    assert len(spilled) == len(split) and not any((tmp_path / "tmp").iterdir())


def test_evaluate_removes_its_temporary_evidence_on_error(trained, tmp_path, capsys, monkeypatch):
    spilled = spill_into(monkeypatch, tmp_path / "tmp")

    def fail(*args, **kwargs):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(report, "write_split_plots", fail)
    code, _, err = run_cli(
        capsys, "evaluate", "--checkpoint", trained["best"], "--cache", trained["cache"],
        "--split", "dev", "--out", tmp_path / "dev",
    )  # fmt: skip
    assert code != 0 and "plotting failed" in err
    assert spilled and not any((tmp_path / "tmp").iterdir())


def test_other_splits_get_thresholds_chosen_on_dev(trained, tmp_path, capsys):
    common = ["--checkpoint", trained["best"], "--cache", trained["cache"]]
    # --min-auroc (make smoke's gate): met, exit 0; missed, exit 5 in one line, metrics written.
    assert run_cli(capsys, "evaluate", *common, "--out", tmp_path / "d", "--min-auroc", "0")[0] == 0
    code, _, err = run_cli(
        capsys, "evaluate", *common, "--out", tmp_path / "x", "--min-auroc", "1.01"
    )
    assert code == 5 and (tmp_path / "x/metrics.json").is_file()
    assert err.strip().splitlines()[-1].endswith("below --min-auroc 1.01")
    assert str(trained["best"]) in err
    assert run_cli(capsys, "evaluate", *common, "--split", "train", "--out", tmp_path / "t")[0] == 0
    dev = json.loads((tmp_path / "d/metrics.json").read_text())
    other = json.loads((tmp_path / "t/metrics.json").read_text())
    assert other["thresholds_source"] == "given" and other["thresholds_from"] == "dev"
    for target, at in dev["sens_at_fa"].items():
        assert other["sens_at_fa"][target]["threshold"] == at["threshold"]


def test_evaluate_and_export_take_the_runs_files_from_its_config(trained, tmp_path, capsys):
    # The run's config.yaml says where its cache and run folder are: best.pt is evaluated on
    # paths.cache_dir into <run>/eval-dev/, and exported as <run>/<run_name>.detector.
    run = trained["best"].parents[1]
    assert run_cli(capsys, "evaluate", "--config", run / "config.yaml")[0] == 0
    metrics = json.loads((run / "eval-dev" / "metrics.json").read_text())
    assert (metrics["checkpoint"], metrics["cache"]) == (
        str(trained["best"]),
        str(trained["cache"]),
    )
    # --cache only overrides paths.cache_dir; the rest still comes from the config
    copy = tmp_path / "cache"
    shutil.copytree(trained["cache"], copy)
    argv = ["evaluate", "--config", run / "config.yaml", "--cache", copy, "--out", tmp_path / "e"]
    assert run_cli(capsys, *argv)[0] == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert (metrics["checkpoint"], metrics["cache"]) == (str(trained["best"]), str(copy))
    assert run_cli(capsys, "export", "--config", run / "config.yaml")[0] == 0
    assert (run / "szdet.detector").is_file() and (run / "szdet.detector.png").is_file()


def test_evaluate_refuses_foreign_cache_bad_checkpoint_and_model_overrides(
    trained, tmp_path, capsys
):
    # A cache built with other preprocessing (50 Hz notch) is not what the model was trained on.
    foreign = tmp_path / "foreign"
    settings = Config().preprocess.model_copy(update={"notch_hz": 50.0})
    build_cache(trained["root"] / "corpus", "dev", foreign, settings, 1, None, None)
    capsys.readouterr()  # the build's own progress output
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys, "evaluate", "--checkpoint", trained["best"], "--cache", foreign, "--split", "dev",
        "--out", out,
    )  # fmt: skip
    assert code == 1 and "notch_hz 50.0 (wanted 60.0)" in err and len(err.splitlines()) == 1
    assert not out.exists()

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    code, _, err = run_cli(
        capsys, "evaluate", "--checkpoint", garbage, "--cache", trained["cache"], "--out", out
    )
    assert code == 1 and str(garbage) in err and len(err.splitlines()) == 1
    assert not out.exists()

    code, _, err = run_cli(
        capsys, "evaluate", "--checkpoint", trained["best"], "--cache", trained["cache"],
        "--out", out, "--set", "model.node_dim=4",
    )  # fmt: skip
    assert code == 1 and "only evaluate.*" in err


def test_detect_matches_the_cached_evaluation_and_writes_tusz_csv_bi(trained, tmp_path, capsys):
    recording = find_recordings(trained["root"] / "corpus", "dev")[0]
    detector = load_detector(trained["best"])
    # detect preprocesses the EDF itself: its track equals evaluate's for the cached recording.
    split = CacheSplit.open(trained["cache"], "dev")
    i = [r.name for r in split.recordings].index(recording.name)
    pre = load_edf(recording.edf, detector.cfg.preprocess)
    from_edf, _ = detector.predict_edf(EdfSignal(recording.edf, detector.cfg.preprocess))
    # (to float32 rounding: evaluate's batches mix recordings, detect's hold one)
    np.testing.assert_allclose(from_edf, detector.predict(split)[i], rtol=0, atol=1e-6)

    # An operating point at the track's 90th percentile so that events certainly exist.
    on = float(np.quantile(from_edf, 0.9))
    settings = [f"evaluate.threshold_on={on}", "evaluate.min_duration_s=0"]
    rules = EventRules(on, on * 0.7, 0.0, detector.cfg.evaluate.merge_gap_s, 600.0)
    expected = track_events(from_edf, detector.cfg.evaluate.frame_hz, rules, pre.duration_s)
    assert len(expected) > 0
    out = tmp_path / "events"
    code, stdout, _ = run_cli(
        capsys, "detect", recording.edf, "--checkpoint", trained["best"], "--out", out, "--plot",
        *[arg for s in settings for arg in ("--set", s)],
    )  # fmt: skip
    assert code == 0 and str(recording.edf) in stdout
    written = read_annotation(out / f"{recording.name}.csv_bi")
    assert written.duration_s == pytest.approx(pre.duration_s, abs=0.01)
    assert written.bname == recording.name
    rows = written.events
    assert rows[0].start_s == 0 and rows[-1].stop_s == pytest.approx(pre.duration_s, abs=1e-3)
    assert all(a.stop_s == pytest.approx(b.start_s) for a, b in itertools.pairwise(rows))
    assert {e.channel for e in rows} == {"TERM"} and {e.label for e in rows} <= {"seiz", "bckg"}
    seizures = [(e.start_s, e.stop_s) for e in rows if e.label == "seiz"]
    np.testing.assert_allclose(seizures, expected, atol=1e-4)
    assert (out / f"{recording.name}.png").stat().st_size > 5000


def test_detect_reports_a_bad_edf_in_one_line_and_still_writes_the_good_ones(
    trained, tmp_path, capsys
):
    good = find_recordings(trained["root"] / "corpus", "dev")[0].edf
    bad = tmp_path / "truncated.edf"
    bad.write_bytes(good.read_bytes()[:300])
    out = tmp_path / "events"
    out.mkdir()
    (out / "truncated.csv_bi").write_text("kept\n")  # an earlier output is never clobbered
    shutil.copy(good, tmp_path / "copy.edf")
    code, _, err = run_cli(
        capsys, "detect", bad, tmp_path / "copy.edf", "--checkpoint", trained["best"], "--out", out
    )
    assert code == 1
    (line,) = [x for x in err.splitlines() if x.startswith("szdet:")]  # besides progress bars
    assert line.startswith(f"szdet: error: {bad}")
    assert (out / "copy.csv_bi").is_file()
    assert (out / "truncated.csv_bi").read_text() == "kept\n"


def test_detect_never_replaces_a_reference_annotation_or_collides(trained, tmp_path, capsys):
    recording = find_recordings(trained["root"] / "corpus", "dev")[0]
    folder = tmp_path / "beside"
    shutil.copytree(recording.edf.parent, folder)
    edf = folder / recording.edf.name
    reference = edf.with_suffix(".csv_bi").read_bytes()
    code, _, err = run_cli(capsys, "detect", edf, "--checkpoint", trained["best"], "--out", folder)
    assert code == 1 and "is the reference annotation" in err
    assert edf.with_suffix(".csv_bi").read_bytes() == reference

    twin = tmp_path / "twin" / edf.name
    twin.parent.mkdir()
    shutil.copy(edf, twin)
    code, _, err = run_cli(
        capsys, "detect", edf, twin, "--checkpoint", trained["best"], "--out", tmp_path / "o"
    )
    assert code == 1 and "both would write" in err and not (tmp_path / "o").exists()


def test_detect_refuses_a_bipolar_edf_for_a_referential_checkpoint_in_one_line(
    trained, tmp_path, capsys
):
    chb = write_chb_mit_edf(tmp_path / "chb.edf", 30.0)
    szcore = write_referential_edf(tmp_path / "bids.edf", 30.0, 256.0, "{}-Avg", modern=True)
    out = tmp_path / "events"
    code, stdout, err = run_cli(
        capsys, "detect", chb, szcore, "--checkpoint", trained["best"], "--out", out
    )
    assert code == 1
    (line,) = [x for x in err.splitlines() if x.startswith("szdet:")]
    assert line.startswith(f"szdet: error: {chb}: bipolar recording (FP1-F7, F7-T7, T7-P7, ...)")
    assert "the referential montage" in line and not (out / "chb.csv_bi").exists()
    assert (out / "bids.csv_bi").is_file() and str(szcore) in stdout  # Fp1-Avg: read as it is
