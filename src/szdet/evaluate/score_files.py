"""`szdet score`: reference and hypothesis annotation files -> the scores of evaluate/scoring.py.

Two formats, never mixed: TUSZ ``.csv_bi`` (data/tusz.py) and SzCORE ``*_events.tsv``
(data/hed_tsv.py; a BIDS tree ``sub-*/ses-*/eeg/...``). --ref and --hyp are two files, paired
whatever their names, or two folders, searched recursively and paired by file name (names must be
unique within a folder). The reference decides the format; a hypothesis folder is searched for
that format only, so a `detect --format both` folder scores either way.

A reference without a hypothesis counts as no detections, with a warning naming it (what
szcore-evaluation does with a missing file, for both formats alike); a hypothesis without a
reference is refused, since it would go unscored. Durations come from the reference (``# duration``
or recordingDuration); a .csv_bi hypothesis whose duration differs by over 1 s is refused, as NEDC
does, while a TSV one whose 1 Hz mask length (``int(recordingDuration)``) differs from the
reference's counts as no detections, as szcore-evaluation scores it. Both files' events are cut to
the reference's duration (events starting after it are dropped), with a warning, naming the file,
about a hypothesis that runs past it.

For TSV input the SzCORE challenge's per-subject averages (evaluate/szcore.py) print as well; a
recording's subject is its first ``sub-*`` folder under --ref, else its file name up to the first
``_`` (``sub-01`` of ``sub-01_ses-01_..._events.tsv``).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from szdet.data.hed_tsv import SUFFIX as TSV_SUFFIX
from szdet.data.hed_tsv import read_events_tsv
from szdet.data.tusz import Interval, clip_intervals, read_annotation
from szdet.errors import UserError
from szdet.evaluate.scoring import METHODS, Events, EventScore, score_all
from szdet.evaluate.szcore import (
    ChallengeRecording,
    challenge_scores,
    challenge_table,
    mask_samples,
)

log = logging.getLogger(__name__)

CSV_BI, TSV = ".csv_bi", TSV_SUFFIX
DURATION_TOLERANCE_S = 1.0  # NEDC refuses pairs whose files end at different times
END_TOLERANCE_S = 0.01  # the header's precision: events this little past the end go unremarked


@dataclass(frozen=True)
class Scored:
    """One reference and its hypothesis, read: events in seconds, cut to the recording."""

    ref_path: Path
    subject: str
    ref: list[Interval]
    hyp: list[Interval] | None  # None: no usable hypothesis (no detections)
    duration_s: float


def _format_of_file(path: Path) -> str:
    for suffix in (CSV_BI, TSV):
        if path.name.endswith(suffix):
            return suffix
    raise UserError(f"{path}: neither a .csv_bi nor an {TSV} file")


def _files(path: Path, suffix: str) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for p in sorted(path.rglob(f"*{suffix}")):
        if p.name in files:
            raise UserError(f"{p}: file name also used by {files[p.name]} (names must be unique)")
        files[p.name] = p
    return files


def _folder_files(path: Path, side: str, suffix: str | None) -> tuple[str, dict[str, Path]]:
    """The annotation files of a folder: of ``suffix``, or for the reference, its one format."""
    if not path.is_dir():
        raise UserError(f"{path}: --{side} is neither a .csv_bi / {TSV} file nor a folder")
    found = {s: _files(path, s) for s in (CSV_BI, TSV)}
    kinds = [s for s in (CSV_BI, TSV) if found[s]]
    if suffix is None and len(kinds) == 2:
        raise UserError(f"{path}: holds both .csv_bi and {TSV} references; give one kind")
    if not kinds:
        raise UserError(f"{path}: no .csv_bi or {TSV} files in this folder")
    if suffix is not None and not found[suffix]:
        raise UserError(f"{path}: holds {kinds[0]} files, the reference {suffix} ones")
    chosen = suffix or kinds[0]
    return chosen, found[chosen]


def subject_of(ref: Path, root: Path | None) -> str:
    """The first sub-* folder of ``ref`` under ``root``, else its name up to the first ``_``."""
    if root is not None:
        for part in ref.relative_to(root).parts[:-1]:
            if part.startswith("sub-"):
                return part
    return ref.name.split("_", 1)[0]


def paired_files(ref: Path, hyp: Path) -> tuple[str, list[tuple[Path, Path | None, str]]]:
    """The format, and (reference, hypothesis or None where missing, subject) of each pair."""
    if ref.is_file() and hyp.is_file():
        suffix = _format_of_file(ref)
        if _format_of_file(hyp) != suffix:
            raise UserError(f"{hyp}: not a {suffix} file like the reference {ref}")
        return suffix, [(ref, hyp, subject_of(ref, None))]
    if ref.is_file() != hyp.is_file():
        raise UserError(f"{ref if ref.is_file() else hyp}: give two files or two folders")
    suffix, refs = _folder_files(ref, "ref", None)
    _, hyps = _folder_files(hyp, "hyp", suffix)
    if extra := sorted(set(hyps) - set(refs)):
        raise UserError(f"{hyps[extra[0]]}: no reference named {extra[0]} under {ref}")
    pairs = []
    for name in sorted(refs):
        if name not in hyps:
            log.warning("%s: no hypothesis named %s under %s: no detections", refs[name], name, hyp)
        pairs.append((refs[name], hyps.get(name), subject_of(refs[name], ref)))
    return suffix, pairs


def _within(events: list[Interval], path: Path, duration_s: float) -> list[Interval]:
    """A hypothesis' events cut to the recording: an alarm past its end cannot have happened,
    and would count as false alarms over time that was never recorded."""
    if events and events[-1][1] > duration_s + END_TOLERANCE_S:
        log.warning(
            "%s: seizure events up to %.2f s, past the recording's end (%.2f s): "
            "clipped to it, those starting after it dropped",
            path,
            events[-1][1],
            duration_s,
        )
    return clip_intervals(events, duration_s)


def _read_csv_bi(ref_path: Path, hyp_path: Path | None, subject: str) -> Scored:
    ref = read_annotation(ref_path)
    hyp_events = None
    if hyp_path is not None:
        hyp = read_annotation(hyp_path)
        if abs(ref.duration_s - hyp.duration_s) > DURATION_TOLERANCE_S:
            raise UserError(
                f"{hyp_path}: duration {hyp.duration_s:.2f} s differs from the reference "
                f"{ref_path} ({ref.duration_s:.2f} s)"
            )
        hyp_events = _within(hyp.seizure_intervals(), hyp_path, ref.duration_s)
    ref_events = clip_intervals(ref.seizure_intervals(), ref.duration_s)
    return Scored(ref_path, subject, ref_events, hyp_events, ref.duration_s)


def _read_tsv(ref_path: Path, hyp_path: Path | None, subject: str) -> Scored:
    ref = read_events_tsv(ref_path)
    duration_s = ref.recording_duration_s
    hyp_events = None
    if hyp_path is not None:
        hyp = read_events_tsv(hyp_path)
        if mask_samples(hyp.recording_duration_s) != mask_samples(duration_s):
            log.warning(
                "%s: recordingDuration %.2f s, the reference %s %.2f s: scored as no "
                "detections, as szcore-evaluation does",
                hyp_path,
                hyp.recording_duration_s,
                ref_path,
                duration_s,
            )
        else:
            hyp_events = _within(hyp.seizure_intervals(), hyp_path, duration_s)
    ref_events = clip_intervals(ref.seizure_intervals(), duration_s)
    return Scored(ref_path, subject, ref_events, hyp_events, duration_s)


def read_scored(ref: Path, hyp: Path) -> tuple[str, list[Scored]]:
    """The format and every pair of ``--ref`` / ``--hyp``, read."""
    suffix, pairs = paired_files(Path(ref), Path(hyp))
    reader = _read_csv_bi if suffix == CSV_BI else _read_tsv
    return suffix, [reader(r, h, subject) for r, h, subject in pairs]


def _as_events(scored: list[Scored]) -> tuple[Events, Events, list[float]]:
    ref_events = Events.from_lists([s.ref for s in scored])
    hyp_events = Events.from_lists([s.hyp or [] for s in scored])
    return ref_events, hyp_events, [s.duration_s for s in scored]


def format_table(scores: dict[str, EventScore]) -> str:
    def cell(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [
        f"{'method':<8}{'tp':>9}{'fn':>9}{'fp':>9}{'sens':>8}{'prec':>8}{'f1':>8}{'FA/24h':>9}"
    ]
    for method, s in scores.items():
        lines.append(
            f"{method:<8}{s.tp:>9.2f}{s.fn:>9.2f}{s.fp:>9.2f}{cell(s.sensitivity, 4):>8}"
            f"{cell(s.precision, 4):>8}{cell(s.f1, 4):>8}{cell(s.fa_per_24h, 2):>9}"
        )
    hours = next(iter(scores.values())).duration_s / 3600 if scores else 0.0
    lines.append(f"(seizure events; {hours:.2f} recording hours)")
    return "\n".join(lines)


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else value


def score_command(ref: Path, hyp: Path, method: str, as_json: bool) -> int:
    """`szdet score`: print the scores of hypothesis files against references."""
    suffix, scored = read_scored(Path(ref), Path(hyp))
    methods = METHODS if method == "all" else (method,)
    scores = score_all(*_as_events(scored), methods)
    output: dict[str, object] = {m: s.to_dict() for m, s in scores.items()}
    text = [format_table(scores)]
    if unscored := [str(s.ref_path) for s in scored if s.hyp is None]:
        output["no_hypothesis"] = unscored
        text.append(f"({len(unscored)} reference(s) without a usable hypothesis: no detections)")
    if suffix == TSV:
        challenge = challenge_scores(
            ChallengeRecording(s.subject, s.ref, s.hyp, s.duration_s) for s in scored
        )
        subjects = len({s.subject for s in scored})
        output["challenge"] = {"subjects": subjects} | {
            level: {k: _json_number(v) for k, v in values.items()}
            for level, values in challenge.items()
        }
        text.append(challenge_table(challenge, subjects))
    print(json.dumps(output, indent=2) if as_json else "\n".join(text))
    return 0
