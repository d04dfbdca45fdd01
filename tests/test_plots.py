"""Plots: each figure is written, is a PNG that decodes, and has content."""

import json

import matplotlib.image
import numpy as np

from szdet.config import EvaluateConfig
from szdet.evaluate.metrics import evaluate_tracks
from szdet.evaluate.plots import plot_training_curves, write_split_plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_real_png(path, min_bytes=15_000):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > min_bytes, (path, len(data))
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 200
    assert pixels[..., :3].std() > 0.05  # not a blank canvas
    assert not list(path.parent.glob(".*.tmp"))  # written atomically, nothing left behind


def split_outputs():
    rng = np.random.default_rng(0)
    tracks, events = [], []
    for r in range(3):
        track = np.clip(rng.normal(0.1, 0.08, 2400), 0, 1).astype(np.float32)  # 10 min at 4 Hz
        seizures = [(120.0 + 100 * r, 180.0 + 100 * r)] if r < 2 else []
        for start_s, stop_s in seizures:
            track[int(start_s * 4) : int(stop_s * 4)] += 0.7
        tracks.append(np.clip(track, 0, 1))
        events.append(seizures)
    return tracks, events, [600.0] * 3


def test_split_plots_roc_sweep_and_timelines(tmp_path):
    cfg = EvaluateConfig(timeline_recordings=2)
    tracks, events, durations = split_outputs()
    metrics = evaluate_tracks(tracks, events, durations, cfg)
    metrics = json.loads(json.dumps(metrics))  # plots need only what metrics.json holds
    written = write_split_plots(tmp_path, metrics, tracks, events, ["a", "b", "c"], cfg)
    assert set(written) == {"roc", "sens_vs_fa", "timeline/a", "timeline/b"}  # seizures first
    for path in written.values():
        assert_real_png(path)


def test_training_curves_from_metrics_jsonl(tmp_path):
    rows = [
        {"kind": "step", "step": s, "epoch": s // 50, "loss": 1 / (1 + s)}
        for s in range(0, 200, 10)
    ]
    rows += [
        {
            "kind": "epoch",
            "step": 50 * (e + 1),
            "epoch": e,
            "val/auroc": 0.6 + 0.1 * e,
            "val/sens_at_10fa": None if e == 0 else 0.2 * e,
        }
        for e in range(4)
    ]
    jsonl = tmp_path / "metrics.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert_real_png(plot_training_curves(jsonl, tmp_path / "plots" / "training.png", "10"))


def test_training_curves_before_the_first_epoch(tmp_path):
    jsonl = tmp_path / "metrics.jsonl"
    jsonl.write_text(json.dumps({"kind": "step", "step": 0, "epoch": 0, "loss": 0.7}) + "\n")
    assert_real_png(plot_training_curves(jsonl, tmp_path / "training.png", "10"), min_bytes=10_000)


def test_training_curves_skip_a_row_cut_short_by_a_killed_writer(tmp_path):
    """The plot reads metrics.jsonl as the trainer does (state/run_dir.py): a partial last row,
    left by a kill mid-write, is dropped rather than failing the plot."""
    jsonl = tmp_path / "metrics.jsonl"
    row = json.dumps({"kind": "step", "step": 0, "epoch": 0, "loss": 0.7})
    jsonl.write_text(row + "\n" + row[:17])
    assert_real_png(plot_training_curves(jsonl, tmp_path / "training.png", "10"), min_bytes=10_000)
