"""Checkpoint files: atomic writes, the last K kept plus ``best.pt``, safe and verified reads,
and the fall back past a damaged newest file.

A checkpoint is one ``torch.save`` dict of plain types and tensors (its keys: state/contents.py).
It is untrusted input when read back, so reading uses ``weights_only=True``, checks the archive's
CRCs and the format tag, and only then hands the dict on.
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


def numbered_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(step, path) of the step checkpoints in ``directory``, oldest first (no ``best.pt``)."""
    if not directory.is_dir():
        return []
    return sorted((int(m[1]), p) for p in directory.iterdir() if (m := _STEP_NAME.match(p.name)))


def list_checkpoints(directory: Path) -> list[Path]:
    return [p for _, p in numbered_checkpoints(directory)]


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


def read_checkpoint(path: str | Path, formats: tuple[str, ...] = (FORMAT,)) -> dict[str, Any]:
    """Load a checkpoint dict safely; a missing, truncated, corrupt or foreign file -> UserError.
    ``formats``: the tags accepted (a detector bundle, state/bundle.py, is read the same way)."""
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
    if not isinstance(ckpt, dict) or ckpt.get("format") not in formats:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        expected = " or ".join(repr(f) for f in formats)
        raise UserError(f"{path}: not a szdet checkpoint (format {found!r}, expected {expected})")
    return ckpt
