"""The SzCORE / HED-SCORE events TSV (``*_events.tsv`` of an epilepsy2bids BIDS tree, and what a
SzCORE detector writes): its one reader and one writer.

Tab-separated, one header line naming the columns, then one row per event::

    onset  duration  eventType  confidence  channels  dateTime             recordingDuration
    12.00  41.50     sz         0.87        n/a       2019-04-03 10:12:00  600.00

``eventType`` is a HED-SCORE seizure type (``sz``, ``sz_foc_ia`` ...: every type starts with
``sz``) or ``bckg``; a file with no seizure holds one ``bckg`` row spanning the recording, so
``recordingDuration`` is always present. Missing values are ``n/a``. Numbers are written with two
decimals and times as ``%Y-%m-%d %H:%M:%S``, as epilepsy2bids 0.0.7 writes them.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from szdet.data.tusz import AnnotationError, Interval, merge_intervals
from szdet.fileio import write_text_atomic

COLUMNS = (
    "onset",
    "duration",
    "eventType",
    "confidence",
    "channels",
    "dateTime",
    "recordingDuration",
)
REQUIRED = ("onset", "duration", "eventType", "recordingDuration")
SEIZURE_PREFIX = "sz"
BACKGROUND = "bckg"
MISSING = "n/a"
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
SUFFIX = "_events.tsv"


@dataclass(frozen=True)
class TsvEvent:
    onset_s: float
    duration_s: float
    event_type: str
    confidence: float | None = None  # None: n/a

    @property
    def is_seizure(self) -> bool:
        return self.event_type.startswith(SEIZURE_PREFIX)


@dataclass(frozen=True)
class EventsTsv:
    path: Path
    events: tuple[TsvEvent, ...]
    recording_duration_s: float
    date_time: datetime | None  # the recording's start, None where n/a

    def seizure_intervals(self) -> list[Interval]:
        return merge_intervals(
            (e.onset_s, e.onset_s + e.duration_s) for e in self.events if e.is_seizure
        )


def read_events_tsv(path: str | Path) -> EventsTsv:
    """Parse an events TSV; AnnotationError names the file and line of any fault."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise AnnotationError(f"{path}: events file missing") from None
    except UnicodeDecodeError:
        raise AnnotationError(f"{path}: not a text events file") from None
    rows = list(csv.reader(io.StringIO(text), delimiter="\t"))
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise AnnotationError(f"{path}: empty events file (expected a header and rows)")
    header = [cell.strip() for cell in rows[0]]
    if missing := [c for c in REQUIRED if c not in header]:
        raise AnnotationError(f"{path}: line 1: header lacks column(s) {', '.join(missing)}")
    if len(rows) == 1:
        raise AnnotationError(f"{path}: no event rows (a file with no seizure has a bckg row)")
    events, durations, starts = [], set(), set()
    for number, raw in enumerate(rows[1:], start=2):
        where = f"{path}: line {number}"
        if len(raw) != len(header):
            raise AnnotationError(f"{where}: {len(raw)} fields, the header has {len(header)}")
        row = dict(zip(header, (cell.strip() for cell in raw), strict=True))
        events.append(_parse_event(row, where))
        durations.add(_number(row, "recordingDuration", where))
        starts.add(_date_time(row.get("dateTime", MISSING), where))
    if len(durations) > 1:
        raise AnnotationError(f"{path}: rows disagree on recordingDuration ({sorted(durations)})")
    # Events running past recordingDuration are kept as written: each reader cuts them to the
    # recording and says so (score_files.py warns, the cache notes it), as szcore-evaluation
    # scores such a file rather than refusing it.
    date_time = starts.pop() if len(starts) == 1 else None
    return EventsTsv(path, tuple(events), durations.pop(), date_time)


def _number(row: dict[str, str], column: str, where: str) -> float:
    try:
        value = float(row[column])
    except ValueError:
        raise AnnotationError(f"{where}: {column} {row[column]!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise AnnotationError(f"{where}: {column} {row[column]!r} must be >= 0")
    return value


def _date_time(text: str, where: str) -> datetime | None:
    if text == MISSING:
        return None
    try:
        return datetime.strptime(text, DATETIME_FORMAT)
    except ValueError:
        raise AnnotationError(
            f"{where}: dateTime {text!r} is not of the form YYYY-MM-DD HH:MM:SS"
        ) from None


def _parse_event(row: dict[str, str], where: str) -> TsvEvent:
    event_type = row["eventType"]
    if not (event_type.startswith(SEIZURE_PREFIX) or event_type == BACKGROUND):
        raise AnnotationError(f"{where}: eventType {event_type!r} is neither sz* nor bckg")
    confidence = row.get("confidence", MISSING)
    return TsvEvent(
        onset_s=_number(row, "onset", where),
        duration_s=_number(row, "duration", where),
        event_type=event_type,
        confidence=None if confidence == MISSING else _number(row, "confidence", where),
    )


def write_events_tsv(
    path: str | Path,
    seizures: Sequence[tuple[float, float, float]],
    recording_duration_s: float,
    date_time: datetime | None,
    channels: Sequence[Sequence[str]] | None = None,
) -> None:
    """Write ``seizures`` as (start_s, stop_s, confidence) ``sz`` rows, each with its
    ``channels`` (comma-separated; ``n/a`` where unknown), or one ``bckg`` row spanning the
    recording when there are none, atomically."""
    start = MISSING if date_time is None else date_time.strftime(DATETIME_FORMAT)
    named = [",".join(c) or MISSING for c in channels] if channels else [MISSING] * len(seizures)
    rows = [
        (a, b - a, SEIZURE_PREFIX, f"{c:.2f}", where)
        for (a, b, c), where in zip(seizures, named, strict=True)
    ]
    if not rows:
        rows = [(0.0, recording_duration_s, BACKGROUND, MISSING, MISSING)]
    lines = ["\t".join(COLUMNS)]
    lines += [
        f"{onset:.2f}\t{duration:.2f}\t{kind}\t{confidence}\t{where}\t{start}\t"
        f"{recording_duration_s:.2f}"
        for onset, duration, kind, confidence, where in rows
    ]
    write_text_atomic(Path(path), "\n".join(lines) + "\n")


def events_name(edf: Path) -> str:
    """The events file named after a recording: BIDS' ``<entities>_eeg.edf`` pairs with
    ``<entities>_events.tsv``; any other ``<name>.edf`` with ``<name>_events.tsv``."""
    return edf.stem.removesuffix("_eeg") + SUFFIX
