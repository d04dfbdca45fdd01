"""`szdet synth`: a synthetic corpus laid out exactly like TUSZ v2.0.x, for smoke runs and tests.

``OUT/edf/{train,dev,eval}/<patient>/<session>_<year>/<setup>/<patient>_<session>_<token>.edf``
with ``.csv`` (per TCP channel) and ``.csv_bi`` (TERM) annotations beside each EDF. The EDFs are
written with pyEDFlib like clinical files: 16-bit samples in microvolts, TUH channel labels
(``EEG FP1-REF``, ``EEG FP1-LE``), extra and non-EEG channels, per-session sampling rates. The
signals come from `eeg.py` (the seizures from `seizure.py`); this module plans the corpus
(patients, splits, sessions, seizure timing) and the annotations; `edf_files.py` applies each
setup's reference and writes the EDFs. Same arguments, same bytes.
"""

from __future__ import annotations

import datetime as dt
import math
import string
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from szdet.data.tusz import SETUPS, SPLITS, Event, term_events, write_annotation
from szdet.errors import UserError
from szdet.progress import progress
from szdet.synth import eeg as synth_eeg
from szdet.synth.edf_files import TREND_CHANNELS, edf_signals, write_edf
from szdet.synth.eeg import POSTICTAL_GAP_S
from szdet.synth.seizure import (
    FOCAL_LABELS,
    GENERALISED_LABELS,
    VISIBLE_WEIGHT,
    Seizure,
    draw_seizure,
)

RATES_HZ = (250, 256, 400, 512)
SETUP_SHARE = (0.6, 0.25, 0.15)  # of 01_tcp_ar, 02_tcp_le, 03_tcp_ar_a sessions
# The TCP bipolar channels the .csv annotations name (03_tcp_ar_a drops the two with A1/A2).
TCP_PAIRS = (("FP1", "F7"), ("F7", "T3"), ("T3", "T5"), ("T5", "O1"), ("FP2", "F8"), ("F8", "T4"),
             ("T4", "T6"), ("T6", "O2"), ("A1", "T3"), ("T3", "C3"), ("C3", "CZ"), ("CZ", "C4"),
             ("C4", "T4"), ("T4", "A2"), ("FP1", "F3"), ("F3", "C3"), ("C3", "P3"), ("P3", "O1"),
             ("FP2", "F4"), ("F4", "C4"), ("C4", "P4"), ("P4", "O2"))  # fmt: skip
MIN_RECORDING_S = 60  # one model window
SEIZURE_MARGIN_S = 15.0  # seizures keep this far from a recording's edges
_BASE26_LETTERS = str.maketrans("0123456789ABCDEFGHIJKLMNOP", string.ascii_lowercase)


@dataclass(frozen=True)
class Difficulty:
    """How hard the corpus is to read. ``easy`` (the default, `make smoke`'s) is learnt to dev
    AUROC ~0.99 in minutes; ``hard`` has weaker, shorter and rarer seizures among more seizure-like
    artefacts, so operating points chosen by false-alarm budget differ (tests/test_export.py)."""

    seizure_share: tuple[float, float]  # of each split's time, drawn per split
    seizure_s: tuple[float, float]  # length of a seizure (absences: 10-20 s within it)
    peak_uv: tuple[float, float]  # the discharge's amplitude at its height
    artefact_every_s: float  # one seizure-like rhythmic artefact per this much EEG, on average
    # Shape of the gamma draw of each patient's seizure propensity: small, a few patients have
    # most seizures; large, they spread over more patients (as a bootstrap over patients needs).
    propensity_shape: float


DIFFICULTIES = {
    "easy": Difficulty((0.10, 0.14), (10.0, 120.0), (60.0, 250.0), 150.0, 0.7),
    "hard": Difficulty((0.03, 0.05), (10.0, 60.0), (40.0, 100.0), 60.0, 4.0),
}


@dataclass(frozen=True)
class SessionLayout:
    """What one recording session's equipment writes: setup, rate, channels, ranges."""

    setup: str  # tusz.SETUPS
    rate_hz: int
    lacks_fz_pz: bool
    modern_names: bool  # T7/T8/P7/P8 in place of T3/T4/T5/T6
    extras: tuple[str, ...]  # ROC, LOC, T1, T2, EMG, PHOTIC PH, IBI, BURSTS, SUPPR (EKG1 always)
    trend_rate_hz: int  # IBI/BURSTS/SUPPR are slow trend channels on some machines
    physical_max_uv: float
    digital_min: int


@dataclass
class RecordingPlan:
    split: str
    patient: str
    session: str  # s001_2003
    token: str  # t000
    duration_s: int
    start: dt.datetime
    layout: SessionLayout
    sex: int  # 1 male, 0 female (EDF convention of pyEDFlib)
    birth_year: int
    index: int  # position in the corpus: seeds this recording's signals
    seizures: list[tuple[float, float, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.patient}_{self.session.split('_')[0]}_{self.token}"

    def edf_path(self, root: Path) -> Path:
        folder = root / "edf" / self.split / self.patient / self.session / self.layout.setup
        return folder / f"{self.name}.edf"


@dataclass(frozen=True)
class SplitSummary:
    patients: int
    recordings: int
    hours: float
    seizure_hours: float
    seizures: int


@dataclass(frozen=True)
class CorpusSummary:
    root: Path
    splits: dict[str, SplitSummary]


# --- planning ---------------------------------------------------------------------------------


def plan_corpus(
    patients: int, minutes: float, seed: int, difficulty: Difficulty = DIFFICULTIES["easy"]
) -> list[RecordingPlan]:
    """Every recording of the corpus with its layout and seizure timing (no signals yet)."""
    rng = np.random.default_rng([seed, 0])
    ids = _patient_ids(rng, patients)
    n_dev = n_eval = max(1, round(0.2 * patients))
    splits = ["dev"] * n_dev + ["eval"] * n_eval + ["train"] * (patients - n_dev - n_eval)
    split_of = dict(zip(ids, splits, strict=True))
    per_patient = [
        (p, _session_sizes(rng, _durations(rng, round(minutes * 60)))) for p in sorted(ids)
    ]
    layouts = iter(_session_layouts(rng, sum(len(s) for _, s in per_patient)))
    plans: list[RecordingPlan] = []
    for patient, sessions in per_patient:
        sex, birth_year = int(rng.integers(0, 2)), int(rng.integers(1930, 1990))
        day = dt.datetime(int(rng.integers(2002, 2012)), 1, 1) + dt.timedelta(
            days=int(rng.integers(365))
        )
        for number, durations in enumerate(sessions, start=1):
            layout = next(layouts)
            start = day.replace(hour=int(rng.integers(7, 17)), minute=int(rng.integers(60)))
            for token, duration_s in enumerate(durations):
                plans.append(
                    RecordingPlan(
                        split=split_of[patient], patient=patient,
                        session=f"s{number:03d}_{day.year}", token=f"t{token:03d}",
                        duration_s=duration_s, start=start, layout=layout, sex=sex,
                        birth_year=birth_year, index=len(plans),
                    )
                )  # fmt: skip
                start += dt.timedelta(seconds=duration_s + int(rng.integers(5, 600)))
            day += dt.timedelta(days=int(rng.integers(1, 500)))
    plans.sort(key=lambda p: (SPLITS.index(p.split), p.patient, p.session, p.token))
    for split in SPLITS:
        _plan_seizures(rng, [p for p in plans if p.split == split], difficulty)
    return plans


def _patient_ids(rng: np.random.Generator, count: int) -> list[str]:
    """Distinct 8-letter ids like TUSZ's (aaaaaaac, aaaaaphw): base-26 numbers padded with 'a',
    in random order."""
    numbers = rng.choice(26**5, size=count, replace=False)
    return [np.base_repr(int(n), 26).rjust(8, "0").translate(_BASE26_LETTERS) for n in numbers]


def _durations(rng: np.random.Generator, total_s: int) -> list[int]:
    """Recording lengths of a few minutes each (TUSZ files vary widely) summing to total_s."""
    durations: list[int] = []
    while total_s > 0:
        length = int(np.clip(rng.lognormal(np.log(240), 0.5), 90, 900))
        if total_s - length < MIN_RECORDING_S:
            length = total_s
        durations.append(length)
        total_s -= length
    return durations


def _session_sizes(rng: np.random.Generator, durations: list[int]) -> list[list[int]]:
    """Consecutive recordings grouped into sessions of one to three recordings."""
    sessions, i = [], 0
    while i < len(durations):
        size = int(rng.integers(1, 4))
        sessions.append(durations[i : i + size])
        i += size
    return sessions


def _session_layouts(rng: np.random.Generator, count: int) -> list[SessionLayout]:
    """Per-session equipment; the first sessions cycle through every setup and rate so a corpus
    of a few patients holds them all, and the rarer variants are forced to appear at least once."""
    setups = [*rng.permutation(SETUPS), *rng.choice(SETUPS, count, p=SETUP_SHARE)][:count]
    rates = [*rng.permutation(RATES_HZ), *rng.choice(RATES_HZ, count)][:count]
    layouts = []
    for setup, rate in zip(setups, rates, strict=True):
        extras = ["EKG1"]
        for group, chance in ((("ROC", "LOC"), 0.6), (("T1", "T2"), 0.4), (("EMG",), 0.3),
                              (("PHOTIC PH",), 0.7), (TREND_CHANNELS, 0.5)):  # fmt: skip
            if rng.random() < chance:
                extras += group
        ar = setup != "02_tcp_le"
        layouts.append(
            SessionLayout(
                setup=str(setup), rate_hz=int(rate),
                lacks_fz_pz=bool(ar and rng.random() < 0.15),
                modern_names=bool(rng.random() < 0.1), extras=tuple(extras),
                trend_rate_hz=int(rng.choice([1, int(rate)])),
                physical_max_uv=float(rng.choice([4999.84, 3276.7])),
                digital_min=int(rng.choice([-32767, -32768])),
            )
        )  # fmt: skip
    ar_sessions = [i for i, lay in enumerate(layouts) if lay.setup != "02_tcp_le"]
    if len(ar_sessions) > 1 and not any(layouts[i].lacks_fz_pz for i in ar_sessions):
        layouts[ar_sessions[-1]] = replace(layouts[ar_sessions[-1]], lacks_fz_pz=True)
    if count > 1 and not any(lay.modern_names for lay in layouts):
        layouts[-2] = replace(layouts[-2], modern_names=True)
    return layouts


def _plan_seizures(
    rng: np.random.Generator, plans: list[RecordingPlan], difficulty: Difficulty
) -> None:
    """Seizures (10-120 s when easy) filling a share of the split's time (10-14% when easy), at
    most two per recording, more likely in some patients than others; every split gets one."""
    total_s = sum(p.duration_s for p in plans)
    shortest, longest = difficulty.seizure_s
    target_s, placed_s = rng.uniform(*difficulty.seizure_share) * total_s, 0.0
    propensity = {p.patient: rng.gamma(difficulty.propensity_shape) + 0.05 for p in plans}
    weights = np.array([p.duration_s * propensity[p.patient] for p in plans])
    for _ in range(50 * len(plans)):
        if placed_s >= target_s and placed_s > 0:
            break
        plan = plans[rng.choice(len(plans), p=weights / weights.sum())]
        label = str(rng.choice(GENERALISED_LABELS if rng.random() < 0.25 else FOCAL_LABELS))
        length = (
            rng.uniform(10, 20)
            if label == "absz"
            else np.exp(rng.uniform(np.log(shortest), np.log(longest)))
        )
        length = round(float(np.clip(min(length, target_s - placed_s), shortest, longest)), 2)
        start = _seizure_start(rng, plan, length)
        if len(plan.seizures) < 2 and start is not None:
            plan.seizures.append((start, round(start + length, 4), label))
            plan.seizures.sort()
            placed_s += length


def _seizure_start(rng: np.random.Generator, plan: RecordingPlan, length_s: float) -> float | None:
    latest = plan.duration_s - SEIZURE_MARGIN_S - length_s
    for _ in range(20):
        start = (
            round(rng.uniform(SEIZURE_MARGIN_S, latest), 4) if latest > SEIZURE_MARGIN_S else -1.0
        )
        if start >= 0 and all(
            start + length_s + POSTICTAL_GAP_S <= a or start >= b + POSTICTAL_GAP_S
            for a, b, _ in plan.seizures
        ):
            return start
    return None


def channel_events(plan: RecordingPlan, seizures: list[Seizure]) -> list[Event]:
    """The .csv rows: per TCP channel, each seizure (labelled with its type) from the moment either
    electrode is recruited, on the channels where it shows (and always on those through the
    electrode where it starts); ``bckg`` elsewhere, covering the whole recording."""
    no_ears = plan.layout.setup == "03_tcp_ar_a"
    pairs = [p for p in TCP_PAIRS if not (no_ears and {"A1", "A2"} & set(p))]
    events: list[Event] = []
    for a, b in pairs:
        channel, labels, spans = f"{a}-{b}", {}, []
        for sz in seizures:
            delays = [sz.onset_delay_s[e] for e in (a, b) if e in sz.onset_delay_s]
            if delays and (min(delays) == 0 or sz.bipolar_weight(a, b) >= VISIBLE_WEIGHT):
                start = round(sz.start_s + min(delays), 4)
                spans.append((start, sz.stop_s))
                labels[start] = sz.label
        for e in term_events(spans, plan.duration_s):
            label = labels[e.start_s] if e.is_seizure else e.label
            events.append(replace(e, channel=channel, label=label))
    return events


def write_recording(
    root: Path, plan: RecordingPlan, seed: int, difficulty: Difficulty = DIFFICULTIES["easy"]
) -> None:
    rng = np.random.default_rng([seed, 1, plan.index])
    seizures = [draw_seizure(rng, a, b, label, difficulty.peak_uv) for a, b, label in plan.seizures]
    eeg = synth_eeg.simulate(
        rng, plan.duration_s, plan.layout.rate_hz, seizures, difficulty.artefact_every_s
    )
    edf = plan.edf_path(root)
    write_edf(edf, plan, edf_signals(plan, eeg))
    duration_s = float(plan.duration_s)
    spans = [(a, b) for a, b, _ in plan.seizures]
    write_annotation(edf.with_suffix(".csv"), channel_events(plan, seizures), duration_s, plan.name)
    write_annotation(
        edf.with_suffix(".csv_bi"), term_events(spans, duration_s), duration_s, plan.name
    )


def write_corpus(
    out: Path, patients: int, minutes: float, seed: int, difficulty: str = "easy"
) -> CorpusSummary:
    """Write the corpus under ``out/edf/``; print one summary line per split."""
    _check_arguments(Path(out), patients, minutes, seed)
    plans = plan_corpus(patients, minutes, seed, DIFFICULTIES[difficulty])
    for plan in progress(plans, desc="synth", total=len(plans), unit="rec"):
        write_recording(Path(out), plan, seed, DIFFICULTIES[difficulty])
    summary = CorpusSummary(
        Path(out), {s: _summarise([p for p in plans if p.split == s]) for s in SPLITS}
    )
    for split, s in summary.splits.items():
        print(
            f"synth {split}: {s.patients} patients, {s.recordings} recordings, {s.hours:.2f} h, "
            f"{s.seizures} seizures, {s.seizure_hours:.2f} seizure h "
            f"({100 * s.seizure_hours / s.hours:.1f}%)"
        )
    return summary


def _summarise(plans: list[RecordingPlan]) -> SplitSummary:
    seizures = [b - a for p in plans for a, b, _ in p.seizures]
    return SplitSummary(
        patients=len({p.patient for p in plans}),
        recordings=len(plans),
        hours=sum(p.duration_s for p in plans) / 3600,
        seizure_hours=sum(seizures) / 3600,
        seizures=len(seizures),
    )


def _check_arguments(out: Path, patients: int, minutes: float, seed: int) -> None:
    if patients < 3:
        raise UserError(f"--patients {patients}: need at least 3 (one each for train, dev, eval)")
    if not (math.isfinite(minutes) and minutes * 60 >= MIN_RECORDING_S):
        raise UserError(f"--minutes {minutes}: need at least 1 minute of EEG per patient")
    if seed < 0:
        raise UserError(f"--seed {seed}: must be a non-negative integer")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if (out / "edf").is_dir() and any((out / "edf").iterdir()):
        raise UserError(f"{out / 'edf'}: already holds a corpus; choose an empty folder")
