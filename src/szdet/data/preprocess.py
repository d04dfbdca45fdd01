"""The preprocessing steps, each a plain function over a float32 (rows, n) block of signal.

data/edf.py runs them in order over one recording, whole or in chunks; these functions are written
so that a chunk's result equals the whole recording's wherever the chunk's margins cover the step's
reach (resampling: bit for bit; the IIR filter: to float32 rounding; see data/edf.py).
"""

from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np
from scipy import signal

from szdet.config import CHANNELS_19, PreprocessConfig
from szdet.data.montage import standard_case

# Changing any of these changes the cache's contents: bump config.PREPROCESS_ALGORITHM too.
BANDPASS_ORDER = 4
NOTCH_Q = 30.0  # notch width = notch_hz / Q (2 Hz at 60 Hz)
IQR_PER_SIGMA = 1.349  # a Gaussian's interquartile range, in standard deviations
# Robust statistics (median, IQR) come from every ROBUST_STATS_STEP-th sample (the same estimate,
# 4x less sorting), and from at most MAX_STATS_SAMPLES per channel (every 4th sample of 4.5 hours
# at 256 Hz): the subsample a long recording keeps for them stays ~80 MB at any length.
ROBUST_STATS_STEP = 4
MAX_STATS_SAMPLES = 1 << 20
ELECTRODE_POSITIONS = "colin27_1020"  # mne's standard 10-20 positions (formerly "standard_1020")


def stats_step(n_samples: int) -> int:
    """Every how many samples the robust statistics of an ``n_samples`` signal look at."""
    return max(ROBUST_STATS_STEP, -(-n_samples // MAX_STATS_SAMPLES))


def subsample_into(sub: np.ndarray, first: int, block: np.ndarray, step: int) -> None:
    """Copy the samples of ``block`` (starting at sample ``first``) whose number is a multiple of
    ``step`` into their columns of ``sub``."""
    offset = (-first) % step
    picked = block[:, offset::step]
    column = (first + offset) // step
    sub[:, column : column + picked.shape[1]] = picked


def resample_ratio(from_hz: float, to_hz: float) -> Fraction:
    """The exact rational factor (250 -> 256 Hz is 128/125): ``denominator`` input samples make
    ``numerator`` output samples, so chunks cut on that period resample as the whole does."""
    return Fraction(to_hz / from_hz).limit_denominator(1000)


def resampled_length(n_samples: int, ratio: Fraction) -> int:
    return -(-n_samples * ratio.numerator // ratio.denominator)  # scipy's resample_poly length


def resample(x: np.ndarray, ratio: Fraction) -> np.ndarray:
    """Polyphase resampling by ``ratio`` (resample_ratio)."""
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
    return sos


def bandpass_notch(x: np.ndarray, preprocess: PreprocessConfig) -> np.ndarray:
    """Zero-phase band-pass (Butterworth) and notch, one cascade of second-order sections, run in
    float64 one channel at a time. The 0.5 Hz pole sits so close to the unit circle that float32
    recursion alone erred by ~5e-4 of the signal (measured), and differently in each chunk; in
    float64 a chunk agrees with the whole to float32 rounding. The caller takes each channel's
    mean out first, so a DC offset never enters the recursion."""
    sos = _filter_sos(
        preprocess.sample_rate_hz,
        preprocess.bandpass_low_hz,
        preprocess.bandpass_high_hz,
        preprocess.notch_hz,
    )
    out = np.empty_like(x, dtype=np.float32)
    for row in range(len(x)):
        out[row] = signal.sosfiltfilt(sos, x[row].astype(np.float64))
    return out


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
    info = mne.create_info([standard_case(c) for c in CHANNELS_19], sfreq=1.0, ch_types="eeg")
    raw = mne.io.RawArray(identity, info, verbose="error")
    raw.set_montage(ELECTRODE_POSITIONS, verbose="error")
    raw.info["bads"] = [standard_case(c) for c in bad]
    raw.interpolate_bads(reset_bads=True, verbose="error")
    rows = [CHANNELS_19.index(c) for c in bad]
    return raw.get_data()[rows].astype(np.float32)


def interpolate(x: np.ndarray, bad: list[str]) -> None:
    """Fill the ``bad`` rows of ``x`` in place from the others."""
    weights = interpolation_matrix(tuple(bad))
    good_rows = [i for i, c in enumerate(CHANNELS_19) if c not in bad]
    bad_rows = [CHANNELS_19.index(c) for c in bad]
    x[bad_rows] = weights @ x[good_rows]


def robust_stats(subsample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a signal's stats_step subsample: its median and its IQR in standard deviations."""
    q25, median, q75 = np.percentile(subsample, [25, 50, 75], axis=1)
    scale = np.maximum((q75 - q25) / IQR_PER_SIGMA, np.finfo(np.float32).tiny)
    return median.astype(np.float32), scale.astype(np.float32)


def zscore(x: np.ndarray, median: np.ndarray, scale: np.ndarray, clip: float) -> None:
    """In place: (x - median) / scale per row, clipped to [-clip, clip]."""
    x -= median[:, None]
    x /= scale[:, None]
    np.clip(x, -clip, clip, out=x)
