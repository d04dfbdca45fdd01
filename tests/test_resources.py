"""No resource grows with the corpus: open files stay bounded however many recordings a split
has, and running out of one is a crash launchers retry (exit 70), not bad input (exit 1)."""

import errno
import os
import resource
import subprocess

import numpy as np
import pytest
from torch.utils.data import DataLoader

from cache_support import write_split
from szdet.cli import main
from szdet.data.manifest import MAX_OPEN_ARRAYS, CacheSplit
from szdet.data.windows import WindowDataset, WindowIndex
from szdet.errors import ResourceError, UserError, exit_code_for, original_message
from szdet.state.run_dir import read_metrics
from train_support import train_cmd, write_config

FD_LIMIT = 128  # far below the recordings a worker reads, as 1,024 is below a full corpus


def _limit_open_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


@pytest.mark.slow
def test_train_and_validate_with_workers_under_ulimit_n_128(tmp_path):
    # One 1 s window per recording, a seizure in every third: each worker reads more recordings
    # than it may open files, in training (320 windows drawn from 300) and in validation (all 300).
    recordings = [(1.0, [(0.25, 0.75)] if i % 3 == 0 else []) for i in range(300)]
    for split in ("train", "dev"):
        write_split(tmp_path / "cache", split, recordings)
    config = write_config(
        tmp_path,
        tmp_path / "cache",
        windows={"length_s": 1.0, "train_stride_s": 1.0, "eval_stride_s": 1.0},
        train={
            "epochs": 1, "batch_size": 32, "max_steps_per_epoch": 10, "num_workers": 2,
            "checkpoint_every_steps": None,
        },
    )  # fmt: skip
    proc = subprocess.run(
        train_cmd(config),
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=_limit_open_files,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics(tmp_path / "runs" / "szdet" / "metrics.jsonl")
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert [(r["epoch"], r["step"]) for r in epochs] == [(0, 10)] and "val/auroc" in epochs[0]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_split_keeps_at_most_max_open_arrays_files_open(tmp_path):
    write_split(tmp_path, "train", [(0.5, [])] * (3 * MAX_OPEN_ARRAYS))
    split = CacheSplit.open(tmp_path, "train")
    before = _open_fds()
    for i in range(len(split)):
        split.signal(i).sum()  # read, and let go of the array as a Dataset does
    assert _open_fds() - before == MAX_OPEN_ARRAYS
    recent = split.signal(len(split) - 1)
    assert split.signal(len(split) - 1) is recent  # the recently read stay open, not reopened
    split.signal(0)  # evicts the least recently read, closing its file
    assert _open_fds() - before == MAX_OPEN_ARRAYS


def _first_batch_error(loader: DataLoader) -> Exception:
    """What a DataLoader worker raised for the first batch, as torch re-raises it. Without its
    traceback: the frames it holds would keep the iterator alive until the garbage collector,
    whose worker shutdown then waits out a timeout."""
    try:
        next(iter(loader))
    except Exception as e:
        return e.with_traceback(None)
    raise AssertionError("the first batch loaded")


def test_running_out_of_files_in_a_worker_exits_70_and_a_bad_file_exits_1(tmp_path, monkeypatch):
    path = write_split(tmp_path, "train", [(0.5, [])]) / "p000" / "p000_s001_t000.npy"
    split = CacheSplit.open(tmp_path, "train")
    loader = DataLoader(WindowDataset(split, WindowIndex.build(split, 0.5, 0.5)), num_workers=1)

    def out_of_files(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files", str(args[0]))

    monkeypatch.setattr(np, "load", out_of_files)  # inherited by the forked worker
    limit = _first_batch_error(loader)
    assert isinstance(limit, ResourceError)
    assert str(limit).startswith("Caught ResourceError in DataLoader worker process 0.\n")
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert original_message(limit) == f"{path}: too many open files (ulimit -n {nofile})"
    assert exit_code_for(limit) == exit_code_for(OSError(errno.ENFILE, "x")) == 70
    monkeypatch.undo()

    path.write_bytes(b"not an npy file")
    bad = _first_batch_error(loader)
    assert isinstance(bad, UserError)
    assert original_message(bad).startswith(f"{path}: cannot open cache array (")
    assert exit_code_for(bad) == exit_code_for(OSError(errno.ENOENT, "x")) == 1


def test_the_command_line_reports_a_resource_limit_in_one_line(tmp_path, monkeypatch, capsys):
    import szdet.synth.corpus

    def out_of_files(out, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files", str(out))

    monkeypatch.setattr(szdet.synth.corpus, "write_corpus", out_of_files)
    assert main(["synth", str(tmp_path)]) == 70
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert capsys.readouterr().err.strip().splitlines() == [
        f"szdet: error: {tmp_path}: too many open files (ulimit -n {nofile}) "
        "(a resource limit, not bad input: exit 70)"
    ]
