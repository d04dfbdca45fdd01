"""`szdet detect`: EDF recordings -> predicted seizure events as TUSZ .csv_bi files, TUSZ
per-channel .csv files, SzCORE events TSVs, or several (``--format csv_bi|csv|szcore|both|all``).

Each EDF is preprocessed exactly as the cache is (same settings, from the checkpoint's config),
converted to the checkpoint's montage (data.montage) or refused in one line when it cannot be,
windowed and stitched exactly as `evaluate` does, then post-processed with the ``evaluate.*``
rules. A recording is read and inferred ``evaluate.chunk_s`` at a time, so memory does not grow
with its length (evaluate/inference.py), under an EEG-hours progress bar. Each event's channels
are those that carry it (evaluate/localise.py, in the model's montage). The .csv_bi spans the
whole recording: TERM ``seiz`` rows for events and ``bckg`` rows for the gaps, under the TUSZ
header; the .csv has such rows per channel, an event on the channels that carry it. The SzCORE
events TSV (data/hed_tsv.py) is named after the EDF (``<entities>_events.tsv`` for
``<entities>_eeg.edf``): one ``sz`` row per event, its confidence the event's mean probability
(evaluate/postprocess.py), its channels in 10-20 spelling, dateTime the EDF's start and
recordingDuration the input EDF's records x record duration (samples / rate, what the challenge
checks; the resampled signal can differ by a fraction of a sample). A file that cannot be read is
reported in one line and skipped; the others are still written, and the exit code says that
something failed.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from szdet.data.edf import EdfSignal
from szdet.data.edf_header import EdfHeader
from szdet.data.hed_tsv import events_name, write_events_tsv
from szdet.data.montage import standard_case
from szdet.data.tusz import Event, term_events, write_annotation
from szdet.errors import UserError
from szdet.evaluate.inference import Detector, load_detector
from szdet.evaluate.localise import event_channels
from szdet.evaluate.metrics import target_key
from szdet.evaluate.operating_points import format_interval, pick
from szdet.evaluate.plots import plot_timeline
from szdet.evaluate.postprocess import EventRules, track_events

log = logging.getLogger(__name__)


FORMATS = {
    "csv_bi": ("csv_bi",),
    "csv": ("csv",),
    "szcore": ("szcore",),
    "both": ("csv_bi", "szcore"),
    "all": ("csv_bi", "csv", "szcore"),
}


def output_name(edf: Path, kind: str) -> str:
    return events_name(edf) if kind == "szcore" else f"{edf.stem}.{kind}"


def check_outputs(edfs: list[Path], out: Path, kinds: Sequence[str] = ("csv_bi",)) -> None:
    """Refuse, before any work, what would lose data or fail after it: a missing input, an
    ``--out`` that is not a folder, two inputs with one output name, an output name taken by a
    folder, or an output that would replace an input's reference annotation (the .csv_bi beside
    a TUSZ EDF, the events TSV beside a BIDS one)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: is a file; --out names the folder the events are written to")
    references = {
        (edf.parent / output_name(edf, kind)).resolve() for edf in edfs for kind in FORMATS["all"]
    }
    seen: dict[str, Path] = {}
    for edf in edfs:
        if not edf.is_file():
            raise UserError(f"{edf}: no such EDF file")
        for kind in kinds:
            name = output_name(edf, kind)
            if name in seen:
                raise UserError(f"{edf}: same name as {seen[name]}; both would write {name}")
            seen[name] = edf
            target = out / name
            if target.is_dir():
                raise UserError(f"{target}: is a folder, where {edf.name}'s events would go")
            if target.exists() and target.resolve() in references:
                raise UserError(
                    f"{target}: is the reference annotation of an input; choose another --out"
                )


def detect_command(
    edfs: list[Path],
    checkpoint: Path,
    out: Path,
    plot: bool,
    overrides: Sequence[str] = (),
    output_format: str = "csv_bi",
    fa_per_24h: float | None = None,
    threshold: float | None = None,
    engine: str = "torch",
) -> int:
    kinds = FORMATS[output_format]
    check_outputs(edfs, out, kinds)
    if threshold is not None and not 0 < threshold < 1:
        raise UserError(f"--threshold {threshold}: a probability between 0 and 1, exclusive")
    detector = load_detector(checkpoint, overrides, engine)
    rules = operating_rules(detector, fa_per_24h, threshold)
    failed = 0
    for path in edfs:
        try:
            seizures = _detect_one(detector, rules, path, out, kinds, plot)
        except UserError as e:
            print(f"szdet: error: {e}", file=sys.stderr)
            failed += 1
            continue
        seizure_s = sum(b - a for a, b in seizures)
        written = ", ".join(str(out / output_name(path, kind)) for kind in kinds)
        print(f"{path}: {len(seizures)} seizure event(s), {seizure_s:.0f} s -> {written}")
    return 1 if failed else 0


def _detect_one(
    detector: Detector,
    rules: EventRules,
    path: Path,
    out: Path,
    kinds: Sequence[str],
    plot: bool,
) -> list[tuple[float, float]]:
    """One EDF, read and inferred chunk by chunk, to its outputs; its seizure events."""
    cfg = detector.cfg
    edf = EdfSignal(path, cfg.preprocess, cfg.data.montage, chunk_s=cfg.evaluate.chunk_s)
    for note in edf.notes:  # what the cache's manifest records, said where detect runs
        print(f"szdet: note: {path}: {note}", file=sys.stderr)
    track, evidence = detector.predict_edf(edf)
    events = track_events(track, cfg.evaluate.frame_hz, rules, edf.duration_s, confidence=True)
    seizures = [(float(a), float(b)) for a, b, _ in events]
    channels = event_channels(evidence, seizures, cfg.evaluate.frame_hz, edf.channels)
    for kind in kinds:
        target = out / output_name(path, kind)
        if kind == "csv_bi":
            annotation = term_events(seizures, edf.duration_s)
            write_annotation(target, annotation, edf.duration_s, path.stem)
        elif kind == "csv":
            rows = channel_events(edf.channels, seizures, channels, edf.duration_s)
            write_annotation(target, rows, edf.duration_s, path.stem)
        else:
            scored = [(float(a), float(b), float(c)) for a, b, c in events]
            named = [[standard_case(c) for c in carried] for carried in channels]
            write_events_tsv(target, scored, _input_duration_s(edf.header), edf.header.start, named)
    if plot:
        plot_timeline(
            track,
            cfg.evaluate.frame_hz,
            [],
            out / f"{path.stem}.png",
            rules.threshold_on,
            rules.threshold_off,
            seizures,
            title=f"{path.stem}: predicted seizure probability",
            hypothesis_channels=[[standard_case(c) for c in carried] for carried in channels],
        )
    return seizures


def operating_rules(
    detector: Detector, fa_per_24h: float | None, threshold: float | None
) -> EventRules:
    """The event rules at the on-threshold asked for: by hand; a detector's calibrated point for
    the budget (its first by default); or, for a checkpoint, the configured one."""
    cfg = detector.cfg.evaluate
    if threshold is not None:
        return EventRules.from_config(cfg, threshold)
    calibration = detector.operating_points
    if calibration is None:
        if fa_per_24h is not None:
            raise UserError(
                f"{detector.checkpoint}: a training checkpoint has no calibrated operating points;"
                " make a detector with `szdet export`, or give --threshold"
            )
        return EventRules.from_config(cfg)
    point = pick(calibration, cfg.fa_targets_per_24h[0] if fa_per_24h is None else fa_per_24h)
    sensitivity, fa = (format_interval(point["ovlp"][k], 2) for k in ("sensitivity", "fa_per_24h"))
    print(
        f"szdet: operating point for {target_key(point['fa_per_24h_budget'])} FA/24h, calibrated"
        f" on {calibration['split']}: threshold {point['threshold_on']:.4f}; there OVLP "
        f"sensitivity {sensitivity} at {fa}"
        " FA/24h (95% intervals)",
        file=sys.stderr,
    )
    return EventRules.from_config(cfg, point["threshold_on"])


def channel_events(
    names: Sequence[str],
    seizures: Sequence[tuple[float, float]],
    carried: Sequence[Sequence[str]],
    duration_s: float,
) -> list[Event]:
    """TUSZ .csv rows: per channel, the events that channel carries, ``bckg`` filling the rest
    (a channel no event names is one ``bckg`` row over the recording)."""
    rows = []
    for name in names:
        own = [event for event, on in zip(seizures, carried, strict=True) if name in on]
        rows += [replace(e, channel=name) for e in term_events(own, duration_s)]
    return rows


def _input_duration_s(header: EdfHeader) -> float:
    """The input EDF's samples / rate: the records read (data/edf_header.py's
    ``record_count_note``) times their duration."""
    return header.n_records * header.record_duration_s
