"""`szdet detect`: EDF recordings -> predicted seizure events as TUSZ .csv_bi files.

Each EDF is preprocessed exactly as the cache is (same settings, from the checkpoint's config),
converted to the checkpoint's montage (data.montage) or refused in one line when it cannot be,
windowed and stitched exactly as `evaluate` does, then post-processed with the ``evaluate.*``
rules. The output spans the whole recording: TERM ``seiz`` rows for events and ``bckg`` rows for
the gaps, under the TUSZ header. A file that cannot be read is reported in one line and skipped;
the others are still written, and the exit code says that something failed.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from szdet.data.edf import load_edf
from szdet.data.tusz import term_events, write_annotation
from szdet.errors import UserError
from szdet.evaluate.inference import MemorySplit, load_detector
from szdet.evaluate.plots import plot_timeline
from szdet.evaluate.postprocess import EventRules, track_events

log = logging.getLogger(__name__)


def check_outputs(edfs: list[Path], out: Path) -> None:
    """Refuse, before any work, what would lose data: a missing input, two inputs with one output
    name, or an output that would replace the reference annotation beside its EDF."""
    seen: dict[str, Path] = {}
    for edf in edfs:
        if not edf.is_file():
            raise UserError(f"{edf}: no such EDF file")
        if edf.stem in seen:
            raise UserError(
                f"{edf}: same name as {seen[edf.stem]}; both would write {edf.stem}.csv_bi"
            )
        seen[edf.stem] = edf
        target = out / f"{edf.stem}.csv_bi"
        if target.resolve() == edf.with_suffix(".csv_bi").resolve() and target.exists():
            raise UserError(
                f"{target}: is the reference annotation of {edf.name}; choose another --out"
            )


def detect_command(
    edfs: list[Path], checkpoint: Path, out: Path, plot: bool, overrides: Sequence[str] = ()
) -> int:
    check_outputs(edfs, out)
    detector = load_detector(checkpoint, overrides)
    cfg = detector.cfg
    rules = EventRules.from_config(cfg.evaluate)
    failed = 0
    for path in edfs:
        try:
            pre = load_edf(path, cfg.preprocess, cfg.data.montage)
        except UserError as e:
            print(f"szdet: error: {e}", file=sys.stderr)
            failed += 1
            continue
        name = path.stem
        track = detector.predict(MemorySplit(name, pre.signal, pre.sample_rate_hz))[0]
        events = track_events(track, cfg.evaluate.frame_hz, rules, pre.duration_s)
        seizures = [(float(a), float(b)) for a, b in events]
        target = out / f"{name}.csv_bi"
        write_annotation(target, term_events(seizures, pre.duration_s), pre.duration_s, name)
        if plot:
            plot_timeline(
                track,
                cfg.evaluate.frame_hz,
                [],
                out / f"{name}.png",
                rules.threshold_on,
                rules.threshold_off,
                seizures,
                title=f"{name}: predicted seizure probability",
            )
        seizure_s = sum(b - a for a, b in seizures)
        print(f"{path}: {len(seizures)} seizure event(s), {seizure_s:.0f} s -> {target}")
    return 1 if failed else 0
