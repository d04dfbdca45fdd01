"""`szdet export`: a training checkpoint -> the detector bundle a user runs (state/bundle.py).

The model runs once over the calibration split (dev: never the split a result is reported on),
the operating points are chosen there by false-alarm budget with their intervals
(evaluate/operating_points.py), and one file is written, with a table printed and a plot of
sensitivity against FA/24h beside it (``<DETECTOR>.png``); with ``--onnx`` the network too, as
``<DETECTOR>.onnx`` for onnxruntime (models/onnx_export.py).
"""

from __future__ import annotations

from pathlib import Path

from szdet.data.manifest import MANIFEST
from szdet.errors import UserError
from szdet.evaluate.inference import load_detector, onnx_path
from szdet.evaluate.operating_points import calibrate, operating_points_table
from szdet.evaluate.plots import plot_operating_points
from szdet.evaluate.report import open_matching_split
from szdet.fileio import sha256_file
from szdet.models.onnx_export import export_onnx, exportable_config
from szdet.state.bundle import write_bundle


def export_command(
    checkpoint: Path,
    cache: Path,
    split: str | None,
    out: Path,
    overrides: list[str],
    onnx: bool = False,
) -> int:
    if out.is_dir():
        raise UserError(f"{out}: is a folder; --out names the detector file to write")
    detector = load_detector(checkpoint, overrides)
    cfg = detector.cfg
    if onnx:  # refused before the calibration's inference, not after it
        exportable_config(cfg.model)
    split = split or cfg.data.dev_split
    target = open_matching_split(detector, cache, split)
    recordings = target.recordings
    calibration = calibrate(
        detector.predict(target),
        [r.events for r in recordings],
        [r.duration_s for r in recordings],
        [r.patient for r in recordings],
        cfg.evaluate,
        split,
    )
    provenance = {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": sha256_file(checkpoint),
        "run_name": cfg.paths.run_name,
        "step": detector.step,
        "calibration_split": split,
        "cache_manifest_sha256": sha256_file(target.dir / MANIFEST),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in detector.model.state_dict().items()}
    write_bundle(out, cfg, state, calibration, provenance)
    plot = plot_operating_points(calibration, out.with_name(out.name + ".png"))
    print(operating_points_table(calibration))
    print(f"detector: {out}; plot: {plot}")
    if onnx:
        export_onnx(cfg.model, state, cfg.window_samples, onnx_path(out))
        print(f"network as ONNX: {onnx_path(out)} (detect --engine onnx)")
    return 0
