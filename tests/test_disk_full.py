"""A full disk: every write names its file in one line (exit 70, as other machine limits), and
leaves what was already written intact, with no temporary file behind."""

import contextlib
import errno
import os

import numpy as np
import pytest
import torch

import szdet.fileio
from szdet.cli import main
from szdet.data.cache import write_array
from szdet.errors import exit_code_for, resource_shortage
from szdet.fileio import full_disk_errno, write_text_atomic
from szdet.state import checkpoint as ckpt_mod
from szdet.state.checkpoint import read_checkpoint, save_checkpoint
from szdet.state.run_dir import MetricsLog
from test_checkpoint import training_state


def _full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _free_on(path) -> str:
    """The message's "(N bytes free on MOUNT)" part: free space changes under a running test."""
    mount = os.path.realpath(path)
    while not os.path.ismount(mount):
        mount = os.path.dirname(mount)
    return f"bytes free on {mount})"


def test_a_full_disk_in_the_atomic_writer_names_the_file_and_keeps_the_old_one(
    tmp_path, monkeypatch, capsys
):
    target = tmp_path / "old" / "old.txt"
    write_text_atomic(target, "complete\n")
    monkeypatch.setattr(szdet.fileio.os, "fsync", _full)  # the low-level write of every file
    with pytest.raises(OSError) as raised:
        write_text_atomic(target, "new contents")
    assert raised.value.filename == str(target)
    assert target.read_text() == "complete\n"
    assert [p.name for p in target.parent.iterdir()] == ["old.txt"]  # no temporary file
    assert resource_shortage(raised.value).startswith("no space left on device (")
    assert exit_code_for(raised.value) == 70

    assert main(["synth", str(tmp_path / "corpus"), "--patients", "3", "--minutes", "1"]) == 70
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("szdet:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"szdet: error: {tmp_path / 'corpus'}/")
    assert ": no space left on device (" in lines[0] and _free_on(tmp_path) in lines[0]
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_numpys_short_write_and_a_full_checkpoint_name_their_files(tmp_path, monkeypatch):
    def short_write(f, array):  # numpy's tofile reports a full disk without an errno
        f.write(b"\x93NUMPY")
        raise OSError("1045760 requested and 131008 written")

    monkeypatch.setattr(np, "save", short_write)
    array = tmp_path / "p000" / "rec.npy"
    with pytest.raises(OSError) as raised:
        write_array(array, np.zeros((2, 8), dtype=np.float32))
    assert (raised.value.errno, raised.value.filename) == (errno.ENOSPC, str(array))
    assert list(array.parent.iterdir()) == []

    first = save_checkpoint(training_state(1), tmp_path, keep_last=1)
    before = first.read_bytes()
    real_save = torch.save

    def full_half_way(obj, f):  # as torch.save into a full file (the last test shows it)
        real_save(obj, f)
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")  # noqa: B904

    monkeypatch.setattr(ckpt_mod.torch, "save", full_half_way)
    with pytest.raises(OSError) as raised:
        save_checkpoint(training_state(2), tmp_path, keep_last=1)
    assert raised.value.filename == str(tmp_path / "step-000000002.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p000", first.name]
    assert first.read_bytes() == before and read_checkpoint(first)["step"] == 1


def test_a_full_disk_under_the_metrics_log_names_it(tmp_path, monkeypatch):
    metrics = MetricsLog(tmp_path / "metrics.jsonl", keep_rows=0)
    monkeypatch.setattr(metrics._file, "flush", _full)
    with pytest.raises(OSError) as raised:
        metrics.append({"kind": "step", "step": 1})
    assert raised.value.filename == str(tmp_path / "metrics.jsonl")
    monkeypatch.setattr(os, "fsync", _full)
    with pytest.raises(OSError) as raised:
        metrics.sync()
    assert raised.value.filename == str(tmp_path / "metrics.jsonl")


def test_torch_save_into_a_full_file_is_recognised_as_a_full_disk():
    """What the checkpoint case above simulates: torch.save(obj, path) reports a full disk as a
    bare RuntimeError ("unexpected pos ..."); through an open file, the file's ENOSPC is the
    error raised or the context of torch's RuntimeError (with a buffered file)."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs Linux's /dev/full")
    for buffering in (0, -1):
        f = open("/dev/full", "wb", buffering=buffering)  # noqa: SIM115
        with pytest.raises(Exception) as raised:
            torch.save({"w": torch.zeros(100_000)}, f)
        with contextlib.suppress(OSError):
            f.close()
        assert full_disk_errno(raised.value) == errno.ENOSPC
