"""Training checkpoints: atomic writes, the last K kept plus ``best.pt``, strict and safe loading.

A checkpoint is one ``torch.save`` dict of plain types and tensors holding everything that decides
the rest of a run (``Trainer.save`` in szdet/train/loop.py assembles it). It is untrusted
input when read back, so loading uses ``weights_only=True`` and checks the format tag and the model
fingerprint before anything touches a model.
"""

from __future__ import annotations

import logging
import pickle
import re
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from szdet.config import MODEL_EXECUTION_FIELDS, Config
from szdet.errors import UserError, first_line
from szdet.fileio import atomic_path, remove_stale_tmp

log = logging.getLogger(__name__)

FORMAT = "szdet-checkpoint-v1"
BEST_NAME = "best.pt"
CORRUPT_SUFFIX = ".corrupt"  # a step checkpoint that did not read back, set aside on resume
_ZIP_MAGIC = b"PK\x03\x04"
_STEP_NAME = re.compile(r"^step-(\d+)\.pt$")
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def step_checkpoint_name(step: int) -> str:
    return f"step-{step:09d}.pt"


def _numbered_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(step, path) of the step checkpoints in ``directory``, oldest first (no ``best.pt``)."""
    if not directory.is_dir():
        return []
    return sorted((int(m[1]), p) for p in directory.iterdir() if (m := _STEP_NAME.match(p.name)))


def list_checkpoints(directory: Path) -> list[Path]:
    return [p for _, p in _numbered_checkpoints(directory)]


def latest_checkpoint(directory: Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def save_checkpoint(
    state: dict[str, Any], directory: Path, keep_last: int, best: bool = False
) -> Path:
    """Write ``state`` as ``step-<step>.pt`` atomically, then delete all but the last ``keep_last``.

    A crash at any point leaves every earlier checkpoint complete: a file appears under its final
    name only once fsynced, and older ones are deleted only after that. With ``best``, ``best.pt``
    is written first: a crash between the two files resumes from an earlier checkpoint, which
    re-runs the evaluation and marks the best again, so ``best.pt`` is never left behind.
    """
    path = directory / step_checkpoint_name(int(state["step"]))
    first = directory / BEST_NAME if best else path
    # Through an open file: torch.save(obj, path) reports a full disk as a bare RuntimeError,
    # through a file with the ENOSPC behind it, which atomic_path turns into one named line.
    with atomic_path(first) as tmp, open(tmp, "wb") as f:
        torch.save({"format": FORMAT, **state}, f)
    if best:
        with atomic_path(path) as tmp:
            shutil.copyfile(first, tmp)
    for old in list_checkpoints(directory)[:-keep_last]:
        old.unlink(missing_ok=True)
    return path


def prepare_directory(directory: Path) -> None:
    """Create the checkpoint folder and drop temporary files a killed writer left behind."""
    directory.mkdir(parents=True, exist_ok=True)
    if removed := remove_stale_tmp(directory):
        log.info("removed %d partial checkpoint file(s) left by an interrupted save", removed)


class CheckpointTimer:
    """Says when the next periodic checkpoint is due: every N minutes and/or every N steps."""

    def __init__(self, every_min: float, every_steps: int | None) -> None:
        self.every_s = every_min * 60.0
        self.every_steps = every_steps
        self.last_time = time.monotonic()

    def due(self, step: int) -> bool:
        if self.every_steps is not None and step % self.every_steps == 0:
            return True
        return time.monotonic() - self.last_time >= self.every_s

    def saved(self) -> None:
        self.last_time = time.monotonic()


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


def newest_valid_checkpoint(directory: Path) -> Path | None:
    """The newest step checkpoint that reads back whole, or None if there is none.

    A newer one that does not (a save cut short by a full disk, a flipped bit) would otherwise
    cost the whole run: it is renamed to ``<name>.corrupt`` with a warning and the run resumes
    from the one before. Renamed, not deleted, to keep the evidence; and out of the step-*.pt
    names, so rotation neither counts it among the last K (deleting the resumed-from checkpoint
    too early) nor deletes it, and check_no_later_checkpoints does not see it as later history.
    When none reads back, all stay as they are and resuming is refused.
    """
    corrupt: list[tuple[Path, str]] = []
    for path in reversed(list_checkpoints(directory)):
        try:
            read_checkpoint(path)
        except UserError as e:
            corrupt.append((path, str(e)))
            continue
        for bad, why in corrupt:
            aside = bad.rename(bad.with_name(bad.name + CORRUPT_SUFFIX))
            log.warning("%s; set aside as %s, resuming from %s", why, aside.name, path.name)
        return path
    if corrupt:
        raise UserError(
            f"{directory}: no checkpoint here reads back (newest of {len(corrupt)}: "
            f"{corrupt[0][1]}); resume another with --resume PATH, or start over under another "
            "paths.run_name"
        )
    return None


# --- reading ----------------------------------------------------------------------------------


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict safely; a missing, truncated, corrupt or foreign file -> UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    with open(path, "rb") as f:
        if f.read(4) != _ZIP_MAGIC:  # torch.save always writes a zip archive
            raise UserError(f"{path}: not a szdet checkpoint (not a PyTorch zip archive)")
    try:  # torch.load does not check the archive's CRCs: a flipped bit would load silently
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{path}: unreadable checkpoint, truncated or corrupt ({e})") from None
    if damaged is not None:
        raise UserError(f"{path}: corrupt checkpoint (CRC mismatch in {damaged})")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, zip errors...
        # weights_only refuses any function or class outside its allowlist (os.system, say)
        # before calling it; torch's message names it "GLOBAL module.name".
        if isinstance(e, pickle.UnpicklingError) and (asked := _REFUSED_GLOBAL.search(str(e))):
            raise UserError(
                f"{path}: refused: the checkpoint's pickle asks for {asked[1]} (not plain "
                "weights; szdet loads checkpoints with weights_only=True)"
            ) from None
        reason = first_line(e)[:120]
        raise UserError(f"{path}: unreadable checkpoint, truncated or corrupt ({reason})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise UserError(f"{path}: not a szdet checkpoint (format {found!r}, expected {FORMAT!r})")
    return ckpt


def checkpoint_config(ckpt: dict[str, Any], path: Path) -> Config:
    """The config a checkpoint was trained with, checked against its stored fingerprint."""
    try:
        cfg = Config.model_validate(ckpt["config"])
    except (KeyError, ValidationError) as e:
        raise UserError(f"{path}: checkpoint holds no valid szdet config ({e!s:.200})") from None
    if cfg.fingerprint() != ckpt.get("fingerprint"):
        raise UserError(f"{path}: checkpoint's config does not match its stored fingerprint")
    return cfg


def read_for_resume(path: Path, cfg: Config, directory: Path) -> dict[str, Any]:
    """The state to continue ``cfg``'s run (checkpoint folder ``directory``) from ``path``: read
    safely, the same model, no setting changed that decides the run's course, no later history."""
    state = read_checkpoint(path)
    check_same_model(state, cfg, path)
    changed = check_resumable(state, cfg, path)
    check_no_later_checkpoints(directory, int(state["step"]), path)
    if changed:
        log.warning("resuming with changed operational settings: %s", "; ".join(changed))
    return state


def check_same_model(ckpt: dict[str, Any], cfg: Config, path: Path) -> None:
    """Refuse a checkpoint of another architecture, naming the model fields that differ."""
    if ckpt.get("fingerprint") == cfg.fingerprint():
        return
    theirs = checkpoint_config(ckpt, path)
    diffs = config_differences(theirs.model_dump(mode="json"), cfg.model_dump(mode="json"))
    model_diffs = [d for d in diffs if d.startswith("model.")] or diffs
    shown = "; ".join(model_diffs[:4]) + (" ..." if len(model_diffs) > 4 else "")
    raise UserError(f"{path}: checkpoint is for a different model ({shown})")


# Settings that may differ when a run continues: where things are, how it is watched, how fast
# the machine is; nothing that changes which steps it takes or what they compute.
RESUMABLE_CHANGES = (
    "paths.", "tracking.", "cloud.", "data.expected_recordings",
    "train.time_limit_s", "train.num_workers", "train.log_every_steps",
    "train.checkpoint_every_min", "train.checkpoint_every_steps", "train.keep_last",
    "train.gpu_memory_warn_gb", "train.device",
    "evaluate.batch_size", "evaluate.timeline_recordings",
    *(f"model.{field}" for field in MODEL_EXECUTION_FIELDS),
)  # fmt: skip


def check_resumable(ckpt: dict[str, Any], cfg: Config, path: Path) -> list[str]:
    """The config differences between a checkpoint and ``cfg``; only RESUMABLE_CHANGES may
    differ, or the resumed run would not be the one that was checkpointed (the optimizer and
    schedule state would silently keep the old settings)."""
    changed = config_differences(ckpt["config"], cfg.model_dump(mode="json"))
    decisive = [c for c in changed if not c.startswith(RESUMABLE_CHANGES)]
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
    later = [p for at, p in _numbered_checkpoints(directory) if at > step]
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


def load_for_inference(path: str | Path) -> tuple[Config, dict[str, torch.Tensor]]:
    """The config and model weights of a checkpoint, for `szdet evaluate` and `szdet detect`."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    cfg = checkpoint_config(ckpt, path)
    weights = ckpt.get("model")
    if not isinstance(weights, dict):
        raise UserError(f"{path}: checkpoint holds no model weights")
    return cfg, weights
