"""The TUSZ v2.0.x corpus: its folder layout and its two annotation formats (.csv, .csv_bi).

Layout: ``edf/{train,dev,eval}/<patient>/<session>_<year>/<setup>/<patient>_<session>_<token>.edf``,
each EDF beside ``<same>.csv`` (per-channel events) and ``<same>.csv_bi`` (whole-recording TERM
events). Both annotation files are a ``#`` comment header, a column header, then rows::

    # version = csv_v1.0.0
    # bname = aaaaaaac_s001_t000
    # duration = 301.00 secs
    # montage_file = $NEDC_NFC/lib/nedc_eas_default_montage.txt
    #
    channel,start_time,stop_time,label,confidence
    TERM,42.2786,81.7760,seiz,1.0000

This module reads and writes that format exactly; it knows nothing of signals.
"""

from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from szdet.errors import UserError
from szdet.fileio import write_text_atomic

SPLITS = ("train", "dev", "eval")
# The electrode setups a session is recorded with, one folder each (TUSZ's "montage" folders; in
# szdet a montage is the model's inputs, data.montage): average reference, linked ears, average
# reference without A1/A2.
SETUPS = ("01_tcp_ar", "02_tcp_le", "03_tcp_ar_a")
# TUSZ seizure types. The usual list has nine; TUSZ v2 also uses cnsz (clonic) and atsz (atonic).
SEIZURE_LABELS = frozenset(
    {"seiz", "fnsz", "gnsz", "spsz", "cpsz", "absz", "tnsz", "cnsz", "tcsz", "atsz", "mysz"}
)
BACKGROUND_LABELS = frozenset({"bckg"})
HEADER = "channel,start_time,stop_time,label,confidence"
VERSION = "csv_v1.0.0"
# The header's ``montage_file``: TUSZ's own key (kept verbatim), naming the NEDC file that defines
# the channel derivations the annotators viewed.
DEFAULT_MONTAGE_FILE = "$NEDC_NFC/lib/nedc_eas_default_montage.txt"
TERM = "TERM"

Interval = tuple[float, float]  # (start_s, stop_s)


class AnnotationError(UserError):
    """A malformed annotation file; the message names the file and the line."""


@dataclass(frozen=True)
class Event:
    channel: str
    start_s: float
    stop_s: float
    label: str
    confidence: float = 1.0

    @property
    def is_seizure(self) -> bool:
        return self.label in SEIZURE_LABELS


@dataclass(frozen=True)
class Annotation:
    path: Path
    bname: str
    duration_s: float
    events: tuple[Event, ...]
    montage_file: str = DEFAULT_MONTAGE_FILE

    def seizure_intervals(self) -> list[Interval]:
        """Seizure time as merged intervals, the union over channels (a .csv gives one row per
        channel for the same seizure; a .csv_bi gives TERM rows)."""
        return merge_intervals((e.start_s, e.stop_s) for e in self.events if e.is_seizure)


_HEADER_FIELD = re.compile(r"^#\s*(\w+)\s*=\s*(.*?)\s*$")
_DURATION = re.compile(r"^(\d+(?:\.\d*)?)\s*(?:secs?)?$")


def read_annotation(path: str | Path) -> Annotation:
    """Parse a .csv or .csv_bi file; raise AnnotationError naming the file and line on any fault."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # a BOM is tolerated
    except FileNotFoundError:
        raise AnnotationError(f"{path}: annotation file missing") from None
    except UnicodeDecodeError:
        raise AnnotationError(f"{path}: not a text annotation file") from None

    fields: dict[str, str] = {}
    events: list[Event] = []
    seen_header = False
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        where = f"{path}: line {number}"
        if not line:
            continue
        if line.startswith("#"):
            if seen_header:
                raise AnnotationError(f"{where}: comment after the column header")
            if m := _HEADER_FIELD.match(line):
                fields[m.group(1)] = m.group(2)
            continue
        if not seen_header:
            if line.replace(" ", "") != HEADER:
                raise AnnotationError(f"{where}: expected column header {HEADER!r}, got {line!r}")
            seen_header = True
            continue
        events.append(_parse_row(line, where))

    if not seen_header:
        raise AnnotationError(f"{path}: no column header {HEADER!r}")
    duration_s = _parse_duration(fields.get("duration"), path)
    return Annotation(
        path=path,
        bname=fields.get("bname", path.stem),
        duration_s=duration_s,
        events=tuple(events),
        montage_file=fields.get("montage_file", DEFAULT_MONTAGE_FILE),
    )


def _parse_duration(text: str | None, path: Path) -> float:
    if text is None:
        raise AnnotationError(f"{path}: header has no '# duration = ... secs' line")
    m = _DURATION.match(text)
    if not m:
        raise AnnotationError(f"{path}: bad duration {text!r} (expected e.g. '301.00 secs')")
    return float(m.group(1))


def _parse_row(line: str, where: str) -> Event:
    parts = [p.strip() for p in line.split(",")]
    if len(parts) != 5:
        raise AnnotationError(f"{where}: expected 5 comma-separated fields, got {len(parts)}")
    channel, start, stop, label, conf = parts
    try:
        start_s, stop_s, confidence = float(start), float(stop), float(conf)
    except ValueError:
        raise AnnotationError(f"{where}: non-numeric time or confidence in {line!r}") from None
    if not (math.isfinite(stop_s) and 0 <= start_s < stop_s):
        raise AnnotationError(f"{where}: need 0 <= start < stop, got {start_s} .. {stop_s}")
    if label not in SEIZURE_LABELS and label not in BACKGROUND_LABELS:
        known = ", ".join(sorted(SEIZURE_LABELS | BACKGROUND_LABELS))
        raise AnnotationError(f"{where}: unknown label {label!r} (known: {known})")
    return Event(channel, start_s, stop_s, label, confidence)


def write_annotation(
    path: str | Path,
    events: Sequence[Event],
    duration_s: float,
    bname: str | None = None,
    montage_file: str = DEFAULT_MONTAGE_FILE,
) -> None:
    """Write a .csv/.csv_bi file in the TUSZ format, atomically."""
    path = Path(path)
    lines = [
        f"# version = {VERSION}",
        f"# bname = {bname or path.stem}",
        f"# duration = {duration_s:.2f} secs",
        f"# montage_file = {montage_file}",
        "#",
        HEADER,
    ]
    lines += [
        f"{e.channel},{e.start_s:.4f},{e.stop_s:.4f},{e.label},{e.confidence:.4f}" for e in events
    ]
    write_text_atomic(path, "\n".join(lines) + "\n")


def term_events(
    seizures: Iterable[Interval], duration_s: float, label: str = "seiz"
) -> list[Event]:
    """TERM rows spanning the whole recording: the seizures, with ``bckg`` rows filling the gaps
    (the shape of a TUSZ .csv_bi file)."""
    events: list[Event] = []
    cursor = 0.0
    for start, stop in clip_intervals(merge_intervals(seizures), duration_s):
        if start > cursor:
            events.append(Event(TERM, cursor, start, "bckg"))
        events.append(Event(TERM, start, stop, label))
        cursor = stop
    if cursor < duration_s:
        events.append(Event(TERM, cursor, duration_s, "bckg"))
    return events


def merge_intervals(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted union of overlapping intervals. Touching ones stay apart: NEDC scores two
    consecutive TERM events as two, and a split over-long detection stays in pieces."""
    merged: list[list[float]] = []
    for start, stop in sorted(intervals):
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    return [(a, b) for a, b in merged]


def clip_intervals(intervals: Iterable[Interval], duration_s: float) -> list[Interval]:
    """Intervals cut to [0, duration_s]; those left empty are dropped."""
    return [(max(0.0, a), min(b, duration_s)) for a, b in intervals if a < duration_s and b > 0]


# --- corpus layout ----------------------------------------------------------------------------
# The TUSZ walker; szdet.data.bids walks a BIDS tree into the same RecordingFiles, and
# szdet.data.corpus tells the two layouts apart.

EDF_SUFFIX = ".edf"  # matched in any case: corpora copied from Windows hold *.EDF


@dataclass(frozen=True)
class RecordingFiles:
    """One EDF of a corpus and its annotation files (``None`` where absent), with the names the
    cache files it under."""

    split: str
    edf: Path
    name: str  # aaaaaaac_s001_t000; BIDS: sub-01_ses-01_task-szMonitoring_run-00
    patient: str  # aaaaaaac; BIDS: the subject, sub-01
    session: str  # s001_2002; BIDS: ses-01
    setup: str  # 01_tcp_ar (SETUPS); BIDS: "bids" (its channels say the rest)
    csv: Path | None = None
    csv_bi: Path | None = None
    events_tsv: Path | None = None  # BIDS' <entities>_events.tsv

    @property
    def annotations(self) -> tuple[Path, ...]:
        """The annotation files present, hashed into a build record's source identity."""
        return tuple(p for p in (self.csv, self.csv_bi, self.events_tsv) if p is not None)


def walk_edfs(folder: Path) -> list[Path]:
    """Every ``*.edf`` (any case) under ``folder``, sorted. Symlinked folders are followed, each
    real folder entered once, so a link loop ends; a dangling ``.edf`` link is listed (the build
    skips it, naming it). Only directory listings are read: O(files), no file opened."""
    found: list[Path] = []
    visited: set[tuple[int, int]] = set()
    for top, dirs, files in os.walk(folder, followlinks=True):
        info = os.stat(top)
        if (info.st_dev, info.st_ino) in visited:
            dirs[:] = []  # reached again through a link: its files are listed already
            continue
        visited.add((info.st_dev, info.st_ino))
        dirs.sort()  # a folder linked twice is walked under the same one of its names each time
        found += [Path(top, f) for f in files if f.lower().endswith(EDF_SUFFIX)]
    return sorted(found)


def tusz_recording(split: str, edf: Path) -> RecordingFiles:
    """The files of a TUSZ EDF (``<patient>/<session>_<year>/<setup>/<patient>_..._<token>``)."""
    csv, csv_bi = edf.with_suffix(".csv"), edf.with_suffix(".csv_bi")
    return RecordingFiles(
        split=split,
        edf=edf,
        name=edf.stem,
        patient=tusz_patient(edf),
        session=edf.parent.parent.name,
        setup=edf.parent.name,
        csv=csv if csv.is_file() else None,
        csv_bi=csv_bi if csv_bi.is_file() else None,
    )


def tusz_patient(edf: Path) -> str:
    return edf.stem.split("_", 1)[0]  # the file name up to the first "_"


def edf_root(data_root: str | Path) -> Path:
    """Accept either the corpus root (holding ``edf/``) or the ``edf/`` folder itself."""
    root = Path(data_root)
    return root / "edf" if (root / "edf").is_dir() else root


def find_recordings(data_root: str | Path, split: str) -> list[RecordingFiles]:
    """Every EDF of a split, sorted by path (so shards and limits are reproducible)."""
    split_dir = edf_root(data_root) / split
    if not split_dir.is_dir():
        raise UserError(f"{split_dir}: no such split folder (expected <data-root>/edf/{split}/)")
    return [tusz_recording(split, edf) for edf in walk_edfs(split_dir)]


def check_patient_disjoint(data_root: str | Path) -> None:
    """Refuse a corpus whose splits share a patient: that would leak test data into training.
    Walks as find_recordings does, so recordings reached through symlinks count too."""
    splits: dict[str, set[str]] = defaultdict(set)
    root = edf_root(data_root)
    for split in SPLITS:
        if (root / split).is_dir():
            for edf in walk_edfs(root / split):
                splits[tusz_patient(edf)].add(split)
    shared = {p: s for p, s in splits.items() if len(s) > 1}
    if shared:
        patient, in_splits = sorted(shared.items())[0]
        more = f" (and {len(shared) - 1} more patients)" if len(shared) > 1 else ""
        raise UserError(
            f"{root}: patient {patient} appears in splits {', '.join(sorted(in_splits))}{more}; "
            "splits must be patient-disjoint"
        )
