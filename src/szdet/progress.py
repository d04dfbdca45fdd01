"""Progress bars for long work: live on a terminal, a line every so often in cloud logs."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(
    items: Iterable[T], desc: str, total: int | None = None, unit: str = "it", disable: bool = False
) -> Iterator[T]:
    """Wrap ``items`` in a tqdm bar on stderr.

    Off a terminal (SkyPilot, Modal and docker logs) a redrawn bar becomes thousands of lines, so
    there it prints at most one line a minute.
    """
    interactive = sys.stderr.isatty()
    yield from tqdm(
        items,
        desc=desc,
        total=total,
        unit=unit,
        file=sys.stderr,
        disable=disable,
        mininterval=0.2 if interactive else 60.0,
        dynamic_ncols=interactive,
        ncols=None if interactive else 100,
    )
