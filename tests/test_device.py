"""szdet/device.py's CPU memory policy: freed large blocks stay in the heap for the next tensor."""

import subprocess
import sys

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
