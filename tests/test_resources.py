"""No resource grows with the corpus: open files stay bounded however many recordings a split
has, and running out of one is a crash launchers retry (exit 70), not bad input (exit 1)."""

import errno
import os
import resource

import numpy as np
from torch.utils.data import DataLoader

from cache_support import write_split
from szdet.cli import main
from szdet.data.manifest import MAX_OPEN_ARRAYS, CacheSplit
from szdet.data.windows import WindowDataset, WindowIndex
from szdet.errors import ResourceError, UserError, exit_code_for, original_message


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
    import szdet.data.synth

    def out_of_files(out, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files", str(out))

    monkeypatch.setattr(szdet.data.synth, "write_corpus", out_of_files)
    assert main(["synth", str(tmp_path)]) == 70
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert capsys.readouterr().err.strip().splitlines() == [
        f"szdet: error: {tmp_path}: too many open files (ulimit -n {nofile}) "
        "(a resource limit, not bad input: exit 70)"
    ]
