"""Experiment tracking with Weights & Biases: one W&B run per training run, resumed by id.

Mode ``auto`` is online when WANDB_API_KEY is set and offline otherwise (offline runs land in
``<run_dir>/wandb`` and can be uploaded later with ``wandb sync``). W&B's capture of the machine,
the command line, git, code, requirements and console output is switched off: those can carry
secrets (a token on a command line, a key printed by a library), and the run directory's config and
metrics already say what a run did. Only rank 0 tracks; other ranks get a no-op tracker.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from szdet.config import TrackingConfig
from szdet.errors import first_line

log = logging.getLogger(__name__)

STEP_KEY = "step"  # our optimizer step: the x-axis of every chart, monotonic across restarts

Mode = Literal["online", "offline", "disabled"]


def resolve_mode(configured: str) -> Mode:
    if configured == "auto":
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"
    if configured not in ("online", "offline", "disabled"):
        raise ValueError(f"unknown tracking mode {configured!r}")
    return configured  # type: ignore[return-value]


def _private_settings(wandb: Any) -> Any:
    """W&B settings that record the run's numbers and nothing about the machine or the user."""
    return wandb.Settings(
        x_disable_meta=True,  # no host, user, command line, python or GPU inventory
        x_disable_machine_info=True,
        disable_git=True,
        disable_code=True,
        save_code=False,
        disable_job_creation=True,
        x_save_requirements=False,
        console="off",  # stdout/stderr are not uploaded
        silent=True,
    )


class Tracker:
    """Logs scalars and images to a W&B run; every method is a no-op when tracking is off."""

    def __init__(self, run: Any = None) -> None:
        self._run = run

    @property
    def run_id(self) -> str | None:
        return self._run.id if self._run is not None else None

    @property
    def run_dir(self) -> Path | None:
        """This process's W&B run folder (offline: the files ``wandb sync`` uploads)."""
        return Path(self._run.dir).parent if self._run is not None else None

    @classmethod
    def start(
        cls,
        cfg: TrackingConfig,
        run_dir: Path,
        run_name: str,
        config: dict[str, Any],
        run_id: str | None = None,
        enabled: bool = True,
    ) -> Tracker:
        """Start (or, given the ``run_id`` stored in a checkpoint, resume) the W&B run."""
        mode = resolve_mode(cfg.mode)
        if not enabled or mode == "disabled":
            return cls(None)
        import wandb  # only the tracking process pays for the import

        run_dir.mkdir(parents=True, exist_ok=True)
        settings = _private_settings(wandb)

        def init(mode: Mode) -> Any:
            return wandb.init(
                project=cfg.project,
                entity=cfg.entity,
                name=run_name,
                id=run_id,
                resume="allow" if run_id else None,
                dir=run_dir,
                mode=mode,
                config=config,
                settings=settings,
            )

        try:
            run = init(mode)
        except Exception as e:
            if mode != "online":
                raise
            # Hours of training must not die with W&B's servers: keep the records offline.
            log.warning(
                "W&B online start failed (%s: %s); logging offline instead, upload later with "
                "`wandb sync %s`",
                type(e).__name__,
                first_line(e)[:200],
                run_dir / "wandb",
            )
            mode = "offline"
            run = init(mode)
        # Charts use our step, not W&B's own counter: after a resume from step S, W&B's counter has
        # moved past the rows it already holds, while ours goes on from S + 1 as the run does.
        run.define_metric(STEP_KEY)
        run.define_metric("*", step_metric=STEP_KEY)
        log.info("W&B run %s (%s) in %s", run.id, mode, run_dir / "wandb")
        return cls(run)

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self._run is not None:
            self._guarded(self._run.log, {STEP_KEY: step, **metrics})

    def log_images(self, images: dict[str, Path], step: int) -> None:
        if self._run is not None and images:
            import wandb

            row = {k: wandb.Image(str(p)) for k, p in images.items()}
            self._guarded(self._run.log, {STEP_KEY: step, **row})

    def finish(self, exit_code: int = 0) -> None:
        """End the run and stop W&B's service process, which writes the run's last records."""
        if self._run is not None:
            import wandb

            self._guarded(self._run.finish, exit_code=exit_code)
            self._run = None
            wandb.teardown()

    def _guarded(self, call: Any, *args: Any, **kwargs: Any) -> None:
        """W&B failing (a full disk under its files, its service process gone) must not end the
        training it watches: one warning, then tracking is off; metrics.jsonl keeps every row."""
        try:
            call(*args, **kwargs)
        except Exception as e:
            log.warning(
                "W&B failed (%s: %s); tracking is off for the rest of this run",
                type(e).__name__,
                first_line(e)[:200],
            )
            self._run = None
