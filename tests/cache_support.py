"""Cache splits written directly in the real format (szdet.data.manifest), without EDF files."""

from pathlib import Path

import numpy as np

from szdet.config import PreprocessConfig
from szdet.data.cache import write_array
from szdet.data.cache_settings import CacheSettings
from szdet.data.manifest import CachedRecording, make_manifest
from szdet.fileio import write_json_atomic

RATE_HZ = 256.0


def write_split(
    root: Path, split: str, recordings: list[tuple[float, list[tuple[float, float]]]]
) -> Path:
    """``root/split`` with one random array per (duration_s, events), as the default preprocess
    settings would have built it; returns the split folder."""
    rng = np.random.default_rng(0)
    records = []
    for i, (duration_s, events) in enumerate(recordings):
        n = round(duration_s * RATE_HZ)
        file = f"p{i:03d}/p{i:03d}_s001_t000.npy"
        nbytes, sha = write_array(
            root / split / file, rng.standard_normal((19, n)).astype(np.float32)
        )
        records.append(
            CachedRecording(
                name=f"p{i:03d}_s001_t000", patient=f"p{i:03d}", session="s001_2010",
                setup="01_tcp_ar", n_samples=n, duration_s=n / RATE_HZ, events=events,
                file=file, sha256=sha, bytes=nbytes, interpolated=[], source_bytes=0,
            )
        )  # fmt: skip
    settings = CacheSettings.of(PreprocessConfig(), "referential")
    manifest = make_manifest(split, RATE_HZ, settings, records, [])
    write_json_atomic(root / split / "manifest.json", manifest)
    return root / split
