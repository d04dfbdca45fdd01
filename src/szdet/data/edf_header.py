"""The EDF/EDF+ header, read straight from its bytes: the one parser of it.

A fixed 256-byte part (version, patient and recording ids, start date and time, header size, a
reserved field that says EDF+C or EDF+D, record count and duration, signal count), then 256
bytes per signal, field by field (16 label, 80 transducer, 8 unit, 8+8 physical min/max, 8+8
digital min/max, 80 prefilter, 8 samples per record, 32 reserved). Reading it ourselves costs one
small read, where a full mne open costs more than the rest of a short file's reading, and it
lets a bad header be named precisely instead of failing somewhere inside mne.

``read_readable_header`` adds what a reader needs before touching samples: a positive record
duration, positive samples per record, at least one data record, a file as long as the header
promises (a file holding more, or a header count of -1, "unknown", is read whole with a note:
``record_count_note``), and for EDF+D (discontinuous) records that are in fact contiguous (mne
reads every file as continuous).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np

from szdet.errors import UserError

EDF_VERSION = b"0       "
BDF_VERSION = b"\xffBIOSEMI"
ANNOTATIONS_LABEL = "EDF Annotations"
SAMPLE_BYTES = 2  # EDF's samples are 16-bit little-endian integers
MICROVOLT_UNITS = ("uV", "\u03bcV", "\u00b5V", "\x83\xcaV")  # the spellings mne reads as 1e-6 V
FIXED_BYTES = 256
SIGNAL_FIELDS = (  # (name, width) in the order the header stores them, one block per field
    ("label", 16),
    ("transducer", 80),
    ("unit", 8),
    ("physical_min", 8),
    ("physical_max", 8),
    ("digital_min", 8),
    ("digital_max", 8),
    ("prefilter", 80),
    ("samples_per_record", 8),
    ("reserved", 32),
)


class EdfError(UserError):
    """An EDF that cannot be used; the message names the file and the problem in one line."""


@dataclass(frozen=True)
class EdfHeader:
    start: datetime | None  # None where the header's date or time is not a valid one
    header_bytes: int  # where the first data record starts
    reserved: str  # "EDF+C", "EDF+D", or "" for plain EDF
    n_records: int  # -1: unknown (a recording still being written)
    record_duration_s: float
    labels: tuple[str, ...]
    signal_fields: dict[str, tuple[str, ...]]  # field name -> one stripped text per signal


def read_header(path: Path) -> EdfHeader:
    """Parse the header of ``path``; EdfError names the file and what is wrong."""
    try:
        with open(path, "rb") as f:
            fixed = f.read(FIXED_BYTES)
            _check_version(path, fixed)
            count = _int(fixed[252:256], path, "signal count")
            signals = f.read(FIXED_BYTES * count) if count > 0 else b""
    except OSError as e:
        raise EdfError(f"{path}: cannot read ({e.strerror or e})") from None
    if count <= 0 or len(signals) < FIXED_BYTES * count:
        raise EdfError(f"{path}: header promises {count} signals it does not hold")
    return EdfHeader(
        start=_start(fixed[168:176], fixed[176:184]),
        header_bytes=_int(fixed[184:192], path, "header size"),
        reserved=fixed[192:236].decode("latin-1").strip(),
        n_records=_int(fixed[236:244], path, "record count"),
        record_duration_s=_float(fixed[244:252], path, "record duration"),
        labels=_signal_fields(signals, count)["label"],
        signal_fields=_signal_fields(signals, count),
    )


def read_readable_header(path: Path) -> EdfHeader:
    """The header of ``path`` if its data records can be read as one continuous recording; else
    EdfError names what the header gets wrong (checked here, before any reader trips on it)."""
    header = read_header(path)
    duration_s = header.record_duration_s
    if not math.isfinite(duration_s) or duration_s <= 0:
        raise EdfError(f"{path}: header record duration {duration_s:g} s is not positive")
    if header.n_records == 0 or header.n_records < -1:
        raise EdfError(f"{path}: header record count {header.n_records} (no data records)")
    samples = numbers(path, header, "samples_per_record")
    for label, n in zip(header.labels, samples, strict=True):
        if not n > 0:
            raise EdfError(f"{path}: signal {label!r} has {n:g} samples per record")
    record_bytes = SAMPLE_BYTES * int(sum(samples))
    if header.n_records > 0:
        promised = header.header_bytes + header.n_records * record_bytes
        if (size := path.stat().st_size) < promised:
            raise EdfError(
                f"{path}: truncated EDF (header promises {promised} bytes, the file holds {size})"
            )
    if records_in_file(path, header) == 0:
        raise EdfError(f"{path}: header record count {header.n_records} (no data records)")
    if header.reserved.startswith("EDF+D"):
        _check_contiguous(path, header, [int(n) for n in samples])
    return header


def records_in_file(path: Path, header: EdfHeader) -> int:
    """Whole data records the file holds, whatever its header says: -1 (EDF's "unknown", a
    recording still being written when the header was) or a count short of what was appended.
    A reader reads them all, as mne does."""
    record_bytes = SAMPLE_BYTES * int(sum(numbers(path, header, "samples_per_record")))
    return max(0, path.stat().st_size - header.header_bytes) // record_bytes


def record_count_note(path: Path, header: EdfHeader) -> tuple[EdfHeader, list[str]]:
    """``header`` with the record count the file holds, and a note where that is not the
    header's own (a file shorter than its header is refused by ``read_readable_header``)."""
    found = records_in_file(path, header)
    if found == header.n_records:
        return header, []
    said = "-1 (unknown)" if header.n_records < 0 else str(header.n_records)
    note = f"header record count {said}: read the {found} records the file holds"
    return replace(header, n_records=found), [note]


def numbers(path: Path, header: EdfHeader, field: str) -> tuple[float, ...]:
    """One numeric signal field (``physical_min``, ``samples_per_record``...) as floats."""
    values = []
    for i, text in enumerate(header.signal_fields[field]):
        try:
            values.append(float(text))
        except ValueError:
            shown = repr(text) if len(text) <= 12 else f"{text[:12]!r}..."
            raise EdfError(
                f"{path}: header {field} of signal {i + 1} of {len(header.labels)} is {shown}, "
                "not a number (a wrong signal count?)"
            ) from None
    return tuple(values)


def unit_scale(unit: str) -> float:
    """Volts per header unit as mne scales samples (uV -> 1e-6, mV -> 1e-3, anything else 1)."""
    return 1e-6 if unit in MICROVOLT_UNITS else 1e-3 if unit == "mV" else 1.0


def _check_contiguous(path: Path, header: EdfHeader, samples: list[int]) -> None:
    """EDF+D: each record's onset is the first (time-keeping) annotation of its EDF Annotations
    signal, "+onset\\x14\\x14"; records that follow each other exactly are a continuous file."""
    if ANNOTATIONS_LABEL not in header.labels:
        raise EdfError(f"{path}: EDF+D without an {ANNOTATIONS_LABEL} signal")
    index = header.labels.index(ANNOTATIONS_LABEL)
    start = SAMPLE_BYTES * sum(samples[:index])
    stop = start + SAMPLE_BYTES * samples[index]
    record_bytes = SAMPLE_BYTES * sum(samples)
    n_records = records_in_file(path, header)  # what a reader reads: every whole record
    records = np.memmap(
        path, np.uint8, "r", offset=header.header_bytes, shape=(n_records, record_bytes)
    )
    tolerance_s = header.record_duration_s / max(samples) / 2  # half the finest sample
    first_s = 0.0
    for i, tal in enumerate(records[:, start:stop]):
        try:
            onset_s = float(bytes(tal).split(b"\x14", 1)[0].decode("latin-1"))
        except ValueError:
            raise EdfError(f"{path}: EDF+D record {i} has no time-keeping onset") from None
        first_s = onset_s if i == 0 else first_s
        if abs(onset_s - first_s - i * header.record_duration_s) > tolerance_s:
            raise EdfError(
                f"{path}: EDF+D with gaps (record {i} starts at {onset_s:g} s): not supported"
            )


def _check_version(path: Path, fixed: bytes) -> None:
    if len(fixed) < FIXED_BYTES:
        raise EdfError(f"{path}: not a readable EDF ({len(fixed)} bytes, shorter than a header)")
    if fixed[:8] == BDF_VERSION:
        raise EdfError(f"{path}: a BDF (24-bit) file, not EDF: convert it to EDF (16-bit) first")
    if fixed[:8] != EDF_VERSION:
        raise EdfError(f"{path}: not a readable EDF (version field {fixed[:8]!r}, expected '0')")


def _signal_fields(block: bytes, count: int) -> dict[str, tuple[str, ...]]:
    """Each field's text per signal. Labels are kept exactly as mne reads them (ASCII spaces
    stripped, NUL or NBSP padding kept), so that they name mne's channels; data/montage.py reads
    through the padding. Other fields end at a NUL, as mne reads them too."""
    fields, offset = {}, 0
    for name, width in SIGNAL_FIELDS:
        raw = block[offset : offset + width * count]
        cells = [raw[i : i + width] for i in range(0, len(raw), width)]
        if name == "label":
            fields[name] = tuple(cell.strip().decode("latin-1") for cell in cells)
        else:
            fields[name] = tuple(cell.decode("latin-1").split("\x00")[0].strip() for cell in cells)
        offset += width * count
    return fields


def _int(raw: bytes, path: Path, what: str) -> int:
    try:
        return int(raw.decode("latin-1").strip())
    except ValueError:
        raise EdfError(f"{path}: header {what} {raw!r} is not a whole number") from None


def _float(raw: bytes, path: Path, what: str) -> float:
    try:
        return float(raw.decode("latin-1").strip())
    except ValueError:
        raise EdfError(f"{path}: header {what} {raw!r} is not a number") from None


def _start(date: bytes, time: bytes) -> datetime | None:
    """dd.mm.yy and hh.mm.ss; EDF's two-digit years 85-99 are 1985-1999, 00-84 are 2000-2084."""
    try:
        day, month, year = (int(p) for p in date.decode("latin-1").split("."))
        hour, minute, second = (int(p) for p in time.decode("latin-1").split("."))
        return datetime(year + (1900 if year >= 85 else 2000), month, day, hour, minute, second)
    except ValueError:
        return None
