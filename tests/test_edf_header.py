"""The EDF header parser: fields as edfio wrote them, and bad headers named in one line."""

import datetime

import edfio
import numpy as np
import pytest

from szdet.data.edf_header import EdfError, read_header


def _edf(path, start=None):
    signals = [
        edfio.EdfSignal(np.zeros(512), 256, label=label, physical_range=(-100, 100))
        for label in ("EEG FP1-REF", "EEG FP2-REF")
    ]
    edf = edfio.Edf(signals, data_record_duration=1.0)
    if start is not None:
        edf.startdate, edf.starttime = start.date(), start.time()
    edf.write(path)
    return path


def test_fields_are_those_written(tmp_path):
    start = datetime.datetime(2019, 4, 3, 10, 12, 5)
    header = read_header(_edf(tmp_path / "a.edf", start))
    assert header.start == start
    assert header.labels == ("EEG FP1-REF", "EEG FP2-REF")
    assert (header.n_records, header.record_duration_s) == (2, 1.0)
    assert header.signal_fields["samples_per_record"] == ("256", "256")
    assert header.reserved in ("", "EDF+C")


def test_a_two_digit_year_before_85_is_this_century(tmp_path):
    path = _edf(tmp_path / "b.edf", datetime.datetime(1999, 12, 31, 23, 59, 59))
    assert read_header(path).start == datetime.datetime(1999, 12, 31, 23, 59, 59)
    data = bytearray(path.read_bytes())
    data[168:176] = b"01.02.03"
    path.write_bytes(bytes(data))
    assert read_header(path).start == datetime.datetime(2003, 2, 1, 23, 59, 59)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda d: d[:100], "not a readable EDF .100 bytes"),
        (lambda d: b"\x00garbage" + d[8:], "version field b'.x00garbage', expected '0'"),
        (lambda d: b"\xffBIOSEMI" + d[8:], "a BDF .24-bit. file, not EDF: convert it"),
        (lambda d: d[:244] + b"   -1.5 " + d[252:], None),
        (lambda d: d[:236] + b"lots    " + d[244:], "record count b'lots    ' is not a whole"),
        (lambda d: d[:252] + b"99  " + d[256:], "promises 99 signals"),
    ],
)
def test_bad_headers_name_the_file_and_problem(tmp_path, damage, problem):
    path = _edf(tmp_path / "c.edf")
    path.write_bytes(damage(path.read_bytes()))
    if problem is None:  # parsed as written: judging a negative duration is the reader's job
        assert read_header(path).record_duration_s == -1.5
        return
    with pytest.raises(EdfError, match=rf"c\.edf: .*{problem}"):
        read_header(path)
