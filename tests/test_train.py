"""`szdet train` end to end on a tiny synthetic corpus, through the command line: the run
directory, kill -9 and resume to the same weights, 2-process DDP under torchrun, bad input refused.

Runs are real: the V3 model at tiny widths, the real cache, sampler and evaluation. The corpus and
cache are built once for the module (train_support.py).
"""

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict

import numpy as np
import pytest
import torch

from szdet.cli import main
from szdet.config import Config
from szdet.config_load import load_config
from szdet.data.windows import WindowIndex
from szdet.state.checkpoint import BEST_NAME, FORMAT, list_checkpoints, read_checkpoint
from szdet.state.contents import Position
from szdet.state.run_dir import read_metrics
from szdet.train.validate import assign_recordings
from train_support import (
    TINY,
    final_weights,
    step_sequence,
    train,
    train_cmd,
    write_config,
)


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

    # Continuing a run with settings that change its course is refused; operational ones pass.
    changed = train(config, "--set", "train.lr=0.5", "--set", "train.num_workers=1", env=env)
    assert changed.returncode == 1
    assert changed.stderr.strip().splitlines()[-1] == (
        f"szdet: error: {checkpoints[-1]}: resuming would change how this run goes on "
        "(train.lr: 0.001 in the checkpoint, 0.5 now); keep the run's settings, or train a new "
        "run under another paths.run_name"
    )
    operational = train(config, "--set", "train.num_workers=1", "--set", "train.time_limit_s=99")
    assert operational.returncode == 0, operational.stderr[-3000:]

    # Rolling back: not into this folder, whose later checkpoint rotation would keep instead...
    earlier = ["--resume", str(checkpoints[0])]
    mixed = train(config, *earlier, env=env)
    assert mixed.returncode == 1
    assert f"holds checkpoints past step 5 of {checkpoints[0]}" in mixed.stderr.splitlines()[-1]
    # ... but under another run name: step 6 again, in a W&B run of its own.
    rolled = train(config, *earlier, "--set", "paths.run_name=rolled-back", env=env)
    assert rolled.returncode == 0, rolled.stderr[-3000:]
    rolled_dir = tmp_path / "runs" / "rolled-back"
    assert step_sequence(rolled_dir) == [6]
    rolled_last = read_checkpoint(list_checkpoints(rolled_dir / "checkpoints")[-1])
    assert rolled_last["step"] == 6 and rolled_last["wandb_run_id"] not in (None, run_id)
    torch.testing.assert_close(rolled_last["model"], last["model"], rtol=0, atol=0)


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


@pytest.mark.slow
def test_the_cache_flag_overrides_the_configs_and_the_run_records_what_it_used(tmp_path, cache_dir):
    # --cache is only sugar for --set paths.cache_dir: the run trains on the flag's cache, and
    # its config.yaml says so, not the config file's folder (which holds no cache at all).
    config = write_config(tmp_path, tmp_path / "no-cache-here", train={"epochs": 1})
    assert main(["train", "--config", str(config), "--cache", str(cache_dir)]) == 0
    saved = load_config(tmp_path / "runs" / "szdet" / "config.yaml")
    assert saved.paths.cache_dir == cache_dir
    assert saved == load_config(config, [f"paths.cache_dir={cache_dir}"])


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
    # Same config, weights that do not fit (another szdet version, a doctored file).
    cfg = load_config(config)
    unfit = tmp_path / "unfit" / "step-000000001.pt"
    unfit.parent.mkdir()
    torch.save(
        {"format": FORMAT, **asdict(Position(step=1)), "model": {"extra.weight": torch.zeros(1)},
         "config": cfg.model_dump(mode="json"), "fingerprint": cfg.fingerprint()},
        unfit,
    )  # fmt: skip
    assert cli_error(capsys, *args, "--resume", str(unfit)).startswith(
        f"{unfit}: checkpoint does not fit this model (Error(s) in loading state_dict"
    )
    assert not run_dir.exists()  # nothing written for any refused command

    corrupt = run_dir / "checkpoints" / "step-000000005.pt"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"PK\x03\x04" + bytes(100))
    assert cli_error(capsys, *args).startswith(
        f"{corrupt.parent}: no checkpoint here reads back (newest of 1: {corrupt}: unreadable "
        "checkpoint, truncated or corrupt"
    )  # and nothing set aside: with no earlier checkpoint to resume, it stays as it was
    assert sorted(p.name for p in run_dir.rglob("*")) == ["checkpoints", corrupt.name]


def test_exit_status_file_holds_the_code_of_every_ending(tmp_path, cache_dir, capsys, monkeypatch):
    config = write_config(tmp_path, cache_dir)
    status = tmp_path / "status"
    args = ["train", "--config", str(config), "--exit-status", str(status)]
    assert main([*args, "--set", "train.lr=fast"]) == 1  # a config error
    assert status.read_text() == "1\n"

    def crash(cfg, resume):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr("szdet.train.loop.run_training", crash)
    assert main(args) == 70  # an internal error: the traceback, and the code launchers retry
    assert status.read_text() == "70\n"
    assert "internal error (exit 70)" in capsys.readouterr().err
