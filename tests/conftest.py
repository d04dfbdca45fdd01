"""Fixtures shared by the test files (pytest finds this file by its name)."""

from pathlib import Path

import pytest

from train_support import build_tiny_cache


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """The tiny synthetic corpus's train/dev cache (tests/train_support.py), one per test file:
    a file's tests may damage theirs without touching another file's."""
    return build_tiny_cache(tmp_path_factory.mktemp("corpus"))
