"""Continuing a run: which checkpoint ``--resume`` names, and whether it may be continued.

A checkpoint continues only the run it came from: the same model, no setting changed that decides
the run's course (the fields szdet/config.py marks RESUMABLE may change), and no later history in
the folder it continues into. It may continue on another number of processes: the sampler keeps
its global position (data/windows.py), and ``align_to_batch`` starts each rank at a whole batch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from szdet.config import Config, marked_fields
from szdet.errors import UserError
from szdet.state.checkpoint import (
    BEST_NAME,
    latest_checkpoint,
    newest_valid_checkpoint,
    numbered_checkpoints,
    read_checkpoint,
)
from szdet.state.contents import EpochSampler, Position, Saved, checkpoint_config

log = logging.getLogger(__name__)


def resolve_resume(resume: str, directory: Path) -> Path | None:
    """The checkpoint ``--resume auto|true|false|PATH`` names, or None to start fresh."""
    if resume in ("auto", "true"):
        found = newest_valid_checkpoint(directory)
        if found is None and resume == "true":
            raise UserError(f"{directory}: --resume true, but there is no checkpoint to resume")
        return found
    latest = latest_checkpoint(directory)
    if resume == "false":
        if latest is not None or (directory / BEST_NAME).exists():
            raise UserError(
                f"{directory}: holds checkpoints of an earlier run; continue it with --resume auto, "
                "or start over under another paths.run_name (or delete that folder)"
            )
        return None
    path = Path(resume)
    if not path.is_file():
        raise UserError(
            f"{path}: --resume checkpoint not found (expected auto, true, false or a file)"
        )
    return path


def read_for_resume(path: Path, cfg: Config, directory: Path) -> Saved:
    """The checkpoint to continue ``cfg``'s run (checkpoint folder ``directory``) from ``path``:
    read safely, the same model, no setting changed that decides the run's course, no later
    history."""
    saved = Saved(path, read_checkpoint(path))
    check_same_model(saved.state, cfg, path)
    changed = check_resumable(saved.state, cfg, path)
    check_no_later_checkpoints(directory, saved.step, path)
    if changed:
        log.warning("resuming with changed operational settings: %s", "; ".join(changed))
    return saved


def align_to_batch(position: Position, sampler: EpochSampler, batch_size: int) -> None:
    """After a resume on another number of processes: the restored sampler stands at the saved
    global position shared out anew, which may fall inside one of this rank's batches. Start
    from that batch's first sample, so the position counts whole steps (at most a batch per rank
    is seen twice, none skipped)."""
    position.epoch_step = sampler.start // batch_size
    sampler.set_epoch(sampler.epoch, start=position.epoch_step * batch_size)


def check_same_model(ckpt: dict[str, Any], cfg: Config, path: Path) -> None:
    """Refuse a checkpoint of another architecture, naming the model fields that differ."""
    if ckpt.get("fingerprint") == cfg.fingerprint():
        return
    theirs = checkpoint_config(ckpt, path)
    diffs = config_differences(theirs.model_dump(mode="json"), cfg.model_dump(mode="json"))
    model_diffs = [d for d in diffs if d.startswith("model.")] or diffs
    shown = "; ".join(model_diffs[:4]) + (" ..." if len(model_diffs) > 4 else "")
    raise UserError(f"{path}: checkpoint is for a different model ({shown})")


def check_resumable(ckpt: dict[str, Any], cfg: Config, path: Path) -> list[str]:
    """The config differences between a checkpoint and ``cfg``; only fields marked RESUMABLE in
    szdet/config.py may differ, or the resumed run would not be the one that was checkpointed
    (the optimizer and schedule state would silently keep the old settings).

    The checkpoint's config is read as szdet reads it now: a field added since it was written
    takes its default, which by the config's contract does what the code did before the field
    existed (data.montage: referential), so a checkpoint of an earlier version still resumes."""
    theirs = checkpoint_config(ckpt, path).model_dump(mode="json")
    changed = config_differences(theirs, cfg.model_dump(mode="json"))
    decisive = [c for c in changed if not _resumable(c.partition(":")[0])]
    if decisive:
        shown = "; ".join(decisive[:3]) + (" ..." if len(decisive) > 3 else "")
        raise UserError(
            f"{path}: resuming would change how this run goes on ({shown}); keep the run's "
            "settings, or train a new run under another paths.run_name"
        )
    return changed


def check_no_later_checkpoints(directory: Path, step: int, path: Path) -> None:
    """Refuse to continue from ``path`` (at ``step``) into a folder holding later checkpoints:
    their history is not this one's, and rotation (by step) would delete the new ones first."""
    later = [p for at, p in numbered_checkpoints(directory) if at > step]
    if later:
        raise UserError(
            f"{directory}: holds checkpoints past step {step} of {path} (up to {later[-1].name}); "
            f"continue from {path.name} under another paths.run_name, or resume the latest "
            "with --resume auto"
        )


def config_differences(
    checkpoint: dict[str, Any], current: dict[str, Any], prefix: str = ""
) -> list[str]:
    """``field: <checkpoint value> in the checkpoint, <current> now`` for every differing leaf."""
    out: list[str] = []
    for key in sorted(set(checkpoint) | set(current)):
        a, b = checkpoint.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} in the checkpoint, {b!r} now")
    return out


RESUMABLE_FIELDS = marked_fields("resumable", Config)


def _resumable(field: str) -> bool:
    """``field`` (dotted; a leaf inside a dict field too) may change on resume."""
    return any(field == name or field.startswith(f"{name}.") for name in RESUMABLE_FIELDS)
