"""EDF reading and preprocessing: any scalp EEG recording -> the model's montage (19 electrodes or
18 derivations), 256 Hz, robust z-scores, whole or in chunks of bounded memory.

The steps, in order (each in szdet/data/preprocess.py):

1. read only the EEG channels we need (mne ``include``: files carry up to 128 channels, some at
   other rates), found by name and planned for ``data.montage`` by szdet/data/montage.py
   (``EEG FP1-REF``, ``Fp1-Avg``, ``fp1`` -> FP1; T7/T8/P7/P8 -> T3/T4/T5/T6; ``FP1-F7`` a derivation);
2. judge each channel on its raw samples: missing, NaN, flat or dead channels of
   ``interpolate_channels`` are filled later, others refused (robust statistics against the
   header's digital step: data/channel_checks.py); quantised or clipped channels are kept with a
   note; take each channel's mean out (a DC offset would cost the recursive
   filter float32 precision);
3. resample to ``sample_rate_hz`` by polyphase filtering;
4. band-pass and notch in one zero-phase cascade of IIR second-order sections;
5. fill the channels judged unusable by spherical-spline interpolation on the standard 10-20
   positions (mne);
6. convert to the montage (szdet/data/montage.py: exact, linear);
7. per-channel robust z-score (median, IQR) over the whole recording, clipped at +-``clip``.

`EdfSignal` runs them in three passes over the recording, each chunk by chunk (``chunk_s``): the
raw statistics of step 2; the robust statistics of step 7 over steps 3-6; then steps 3-7 again,
yielding the signal in order. Memory stays that of a chunk and the statistics' capped subsample
(preprocess.py's MAX_STATS_SAMPLES) at any length. Chunks are cut on the resampling's period, so
each resamples bit for bit as the whole would, and are filtered with FILTER_MARGIN_S of signal on
either side, cut off afterwards: the zero-phase filter's start-up transient decays like
exp(-1.2 t/s) at the 0.5 Hz band edge, leaving e^-36 of it after 30 s, far below float32 rounding.
Chunked and whole agree to float32 rounding (1e-7 of a z-score, measured). `load_edf` is one chunk: the whole recording, as the
cache stores it.

The signal is float32 between the steps; the filter recurses in float64 (preprocess.py says
why). The cache keeps float16.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from szdet.config import CHANNELS_19, PreprocessConfig
from szdet.data.channel_checks import DigitalSteps, RawStats, quality_notes, unusable_channels
from szdet.data.edf_header import (
    EdfError,
    EdfHeader,
    read_readable_header,
    record_count_note,
)
from szdet.data.montage import Montage, MontageError, plan_montage
from szdet.data.preprocess import (
    bandpass_notch,
    interpolate,
    resample,
    resample_ratio,
    resampled_length,
    robust_stats,
    stats_step,
    subsample_into,
    zscore,
)
from szdet.errors import first_line

# Changing any of these changes the cache's contents: bump config.PREPROCESS_ALGORITHM too.
MIN_DURATION_S = 1.0
FILTER_MARGIN_S = 30.0  # signal filtered on either side of a chunk, then cut off (see above)


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
    """Read and preprocess one whole recording into ``montage``; EdfError names the file and the
    problem (a recording that cannot feed ``montage`` says why)."""
    edf = EdfSignal(path, preprocess, montage)
    ((_, signal),) = edf.blocks()
    return Preprocessed(
        signal=signal,
        channels=edf.channels,
        sample_rate_hz=edf.sample_rate_hz,
        duration_s=edf.duration_s,
        source_rate_hz=edf.source_rate_hz,
        interpolated=edf.interpolated,
        notes=edf.notes,
        header=edf.header,
    )


class EdfSignal:
    """One recording opened for preprocessing: the header read and checked, the montage planned
    and the raw samples judged on opening (pass 1); `blocks` yields the preprocessed signal in
    order, ``chunk_s`` seconds at a time (None: whole)."""

    def __init__(
        self,
        path: Path,
        preprocess: PreprocessConfig,
        montage: Montage = "referential",
        chunk_s: float | None = None,
    ) -> None:
        self.path, self.preprocess = Path(path), preprocess
        self.header, count_notes = record_count_note(self.path, _read_header(self.path))
        labels = list(self.header.labels)
        try:
            self.plan = plan_montage(labels, montage, preprocess.interpolate_channels)
        except MontageError as e:
            raise EdfError(f"{path}: {e}") from None
        self.channels = self.plan.channels
        # Only electrodes can be interpolated; a recorded derivation must be usable as it is.
        allowed = set(preprocess.interpolate_channels) if self.plan.rows == CHANNELS_19 else set()
        self._present = [c for c in self.plan.rows if c in self.plan.read]
        picks = [self.plan.read[c] for c in self._present]
        self._source = _SourceSignals(self.path, labels, picks)
        self.source_rate_hz = self._source.rate_hz
        check_rate(self.path, self.source_rate_hz, preprocess)
        n_source = self._source.n_samples
        if n_source < MIN_DURATION_S * self.source_rate_hz:
            raise EdfError(f"{path}: recording too short ({n_source / self.source_rate_hz:.2f} s)")

        self.sample_rate_hz = preprocess.sample_rate_hz
        self._ratio = resample_ratio(self.source_rate_hz, self.sample_rate_hz)
        self.n_samples = resampled_length(n_source, self._ratio)
        self.duration_s = self.n_samples / self.sample_rate_hz
        period = self._ratio.numerator  # output samples per resampling period
        if chunk_s is None:
            self._chunk = self.n_samples
        else:
            self._chunk = max(1, round(chunk_s * self.sample_rate_hz / period)) * period
        self._margin = -(-round(FILTER_MARGIN_S * self.sample_rate_hz) // period) * period

        steps = DigitalSteps.of(self.path, self.header, picks)
        stats = RawStats.of_blocks(self._source_blocks(), len(picks), n_source, steps)
        unusable = unusable_channels(self.path, self._present, stats, allowed, steps)
        self.notes = [
            *count_notes,
            *self.plan.notes,
            *(f"{c} {why}: interpolated" for c, why in unusable.items()),
            *quality_notes(self._present, stats, steps, skip=set(unusable)),
        ]
        self._usable = [i for i, c in enumerate(self._present) if c not in unusable]
        self._mean = stats.mean
        self.interpolated = [c for c in self.plan.rows if c not in self.plan.read or c in unusable]
        self._last: tuple[tuple[int, int], np.ndarray] | None = None

    def spans(self) -> list[tuple[int, int]]:
        """The chunks, as [first, stop) samples of the output signal."""
        return [
            (a, min(a + self._chunk, self.n_samples)) for a in range(0, self.n_samples, self._chunk)
        ]

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first sample, float32 (len(channels), k) block) over the recording, in order (pass 3)."""
        median, scale = self._robust_stats()
        for first, stop in self.spans():
            x = self._montaged(first, stop, keep=False)
            zscore(x, median, scale, self.preprocess.clip)
            yield first, x

    def _robust_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Pass 2: median and scale of the montaged signal, from its stats_step subsample."""
        step = stats_step(self.n_samples)
        sub = np.empty((len(self.channels), -(-self.n_samples // step)), np.float32)
        for first, stop in self.spans():
            subsample_into(sub, first, self._montaged(first, stop, keep=True), step)
        return robust_stats(sub)

    def _montaged(self, first: int, stop: int, keep: bool) -> np.ndarray:
        """Steps 3-6 over the output samples [first, stop), from the raw samples around them.
        ``keep``: hold the result for the next call, which may take it (pass 2 -> 3: a whole
        recording is read and filtered once); the caller then must not change it."""
        kept, self._last = self._last, None
        if kept is not None and kept[0] == (first, stop):
            return kept[1]
        lo, hi = max(0, first - self._margin), min(self.n_samples, stop + self._margin)
        down, up = self._ratio.denominator, self._ratio.numerator
        raw = self._source.read(
            lo * down // up, self._source.n_samples if hi == self.n_samples else hi * down // up
        )
        x = np.zeros((len(self.plan.rows), raw.shape[1]), dtype=np.float32)
        for i in self._usable:
            x[self.plan.rows.index(self._present[i])] = raw[i] - self._mean[i]
        del raw
        x = bandpass_notch(resample(x, self._ratio), self.preprocess)[:, first - lo : stop - lo]
        if self.interpolated:
            interpolate(x, self.interpolated)
        x = self.plan.convert(np.ascontiguousarray(x))
        if keep:
            self._last = ((first, stop), x)
        return x

    def _source_blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """The raw samples chunk by chunk, without margins (pass 1)."""
        down, up = self._ratio.denominator, self._ratio.numerator
        n = self._source.n_samples
        size = n if self._chunk >= self.n_samples else self._chunk * down // up
        for first in range(0, n, size):
            yield first, self._source.read(first, min(first + size, n))


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


class _SourceSignals:
    """The channels at header positions ``picks`` (of ``labels``), opened for reading any range
    of samples as float64 (k, n) (mne reads only that range from disk). Opening with ``include``
    keeps channels at other rates (EKG, PHOTIC ...) out, so mne never resamples ours. mne keeps
    every copy of a repeated label, renamed (CHB-MIT's T8-P8 -> T8-P8-0, T8-P8-1), in header
    order: rows are therefore picked by position."""

    def __init__(self, path: Path, labels: list[str], picks: list[int]) -> None:
        wanted = {labels[i] for i in picks}
        self.path, self._raw = path, _read_raw(path, include=sorted(wanted))
        opened = [i for i, label in enumerate(labels) if label in wanted]  # mne's channel order
        if len(opened) != len(self._raw.ch_names):
            missing = sorted(wanted - set(self._raw.ch_names)) or sorted(wanted)
            raise EdfError(
                f"{path}: mne does not read channel label {missing[0]!r} as it is written"
            )
        self._picks = [opened.index(i) for i in picks]
        self.rate_hz = float(self._raw.info["sfreq"])
        self.n_samples = int(self._raw.n_times)
        self._last: tuple[tuple[int, int], np.ndarray] | None = None

    def read(self, first: int, stop: int) -> np.ndarray:
        """Samples [first, stop); the last range read is kept for the next call (a whole
        recording is read once)."""
        kept, self._last = self._last, None
        if kept is not None and kept[0] == (first, stop):
            return kept[1]
        try:
            data = self._raw.get_data(picks=self._picks, start=first, stop=stop)
        except Exception as e:  # a header can promise data the file lacks
            raise EdfError(f"{self.path}: cannot read samples ({first_line(e)})") from None
        self._last = ((first, stop), data)
        return data
