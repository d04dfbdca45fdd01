"""The cache's on-disk format: one float16 array per recording and a manifest.json per split.

::

    <cache_root>/<split>/manifest.json                 # what CacheSplit.open reads
    <cache_root>/<split>/manifest.shard-I-of-N.json    # one per shard, merged into manifest.json
    <cache_root>/<split>/preprocess.json               # CacheSettings (szdet.data.cache_settings)
    <cache_root>/<split>/<patient>/<name>.npy          # float16 (channels, n_samples), mmap-able
    <cache_root>/<split>/<patient>/<name>.json         # BuildRecord, written after the array

A manifest holds the CacheSettings (the format and its version, the montage, the preprocessing
settings and their hash), the montage's channels, the sample rate, every CachedRecording and the
skipped source files with their reasons. Its content is a pure function of the corpus and the
settings (no dates, no worker counts), so a sharded build merges into exactly the manifest a
single build writes.
"""

from __future__ import annotations

import json
import os
import re
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from szdet.config import Config, PreprocessConfig
from szdet.data.cache_settings import CacheSettings, checked_settings
from szdet.data.montage import Montage, montage_channels
from szdet.errors import ResourceError, UserError, resource_shortage
from szdet.fileio import write_json_atomic

DTYPE = "float16"
MANIFEST = "manifest.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHARD_MANIFEST = re.compile(r"^manifest\.shard-(\d+)-of-(\d+)\.json$")
# Memory maps a process keeps open, the least recently read closed first. Each holds a file
# descriptor and every DataLoader worker maps its own, so one per recording would pass a
# container's `ulimit -n 1024` on the full train split (4,667 recordings); reopening an evicted
# one costs only its .npy header.
MAX_OPEN_ARRAYS = 32


def shard_manifest_name(index: int, count: int) -> str:
    return f"manifest.shard-{index}-of-{count}.json"


@dataclass(frozen=True)
class CachedRecording:
    name: str  # aaaaaaac_s001_t000
    patient: str
    session: str  # s001_2002
    setup: str  # 01_tcp_ar: RecordingFiles.setup
    n_samples: int
    duration_s: float
    events: list[tuple[float, float]]  # seizure intervals in seconds, clipped to the recording
    file: str  # cache array path relative to the split folder
    sha256: str
    bytes: int
    interpolated: list[str]
    source_bytes: int
    notes: list[str] = field(default_factory=list)  # e.g. an annotation clipped at the end
    # (channel, start_s, stop_s) per-channel seizure rows (a TUSZ .csv), clipped; [] without
    channel_seizures: list[tuple[str, float, float]] = field(default_factory=list)

    @property
    def seizure_s(self) -> float:
        return sum(stop - start for start, stop in self.events)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["events"] = [[start, stop] for start, stop in self.events]
        out["channel_seizures"] = [[c, a, b] for c, a, b in self.channel_seizures]
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> CachedRecording:
        rows = [(str(c), float(a), float(b)) for c, a, b in obj.get("channel_seizures", [])]
        events = [(float(a), float(b)) for a, b in obj["events"]]
        return cls(**{**obj, "events": events, "channel_seizures": rows})


@dataclass(frozen=True)
class BuildRecord:
    """What the build keeps of one source EDF: written beside its array once that is complete,
    the rerun's proof that it need not be built again (szdet.data.cache)."""

    source: str  # the EDF, relative to the corpus root
    sources: dict[str, int | str]  # the EDF's size and sha256, each annotation file's sha256
    preprocess_hash: str  # CacheSettings.preprocess_hash
    recording: CachedRecording | None = None  # built, or
    skipped: str | None = None  # the one-line reason it was not

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source,
            "sources": self.sources,
            "preprocess_hash": self.preprocess_hash,
        }
        if self.recording is not None:
            out["recording"] = self.recording.to_json()
        if self.skipped is not None:
            out["skipped"] = self.skipped
        return out


def read_build_record(path: Path) -> BuildRecord | None:
    """An earlier run's build record; None where it is missing, unreadable or malformed (a killed
    run, an older szdet): the recording is then built again."""
    try:
        obj = json.loads(path.read_text())
        recording = obj.get("recording")
        return BuildRecord(
            source=obj["source"],
            sources=obj["sources"],
            preprocess_hash=obj["preprocess_hash"],
            recording=None if recording is None else CachedRecording.from_json(recording),
            skipped=obj.get("skipped"),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # ValueError: bad JSON too
        return None


def write_build_record(path: Path, record: BuildRecord) -> None:
    write_json_atomic(path, record.to_json())


def make_manifest(
    split: str,
    sample_rate_hz: float,
    settings: CacheSettings,
    recordings: list[CachedRecording],
    skipped: list[dict[str, str]],
) -> dict[str, Any]:
    """The manifest document; recordings and skipped files sorted, so the order is canonical."""
    return {
        **settings.to_json(),
        "split": split,
        "channels": list(montage_channels(settings.montage)),
        "sample_rate_hz": sample_rate_hz,
        "dtype": DTYPE,
        "recordings": [r.to_json() for r in sorted(recordings, key=lambda r: r.file)],
        "skipped": sorted(skipped, key=lambda s: s["file"]),
    }


def read_manifest(path: Path) -> dict[str, Any]:
    """A manifest (or shard manifest) checked for format and version; UserError names the file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such manifest") from None
    return parse_manifest(raw, str(path))


def parse_manifest(raw: bytes, source: str) -> dict[str, Any]:
    """A manifest's JSON checked for format and version; ``source`` (a file, an S3 URL) names it
    in the error."""
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{source}: not a valid manifest ({e})") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{source}: not a valid manifest (expected a JSON object)")
    checked_settings(source, manifest)
    return manifest


def array_entries(manifest: dict[str, Any], source: str) -> list[tuple[str, str, int]]:
    """(file, sha256, bytes) of every array a manifest lists. A manifest may come from a bucket,
    so it is untrusted: every path must stay inside its split folder."""
    recordings = manifest.get("recordings")
    if not isinstance(recordings, list):
        raise UserError(f"{source}: not a cache manifest (no 'recordings' list)")
    entries = []
    for i, rec in enumerate(recordings):
        try:
            file, sha, size = rec["file"], rec["sha256"], rec["bytes"]
        except (KeyError, TypeError):
            raise UserError(f"{source}: recordings[{i}] lacks file, sha256 or bytes") from None
        path = PurePosixPath(str(file))
        if path.is_absolute() or ".." in path.parts or "\\" in str(file) or not path.parts:
            raise UserError(f"{source}: recordings[{i}].file {file!r} leaves the split folder")
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise UserError(f"{source}: recordings[{i}].sha256 is not a sha256 hex digest")
        if not isinstance(size, int) or size < 0:
            raise UserError(f"{source}: recordings[{i}].bytes is not a byte count")
        entries.append((str(path), sha, size))
    return entries


def manifest_recordings(manifest: dict[str, Any], path: Path) -> list[CachedRecording]:
    array_entries(manifest, str(path))
    try:
        return [CachedRecording.from_json(r) for r in manifest["recordings"]]
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: malformed recording entry ({e!r})") from None


def shard_manifests(split_dir: Path) -> dict[tuple[int, int], Path]:
    """{(index, count): path} of the shard manifests in a split folder."""
    found = {}
    if split_dir.is_dir():
        for path in split_dir.iterdir():
            if m := _SHARD_MANIFEST.match(path.name):
                found[int(m.group(1)), int(m.group(2))] = path
    return found


def merge_shards(cache_root: Path, split: str) -> None:
    """Combine manifest.shard-I-of-N.json (all N of them, one preprocess hash) into manifest.json."""
    split_dir = Path(cache_root) / split
    shards = shard_manifests(split_dir)
    if not shards:
        raise UserError(f"{split_dir}: no shard manifests (manifest.shard-I-of-N.json) to merge")
    counts = sorted({count for _, count in shards})
    if len(counts) > 1:
        raise UserError(f"{split_dir}: shard manifests of different shard counts {counts}")
    count = counts[0]
    if missing := [i for i in range(count) if (i, count) not in shards]:
        names = ", ".join(shard_manifest_name(i, count) for i in missing)
        raise UserError(f"{split_dir}: cannot merge, missing {names}")

    manifests = [read_manifest(shards[i, count]) for i in range(count)]
    first = manifests[0]
    for i, other in enumerate(manifests[1:], start=1):
        for key in ("split", "montage", "sample_rate_hz", "preprocess_hash"):
            if other.get(key) != first.get(key):
                raise UserError(
                    f"{shards[i, count]}: {key} {other.get(key)!r} differs from "
                    f"{first.get(key)!r} in {shards[0, count].name}; shards must match to merge"
                )
    recordings = [
        r for i, m in enumerate(manifests) for r in manifest_recordings(m, shards[i, count])
    ]
    merged = make_manifest(
        split=first["split"],
        sample_rate_hz=first["sample_rate_hz"],
        settings=checked_settings(shards[0, count], first),
        recordings=recordings,
        skipped=[s for m in manifests for s in m["skipped"]],
    )
    write_json_atomic(split_dir / MANIFEST, merged)
    print(f"merged {count} shards: {len(recordings)} recordings -> {split_dir / MANIFEST}")


class CacheSplit:
    """One built split: its manifest, and its arrays opened as memory maps on first use (the
    MAX_OPEN_ARRAYS most recently read kept open)."""

    def __init__(
        self,
        split_dir: Path,
        manifest: dict[str, Any],
        settings: CacheSettings,
        recordings: list[CachedRecording],
    ):
        self.dir = split_dir
        self.split: str = manifest["split"]
        self.montage = settings.montage
        self.channels: list[str] = manifest.get("channels", list(montage_channels(self.montage)))
        self.sample_rate_hz = float(manifest["sample_rate_hz"])
        self.preprocess_hash = settings.preprocess_hash
        self.preprocess = settings.preprocess
        self.recordings = recordings
        self.skipped: list[dict[str, str]] = manifest.get("skipped", [])
        self._arrays: OrderedDict[int, np.ndarray] = OrderedDict()  # least recently read first
        self._pid = os.getpid()

    @classmethod
    def open(
        cls,
        cache_root: Path,
        split: str,
        max_recordings: int | None = None,
        preprocess: PreprocessConfig | None = None,
        montage: Montage | None = None,
    ) -> CacheSplit:
        """Open a built split; refuse a cache of another ``montage`` or built with other
        ``preprocess`` settings, each where given (a model must see data preprocessed exactly as
        in training)."""
        split_dir = Path(cache_root) / split
        path = split_dir / MANIFEST
        if not path.is_file():
            if shards := shard_manifests(split_dir):
                raise UserError(
                    f"{split_dir}: incomplete cache, {len(shards)} shard manifest(s) not merged "
                    f"(run: szdet cache merge {cache_root} --split {split})"
                )
            raise UserError(f"{split_dir}: no cache here (no {MANIFEST}; run szdet cache build)")
        manifest = read_manifest(path)
        remedy = "build a cache with this config (szdet cache build)"
        settings = checked_settings(path, manifest, montage, preprocess, remedy)
        recordings = manifest_recordings(manifest, path)
        return cls(split_dir, manifest, settings, recordings[:max_recordings])

    @classmethod
    def of_config(cls, cfg: Config, split: str) -> CacheSplit:
        """The split a training with ``cfg`` reads: from paths.cache_dir, its first
        data.max_recordings, refused if built with other preprocessing or another montage."""
        return cls.open(
            cfg.paths.cache_dir, split, cfg.data.max_recordings, cfg.preprocess, cfg.data.montage
        )

    def signal(self, i: int) -> np.ndarray:
        """Recording ``i`` as a read-only float16 (channels, n_samples) memory map."""
        if self._pid != os.getpid():  # a forked worker maps the files afresh
            self._arrays, self._pid = OrderedDict(), os.getpid()
        array = self._arrays.get(i)
        if array is None:
            array = self._open(i)
            if len(self._arrays) == MAX_OPEN_ARRAYS:
                # Dropping the last reference unmaps it and closes its descriptor; a caller still
                # holding the array (or a view of it) keeps that one open until it lets go.
                self._arrays.popitem(last=False)
            self._arrays[i] = array
        else:
            self._arrays.move_to_end(i)
        return array

    def _open(self, i: int) -> np.ndarray:
        record = self.recordings[i]
        path = self.dir / record.file
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            if isinstance(e, OSError) and (shortage := resource_shortage(e)):
                # Not this file's fault; and unlike an OSError's errno, the type survives torch's
                # re-raise of a DataLoader worker's exception, so the exit code stays 70.
                raise ResourceError(f"{path}: {shortage}") from None
            raise UserError(f"{path}: cannot open cache array ({e})") from None
        expected = (len(self.channels), record.n_samples)
        if array.shape != expected or array.dtype != np.float16:
            raise UserError(
                f"{path}: array {array.dtype}{array.shape} does not match the manifest "
                f"(float16{expected})"
            )
        return array

    def __len__(self) -> int:
        return len(self.recordings)

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers started by spawn get a pickled copy: never pickle the mapped data.
        return {**self.__dict__, "_arrays": OrderedDict()}
