"""PNG figures: ROC, sensitivity vs FA/24h, probability timelines, training curves.

Figures are built with `matplotlib.figure.Figure` (no pyplot, so no global backend state or GUI;
PNGs render through Agg) and written atomically. The ROC and sweep plots read the dict
`evaluate_tracks` returns, so a metrics.json is enough to redraw them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from szdet.config import EvaluateConfig
from szdet.evaluate.postprocess import EventRules, track_events
from szdet.fileio import atomic_path
from szdet.state.run_dir import read_metrics

FA_COLOURS = ("tab:red", "tab:orange", "tab:green", "tab:purple", "tab:brown")


def save_png(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def plot_roc(metrics: Mapping[str, Any], path: str | Path, title: str = "ROC") -> Path:
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.add_subplot()
    auroc = metrics.get("auroc")
    label = "model" if auroc is None else f"model (AUROC {auroc:.3f})"
    ax.plot(metrics["roc"]["fpr"], metrics["roc"]["tpr"], color="tab:blue", label=label)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), title=f"{title} (sample level, all frames)")
    ax.set(
        xlabel="false positive rate (background frames flagged)",
        ylabel="true positive rate (seizure frames flagged)",
    )
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def plot_sens_vs_fa(
    metrics: Mapping[str, Any], path: str | Path, title: str = "Sensitivity vs false alarms"
) -> Path:
    """OVLP sensitivity against FA/24h over the on-threshold sweep, each FA target marked with
    the threshold used for it."""
    sweep = metrics["sweep"]
    points = [
        (fa, s)
        for fa, s in zip(sweep["fa_per_24h"], sweep["sensitivity"], strict=True)
        if fa is not None and s is not None
    ]
    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.add_subplot()
    if points:
        # Sensitivity is not monotonic in the threshold (min-duration and merge rules), so the
        # sweep is drawn as points and the curve is its envelope: the best sensitivity reachable
        # at or below each FA rate, which is what choosing a threshold on dev can achieve.
        fa, sens = np.array(sorted(points)).T
        ax.plot(fa, sens, ".", color="tab:blue", alpha=0.4, label="each on-threshold")
        ax.step(
            fa, np.maximum.accumulate(sens), where="post", color="tab:blue", label="best at <= FA"
        )
    for colour, (target, at) in zip(FA_COLOURS, metrics["sens_at_fa"].items(), strict=False):
        ax.axvline(float(target), color=colour, linestyle="--", alpha=0.6)
        if at["threshold"] is not None and at["sensitivity"] is not None:
            ax.plot(
                at["fa_per_24h"],
                at["sensitivity"],
                "o",
                color=colour,
                markersize=8,
                label=f"<= {target}/24h: sens {at['sensitivity']:.2f} "
                f"at p >= {at['threshold']:.3f}",
            )
        else:
            ax.plot([], [], "o", color=colour, label=f"<= {target}/24h: no threshold")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set(ylim=(-0.02, 1.02), title=f"{title} ({metrics.get('thresholds_source', '')})")
    ax.set(xlabel="false alarms per 24 h (OVLP, symlog scale)", ylabel="sensitivity (OVLP)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return save_png(fig, path)


def plot_operating_points(calibration: Mapping[str, Any], path: str | Path) -> Path:
    """OVLP sensitivity against FA/24h over the threshold sweep with its 95% band (a bootstrap
    over patients, evaluate/operating_points.py), and each budget's chosen point with its
    intervals on both axes."""
    curve = calibration["curve"]
    rows = sorted(
        (fa, s, lo, hi)
        for fa, s, lo, hi in zip(
            curve["fa_per_24h_value"],
            curve["sensitivity_value"],
            curve["sensitivity_low"],
            curve["sensitivity_high"],
            strict=True,
        )
        if fa is not None and s is not None
    )
    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.add_subplot()
    if rows:
        fa, sens, low, high = np.array(rows, dtype=np.float64).T
        ax.fill_between(fa, low, high, step="post", color="tab:blue", alpha=0.15, label="95% band")
        ax.step(fa, sens, where="post", color="tab:blue", label="each on-threshold")
    for colour, p in zip(FA_COLOURS, calibration["points"], strict=False):
        budget = p["fa_per_24h_budget"]
        ax.axvline(budget, color=colour, linestyle="--", alpha=0.6)
        sens_ci, fa_ci = p["ovlp"]["sensitivity"], p["ovlp"]["fa_per_24h"]
        if p["threshold_on"] is None or sens_ci["value"] is None:
            ax.plot([], [], "o", color=colour, label=f"<= {budget:g}/24h: no threshold")
            continue
        ax.errorbar(
            fa_ci["value"],
            sens_ci["value"],
            xerr=[[fa_ci["value"] - fa_ci["low"]], [fa_ci["high"] - fa_ci["value"]]],
            yerr=[[sens_ci["value"] - sens_ci["low"]], [sens_ci["high"] - sens_ci["value"]]],
            fmt="o",
            color=colour,
            capsize=3,
            label=f"<= {budget:g}/24h: sens {sens_ci['value']:.2f} at p >= {p['threshold_on']:.3f}",
        )
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set(ylim=(-0.02, 1.02), xlabel="false alarms per 24 h (OVLP, symlog scale)")
    ax.set(
        ylabel="sensitivity (OVLP)",
        title=f"Operating points on {calibration['split']} ({calibration['patients']} patients)",
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return save_png(fig, path)


CHANNELS_SHOWN = 4  # per detected event on a timeline; the rest as "+n"


def plot_timeline(
    track: np.ndarray,
    frame_hz: float,
    reference: Sequence[tuple[float, float]] | np.ndarray,
    path: str | Path,
    threshold_on: float,
    threshold_off: float,
    hypothesis: Sequence[tuple[float, float]] | np.ndarray = (),
    title: str = "recording",
    hypothesis_channels: Sequence[Sequence[str]] = (),
) -> Path:
    """Predicted seizure probability over a recording, reference seizures shaded, detected events
    as a bar underneath (with the channels that carry each, where given), hysteresis thresholds
    drawn."""
    minutes = np.arange(len(track)) / frame_hz / 60.0
    fig = Figure(figsize=(12, 3.5), layout="constrained")
    ax = fig.add_subplot()
    for k, (start_s, stop_s) in enumerate(reference):
        ax.axvspan(
            start_s / 60,
            stop_s / 60,
            color="tab:red",
            alpha=0.2,
            label="reference seizure" if k == 0 else None,
        )
    for k, (start_s, stop_s) in enumerate(hypothesis):
        ax.plot(
            [start_s / 60, stop_s / 60],
            [-0.05, -0.05],
            color="tab:green",
            linewidth=6,
            solid_capstyle="butt",
            label="detected event" if k == 0 else None,
        )
        if k < len(hypothesis_channels) and hypothesis_channels[k]:
            shown = hypothesis_channels[k][:CHANNELS_SHOWN]
            more = len(hypothesis_channels[k]) - len(shown)
            ax.annotate(
                ", ".join(shown) + (f" +{more}" if more > 0 else ""),
                ((start_s + stop_s) / 120, -0.05),
                xytext=(0, 6),
                textcoords="offset points",
                ha="center",
                fontsize=7,
                color="tab:green",
            )
    ax.plot(minutes, track, color="tab:blue", linewidth=0.8, label="p(seizure)")
    ax.axhline(threshold_on, color="black", linestyle="--", linewidth=0.8, label="on threshold")
    ax.axhline(threshold_off, color="grey", linestyle=":", linewidth=0.8, label="off threshold")
    ax.set(ylim=(-0.1, 1.05), xlim=(0, max(minutes[-1] if len(minutes) else 0, 1 / 60)))
    ax.set(xlabel="time (min)", ylabel="seizure probability", title=title)
    ax.legend(loc="upper right", fontsize=8, ncols=3)
    return save_png(fig, path)


def plot_training_curves(metrics_jsonl: str | Path, path: str | Path, fa_target: str) -> Path:
    """Loss per logged step, and dev AUROC and sensitivity at ``fa_target`` FA/24h (the one early
    stopping follows) per epoch, from the rows of a run's metrics.jsonl (``kind`` "step" with
    ``loss``; ``kind`` "epoch" with ``val/...``)."""
    rows = read_metrics(Path(metrics_jsonl))
    steps = [r for r in rows if r.get("kind") == "step" and r.get("loss") is not None]
    epochs = [r for r in rows if r.get("kind") == "epoch"]
    fig = Figure(figsize=(11, 4), layout="constrained")
    loss_ax, dev_ax = fig.subplots(1, 2)
    loss_ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], color="tab:blue")
    loss_ax.set(xlabel="optimizer step", ylabel="training loss (focal)", title="Training loss")
    loss_ax.grid(alpha=0.3)
    numbers = [r["epoch"] + 1 for r in epochs]
    for key, label, colour in [
        ("val/auroc", "dev AUROC", "tab:blue"),
        (f"val/sens_at_{fa_target}fa", f"dev sensitivity at {fa_target} FA/24h", "tab:red"),
    ]:
        values = [np.nan if r.get(key) is None else r[key] for r in epochs]
        dev_ax.plot(numbers, values, marker="o", color=colour, label=label)
    dev_ax.set(xlabel="epoch", ylabel="score (0-1)", ylim=(-0.02, 1.02), title="Dev per epoch")
    dev_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    dev_ax.legend(loc="lower right")
    dev_ax.grid(alpha=0.3)
    if not epochs:
        dev_ax.text(0.5, 0.5, "no epoch finished yet", ha="center", transform=dev_ax.transAxes)
    return save_png(fig, path)


def write_split_plots(
    out_dir: str | Path,
    metrics: Mapping[str, Any],
    tracks: Sequence[np.ndarray],
    events: Sequence[Sequence[tuple[float, float]]],
    names: Sequence[str],
    cfg: EvaluateConfig,
    split: str = "dev",
) -> dict[str, Path]:
    """ROC, sensitivity-vs-FA and ``cfg.timeline_recordings`` timelines (recordings with seizures
    first) into ``out_dir``; returns {figure name: path}."""
    out = Path(out_dir)
    written = {
        "roc": plot_roc(metrics, out / "roc.png", title=f"ROC, {split}"),
        "sens_vs_fa": plot_sens_vs_fa(
            metrics, out / "sens_vs_fa.png", title=f"Sensitivity vs FA/24h, {split}"
        ),
    }
    order = sorted(range(len(tracks)), key=lambda i: (len(events[i]) == 0, i))
    rules = EventRules.from_config(cfg)
    for i in order[: cfg.timeline_recordings]:
        hypothesis = track_events(tracks[i], cfg.frame_hz, rules)
        written[f"timeline/{names[i]}"] = plot_timeline(
            tracks[i],
            cfg.frame_hz,
            events[i],
            out / f"timeline_{names[i]}.png",
            rules.threshold_on,
            rules.threshold_off,
            hypothesis,
            title=f"{names[i]} ({split})",
        )
    return written
