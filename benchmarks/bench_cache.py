"""Cache size, random window reads and preprocessing speed, each against a baseline in this run.

    .venv/bin/python benchmarks/bench_cache.py [--patients 5] [--minutes 20]

On one synthetic corpus (szdet synth), train split:
- bytes per EEG hour: our float16 continuous arrays vs the prototype's layout (float32 60 s
  windows at 10 s stride, np.savez_compressed, one file per recording); target >= 8x smaller;
- random windows read per second: WindowDataset on the memory maps vs the prototype, which
  decompresses a recording's whole file for every window; target >= 100x and >= 2,000 windows/s;
- preprocessing throughput in EEG hours per CPU-minute (one process, CPU time): load_edf vs the
  plain mne way (all channels, FFT resampling, FIR filters, float64); target >= 60.
Both read paths run on a warm page cache (files just written), so they compare work, not disks.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from szdet.config import CHANNELS_19, PreprocessConfig
from szdet.data.cache import build_cache
from szdet.data.edf import load_edf
from szdet.data.manifest import CacheSplit
from szdet.data.montage import take_inventory
from szdet.data.tusz import find_recordings
from szdet.data.windows import WindowDataset, WindowIndex, window_starts
from szdet.synth.corpus import write_corpus

LENGTH_S, STRIDE_S = 60.0, 10.0
PRE = PreprocessConfig()


def preprocessing_rate(edfs: list[Path]) -> tuple[float, float, float]:
    """(EEG hours per CPU-minute, hours, CPU seconds) of load_edf over ``edfs``."""
    load_edf(edfs[0], PRE)  # imports and one-time set-up are not throughput
    hours, start = 0.0, time.process_time()
    for edf in edfs:
        hours += load_edf(edf, PRE).duration_s / 3600
    cpu_s = time.process_time() - start
    return hours / (cpu_s / 60), hours, cpu_s


def plain_mne_rate(edfs: list[Path]) -> tuple[float, float, float]:
    """The same steps the obvious mne way: whole file in float64, FFT resampling, FIR filters."""
    import mne

    hours, start = 0.0, time.process_time()
    for edf in edfs:
        raw = mne.io.read_raw_edf(edf, preload=True, verbose="error")
        found = take_inventory(raw.ch_names).electrodes
        raw.pick([raw.ch_names[found[c]] for c in CHANNELS_19 if c in found])
        raw.resample(PRE.sample_rate_hz, verbose="error")
        raw.filter(PRE.bandpass_low_hz, PRE.bandpass_high_hz, verbose="error")
        raw.notch_filter(PRE.notch_hz, verbose="error")
        data = raw.get_data()
        median = np.median(data, axis=1, keepdims=True)
        q75, q25 = np.percentile(data, [75, 25], axis=1, keepdims=True)
        np.clip((data - median) / ((q75 - q25) / 1.349), -PRE.clip, PRE.clip).astype(np.float32)
        hours += raw.times[-1] / 3600
    cpu_s = time.process_time() - start
    return hours / (cpu_s / 60), hours, cpu_s


def write_prototype_layout(edfs: list[Path], out: Path) -> list[tuple[Path, int]]:
    """Each recording preprocessed to float32 and saved as (windows, 19, 15360) at 10 s stride
    in one compressed .npz, as the prototype did; returns (file, windows) per recording."""
    written = []
    for edf in edfs:
        signal = load_edf(edf, PRE).signal  # full float32 precision, as the prototype kept it
        length, stride = round(LENGTH_S * PRE.sample_rate_hz), round(STRIDE_S * PRE.sample_rate_hz)
        windows = np.zeros((0, len(CHANNELS_19), length), np.float32)
        for start in window_starts(signal.shape[1], length, stride):
            piece = signal[:, start : start + length]
            window = np.pad(piece, ((0, 0), (0, length - piece.shape[1])))[None]
            windows = np.concatenate([windows, window])
        path = out / f"{edf.stem}.npz"
        np.savez_compressed(path, x=windows)
        written.append((path, len(windows)))
    return written


def reads_per_second(read, count: int, n_windows: int, seed: int = 0) -> float:
    picks = np.random.default_rng(seed).integers(0, n_windows, count)
    start = time.perf_counter()
    for i in picks:
        read(int(i))
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=20.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_corpus(root / "corpus", patients=args.patients, minutes=args.minutes, seed=0)
        edfs = [r.edf for r in find_recordings(root / "corpus", "train")]

        ours_rate, hours, cpu_s = preprocessing_rate(edfs)
        mne_rate, mne_hours, mne_cpu_s = plain_mne_rate(edfs[:4])

        build_cache(root / "corpus", "train", root / "cache", PRE, 1, None, None)
        split = CacheSplit.open(root / "cache", "train")
        split_hours = sum(r.duration_s for r in split.recordings) / 3600
        cache_per_hour = sum(r.bytes for r in split.recordings) / split_hours
        (root / "prototype").mkdir()
        prototype = write_prototype_layout(edfs, root / "prototype")
        proto_per_hour = sum(path.stat().st_size for path, _ in prototype) / split_hours

        # Reads as a DataLoader worker does them: one thread per process.
        torch.set_num_threads(1)
        index = WindowIndex.build(split, LENGTH_S, STRIDE_S)
        dataset = WindowDataset(split, index)
        ours_reads = reads_per_second(lambda i: dataset[i], 5000, len(index))
        proto_windows = [(path, w) for path, count in prototype for w in range(count)]

        def prototype_read(i: int) -> np.ndarray:
            path, window = proto_windows[i]
            with np.load(path) as npz:  # the whole array is decompressed for one window
                return torch.from_numpy(npz["x"][window])

        proto_reads = reads_per_second(prototype_read, 30, len(proto_windows))

    print(f"corpus: {len(edfs)} train recordings, {hours:.2f} EEG h (synthetic, seed 0)")
    print(
        f"cache bytes per EEG hour: {cache_per_hour / 1e6:.1f} MB vs prototype npz "
        f"{proto_per_hour / 1e6:.1f} MB -> {proto_per_hour / cache_per_hour:.1f}x smaller "
        "(target >= 8x, <= 40 MB/h)"
    )
    print(
        f"random window reads: {ours_reads:,.0f} windows/s vs prototype {proto_reads:,.1f} "
        f"windows/s -> {ours_reads / proto_reads:,.0f}x (target >= 100x and >= 2,000 windows/s)"
    )
    print(
        f"preprocessing: {ours_rate:.1f} EEG h per CPU-minute ({hours:.2f} h in {cpu_s:.2f} CPU s) "
        f"vs plain mne {mne_rate:.1f} ({mne_hours:.2f} h in {mne_cpu_s:.2f} CPU s) -> "
        f"{ours_rate / mne_rate:.1f}x (target >= 60 h per CPU-minute)"
    )


if __name__ == "__main__":
    main()
