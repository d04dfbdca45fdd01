"""BIDS trees as epilepsy2bids writes them (SzCORE's releases of Siena, CHB-MIT, TUSZ): their
recordings, and the subject-disjoint splits BIDS itself does not have.

Layout: ``dataset_description.json`` at the root, then
``sub-XX/ses-YY/eeg/sub-XX_ses-YY_task-szMonitoring_run-ZZ_eeg.edf`` beside
``..._events.tsv`` (szdet.data.hed_tsv reads it). Each subject goes to one split: by default by a
stable hash of its id (SPLIT_PERCENT), or as a user's file says (``subject<TAB>split`` lines, or
commas, header optional). The assignment used is written to ``<cache>/splits.tsv`` in that same
format, so it can be read, and passed back with ``--splits`` to pin it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from szdet.data.hed_tsv import events_name
from szdet.data.tusz import SPLITS, RecordingFiles, walk_edfs
from szdet.errors import UserError
from szdet.fileio import write_text_atomic

DESCRIPTION = "dataset_description.json"
SUBJECT_PREFIX = "sub-"
SESSION_PREFIX = "ses-"
SETUP = "bids"  # RecordingFiles.setup: BIDS has no setup folder, the channels say the rest
# The default split of the subjects, in percent of the sha256 buckets (0-99) of their ids.
SPLIT_PERCENT = (("train", 70), ("dev", 15), ("eval", 15))
SPLITS_FILE = "splits.tsv"  # beside the cache's split folders
HEADER = ("subject", "split")


class SplitsFileError(UserError):
    """A bad --splits file; the message names the file and the line."""


def is_bids(root: Path) -> bool:
    return (root / DESCRIPTION).is_file() or bool(subjects(root))


def subjects(root: Path) -> list[str]:
    """The subject folders (``sub-*``, symlinks to folders included), sorted: one listing of
    the root, so cheap even with thousands of subjects."""
    return sorted(p.name for p in root.glob(f"{SUBJECT_PREFIX}*") if p.is_dir())


def bids_recording(root: Path, split: str, edf: Path) -> RecordingFiles:
    """The files of ``root/sub-XX[/ses-YY]/eeg/<entities>_eeg.edf``."""
    parts = edf.relative_to(root).parts
    session = parts[1] if len(parts) > 2 and parts[1].startswith(SESSION_PREFIX) else ""
    events = edf.with_name(events_name(edf))
    return RecordingFiles(
        split=split,
        edf=edf,
        name=edf.stem.removesuffix("_eeg"),
        patient=parts[0],
        session=session,
        setup=SETUP,
        events_tsv=events if events.is_file() else None,
    )


def find_bids_recordings(
    root: Path, split: str, assignment: dict[str, str]
) -> list[RecordingFiles]:
    """Every EDF of the subjects ``assignment`` puts in ``split``, sorted by path."""
    found = [
        bids_recording(root, split, edf)
        for subject, to in assignment.items()
        if to == split
        for edf in walk_edfs(root / subject)
    ]
    return sorted(found, key=lambda r: r.edf)


def hashed_split(subject: str) -> str:
    """The default split of a subject: a pure function of its id, so adding subjects to a
    tree never moves the others."""
    bucket = int(hashlib.sha256(subject.encode()).hexdigest(), 16) % 100
    for split, percent in SPLIT_PERCENT:
        if bucket < percent:
            return split
        bucket -= percent
    raise AssertionError("SPLIT_PERCENT must sum to 100")


def assign_splits(root: Path, splits_file: Path | None) -> dict[str, str]:
    """{subject: split} for every subject of the tree, hashed or read from ``splits_file``."""
    tree = subjects(root)
    if splits_file is None:
        return {subject: hashed_split(subject) for subject in tree}
    listed = read_splits_file(splits_file)
    if missing := [s for s in tree if s not in listed]:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise SplitsFileError(f"{splits_file}: subject {missing[0]} of {root} is not listed{more}")
    return {subject: listed[subject] for subject in tree}


def read_splits_file(path: Path) -> dict[str, str]:
    """``subject<TAB>split`` (or ``subject,split``) lines, an optional header first; ``01`` and
    ``sub-01`` are the same subject."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise SplitsFileError(f"{path}: no such splits file") from None
    except UnicodeDecodeError:
        raise SplitsFileError(f"{path}: not a text file") from None
    listed: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        cells = [c.strip() for c in raw.split("\t" if "\t" in raw else ",")]
        if cells == [""] or (number == 1 and [c.lower() for c in cells] == list(HEADER)):
            continue
        where = f"{path}: line {number}"
        if len(cells) != 2 or not all(cells):
            raise SplitsFileError(f"{where}: expected 'subject<TAB>split', got {raw.strip()!r}")
        subject, split = cells
        subject = subject if subject.startswith(SUBJECT_PREFIX) else SUBJECT_PREFIX + subject
        if split not in SPLITS:
            raise SplitsFileError(f"{where}: unknown split {split!r} (known: {', '.join(SPLITS)})")
        if subject in listed:
            raise SplitsFileError(f"{where}: subject {subject} listed again (first on line "
                                  f"{first_line[subject]})")  # fmt: skip
        listed[subject], first_line[subject] = split, number
    return listed


def record_assignment(cache_root: Path, assignment: dict[str, str]) -> Path:
    """Add the assignment to ``cache_root/splits.tsv``; refuse one that moves a subject an earlier
    build (of another split) put elsewhere: that subject would then sit in two splits."""
    path = cache_root / SPLITS_FILE
    earlier = read_splits_file(path) if path.is_file() else {}
    if moved := sorted(s for s in assignment if earlier.get(s, assignment[s]) != assignment[s]):
        raise UserError(
            f"{path}: an earlier build put {moved[0]} in {earlier[moved[0]]}, this one in "
            f"{assignment[moved[0]]}; build into another --out, or pass --splits {path}"
        )
    merged = {**earlier, **assignment}
    if merged != earlier:
        lines = ["\t".join(HEADER), *(f"{s}\t{merged[s]}" for s in sorted(merged))]
        cache_root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def describe_assignment(assignment: dict[str, str]) -> str:
    """E.g. ``12 subjects: 8 train, 2 dev, 2 eval``."""
    counts = ", ".join(f"{sum(v == s for v in assignment.values())} {s}" for s in SPLITS)
    return f"{len(assignment)} subjects: {counts}"
