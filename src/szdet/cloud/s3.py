"""Move a cache root between this machine and S3 (or any S3-compatible store), verified.

Both sides hold the cache's own layout: ``<root>/<split>/manifest.json`` and the array files that
manifest lists (relative to the split folder), each with its sha256 and size. A transfer is

- parallel: a thread pool over files, each large file itself multipart / ranged (TransferConfig);
- resumable: a file already complete at the destination (right size and sha256) is skipped;
- verified: an upload carries its sha256 in the object's metadata; a download is hashed under a
  temporary name and renamed into place only when it matches the manifest;
- ordered: manifests move last, so a reader never sees a manifest whose files are missing.

Credentials come from boto3's standard chain (environment, profile, instance or task role);
missing credentials, a wrong bucket or a prefix without a cache fail before any file moves.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from szdet.data.manifest import MANIFEST, array_entries, parse_manifest
from szdet.errors import UserError
from szdet.fileio import atomic_path, remove_stale_tmp, sha256_file, write_bytes_atomic
from szdet.progress import byte_bar

log = logging.getLogger(__name__)
# boto's INFO lines ("Found credentials in environment variables") are noise between our own lines.
for _name in ("boto3", "botocore", "s3transfer"):
    logging.getLogger(_name).setLevel(logging.WARNING)

SHA_METADATA_KEY = "sha256"  # stored as x-amz-meta-sha256 on every object we upload
MULTIPART_CHUNK_BYTES = 64 << 20  # files above this move in parts of this size
PARTS_IN_FLIGHT_PER_FILE = 4
RETRY_ATTEMPTS = 10  # botocore "standard" retries: throttling, 5xx, dropped connections


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or "a/b", never with a leading or trailing slash

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def url(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"


@dataclass(frozen=True)
class CacheFile:
    split: str
    file: str  # relative to the split folder, POSIX separators
    sha256: str
    bytes: int

    @property
    def rel(self) -> str:
        return f"{self.split}/{self.file}"


@dataclass
class TransferReport:
    transferred_files: int = 0
    transferred_bytes: int = 0
    skipped_files: int = 0


def parse_s3_url(url: str) -> S3Location:
    if not url.startswith("s3://"):
        raise UserError(f"{url}: expected an s3://bucket/prefix URL")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise UserError(f"{url}: the URL names no bucket")
    return S3Location(bucket, prefix.strip("/"))


def _parse_manifest(raw: bytes, split: str, source: str) -> list[CacheFile]:
    manifest = parse_manifest(raw, source)
    return [CacheFile(split, *entry) for entry in array_entries(manifest, source)]


def _error_code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _user_error(e: Exception, what: str) -> UserError:
    """One line naming the object and what went wrong, for the errors a user can fix."""
    if isinstance(e, NoCredentialsError):
        return UserError(f"{what}: no AWS credentials found")
    if isinstance(e, ClientError):
        code = _error_code(e)
        if code == "NoSuchBucket":
            return UserError(f"{what}: no such bucket")
        if code in ("403", "AccessDenied", "AllAccessDisabled"):
            return UserError(f"{what}: access denied (check the credentials' permissions)")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"):
            return UserError(f"{what}: credentials rejected ({code})")
        return UserError(f"{what}: S3 error {code or e}")
    return UserError(f"{what}: {e}")


class Bucket:
    """One bucket and prefix, reached through a thread-safe boto3 client with retries."""

    def __init__(self, location: S3Location, endpoint_url: str | None, workers: int) -> None:
        if workers < 1:
            raise UserError(f"--workers must be at least 1, got {workers}")
        self.location = location
        session = boto3.session.Session()
        if session.get_credentials() is None:
            raise UserError(
                f"{location.url()}: no AWS credentials found (set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run with an instance/task role)"
            )
        config = BotoConfig(
            retries={"max_attempts": RETRY_ATTEMPTS, "mode": "standard"},
            max_pool_connections=workers * PARTS_IN_FLIGHT_PER_FILE + 4,
            # Our sha256 is the integrity check; S3-compatible stores differ in the newer
            # checksum headers, so send them only where an operation requires them.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self.client = session.client("s3", endpoint_url=endpoint_url, config=config)
        self.transfer = TransferConfig(
            multipart_threshold=MULTIPART_CHUNK_BYTES,
            multipart_chunksize=MULTIPART_CHUNK_BYTES,
            max_concurrency=PARTS_IN_FLIGHT_PER_FILE,
        )
        try:
            self.client.head_bucket(Bucket=location.bucket)
        except ClientError as e:
            if _error_code(e) in ("404", "NoSuchBucket"):
                raise UserError(f"s3://{location.bucket}: no such bucket") from None
            raise _user_error(e, f"s3://{location.bucket}") from None
        except BotoCoreError as e:
            raise _user_error(e, f"s3://{location.bucket}") from None

    def _call(self, key: str, fn: Callable[[], Any]) -> Any:
        """Run one S3 call on ``key``; a failure becomes a one-line UserError naming the object."""
        try:
            return fn()
        except (ClientError, BotoCoreError) as e:
            raise _user_error(e, f"s3://{self.location.bucket}/{key}") from None

    def head(self, key: str) -> tuple[int, str | None] | None:
        """(size, sha256 from our metadata) of an object, or None if it does not exist."""
        try:
            meta = self.client.head_object(Bucket=self.location.bucket, Key=key)
        except ClientError as e:
            if _error_code(e) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise _user_error(e, f"s3://{self.location.bucket}/{key}") from None
        except BotoCoreError as e:
            raise _user_error(e, f"s3://{self.location.bucket}/{key}") from None
        return int(meta["ContentLength"]), meta.get("Metadata", {}).get(SHA_METADATA_KEY)

    def folders(self) -> list[str]:
        """Names of the folders directly under the prefix."""
        base = self.location.key() + "/" if self.location.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        pages = self._call(
            base,
            lambda: list(
                paginator.paginate(Bucket=self.location.bucket, Prefix=base, Delimiter="/")
            ),
        )
        names = (
            p["Prefix"][len(base) :].strip("/")
            for pg in pages
            for p in pg.get("CommonPrefixes", [])
        )
        return sorted(n for n in names if n not in ("", ".", ".."))

    def read(self, key: str) -> bytes:
        obj = self._call(key, lambda: self.client.get_object(Bucket=self.location.bucket, Key=key))
        return bytes(obj["Body"].read())

    def upload(self, path: Path, key: str, sha256: str, on_bytes: Callable[[int], None]) -> None:
        self._call(
            key,
            lambda: self.client.upload_file(
                str(path), self.location.bucket, key,
                ExtraArgs={"Metadata": {SHA_METADATA_KEY: sha256}},
                Config=self.transfer, Callback=on_bytes,
            ),
        )  # fmt: skip

    def download(self, key: str, path: Path, on_bytes: Callable[[int], None]) -> None:
        with open(path, "wb") as f:  # seekable: ranged parts land in place, no extra temp file
            self._call(
                key,
                lambda: self.client.download_fileobj(
                    self.location.bucket, key, f, Config=self.transfer, Callback=on_bytes
                ),
            )

    def delete(self, key: str) -> None:
        self._call(key, lambda: self.client.delete_object(Bucket=self.location.bucket, Key=key))


def _run_parallel(
    files: list[CacheFile], move: Callable[[CacheFile, Callable[[int], None]], bool],
    workers: int, desc: str,
) -> TransferReport:  # fmt: skip
    """Apply ``move(file, on_bytes) -> moved?`` to every file on a thread pool, with one byte bar.
    The first failure cancels the files not yet started and is raised."""
    report = TransferReport()
    lock = threading.Lock()
    with byte_bar(sum(f.bytes for f in files), desc) as bar:

        def on_bytes(n: int) -> None:
            with lock:
                bar.update(n)

        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s3")
        try:
            futures = {pool.submit(move, f, on_bytes): f for f in files}
            for future in as_completed(futures):
                file = futures[future]
                if future.result():
                    report.transferred_files += 1
                    report.transferred_bytes += file.bytes
                else:
                    report.skipped_files += 1
                    on_bytes(file.bytes)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # transfers in flight finish atomically
    return report


# --- push ---------------------------------------------------------------------------------------


def _local_splits(root: Path) -> dict[str, tuple[bytes, list[CacheFile]]]:
    """Each split folder's manifest bytes and files."""
    if not root.is_dir():
        raise UserError(f"{root}: no such cache folder")
    if (root / MANIFEST).is_file():
        raise UserError(f"{root}: this is a split folder; pass the cache root (its parent)")
    splits = {}
    for split_dir in sorted(d for d in root.iterdir() if (d / MANIFEST).is_file()):
        raw = (split_dir / MANIFEST).read_bytes()
        splits[split_dir.name] = (
            raw,
            _parse_manifest(raw, split_dir.name, str(split_dir / MANIFEST)),
        )
    if not splits:
        raise UserError(f"{root}: no <split>/{MANIFEST} here; build the cache first")
    return splits


def push(
    dir: Path, url: str, endpoint_url: str | None = None, workers: int = 16, force: bool = False
) -> TransferReport:
    """Upload the cache root ``dir`` to ``url``; files already there (size and stored sha256) are
    skipped unless ``force``: only a download can tell that an object's content changed."""
    root = Path(dir)
    location = parse_s3_url(url)
    splits = _local_splits(root)
    bucket = Bucket(location, endpoint_url, workers)

    # A remote manifest that differs from ours is withdrawn first: while the new files go up, no
    # reader may pair the old manifest with them.
    manifest_shas = {split: _sha256_bytes(raw) for split, (raw, _) in splits.items()}
    for split, sha in manifest_shas.items():
        remote = bucket.head(location.key(split, MANIFEST))
        if remote is not None and remote[1] != sha:
            bucket.delete(location.key(split, MANIFEST))

    def move(f: CacheFile, on_bytes: Callable[[int], None]) -> bool:
        path, key = root / f.rel, location.key(f.rel)
        if not path.is_file():
            raise UserError(f"{path}: listed in the manifest but missing")
        if (size := path.stat().st_size) != f.bytes:
            raise UserError(f"{path}: {size} bytes, the manifest says {f.bytes}")
        if not force and bucket.head(key) == (f.bytes, f.sha256):
            return False
        if sha256_file(path) != f.sha256:
            raise UserError(
                f"{path}: sha256 differs from the manifest; rebuild or verify the cache"
            )
        bucket.upload(path, key, f.sha256, on_bytes)
        return True

    files = [f for _, split_files in splits.values() for f in split_files]
    report = _run_parallel(files, move, workers, f"push {location.url()}")
    for split, sha in manifest_shas.items():
        if bucket.head(location.key(split, MANIFEST)) != (len(splits[split][0]), sha):
            bucket.upload(
                root / split / MANIFEST, location.key(split, MANIFEST), sha, lambda n: None
            )
    log.info(
        "pushed %d files (%.3f GB), %d already there -> %s",
        report.transferred_files, report.transferred_bytes / 1e9, report.skipped_files, location.url(),
    )  # fmt: skip
    return report


# --- pull ---------------------------------------------------------------------------------------


def _remote_splits(bucket: Bucket) -> dict[str, tuple[bytes, list[CacheFile]]]:
    """Each remote split's manifest bytes (checked against their stored sha256) and files."""
    location = bucket.location
    splits = {}
    for split in bucket.folders():
        key = location.key(split, MANIFEST)
        head = bucket.head(key)
        if head is None:
            continue
        raw = bucket.read(key)
        if head[1] is not None and _sha256_bytes(raw) != head[1]:
            raise UserError(
                f"s3://{location.bucket}/{key}: sha256 differs from its metadata (corrupt)"
            )
        splits[split] = (raw, _parse_manifest(raw, split, f"s3://{location.bucket}/{key}"))
    if not splits:
        raise UserError(
            f"{location.url()}: no <split>/{MANIFEST} under this prefix (wrong prefix, or the cache "
            "was never pushed)"
        )
    return splits


def pull(url: str, dir: Path, endpoint_url: str | None = None, workers: int = 16) -> TransferReport:
    """Download the cache at ``url`` into ``dir``; complete local files are kept, and each manifest
    is written only after every file it lists is present and verified."""
    root = Path(dir)
    location = parse_s3_url(url)
    bucket = Bucket(location, endpoint_url, workers)
    splits = _remote_splits(bucket)
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(root)  # temporary files of a pull that was killed
    for split, (raw, _) in splits.items():  # a stale local manifest must not outlive its files
        local = root / split / MANIFEST
        if local.is_file() and local.read_bytes() != raw:
            local.unlink()

    def move(f: CacheFile, on_bytes: Callable[[int], None]) -> bool:
        dest = root / f.rel
        if dest.is_file() and dest.stat().st_size == f.bytes and sha256_file(dest) == f.sha256:
            return False
        with atomic_path(dest) as tmp:
            bucket.download(location.key(f.rel), tmp, on_bytes)
            if (got := sha256_file(tmp)) != f.sha256:
                raise UserError(
                    f"{location.url(f.rel)}: sha256 {got[:12]}… does not match the manifest's "
                    f"{f.sha256[:12]}… (object corrupt or changed since the push; repair it with "
                    "szdet cache push --force)"
                )
        return True

    files = [f for _, split_files in splits.values() for f in split_files]
    report = _run_parallel(files, move, workers, f"pull {location.url()}")
    for split, (raw, _) in splits.items():
        write_bytes_atomic(root / split / MANIFEST, raw)
    log.info(
        "pulled %d files (%.3f GB), %d already complete -> %s",
        report.transferred_files, report.transferred_bytes / 1e9, report.skipped_files, root,
    )  # fmt: skip
    return report


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
