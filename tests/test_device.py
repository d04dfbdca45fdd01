"""szdet/device.py's CPU policies: freed large blocks stay in the heap; threads fit the CPUs allowed."""

import subprocess
import sys

import pytest
import torch

from szdet import device
from szdet.device import cpu_quota_cores
from szdet.train.distributed import setup_distributed

PROBE = """
import sys, torch
from szdet.device import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
def rss_mb():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmRSS"))
    return int(line.split()[1]) / 1024
x = torch.ones(50_000_000)  # 200 MB, touched
held = rss_mb()
del x
print(kept, held - rss_mb())
"""


def _freed_mb(mode: str) -> tuple[bool, float]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", float(out[1])


def test_freed_blocks_stay_in_the_heap_only_when_asked():
    kept, given_back_mb = _freed_mb("default")
    assert not kept and given_back_mb > 150  # glibc unmaps the 200 MB block when it is freed
    kept, given_back_mb = _freed_mb("keep")
    assert kept and given_back_mb < 20  # kept for the next tensor: no page faults to map it again


@pytest.mark.parametrize(
    ("files", "cores"),
    [({"cpu.max": "max 100000\n"}, None), ({"cpu.max": "250000 100000\n"}, 2),
     ({"cpu.max": "20000 100000\n"}, 1),
     ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
     ({"cpu/cpu.cfs_quota_us": "400000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 4),
     ({}, None), ({"cpu.max": "garbled\n"}, None)],
)  # fmt: skip
def test_cpu_quota_cores_read_from_cgroup_v2_and_v1(tmp_path, files, cores):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cpu_quota_cores(tmp_path) == cores


def test_training_on_a_cpu_fits_torchs_threads_to_a_containers_quota(tmp_path, monkeypatch):
    (tmp_path / "cpu.max").write_text("100000 100000\n")  # one core's worth of time
    monkeypatch.setattr(device, "CGROUP_ROOT", tmp_path)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert setup_distributed("cpu").device.type == "cpu"
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(saved)
