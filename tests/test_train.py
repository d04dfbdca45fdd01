"""`szdet train` end to end on a tiny synthetic corpus: the run directory, kill -9 and resume to the
same weights, 2-process DDP, non-finite steps skipped and counted, bad input refused.

Runs are real: the V3 model at tiny widths, the real cache, sampler and evaluation, through
`szdet train` subprocesses (torchrun for DDP) or, where a test must reach inside (a forward hook
that injects NaN, SIGTERM to itself), the same `Trainer` in this process. The corpus and cache are
built once for the module.
"""

import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from szdet.cli import main
from szdet.config import Config, load_config
from szdet.data.cache import build_cache
from szdet.data.synth import write_corpus
from szdet.train.checkpoint import BEST_NAME, FORMAT, list_checkpoints, read_checkpoint
from szdet.train.distributed import DistInfo
from szdet.train.early_stop import EarlyStopping
from szdet.train.loop import EXIT_COLLAPSE, EXIT_NONFINITE, EXIT_STOPPED, Trainer
from szdet.train.run_dir import MetricsLog, read_metrics
from szdet.train.validate import assign_recordings

# The V3 structure at the smallest widths, on 2 s windows: seconds per run on 2 CPU cores.
TINY = {
    "windows": {"length_s": 2.0, "train_stride_s": 1.0, "eval_stride_s": 4.0},
    "model": {
        "tcn_channels": [8] * 8,
        "node_dim": 8, "node_layers": 1, "node_d_state": 4, "node_headdim": 4,
        "edge_dim": 4, "edge_layers": 1, "edge_d_state": 4, "edge_headdim": 2,
        "pe_dim": 4, "gnn_layers": 1,
    },
    "train": {
        "epochs": 2, "batch_size": 2, "max_steps_per_epoch": 3, "warmup_steps": 2,
        "precision": "fp32", "device": "cpu", "num_workers": 0, "log_every_steps": 1,
        "checkpoint_every_steps": 1, "keep_last": 2,
    },
    "evaluate": {"timeline_recordings": 1, "sweep_points": 20},
    "tracking": {"mode": "disabled"},
}  # fmt: skip


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root / "corpus", patients=5, minutes=4, seed=3)  # 2 dev recordings
    for split in ("train", "dev"):
        build_cache(root / "corpus", split, root / "cache", Config().preprocess, 1, None, None)
    return root / "cache"


def write_config(tmp_path: Path, cache_dir: Path, **sections) -> Path:
    cfg = json.loads(json.dumps(TINY))
    cfg["paths"] = {"cache_dir": str(cache_dir), "runs_dir": str(tmp_path / "runs")}
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def train_cmd(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "szdet.cli", "train", "--config", str(config), *args]


def train(config: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        train_cmd(config, *args), capture_output=True, text=True, timeout=300, env=env
    )


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(list_checkpoints(run_dir / "checkpoints")[-1])["model"]


def step_sequence(run_dir: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "step"]


@pytest.mark.slow
def test_train_writes_a_complete_run_directory(tmp_path, cache_dir):
    config = write_config(tmp_path, cache_dir, tracking={"mode": "offline"})
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    proc = train(config, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "szdet"

    assert load_config(run_dir / "config.yaml") == load_config(config)  # resolved, equal
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert step_sequence(run_dir) == list(range(1, 7))
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert [(r["epoch"], r["step"]) for r in epochs] == [(0, 3), (1, 6)]
    for r in epochs:
        assert 0.0 <= r["val/auroc"] <= 1.0
        assert "val/sens_at_10fa" in r and r["nonfinite_total"] == 0
    assert all(r["windows_per_s"] > 0 and r["eta_s"] >= 0 for r in rows if r["kind"] == "step")

    checkpoints = list_checkpoints(run_dir / "checkpoints")
    assert [p.name for p in checkpoints] == ["step-000000005.pt", "step-000000006.pt"]
    last = read_checkpoint(checkpoints[-1])
    assert (last["epoch"], last["epoch_step"], last["metrics_rows"]) == (2, 0, len(rows))
    best = read_checkpoint(run_dir / "checkpoints" / BEST_NAME)
    assert epochs[0]["best"]  # the first epoch with a defined score is the best so far
    best_epoch = max(r["epoch"] for r in epochs if r["best"])
    assert best["epoch"] == best_epoch + 1  # saved at that epoch's end

    plots = {p.name for p in (run_dir / "plots").glob("*.png")}
    assert {"training_curves.png", "roc.png", "sens_vs_fa.png"} < plots
    assert len([p for p in plots if p.startswith("timeline_")]) == 1  # timeline_recordings: 1
    run_id = last["wandb_run_id"]
    assert run_id and list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))

    # A finished run: resuming does no more steps; starting it over is refused, nothing touched.
    before = (run_dir / "metrics.jsonl").read_bytes()
    again = train(config, "--resume", "true", env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (run_dir / "metrics.jsonl").read_bytes() == before
    fresh = train(config, "--resume", "false")
    assert fresh.returncode == 1
    assert fresh.stderr.strip().splitlines() == [
        f"szdet: error: {run_dir / 'checkpoints'}: holds checkpoints of an earlier run; continue"
        " it with --resume auto, or start over under another paths.run_name (or delete that "
        "folder)"
    ]
    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")] == [
        p.name for p in checkpoints
    ]


@pytest.mark.slow
def test_kill_minus_9_then_resume_auto_matches_an_uninterrupted_run(tmp_path, cache_dir):
    (tmp_path / "a").mkdir()
    reference = write_config(tmp_path / "a", cache_dir)
    proc = train(reference)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = final_weights(tmp_path / "a" / "runs" / "szdet")

    (tmp_path / "b").mkdir()
    config = write_config(tmp_path / "b", cache_dir, tracking={"mode": "offline"})
    run_dir = tmp_path / "b" / "runs" / "szdet"
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    seed = random.randrange(10**6)
    delay_s = random.Random(seed).uniform(0.0, 3.0)
    with open(tmp_path / "victim.log", "w") as log_file:
        victim = subprocess.Popen(train_cmd(config), stdout=log_file, stderr=log_file, env=env)
    deadline = time.monotonic() + 240
    while not list_checkpoints(run_dir / "checkpoints") and victim.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    time.sleep(delay_s)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL, f"run ended before the kill (seed {seed})"
    first_id = read_checkpoint(list_checkpoints(run_dir / "checkpoints")[0])["wandb_run_id"]

    resumed = train(config, "--resume", "auto", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr
    got = final_weights(run_dir)
    assert got.keys() == expected.keys()
    worst = max((got[k].double() - expected[k].double()).abs().max().item() for k in got)
    assert worst <= 1e-6, f"weights differ by {worst} (kill seed {seed}, delay {delay_s:.2f} s)"
    assert step_sequence(run_dir) == list(range(1, 7)), f"kill seed {seed}"
    epoch_rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epoch_rows] == [0, 1]
    assert (
        read_checkpoint(list_checkpoints(run_dir / "checkpoints")[-1])["wandb_run_id"] == first_id
    )


@pytest.mark.slow
def test_two_process_ddp_trains_resumes_mid_epoch_and_only_rank_0_writes(tmp_path, cache_dir):
    config = write_config(tmp_path, cache_dir)
    run_dir = tmp_path / "runs" / "szdet"

    def torchrun(attempt: str, *args: str) -> tuple[subprocess.CompletedProcess, dict[int, str]]:
        logs = tmp_path / attempt
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "--log-dir", str(logs), "--redirects", "3",
            "-m", "szdet.cli", "train", "--config", str(config), *args,
        ]  # fmt: skip
        proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
        # torchrun writes <log-dir>/<run id>/attempt_0/<local rank>/stderr.log
        return proc, {int(p.parent.name): p.read_text() for p in logs.rglob("stderr.log")}

    # Stop after the first step (time limit: checkpoint, exit 75), then resume to the end.
    stopped, _ = torchrun("first", "--set", "train.time_limit_s=1e-6")
    assert stopped.returncode != 0  # torchrun reports a worker's exit 75 as a failure
    (first,) = [read_checkpoint(p) for p in list_checkpoints(run_dir / "checkpoints")]
    assert (first["step"], first["world_size"], len(first["rng"])) == (1, 2, 2)
    assert first["sampler"]["global_position"] == 4  # one batch of 2 on each of 2 ranks
    assert not torch.equal(first["rng"][0]["torch"], first["rng"][1]["torch"])

    proc, rank_logs = torchrun("second")
    assert proc.returncode == 0, proc.stderr[-2000:] + rank_logs.get(1, "")[-2000:]
    assert "resuming from" in rank_logs[0] and "step 6/6" in rank_logs[0]
    assert step_sequence(run_dir) == list(range(1, 7))
    last = read_checkpoint(list_checkpoints(run_dir / "checkpoints")[-1])
    assert (last["step"], last["epoch"], len(last["rng"])) == (6, 2, 2)
    # Only rank 0 logs steps, draws the progress bar and writes checkpoints.
    assert "epoch 2/2" in rank_logs[0] and "checkpoint" in rank_logs[0]
    assert not any(s in rank_logs[1] for s in ("step 6/6", "epoch 2/2", "checkpoint"))


def test_dev_recordings_are_shared_out_by_window_count():
    from szdet.data.windows import WindowIndex

    counts = [50, 10, 10, 30, 5, 45]  # windows per recording
    recording = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
    index = WindowIndex(
        recording, np.zeros(len(recording), np.int64), np.zeros(len(recording), np.int8), 8
    )
    owner = assign_recordings(index, len(counts) + 1, world_size=2)  # the last has no window
    assert owner.tolist() == [0, 0, 0, 1, 0, 1, 0]  # 50->0, 45->1, 30->1, then 10, 10, 5->0
    loads = [sum(c for c, o in zip(counts, owner, strict=False) if o == rank) for rank in (0, 1)]
    assert loads == [75, 75]
    assert assign_recordings(index, len(counts), world_size=1).tolist() == [0] * len(counts)


def test_early_stopping_patience_and_collapse():
    stop = EarlyStopping(patience=2, collapse_floor=0.55, collapse_after_epochs=3)
    history = [(0.2, 0.5), (0.4, 0.6), (0.4, 0.7), (0.4, 0.7), (math.nan, 0.8)]  # sens, AUROC
    verdicts = [stop.update(epoch, *scores) for epoch, scores in enumerate(history)]
    # A tie on sensitivity is broken by AUROC; an exact tie or a NaN is no improvement.
    assert [v.improved for v in verdicts] == [True, True, True, False, False]
    assert [v.stop for v in verdicts[:4]] == [None] * 4  # AUROC 0.5 came before epoch 3
    assert verdicts[4].stop == "early_stop" and "best 0.400 at epoch 2" in verdicts[4].reason
    restored = EarlyStopping(patience=2, collapse_floor=0.55, collapse_after_epochs=3)
    restored.load_state_dict(stop.state_dict())
    assert restored == stop
    collapsed = EarlyStopping(patience=10, collapse_floor=0.55, collapse_after_epochs=2)
    assert collapsed.update(0, 0.1, 0.3).stop is None
    assert collapsed.update(1, 0.2, math.nan).stop == "collapse"  # a constant model: NaN AUROC


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


def in_process_trainer(tmp_path: Path, cache_dir: Path, **train) -> Trainer:
    tmp_path.mkdir(exist_ok=True)
    cfg = load_config(write_config(tmp_path, cache_dir, train=train))
    device = torch.device("cuda" if cfg.train.device == "cuda" else "cpu")
    return Trainer(cfg, DistInfo(0, 1, 0, device), resume="auto")


def nan_output_on(steps: set[int], trainer: Trainer):
    """A numerical blow-up at the model's output on the given (1-based) steps."""

    def hook(module, inputs, output):
        return output * math.nan if trainer.step + 1 in steps and module.training else output

    return trainer.model.register_forward_hook(hook)


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
    trainer.optimizer.register_step_post_hook(lambda opt, *_: lrs.append(trainer.step + 1))
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
    x, y, _ = next(iter(trainer.data.loader))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    result = trainer.stepper(x, y, save_due=False, stop_due=False)
    assert result.loss is None and result.grad_norm is None and result.bad_here
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert trainer.scheduler.last_epoch == 1  # the batch still counts as consumed
    handle.remove()
    result = trainer.stepper(x, y, save_due=True, stop_due=False)
    assert result.loss is not None and math.isfinite(result.loss) and result.save_now
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    trainer.close(0)


@pytest.mark.slow
def test_time_limit_and_sigterm_checkpoint_then_exit_75(tmp_path, cache_dir):
    trainer = in_process_trainer(tmp_path / "limit", cache_dir, time_limit_s=1e-6)
    code = trainer.fit()
    trainer.close(code)
    assert code == EXIT_STOPPED
    (only,) = list_checkpoints(trainer.run.checkpoints)
    assert read_checkpoint(only)["step"] == 1  # the step in flight finished, then a checkpoint

    resumed = in_process_trainer(tmp_path / "limit", cache_dir)
    assert (resumed.step, resumed.epoch_step) == (1, 1)
    os.kill(os.getpid(), signal.SIGTERM)  # what a preempted cloud machine gets first
    code = resumed.fit()
    resumed.close(code)
    assert code == EXIT_STOPPED
    assert read_checkpoint(list_checkpoints(resumed.run.checkpoints)[-1])["step"] == 2
    assert step_sequence(resumed.run.root) == [1, 2]


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


def cli_error(capsys, *argv: str) -> str:
    """Run `szdet` in this process; the one stderr line of a refused command (exit 1)."""
    assert main(list(argv)) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("szdet: error: "), lines
    return lines[0].removeprefix("szdet: error: ")


def test_bad_input_is_refused_in_one_line_before_anything_is_written(tmp_path, cache_dir, capsys):
    config = write_config(tmp_path, cache_dir)
    run_dir = tmp_path / "runs" / "szdet"
    args = ("train", "--config", str(config))
    assert cli_error(capsys, *args, "--resume", "true") == (
        f"{run_dir / 'checkpoints'}: --resume true, but there is no checkpoint to resume"
    )
    missing = tmp_path / "nope.pt"
    assert cli_error(capsys, *args, "--resume", str(missing)) == (
        f"{missing}: --resume checkpoint not found (expected auto, true, false or a file)"
    )
    assert cli_error(capsys, *args, "--set", f"paths.cache_dir={tmp_path / 'no-cache'}") == (
        f"{tmp_path / 'no-cache' / 'train'}: no cache here (no manifest.json; run szdet cache build)"
    )
    foreign_cfg = Config.model_validate({"model": {**TINY["model"], "node_dim": 16}})
    foreign = tmp_path / "foreign" / "step-000000001.pt"
    foreign.parent.mkdir()
    torch.save(
        {"format": FORMAT, "config": foreign_cfg.model_dump(mode="json"),
         "fingerprint": foreign_cfg.fingerprint()},
        foreign,
    )  # fmt: skip
    assert cli_error(capsys, *args, "--resume", str(foreign)) == (
        f"{foreign}: checkpoint is for a different model (model.node_dim: 16 in the checkpoint, "
        "8 now)"
    )
    assert not run_dir.exists()  # nothing written for any refused command

    corrupt = run_dir / "checkpoints" / "step-000000005.pt"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"PK\x03\x04" + bytes(100))
    assert cli_error(capsys, *args).startswith(
        f"{corrupt}: unreadable checkpoint, truncated or corrupt"
    )
    assert sorted(p.name for p in run_dir.rglob("*")) == ["checkpoints", corrupt.name]
