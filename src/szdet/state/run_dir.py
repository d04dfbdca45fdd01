"""The run directory <runs_dir>/<run_name>/: config.yaml, metrics.jsonl, checkpoints/, plots/."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import IO, Any

from szdet.config import Config
from szdet.fileio import naming_full_disk, write_text_atomic


class RunDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "config.yaml"
        self.metrics = root / "metrics.jsonl"
        self.checkpoints = root / "checkpoints"
        self.plots = root / "plots"

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
