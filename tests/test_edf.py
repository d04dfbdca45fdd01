"""EDF reading and preprocessing: channel order, each processing step's effect, interpolation,
bad files (channel names: test_montage.py; the seizure events beside an EDF: test_corpus.py)."""

from pathlib import Path

import numpy as np
import pytest

from edf_factory import recording_signals, write_edf
from szdet.config import CHANNELS_19, PreprocessConfig
from szdet.data.channel_checks import RawStats, unusable_channels
from szdet.data.edf import EdfError, EdfSignal, load_edf
from szdet.data.preprocess import MAX_STATS_SAMPLES, ROBUST_STATS_STEP, stats_step

PRE = PreprocessConfig()


def _peak_hz(x: np.ndarray, rate_hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate_hz)[np.argmax(spectrum)])


def _power_at(x: np.ndarray, rate_hz: float, hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate_hz)
    return float(spectrum[np.abs(freqs - hz) < 0.5].sum())


def _sines(freqs_hz: dict[str, float], seconds: float, rate_hz: float, uv: float = 100.0):
    t = np.arange(round(seconds * rate_hz)) / rate_hz
    return {c: uv * np.sin(2 * np.pi * f * t) for c, f in freqs_hz.items()}


# --- reading and channel order ----------------------------------------------------------------


def test_channels_come_out_in_model_order_from_le_labels_and_synonyms(tmp_path):
    # Each channel a sine of its own frequency, written in a scrambled order with 10-10 names.
    freqs = {c: 3.0 + 2 * i for i, c in enumerate(CHANNELS_19)}
    modern = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}
    signals = _sines(freqs, 20, 250.0)
    scrambled = {modern.get(c, c): signals[c] for c in reversed(CHANNELS_19)}
    edf = write_edf(tmp_path / "x.edf", scrambled, 250.0, label_format="EEG {}-LE")
    out = load_edf(edf, PRE)
    assert out.signal.dtype == np.float32 and out.signal.shape[0] == 19
    assert [_peak_hz(row, 256.0) for row in out.signal] == pytest.approx(
        list(freqs.values()), abs=0.1
    )
    assert out.interpolated == []


def test_other_channels_at_other_rates_are_not_read(tmp_path):
    signals = recording_signals(10, 256.0)
    slow = {"IBI": (np.zeros(10), 1.0), "PHOTIC-REF": (np.zeros(10000), 1000.0)}
    edf = write_edf(tmp_path / "x.edf", signals, 256.0, other_rates=slow)
    out = load_edf(edf, PRE)
    assert out.source_rate_hz == 256.0
    assert out.signal.shape == (19, 2560) and out.duration_s == 10.0


@pytest.mark.parametrize("rate_hz", [250.0, 400.0, 512.0, 256.0])
def test_resampling_to_256_hz_keeps_frequency_and_length(tmp_path, rate_hz):
    seconds = 30
    signals = _sines(dict.fromkeys(CHANNELS_19, 10.0), seconds, rate_hz)
    out = load_edf(write_edf(tmp_path / "x.edf", signals, rate_hz), PRE)
    assert out.source_rate_hz == rate_hz and out.sample_rate_hz == 256.0
    assert out.signal.shape[1] == seconds * 256
    ideal = np.sin(2 * np.pi * 10.0 * np.arange(seconds * 256) / 256)
    middle = slice(256 * 5, -256 * 5)
    assert np.corrcoef(out.signal[0, middle], ideal[middle])[0, 1] > 0.999


# --- each preprocessing step ------------------------------------------------------------------


def test_notch_removes_mains_and_none_disables_it(tmp_path):
    t = np.arange(60 * 256) / 256
    mix = 50 * np.sin(2 * np.pi * 10 * t) + 50 * np.sin(2 * np.pi * 60 * t)
    edf = write_edf(tmp_path / "x.edf", dict.fromkeys(CHANNELS_19, mix), 256.0)
    notched = load_edf(edf, PRE).signal[0]
    kept = load_edf(edf, PRE.model_copy(update={"notch_hz": None})).signal[0]
    ratio = _power_at(notched, 256, 60) / _power_at(notched, 256, 10)
    assert ratio < 1e-3  # 60 Hz was as strong as 10 Hz going in
    assert _power_at(kept, 256, 60) / _power_at(kept, 256, 10) > 0.5


def test_bandpass_removes_dc_drift_and_content_above_120_hz(tmp_path):
    t = np.arange(120 * 512) / 512
    slow = 500 + 300 * np.sin(2 * np.pi * 0.05 * t)  # DC offset and a 20 s drift
    mix = slow + 50 * np.sin(2 * np.pi * 10 * t) + 50 * np.sin(2 * np.pi * 124 * t)
    out = load_edf(write_edf(tmp_path / "x.edf", dict.fromkeys(CHANNELS_19, mix), 512.0), PRE)
    x = out.signal[0]
    assert _power_at(x, 256, 0.05) / _power_at(x, 256, 10) < 1e-3
    assert _power_at(x, 256, 124) / _power_at(x, 256, 10) < 0.05


def test_output_is_robust_z_scored_and_clipped(tmp_path):
    signals = recording_signals(60, 256.0)
    spike = signals["C3"].copy()
    spike[5000:5010] = 1900.0  # far beyond 10 robust standard deviations
    signals["C3"] = spike
    out = load_edf(write_edf(tmp_path / "x.edf", signals, 256.0), PRE)
    q25, median, q75 = np.percentile(out.signal, [25, 50, 75], axis=1)
    # the statistics come from every 4th sample, so they match the full ones closely, not exactly
    assert np.abs(median).max() < 0.05
    assert (q75 - q25) == pytest.approx(np.full(19, 1.349), rel=0.03)
    c3 = out.signal[CHANNELS_19.index("C3")]
    assert c3.max() == pytest.approx(PRE.clip) and np.abs(out.signal).max() <= PRE.clip
    smaller = load_edf(tmp_path / "x.edf", PRE.model_copy(update={"clip": 3.0}))
    assert np.abs(smaller.signal).max() == pytest.approx(3.0)


# --- interpolation ----------------------------------------------------------------------------


def test_missing_fz_pz_are_interpolated_recorded_and_match_the_truth(tmp_path):
    full = load_edf(write_edf(tmp_path / "full.edf", recording_signals(60, 250.0), 250.0), PRE)
    lacking = write_edf(
        tmp_path / "ar_a.edf", recording_signals(60, 250.0, drop=("FZ", "PZ")), 250.0
    )
    out = load_edf(lacking, PRE)
    assert out.interpolated == ["FZ", "PZ"]
    neighbours = {"FZ": ("F3", "F4", "CZ"), "PZ": ("P3", "P4", "CZ")}
    for channel, around in neighbours.items():
        i = CHANNELS_19.index(channel)
        assert np.corrcoef(out.signal[i], full.signal[i])[0, 1] > 0.85  # vs the recorded truth
        for neighbour in around:
            assert np.corrcoef(out.signal[i], out.signal[CHANNELS_19.index(neighbour)])[0, 1] > 0.5
    others = [i for i, c in enumerate(CHANNELS_19) if c not in ("FZ", "PZ")]
    np.testing.assert_allclose(out.signal[others], full.signal[others], atol=1e-4)


def test_a_flat_interpolable_channel_is_interpolated(tmp_path):
    signals = recording_signals(30, 256.0)
    signals["PZ"] = np.zeros_like(signals["PZ"])
    out = load_edf(write_edf(tmp_path / "x.edf", signals, 256.0), PRE)
    assert out.interpolated == ["PZ"]
    assert out.signal[CHANNELS_19.index("PZ")].std() > 0.5


def test_interpolation_can_be_switched_off(tmp_path):
    edf = write_edf(tmp_path / "x.edf", recording_signals(30, 256.0, drop=("FZ",)), 256.0)
    with pytest.raises(EdfError, match=r"x\.edf: missing required channel\(s\) FZ$"):
        load_edf(edf, PRE.model_copy(update={"interpolate_channels": []}))


# --- bad files --------------------------------------------------------------------------------


def test_missing_required_channels_are_named(tmp_path):
    edf = write_edf(tmp_path / "x.edf", recording_signals(10, 256.0, drop=("C3", "O2")), 256.0)
    with pytest.raises(EdfError) as e:
        load_edf(edf, PRE)
    assert str(e.value) == f"{edf}: missing required channel(s) C3, O2"


def test_a_flat_required_channel_is_refused(tmp_path):
    signals = recording_signals(10, 256.0)
    signals["O1"] = np.full_like(signals["O1"], 12.0)
    edf = write_edf(tmp_path / "x.edf", signals, 256.0)
    with pytest.raises(EdfError, match=r"x\.edf: channel O1 is flat$"):
        load_edf(edf, PRE)


def test_nan_channels_are_refused_or_interpolated():
    data = np.ones((3, 100))
    data[:, ::2] = 0.0
    data[1, 7] = np.nan
    data[2, :] = np.nan
    stats = RawStats.of_blocks([(0, data[:, :40]), (40, data[:, 40:])], 3, 100, None)
    unusable = unusable_channels(Path("r.edf"), ["F3", "FZ", "PZ"], stats, {"FZ", "PZ"})
    assert unusable == {"FZ": "has NaN values", "PZ": "has NaN values"}
    with pytest.raises(EdfError, match=r"^r\.edf: channel C3 has NaN values$"):
        unusable_channels(Path("r.edf"), ["F3", "C3", "PZ"], stats, {"FZ", "PZ"})


def test_truncated_garbage_and_absent_files_are_one_line_errors(tmp_path):
    good = write_edf(tmp_path / "good.edf", recording_signals(20, 256.0), 256.0).read_bytes()
    cases = {
        "truncated.edf": (good[: len(good) // 2 + 3], "truncated EDF"),
        "garbage.edf": (b"this is not an EDF file at all" * 40, "not a readable EDF (version"),
        "empty.edf": (b"", "not a readable EDF (0 bytes"),
        "header_only.edf": (good[:3000], "header promises 27 signals it does not hold"),
    }
    for name, (content, reason) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(EdfError) as e:
            load_edf(tmp_path / name, PRE)
        message = str(e.value)
        assert message.startswith(f"{tmp_path / name}: {reason}") and "\n" not in message
    with pytest.raises(EdfError, match="no such EDF file"):
        load_edf(tmp_path / "absent.edf", PRE)


@pytest.mark.parametrize("rate_hz", [1.0, 128.0, 200.0])
def test_a_rate_too_slow_for_the_band_is_refused_naming_the_least_accepted(tmp_path, rate_hz):
    edf = write_edf(tmp_path / "slow.edf", recording_signals(60, rate_hz), rate_hz)
    with pytest.raises(EdfError) as e:
        load_edf(edf, PRE)
    assert str(e.value) == (
        f"{edf}: sampled at {rate_hz:g} Hz, too slow for the 0.5-120 Hz band; the least "
        "accepted is 240 Hz (twice preprocess.bandpass_high_hz)"
    )
    narrow = PRE.model_copy(update={"bandpass_high_hz": 60.0, "notch_hz": None})
    if rate_hz >= 120:  # a band the file does hold is read
        assert load_edf(edf, narrow).source_rate_hz == rate_hz


def test_too_short_recording_is_refused(tmp_path):
    edf = write_edf(tmp_path / "x.edf", recording_signals(0.5, 256.0), 256.0, record_s=0.5)
    with pytest.raises(EdfError, match="too short"):
        load_edf(edf, PRE)


# --- in chunks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate_hz", "montage", "drop", "chunk_s"),
    [
        (250.0, "referential", ("FZ",), 20.0),
        (512.0, "bipolar", (), 47.0),
        (256.0, "average", (), 90),
    ],
)
def test_a_recording_in_chunks_is_the_whole_one(tmp_path, rate_hz, montage, drop, chunk_s):
    """Chunks shorter than the filter's margin, not dividing the recording, at a rate needing
    resampling, with an interpolated channel or a montage conversion: the same signal."""
    signals = {c: v for c, v in recording_signals(200, rate_hz).items() if c not in drop}
    edf = write_edf(tmp_path / "x.edf", signals, rate_hz)
    whole = load_edf(edf, PRE, montage)
    chunked = EdfSignal(edf, PRE, montage, chunk_s=chunk_s)
    blocks = list(chunked.blocks())
    assert len(blocks) >= 3  # several chunks, the last one short
    assert [first for first, _ in blocks] == list(
        np.cumsum([0] + [b.shape[1] for _, b in blocks[:-1]])
    )
    assert chunked.interpolated == whole.interpolated == list(drop)
    np.testing.assert_allclose(np.concatenate([b for _, b in blocks], 1), whole.signal, atol=1e-6)


def test_the_statistics_subsample_is_capped_at_any_length():
    hour = 3600 * 256
    assert stats_step(hour) == ROBUST_STATS_STEP  # recordings of TUSZ's lengths: every 4th sample
    for n in (hour, 24 * hour, 72 * hour, 1000 * hour):
        assert -(-n // stats_step(n)) <= MAX_STATS_SAMPLES
