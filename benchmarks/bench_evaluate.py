"""Time to evaluate 100 recording-hours given model outputs (target: < 60 s on 2 cores).

Model outputs are synthesised per window (60 s windows every 30 s at 256 Hz, as `evaluate` runs
them): a noisy background, seizures, and false-alarm bursts of varied heights. Timed: stitching
every window into 4 Hz tracks, then `evaluate_tracks` (sample AUROC/AUPRC, OVLP/TAES/SzCORE at the
configured thresholds, the 100-point on-threshold sweep and the per-FA-target choice).

Baseline, measured in the same run: naive per-window evaluation (each window post-processed and
OVLP-scored on its own at every sweep threshold, the way the prototype counted events), timed on a
subset of recordings and scaled to 100 hours by recording time.

    .venv/bin/python benchmarks/bench_evaluate.py
"""

from __future__ import annotations

import time

import numpy as np

from szdet.config import EvaluateConfig, WindowsConfig
from szdet.data.windows import window_starts
from szdet.evaluate.metrics import evaluate_tracks, threshold_grid
from szdet.evaluate.postprocess import EventRules, track_events
from szdet.evaluate.scoring import Events, score_ovlp
from szdet.evaluate.stitch import Stitcher

RATE_HZ = 256.0
TARGET_HOURS = 100.0
TARGET_S = 60.0
BASELINE_HOURS = 3.0


def synth_recordings(rng: np.random.Generator, hours: float) -> list[tuple[float, list]]:
    """(duration_s, seizure intervals) per recording, 10-30 min each, until ``hours`` is reached."""
    recordings, total_s = [], 0.0
    while total_s < hours * 3600:
        duration_s = float(rng.uniform(600, 1800))
        seizures = []
        if rng.random() < 0.3:
            start = float(rng.uniform(0, duration_s - 120))
            seizures.append((start, start + float(rng.uniform(20, 110))))
        recordings.append((duration_s, seizures))
        total_s += duration_s
    return recordings


def sample_probs(rng: np.random.Generator, duration_s: float, seizures: list) -> np.ndarray:
    """Per-sample probabilities of one recording: smooth noise, seizures high, a few bursts."""
    n = int(duration_s * RATE_HZ)
    coarse = np.clip(rng.normal(0.08, 0.06, int(duration_s) + 1), 0, 1)
    for start, stop in seizures:
        coarse[int(start) : int(stop)] = rng.uniform(0.55, 0.98)
    for _ in range(rng.poisson(0.5)):
        at = int(rng.uniform(0, duration_s - 20))
        coarse[at : at + int(rng.uniform(5, 20))] = rng.uniform(0.3, 0.95)
    return np.repeat(coarse, int(RATE_HZ))[:n].astype(np.float32)


def run_pipeline(recordings, rng, windows: WindowsConfig, cfg: EvaluateConfig):
    length, stride = int(windows.length_s * RATE_HZ), int(windows.eval_stride_s * RATE_HZ)
    stitcher = Stitcher([int(d * RATE_HZ) for d, _ in recordings], RATE_HZ, cfg.frame_hz)
    stitch_s, n_windows, kept_s, kept = 0.0, 0, 0.0, []
    for r, (duration_s, seizures) in enumerate(recordings):
        probs = sample_probs(rng, duration_s, seizures)
        noisy = probs + rng.normal(0, 0.02, len(probs)).astype(np.float32)  # windows disagree a bit
        starts = window_starts(len(probs), length, stride)
        outputs = [noisy[s : s + length] for s in starts]
        t0 = time.perf_counter()
        for start, out in zip(starts, outputs, strict=True):
            stitcher.add(r, int(start), out)
        stitch_s += time.perf_counter() - t0
        n_windows += len(starts)
        if kept_s < BASELINE_HOURS * 3600:  # the baseline's subset (keeping all would be ~370 MB)
            kept.append((recordings[r], starts, outputs))
            kept_s += duration_s
    t0 = time.perf_counter()
    tracks = stitcher.tracks()
    metrics = evaluate_tracks(tracks, [s for _, s in recordings], [d for d, _ in recordings], cfg)
    return stitch_s, time.perf_counter() - t0, n_windows, metrics, kept


def naive_per_window(kept, cfg: EvaluateConfig, length_s: float) -> float:
    """Seconds to score every window on its own at every sweep threshold."""
    spf = int(RATE_HZ / cfg.frame_hz)
    t0 = time.perf_counter()
    for threshold in threshold_grid(cfg.sweep_points):
        rules = EventRules.from_config(cfg, float(threshold))
        for (_, seizures), starts, outputs in kept:
            for start, out in zip(starts, outputs, strict=True):
                track = out[: len(out) // spf * spf].reshape(-1, spf).mean(axis=1)
                hyp = track_events(track, cfg.frame_hz, rules, length_s)
                w0 = start / RATE_HZ
                ref = [
                    (max(a - w0, 0), min(b - w0, length_s))
                    for a, b in seizures
                    if b > w0 and a < w0 + length_s
                ]
                score_ovlp(Events.from_lists([ref]), Events.from_lists([hyp]), [length_s])
    return time.perf_counter() - t0


def main() -> None:
    cfg, windows = EvaluateConfig(), WindowsConfig()
    rng = np.random.default_rng(0)
    recordings = synth_recordings(rng, TARGET_HOURS)
    hours = sum(d for d, _ in recordings) / 3600
    stitch_s, metrics_s, n_windows, metrics, kept = run_pipeline(recordings, rng, windows, cfg)
    ours_s = stitch_s + metrics_s
    subset_s = sum(duration_s for (duration_s, _), _, _ in kept)
    naive_s = naive_per_window(kept, cfg, windows.length_s)
    naive_100h_s = naive_s * (hours * 3600 / subset_s)

    print(
        f"evaluate {hours:.1f} recording-hours: {len(recordings)} recordings, {n_windows} windows "
        f"({windows.length_s:.0f} s every {windows.eval_stride_s:.0f} s), "
        f"{cfg.sweep_points}-point threshold sweep"
    )
    print(f"  stitch            {stitch_s:8.2f} s")
    print(
        f"  evaluate_tracks   {metrics_s:8.2f} s  (AUROC {metrics['auroc']:.3f}, "
        f"sens@10FA {metrics['sens_at_fa']['10']['sensitivity']:.3f})"
    )
    print(
        f"  total             {ours_s:8.2f} s   target < {TARGET_S:.0f} s: "
        f"{'MET' if ours_s < TARGET_S else 'MISSED'}"
    )
    print(
        f"baseline, naive per-window scoring: {naive_s:.2f} s on {subset_s / 3600:.1f} h "
        f"-> {naive_100h_s:.1f} s for {hours:.1f} h (scaled by recording time)"
    )
    print(
        f"ratio: ours / naive = {ours_s / naive_100h_s:.3f} ({naive_100h_s / ours_s:.1f}x faster)"
    )


if __name__ == "__main__":
    main()
