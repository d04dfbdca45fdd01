"""A corpus root of either layout: which one it holds, the recordings of a split, and the seizures
they are annotated with.

TUSZ (szdet.data.tusz): ``edf/<split>/`` or ``<split>/`` folders, annotations ``<stem>.csv_bi``
(else ``.csv``) beside each EDF; the folders are the splits, checked patient-disjoint. BIDS
(szdet.data.bids): ``dataset_description.json`` and/or ``sub-*/`` folders, annotations
``<entities>_events.tsv`` (szdet.data.hed_tsv); splits are assigned per subject, so disjoint by
construction. A root holding a BIDS tree is read as one, whatever else it holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from szdet.data import bids
from szdet.data.hed_tsv import events_name, read_events_tsv
from szdet.data.tusz import (
    SPLITS,
    AnnotationError,
    Interval,
    RecordingFiles,
    check_patient_disjoint,
    clip_intervals,
    edf_root,
    find_recordings,
    read_annotation,
)
from szdet.errors import UserError

# An annotation whose recording duration differs from its EDF's by more than this belongs to
# another recording (TUSZ writes two decimals, SzCORE scores a mismatch as all-zero).
DURATION_TOLERANCE_S = 1.0
CLIP_NOTE_TOLERANCE_S = 0.01  # annotations ending this little past the recording go unremarked


@dataclass(frozen=True)
class CorpusSplit:
    root: Path  # the folder build records name their sources relative to
    layout: str  # "tusz" or "bids"
    recordings: list[RecordingFiles]  # sorted by path
    assignment: dict[str, str]  # BIDS: subject -> split, of every subject; TUSZ: {}


def detect_layout(data_root: Path) -> str:
    """ "bids" or "tusz"; a one-line UserError for a folder that holds neither."""
    if not data_root.is_dir():
        raise UserError(f"{data_root}: no such data folder")
    if bids.is_bids(data_root):
        return "bids"
    if any((edf_root(data_root) / split).is_dir() for split in SPLITS):
        return "tusz"
    raise UserError(
        f"{data_root}: neither a TUSZ corpus (edf/<split>/ or <split>/ folders) nor a BIDS tree "
        f"({bids.DESCRIPTION}, sub-*/ folders)"
    )


def find_split(data_root: Path, split: str, splits_file: Path | None = None) -> CorpusSplit:
    """The recordings of ``split``; refuses splits that share a patient, and an empty split."""
    data_root = Path(data_root)
    if detect_layout(data_root) == "tusz":
        if splits_file is not None:
            raise UserError(
                f"{splits_file}: --splits assigns BIDS subjects; {data_root} is a TUSZ corpus, "
                "whose split folders are its splits"
            )
        check_patient_disjoint(data_root)
        recordings = find_recordings(data_root, split)
        if not recordings:
            raise UserError(f"{edf_root(data_root) / split}: no *.edf recordings in this split")
        return CorpusSplit(edf_root(data_root), "tusz", recordings, {})
    if split not in SPLITS:
        raise UserError(f"{data_root}: unknown split {split!r} (known: {', '.join(SPLITS)})")
    assignment = bids.assign_splits(data_root, splits_file)
    recordings = bids.find_bids_recordings(data_root, split, assignment)
    if not recordings:
        raise UserError(
            f"{data_root}: no *.edf recordings in split {split} "
            f"({bids.describe_assignment(assignment)})"
        )
    return CorpusSplit(data_root, "bids", recordings, assignment)


@dataclass(frozen=True)
class Annotated:
    path: Path  # the annotation file read
    seizures: list[Interval]  # as annotated, merged, not clipped
    duration_s: float  # the recording duration the annotation states
    # (channel, start_s, stop_s) seizure rows of a per-channel .csv, where one is beside the EDF
    channel_seizures: list[tuple[str, float, float]] = field(default_factory=list)

    def channel_seizures_for(self, edf_duration_s: float) -> list[tuple[str, float, float]]:
        """The per-channel rows clipped to the EDF's duration (rows past its end dropped)."""
        return [
            (c, a, min(b, edf_duration_s))
            for c, a, b in self.channel_seizures
            if a < edf_duration_s
        ]

    def events_for(self, edf_duration_s: float) -> tuple[list[Interval], list[str]]:
        """The seizures clipped to the EDF's duration, and a note if any ran past its end.
        AnnotationError if the durations differ: an annotation of another recording."""
        if abs(self.duration_s - edf_duration_s) > DURATION_TOLERANCE_S:
            raise AnnotationError(
                f"{self.path}: annotated duration {self.duration_s:.2f} s differs from the "
                f"EDF's {edf_duration_s:.2f} s (an annotation of another recording?)"
            )
        notes = []
        if self.seizures and self.seizures[-1][1] > edf_duration_s + CLIP_NOTE_TOLERANCE_S:
            notes.append(
                f"annotation ends at {self.seizures[-1][1]:.2f} s, past the recording's end "
                f"({edf_duration_s:.2f} s): clipped"
            )
        return clip_intervals(self.seizures, edf_duration_s), notes


def annotated_seizures(files: RecordingFiles) -> Annotated:
    """What a recording is annotated with: its events TSV (BIDS), else its .csv_bi, else the
    .csv's union over channels (TUSZ); and the .csv's per-channel seizure rows, where it has
    one (where the seizure is: evaluate/localise.py). AnnotationError names the file and the
    fault."""
    if files.events_tsv is not None:
        tsv = read_events_tsv(files.events_tsv)
        return Annotated(tsv.path, tsv.seizure_intervals(), tsv.recording_duration_s)
    if files.setup == bids.SETUP:
        raise AnnotationError(f"{files.edf}: no {events_name(files.edf)} beside it")
    path = files.csv_bi or files.csv
    if path is None:
        raise AnnotationError(f"{files.edf}: no .csv_bi or .csv annotation file beside it")
    annotation = read_annotation(path)
    channel_rows = read_annotation(files.csv).events if files.csv is not None else ()
    rows = [(e.channel, e.start_s, e.stop_s) for e in channel_rows if e.is_seizure]
    return Annotated(path, annotation.seizure_intervals(), annotation.duration_s, rows)
