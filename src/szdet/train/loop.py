"""`szdet train`: the training loop, resumable to the step, on one process or many.

``--resume`` decides where a run starts:

- ``auto``: from the newest checkpoint of this run directory that reads back, else fresh;
- ``true``: from that checkpoint, which must exist (the Modal re-spawn after exit 75);
- ``false``: fresh, and refused if the run directory already holds checkpoints, so a finished or
  interrupted run is never overwritten by accident (pick a new ``paths.run_name`` or delete it);
- a path: from that checkpoint (its model config must match), writing into this run directory.

Exit codes: 0 done (or stopped early), 3 too many non-finite steps in a row, 4 collapsed (dev
AUROC under the floor), 75 stopped at ``train.time_limit_s`` or on SIGTERM after a checkpoint, so
a launcher can start it again with ``--resume true``.
"""

from __future__ import annotations

import itertools
import logging
import signal
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from szdet.config import Config
from szdet.device import autocast_dtype
from szdet.errors import EXIT_COLLAPSE, EXIT_NONFINITE, EXIT_OK, EXIT_STOPPED, UserError
from szdet.models import build_model, param_groups
from szdet.models.kernels import select_path
from szdet.progress import progress
from szdet.state.checkpoint import CheckpointTimer, prepare_directory, save_checkpoint
from szdet.state.contents import Part, Position, Saved, assemble, sampler_part, start_epoch
from szdet.state.resume import align_to_batch, read_for_resume, resolve_resume
from szdet.state.run_dir import MetricsLog, RunDir
from szdet.train import preflight
from szdet.train.data import TrainData
from szdet.train.distributed import (
    DistInfo,
    broadcast_from_main,
    gather_to_main,
    setup_distributed,
    shutdown_distributed,
)
from szdet.train.early_stop import EarlyStopping, Verdict
from szdet.train.monitor import StepMonitor, format_value
from szdet.train.rng import capture_rng_state, restore_rng_state, seed_everything
from szdet.train.schedule import WarmupCosine
from szdet.train.step import Stepper
from szdet.train.tracking import Tracker
from szdet.train.validate import Validator

log = logging.getLogger(__name__)

# SIGTERM (preemption, `docker stop`, Modal) and SIGINT (Ctrl-C, also sent by some platforms on
# preemption): finish the step, checkpoint, exit 75.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run_training(cfg: Config, resume: str) -> int:
    """Train as ``cfg`` says; returns the process exit code (see the module docstring)."""
    info = setup_distributed(cfg.train.device)
    try:
        trainer = Trainer(cfg, info, resume)
        code = 1  # an exception on the way out marks the W&B run failed
        try:
            code = trainer.fit()
        finally:
            trainer.close(code)
        return code
    finally:
        shutdown_distributed()


class Trainer:
    """Holds a run's state; ``fit`` trains epochs from wherever that state stands."""

    def __init__(self, cfg: Config, info: DistInfo, resume: str) -> None:
        self.cfg, self.info, self.device = cfg, info, info.device
        # First, so that a GPU without the kernels a cloud config requires stops before any work;
        # logged once the resume is known to go ahead (a refusal stays one line).
        mamba_path = select_path(cfg.model.kernels, self.device)
        preflight.prepare(cfg, self.device)
        self.start_time = time.monotonic()
        self.run = RunDir(cfg.run_dir)
        if info.is_main:  # one training per run directory; DDP's ranks share rank 0's hold
            self.run.hold()
        try:
            saved = self._load_resume_state(resume)
            log.info("Mamba-2 path: %s", mamba_path)
            seed_everything(cfg.train.seed + info.rank)
            self._build_parts()
            self.position = Position()
            if saved is not None:
                self._restore(saved)
        except BaseException:
            self.run.release(refused=True)  # a refused run leaves the folder as it found it
            raise
        self.timer = CheckpointTimer(
            cfg.train.checkpoint_every_min, cfg.train.checkpoint_every_steps
        )
        self.stop_requested = False
        self.last_bad_batch = ""  # recordings and window starts of this rank's last bad batch

        # Bad input has been refused by now (resume request, checkpoint, caches): start writing.
        self.metrics: MetricsLog | None = None
        if info.is_main:
            self.run.write_config(cfg)
            prepare_directory(self.run.checkpoints)
            self.metrics = MetricsLog(self.run.metrics, keep_rows=self.position.metrics_rows)
        self.tracker = Tracker.start(
            cfg.tracking,
            self.run.root,
            cfg.paths.run_name,
            cfg.model_dump(mode="json"),
            run_id=self.position.wandb_run_id,
            enabled=info.is_main,
        )
        self.position.wandb_run_id = self.tracker.run_id
        self._previous_handlers = {
            signum: signal.signal(signum, self._on_stop_signal) for signum in STOP_SIGNALS
        }
        self._log_start(saved.path if saved is not None else None)

    def _build_parts(self) -> None:
        """The model, its optimizer and schedule, the data, and what watches the run."""
        cfg, info = self.cfg, self.info
        self.model = build_model(cfg.model).to(self.device)
        ddp_model: torch.nn.Module = self.model
        if info.is_distributed:
            device_ids = [self.device] if self.device.type == "cuda" else None
            ddp_model = DistributedDataParallel(self.model, device_ids=device_ids)
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, cfg.train.weight_decay),
            lr=cfg.train.lr,
            fused=self.device.type == "cuda",
        )
        self.data = TrainData.build(cfg, info, self.device)
        self.total_steps = cfg.train.epochs * self.data.steps_per_epoch
        self.scheduler = WarmupCosine(
            self.optimizer, cfg.train.warmup_steps, self.total_steps, cfg.train.min_lr_ratio
        )
        autocast = autocast_dtype(self.device, cfg.train.precision)
        self.stepper = Stepper(
            cfg.train, info, self.model, ddp_model, self.optimizer, self.scheduler, autocast
        )
        self.validator = Validator(cfg, info, autocast, self.run.plots)
        self.early_stop = EarlyStopping.for_run(cfg, self.validator.split, info.is_main)
        self.monitor = StepMonitor(
            self.total_steps,
            cfg.train.batch_size * info.world_size,
            self.device,
            cfg.train.gpu_memory_warn_gb,
        )

    def _parts(self) -> dict[str, Part]:
        """The checkpoint's parts (state/contents.py), each read from and restored to its owner."""
        return {
            "model": Part.of(self.model),
            "optimizer": Part.of(self.optimizer),
            "scheduler": Part.of(self.scheduler),
            "sampler": sampler_part(self.data.sampler, self.position, self.cfg.train.batch_size),
            "early_stop": Part.of(self.early_stop),
            "monitor": Part(
                self.monitor.state_dict,
                lambda state: self.monitor.load_state_dict(state, start_step=self.position.step),
            ),
        }

    def _log_start(self, resume_from: Path | None) -> None:
        if self.info.is_main:
            log.info(
                "%s: step %d of %d (epoch %d, step %d of %d), %s x%d, run directory %s",
                f"resuming from {resume_from}" if resume_from else "starting",
                self.position.step,
                self.total_steps,
                self.position.epoch + 1,
                self.position.epoch_step,
                self.data.steps_per_epoch,
                self.device,
                self.info.world_size,
                self.run.root,
            )

    def _load_resume_state(self, resume: str) -> Saved | None:
        """The checkpoint ``--resume`` names, or None for a fresh start.

        Rank 0 reads it and shares it, so other nodes need no view of its disk; a refusal on
        rank 0 is raised on every rank, so none waits for a broadcast that never comes.
        """
        found: Saved | None = None
        refusal = None
        if self.info.is_main:
            try:
                path = resolve_resume(resume, self.run.checkpoints)
                if path is not None:
                    found = read_for_resume(path, self.cfg, self.run.checkpoints)
            except UserError as e:
                refusal = str(e)
        refusal, found = broadcast_from_main((refusal, found), self.info)
        if refusal is not None:
            raise UserError(refusal)
        return found

    def _restore(self, saved: Saved) -> None:
        """Continue from a checkpoint (read_for_resume has checked it is this run's)."""
        self.position = saved.position(self.cfg.paths.run_name)
        saved.restore(self._parts())  # the monitor's part reads the position's step
        if saved.world_size == self.info.world_size:
            restore_rng_state(saved.rng_state(self.info.rank), self.device)
            return
        # Another number of processes: the same global position, from a whole batch of this rank.
        align_to_batch(self.position, self.data.sampler, self.cfg.train.batch_size)
        seed_everything(self.cfg.train.seed + self.info.rank + self.position.step)
        log.warning(
            "checkpoint written by %d process(es), resuming on %d: random streams are "
            "re-seeded, so this run will not repeat the original exactly",
            saved.world_size,
            self.info.world_size,
        )

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        if self.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, from the last checkpoint
        self.stop_requested = True  # checkpoint at the end of the current step, then exit 75

    # --- the loop --------------------------------------------------------------------------

    def fit(self) -> int:
        stopped = self.position.stopped  # an earlier epoch's early stop or collapse: it stays
        if stopped is not None:
            if self.info.is_main:
                log.warning("this run already stopped (%s); nothing to train", stopped)
            return EXIT_COLLAPSE if stopped == "collapse" else EXIT_OK
        for epoch in range(self.position.epoch, self.cfg.train.epochs):
            code = self.train_epoch(epoch)
            if code is not None:
                return code
            verdict = self.end_epoch(epoch)
            if verdict.stop is not None:
                if self.info.is_main:
                    log.warning("stopping: %s", verdict.reason)
                return EXIT_COLLAPSE if verdict.stop == "collapse" else EXIT_OK
        return EXIT_OK

    def train_epoch(self, epoch: int) -> int | None:
        """Train the rest of epoch ``epoch``; returns an exit code when the run must stop now.

        The sampler already stands at the epoch's next window: set at the end of the previous
        epoch, or restored from the checkpoint.
        """
        steps_left = self.data.steps_per_epoch - self.position.epoch_step
        self.stepper.ddp_model.train()
        batches = progress(
            itertools.islice(self.data.loader, steps_left),
            desc=f"epoch {epoch + 1}/{self.cfg.train.epochs}",
            total=steps_left,
            unit="step",
            disable=not self.info.is_main,
        )
        every_steps = [self.cfg.train.log_every_steps, self.cfg.train.checkpoint_every_steps]
        for x, y, node_y, ids in batches:
            result = self.stepper(x, y, node_y)
            self.position.step += 1
            self.position.epoch_step += 1
            self.monitor.record(result, ids)
            last_of_epoch = self.position.epoch_step == self.data.steps_per_epoch
            if last_of_epoch or any(n and self.position.step % n == 0 for n in every_steps):
                code = self._at_boundary(result.lr, last_of_epoch)
                if code is not None:
                    return code
        return None

    def _at_boundary(self, lr: float, last_of_epoch: bool) -> int | None:
        """Read the steps since the last boundary and act on what every rank then agrees: too many
        non-finite steps, a checkpoint due, a stop. Boundaries (log rows, checkpoint_every_steps,
        epoch ends) fall on the same steps on every rank; a stop signal, the time limit or a
        checkpoint due by the clock waits for the next one, at most one log interval away."""
        found = self.monitor.read(*self._wishes(), self.info)
        if found.bad_ids is not None:
            self.last_bad_batch = self.data.describe_batch(found.bad_ids)
        if self.position.step % self.cfg.train.log_every_steps == 0:
            self._log_step(lr, found.grad_norm)
        if found.peak_in_row >= self.cfg.train.max_nonfinite_in_row:
            return self._stop_nonfinite(found.peak_in_row)
        if found.stop or (found.save and not last_of_epoch):
            self.save()
        if not found.stop:
            return None
        why = "stop signal" if self.stop_requested else "train.time_limit_s reached"
        if self.info.is_main:
            log.warning(
                "stopping at step %d (%s); resume with --resume true", self.position.step, why
            )
        return EXIT_STOPPED

    def _wishes(self) -> tuple[bool, bool]:
        """(checkpoint due now, stop now) as this rank sees them: rank 0 keeps the clocks, any
        rank may have had SIGTERM; the boundary's read shares them out."""
        if not self.info.is_main:
            return False, self.stop_requested
        limit_s = self.cfg.train.time_limit_s
        timed_out = limit_s is not None and time.monotonic() - self.start_time > limit_s
        return self.timer.due(self.position.step), timed_out or self.stop_requested

    def end_epoch(self, epoch: int) -> Verdict:
        """Validate on dev, log, checkpoint (and best.pt), decide whether to stop."""
        train_loss = self.monitor.end_epoch()
        verdict: Verdict | None = None
        summary = self.validator.run(self.model, epoch)
        if summary is not None:  # rank 0
            verdict = self.early_stop.update(epoch, summary.early_stop_score, summary.auroc)
            row: dict[str, Any] = {
                "kind": "epoch",
                "step": self.position.step,
                "epoch": epoch,
                "train_loss": train_loss,
                **summary.scalars,
                "nonfinite_total": self.monitor.nonfinite_total,
                "best": verdict.improved,
                "elapsed_s": time.monotonic() - self.start_time,
            }
            if (peak_gb := self.monitor.gpu_peak_gb()) is not None:
                row["gpu_peak_gb"] = peak_gb
            self._write_row(row)
            log.info(
                "epoch %d: train loss %s, dev AUROC %s, sens@%sFA/24h %s%s",
                epoch + 1,
                format_value(train_loss),
                format_value(summary.auroc),
                summary.early_stop_target,
                format_value(summary.early_stop_score),
                verdict.note,
            )
            plots = self.validator.write_plots(self.run.metrics, summary)
            self.tracker.log_images(plots, self.position.step)
        verdict = broadcast_from_main(verdict, self.info)
        assert verdict is not None
        start_epoch(self.position, self.data.sampler, epoch + 1)
        self.position.stopped = verdict.stop
        self.save(best=verdict.improved)
        return verdict

    # --- bookkeeping -----------------------------------------------------------------------

    def _log_step(self, lr: float, grad_norm: float | None) -> None:
        """A step row: the loss averaged over the interval's finite steps, the last grad norm."""
        # Every rank: reading the row resets the interval.
        row = self.monitor.step_row(self.position.step, self.position.epoch, lr, grad_norm)
        if self.info.is_main:
            self._write_row(row)
            log.info("%s", self.monitor.describe(row))

    def _write_row(self, row: dict[str, Any]) -> None:
        assert self.metrics is not None
        self.metrics.append(row)
        scalars = {
            key if "/" in key else f"{row['kind']}/{key}": value
            for key, value in row.items()
            if key not in ("kind", "step") and isinstance(value, int | float)
        }
        self.tracker.log(scalars, row["step"])

    def _stop_nonfinite(self, in_row: int) -> int:
        batches = gather_to_main(self.last_bad_batch or "(finite on this rank)", self.info)
        if self.info.is_main and batches is not None:
            log.error(
                "stopping: %d non-finite losses or gradients in a row (train.max_nonfinite_in_row"
                "=%d) at step %d; last batch (recording@window start): %s",
                in_row,
                self.cfg.train.max_nonfinite_in_row,
                self.position.step,
                "; ".join(f"rank {rank}: {b}" for rank, b in enumerate(batches)),
            )
        return EXIT_NONFINITE

    def save(self, best: bool = False) -> None:
        """Checkpoint everything that decides the rest of the run (rank 0 writes)."""
        rng_states = gather_to_main(capture_rng_state(self.device), self.info)
        if self.info.is_main:
            assert self.metrics is not None and rng_states is not None
            self.metrics.sync()  # the rows the checkpoint counts are on disk before it is
            self.position.metrics_rows = self.metrics.rows
            state = assemble(self._parts(), self.position, rng_states, self.cfg)
            path = save_checkpoint(state, self.run.checkpoints, self.cfg.train.keep_last, best)
            log.info("checkpoint %s%s", path, " (best)" if best else "")
        self.timer.saved()

    def close(self, exit_code: int) -> None:
        if self.metrics is not None:
            self.metrics.close()
        self.tracker.finish(exit_code)
        self.run.release()
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
