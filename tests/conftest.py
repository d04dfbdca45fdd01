"""Fixtures shared by the test files (pytest finds this file by its name). It imports nothing
heavy at the top: tests/launch runs in .venv-launch, which has no torch."""

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """The tiny synthetic corpus's train/dev cache (tests/train_support.py), one per test file:
    a file's tests may damage theirs without touching another file's."""
    from train_support import build_tiny_cache

    return build_tiny_cache(tmp_path_factory.mktemp("corpus"))
