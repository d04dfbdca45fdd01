"""The synthetic corpus: TUSZ layout and formats, read back with two EDF readers other than the
writer (mne, edfio), and the structure of its signals checked with spectra."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import edfio
import mne
import numpy as np
import pytest
from scipy.signal import butter, sosfiltfilt, welch

from szdet.cli import main
from szdet.config import CHANNELS_19
from szdet.data.tusz import (
    SETUPS,
    SPLITS,
    Annotation,
    RecordingFiles,
    check_patient_disjoint,
    find_recordings,
    merge_intervals,
    read_annotation,
)
from szdet.errors import UserError
from szdet.fileio import sha256_file
from szdet.synth.corpus import (
    DIFFICULTIES,
    RATES_HZ,
    TCP_PAIRS,
    CorpusSummary,
    plan_corpus,
    write_corpus,
)
from szdet.synth.eeg import _rhythmic_artefact_kinds
from szdet.synth.seizure import FOCAL_LABELS, draw_seizure

SYNONYMS = {"T7": "T3", "T8": "T4", "P7": "T5", "P8": "T6"}
NON_EEG = ("EKG", "EMG", "PHOTIC", "IBI", "BURSTS", "SUPPR")
PATH = re.compile(
    r"edf/(train|dev|eval)/([a-z]{8})/(s\d{3})_(\d{4})/(01_tcp_ar|02_tcp_le|03_tcp_ar_a)/"
    r"\2_\3_t\d{3}\.(edf|csv|csv_bi)"
)


@dataclass
class Recording:
    files: RecordingFiles
    labels: list[str]  # as written in the EDF
    signals_uv: dict[str, np.ndarray]  # normalised electrode name (T3 style) -> samples
    fs: float
    duration_s: float  # as mne reads it
    term: Annotation  # .csv_bi
    channels: Annotation  # .csv

    def bipolar(self, pair: str) -> np.ndarray:
        a, b = pair.split("-")
        return self.signals_uv[a] - self.signals_uv[b]

    def seconds(self, x: np.ndarray, start_s: float, stop_s: float) -> np.ndarray:
        return x[int(start_s * self.fs) : int(stop_s * self.fs)]


def electrode(label: str) -> str:
    name = re.sub(r"-(REF|LE)$", "", label.removeprefix("EEG "))
    return SYNONYMS.get(name, name)


def read_recording(files: RecordingFiles) -> Recording:
    raw = mne.io.read_raw_edf(files.edf, preload=True, verbose="error")
    data_uv = raw.get_data() * 1e6
    assert files.csv is not None and files.csv_bi is not None
    return Recording(
        files=files,
        labels=list(raw.ch_names),
        signals_uv={electrode(c): data_uv[i] for i, c in enumerate(raw.ch_names)},
        fs=raw.info["sfreq"],
        duration_s=raw.n_times / raw.info["sfreq"],
        term=read_annotation(files.csv_bi),
        channels=read_annotation(files.csv),
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, CorpusSummary]:
    root = tmp_path_factory.mktemp("synth") / "corpus"
    return root, write_corpus(root, patients=6, minutes=6, seed=3)


@pytest.fixture(scope="module")
def recordings(corpus) -> list[Recording]:
    root, _ = corpus
    return [read_recording(f) for split in SPLITS for f in find_recordings(root, split)]


def seizures(rec: Recording) -> list[tuple[float, float]]:
    return [(e.start_s, e.stop_s) for e in rec.term.events if e.is_seizure]


def background_spans(rec: Recording) -> list[tuple[float, float]]:
    return [(e.start_s, e.stop_s) for e in rec.term.events if not e.is_seizure]


# --- layout, names, annotations ---------------------------------------------------------------


def test_layout_and_names_match_tusz(corpus):
    root, summary = corpus
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert PATH.fullmatch(path.relative_to(root).as_posix()), path
    for split in SPLITS:
        found = find_recordings(root, split)
        assert len(found) == summary.splits[split].recordings > 0
        for f in found:
            assert f.csv is not None and f.csv_bi is not None
            assert f.session.split("_")[0] == f.name.split("_")[1]


def test_summary_is_printed_per_split(tmp_path, capsys):
    summary = write_corpus(tmp_path / "c", patients=3, minutes=1.5, seed=1)
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [f"synth {s}" for s in SPLITS]
    for line, split in zip(lines, SPLITS, strict=True):
        assert f"{summary.splits[split].recordings} recordings" in line


def test_annotation_duration_equals_edf_duration_in_mne_and_edfio(recordings):
    for rec in recordings:
        edf = edfio.read_edf(rec.files.edf)
        assert rec.term.duration_s == rec.channels.duration_s == rec.duration_s == edf.duration
        assert rec.term.bname == rec.channels.bname == rec.files.name


def test_csv_bi_covers_the_recording_contiguously(recordings):
    for rec in recordings:
        events = rec.term.events
        assert {e.channel for e in events} == {"TERM"}
        assert {e.label for e in events} <= {"seiz", "bckg"}
        assert events[0].start_s == 0 and events[-1].stop_s == rec.duration_s
        for before, after in itertools.pairwise(events):
            assert before.stop_s == after.start_s and before.label != after.label


def test_csv_rows_are_per_tcp_channel_and_their_union_is_the_csv_bi(recordings):
    for rec in recordings:
        with_ears = rec.files.setup != "03_tcp_ar_a"
        expected = {f"{a}-{b}" for a, b in TCP_PAIRS if with_ears or not {"A1", "A2"} & {a, b}}
        rows: dict[str, list] = {}
        for e in rec.channels.events:
            rows.setdefault(e.channel, []).append(e)
        assert set(rows) == expected
        for channel_rows in rows.values():  # each channel covers the recording
            assert channel_rows[0].start_s == 0 and channel_rows[-1].stop_s == rec.duration_s
            assert all(a.stop_s == b.start_s for a, b in itertools.pairwise(channel_rows))
        seizure_labels = {e.label for e in rec.channels.events if e.is_seizure}
        assert "seiz" not in seizure_labels and "bckg" not in seizure_labels
        assert rec.channels.seizure_intervals() == merge_intervals(seizures(rec))


def test_splits_are_patient_disjoint_and_all_hold_seizures(corpus, recordings):
    root, summary = corpus
    check_patient_disjoint(root)
    assert [summary.splits[s].patients for s in SPLITS] == [4, 1, 1]
    for split in SPLITS:
        assert any(seizures(r) for r in recordings if r.files.split == split), split
    for patients, expected in ((3, [1, 1, 1]), (10, [6, 2, 2]), (20, [12, 4, 4])):
        plans = plan_corpus(patients, minutes=2, seed=0)
        assert [len({p.patient for p in plans if p.split == s}) for s in SPLITS] == expected


def test_each_patient_gets_the_minutes_asked_for(recordings):
    seconds: dict[str, float] = {}
    for rec in recordings:
        seconds[rec.files.patient] = seconds.get(rec.files.patient, 0.0) + rec.duration_s
    assert set(seconds.values()) == {6 * 60}
    assert len(recordings) > len(seconds)  # some patients have several recordings


def test_seizure_durations_and_burden(recordings):
    lengths = [b - a for rec in recordings for a, b in seizures(rec)]
    assert all(10 - 1e-3 <= length <= 120 + 1e-3 for length in lengths)
    assert all(len(seizures(rec)) <= 2 for rec in recordings)
    burden = sum(lengths) / sum(rec.duration_s for rec in recordings)
    assert 0.08 <= burden <= 0.15


# --- EDF contents -----------------------------------------------------------------------------


def test_setups_rates_and_channel_variants(recordings):
    assert {rec.files.setup for rec in recordings} == set(SETUPS)
    assert {int(rec.fs) for rec in recordings} == set(RATES_HZ)
    lacking = [r for r in recordings if not {"FZ", "PZ"} <= set(r.signals_uv)]
    assert lacking and all(r.files.setup != "02_tcp_le" for r in lacking)
    modern = re.compile(r"EEG (T7|T8|P7|P8)-")
    assert any(modern.match(c) for r in recordings for c in r.labels)
    for rec in recordings:
        suffix = "-LE" if rec.files.setup == "02_tcp_le" else "-REF"
        eeg = [c for c in rec.labels if c.startswith("EEG ")]
        assert all(c.endswith(suffix) for c in eeg), rec.labels
        assert set(CHANNELS_19) - {"FZ", "PZ"} <= set(rec.signals_uv)
        has_ears = {"A1", "A2"} <= set(rec.signals_uv)
        assert has_ears == (rec.files.setup != "03_tcp_ar_a")
        assert any(any(tag in c for tag in NON_EEG) for c in rec.labels)


def test_edfio_and_mne_agree_on_units_scaling_and_rates(recordings):
    for rec in recordings[:4]:
        edf = edfio.read_edf(rec.files.edf)
        for signal in edf.signals:
            assert signal.physical_dimension == "uV"
            assert signal.digital_max - signal.digital_min in (65534, 65535)  # 16-bit range
            if signal.label.startswith("EEG "):
                assert signal.sampling_frequency == rec.fs
                np.testing.assert_allclose(
                    signal.data, rec.signals_uv[electrode(signal.label)], atol=1e-6
                )
        assert edf.patient.code == rec.files.patient
        assert edf.recording.startdate.year == int(rec.files.session.split("_")[1])


def test_signals_are_referenced_as_their_setup_says(recordings):
    """AR: the 19 scalp channels average to zero; LE: A1-LE = -A2-LE (each ear against both)."""
    checked = set()
    for rec in recordings:
        x = rec.signals_uv
        if rec.files.setup == "02_tcp_le":
            residual = x["A1"] + x["A2"]
        elif set(CHANNELS_19) <= set(x):
            residual = np.mean([x[e] for e in CHANNELS_19], axis=0)
        else:
            continue
        assert np.abs(residual).max() < 0.5, rec.files.name  # 16-bit rounding only
        checked.add(rec.files.setup)
    assert "02_tcp_le" in checked and {"01_tcp_ar", "03_tcp_ar_a"} & checked


def test_background_amplitude_is_like_real_eeg(recordings):
    for rec in recordings:
        second = int(rec.fs)
        for pair in ("C3-P3", "C4-P4", "F3-C3"):
            pieces = [rec.seconds(rec.bipolar(pair), a, b) for a, b in background_spans(rec)]
            seconds = np.concatenate([p[: p.size // second * second] for p in pieces])
            typical_rms = np.median(seconds.reshape(-1, second).std(axis=1))  # artefacts aside
            assert 5 <= typical_rms <= 50, (rec.files.name, pair, typical_rms)


# --- signal structure -------------------------------------------------------------------------


def typical_spectrum(rec: Recording, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Welch spectrum of x over the unlabelled time, the median over 4-s segments: what the
    channel usually looks like, unmoved by a transient artefact."""
    segment = int(4 * rec.fs)
    pieces = [rec.seconds(x, a, b) for a, b in background_spans(rec)]
    joined = np.concatenate([p[: p.size // segment * segment] for p in pieces])
    return welch(joined, rec.fs, nperseg=segment, noverlap=0, average="median")


def spectrum_at(rec: Recording, x: np.ndarray, start_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Spectrum of the 4 s from start_s, at the same resolution."""
    return welch(rec.seconds(x, start_s, start_s + 4), rec.fs, nperseg=int(4 * rec.fs))


def test_occipital_background_has_alpha_peak_and_falling_spectrum(recordings):
    for rec in recordings:
        f, p = typical_spectrum(rec, rec.signals_uv["O1"])
        alpha = p[(f >= 8) & (f <= 12)].max()
        flanks = np.mean([p[(f >= 5) & (f <= 6.5)].mean(), p[(f >= 14) & (f <= 16)].mean()])
        assert alpha > 2 * flanks, rec.files.name
        fit = ((f >= 1) & (f <= 7)) | ((f >= 14) & (f <= 40))
        slope = np.polyfit(np.log10(f[fit]), np.log10(p[fit]), 1)[0]
        assert slope < -0.7, (rec.files.name, slope)


def _label(rec: Recording, start_s: float) -> str:
    return next(e.label for e in rec.channels.events if e.is_seizure and e.start_s == start_s)


def _channel_starts(rec: Recording, start_s: float, stop_s: float) -> dict[str, float]:
    """When each TCP channel joins the seizure [start_s, stop_s], per the .csv."""
    rows = [e for e in rec.channels.events if e.is_seizure and start_s <= e.start_s < stop_s]
    return {e.channel: e.start_s for e in rows}


def _rise(rec: Recording, channel: str, at_s: float) -> float:
    """Power at 2-10 Hz (the seizure rhythms) over the 4 s from at_s, against the channel's
    typical power there."""
    x = rec.bipolar(channel)
    f, typical = typical_spectrum(rec, x)
    _, now = spectrum_at(rec, x, at_s)
    band = (f >= 2) & (f <= 10)
    return float(now[band].sum() / typical[band].sum())


def test_seizure_has_dominant_rhythm_above_its_channel_background(recordings):
    checked = 0
    for rec in recordings:
        for start, stop in seizures(rec):
            if stop - start < 20:
                continue
            starts = _channel_starts(rec, start, stop)
            onset = [c for c, s in starts.items() if s == start]
            strongest = (0.0, 0.0)
            for channel in onset:  # the most involved of the first channels
                x = rec.bipolar(channel)
                f, now = spectrum_at(rec, x, (start + stop) / 2 - 2)
                _, typical = typical_spectrum(rec, x)
                band = (f >= 1.5) & (f <= 10)
                peak = np.flatnonzero(band)[np.argmax(now[band])]
                dominance = now[peak] / np.median(now[(f >= 1) & (f <= 30)])
                strongest = max(strongest, (now[peak] / typical[peak], dominance))
            above_background, dominance = strongest
            assert above_background > 5 and dominance > 5, (rec.files.name, start, strongest)
            checked += 1
    assert checked >= 2


def test_focal_seizures_start_on_few_channels_then_spread(recordings):
    """At onset the rhythmic power rises on the channels annotated first and not on those the
    .csv says join later (or never); those that join later light up later."""
    focal, confined, spread = 0, 0, 0
    for rec in recordings:
        for start, stop in seizures(rec):
            if _label(rec, start) not in FOCAL_LABELS:
                continue
            focal += 1
            starts = _channel_starts(rec, start, stop)
            onset = [c for c, s in starts.items() if s == start]
            assert len(onset) <= 6, (rec.files.name, onset)
            at_onset = np.median([_rise(rec, c, start) for c in onset])
            assert at_onset > 2.5, (rec.files.name, start, at_onset)
            # Silent during the onset window [start, start + 4 s]: recruited later, or never.
            late = [c for c, s in starts.items() if s > start + 4]
            never = [f"{a}-{b}" for a, b in TCP_PAIRS if f"{a}-{b}" not in starts and {a, b} <= set(rec.signals_uv)]  # fmt: skip
            silent = [c for c in late + never if "FP" not in c]  # blinks own the FP channels
            if silent:
                elsewhere = np.median([_rise(rec, c, start) for c in silent])
                assert elsewhere < at_onset / 2, (rec.files.name, start, elsewhere)
                confined += 1
            joined = [c for c in late if starts[c] + 8 < stop]
            if joined:
                later = np.median([_rise(rec, c, (starts[c] + stop) / 2 - 2) for c in joined])
                assert later > 2, (rec.files.name, start, later)
                spread += 1
    assert focal >= 3 and confined >= 2 and spread >= 1, (focal, confined, spread)


def _chewing_windows(rec: Recording, spans: list[tuple[float, float]]) -> list[float]:
    """Start times of 6-s windows where temporal muscle power pulses at 1-2 Hz."""
    sos = butter(4, 30, "highpass", fs=rec.fs, output="sos")
    k = int(0.1 * rec.fs)
    envelope = sum(
        np.convolve(sosfiltfilt(sos, rec.signals_uv[e]) ** 2, np.ones(k) / k, "same")
        for e in ("T3", "T4")
    )
    typical = np.median(envelope)
    hits = []
    for a, b in spans:
        for t in np.arange(a, b - 6, 2.0):
            e = rec.seconds(envelope, t, t + 6)
            f, p = welch(e - e.mean(), rec.fs, nperseg=e.size)
            rhythm = p[(f >= 0.9) & (f <= 2.2)].max()
            if (
                e.mean() > 4 * typical
                and rhythm > 10 * p[(f >= 3) & (f <= 10)].mean()
                and rhythm > 2 * p[(f > 0) & (f <= 0.6)].max()
            ):
                hits.append(float(t))
    return hits


def test_chewing_artefacts_lie_in_unlabelled_time(recordings):
    with_chewing = [rec for rec in recordings if _chewing_windows(rec, background_spans(rec))]
    assert len(with_chewing) >= len(recordings) // 2
    for rec in recordings:  # and never inside a seizure (tonic-clonic ones have muscle bursts)
        assert not _chewing_windows(rec, [s for s in seizures(rec) if _label(rec, s[0]) != "tcsz"])


# --- determinism and bad arguments -------------------------------------------------------------


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in root.rglob("*") if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_corpus(tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_corpus(tmp_path / name, patients=3, minutes=1.5, seed=seed)
    a, b, c = (_hashes(tmp_path / n) for n in "abc")
    assert a == b
    assert set(a.values()).isdisjoint(c.values())


@pytest.mark.parametrize(
    ("patients", "minutes", "seed", "message"),
    [(2, 5, 0, "at least 3"), (3, 0.5, 0, "at least 1 minute"), (3, 5, -1, "non-negative")],
)
def test_bad_arguments_are_refused(tmp_path, patients, minutes, seed, message):
    with pytest.raises(UserError, match=message):
        write_corpus(tmp_path / "c", patients=patients, minutes=minutes, seed=seed)
    assert not (tmp_path / "c").exists()


def test_existing_corpus_is_never_overwritten(tmp_path, capsys):
    root = tmp_path / "c"
    write_corpus(root, patients=3, minutes=1, seed=0)
    before = _hashes(root)
    capsys.readouterr()
    assert main(["synth", str(root), "--patients", "3", "--minutes", "1", "--seed", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"szdet: error: {root / 'edf'}: already holds")
    assert _hashes(root) == before


def test_the_hard_corpus_has_rarer_shorter_weaker_seizures_among_more_artefacts():
    easy, hard = (plan_corpus(12, 30, 0, DIFFICULTIES[d]) for d in ("easy", "hard"))

    def seizure_share(plans):
        return sum(b - a for p in plans for a, b, _ in p.seizures) / sum(
            p.duration_s for p in plans
        )

    assert seizure_share(hard) < 0.06 and seizure_share(easy) > 0.09
    assert all(10 <= b - a <= 60 for p in hard for a, b, _ in p.seizures)
    assert max(b - a for p in easy for a, b, _ in p.seizures) > 60
    rng = np.random.default_rng(0)
    hard_peaks = [
        draw_seizure(rng, 0, 30, "fnsz", DIFFICULTIES["hard"].peak_uv).peak_uv for _ in range(50)
    ]
    easy_peaks = [draw_seizure(rng, 0, 30, "fnsz").peak_uv for _ in range(50)]
    assert min(hard_peaks) >= 40 and max(hard_peaks) <= 100
    assert np.median(hard_peaks) < 0.5 * np.median(easy_peaks)
    artefacts = [
        len(_rhythmic_artefact_kinds(rng, 3600, DIFFICULTIES[d].artefact_every_s))
        for d in ("easy", "hard")
    ]
    assert artefacts[1] > 2 * artefacts[0]
