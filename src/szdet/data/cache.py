"""Build and verify the preprocessed cache (layout and manifest format: szdet.data.manifest).

Building is resumable at any moment: each recording's array is written under a temporary name and
renamed into place (a rerun deletes the temporary files a killed run left), then its build record
(``<name>.json``: a BuildRecord) is written the same way. A rerun reuses every recording whose
record exists and whose EDF and annotations (sha256) are unchanged, and builds the rest; the
manifest is written last. A split folder remembers the settings it is built with (preprocess.json:
szdet.data.cache_settings) and refuses others.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from szdet.config import PreprocessConfig
from szdet.data import bids
from szdet.data.cache_settings import (
    PREPROCESS_FILE,
    CacheSettings,
    read_settings,
    write_settings,
)
from szdet.data.corpus import CorpusSplit, annotated_seizures, find_split
from szdet.data.edf import load_edf
from szdet.data.manifest import (
    MANIFEST,
    BuildRecord,
    CachedRecording,
    CacheSplit,
    make_manifest,
    read_build_record,
    shard_manifest_name,
    shard_manifests,
    write_build_record,
)
from szdet.data.montage import Montage
from szdet.data.pool import run_parallel
from szdet.data.tusz import RecordingFiles
from szdet.errors import UserError
from szdet.fileio import TMP_SUFFIX, atomic_path, sha256_file, write_json_atomic
from szdet.progress import progress

__all__ = [
    "BuildReport",
    "build_cache",
    "verify_cache",
    "verify_command",
]


@dataclass
class BuildReport:
    built: int  # arrays written by this run
    reused: int  # arrays complete from an earlier run
    skipped: list[dict[str, str]]  # {"file", "reason"}, this run's and earlier runs' alike
    manifest: Path


# --- building ---------------------------------------------------------------------------------


def build_cache(
    data_root: Path,
    split: str,
    out: Path,
    preprocess: PreprocessConfig,
    workers: int,
    shard: tuple[int, int] | None,
    max_recordings: int | None,
    montage: Montage = "referential",
    splits_file: Path | None = None,
) -> BuildReport:
    """Preprocess every recording of ``split`` (or every n-th: ``shard=(i, n)``) of a TUSZ corpus
    or a BIDS tree (its subjects split as ``splits_file`` says, else by hash: data.bids) into
    ``out``, converted to ``montage`` (data.montage)."""
    out = Path(out)
    corpus = find_split(Path(data_root), split, splits_file)
    selected = select_recordings(corpus, shard, max_recordings)
    if corpus.assignment:
        where = bids.record_assignment(out, corpus.assignment)
        print(f"bids {corpus.root}: {bids.describe_assignment(corpus.assignment)} -> {where}")
    split_dir = out / split
    split_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = split_dir / (MANIFEST if shard is None else shard_manifest_name(*shard))
    _remove_stale_tmp(split_dir, manifest_path.name, selected)
    claim_split_dir(split_dir, preprocess, montage)

    records, todo = _earlier_records(split_dir, corpus, selected, preprocess.fingerprint(montage))
    reused = sum(r.recording is not None for r in records)
    build = functools.partial(
        build_recording,
        split_dir=split_dir,
        root=corpus.root,
        preprocess=preprocess,
        montage=montage,
    )
    fresh = list(
        progress(run_parallel(build, todo, workers), f"cache {split}", len(todo), unit="rec")
    )
    records += fresh
    manifest, recordings = _write_manifest(manifest_path, split, preprocess, montage, records)

    report = BuildReport(
        built=sum(r.recording is not None for r in fresh),
        reused=reused,
        skipped=manifest["skipped"],
        manifest=manifest_path,
    )
    hours = sum(r.duration_s for r in recordings) / 3600
    print(
        f"cache {split}: {len(recordings)} recordings ({report.built} built, {reused} reused), "
        f"{len(report.skipped)} skipped, {hours:.2f} h, "
        f"{sum(r.bytes for r in recordings) / 1e9:.3f} GB -> {manifest_path}"
    )
    return report


def _earlier_records(
    split_dir: Path, corpus: CorpusSplit, selected: list[RecordingFiles], preprocess_hash: str
) -> tuple[list[BuildRecord], list[RecordingFiles]]:
    """The build records still current (and the skips of dangling links), and what to build."""
    records: list[BuildRecord] = []
    todo: list[RecordingFiles] = []
    for files in selected:
        if not files.edf.exists():  # a link to nothing: nothing to identify, hash or rebuild
            target = os.readlink(files.edf) if files.edf.is_symlink() else "?"
            source = files.edf.relative_to(corpus.root).as_posix()
            skipped = f"dangling symlink (to {target})"
            records.append(BuildRecord(source, {}, preprocess_hash, skipped=skipped))
        elif (record := reusable_record(split_dir, files, preprocess_hash)) is None:
            todo.append(files)
        else:
            records.append(record)
    return records, todo


def _write_manifest(
    path: Path,
    split: str,
    preprocess: PreprocessConfig,
    montage: Montage,
    records: list[BuildRecord],
) -> tuple[dict[str, Any], list[CachedRecording]]:
    """The manifest of these build records, written atomically, and its recordings."""
    recordings = [r.recording for r in records if r.recording is not None]
    skipped = [{"file": r.source, "reason": r.skipped} for r in records if r.skipped is not None]
    manifest = make_manifest(
        split=split,
        sample_rate_hz=preprocess.sample_rate_hz,
        settings=CacheSettings.of(preprocess, montage),
        recordings=recordings,
        skipped=skipped,
    )
    write_json_atomic(path, manifest)
    return manifest, recordings


def select_recordings(
    corpus: CorpusSplit, shard: tuple[int, int] | None, max_recordings: int | None
) -> list[RecordingFiles]:
    """The split's first ``max_recordings`` (sorted by path), then every n-th from i of a shard."""
    selected = corpus.recordings[:max_recordings]
    return selected if shard is None else selected[shard[0] :: shard[1]]


def _remove_stale_tmp(split_dir: Path, manifest_name: str, selected: list[RecordingFiles]) -> None:
    """Delete the temporary files a killed run left, only of what this run writes: other shards
    may be building into the same folder."""
    leftovers = [(split_dir, PREPROCESS_FILE), (split_dir, manifest_name)]
    for files in selected:
        folder = split_dir / files.patient
        leftovers += [(folder, f"{files.name}.npy"), (folder, f"{files.name}.json")]
    for folder, name in leftovers:
        for stale in folder.glob(f".{name}.*{TMP_SUFFIX}"):
            stale.unlink(missing_ok=True)


def claim_split_dir(split_dir: Path, preprocess: PreprocessConfig, montage: Montage) -> None:
    """Record the settings a split folder is built with; refuse a folder built with others."""
    path = split_dir / PREPROCESS_FILE
    # A pulled cache has a manifest but no preprocess.json: the manifest then speaks for it.
    existing = path if path.is_file() else split_dir / MANIFEST
    if existing.is_file():
        remedy = "use another --out, or delete this folder (a cache never mixes settings)"
        read_settings(existing, montage, preprocess, remedy)
    if existing != path:
        write_settings(split_dir, CacheSettings.of(preprocess, montage))


def _record_path(split_dir: Path, files: RecordingFiles) -> Path:
    return split_dir / files.patient / f"{files.name}.json"


def _source_identity(files: RecordingFiles) -> dict[str, int | str]:
    """What a build record is reused for: the EDF's size and the sha256 of the EDF and the
    annotations. (Not mtimes: a corpus copied to a fresh cloud machine has new ones and must not
    be rebuilt for them. Contents are hashed because an EDF re-exported or a corrected label or
    time often keeps the file's size; sha256_file streams, so an hour of EEG costs ~0.1 s.)"""
    identity: dict[str, int | str] = {files.edf.name: files.edf.stat().st_size}
    identity[f"{files.edf.name} sha256"] = sha256_file(files.edf)
    for path in files.annotations:
        if path is not None:
            identity[path.name] = sha256_file(path)
    return identity


def reusable_record(
    split_dir: Path, files: RecordingFiles, preprocess_hash: str
) -> BuildRecord | None:
    """The build record of an earlier run if it is complete and current (built with
    ``preprocess_hash``: PreprocessConfig.fingerprint), else None."""
    record = read_build_record(_record_path(split_dir, files))
    if record is None or record.preprocess_hash != preprocess_hash:
        return None
    if record.sources != _source_identity(files):
        return None
    if (built := record.recording) is not None:
        # Reused only if the array is intact: a rebuild repairs what `cache verify` flags.
        array = split_dir / built.file
        if not array.is_file() or array.stat().st_size != built.bytes:
            return None
        if sha256_file(array) != built.sha256:
            return None
    return record


def build_recording(
    files: RecordingFiles,
    split_dir: Path,
    root: Path,
    preprocess: PreprocessConfig,
    montage: Montage,
) -> BuildRecord:
    """Preprocess one recording into its array and build record; a bad input, or one that
    cannot feed ``montage``, becomes a skip with the reason."""
    source = files.edf.relative_to(root).as_posix()
    record = BuildRecord(source, _source_identity(files), preprocess.fingerprint(montage))
    try:
        annotated = annotated_seizures(files)  # cheap: a bad annotation skips before the EDF
        pre = load_edf(files.edf, preprocess, montage)
        events, clipped = annotated.events_for(pre.duration_s)
    except UserError as e:
        reason = str(e).replace(f"{root}/", "")  # paths relative to the corpus, as source is
        record = replace(record, skipped=reason.removeprefix(f"{source}: "))  # "file" names it
    else:
        notes = [*pre.notes, *clipped]
        file = f"{files.patient}/{files.name}.npy"
        nbytes, sha256 = write_array(split_dir / file, pre.signal)
        built = CachedRecording(
            name=files.name,
            patient=files.patient,
            session=files.session,
            setup=files.setup,
            n_samples=pre.signal.shape[1],
            duration_s=pre.duration_s,
            events=events,
            file=file,
            sha256=sha256,
            bytes=nbytes,
            interpolated=pre.interpolated,
            source_bytes=files.edf.stat().st_size,
            notes=notes,
            channel_seizures=annotated.channel_seizures_for(pre.duration_s),
        )
        record = replace(record, recording=built)
    write_build_record(_record_path(split_dir, files), record)  # after the array: marks it done
    return record


def write_array(path: Path, signal: np.ndarray) -> tuple[int, str]:
    """Save float16 ``signal`` as .npy atomically; return its size and sha256."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, signal.astype(np.float16))
        return tmp.stat().st_size, sha256_file(tmp)


# --- verifying --------------------------------------------------------------------------------


def _split_dirs(cache_root: Path) -> list[Path]:
    """Split folders under a cache root (or the root itself when it is a split folder)."""
    if (cache_root / MANIFEST).is_file() or shard_manifests(cache_root):
        return [cache_root]
    return sorted(
        d
        for d in cache_root.iterdir()
        if d.is_dir()
        and ((d / MANIFEST).is_file() or shard_manifests(d) or (d / PREPROCESS_FILE).is_file())
    )


def verify_cache(cache_root: Path, expect: dict[str, int]) -> tuple[bool, dict]:
    """Re-check every array's size and sha256 against its manifest, and the recording counts
    against ``expect``. Each problem is printed to stderr as one line naming the file."""
    cache_root = Path(cache_root)
    if not cache_root.is_dir():
        raise UserError(f"{cache_root}: no such cache folder")
    problems: list[str] = []
    splits: dict[str, CacheSplit] = {}
    for split_dir in _split_dirs(cache_root):
        try:
            split = CacheSplit.open(split_dir.parent, split_dir.name)
        except UserError as e:
            problems.append(str(e))
        else:
            splits[split_dir.name] = split
            if not split.recordings:  # nothing to train or score on: never a usable split
                problems.append(f"{split_dir}: its {MANIFEST} holds no recordings")
    if not splits and not problems:
        problems.append(f"{cache_root}: no cache split folders (holding {MANIFEST}) here")

    checks = [(split, r) for split in splits.values() for r in split.recordings]
    for split, record in progress(checks, "verify", len(checks), unit="rec"):
        if problem := _check_array(split.dir / record.file, record):
            problems.append(problem)
    for name, count in sorted(expect.items()):
        found = len(splits[name].recordings) if name in splits else 0
        if found != count:
            skipped = len(splits[name].skipped) if name in splits else 0
            extra = f" ({skipped} source files skipped, listed in its manifest)" if skipped else ""
            problems.append(f"{cache_root / name}: {found} recordings, expected {count}{extra}")

    for problem in problems:
        print(problem, file=sys.stderr)
    summary = {
        "ok": not problems,
        "splits": {name: _split_summary(split) for name, split in splits.items()},
    }
    return not problems, summary


def _check_array(path: Path, record: CachedRecording) -> str | None:
    if not path.is_file():
        return f"{path}: missing"
    if (size := path.stat().st_size) != record.bytes:
        return f"{path}: {size} bytes, the manifest says {record.bytes}"
    if sha256_file(path) != record.sha256:
        return f"{path}: sha256 differs from the manifest (contents changed since the build)"
    return None


def _split_summary(split: CacheSplit) -> dict[str, Any]:
    return {
        "recordings": len(split.recordings),
        "hours": round(sum(r.duration_s for r in split.recordings) / 3600, 4),
        "seizure_hours": round(sum(r.seizure_s for r in split.recordings) / 3600, 4),
        "bytes": sum(r.bytes for r in split.recordings),
        "skipped": [{"file": s["file"], "reason": s["reason"]} for s in split.skipped],
    }


def verify_command(cache_root: Path, expect: dict[str, int], as_json: bool) -> int:
    """`szdet cache verify`: the summary as JSON or a table on stdout; exit code 1 on a problem."""
    ok, summary = verify_cache(cache_root, expect)
    if as_json:
        print(json.dumps(summary))
        return 0 if ok else 1
    print(f"{'split':<8} {'recordings':>10} {'hours':>9} {'seizure h':>9} {'GB':>8} {'skipped':>7}")
    for name, s in summary["splits"].items():
        print(
            f"{name:<8} {s['recordings']:>10} {s['hours']:>9.2f} {s['seizure_hours']:>9.2f} "
            f"{s['bytes'] / 1e9:>8.3f} {len(s['skipped']):>7}"
        )
        for skip in s["skipped"]:
            print(f"  skipped {skip['file']}: {skip['reason']}")
    print("cache verify: ok" if ok else "cache verify: FAILED (see the lines above on stderr)")
    return 0 if ok else 1
