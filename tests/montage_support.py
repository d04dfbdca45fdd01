"""EDF files labelled as other datasets label them, all from one scalp field (tests/edf_factory.py):
CHB-MIT's bipolar chains (with its repeated T8-P8), and referential files named as Siena, SzCORE's
BIDS releases, SeizeIT or TUSZ name them."""

from __future__ import annotations

from pathlib import Path

import edfio
import numpy as np

from edf_factory import PHYSICAL_RANGE_UV, scalp_field
from szdet.config import CHANNELS_19
from szdet.data.montage import SYNONYMS
from szdet.data.tusz import term_events, write_annotation

# The EEG labels of CHB-MIT's chb01_01.edf, in its order: the double banana in 10-10 names, then
# extra derivations, T8-P8 a second time last.
CHB_MIT_LABELS = (
    "FP1-F7", "F7-T7", "T7-P7", "P7-O1", "FP1-F3", "F3-C3", "C3-P3", "P3-O1", "FP2-F4", "F4-C4",
    "C4-P4", "P4-O2", "FP2-F8", "F8-T8", "T8-P8", "P8-O2", "FZ-CZ", "CZ-PZ", "P7-T7", "T7-FT9",
    "FT9-FT10", "FT10-T8", "T8-P8",
)  # fmt: skip
_OLD_NAME = {**SYNONYMS, "FT9": "T1", "FT10": "T2"}  # T1/T2 sit where FT9/FT10 do


def ten_twenty(name: str) -> str:
    """CHB-MIT's 10-10 name -> the scalp field's electrode name (T7 -> T3, FT9 -> T1)."""
    return _OLD_NAME.get(name, name)


def bipolar_signals(
    field: dict[str, np.ndarray], repeat: np.ndarray | None = None
) -> list[tuple[str, np.ndarray]]:
    """CHB-MIT's channels as (label, uV) differences of ``field``; ``repeat``: the signal of the
    second T8-P8 instead of the true difference."""
    out = []
    for i, label in enumerate(CHB_MIT_LABELS):
        a, b = (ten_twenty(e) for e in label.split("-"))
        last = i == len(CHB_MIT_LABELS) - 1
        out.append((label, repeat if last and repeat is not None else field[a] - field[b]))
    return out


def write_labelled_edf(path: Path, channels: list[tuple[str, np.ndarray]], rate_hz: float) -> Path:
    """An EDF whose channels carry exactly these labels (repeats included)."""
    signals = [
        edfio.EdfSignal(
            np.clip(data, *PHYSICAL_RANGE_UV),
            rate_hz,
            label=label,
            physical_dimension="uV",
            physical_range=PHYSICAL_RANGE_UV,
        )
        for label, data in channels
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    edfio.Edf(signals).write(path)
    return path


def write_chb_mit_edf(
    path: Path, seconds: float, rate_hz: float = 256.0, seed: int = 0, repeat=None
) -> Path:
    field = scalp_field(seconds, rate_hz, seed)
    return write_labelled_edf(path, bipolar_signals(field, repeat), rate_hz)


def write_referential_edf(
    path: Path, seconds: float, rate_hz: float, label: str, seed: int = 0, modern: bool = False
) -> Path:
    """The 19 electrodes of the same field labelled ``label`` (e.g. ``EEG {}-REF``,
    ``{}-Avg``); ``modern``: 10-10 names (T7 for T3 ...) in mixed case (Fp1, Fz)."""
    field = scalp_field(seconds, rate_hz, seed)
    modern_name = {v: k for k, v in SYNONYMS.items()}
    channels = []
    for electrode in CHANNELS_19:
        name = modern_name.get(electrode, electrode) if modern else electrode
        shown = name[0] + name[1:].lower() if modern else name
        channels.append((label.format(shown), field[electrode]))
    return write_labelled_edf(path, channels, rate_hz)


def write_bipolar_recording(
    root: Path, split: str, patient: str, seconds: float, seizures, seed: int
) -> Path:
    """A CHB-MIT-labelled recording in the TUSZ layout, with its .csv_bi."""
    name = f"{patient}_s001_t000"
    edf = root / "edf" / split / patient / "s001_2010" / "01_tcp_ar" / f"{name}.edf"
    write_chb_mit_edf(edf, seconds, seed=seed)
    write_annotation(edf.with_suffix(".csv_bi"), term_events(seizures, seconds), seconds)
    return edf
