"""`szdet detect` on long recordings: peak memory and speed, from /usr/bin/time -v around the real
command. (a) The smoke-size model on EDFs of 24 and 72 hours: the growth of peak RSS between them
is what a longer recording costs (goal: at most ~200 MB; the whole-file reader of before grew
~0.37 GB per EEG-hour). (b) The cloud-size model on a shorter EDF spanning several chunks
(evaluate.chunk_s): its peak, which no length changes (goal: at most 2 GB).

    .venv/bin/python benchmarks/bench_detect_memory.py [--hours 24 72] [--cloud-minutes 15]

The long EDFs repeat the data records of one synthetic recording (`szdet synth`), written to a
temporary folder and deleted after; the detectors hold random weights (seed 0), the same compute
as trained ones. EEG-hours per CPU-hour = EEG-hours / ((user + system CPU s) / 3600).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from szdet.config_load import load_config
from szdet.data.edf_header import read_header
from szdet.models import build_model
from szdet.state.bundle import write_bundle
from szdet.synth.corpus import write_corpus

ROOT = Path(__file__).resolve().parent.parent
HEADER_RECORDS = slice(236, 244)  # the EDF header's "number of data records" field


def longest_synthetic_edf(folder: Path) -> Path:
    write_corpus(folder, patients=3, minutes=30, seed=0)
    return max(folder.rglob("*.edf"), key=lambda p: p.stat().st_size)


def repeated_edf(source: Path, hours: float, out: Path) -> Path:
    """``source``'s data records over and over until ``hours`` of EEG, copied in bounded memory."""
    header = read_header(source)
    records = round(hours * 3600 / header.record_duration_s)
    raw = source.read_bytes()
    data = raw[header.header_bytes :]
    record_bytes = len(data) // header.n_records
    head = bytearray(raw[: header.header_bytes])
    head[HEADER_RECORDS] = f"{records:<8d}".encode("ascii")
    with open(out, "wb") as f:
        f.write(head)
        for start in range(0, records, header.n_records):
            f.write(data[: min(header.n_records, records - start) * record_bytes])
    return out


def random_detector(config: Path, out: Path) -> Path:
    """A detector bundle of ``config``'s model with random weights (run at --threshold)."""
    cfg = load_config(config)
    torch.manual_seed(0)
    state = build_model(cfg.model).state_dict()
    write_bundle(out, cfg, state, {}, {"note": "random weights: bench_detect_memory.py"})
    return out


def timed_detect(edf: Path, detector: Path, out: Path, threads: int) -> dict[str, float]:
    """Peak RSS (GB), CPU seconds and wall seconds of one `szdet detect` run."""
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "szdet.cli", "detect", str(edf)]
    command += ["--checkpoint", str(detector), "--out", str(out), "--threshold", "0.5"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"szdet detect failed:\n{proc.stderr[-3000:]}")

    def field(name: str) -> float:
        found = re.search(rf"{re.escape(name)}: ([\d.:]+)", proc.stderr)
        if found is None:
            sys.exit(f"/usr/bin/time printed no {name!r}")
        return float(found.group(1))

    cpu_s = field("User time (seconds)") + field("System time (seconds)")
    return {
        "peak_gb": field("Maximum resident set size (kbytes)") / 1024**2,
        "cpu_s": cpu_s,
        "system_s": field("System time (seconds)"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, nargs=2, default=[24.0, 72.0])
    parser.add_argument("--cloud-minutes", type=float, default=15.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not Path("/usr/bin/time").is_file():
        sys.exit("needs GNU time at /usr/bin/time (apt install time)")

    folder = Path(tempfile.mkdtemp(prefix="szdet-bench-detect-"))
    try:
        source = longest_synthetic_edf(folder / "corpus")
        runs = [("local/smoke", hours) for hours in args.hours]
        runs.append(("cloud/train", args.cloud_minutes / 60))
        detectors: dict[str, Path] = {}
        print(f"{'model':12} {'EEG h':>6} {'peak RSS GB':>12} {'CPU s':>8} {'of it system':>12} "
              f"{'EEG-h/CPU-h':>12}", flush=True)  # fmt: skip
        peaks = {}
        for name, hours in runs:
            if name not in detectors:
                config = ROOT / "configs" / f"{name}.yaml"
                detectors[name] = random_detector(config, folder / f"{name.replace('/', '-')}.pt")
            edf = repeated_edf(source, hours, folder / f"{hours:g}h.edf")
            result = timed_detect(edf, detectors[name], folder / "events", args.threads)
            edf.unlink()
            peaks[(name, hours)] = result["peak_gb"]
            rate = hours / (result["cpu_s"] / 3600)
            print(f"{name:12} {hours:6.2f} {result['peak_gb']:12.2f} {result['cpu_s']:8.0f} "
                  f"{result['system_s']:12.0f} {rate:12.1f}", flush=True)  # fmt: skip
        short, long = (peaks[("local/smoke", hours)] for hours in args.hours)
        print(f"peak RSS growth {args.hours[0]:g} h -> {args.hours[1]:g} h: "
              f"{(long - short) * 1024:+.0f} MB (goal <= ~200 MB)")  # fmt: skip
        print(f"cloud-size peak: {peaks[('cloud/train', args.cloud_minutes / 60)]:.2f} GB "
              "(goal <= 2 GB)")  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
