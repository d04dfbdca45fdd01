"""The run directory <runs_dir>/<run_name>/: config.yaml, metrics.jsonl, checkpoints/, plots/,
and .lock, which the one training that writes the folder holds; what `szdet evaluate` and
`szdet export` write of the run by default: eval-<split>/ and <run_name>.detector."""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import socket
import time
from pathlib import Path
from typing import IO, Any

from szdet.config import Config
from szdet.errors import UserError
from szdet.fileio import naming_full_disk, write_text_atomic
from szdet.state.checkpoint import BEST_NAME

log = logging.getLogger(__name__)
LOCK = ".lock"


class RunDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "config.yaml"
        self.metrics = root / "metrics.jsonl"
        self.checkpoints = root / "checkpoints"
        self.best = self.checkpoints / BEST_NAME
        self.detector = root / f"{root.name}.detector"
        self.plots = root / "plots"
        self.lock = root / LOCK
        self._held: IO[str] | None = None
        self._created_root = False

    def evaluation(self, split: str) -> Path:
        """The folder of metrics.json and plots of `szdet evaluate` of this run on ``split``."""
        return self.root / f"eval-{split}"

    def hold(self) -> None:
        """Take the folder for this process, or refuse in one line naming the process that has
        it: two trainings on one folder would overwrite each other's checkpoints and metrics.
        The lock is the kernel's (flock), so it dies with its process: a crash or kill -9 leaves
        nothing to clear, and the next run resumes."""
        self._created_root = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.lock, "a+", encoding="utf-8")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise UserError(
                f"{self.root}: in use by {holder}; wait for it to end, or train under another "
                "paths.run_name"
            ) from None
        except OSError as e:  # a file system without locks (some network mounts)
            log.warning("%s: cannot lock (%s): another training could share it", self.lock, e)
        handle.seek(0)
        handle.truncate()
        handle.write(f"training pid {os.getpid()} on {socket.gethostname()} since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")  # fmt: skip
        handle.flush()
        self._held = handle

    def release(self, refused: bool = False) -> None:
        """Let the folder go; ``refused``: the run wrote nothing, so the lock file (and the folder,
        if taking the lock created it) goes too."""
        if self._held is None:
            return
        if refused:
            self.lock.unlink(missing_ok=True)
            if self._created_root and not any(self.root.iterdir()):
                self.root.rmdir()
        self._held.close()
        self._held = None

    def write_config(self, cfg: Config) -> None:
        """The resolved config (every default filled in) that this run, or its resume, uses."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.config, cfg.to_yaml())


class MetricsLog:
    """``metrics.jsonl``: one JSON row per logged step and per epoch, appended as training goes.

    A checkpoint records how many rows existed when it was saved; resuming from it cuts the file
    back to that many, so rows of steps that are about to be redone never appear twice.
    """

    def __init__(self, path: Path, keep_rows: int) -> None:
        self.path = path
        self.rows = 0
        kept = _read_lines(path)[:keep_rows]
        write_text_atomic(path, "".join(kept))
        self.rows = len(kept)
        self._file: IO[str] | None = open(path, "a", encoding="utf-8")  # noqa: SIM115

    def append(self, row: dict[str, Any]) -> None:
        assert self._file is not None, "metrics log is closed"
        with naming_full_disk(self.path):
            self._file.write(json.dumps(_finite_or_null(row), allow_nan=False) + "\n")
            self._file.flush()  # a killed process loses no finished row
        self.rows += 1

    def sync(self) -> None:
        """Make every row so far durable (called before a checkpoint counts them)."""
        if self._file is not None:
            with naming_full_disk(self.path):
                os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _read_lines(path: Path) -> list[str]:
    """Complete rows only: a partial last line (the writer was killed mid-row) is dropped."""
    if not path.exists():
        return []
    return [
        line
        for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
        if line.endswith("\n")
    ]


def _finite_or_null(row: dict[str, Any]) -> dict[str, Any]:
    """Strict JSON: a NaN or infinite metric (AUROC of a constant model, say) becomes null."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _read_lines(path)]
