"""EDF reading and preprocessing: any scalp EEG recording -> the model's montage (19 electrodes or
18 derivations), 256 Hz, robust z-scores.

The steps, in order:

1. read only the EEG channels we need (mne ``include``: files carry up to 128 channels, some at
   other rates), found by name and planned for ``data.montage`` by szdet/data/montage.py
   (``EEG FP1-REF``, ``Fp1-Avg``, ``fp1`` -> FP1; T7/T8/P7/P8 -> T3/T4/T5/T6; ``FP1-F7`` a derivation);
2. resample to ``sample_rate_hz`` by polyphase filtering;
3. band-pass and notch in one zero-phase cascade of IIR second-order sections;
4. fill the channels of ``interpolate_channels`` that are missing, NaN, flat or dead (judged on
   the raw samples by robust statistics against the header's digital step: ``unusable_channels``)
   by spherical-spline interpolation on the standard 10-20 positions (mne), and record which;
   quantised or clipped channels are kept with a note (``quality_notes``);
5. convert to the montage (szdet/data/montage.py: exact, linear);
6. per-channel robust z-score (median, IQR) over the whole recording, clipped at +-``clip``.

Everything after reading runs in float32 on one (channels, n) array. The cache keeps float16, whose
rounding (~1e-3 relative) is as coarse as the float32 filter's, so float64 would buy nothing.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy import signal

from szdet.config import CHANNELS_19, PreprocessConfig
from szdet.data.edf_header import (
    EdfError,
    EdfHeader,
    numbers,
    read_readable_header,
    record_count_note,
    unit_scale,
)
from szdet.data.montage import Montage, MontageError, plan_montage
from szdet.errors import first_line

# Changing any of these changes the cache's contents: bump config.PREPROCESS_ALGORITHM too.
BANDPASS_ORDER = 4
NOTCH_Q = 30.0  # notch width = notch_hz / Q (2 Hz at 60 Hz)
IQR_PER_SIGMA = 1.349  # a Gaussian's interquartile range, in standard deviations
ROBUST_STATS_STEP = 4  # median and IQR from every 4th sample: the same estimate, 4x less sorting
MIN_DURATION_S = 1.0
# A channel is dead when the middle half of its raw samples spans under DEAD_STEPS digital steps
# (an electrode at 0 flickering by one step, a lone spike on a flat line: IQR 0), or under
# 1/NEAR_FLAT_RATIO of the channels' median IQR; z-scored, either would be blown up to full scale.
DEAD_STEPS = 3.0
NEAR_FLAT_RATIO = 100.0
QUANTISED_STEPS = 12.0  # an IQR of fewer steps than this: coarse levels, noted
CLIPPED_FRACTION = 0.01  # more samples than this at the digital min/max: clipped, noted
MONTAGE = "colin27_1020"  # mne's standard 10-20 positions (formerly "standard_1020")


@dataclass
class Preprocessed:
    signal: np.ndarray  # float32 (len(channels), n) at sample_rate_hz
    channels: tuple[str, ...]  # the montage's: CHANNELS_19 or DOUBLE_BANANA (data/montage.py)
    sample_rate_hz: float
    duration_s: float  # n / sample_rate_hz
    source_rate_hz: float
    interpolated: list[str]  # e.g. ["FZ", "PZ"]
    notes: list[str]  # e.g. a repeated channel label, and which copy is used
    header: EdfHeader  # the source's, as read and checked (its start, records x duration)


def load_edf(
    path: Path, preprocess: PreprocessConfig, montage: Montage = "referential"
) -> Preprocessed:
    """Read and preprocess one recording into ``montage``; EdfError names the file and the
    problem (a recording that cannot feed ``montage`` says why)."""
    path = Path(path)
    header, count_notes = record_count_note(path, _read_header(path))
    labels = list(header.labels)
    try:
        plan = plan_montage(labels, montage, preprocess.interpolate_channels)
    except MontageError as e:
        raise EdfError(f"{path}: {e}") from None
    # Only electrodes can be interpolated; a recorded derivation must be usable as it is.
    allowed = set(preprocess.interpolate_channels) if plan.rows == CHANNELS_19 else set()

    present = [c for c in plan.rows if c in plan.read]
    picks = [plan.read[c] for c in present]
    data, source_rate_hz = _read_signals(path, labels, picks)
    check_rate(path, source_rate_hz, preprocess)
    if data.shape[1] < MIN_DURATION_S * source_rate_hz:
        raise EdfError(f"{path}: recording too short ({data.shape[1] / source_rate_hz:.2f} s)")

    steps, iqr = DigitalSteps.of(path, header, picks), raw_iqr(data)
    unusable = unusable_channels(path, present, data, allowed, steps, iqr)
    notes = [
        *count_notes,
        *plan.notes,
        *(f"{c} {why}: interpolated" for c, why in unusable.items()),
    ]
    notes += quality_notes(present, data, steps, iqr, skip=set(unusable))
    x = np.zeros((len(plan.rows), data.shape[1]), dtype=np.float32)
    for row, channel in zip(data, present, strict=True):
        if channel not in unusable:
            x[plan.rows.index(channel)] = row
    del data
    interpolated = [c for c in plan.rows if c not in plan.read or c in unusable]

    x = resample(x, source_rate_hz, preprocess.sample_rate_hz)
    x = bandpass_notch(x, preprocess)
    if interpolated:
        interpolate(x, interpolated)
    x = plan.convert(x)
    robust_zscore(x, preprocess.clip)
    return Preprocessed(
        signal=x,
        channels=plan.channels,
        sample_rate_hz=preprocess.sample_rate_hz,
        duration_s=x.shape[1] / preprocess.sample_rate_hz,
        source_rate_hz=source_rate_hz,
        interpolated=interpolated,
        notes=notes,
        header=header,
    )


def check_rate(path: Path, rate_hz: float, preprocess: PreprocessConfig) -> None:
    """Refuse a recording sampled too slowly to hold the band-pass (Nyquist): resampling cannot
    add what was never recorded, and a 1 Hz file would otherwise become confident noise."""
    least_hz = 2 * preprocess.bandpass_high_hz
    if rate_hz < least_hz:
        raise EdfError(
            f"{path}: sampled at {rate_hz:g} Hz, too slow for the {preprocess.bandpass_low_hz:g}-"
            f"{preprocess.bandpass_high_hz:g} Hz band; the least accepted is {least_hz:g} Hz "
            "(twice preprocess.bandpass_high_hz)"
        )


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


def raw_iqr(data: np.ndarray) -> np.ndarray:
    """Each row's interquartile range from every ROBUST_STATS_STEP-th sample; NaN for a row
    holding NaN. Computed once per recording: on an hour of EEG it costs as much as a filter."""
    iqr = np.full(len(data), np.nan)
    finite = np.isfinite(data).all(axis=1)
    if finite.any():
        q25, q75 = np.percentile(data[finite, ::ROBUST_STATS_STEP], [25, 75], axis=1)
        iqr[finite] = q75 - q25
    return iqr


def unusable_channels(
    path: Path,
    channels: list[str],
    data: np.ndarray,
    allowed: set[str],
    steps: DigitalSteps | None = None,
    iqr: np.ndarray | None = None,
) -> dict[str, str]:
    """Channels (rows of raw ``data``) that hold NaN, are flat, or (given the header's
    ``steps``) dead, each with why; such a channel outside ``allowed`` is an EdfError.
    ``iqr``: raw_iqr(data), where the caller has it already."""
    span = np.ptp(data, axis=1)  # NaN anywhere makes it NaN, a flat channel makes it 0
    iqr = raw_iqr(data) if iqr is None else iqr
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
    channels: list[str], data: np.ndarray, steps: DigitalSteps, iqr: np.ndarray, skip: set[str]
) -> list[str]:
    """Notes on usable channels read at coarse digital steps or clipped at the digital range
    (the clipped share estimated from every ROBUST_STATS_STEP-th sample, as the IQR is)."""
    half = steps.step[:, None] / 2
    sub = data[:, ::ROBUST_STATS_STEP]
    at_limits = np.mean((sub <= steps.low[:, None] + half) | (sub >= steps.high[:, None] - half), 1)
    notes = []
    for i, channel in enumerate(channels):
        if channel in skip:
            continue
        if iqr[i] < QUANTISED_STEPS * steps.step[i]:
            notes.append(
                f"{channel}: quantised (IQR {iqr[i] / steps.step[i]:.1f} digital steps "
                f"of {_in_units(steps.step[i], steps, i)})"
            )
        if at_limits[i] > CLIPPED_FRACTION:
            notes.append(
                f"{channel}: clipped ({at_limits[i]:.1%} of samples at the digital limits)"
            )
    return notes


def _in_units(value: float, steps: DigitalSteps, i: int) -> str:
    return f"{value / steps.unit_scale[i]:.2g} {steps.units[i]}".rstrip()


# --- reading ----------------------------------------------------------------------------------


def _read_raw(path: Path, include: list[str] | None):  # -> mne.io.BaseRaw
    """Open an EDF with mne; any failure becomes one EdfError line (garbage can fail anywhere)."""
    import mne  # imported on first use: `szdet --help` and the tests of other stages never pay

    if not path.is_file():
        raise EdfError(f"{path}: no such EDF file")
    # mne's warnings are kept from the user: what they say that matters is said as notes, e.g. a
    # record count other than the file's, which mne and record_count_note both read whole (a
    # file shorter than its header never gets here).
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        try:
            raw = mne.io.read_raw_edf(path, include=include, preload=False, verbose="warning")
        except Exception as e:  # mne raises many types on malformed headers
            raise EdfError(f"{path}: not a readable EDF ({first_line(e)})") from None
    return raw


def _read_header(path: Path) -> EdfHeader:
    """The header, parsed and checked by szdet/data/edf_header.py (a second full mne open would
    cost more than the rest of a short file's reading, and mne names bad headers vaguely)."""
    if not path.is_file():
        raise EdfError(f"{path}: no such EDF file")
    return read_readable_header(path)


def _read_signals(path: Path, labels: list[str], picks: list[int]) -> tuple[np.ndarray, float]:
    """The channels at header positions ``picks`` (of ``labels``) as float64 (k, n) and their
    sampling rate. Opening with ``include`` keeps channels at other rates (EKG, PHOTIC ...) out,
    so mne never resamples ours. mne keeps every copy of a repeated label, renamed (CHB-MIT's
    T8-P8 -> T8-P8-0, T8-P8-1), in header order: rows are therefore picked by position."""
    wanted = {labels[i] for i in picks}
    raw = _read_raw(path, include=sorted(wanted))
    opened = [i for i, label in enumerate(labels) if label in wanted]  # mne's channel order
    if len(opened) != len(raw.ch_names):
        missing = sorted(wanted - set(raw.ch_names)) or sorted(wanted)
        raise EdfError(f"{path}: mne does not read channel label {missing[0]!r} as it is written")
    try:
        data = raw.get_data(picks=[opened.index(i) for i in picks])
    except Exception as e:  # a header can promise data the file lacks
        raise EdfError(f"{path}: cannot read samples ({first_line(e)})") from None
    return data, float(raw.info["sfreq"])


# --- preprocessing steps (each works on float32 (rows, n); interpolation on the 19 electrodes) -


def resample(x: np.ndarray, from_hz: float, to_hz: float) -> np.ndarray:
    """Polyphase resampling by the exact rational factor (250 -> 256 Hz is 128/125)."""
    ratio = Fraction(to_hz / from_hz).limit_denominator(1000)
    if ratio == 1:
        return x
    out = signal.resample_poly(x, ratio.numerator, ratio.denominator, axis=1)
    return out.astype(np.float32, copy=False)


@functools.cache
def _filter_sos(sample_rate_hz: float, low_hz: float, high_hz: float, notch_hz: float | None):
    sos = signal.butter(
        BANDPASS_ORDER, [low_hz, high_hz], btype="bandpass", fs=sample_rate_hz, output="sos"
    )
    if notch_hz is not None and notch_hz < sample_rate_hz / 2:
        b, a = signal.iirnotch(notch_hz, NOTCH_Q, fs=sample_rate_hz)
        sos = np.vstack([sos, signal.tf2sos(b, a)])
    return sos.astype(np.float32)


def bandpass_notch(x: np.ndarray, preprocess: PreprocessConfig) -> np.ndarray:
    """Zero-phase band-pass (Butterworth) and notch, one cascade of second-order sections.

    Each channel's mean is taken out first: a large DC offset would cost float32 precision in
    the recursive filter, and the band-pass removes DC anyway.
    """
    x -= x.mean(axis=1, keepdims=True)
    sos = _filter_sos(
        preprocess.sample_rate_hz,
        preprocess.bandpass_low_hz,
        preprocess.bandpass_high_hz,
        preprocess.notch_hz,
    )
    return signal.sosfiltfilt(sos, x, axis=1).astype(np.float32, copy=False)


def _montage_name(channel: str) -> str:
    return channel[0] + channel[1:].lower()  # FP1 -> Fp1, FZ -> Fz, T3 -> T3


@functools.cache
def interpolation_matrix(bad: tuple[str, ...]) -> np.ndarray:
    """Weights (len(bad), 19 - len(bad)) by which mne's spherical splines fill the ``bad`` channels
    from the good ones. Interpolation is linear, so interpolating an identity over the good
    channels yields the weights; the matrix is then reused for every recording missing ``bad``."""
    import mne

    good = [c for c in CHANNELS_19 if c not in bad]
    identity = np.zeros((len(CHANNELS_19), len(good)))
    for column, channel in enumerate(good):
        identity[CHANNELS_19.index(channel), column] = 1.0
    info = mne.create_info([_montage_name(c) for c in CHANNELS_19], sfreq=1.0, ch_types="eeg")
    raw = mne.io.RawArray(identity, info, verbose="error")
    raw.set_montage(MONTAGE, verbose="error")
    raw.info["bads"] = [_montage_name(c) for c in bad]
    raw.interpolate_bads(reset_bads=True, verbose="error")
    rows = [CHANNELS_19.index(c) for c in bad]
    return raw.get_data()[rows].astype(np.float32)


def interpolate(x: np.ndarray, bad: list[str]) -> None:
    """Fill the ``bad`` rows of ``x`` in place from the others."""
    weights = interpolation_matrix(tuple(bad))
    good_rows = [i for i, c in enumerate(CHANNELS_19) if c not in bad]
    bad_rows = [CHANNELS_19.index(c) for c in bad]
    x[bad_rows] = weights @ x[good_rows]


def robust_zscore(x: np.ndarray, clip: float) -> None:
    """In place: (x - median) / (IQR / 1.349) per channel, clipped to [-clip, clip]."""
    q25, median, q75 = np.percentile(x[:, ::ROBUST_STATS_STEP], [25, 50, 75], axis=1)
    scale = np.maximum((q75 - q25) / IQR_PER_SIGMA, np.finfo(np.float32).tiny)
    x -= median[:, None].astype(np.float32)
    x /= scale[:, None].astype(np.float32)
    np.clip(x, -clip, clip, out=x)
