"""How a training run stops, and what it keeps doing: non-finite steps skipped, counted and
stopped on with a diagnostic, the time limit and SIGTERM (checkpoint, exit 75), collapse and early
stopping, the metrics log cut back on resume. The same `Trainer` as `szdet train`, in this process,
so a test can inject a numerical failure (a forward hook) or signal itself.
"""

import logging
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cache_support import write_split
from szdet.config_load import load_config
from szdet.errors import EXIT_COLLAPSE, EXIT_NONFINITE, EXIT_STOPPED
from szdet.state.checkpoint import list_checkpoints, read_checkpoint
from szdet.state.run_dir import MetricsLog, read_metrics
from szdet.train.distributed import DistInfo
from szdet.train.early_stop import EarlyStopping
from szdet.train.loop import Trainer
from train_support import (
    in_process_trainer,
    nan_output_on,
    step_sequence,
    write_config,
)

REPO = Path(__file__).resolve().parents[1]


def test_early_stopping_patience_and_collapse():
    stop = EarlyStopping(patience=2, collapse_floor=0.55, collapse_after_epochs=3, fa_target="10")
    history = [(0.2, 0.5), (0.4, 0.6), (0.4, 0.7), (0.4, 0.7), (math.nan, 0.8)]  # sens, AUROC
    verdicts = [stop.update(epoch, *scores) for epoch, scores in enumerate(history)]
    # A tie on sensitivity is broken by AUROC; an exact tie or a NaN is no improvement.
    assert [v.improved for v in verdicts] == [True, True, True, False, False]
    assert [v.stop for v in verdicts[:4]] == [None] * 4  # AUROC 0.5 came before epoch 3
    assert verdicts[4].stop == "early_stop" and "best 0.400 at epoch 2" in verdicts[4].reason
    assert "sensitivity at 10 FA/24h" in verdicts[4].reason
    restored = EarlyStopping(
        patience=2, collapse_floor=0.55, collapse_after_epochs=3, fa_target="10"
    )
    restored.load_state_dict(stop.state_dict())
    assert restored == stop
    collapsed = EarlyStopping(
        patience=10, collapse_floor=0.55, collapse_after_epochs=2, fa_target="10"
    )
    assert collapsed.update(0, 0.1, 0.3).stop is None
    # NaN: dev has one class only (no seizure in a small subset, say), not a collapse...
    assert collapsed.update(1, 0.2, math.nan).stop is None
    # ... while a constant model, whose AUROC is 0.5, is one.
    assert collapsed.update(2, 0.2, 0.5).stop == "collapse"


def test_metrics_log_keeps_only_the_rows_a_checkpoint_counted(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path, keep_rows=0)
    for step in (1, 2, 3):
        log.append({"kind": "step", "step": step, "loss": math.nan if step == 2 else 0.5})
    log.close()
    with open(path, "a") as f:
        f.write('{"kind": "step", "st')  # a row cut off by kill -9
    assert [r["loss"] for r in read_metrics(path)] == [0.5, None, 0.5]  # strict JSON: NaN->null
    resumed = MetricsLog(path, keep_rows=2)
    resumed.append({"kind": "step", "step": 3, "loss": 0.25})
    resumed.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(path)] == [(1, 0.5), (2, None), (3, 0.25)]
    assert path.read_text().endswith("\n")


@pytest.mark.slow
def test_k_nonfinite_steps_in_a_row_stop_with_a_diagnostic(tmp_path, cache_dir, caplog):
    trainer = in_process_trainer(tmp_path, cache_dir, max_nonfinite_in_row=3)
    nan_output_on({1, 2, 3}, trainer)
    with caplog.at_level(logging.ERROR, logger="szdet.train.loop"):
        code = trainer.fit()
    trainer.close(code)
    assert code == EXIT_NONFINITE
    message = caplog.records[-1].getMessage()
    assert "3 non-finite losses or gradients in a row" in message and "at step 3" in message
    names = {r.name for r in trainer.data.split.recordings}
    windows = message.split("rank 0: ")[1].split(", ")
    assert len(windows) == 2  # the batch: recording@start for each of its windows
    assert all(w.split("@")[0] in names and w.endswith("s") for w in windows)
    rows = read_metrics(tmp_path / "runs" / "szdet" / "metrics.jsonl")
    assert [(r["step"], r["loss"] is None, r["nonfinite_total"]) for r in rows] == [
        (1, True, 1), (2, True, 2), (3, True, 3),
    ]  # fmt: skip
    after_1, after_2 = (read_checkpoint(p) for p in list_checkpoints(trainer.run.checkpoints))
    assert after_2["step"] == 2 and after_2["monitor"]["nonfinite_in_row"] == 2
    assert all(torch.equal(after_1["model"][k], after_2["model"][k]) for k in after_1["model"])
    assert after_2["optimizer"]["state"] == {}  # no update ever happened


@pytest.mark.slow
def test_a_diverging_run_stops_with_the_diagnostic_instead_of_crashing(tmp_path, cache_dir):
    # A learning rate of 1e30 wrecks the weights at step 1; every later forward fails numerically
    # (NaN, or an eigendecomposition refusing non-finite input), is skipped and counted.
    trainer = in_process_trainer(
        tmp_path, cache_dir, lr=1e30, warmup_steps=0, max_nonfinite_in_row=2
    )
    code = trainer.fit()
    trainer.close(code)
    assert code == EXIT_NONFINITE
    rows = read_metrics(trainer.run.metrics)
    assert [(r["step"], r["loss"] is None) for r in rows] == [(1, False), (2, True), (3, True)]


@pytest.mark.slow
def test_isolated_nonfinite_steps_are_skipped_and_training_goes_on(tmp_path, cache_dir):
    trainer = in_process_trainer(
        tmp_path, cache_dir, max_nonfinite_in_row=3, epochs=1, max_steps_per_epoch=5
    )
    nan_output_on({2, 5}, trainer)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    lrs = []
    trainer.optimizer.register_step_post_hook(lambda opt, *_: lrs.append(trainer.position.step + 1))
    code = trainer.fit()
    trainer.close(code)
    assert code == 0
    steps = [r for r in read_metrics(trainer.run.metrics) if r["kind"] == "step"]
    assert [r["step"] for r in steps if r["loss"] is None] == [2, 5]
    assert [r["nonfinite_total"] for r in steps] == [0, 1, 1, 1, 2]
    assert lrs == [1, 3, 4]  # AdamW stepped on every finite step only
    assert steps[2]["lr"] == pytest.approx(
        load_config(trainer.run.config).train.lr
    )  # schedule ran on
    after = trainer.model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_a_nonfinite_gradient_with_a_finite_loss_is_skipped(tmp_path, cache_dir):
    trainer = in_process_trainer(tmp_path, cache_dir)
    first = next(p for p in trainer.model.parameters() if p.requires_grad)
    handle = first.register_hook(lambda grad: grad * math.inf)
    x, y, node_y, _ = next(iter(trainer.data.loader))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    result = trainer.stepper(x, y, node_y)
    assert torch.isfinite(result.loss) and not torch.isfinite(result.grad_norm)
    assert result.skipped and result.bad_here
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert trainer.scheduler.last_epoch == 1  # the batch still counts as consumed
    handle.remove()
    result = trainer.stepper(x, y, node_y)
    assert torch.isfinite(result.loss) and not result.skipped and not result.bad_here
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    trainer.close(0)


@pytest.mark.slow
def test_time_limit_and_sigterm_checkpoint_then_exit_75(tmp_path, cache_dir):
    # What the process had: Python's default, or SIG_IGN under a shell's background job.
    sigint_before = signal.getsignal(signal.SIGINT)
    trainer = in_process_trainer(tmp_path / "limit", cache_dir, time_limit_s=1e-6)
    code = trainer.fit()
    trainer.close(code)
    assert code == EXIT_STOPPED
    (only,) = list_checkpoints(trainer.run.checkpoints)
    assert read_checkpoint(only)["step"] == 1  # the step in flight finished, then a checkpoint

    resumed = in_process_trainer(tmp_path / "limit", cache_dir)
    assert (resumed.position.step, resumed.position.epoch_step) == (1, 1)
    os.kill(os.getpid(), signal.SIGTERM)  # what a preempted cloud machine gets first
    code = resumed.fit()
    resumed.close(code)
    assert code == EXIT_STOPPED
    assert read_checkpoint(list_checkpoints(resumed.run.checkpoints)[-1])["step"] == 2
    assert step_sequence(resumed.run.root) == [1, 2]

    again = in_process_trainer(tmp_path / "limit", cache_dir)
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, or a platform's interrupt: the same stop
    code = again.fit()
    again.close(code)
    assert code == EXIT_STOPPED and step_sequence(again.run.root) == [1, 2, 3]
    assert signal.getsignal(signal.SIGINT) is sigint_before  # the handler is restored


@pytest.mark.slow
def test_collapse_stops_the_run_and_a_resume_stays_stopped(tmp_path, cache_dir, caplog):
    # AUROC is always below a floor of 1.0: the run collapses after its first epoch.
    trainer = in_process_trainer(
        tmp_path, cache_dir, collapse_auroc_floor=1.0, collapse_after_epochs=1
    )
    code = trainer.fit()
    trainer.close(code)
    assert code == EXIT_COLLAPSE
    rows = read_metrics(trainer.run.metrics)
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [0]
    assert read_checkpoint(list_checkpoints(trainer.run.checkpoints)[-1])["stopped"] == "collapse"

    again = in_process_trainer(
        tmp_path, cache_dir, collapse_auroc_floor=1.0, collapse_after_epochs=1
    )
    with caplog.at_level(logging.WARNING, logger="szdet.train.loop"):
        code = again.fit()
    again.close(code)
    assert code == EXIT_COLLAPSE and "already stopped (collapse)" in caplog.text
    assert read_metrics(again.run.metrics) == rows  # nothing trained, nothing logged


@pytest.mark.slow
def test_resume_auto_falls_back_past_a_corrupt_latest_checkpoint(tmp_path, cache_dir, caplog):
    first = in_process_trainer(tmp_path, cache_dir, epochs=1)
    first.close(first.fit())
    previous, latest = list_checkpoints(first.run.checkpoints)  # steps 2 and 3 (keep_last 2)
    latest.write_bytes(latest.read_bytes()[:-4096])  # the last save cut short

    with caplog.at_level(logging.WARNING, logger="szdet.state.checkpoint"):
        again = in_process_trainer(tmp_path, cache_dir, epochs=1)
    assert again.position.step == 2
    assert caplog.records[0].getMessage().startswith(f"{latest}: unreadable checkpoint")
    code = again.fit()
    again.close(code)
    assert code == 0 and step_sequence(again.run.root) == [1, 2, 3]
    assert list_checkpoints(again.run.checkpoints) == [previous, latest]
    assert read_checkpoint(latest)["step"] == 3
    assert (latest.parent / f"{latest.name}.corrupt").is_file()  # the evidence, kept aside


@pytest.mark.slow
def test_a_dev_split_without_seizures_warns_trains_on_and_keeps_the_last_as_best(
    tmp_path, cache_dir, caplog
):
    quiet = tmp_path / "cache"
    quiet.mkdir()
    (quiet / "train").symlink_to(cache_dir / "train")
    write_split(quiet, "dev", [(40.0, []), (30.0, [])])
    with caplog.at_level(logging.WARNING):
        trainer = in_process_trainer(tmp_path / "run", quiet, early_stop_patience=1)
        started = [r.getMessage() for r in caplog.records]
        code = trainer.fit()
        trainer.close(code)
    unranked = "dev has no seizure events, so validation cannot rank checkpoints"
    assert len(started) == 1 and unranked in started[0] and str(quiet / "dev") in started[0]
    assert code == 0  # patience 1 would have stopped after epoch 1 on NaN scores
    rows = read_metrics(trainer.run.metrics)
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [0, 1]
    last = list_checkpoints(trainer.run.checkpoints)[-1]
    assert (trainer.run.checkpoints / "best.pt").read_bytes() == last.read_bytes()
    ended = caplog.records[-1].getMessage()
    assert unranked in ended and "best.pt is the last checkpoint" in ended


@pytest.mark.slow
def test_early_stopping_follows_the_first_configured_fa_target(tmp_path, cache_dir, caplog):
    # No 10 FA/24h target: early stopping follows 5 FA/24h, the first, and names it everywhere.
    config = write_config(
        tmp_path, cache_dir, train={"epochs": 2, "early_stop_patience": 1},
        evaluate={"fa_targets_per_24h": [5, 2.5]},
    )  # fmt: skip
    trainer = Trainer(load_config(config), DistInfo(0, 1, 0, torch.device("cpu")), resume="auto")
    with caplog.at_level(logging.INFO, logger="szdet.train.loop"):
        code = trainer.fit()
    trainer.close(code)
    assert code == 0 and (trainer.run.checkpoints / "best.pt").is_file()
    epochs = [r for r in read_metrics(trainer.run.metrics) if r["kind"] == "epoch"]
    assert epochs[0]["best"] and not math.isnan(epochs[0]["val/sens_at_5fa"])
    assert "sens@5FA/24h" in caplog.text and "10FA" not in caplog.text
    state = read_checkpoint(trainer.run.checkpoints / "best.pt")["early_stop"]
    assert state["best_score"] == epochs[state["best_epoch"]]["val/sens_at_5fa"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (CPU counterparts above)")
def test_cuda_bf16_training_reports_gpu_memory(tmp_path, cache_dir):
    trainer = in_process_trainer(
        tmp_path, cache_dir, device="cuda", precision="bf16", epochs=1, gpu_memory_warn_gb=1e-6
    )
    code = trainer.fit()
    trainer.close(code)
    assert code == 0
    rows = read_metrics(trainer.run.metrics)
    assert all(r["loss"] is not None and r["gpu_peak_gb"] > 0 for r in rows if r["kind"] == "step")
    last = read_checkpoint(list_checkpoints(trainer.run.checkpoints)[-1])
    assert last["rng"][0]["cuda"] is not None


@pytest.mark.slow
def test_torchrun_launcher_reports_the_trainers_exit_code_and_bounds_crash_restarts(
    tmp_path, cache_dir
):
    # torchrun itself exits 1 whenever a worker fails; scripts/torchrun.sh (SkyPilot's run
    # command) must hand SkyPilot the trainer's code: 75 and 70 restart, bad input does not.
    config = write_config(tmp_path, cache_dir, train={"time_limit_s": 1e-6})
    run_dir = load_config(config).run_dir
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def launch(path_env: dict[str, str] = env) -> int:
        proc = subprocess.run(
            [str(REPO / "scripts/torchrun.sh"), str(config)],
            capture_output=True, text=True, timeout=300, env=path_env,
        )  # fmt: skip
        return proc.returncode

    # A worker that dies without unwinding (SIGKILL, an NCCL abort): torchrun says 1, nothing
    # else is known, so it is a crash (70) -- until the 4th in a row, which ends it (1).
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    (fake / "torchrun").write_text("#!/bin/sh\nexit 1\n")  # what torchrun returns then
    (fake / "torchrun").chmod(0o755)
    crashing = {**env, "PATH": f"{fake}:{env['PATH']}"}
    assert [launch(crashing) for _ in range(4)] == [70, 70, 70, 1]
    assert (run_dir / "crashes-node0").read_text() == "4\n"

    # The real trainer stops at its time limit after a checkpoint: 75, and the streak is over.
    assert launch() == EXIT_STOPPED
    assert list_checkpoints(run_dir / "checkpoints")
    assert not (run_dir / "crashes-node0").exists()

    # Bad input (a missing cache) is 1, never a restart.
    config.write_text(config.read_text().replace("cache_dir: ", "cache_dir: /nonexistent"))
    assert launch() == 1
    assert not (run_dir / "crashes-node0").exists()
