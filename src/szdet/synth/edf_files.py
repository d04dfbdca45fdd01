"""The synthetic corpus's EDF files (synth/corpus.py plans them): a recording's simulated
potentials re-referenced as its setup records them, TUH's channel labels and extra channels, and
16-bit samples in microvolts written with pyEDFlib like a clinical file."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyedflib

from szdet.config import CHANNELS_19
from szdet.fileio import atomic_path
from szdet.synth import eeg as synth_eeg

if TYPE_CHECKING:  # corpus.py imports this module
    from szdet.synth.corpus import RecordingPlan, SessionLayout

# TUH's channel order; A1/A2 are absent from 03_tcp_ar_a files.
EEG_ORDER = ("FP1", "FP2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "F7", "F8", "T3", "T4",
             "T5", "T6", "A1", "A2", "FZ", "CZ", "PZ")  # fmt: skip
MODERN_NAMES = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}
TREND_CHANNELS = ("IBI", "BURSTS", "SUPPR")
DIGITAL_MAX = 32767
EEG_PREFILTER = "HP:0.000 Hz LP:0.0 Hz N:0.0"


@dataclass(frozen=True)
class Signal:
    label: str
    samples_uv: np.ndarray  # float32
    rate_hz: int
    prefilter: str = ""


def edf_signals(plan: RecordingPlan, eeg: synth_eeg.SimulatedEEG) -> list[Signal]:
    """The EDF's channels: scalp potentials re-referenced as the setup records them (average
    of the 19 scalp electrodes for AR, linked ears for LE), then the extra and non-EEG channels."""
    layout, v = plan.layout, eeg.potentials_uv
    row = synth_eeg.INDEX
    if layout.setup == "02_tcp_le":
        reference, suffix = 0.5 * (v[row["A1"]] + v[row["A2"]]), "-LE"
    else:
        reference, suffix = v[[row[e] for e in CHANNELS_19]].mean(axis=0), "-REF"
    electrodes = [e for e in EEG_ORDER if not (layout.lacks_fz_pz and e in ("FZ", "PZ"))]
    if layout.setup == "03_tcp_ar_a":
        electrodes = [e for e in electrodes if e not in ("A1", "A2")]
    electrodes += [e for e in ("ROC", "LOC", "T1", "T2") if e in layout.extras]

    def eeg_label(name: str) -> str:
        return f"EEG {MODERN_NAMES.get(name, name) if layout.modern_names else name}{suffix}"

    rate = layout.rate_hz
    signals = [Signal(eeg_label(e), v[row[e]] - reference, rate, EEG_PREFILTER) for e in electrodes]
    signals.append(Signal(eeg_label("EKG1"), eeg.ecg_uv, rate))
    if "EMG" in layout.extras:
        signals.append(Signal(f"EMG{suffix}", eeg.emg_uv, rate))
    if "PHOTIC PH" in layout.extras:
        signals.append(Signal("PHOTIC PH", eeg.photic_uv, rate))
    trend_samples = plan.duration_s * layout.trend_rate_hz
    for name in TREND_CHANNELS if TREND_CHANNELS[0] in layout.extras else ():
        signals.append(Signal(name, np.zeros(trend_samples, np.float32), layout.trend_rate_hz))
    return signals


def write_edf(path: Path, plan: RecordingPlan, signals: list[Signal]) -> None:
    """A plain EDF with 1 s data records and 16-bit samples, atomically."""
    layout = plan.layout
    p_max, d_min = layout.physical_max_uv, layout.digital_min
    gain = (DIGITAL_MAX - d_min) / (2 * p_max)  # digital steps per microvolt
    records = []
    for s in signals:
        digital = np.rint((np.clip(s.samples_uv, -p_max, p_max) + p_max) * gain + d_min)
        records.append(digital.astype(np.int16).reshape(plan.duration_s, s.rate_hz))
    data = np.ascontiguousarray(np.concatenate(records, axis=1))
    with atomic_path(path) as tmp:
        writer = pyedflib.EdfWriter(str(tmp), len(signals), file_type=pyedflib.FILETYPE_EDF)
        try:
            writer.setSignalHeaders([_signal_header(s, layout) for s in signals])
            writer.setHeader(_file_header(plan))
            for record in data:
                if writer.blockWriteDigitalShortSamples(record) < 0:
                    raise OSError(f"{path}: pyEDFlib failed to write a data record")
        finally:
            writer.close()


def _signal_header(s: Signal, layout: SessionLayout) -> dict[str, str | int | float | None]:
    return {
        "label": s.label, "dimension": "uV", "sample_frequency": s.rate_hz,
        "physical_max": layout.physical_max_uv, "physical_min": -layout.physical_max_uv,
        "digital_max": DIGITAL_MAX, "digital_min": layout.digital_min,
        "prefilter": s.prefilter, "transducer": "",
    }  # fmt: skip


def _file_header(plan: RecordingPlan) -> dict[str, Any]:
    """Patient and recording fields as TUH's clinical EDFs fill them."""
    return {
        "patientcode": plan.patient, "patientname": plan.patient, "sex": plan.sex,
        "birthdate": dt.date(plan.birth_year, 1, 1),
        "patient_additional": f"Age:{plan.start.year - plan.birth_year}",
        "admincode": plan.name.rsplit("_", 1)[0], "technician": "", "equipment": "",
        "recording_additional": "", "startdate": plan.start,
    }  # fmt: skip
