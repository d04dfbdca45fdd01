"""`szdet evaluate`: a checkpoint on one cached split -> metrics.json + PNG plots.

Operating points are never tuned on the split being reported: the thresholds for sensitivity at
each FA/24h target are chosen on the dev split of the same cache (a detector made by `szdet
export` brings those its export chose, with the intervals dev gave them) and applied unchanged to
the evaluated split (on dev itself they are, by definition, dev's own).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from szdet.data.manifest import CacheSplit
from szdet.errors import EXIT_BELOW_TARGET, UserError
from szdet.evaluate.inference import Detector, load_detector
from szdet.evaluate.localise import split_localisation
from szdet.evaluate.metrics import evaluate_tracks, target_key, thresholds_from_metrics
from szdet.evaluate.operating_points import format_interval
from szdet.evaluate.plots import write_split_plots
from szdet.evaluate.stitch import evidence_on_disk
from szdet.fileio import write_json_atomic

log = logging.getLogger(__name__)


@evidence_on_disk()  # the split's per-node evidence waits in temporary files, not in memory
def evaluate_command(
    checkpoint: Path,
    cache: Path,
    split: str,
    out: Path,
    overrides: list[str],
    min_auroc: float | None = None,
) -> int:
    detector = load_detector(checkpoint, overrides)
    calibration = detector.operating_points
    dev_name = calibration["split"] if calibration else detector.cfg.data.dev_split
    target = open_matching_split(detector, cache, split)
    thresholds = _given_thresholds(detector, cache, split, dev_name)
    tracks, evidence = detector.predict(target, evidence=True)
    metrics = score_split(detector, target, thresholds, tracks)
    # where: at the first budget's threshold (the configured one if none)
    first = metrics["sens_at_fa"][target_key(detector.cfg.evaluate.fa_targets_per_24h[0])]
    on = detector.cfg.evaluate.threshold_on if first["threshold"] is None else first["threshold"]
    metrics["localisation"] = split_localisation(
        detector.cfg, target.recordings, tracks, evidence, on
    )
    if calibration:  # beside each budget, what dev promised, so a user sees whether it held
        for p in calibration["points"]:
            at = metrics["sens_at_fa"].get(target_key(p["fa_per_24h_budget"]))
            if at is not None:
                at["calibrated_ovlp"] = p["ovlp"]
    metrics = {
        "checkpoint": str(checkpoint),
        "cache": str(cache),
        "split": split,
        "thresholds_from": dev_name,
        **metrics,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "metrics.json", metrics)
    recordings = target.recordings
    plots = write_split_plots(
        out,
        metrics,
        tracks,
        [r.events for r in recordings],
        [r.name for r in recordings],
        detector.cfg.evaluate,
        split=split,
    )
    print(summary_text(metrics))
    print(f"metrics: {out / 'metrics.json'}; plots: {', '.join(p.name for p in plots.values())}")
    auroc = metrics["auroc"]
    if min_auroc is not None and (auroc is None or auroc < min_auroc):
        found = "none (one class only)" if auroc is None else f"{auroc:.3f}"
        raise UserError(
            f"{checkpoint}: {split} AUROC {found}, below --min-auroc {min_auroc}", EXIT_BELOW_TARGET
        )
    return 0


def _given_thresholds(
    detector: Detector, cache: Path, split: str, dev_name: str
) -> dict[float, float | None] | None:
    """Per budget, the on-threshold ``split`` is scored at: a detector's, chosen by its export;
    else chosen on ``dev_name`` now; None to choose them on ``split`` itself (it is dev)."""
    if calibration := detector.operating_points:
        return {p["fa_per_24h_budget"]: p["threshold_on"] for p in calibration["points"]}
    if split == dev_name:
        return None
    dev = open_matching_split(detector, cache, dev_name)
    log.info("choosing thresholds on %s (%d recordings)", dev_name, len(dev))
    return thresholds_from_metrics(score_split(detector, dev))


def open_matching_split(detector: Detector, cache: Path, split: str) -> CacheSplit:
    """A cached split preprocessed exactly as the checkpoint's training data was."""
    cfg = detector.cfg
    opened = CacheSplit.open(cache, split, preprocess=cfg.preprocess, montage=cfg.data.montage)
    if not opened.recordings:
        raise UserError(f"{opened.dir}: the cache holds no recordings")
    return opened


def score_split(
    detector: Detector,
    split: CacheSplit,
    thresholds: Mapping[Any, float | None] | None = None,
    tracks: list | None = None,
) -> dict[str, Any]:
    tracks = detector.predict(split) if tracks is None else tracks
    return evaluate_tracks(
        tracks,
        [r.events for r in split.recordings],
        [r.duration_s for r in split.recordings],
        detector.cfg.evaluate,
        thresholds,
    )


def summary_text(metrics: dict[str, Any]) -> str:
    """A few lines a person reads first; everything else is in metrics.json."""

    def fmt(value: Any, digits: int = 3) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = [
        f"{metrics['split']}: {metrics['recordings']} recordings, {metrics['hours']:.2f} h, "
        f"{metrics['seizure_events']} seizures",
        f"  AUROC {fmt(metrics['auroc'])}   AUPRC {fmt(metrics['auprc'])}",
    ]
    for method in ("ovlp", "taes", "szcore"):
        s = metrics[method]
        lines.append(
            f"  {method:<6} sensitivity {fmt(s['sensitivity'])}  precision {fmt(s['precision'])}"
            f"  FA/24h {fmt(s['fa_per_24h'], 2)}   (at threshold {metrics['threshold_on']})"
        )
    for target, at in metrics["sens_at_fa"].items():
        line = (
            f"  sensitivity at {target:>3} FA/24h: {fmt(at['sensitivity'])}"
            f"  (threshold {fmt(at['threshold'], 4)}, measured FA/24h {fmt(at['fa_per_24h'], 2)})"
        )
        if promised := at.get("calibrated_ovlp"):
            line += (
                f"; calibrated on {metrics['thresholds_from']}: sensitivity "
                f"{format_interval(promised['sensitivity'], 2)}, FA/24h "
                f"{format_interval(promised['fa_per_24h'], 2)}"
            )
        lines.append(line)
    if (where := metrics.get("localisation")) is not None:
        if where["events"]:
            lines.append(
                f"  where: focus among the event's channels {fmt(where['focus_hit_rate'], 2)} "
                f"(random channels {fmt(where['random_focus_hit_rate'], 2)}), side "
                f"{fmt(where['side_accuracy'], 2)} (random {fmt(where['random_side_accuracy'], 2)})"
                f", electrode overlap {fmt(where['overlap'], 2)} (random "
                f"{fmt(where['random_overlap'], 2)}), over {where['events']} detected seizures with "
                "per-channel labels"
            )
        else:
            lines.append("  where: no detected seizure has per-channel labels to place it by")
    one_alarm_per_24h = 24 / metrics["hours"] if metrics["hours"] > 0 else float("inf")
    if any(float(target) < one_alarm_per_24h for target in metrics["sens_at_fa"]):
        lines.append(
            f"  note: on {metrics['hours']:.2f} h a single false alarm is "
            f"{one_alarm_per_24h:.0f} FA/24h, so the targets below that allow none"
        )
    return "\n".join(lines)
