"""Operating points chosen by false-alarm budget, with 95% intervals from a bootstrap over patients.

For each budget in ``evaluate.fa_targets_per_24h`` the on-threshold is the one the OVLP sweep picks
on the calibration split (metrics.choose_thresholds: the highest sensitivity within the budget).
At that threshold every method (OVLP, TAES, SzCORE-event) is scored, and each sensitivity and
FA/24h gets a percentile interval from resampling the split's *patients* with replacement: a
patient's recordings share a brain, a recording setup and artefacts, so neither windows nor recordings
are independent draws. The same resamples give the band around the whole sensitivity-vs-FA curve.

Every corpus score is a sum of per-recording counts (tp, fn, fp, seconds), so each patient is
scored once per threshold and a resample is a sum of rows. The point estimate is the split's own
score; where resampling skews the distribution past it, the interval is widened to include it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from szdet.config import EvaluateConfig
from szdet.errors import UserError
from szdet.evaluate.metrics import choose_thresholds, sweep_ovlp, target_key, threshold_grid
from szdet.evaluate.postprocess import EventRules, TrackSet
from szdet.evaluate.scoring import METHODS, SCORERS, SECONDS_PER_DAY, Events

INTERVAL = 0.95
TP, FN, FP, SECONDS = range(4)  # the columns of a counts array


def patient_index(patients: Sequence[str]) -> np.ndarray:
    """Each recording's patient as 0..P-1, in order of first appearance."""
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(p, len(ids)) for p in patients], dtype=np.int64)


def _take(events: Events, remap: np.ndarray) -> Events:
    """The events of the recordings ``remap`` keeps (>= 0), renumbered as it says."""
    new = remap[events.recording]
    keep = new >= 0
    return Events(new[keep], events.start_s[keep], events.stop_s[keep])


def patient_counts(
    ref: Events, hyp: Events, durations_s: np.ndarray, patient: np.ndarray, method: str
) -> np.ndarray:
    """(P, 4) counts [tp, fn, fp, seconds] of each patient under ``method``."""
    n_patients = int(patient.max()) + 1 if len(patient) else 0
    counts = np.zeros((n_patients, 4))
    for p in range(n_patients):
        mine = np.flatnonzero(patient == p)
        remap = np.full(len(patient), -1, dtype=np.int64)
        remap[mine] = np.arange(len(mine))
        s = SCORERS[method](_take(ref, remap), _take(hyp, remap), durations_s[mine])
        counts[p] = (s.tp, s.fn, s.fp, s.duration_s)
    return counts


def _rates(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity (NaN without seizures) and FA/24h of count sums (..., 4)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        seizures = sums[..., TP] + sums[..., FN]
        sensitivity = np.where(seizures > 0, sums[..., TP] / seizures, np.nan)
        fa = np.where(
            sums[..., SECONDS] > 0, sums[..., FP] * SECONDS_PER_DAY / sums[..., SECONDS], np.nan
        )
    return sensitivity, fa


def _interval(point: float, resampled: np.ndarray) -> dict[str, float | None]:
    """The point and its percentile interval over the resamples that define the rate."""
    if not np.isfinite(point):
        return {"value": None, "low": None, "high": None}
    finite = resampled[np.isfinite(resampled)]
    if len(finite) == 0:
        return {"value": point, "low": point, "high": point}
    tail = 100 * (1 - INTERVAL) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return {"value": point, "low": float(min(low, point)), "high": float(max(high, point))}


class Bootstrap:
    """The same resamples of patients for every threshold and method, so intervals compare."""

    def __init__(self, n_patients: int, samples: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.draws = rng.integers(0, n_patients, size=(samples, n_patients))

    def rates(self, counts: np.ndarray) -> dict[str, dict[str, float | None]]:
        """Sensitivity and FA/24h of the (P, 4) counts, each with its interval."""
        point_sens, point_fa = _rates(counts.sum(axis=0))
        sens, fa = _rates(counts[self.draws].sum(axis=1))
        return {
            "sensitivity": _interval(float(point_sens), sens),
            "fa_per_24h": _interval(float(point_fa), fa),
        }


def calibrate(
    tracks: Sequence[np.ndarray],
    events: Sequence[Sequence[tuple[float, float]] | np.ndarray],
    durations_s: Sequence[float],
    patients: Sequence[str],
    cfg: EvaluateConfig,
    split: str,
) -> dict[str, Any]:
    """The operating points of a split (JSON-able): one per FA/24h budget, and the curve."""
    ref = Events.from_lists(events)
    durations = np.asarray(durations_s, dtype=np.float64)
    patient = patient_index(patients)
    track_set = TrackSet(tracks, cfg.frame_hz, list(durations_s))
    boot = Bootstrap(len(set(patients)), cfg.bootstrap_samples, seed=0)

    def scored(threshold_on: float | None, methods: Sequence[str]) -> dict[str, Any]:
        hyp = (
            Events.empty()
            if threshold_on is None
            else track_set.events(EventRules.from_config(cfg, threshold_on))
        )
        return {m: boot.rates(patient_counts(ref, hyp, durations, patient, m)) for m in methods}

    sweep = sweep_ovlp(track_set, ref, cfg, threshold_grid(cfg.calibration_points))
    chosen = choose_thresholds(sweep, sorted(cfg.fa_targets_per_24h))
    points = [
        {
            "fa_per_24h_budget": budget,
            "threshold_on": on,
            "threshold_off": None if on is None else on * cfg.threshold_off_ratio,
            **scored(on, METHODS),
        }
        for budget, on in chosen.items()
    ]
    curve = [scored(float(on), ("ovlp",))["ovlp"] for on in sweep.threshold_on]
    return {
        "split": split,
        "patients": len(set(patients)),
        "recordings": len(tracks),
        "hours": float(durations.sum() / 3600.0),
        "seizure_events": len(ref.start_s),
        "bootstrap_samples": cfg.bootstrap_samples,
        "interval": INTERVAL,
        "points": points,
        "curve": {
            "threshold_on": sweep.threshold_on.tolist(),
            **{
                f"{rate}_{part}": [c[rate][part] for c in curve]
                for rate in ("sensitivity", "fa_per_24h")
                for part in ("value", "low", "high")
            },
        },
    }


def pick(calibration: dict[str, Any], budget_per_24h: float) -> dict[str, Any]:
    """The calibrated point for a budget: the largest calibrated budget within it. A budget below
    the smallest or above the largest calibrated one, or one dev found no threshold for, is
    refused with the list (UserError)."""
    usable = [p for p in calibration["points"] if p["threshold_on"] is not None]
    budgets = sorted(p["fa_per_24h_budget"] for p in usable)
    listed = ", ".join(target_key(b) for b in budgets) or "none"
    if not budgets or not budgets[0] - 1e-9 <= budget_per_24h <= budgets[-1] + 1e-9:
        raise UserError(
            f"no operating point for {target_key(budget_per_24h)} FA/24h: this detector was "
            f"calibrated on {calibration['split']} for {listed} FA/24h"
        )
    within = max(b for b in budgets if b <= budget_per_24h + 1e-9)
    return next(p for p in usable if p["fa_per_24h_budget"] == within)


def format_interval(rate: dict[str, float | None], digits: int) -> str:
    if rate["value"] is None:
        return "n/a"
    return f"{rate['value']:.{digits}f} [{rate['low']:.{digits}f}, {rate['high']:.{digits}f}]"


def operating_points_table(calibration: dict[str, Any]) -> str:
    """The operating points as a person reads them (README quotes this table)."""
    c = calibration
    lines = [
        f"operating points on {c['split']}: {c['patients']} patients, {c['recordings']} "
        f"recordings, {c['hours']:.2f} h, {c['seizure_events']} seizures; "
        f"{c['interval']:.0%} intervals over {c['bootstrap_samples']} resamples of the patients",
        f"{'FA/24h':>7} {'threshold':>9}  "
        + "  ".join(
            f"{m + ' sensitivity':<21} {m + ' FA/24h':<21}" for m in ("OVLP", "TAES", "SzCORE")
        ).rstrip(),
    ]
    for p in c["points"]:
        budget = target_key(p["fa_per_24h_budget"])
        if p["threshold_on"] is None:
            lines.append(f"{budget:>7} {'none':>9}  no threshold keeps FA/24h within the budget")
            continue
        cells = "  ".join(
            f"{format_interval(p[m]['sensitivity'], 2):<21} {format_interval(p[m]['fa_per_24h'], 1):<21}"
            for m in ("ovlp", "taes", "szcore")
        )
        lines.append(f"{budget:>7} {p['threshold_on']:>9.4f}  {cells}".rstrip())
    return "\n".join(lines)
