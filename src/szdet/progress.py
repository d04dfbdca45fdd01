"""Progress bars for long work: live on a terminal, a line every so often in cloud logs."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def _bar_settings() -> dict[str, Any]:
    """Off a terminal (SkyPilot, Modal and docker logs) a redrawn bar becomes thousands of lines, so
    there a bar prints at most one line a minute."""
    interactive = sys.stderr.isatty()
    return {
        "file": sys.stderr,
        "mininterval": 0.2 if interactive else 60.0,
        "dynamic_ncols": interactive,
        "ncols": None if interactive else 100,
    }


def progress(
    items: Iterable[T], desc: str, total: int | None = None, unit: str = "it", disable: bool = False
) -> Iterator[T]:
    """Wrap ``items`` in a tqdm bar on stderr."""
    yield from tqdm(items, desc=desc, total=total, unit=unit, disable=disable, **_bar_settings())


def byte_bar(total_bytes: int, desc: str) -> tqdm:
    """A bar advanced by hand with ``.update(n_bytes)`` (transfers, where work arrives in chunks).
    Use it as a context manager so it closes."""
    return tqdm(
        total=total_bytes,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        **_bar_settings(),
    )


def eeg_hours_bar(total_h: float, desc: str, disable: bool = False) -> tqdm:
    """A bar in hours of EEG, advanced by hand with ``.update(hours)`` as chunks of a recording
    are done. Use it as a context manager so it closes."""
    return tqdm(
        total=total_h,
        desc=desc,
        unit="EEG-h",
        bar_format=_HOURS_FORMAT,
        disable=disable,
        **_bar_settings(),
    )


_HOURS_FORMAT = (
    "{desc}: {percentage:3.0f}%|{bar}| {n:.2f}/{total:.2f} EEG-h [{elapsed}<{remaining}]"
)
