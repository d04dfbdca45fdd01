"""Loading a Config: YAML files with ``extends:``, then ``--set section.field=value`` overrides.

Each value remembers where it came from (a file, an override), so every error names the file the
value came from, the field, the bad value and what is allowed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from szdet.config import Config
from szdet.config_yaml import read_config_yaml
from szdet.errors import UserError


def _merge(base: dict, override: dict, sources: dict[str, str], source: str, prefix: str) -> dict:
    out = dict(base)
    for key, value in override.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, sources, source, dotted + ".")
        else:
            out[key] = value
            for k in [k for k in sources if k.startswith(dotted + ".")]:
                del sources[k]  # leaves of a replaced mapping: their source is this file now
            sources[dotted] = source
    return out


def _load_raw(path: Path, sources: dict[str, str], seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise UserError(f"{path}: `extends` forms a cycle ({chain})")
    data = read_config_yaml(path)
    parent = data.pop("extends", None)
    merged: dict[str, Any] = {}
    if parent is not None:
        if not isinstance(parent, str):
            raise UserError(f"{path}: extends: expected a file path, got {parent!r}")
        merged = _load_raw((path.parent / parent), sources, (*seen, path))
    return _merge(merged, data, sources, str(path), "")


def _apply_override(raw: dict[str, Any], assignment: str, sources: dict[str, str]) -> None:
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {assignment!r}: expected section.field=value")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {assignment!r}: {part} is not a section")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node[parts[-1]] = value
    sources[key.strip()] = f"--set {assignment}"


def _describe_error(err: Any, sources: dict[str, str], default_source: str) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    source = default_source
    for i in range(len(err["loc"]), 0, -1):  # the nearest field whose value has a known source
        candidate = ".".join(str(p) for p in err["loc"][:i])
        if candidate in sources:
            source = sources[candidate]
            break
    else:  # a rule across fields (of a section, or those it names): its --set is the likely cause
        source = _rule_source(err.get("ctx", {}).get("fields", (loc,)), sources, default_source)
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        section = _section_model(err["loc"][:-1])
        allowed = ", ".join(section.model_fields) if section else "see szdet/config.py"
        msg = f"unknown field (allowed: {allowed})"
    got = err.get("input")
    # a whole section's input (a cross-field rule) is too long to echo; its message names values
    quiet = err["type"] in ("extra_forbidden", "missing") or isinstance(got, dict)
    shown = "" if quiet else f" (got {got!r})"
    return f"{source}: {loc + ': ' if loc else ''}{msg}{shown}"


def _rule_source(fields: tuple[str, ...], sources: dict[str, str], default_source: str) -> str:
    """The --set overrides of ``fields`` (dotted fields or whole sections), else
    ``default_source``."""
    overrides = [
        s
        for k, s in sources.items()
        if s.startswith("--set")
        and any(k == f or k.startswith(f"{f}.") or f.startswith(f"{k}.") for f in fields)
    ]
    return ", ".join(overrides) or default_source


def _section_model(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = field.annotation if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Load a config file (following `extends:`), apply ``section.field=value`` overrides, validate."""
    sources: dict[str, str] = {}
    raw = _load_raw(Path(path), sources) if path is not None else {}
    return _validated(raw, overrides, sources, str(path or "<defaults>"))


def assignment(key: str, value: object) -> str:
    """The override ``key=value`` that sets ``key`` to the text of ``value`` as given: quoted,
    so YAML reads no number, boolean or null into a path named 1e3, yes or null."""
    text = str(value).replace("'", "''")
    return f"{key}='{text}'"


def config_value(cfg: Config, key: str) -> str:
    """A field of ``cfg`` by its dotted name (``paths.cache_dir``; ``run_dir``, the run's folder),
    as text: what `szdet config` prints for a shell script to use."""
    if key == "run_dir":
        return str(cfg.run_dir)
    node: Any = cfg
    for part in key.split("."):
        if not (isinstance(node, BaseModel) and part in type(node).model_fields):
            raise UserError(f"{key}: no such config field (e.g. paths.cache_dir, or run_dir)")
        node = getattr(node, part)
    if isinstance(node, BaseModel):
        return yaml.safe_dump(node.model_dump(mode="json"), sort_keys=False).rstrip()
    if isinstance(node, str | Path):
        return str(node)
    return json.dumps(node)


def with_overrides(
    cfg: Config, overrides: list[str] | tuple[str, ...], sections: tuple[str, ...] | None = None
) -> Config:
    """``cfg`` with ``section.field=value`` overrides applied (only in ``sections`` when given),
    e.g. the evaluate settings of a checkpoint's config for `szdet evaluate --set ...`."""
    for assignment in overrides:
        if sections is not None and assignment.split(".", 1)[0] not in sections:
            allowed = ", ".join(f"{s}.*" for s in sections)
            raise UserError(f"--set {assignment!r}: only {allowed} can be changed here")
    return _validated(cfg.model_dump(mode="json"), overrides, {}, "<checkpoint config>")


def _validated(
    raw: dict[str, Any],
    overrides: list[str] | tuple[str, ...],
    sources: dict[str, str],
    origin: str,
) -> Config:
    for assignment in overrides:
        _apply_override(raw, assignment, sources)
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise UserError(_describe_error(first, sources, origin) + more) from None
