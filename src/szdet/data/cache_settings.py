"""What a cache split folder is built with, and the one refusal of a cache built otherwise.

``<split>/preprocess.json`` holds a CacheSettings (the format and its version, the montage, the
preprocessing settings and their hash), written before the first array; every manifest carries the
same fields (szdet.data.manifest). Whatever reads either document, to build into the folder, to
train or score on it, or to move it to a bucket, goes through ``checked_settings``: a cache of
another format or version, of another montage, or preprocessed otherwise is refused in one line
naming the file and both values.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from szdet.config import MONTAGES, Montage, PreprocessConfig
from szdet.errors import UserError
from szdet.fileio import write_json_atomic

FORMAT = "szdet-cache"
# 2: a recording's TUSZ folder is its "setup" (v1 called it "montage"); another version is refused
FORMAT_VERSION = 2
PREPROCESS_FILE = "preprocess.json"
REBUILD = "rebuild the cache"


@dataclass(frozen=True)
class CacheSettings:
    """What a split folder's arrays were made with: only arrays made alike share a folder, and a
    model reads only what its training read."""

    montage: Montage  # data.montage
    preprocess_hash: str  # PreprocessConfig.fingerprint(montage)
    preprocess: dict[str, Any]  # PreprocessConfig.model_dump(mode="json")

    @classmethod
    def of(cls, preprocess: PreprocessConfig, montage: Montage) -> CacheSettings:
        """The settings a cache built or read with ``preprocess`` and ``montage`` has."""
        return cls(montage, preprocess.fingerprint(montage), preprocess.model_dump(mode="json"))

    def to_json(self) -> dict[str, Any]:
        """preprocess.json's document (a manifest holds the same keys)."""
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}


def checked_settings(
    where: Path | str,
    document: Any,
    montage: Montage | None = None,
    preprocess: PreprocessConfig | None = None,
    remedy: str = REBUILD,
) -> CacheSettings:
    """The settings in ``document`` (the JSON of a manifest or of preprocess.json, read from
    ``where``). UserError, one line naming ``where`` and both values, for a cache of another
    format or version, another ``montage`` (where one is given) or other ``preprocess`` settings
    (where given; hashed for the cache's montage); ``remedy`` ends the line."""
    fields = document if isinstance(document, dict) else {}
    found = (fields.get("format"), fields.get("format_version"))
    if found != (FORMAT, FORMAT_VERSION):
        raise UserError(
            f"{where}: cache format {found[0]} v{found[1]}, expected {FORMAT} v{FORMAT_VERSION}; "
            f"{remedy}"
        )
    if not (
        fields.get("montage") in MONTAGES
        and isinstance(fields.get("preprocess_hash"), str)
        and isinstance(fields.get("preprocess"), dict)
    ):
        raise UserError(
            f"{where}: not a cache document (montage, preprocess_hash or preprocess missing or "
            "malformed)"
        )
    settings = CacheSettings(fields["montage"], fields["preprocess_hash"], fields["preprocess"])
    if montage is not None and settings.montage != montage:
        raise UserError(
            f"{where}: cache built for data.montage {settings.montage}, this config's is "
            f"{montage}; {remedy}"
        )
    if preprocess is not None:
        wanted = CacheSettings.of(preprocess, settings.montage)
        if settings.preprocess_hash != wanted.preprocess_hash:
            differ = [
                f"{key} {settings.preprocess.get(key)!r} (wanted {value!r})"
                for key, value in wanted.preprocess.items()
                if settings.preprocess.get(key) != value
            ]
            why = "; ".join(differ) or "the same fields, another preprocessing algorithm"
            raise UserError(
                f"{where}: cache built with preprocess settings {settings.preprocess_hash}, this "
                f"config's are {wanted.preprocess_hash}: {why}; {remedy}"
            )
    return settings


def read_settings(
    path: Path, montage: Montage, preprocess: PreprocessConfig, remedy: str
) -> CacheSettings:
    """The settings of a split folder's preprocess.json or manifest, refused by
    ``checked_settings`` if they are not ``montage`` and ``preprocess``."""
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: unreadable ({e}); delete {path.parent} to rebuild") from None
    return checked_settings(path, document, montage, preprocess, remedy)


def write_settings(split_dir: Path, settings: CacheSettings) -> None:
    write_json_atomic(split_dir / PREPROCESS_FILE, settings.to_json())
