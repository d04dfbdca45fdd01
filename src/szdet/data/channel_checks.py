"""Step 2 of preprocessing (data/edf.py): each channel judged on its raw samples, against the
header's digital step. NaN, flat or dead channels are unusable (filled by interpolation where
allowed, else the recording is refused); quantised or clipped ones are kept with a note."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from szdet.data.edf_header import EdfError, EdfHeader, numbers, unit_scale
from szdet.data.preprocess import stats_step, subsample_into

# Changing any of these changes the cache's contents: bump config.PREPROCESS_ALGORITHM too.
# A channel is dead when the middle half of its raw samples spans under DEAD_STEPS digital steps
# (an electrode at 0 flickering by one step, a lone spike on a flat line: IQR 0), or under
# 1/NEAR_FLAT_RATIO of the channels' median IQR; z-scored, either would be blown up to full scale.
DEAD_STEPS = 3.0
NEAR_FLAT_RATIO = 100.0
QUANTISED_STEPS = 12.0  # an IQR of fewer steps than this: coarse levels, noted
CLIPPED_FRACTION = 0.01  # more samples than this at the digital min/max: clipped, noted


@dataclass(frozen=True)
class DigitalSteps:
    """Per row of the read samples (in mne's units, volts for uV): one digital step, the
    values of the digital min and max, and the header's unit for notes. NaN where the header's
    ranges are degenerate (no step can be judged)."""

    step: np.ndarray
    low: np.ndarray
    high: np.ndarray
    unit_scale: np.ndarray  # mne's units per header unit
    units: tuple[str, ...]

    @classmethod
    def of(cls, path: Path, header: EdfHeader, picks: list[int]) -> DigitalSteps:
        field = {f: np.array(numbers(path, header, f))[picks] for f in _RANGE_FIELDS}
        units = tuple(header.signal_fields["unit"][i] for i in picks)
        scale = np.array([unit_scale(u) for u in units])
        digital = field["digital_max"] - field["digital_min"]
        physical = field["physical_max"] - field["physical_min"]
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where((digital > 0) & (physical != 0), np.abs(physical) / digital, np.nan)
        low = np.minimum(field["physical_min"], field["physical_max"])
        high = np.maximum(field["physical_min"], field["physical_max"])
        return cls(step * scale, low * scale, high * scale, scale, units)


_RANGE_FIELDS = ("physical_min", "physical_max", "digital_min", "digital_max")


@dataclass(frozen=True)
class RawStats:
    """What the channel checks need of the raw samples (pass 1), per row of the read channels."""

    mean: np.ndarray  # float64; NaN for a row holding NaN
    span: np.ndarray  # max - min: NaN for a row holding NaN, 0 for a flat one
    iqr: np.ndarray  # from the stats_step subsample; NaN for a row holding NaN
    at_limits: np.ndarray  # share of the subsample at the digital min or max (NaN without steps)

    @classmethod
    def of_blocks(
        cls,
        blocks: Iterable[tuple[int, np.ndarray]],
        n_rows: int,
        n_samples: int,
        steps: DigitalSteps | None,
    ) -> RawStats:
        """Gathered over (first sample, float64 (n_rows, k) block) chunks of the raw samples."""
        step = stats_step(n_samples)
        sub = np.empty((n_rows, -(-n_samples // step)), np.float32)
        total, low, high = np.zeros(n_rows), np.full(n_rows, np.inf), np.full(n_rows, -np.inf)
        for first, block in blocks:
            total += block.sum(axis=1)  # NaN anywhere makes each of these NaN
            low, high = np.minimum(low, block.min(axis=1)), np.maximum(high, block.max(axis=1))
            subsample_into(sub, first, block, step)
        span = high - low
        iqr = np.full(n_rows, np.nan)
        finite = np.isfinite(span)
        if finite.any():
            q25, q75 = np.percentile(sub[finite], [25, 75], axis=1)
            iqr[finite] = q75 - q25
        at_limits = np.full(n_rows, np.nan)
        if steps is not None:
            half = steps.step[:, None] / 2
            limits = (sub <= steps.low[:, None] + half) | (sub >= steps.high[:, None] - half)
            at_limits = limits.mean(axis=1)
        return cls(total / n_samples, span, iqr, at_limits)


def unusable_channels(
    path: Path,
    channels: list[str],
    stats: RawStats,
    allowed: set[str],
    steps: DigitalSteps | None = None,
) -> dict[str, str]:
    """Channels (rows of the raw samples) that hold NaN, are flat, or (given the header's
    ``steps``) dead, each with why; such a channel outside ``allowed`` is an EdfError."""
    span, iqr = stats.span, stats.iqr
    typical = np.nanmedian(iqr) if np.isfinite(iqr).any() else np.nan
    unusable = {}
    for i, channel in enumerate(channels):
        if not np.isfinite(span[i]):
            why = "has NaN values"
        elif span[i] == 0:
            why = "is flat"
        elif steps is not None and (iqr[i] < DEAD_STEPS * steps.step[i]):
            why = f"is dead (IQR {_in_units(iqr[i], steps, i)})"
        elif steps is not None and iqr[i] < typical / NEAR_FLAT_RATIO:
            why = f"is near-flat (IQR {_in_units(iqr[i], steps, i)}, the channels' median "
            why += f"{_in_units(typical, steps, i)})"
        else:
            continue
        if channel not in allowed:
            raise EdfError(f"{path}: channel {channel} {why}")
        unusable[channel] = why
    return unusable


def quality_notes(
    channels: list[str], stats: RawStats, steps: DigitalSteps, skip: set[str]
) -> list[str]:
    """Notes on usable channels read at coarse digital steps or clipped at the digital range
    (the clipped share estimated from the statistics' subsample, as the IQR is)."""
    notes = []
    for i, channel in enumerate(channels):
        if channel in skip:
            continue
        if stats.iqr[i] < QUANTISED_STEPS * steps.step[i]:
            notes.append(
                f"{channel}: quantised (IQR {stats.iqr[i] / steps.step[i]:.1f} digital steps "
                f"of {_in_units(steps.step[i], steps, i)})"
            )
        if stats.at_limits[i] > CLIPPED_FRACTION:
            notes.append(
                f"{channel}: clipped ({stats.at_limits[i]:.1%} of samples at the digital limits)"
            )
    return notes


def _in_units(value: float, steps: DigitalSteps, i: int) -> str:
    return f"{value / steps.unit_scale[i]:.2g} {steps.units[i]}".rstrip()
