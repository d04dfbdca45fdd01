"""The TUSZ layout and its .csv/.csv_bi annotation format, parsed exactly; malformed files named."""

from pathlib import Path

import pytest

from szdet.data.tusz import (
    AnnotationError,
    Event,
    check_patient_disjoint,
    clip_intervals,
    edf_root,
    find_recordings,
    merge_intervals,
    read_annotation,
    term_events,
    write_annotation,
)
from szdet.errors import UserError

CSV_BI = """# version = csv_v1.0.0
# bname = aaaaaaac_s001_t000
# duration = 301.00 secs
# montage_file = $NEDC_NFC/lib/nedc_eas_default_montage.txt
#
channel,start_time,stop_time,label,confidence
TERM,0.0000,42.2786,bckg,1.0000
TERM,42.2786,81.7760,seiz,1.0000
TERM,81.7760,301.0000,bckg,1.0000
"""

CSV = """# version = csv_v1.0.0
# bname = aaaaaaac_s001_t000
# duration = 301.00 secs
# montage_file = $NEDC_NFC/lib/nedc_eas_default_montage.txt
#
channel,start_time,stop_time,label,confidence
FP1-F7,0.0000,42.0000,bckg,1.0000
FP1-F7,42.0000,80.0000,cpsz,1.0000
F7-T3,45.5000,81.7760,cpsz,1.0000
T3-T5,200.0000,210.0000,gnsz,0.8000
T3-T5,0.0000,200.0000,bckg,1.0000
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- annotation files -------------------------------------------------------------------------


def test_csv_bi_parses_header_and_term_rows(tmp_path):
    ann = read_annotation(_write(tmp_path / "a.csv_bi", CSV_BI))
    assert (ann.bname, ann.duration_s) == ("aaaaaaac_s001_t000", 301.0)
    assert ann.montage_file == "$NEDC_NFC/lib/nedc_eas_default_montage.txt"
    assert ann.events[1] == Event("TERM", 42.2786, 81.7760, "seiz", 1.0)
    assert [e.is_seizure for e in ann.events] == [False, True, False]
    assert ann.seizure_intervals() == [(42.2786, 81.776)]


def test_a_byte_order_mark_is_tolerated(tmp_path):
    path = tmp_path / "bom.csv_bi"
    path.write_bytes(b"\xef\xbb\xbf" + CSV_BI.encode())
    assert read_annotation(path).seizure_intervals() == [(42.2786, 81.776)]


def test_csv_seizures_are_the_union_over_channels_of_every_seizure_type(tmp_path):
    ann = read_annotation(_write(tmp_path / "a.csv", CSV))
    assert len(ann.events) == 5 and ann.events[3].confidence == 0.8
    assert ann.seizure_intervals() == [(42.0, 81.776), (200.0, 210.0)]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (CSV_BI.replace("channel,start_time", "chan,start_time"), "line 6: expected column header"),
        (
            CSV_BI.replace("channel,start_time,stop_time,label,confidence\n", ""),
            "line 6: expected column header 'channel,start_time,stop_time,label,confidence', got 'TERM,0",
        ),
        (CSV_BI + "TERM,1.0,2.0,seiz\n", "line 10: expected 5 comma-separated fields, got 4"),
        (CSV_BI + "TERM,one,2.0,seiz,1.0\n", "line 10: non-numeric time or confidence"),
        (CSV_BI + "TERM,5.0,2.0,seiz,1.0\n", r"line 10: need 0 <= start < stop, got 5.0 .. 2.0"),
        (CSV_BI + "TERM,-1.0,2.0,seiz,1.0\n", "line 10: need 0 <= start < stop"),
        (CSV_BI + "TERM,1.0,inf,seiz,1.0\n", "line 10: need 0 <= start < stop, got 1.0 .. inf"),
        (CSV_BI + "TERM,1.0,2.0,spike,1.0\n", "line 10: unknown label 'spike'"),
        (CSV_BI + "# late = comment\n", "line 10: comment after the column header"),
        (
            CSV_BI.replace("# duration = 301.00 secs\n", ""),
            "header has no '# duration = ... secs' line",
        ),
        (CSV_BI.replace("301.00 secs", "five minutes"), "bad duration 'five minutes'"),
        (CSV_BI.replace("301.00 secs", "301.0.0 secs"), "bad duration '301.0.0 secs'"),
        (CSV_BI.replace("301.00 secs", ". secs"), r"bad duration '\. secs'"),
        ("# version = csv_v1.0.0\n", "no column header"),
    ],
)
def test_each_malformed_annotation_is_named_with_file_and_line(tmp_path, text, problem):
    path = _write(tmp_path / "bad.csv_bi", text)
    with pytest.raises(AnnotationError, match=rf"^{path}: {problem}"):
        read_annotation(path)


def test_missing_and_binary_annotation_files(tmp_path):
    with pytest.raises(AnnotationError, match=r"absent.csv_bi: annotation file missing"):
        read_annotation(tmp_path / "absent.csv_bi")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(AnnotationError, match=r"bin.csv: not a text annotation file"):
        read_annotation(tmp_path / "bin.csv")


def test_write_then_read_round_trips_in_the_exact_format(tmp_path):
    path = tmp_path / "aaaaaaac_s001_t000.csv_bi"
    write_annotation(path, term_events([(42.2786, 81.776)], 301.0), 301.0)
    assert path.read_text() == CSV_BI
    again = read_annotation(path)
    assert again.events == read_annotation(_write(tmp_path / "b.csv_bi", CSV_BI)).events


def test_term_events_fill_background_around_merged_clipped_seizures():
    events = term_events([(20.0, 30.0), (25.0, 40.0), (90.0, 120.0)], 100.0)
    assert [(e.start_s, e.stop_s, e.label) for e in events] == [
        (0.0, 20.0, "bckg"), (20.0, 40.0, "seiz"), (40.0, 90.0, "bckg"), (90.0, 100.0, "seiz"),
    ]  # fmt: skip
    assert [(e.start_s, e.label) for e in term_events([], 10.0)] == [(0.0, "bckg")]


def test_merge_and_clip_intervals():
    # Overlapping intervals merge; touching ones stay two events, as NEDC counts them.
    assert merge_intervals([(5, 6), (1, 2), (2, 3), (2.5, 4)]) == [(1, 2), (2, 4), (5, 6)]
    assert clip_intervals([(-1.0, 2.0), (3.0, 12.0), (10.0, 11.0)], 10.0) == [
        (0.0, 2.0),
        (3.0, 10.0),
    ]


# --- the corpus layout ------------------------------------------------------------------------


def _touch_recording(
    root: Path,
    split: str,
    patient: str,
    session: str,
    setup: str,
    token: str,
    notes=(".csv", ".csv_bi"),
) -> Path:
    folder = root / "edf" / split / patient / session / setup
    folder.mkdir(parents=True, exist_ok=True)
    edf = folder / f"{patient}_{session.split('_')[0]}_{token}.edf"
    edf.write_bytes(b"")
    for suffix in notes:
        edf.with_suffix(suffix).write_text(CSV_BI)
    return edf


def test_find_recordings_sorted_with_their_annotation_files(tmp_path):
    b = _touch_recording(tmp_path, "train", "aaaaaaab", "s002_2012", "02_tcp_le", "t001")
    a = _touch_recording(
        tmp_path, "train", "aaaaaaaa", "s001_2010", "01_tcp_ar", "t000", notes=(".csv",)
    )
    _touch_recording(tmp_path, "dev", "aaaaaaad", "s001_2010", "01_tcp_ar", "t000")
    found = find_recordings(tmp_path, "train")
    assert [r.edf for r in found] == [a, b]
    first, second = found
    assert (first.csv, first.csv_bi) == (a.with_suffix(".csv"), None)
    assert (second.name, second.patient, second.session, second.setup, second.split) == (
        "aaaaaaab_s002_t001", "aaaaaaab", "s002_2012", "02_tcp_le", "train",
    )  # fmt: skip
    assert find_recordings(tmp_path / "edf", "train") == found  # the edf/ folder itself works too
    assert edf_root(tmp_path) == edf_root(tmp_path / "edf") == tmp_path / "edf"


def test_a_missing_split_folder_is_named(tmp_path):
    with pytest.raises(UserError, match=rf"^{tmp_path}/eval: no such split folder"):
        find_recordings(tmp_path, "eval")


def test_patient_disjoint_splits_pass_and_a_shared_patient_is_refused(tmp_path):
    _touch_recording(tmp_path, "train", "aaaaaaaa", "s001_2010", "01_tcp_ar", "t000")
    _touch_recording(tmp_path, "dev", "aaaaaaab", "s001_2010", "01_tcp_ar", "t000")
    check_patient_disjoint(tmp_path)
    _touch_recording(tmp_path, "eval", "aaaaaaaa", "s004_2015", "03_tcp_ar_a", "t002")
    _touch_recording(tmp_path, "eval", "aaaaaaab", "s004_2015", "03_tcp_ar_a", "t002")
    with pytest.raises(
        UserError, match=r"patient aaaaaaaa appears in splits eval, train \(and 1 more patients\)"
    ):
        check_patient_disjoint(tmp_path)
