"""Honest inputs: dead, near-flat, quantised and clipped electrodes, bad headers, EDF+D, BDF, and
an EDF replaced by same-size content, on real EDFs written with edfio."""

import json
from pathlib import Path

import edfio
import mne
import numpy as np
import pytest

from edf_factory import PHYSICAL_RANGE_UV, recording_signals, write_edf, write_recording
from szdet.cli import main
from szdet.config import CHANNELS_19, PreprocessConfig
from szdet.data.cache import build_cache
from szdet.data.edf import EdfError, load_edf

PRE = PreprocessConfig()
STEP_UV = (PHYSICAL_RANGE_UV[1] - PHYSICAL_RANGE_UV[0]) / 65535  # edfio's 16-bit digital step
NEIGHBOURS = {"FZ": ("F3", "F4", "CZ"), "PZ": ("P3", "P4", "CZ"), "CZ": ("C3", "C4", "FZ")}


def _row(out, channel: str) -> np.ndarray:
    return out.signal[CHANNELS_19.index(channel)]


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def _dead(n: int, seed: int) -> np.ndarray:
    """An electrode at digital 0 whose 1% of samples flicker to digital 1 (edfio maps physical
    x to digital x / step - 1/2, rounded)."""
    x = np.full(n, STEP_UV / 2)
    x[np.random.default_rng(seed).choice(n, n // 100, replace=False)] = 1.5 * STEP_UV
    return x


# --- dead, near-flat, quantised and clipped electrodes ----------------------------------------


def test_dead_spiked_and_near_flat_electrodes_are_interpolated_with_notes(tmp_path):
    signals = recording_signals(60, 256.0, seed=3)
    truth = load_edf(write_edf(tmp_path / "truth.edf", signals, 256.0), PRE)
    n = len(signals["FZ"])
    signals["FZ"] = _dead(n, seed=1)
    signals["PZ"] = np.zeros(n)
    signals["PZ"][n // 2] = 800.0  # one spike on a flat line
    signals["CZ"] = 0.3 * np.random.default_rng(2).standard_normal(n)  # an amplifier's noise
    pre = PRE.model_copy(update={"interpolate_channels": ["FZ", "PZ", "CZ"]})
    out = load_edf(write_edf(tmp_path / "x.edf", signals, 256.0), pre)

    assert out.interpolated == ["FZ", "CZ", "PZ"]
    notes = "\n".join(out.notes)
    assert "FZ is dead (IQR 0 uV): interpolated" in notes
    assert "PZ is dead (IQR 0 uV): interpolated" in notes
    assert "CZ is near-flat (IQR 0.43 uV, the channels' median 8" in notes
    for channel, around in NEIGHBOURS.items():
        assert _corr(_row(out, channel), _row(truth, channel)) > 0.8
        for neighbour in around:
            assert _corr(_row(out, channel), _row(out, neighbour)) > 0.5
        assert np.mean(np.abs(_row(out, channel)) >= PRE.clip * 0.99) < 0.01  # not full scale


def test_a_dead_electrode_that_may_not_be_interpolated_is_refused(tmp_path):
    signals = recording_signals(20, 256.0)
    signals["O1"] = _dead(len(signals["O1"]), seed=0)
    edf = write_edf(tmp_path / "x.edf", signals, 256.0)
    with pytest.raises(EdfError, match=r"x\.edf: channel O1 is dead \(IQR 0 uV\)$"):
        load_edf(edf, PRE)


@pytest.mark.parametrize("seed", range(5))
def test_healthy_recordings_flag_nothing(tmp_path, seed):
    rate_hz = (250.0, 256.0, 400.0, 512.0)[seed % 4]
    out = load_edf(
        write_edf(tmp_path / "x.edf", recording_signals(30, rate_hz, seed), rate_hz), PRE
    )
    assert out.interpolated == [] and out.notes == []


def test_quantised_and_clipped_channels_are_kept_with_notes(tmp_path):
    signals = recording_signals(30, 256.0)
    signals["O2"] = np.clip(40 * signals["O2"], *PHYSICAL_RANGE_UV)
    edf_signals = [
        edfio.EdfSignal(
            data,
            256.0,
            label=f"EEG {name}-REF",
            physical_dimension="uV",
            physical_range=PHYSICAL_RANGE_UV,
            # C3 at 20 uV steps: its IQR spans a handful of levels
            digital_range=(-100, 100) if name == "C3" else (-32768, 32767),
        )
        for name, data in signals.items()
        if name in CHANNELS_19
    ]
    edfio.Edf(edf_signals).write(tmp_path / "x.edf")
    out = load_edf(tmp_path / "x.edf", PRE)
    assert out.interpolated == []
    (quantised,) = [n for n in out.notes if n.startswith("C3")]
    assert quantised.startswith("C3: quantised (IQR ") and "digital steps of 20 uV)" in quantised
    assert float(quantised.split("IQR ")[1].split()[0]) < 12
    (clipped,) = [n for n in out.notes if n.startswith("O2")]
    share = float(clipped.removeprefix("O2: clipped (").split("%")[0])
    assert 10 < share < 100 and clipped.endswith("% of samples at the digital limits)")
    assert len(out.notes) == 2


# --- bad headers ------------------------------------------------------------------------------


def _patch(path: Path, offset: int, text: bytes) -> Path:
    data = bytearray(path.read_bytes())
    data[offset : offset + len(text)] = text
    path.write_bytes(bytes(data))
    return path


def _spr_offset(path: Path) -> int:
    """Byte offset of the first signal's samples-per-record field."""
    count = int(path.read_bytes()[252:256])
    return 256 + count * 216


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        (lambda p: _patch(p, 244, b"-1      "), "header record duration -1 s is not positive"),
        (lambda p: _patch(p, 244, b"nan     "), "header record duration nan s is not positive"),
        (lambda p: _patch(p, 244, b"0       "), "header record duration 0 s is not positive"),
        (lambda p: _patch(p, 236, b"0       "), "header record count 0 .no data records.$"),
        (lambda p: _patch(p, _spr_offset(p), b"0       "), "signal 'EEG FP1-REF' has 0 samples"),
        (lambda p: _patch(p, 236, b"99      "), "truncated EDF .header promises \\d+ bytes"),
    ],
)
def test_bad_headers_are_one_line_errors(tmp_path, patch, reason):
    edf = patch(write_edf(tmp_path / "x.edf", recording_signals(10, 256.0), 256.0))
    with pytest.raises(EdfError, match=rf"^{tmp_path / 'x.edf'}: {reason}") as e:
        load_edf(edf, PRE)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("count", [b"-1      ", b"7       "])
def test_a_header_count_of_unknown_or_short_of_the_file_reads_every_record(tmp_path, count):
    """EDF's -1 ("unknown"), and a file holding more records than its header says: mne and szdet
    both read all 10 records, with a note; 'truncated' is for a file shorter than its header."""
    whole = load_edf(write_edf(tmp_path / "whole.edf", recording_signals(10, 256.0), 256.0), PRE)
    edf = _patch(write_edf(tmp_path / "x.edf", recording_signals(10, 256.0), 256.0), 236, count)
    out = load_edf(edf, PRE)
    said = "-1 (unknown)" if count.startswith(b"-1") else "7"
    assert out.notes == [f"header record count {said}: read the 10 records the file holds"]
    assert out.header.n_records == 10 and out.duration_s == whole.duration_s == 10.0
    assert np.array_equal(out.signal, whole.signal)


def test_a_bad_header_skips_its_file_and_the_build_goes_on(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    good = write_recording(corpus, "train", "e0000000", seconds=30, seizures=((5.0, 9.0),))
    bad = write_recording(corpus, "train", "e0000001", seconds=30, seizures=((5.0, 9.0),))
    _patch(bad, 244, b"-1      ")
    out = tmp_path / "cache"
    argv = ["cache", "build", "--data-root", str(corpus), "--split", "train", "--out", str(out)]
    assert main(argv) == 0
    manifest = json.loads((out / "train" / "manifest.json").read_text())
    assert manifest["skipped"] == [
        {
            "file": bad.relative_to(corpus / "edf").as_posix(),
            "reason": "header record duration -1 s is not positive",
        }
    ]
    assert [r["name"] for r in manifest["recordings"]] == [good.stem]
    assert "1 recordings (1 built, 0 reused), 1 skipped" in capsys.readouterr().out


# --- EDF+D and BDF ----------------------------------------------------------------------------


def _edf_plus(path: Path, seconds: int = 20) -> Path:
    """An EDF+ (edfio writes EDF+C when there are annotations): 1 s records, each with its
    time-keeping annotation "+<onset>\\x14\\x14" in the EDF Annotations signal."""
    signals = recording_signals(seconds, 256.0)
    edf_signals = [
        edfio.EdfSignal(s, 256.0, label=f"EEG {c}-REF", physical_range=PHYSICAL_RANGE_UV)
        for c, s in signals.items()
        if c in CHANNELS_19
    ]
    annotations = [edfio.EdfAnnotation(2.0, None, "eyes closed")]
    edfio.Edf(edf_signals, annotations=annotations, data_record_duration=1.0).write(path)
    return path


def _record_onset_offset(path: Path, record: int) -> int:
    data = path.read_bytes()
    count, header_bytes = int(data[252:256]), int(data[184:192])
    start = 256 + count * 216
    samples = [int(data[start + 8 * i : start + 8 * i + 8]) for i in range(count)]
    return header_bytes + record * 2 * sum(samples) + 2 * sum(samples[:-1])


def test_edf_plus_d_is_read_when_contiguous_and_refused_with_gaps(tmp_path):
    continuous = load_edf(_edf_plus(tmp_path / "c.edf"), PRE)
    contiguous = _patch(_edf_plus(tmp_path / "d.edf"), 192, b"EDF+D")
    np.testing.assert_array_equal(load_edf(contiguous, PRE).signal, continuous.signal)

    gaps = _patch(_edf_plus(tmp_path / "g.edf"), 192, b"EDF+D")
    for record in range(10, 20):  # a 5 s gap before record 10
        _patch(gaps, _record_onset_offset(gaps, record), b"+%d\x14\x14" % (record + 5))
    with pytest.raises(EdfError) as e:
        load_edf(gaps, PRE)
    assert str(e.value) == f"{gaps}: EDF+D with gaps (record 10 starts at 15 s): not supported"


def _write_bdf(edf: Path, bdf: Path) -> Path:
    """The same recording as a BDF: version 0xFF "BIOSEMI", 24-bit little-endian samples."""
    data = edf.read_bytes()
    header_bytes = int(data[184:192])
    samples = np.frombuffer(data[header_bytes:], "<i2").astype("<i4")
    wide = samples.view(np.uint8).reshape(-1, 4)[:, :3]  # the low 3 bytes: 24-bit two's complement
    header = bytearray(data[:header_bytes])
    header[:8] = b"\xffBIOSEMI"
    header[192:236] = b"24BIT".ljust(44)
    bdf.write_bytes(bytes(header) + wide.tobytes())
    return bdf


def test_a_bdf_file_is_named_as_such(tmp_path):
    edf = write_edf(tmp_path / "x.edf", recording_signals(10, 256.0), 256.0)
    bdf = _write_bdf(edf, tmp_path / "x.bdf")
    read = mne.io.read_raw_bdf(bdf, verbose="error").get_data(picks=[0])  # a real BDF
    np.testing.assert_allclose(read, mne.io.read_raw_edf(edf, verbose="error").get_data([0]))
    with pytest.raises(EdfError) as e:
        load_edf(bdf, PRE)
    assert str(e.value) == f"{bdf}: a BDF (24-bit) file, not EDF: convert it to EDF (16-bit) first"


# --- cache: an EDF replaced by same-size content ----------------------------------------------


def test_an_edf_replaced_by_same_size_content_is_rebuilt(tmp_path):
    corpus = tmp_path / "corpus"
    edfs = [
        write_recording(corpus, "train", f"f000000{i}", seconds=30, seizures=(), seed=i)
        for i in range(2)
    ]
    args = {"preprocess": PRE, "workers": 1, "shard": None, "max_recordings": None}
    build_cache(data_root=corpus, split="train", out=tmp_path / "cache", **args)
    array = tmp_path / "cache" / "train" / "f0000000" / f"{edfs[0].stem}.npy"
    before = np.load(array)

    size = edfs[0].stat().st_size
    write_recording(corpus, "train", "f0000000", seconds=30, seizures=(), seed=7)
    assert edfs[0].stat().st_size == size
    report = build_cache(data_root=corpus, split="train", out=tmp_path / "cache", **args)
    assert (report.built, report.reused) == (1, 1)
    assert not np.array_equal(np.load(array), before)


@pytest.mark.parametrize("padding", [b"\x00", "\xa0".encode("latin-1")])
def test_labels_padded_with_nul_or_nbsp_are_read(tmp_path, padding):
    whole = load_edf(write_edf(tmp_path / "plain.edf", recording_signals(10, 256.0), 256.0), PRE)
    edf = write_edf(tmp_path / "x.edf", recording_signals(10, 256.0), 256.0)
    data = bytearray(edf.read_bytes())
    for label in (b"EEG FP1-REF", b"EEG CZ-REF"):
        i = data.index(label)
        data[i : i + 16] = label + padding * (16 - len(label))
    edf.write_bytes(bytes(data))
    out = load_edf(edf, PRE)
    assert out.channels == whole.channels and np.array_equal(out.signal, whole.signal)


@pytest.mark.parametrize("extra", [1, -1, 5])
def test_a_wrong_signal_count_is_one_short_line(tmp_path, extra):
    edf = write_edf(tmp_path / "x.edf", recording_signals(10, 256.0), 256.0)
    count = int(edf.read_bytes()[252:256])
    _patch(edf, 252, f"{count + extra:<4}".encode())
    with pytest.raises(EdfError, match=rf"^{edf}: header samples_per_record of signal 1 of "
                       rf"{count + extra} is .*, not a number \(a wrong signal count\?\)$") as e:  # fmt: skip
        load_edf(edf, PRE)
    assert len(str(e.value)) - len(str(edf)) < 120 and "\n" not in str(e.value)
