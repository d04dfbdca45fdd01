"""Reading one config YAML file strictly: a mapping of sections, each key given once.

YAML itself lets a repeated key silently replace the first (``lr: 0.001`` then ``lr: 0.5`` trains
with 0.5), so the loader here refuses it, naming the file, the line and the key.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from szdet.errors import UserError

_MERGE_TAG = "tag:yaml.org,2002:merge"  # `<<: *anchor` may legitimately repeat merged keys


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first_line: int) -> None:
        super().__init__(f"line {line}: duplicate key {key!r} (first on line {first_line})")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader, but a key given twice in one mapping is an error rather than last-one-wins."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:  # before the base class flattens `<<` merges into it
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the base class refuses it with YAML's own error
            line = key_node.start_mark.line + 1
            if key in first:
                raise _DuplicateKey(key, line, first[key])
            first[key] = line
        return super().construct_mapping(node, deep)


def read_config_yaml(path: Path) -> dict[str, Any]:
    """The mapping a config file holds ({} when empty); a missing, invalid, repeated-key or
    non-mapping file is a one-line UserError naming it."""
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader: plain data only
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except _DuplicateKey as e:
        raise UserError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where} not valid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(
            f"{path}: a config must be a mapping of sections, got {type(data).__name__}"
        )
    return data
