"""Tiny EDF files and TUSZ-shaped corpora for the data tests, written with edfio.

edfio is not the writer the synthetic corpus uses (pyEDFlib), so the reader meets two writers.
Signals are a smooth field over the scalp (a few sources mixed by electrode position) so that
neighbouring channels correlate as on a real head and interpolation can be checked.
"""

from __future__ import annotations

from pathlib import Path

import edfio
import mne
import numpy as np

from szdet.config import CHANNELS_19
from szdet.data.tusz import Event, term_events, write_annotation

EXTRA = ("A1", "A2", "T1", "T2")
NON_EEG = ("EKG1", "EMG", "PHOTIC-REF", "IBI")
PHYSICAL_RANGE_UV = (-2000.0, 2000.0)


def _positions() -> dict[str, np.ndarray]:
    """Head positions (m) of the 10-20 channels and A1/A2/T1/T2 (T1/T2 sit near T9/T10)."""
    pos = mne.channels.make_standard_montage("colin27_1020").get_positions()["ch_pos"]
    alias = {"T1": "T9", "T2": "T10"}
    return {c: pos[alias.get(c, c[0] + c[1:].lower())] for c in (*CHANNELS_19, *EXTRA)}


def scalp_field(seconds: float, rate_hz: float, seed: int = 0) -> dict[str, np.ndarray]:
    """Microvolt signals per electrode: 4 random sources (1/f-ish noise and alpha) mixed by a
    smooth function of electrode position, plus a little independent noise."""
    rng = np.random.default_rng(seed)
    n = round(seconds * rate_hz)
    t = np.arange(n) / rate_hz
    sources = np.cumsum(rng.standard_normal((4, n)), axis=1)
    sources = (sources - sources.mean(axis=1, keepdims=True)) / sources.std(axis=1, keepdims=True)
    sources[3] = np.sin(2 * np.pi * 10 * t)  # alpha
    out = {}
    for name, xyz in _positions().items():
        weights = np.array([1.0, 20 * xyz[0], 20 * xyz[1], 20 * xyz[2]])
        out[name] = 30 * weights @ sources + 10 * rng.standard_normal(n)
    return out


def write_edf(
    path: Path,
    signals: dict[str, np.ndarray],
    rate_hz: float,
    label_format: str = "EEG {}-REF",
    other_rates: dict[str, tuple[np.ndarray, float]] | None = None,
    record_s: float = 1.0,
) -> Path:
    """An EDF whose EEG channels are ``signals`` (uV) labelled by ``label_format``; labels not in
    the 10-20 set are written as given. ``other_rates``: extra channels at their own rates."""
    eeg = set(CHANNELS_19) | set(EXTRA)
    edf_signals = [
        edfio.EdfSignal(
            np.clip(data, *PHYSICAL_RANGE_UV),
            rate_hz,
            label=label_format.format(name) if name in eeg else name,
            physical_dimension="uV",
            physical_range=PHYSICAL_RANGE_UV,
        )
        for name, data in signals.items()
    ]
    for label, (data, rate) in (other_rates or {}).items():
        edf_signals.append(
            edfio.EdfSignal(
                data, rate, label=label, physical_dimension="uV", physical_range=(-1e4, 1e4)
            )
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    edfio.Edf(edf_signals, data_record_duration=record_s).write(path)
    return path


def recording_signals(seconds: float, rate_hz: float, seed: int = 0, drop: tuple[str, ...] = ()):
    field = scalp_field(seconds, rate_hz, seed)
    names = [c for c in (*CHANNELS_19, *EXTRA) if c not in drop]
    signals = {c: field[c] for c in names}
    rng = np.random.default_rng(seed + 1)
    n = len(next(iter(signals.values())))
    signals |= {c: 100 * rng.standard_normal(n) for c in NON_EEG}
    return signals


def write_recording(
    root: Path,
    split: str,
    patient: str,
    token: int = 0,
    seconds: float = 120.0,
    rate_hz: float = 250.0,
    seizures: tuple[tuple[float, float], ...] = ((40.0, 70.0),),
    setup: str = "01_tcp_ar",
    drop: tuple[str, ...] = (),
    seed: int = 0,
) -> Path:
    """One recording in the TUSZ layout with its .edf, .csv and .csv_bi; returns the EDF path."""
    folder = root / "edf" / split / patient / "s001_2010" / setup
    name = f"{patient}_s001_t{token:03d}"
    label_format = "EEG {}-LE" if setup == "02_tcp_le" else "EEG {}-REF"
    edf = write_edf(
        folder / f"{name}.edf",
        recording_signals(seconds, rate_hz, seed, drop),
        rate_hz,
        label_format,
    )
    write_annotation(edf.with_suffix(".csv_bi"), term_events(seizures, seconds), seconds)
    rows = [Event(ch, a, b, "fnsz") for a, b in seizures for ch in ("FP1-F7", "F7-T3")]
    write_annotation(edf.with_suffix(".csv"), rows, seconds)
    return edf


def write_corpus(
    root: Path, patients: dict[str, list[str]], recordings: int = 2, seconds: float = 120.0
) -> Path:
    """``patients`` per split, ``recordings`` each (rates alternate 250/256/400/512)."""
    rates = (250.0, 256.0, 400.0, 512.0)
    k = 0
    for split, names in patients.items():
        for patient in names:
            for token in range(recordings):
                write_recording(root, split, patient, token, seconds, rates[k % 4], seed=k)
                k += 1
    return root
