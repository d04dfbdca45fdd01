"""`szdet cache build --workers N` leaves no process behind when it is stopped (SIGTERM) or
killed outright (SIGKILL): its workers, the forkserver and the resource tracker all end."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edf_factory import write_corpus


def _descendants(pid: int) -> set[int]:
    """Every live (not zombie) process below ``pid``, from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # ended while being read
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_or_killed_parallel_build_leaves_no_process_behind(tmp_path, signum):
    corpus = write_corpus(
        tmp_path / "corpus", {"train": ["ccccccca", "cccccccb"]}, recordings=3, seconds=600
    )
    out = tmp_path / "cache"
    build = [sys.executable, "-m", "szdet.cli", "cache", "build", "--data-root", str(corpus)]
    build += ["--split", "train", "--out", str(out), "--workers", "2"]
    log = tmp_path / "stderr.log"  # a file, not a pipe: orphans would hold a pipe open
    with open(log, "w") as stderr:
        proc = subprocess.Popen(build, stderr=stderr)
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 180
        while not list((out / "train").glob("*/*.json")):  # one record done, more in flight
            assert proc.poll() is None and time.monotonic() < deadline, "ended before the kill"
            time.sleep(0.02)
        children = _descendants(proc.pid)
        assert len(children) >= 4, children  # 2 workers, the forkserver, the resource tracker
        proc.send_signal(signum)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 5
        while _alive(children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(children), f"left running after {signum!r}: {_alive(children)}"
    finally:
        proc.kill()
        for pid in _alive(children):  # what a failing run left: not for the next test to meet
            os.kill(pid, signal.SIGKILL)
    if signum == signal.SIGTERM:
        err = log.read_text()
        assert proc.returncode == 130 and err.strip().endswith("szdet: interrupted"), err
    records = list((out / "train").glob("*/*.json"))
    assert records and all("recording" in json.loads(p.read_text()) for p in records)
    assert not (out / "train" / "manifest.json").exists()
