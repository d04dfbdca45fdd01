"""README's open-dataset path end to end, on a BIDS tree made from the synthetic corpus: cache
build from BIDS with a splits file, train, `detect --format szcore` on the eval subjects, and
`score`, whose challenge numbers equal szcore-evaluation's on the same two trees."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml
from szcore_evaluation.evaluate import evaluate_dataset

from szdet.cli import main
from szdet.config_load import load_config
from szdet.data.edf_header import read_header
from szdet.data.hed_tsv import events_name, write_events_tsv
from szdet.data.tusz import SPLITS, find_recordings, read_annotation
from szdet.synth.corpus import write_corpus
from train_support import TINY

pytestmark = pytest.mark.slow


def bids_from_tusz(corpus: Path, bids: Path) -> dict[str, str]:
    """Each TUSZ patient becomes a subject, each recording a run with its events TSV; returns
    {subject: split} as the corpus had it."""
    (bids / "dataset_description.json").parent.mkdir(parents=True)
    (bids / "dataset_description.json").write_text('{"Name": "synth", "BIDSVersion": "1.9.0"}')
    assignment = {}
    for split in SPLITS:
        for run, files in enumerate(find_recordings(corpus, split)):
            subject = f"sub-{files.patient}"
            assignment[subject] = split
            edf = bids / subject / "ses-01" / "eeg"
            edf /= f"{subject}_ses-01_task-szMonitoring_run-{run:02d}_eeg.edf"
            edf.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(files.edf, edf)
            header = read_header(edf)
            assert files.csv_bi is not None
            seizures = read_annotation(files.csv_bi).seizure_intervals()
            write_events_tsv(
                edf.with_name(events_name(edf)),
                [(a, b, 1.0) for a, b in seizures],
                header.n_records * header.record_duration_s,
                header.start,
            )
    return assignment


def test_bids_tree_to_szcore_scores(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    write_corpus(corpus, patients=6, minutes=3, seed=5)
    assignment = bids_from_tusz(corpus, tmp_path / "bids")
    splits = tmp_path / "splits.tsv"
    splits.write_text("".join(f"{s}\t{split}\n" for s, split in assignment.items()))
    cache = tmp_path / "cache"
    for split in ("train", "dev", "eval"):
        argv = ["--data-root", tmp_path / "bids", "--split", split, "--out", cache]
        assert main(["cache", "build", *map(str, argv), "--splits", str(splits)]) == 0

    config = tmp_path / "config.yaml"
    cfg = {**TINY, "paths": {"cache_dir": str(cache), "runs_dir": str(tmp_path / "runs")}}
    config.write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(config)]) == 0
    best = load_config(config).run_dir / "checkpoints" / "best.pt"

    eval_subjects = [s for s, split in assignment.items() if split == "eval"]
    assert eval_subjects
    ref = tmp_path / "ref"
    edfs = []
    for subject in eval_subjects:
        shutil.copytree(tmp_path / "bids" / subject, ref / subject)
        edfs += sorted((ref / subject).rglob("*_eeg.edf"))
    hyp = tmp_path / "hyp"
    assert main(["detect", *map(str, edfs), "--checkpoint", str(best), "--format", "szcore",
                 "--out", str(hyp)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["score", "--ref", str(ref), "--hyp", str(hyp), "--json"]) == 0
    ours = json.loads(capsys.readouterr().out)["challenge"]

    # szcore-evaluation pairs by the path under the reference: mirror the flat hypotheses.
    mirrored = tmp_path / "hyp-mirrored"
    for edf in edfs:
        target = mirrored / edf.parent.relative_to(ref) / events_name(edf)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(hyp / events_name(edf), target)
    theirs = evaluate_dataset(ref, mirrored, tmp_path / "theirs.json")
    for kind in ("sample_results", "event_results"):
        for metric, value in theirs[kind].items():
            mine = ours[kind][metric]
            if math.isnan(value):
                assert mine is None, (kind, metric)
            else:
                assert mine == pytest.approx(value, abs=1e-9), (kind, metric)
