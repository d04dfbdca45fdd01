"""Argument types and flag groups that the `szdet` subcommands share (szdet/cli.py builds them)."""

from __future__ import annotations

import argparse
from pathlib import Path


def shard(text: str) -> tuple[int, int]:
    """`I/N` with 0 <= I < N."""
    try:
        index, count = (int(p) for p in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N such as 0/4, got {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"shard index must satisfy 0 <= I < N, got {text!r}")
    return index, count


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def expect(text: str) -> dict[str, int]:
    """`train=4667,dev=1832`."""
    out: dict[str, int] = {}
    for item in filter(None, text.split(",")):
        split, sep, count = item.partition("=")
        if not sep or not count.strip().isdigit():
            raise argparse.ArgumentTypeError(f"expected split=count[,split=count], got {text!r}")
        out[split.strip()] = int(count)
    return out


def add_overrides(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=what
    )


def add_config_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--config", type=Path, required=required, help="YAML config (may use extends:)")
    add_overrides(p, "override a config field, e.g. --set train.lr=3e-4 (repeatable)")


def add_path_flag(
    p: argparse.ArgumentParser, flag: str, field: str, what: str, metavar: str = "DIR"
) -> None:
    """``flag`` as sugar for ``--set paths.<field>=VALUE``: szdet/commands.py's `_config` turns it
    into that override (the parsed value lands under the dotted name; ``path_flags`` maps it back
    to the flag for the error that names both ways of giving it)."""
    dest = f"paths.{field}"
    p.add_argument(
        flag, type=Path, dest=dest, metavar=metavar, help=f"{what} (default: the config's {dest})"
    )
    p.set_defaults(path_flags={**(p.get_default("path_flags") or {}), dest: flag})
