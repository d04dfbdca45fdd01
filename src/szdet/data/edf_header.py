"""The EDF/EDF+ header, read straight from its bytes: the one parser of it.

A fixed 256-byte part (version, patient and recording ids, start date and time, header size, a
reserved field that says EDF+C or EDF+D, record count and duration, signal count), then 256
bytes per signal, field by field (16 label, 80 transducer, 8 unit, 8+8 physical min/max, 8+8
digital min/max, 80 prefilter, 8 samples per record, 32 reserved). Reading it ourselves costs one
small read, where a full mne open costs more than the rest of a short file's reading, and it
lets a bad header be named precisely instead of failing somewhere inside mne.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from szdet.errors import UserError

EDF_VERSION = b"0       "
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
            count = _int(fixed[252:256], path, "signal count") if len(fixed) == FIXED_BYTES else 0
            signals = f.read(FIXED_BYTES * count)
    except OSError as e:
        raise EdfError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(fixed) < FIXED_BYTES:
        raise EdfError(f"{path}: not an EDF file ({len(fixed)} bytes, shorter than a header)")
    if fixed[:8] != EDF_VERSION:
        raise EdfError(f"{path}: not an EDF file (version field {fixed[:8]!r}, expected '0')")
    if count <= 0 or len(signals) < FIXED_BYTES * count:
        raise EdfError(f"{path}: header promises {count} signals it does not hold")
    return EdfHeader(
        start=_start(fixed[168:176], fixed[176:184]),
        reserved=fixed[192:236].decode("latin-1").strip(),
        n_records=_int(fixed[236:244], path, "record count"),
        record_duration_s=_float(fixed[244:252], path, "record duration"),
        labels=_signal_fields(signals, count)["label"],
        signal_fields=_signal_fields(signals, count),
    )


def _signal_fields(block: bytes, count: int) -> dict[str, tuple[str, ...]]:
    fields, offset = {}, 0
    for name, width in SIGNAL_FIELDS:
        raw = block[offset : offset + width * count]
        fields[name] = tuple(
            raw[i : i + width].decode("latin-1").strip() for i in range(0, len(raw), width)
        )
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
