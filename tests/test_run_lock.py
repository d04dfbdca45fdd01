"""One training per run directory: a second is refused in one line naming the holder, and the
hold dies with its process (a crash or kill -9 leaves nothing to clear)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from szdet.state.run_dir import LOCK, RunDir
from train_support import train, write_config


def _holder(run_dir: Path) -> subprocess.Popen:
    """Another process holding the folder, as a running training does."""
    code = ("import sys, time; from pathlib import Path; from szdet.state.run_dir import RunDir; "
            "run = RunDir(Path(sys.argv[1])); run.hold(); print('held', flush=True); time.sleep(600)")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.slow
def test_a_second_training_on_a_folder_in_use_is_refused_and_writes_nothing(tmp_path, cache_dir):
    config = write_config(tmp_path, cache_dir)
    run_dir = tmp_path / "runs" / "szdet"
    holder = _holder(run_dir)
    try:
        proc = train(config)
        assert proc.returncode == 1
        [line] = proc.stderr.strip().splitlines()
        assert line.startswith(f"szdet: error: {run_dir}: in use by training pid {holder.pid} on ")
        assert line.endswith("wait for it to end, or train under another paths.run_name")
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK]  # the holder's, untouched
    finally:
        holder.send_signal(signal.SIGKILL)  # as a crash: the kernel drops the lock
        holder.wait()
    proc = train(config)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints").is_dir()


def test_a_refused_run_leaves_no_lock_and_no_folder_it_made(tmp_path):
    run = RunDir(tmp_path / "runs" / "new")
    run.hold()
    assert run.lock.read_text().startswith(f"training pid {os.getpid()} on ")
    run.release(refused=True)
    assert not (tmp_path / "runs" / "new").exists()
    existing = RunDir(tmp_path / "old")
    (tmp_path / "old" / "checkpoints").mkdir(parents=True)
    existing.hold()
    existing.release(refused=True)
    assert [p.name for p in (tmp_path / "old").iterdir()] == ["checkpoints"]


def test_the_hold_is_released_on_close_and_taken_again(tmp_path):
    first, second = RunDir(tmp_path / "r"), RunDir(tmp_path / "r")
    first.hold()
    start = time.monotonic()
    with pytest.raises(Exception, match=r"in use by training pid"):
        second.hold()
    assert time.monotonic() - start < 5  # refused at once, never waiting
    first.release()
    second.hold()
    second.release()
    assert (tmp_path / "r" / LOCK).exists()  # a finished run keeps the file; the lock is gone
