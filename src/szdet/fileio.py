"""Crash-safe file writing and checksums, shared by the cache, checkpoints, reports and S3 pulls.

A file under its final name is always complete: writers fill a temporary sibling, fsync it, and
rename it into place (atomic on POSIX within one filesystem), then fsync the directory so the rename
itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"
FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# numpy's tofile (under np.save) reports a full disk as a short write, with no errno.
_SHORT_WRITE = re.compile(r"^\d+ requested and \d+ written$")


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    On any exception the temporary file is removed and ``path`` is left as it was.
    Temporary names end in ``.tmp`` (plus the pid, so two writers never share one).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        with naming_full_disk(path):
            yield tmp
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
            fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def naming_full_disk(path: str | Path) -> Iterator[None]:
    """Turn a full disk met while writing ``path`` into ``OSError(ENOSPC, ..., path)``: writes
    through a Python file raise it naming no file, numpy's as a short write, torch.save's as a
    RuntimeError in its context, shutil.copyfile naming its source."""
    try:
        yield
    except Exception as e:
        code = full_disk_errno(e)
        if code is None:
            raise
        raise OSError(code, os.strerror(code), str(path)) from None


def full_disk_errno(error: BaseException) -> int | None:
    """ENOSPC or EDQUOT if ``error``, or an exception it was raised while handling, is a full
    disk (or quota); else None."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError):
            if seen.errno in FULL_DISK_ERRNOS:
                return seen.errno
            if seen.errno is None and _SHORT_WRITE.match(str(seen)):
                return errno.ENOSPC
        seen = seen.__context__
    return None


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def remove_stale_tmp(directory: str | Path) -> int:
    """Delete temporary files a killed writer left behind; returns how many were removed."""
    removed = 0
    for p in Path(directory).rglob(f".*{TMP_SUFFIX}"):
        p.unlink(missing_ok=True)
        removed += 1
    return removed


def sha256_file(path: str | Path, chunk_bytes: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()
