"""The SzCORE events TSV: what we write, epilepsy2bids 0.0.7 (the challenge's own reader) reads
back to the same events, and what it writes, we read; faults are one line naming file and line."""

from datetime import datetime

import numpy as np
import pytest
from epilepsy2bids.annotations import Annotations

from szdet.data.hed_tsv import COLUMNS, read_events_tsv, write_events_tsv
from szdet.data.tusz import AnnotationError

START = datetime(2019, 4, 3, 10, 12, 0)


def test_written_rows_have_exactly_the_szcore_columns_and_epilepsy2bids_reads_them(tmp_path):
    path = tmp_path / "sub-01_ses-01_task-szMonitoring_run-00_events.tsv"
    write_events_tsv(path, [(12.0, 53.5, 0.873), (300.25, 340.0, 0.5)], 600.0, START)
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == list(COLUMNS)
    assert lines[1].split("\t") == [
        "12.00",
        "41.50",
        "sz",
        "0.87",
        "n/a",
        "2019-04-03 10:12:00",
        "600.00",
    ]
    theirs = Annotations.loadTsv(str(path))
    assert theirs.getEvents() == [(12.0, 53.5), (300.25, 340.0)]
    assert theirs.events[0]["dateTime"] == START
    assert theirs.getMask(1).shape == (600,)


def test_no_seizure_is_one_bckg_row_spanning_the_recording(tmp_path):
    path = tmp_path / "x_events.tsv"
    write_events_tsv(path, [], 2.0, None)
    rows = path.read_text().splitlines()[1:]
    assert rows == ["0.00\t2.00\tbckg\tn/a\tn/a\tn/a\t2.00"]
    theirs = Annotations.loadTsv(str(path))
    assert theirs.getEvents() == [] and theirs.getMask(1).tolist() == [0, 0]
    ours = read_events_tsv(path)
    assert ours.seizure_intervals() == [] and ours.recording_duration_s == 2.0


def test_what_epilepsy2bids_writes_reads_back_to_its_events(tmp_path):
    mask = np.zeros(900)
    mask[100:160] = 1
    mask[400:401] = 1
    path = tmp_path / "ref_events.tsv"
    Annotations.loadMask(mask, 1).saveTsv(str(path))
    ours = read_events_tsv(path)
    assert ours.seizure_intervals() == [(100.0, 160.0), (400.0, 401.0)]
    assert ours.recording_duration_s == 900.0


def test_every_sz_type_is_a_seizure_and_others_are_refused(tmp_path):
    path = tmp_path / "a_events.tsv"
    header = "\t".join(COLUMNS)
    path.write_text(
        f"{header}\n1.00\t2.00\tsz_foc_ia\tn/a\tn/a\tn/a\t10.00\n"
        f"5.00\t1.00\tbckg\tn/a\tn/a\tn/a\t10.00\n"
    )
    assert read_events_tsv(path).seizure_intervals() == [(1.0, 3.0)]
    path.write_text(f"{header}\n1.00\t2.00\tspike\tn/a\tn/a\tn/a\t10.00\n")
    with pytest.raises(AnnotationError, match=r"a_events.tsv: line 2: eventType 'spike'"):
        read_events_tsv(path)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("onset\tduration\teventType\n1\t2\tsz\n", "header lacks column.s. recordingDuration"),
        ("\t".join(COLUMNS) + "\n", "no event rows"),
        ("\t".join(COLUMNS) + "\nx\t2\tsz\tn/a\tn/a\tn/a\t10\n", "line 2: onset 'x'"),
        ("\t".join(COLUMNS) + "\n1\t2\tsz\tn/a\n", "line 2: 4 fields"),
        ("\t".join(COLUMNS) + "\n1\t2\tsz\tn/a\tn/a\tyesterday\t10\n", "line 2: dateTime"),
        (
            "\t".join(COLUMNS) + "\n1\t2\tsz\tn/a\tn/a\tn/a\t10\n4\t2\tsz\tn/a\tn/a\tn/a\t11\n",
            "disagree on recordingDuration",
        ),
    ],
)
def test_faults_name_the_file_and_line(tmp_path, body, problem):
    path = tmp_path / "bad_events.tsv"
    path.write_text(body)
    with pytest.raises(AnnotationError, match=rf"bad_events.tsv: .*{problem}"):
        read_events_tsv(path)
