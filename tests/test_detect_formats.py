"""`szdet detect --format szcore|both`: the SzCORE events TSV, read back with epilepsy2bids."""

import itertools

import numpy as np
import pytest
from epilepsy2bids.annotations import Annotations

from montage_support import write_referential_edf
from szdet.config import CHANNELS_19
from szdet.data.edf import EdfSignal, load_edf
from szdet.data.edf_header import read_header
from szdet.data.hed_tsv import COLUMNS
from szdet.data.montage import standard_case
from szdet.data.tusz import read_annotation
from szdet.errors import UserError
from szdet.evaluate.detect import check_outputs
from szdet.evaluate.inference import SignalBuffer, load_detector
from szdet.evaluate.localise import event_channels
from szdet.evaluate.postprocess import EventRules, track_events
from test_evaluate_cli import run_cli, trained  # noqa: F401  (the tiny trained checkpoint)

BIDS_NAME = "sub-01_ses-01_task-szMonitoring_run-00"


@pytest.fixture(scope="module")
def bids_edf(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bids")
    return write_referential_edf(folder / f"{BIDS_NAME}_eeg.edf", 60.0, 256.0, "{}-Avg", True)


def _track(checkpoint, edf):
    detector = load_detector(checkpoint)
    pre = load_edf(edf, detector.cfg.preprocess, detector.cfg.data.montage)
    track, evidence = detector.predict_edf(
        EdfSignal(edf, detector.cfg.preprocess, detector.cfg.data.montage)
    )
    return detector.cfg.evaluate, pre, track, evidence


@pytest.mark.slow
def test_szcore_tsv_holds_each_event_with_its_mean_probability(trained, bids_edf, tmp_path, capsys):  # noqa: F811
    cfg, pre, track, evidence = _track(trained["best"], bids_edf)
    on = float(np.quantile(track, 0.6))  # a threshold the tiny model crosses
    out = tmp_path / "out"
    code, stdout, _ = run_cli(
        capsys, "detect", bids_edf, "--checkpoint", trained["best"], "--out", out,
        "--format", "both", "--set", f"evaluate.threshold_on={on}",
        "--set", "evaluate.min_duration_s=0",
    )  # fmt: skip
    assert code == 0 and (out / f"{BIDS_NAME}_eeg.csv_bi").is_file()
    tsv = out / f"{BIDS_NAME}_events.tsv"
    assert str(tsv) in stdout
    assert tsv.read_text().splitlines()[0].split("\t") == list(COLUMNS)

    rules = EventRules(on, on * cfg.threshold_off_ratio, 0.0, cfg.merge_gap_s, cfg.max_event_s)
    want = track_events(track, cfg.frame_hz, rules, pre.duration_s)
    assert len(want) > 0
    header = read_header(bids_edf)
    events = Annotations.loadTsv(str(tsv)).events
    assert len(events) == len(want)
    carried = event_channels(evidence, [tuple(e) for e in want], cfg.frame_hz, CHANNELS_19)
    for row, (start_s, stop_s), channels in zip(events, want, carried, strict=True):
        assert row["eventType"].value == "sz"
        assert row["channels"] == [standard_case(c) for c in channels] and channels
        assert row["onset"] == pytest.approx(start_s, abs=0.005)
        assert row["duration"] == pytest.approx(stop_s - start_s, abs=0.01)
        assert row["recordingDuration"] == header.n_records * header.record_duration_s == 60.0
        assert row["dateTime"] == header.start
        # the mean over the event's frames at or above the off-threshold, as a plain loop
        frames = [p for k, p in enumerate(track) if start_s <= k / cfg.frame_hz < stop_s]
        kept = [p for p in frames if p >= rules.threshold_off]
        assert row["confidence"] == pytest.approx(np.mean(kept), abs=0.005 + 1e-6)
        assert rules.threshold_off - 0.005 <= row["confidence"] <= 1.0


@pytest.mark.slow
def test_no_event_is_one_bckg_row_over_the_recording(trained, bids_edf, tmp_path, capsys):  # noqa: F811
    _, _, track, _ = _track(trained["best"], bids_edf)
    assert track.max() < 0.99
    out = tmp_path / "out"
    code, _, _ = run_cli(
        capsys, "detect", bids_edf, "--checkpoint", trained["best"], "--out", out,
        "--format", "szcore", "--set", "evaluate.threshold_on=0.99",
    )  # fmt: skip
    assert code == 0 and not list(out.glob("*.csv_bi"))
    [row] = Annotations.loadTsv(str(out / f"{BIDS_NAME}_events.tsv")).events
    assert row["eventType"].value == "bckg" and np.isnan(row["confidence"])  # n/a, to pandas
    assert (row["onset"], row["duration"], row["recordingDuration"]) == (0.0, 60.0, 60.0)


def test_outputs_that_collide_or_replace_a_reference_are_refused_per_format(tmp_path, bids_edf):
    folder = tmp_path / "bids"
    folder.mkdir()
    edf = folder / bids_edf.name
    edf.write_bytes(bids_edf.read_bytes())
    twin = folder / f"{BIDS_NAME}.edf"  # another name, the same events file
    twin.write_bytes(bids_edf.read_bytes())
    check_outputs([edf, twin], tmp_path / "o", ("csv_bi",))  # two .csv_bi names: fine
    for kinds in (("szcore",), ("csv_bi", "szcore")):
        with pytest.raises(UserError, match=f"both would write {BIDS_NAME}_events.tsv"):
            check_outputs([edf, twin], tmp_path / "o", kinds)

    taken = tmp_path / "file"
    taken.write_text("not a folder\n")
    with pytest.raises(UserError, match=rf"^{taken}: is a file; --out names the folder"):
        check_outputs([edf], taken, ("csv_bi",))
    (tmp_path / "o" / f"{BIDS_NAME}_eeg.csv_bi").mkdir(parents=True)
    with pytest.raises(UserError, match=rf"{BIDS_NAME}_eeg.csv_bi: is a folder, where"):
        check_outputs([edf], tmp_path / "o", ("csv_bi",))

    reference = folder / f"{BIDS_NAME}_events.tsv"
    reference.write_text("the annotation\n")
    check_outputs([edf], folder, ("csv_bi",))  # writes no TSV: nothing to lose
    with pytest.raises(UserError, match="is the reference annotation of an input"):
        check_outputs([edf], folder, ("szcore",))
    assert reference.read_text() == "the annotation\n"


@pytest.mark.slow
def test_a_bad_header_is_one_line_and_the_other_files_are_still_detected(
    trained,  # noqa: F811
    bids_edf,
    tmp_path,
    capsys,
):
    bad = tmp_path / "bad_eeg.edf"
    data = bytearray(bids_edf.read_bytes())
    data[244:252] = b"-1      "  # a negative record duration: once a crash of the whole run
    bad.write_bytes(bytes(data))
    out = tmp_path / "out"
    code, _, stderr = run_cli(
        capsys, "detect", bad, bids_edf, "--checkpoint", trained["best"], "--out", out,
        "--format", "szcore",
    )  # fmt: skip
    assert code == 1
    errors = [line for line in stderr.splitlines() if line.startswith("szdet:")]  # no bars
    assert errors == [f"szdet: error: {bad}: header record duration -1 s is not positive"]
    assert sorted(p.name for p in out.iterdir()) == [f"{BIDS_NAME}_events.tsv"]


@pytest.mark.slow
def test_each_recordings_notes_are_said_where_detect_runs(trained, tmp_path, capsys):  # noqa: F811
    """What the cache's manifest notes (here a header record count of -1) detect says too."""
    edf = write_referential_edf(tmp_path / "unknown_eeg.edf", 60.0, 256.0, "{}-Avg", True)
    data = bytearray(edf.read_bytes())
    data[236:244] = b"-1      "
    edf.write_bytes(bytes(data))
    code, _, stderr = run_cli(
        capsys, "detect", edf, "--checkpoint", trained["best"], "--out", tmp_path / "out"
    )
    assert code == 0
    notes = [line for line in stderr.splitlines() if line.startswith("szdet: note:")]
    assert notes == [
        f"szdet: note: {edf}: header record count -1 (unknown): read the 60 records the file holds"
    ]


@pytest.mark.slow
def test_a_recording_inferred_in_chunks_is_the_whole_one_in_bounded_memory(
    trained,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    """detect's chunked reading and inference (evaluate.chunk_s) against one chunk holding the
    whole recording: the same track, while the samples held never exceed a chunk and a window."""
    edf = write_referential_edf(tmp_path / "long.edf", 330.0, 250.0, "EEG {}-REF", seed=3)
    detector = load_detector(trained["best"])
    cfg = detector.cfg
    whole, whole_evidence = detector.predict_edf(EdfSignal(edf, cfg.preprocess, cfg.data.montage))
    held: list[int] = []
    append = SignalBuffer.append

    def watched(buffer: SignalBuffer, block: np.ndarray) -> None:
        append(buffer, block)
        held.append(buffer._data.shape[1])

    monkeypatch.setattr(SignalBuffer, "append", watched)
    chunk_s = 25.0
    chunked, evidence = detector.predict_edf(
        EdfSignal(edf, cfg.preprocess, cfg.data.montage, chunk_s)
    )
    assert len(held) == 14  # 330 s in chunks of 25 s (the resampling period rounds them)
    assert max(held) <= (chunk_s + cfg.windows.length_s) * cfg.preprocess.sample_rate_hz
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-6)
    np.testing.assert_allclose(evidence, whole_evidence, rtol=0, atol=1e-5)  # where, alike
    assert chunked.shape == (330 * cfg.evaluate.frame_hz,)


@pytest.mark.slow
def test_csv_holds_each_event_on_the_channels_that_carry_it(trained, bids_edf, tmp_path, capsys):  # noqa: F811
    """--format all: the per-channel .csv names, per model channel, the events it carries (and
    bckg elsewhere); the .csv_bi stays TERM; the TSV's channels are the same sets."""
    _, _, track, _ = _track(trained["best"], bids_edf)
    on = float(np.quantile(track, 0.6))
    out = tmp_path / "out"
    code, _, _ = run_cli(
        capsys, "detect", bids_edf, "--checkpoint", trained["best"], "--out", out,
        "--format", "all", "--set", f"evaluate.threshold_on={on}",
        "--set", "evaluate.min_duration_s=0",
    )  # fmt: skip
    assert code == 0
    term = read_annotation(out / f"{BIDS_NAME}_eeg.csv_bi")
    seizures = [(e.start_s, e.stop_s) for e in term.events if e.label == "seiz"]
    assert seizures and {e.channel for e in term.events} == {"TERM"}
    per_channel = read_annotation(out / f"{BIDS_NAME}_eeg.csv")
    assert {e.channel for e in per_channel.events} == set(CHANNELS_19)
    tsv = Annotations.loadTsv(str(out / f"{BIDS_NAME}_events.tsv")).events
    for (start_s, stop_s), row in zip(seizures, tsv, strict=True):
        on_event = {
            e.channel
            for e in per_channel.events
            if e.label == "seiz"
            and abs(e.start_s - start_s) < 1e-3
            and abs(e.stop_s - stop_s) < 1e-3
        }
        assert on_event and {standard_case(c) for c in on_event} == set(row["channels"])
    for channel in CHANNELS_19:  # each channel's rows tile the recording
        rows = [e for e in per_channel.events if e.channel == channel]
        assert rows[0].start_s == 0.0 and rows[-1].stop_s == pytest.approx(60.0)
        assert all(a.stop_s == pytest.approx(b.start_s) for a, b in itertools.pairwise(rows))
