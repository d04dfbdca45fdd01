"""Stage 5: the training DataLoader's windows/s, over a cache written here with numpy.

The cache has the format szdet/data/manifest.py owns (float16 arrays, a manifest with the
config's preprocessing hash), filled with noise and a few seizures per recording so the balanced
sampler draws every kind of window; nothing reads an EDF, so mne is not needed. The loader is
the trainer's own (train/data.py), after the shared-memory check training makes
(train/preflight.py). The arrays were just written, so they sit in the page cache: the figure is
the loader's CPU work (slicing, collation, pinning), not the disk.
"""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from szdet.config import Config
from szdet.data.cache_settings import CacheSettings
from szdet.data.manifest import MANIFEST, CachedRecording, make_manifest
from szdet.fileio import sha256_file, write_json_atomic
from szdet.train import preflight
from szdet.train.data import TrainData
from szdet.train.distributed import DistInfo


def write_noise_cache(root: Path, cfg: Config, recordings: int, minutes: float) -> None:
    """A train split of ``recordings`` noise recordings, two seizures each, under ``root``."""
    rng = np.random.default_rng(0)
    rate = cfg.preprocess.sample_rate_hz
    n = round(minutes * 60 * rate)
    channels = cfg.model.in_channels
    split = cfg.data.train_split
    cached = []
    for i in range(recordings):
        patient, name = f"p{i % 8:03d}", f"p{i % 8:03d}_s001_t{i:03d}"
        path = root / split / patient / f"{name}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, rng.standard_normal((channels, n), dtype=np.float32).astype(np.float16))
        starts = np.sort(rng.uniform(0, minutes * 60 - 120, size=2))
        events = [(float(s), float(s + rng.uniform(20, 120))) for s in starts]
        cached.append(
            CachedRecording(
                name=name,
                patient=patient,
                session="s001_2024",
                setup="01_tcp_ar",
                n_samples=n,
                duration_s=n / rate,
                events=events,
                file=f"{patient}/{name}.npy",
                sha256=sha256_file(path),
                bytes=path.stat().st_size,
                interpolated=[],
                source_bytes=0,
            )
        )
    manifest = make_manifest(
        split=split,
        sample_rate_hz=rate,
        settings=CacheSettings.of(cfg.preprocess, cfg.data.montage),
        recordings=cached,
        skipped=[],
    )
    write_json_atomic(root / split / MANIFEST, manifest)


def loader_throughput(
    cfg: Config, device: torch.device, workers: int, recordings: int, minutes: float, batches: int
) -> dict[str, Any]:
    """Windows/s of the training loader with ``workers`` workers, after its first batch."""
    with tempfile.TemporaryDirectory(prefix="szdet-loader-") as tmp:
        start = time.perf_counter()
        write_noise_cache(Path(tmp), cfg, recordings, minutes)
        written_s = time.perf_counter() - start
        cfg = cfg.model_copy(deep=True)
        cfg.paths.cache_dir = Path(tmp)
        cfg.train.num_workers = workers
        cfg.data.max_recordings = None
        preflight.check_shared_memory(cfg)
        data = TrainData.build(cfg, DistInfo(0, 1, 0, device), device)
        batches = min(batches, data.steps_per_epoch - 1)
        start = time.perf_counter()
        iterator = iter(data.loader)
        next(iterator)
        first_batch_s = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        seconds = time.perf_counter() - start
        del iterator, data  # the (persistent) workers stop before their folder goes
        gc.collect()
    return {
        "workers": workers,
        "batch": cfg.train.batch_size,
        "pin_memory": device.type == "cuda",
        "recordings": recordings,
        "eeg_hours": round(recordings * minutes / 60, 2),
        "cache_written_s": round(written_s, 2),
        "first_batch_s": round(first_batch_s, 3),
        "batches_timed": batches,
        "windows_per_s": batches * cfg.train.batch_size / seconds,
        "shared_memory_needed_gb": preflight.shared_memory_needed(cfg) / 1e9,
    }
