"""What a cloud action needs, checked on a cheap CPU before any GPU is attached.

modal/app.py's preflight calls ``plan_action`` inside the image, where the config and the volume
are: a missing setting, a cache that was never populated or a checkpoint that is not there ends
as one line there, instead of minutes into an A100 booking. The plan it returns holds the plain
values (paths, URLs, counts) the action's functions need, so they never re-read the config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from szdet.cloud.s3 import parse_s3_url
from szdet.config import Config
from szdet.config_load import load_config
from szdet.errors import UserError
from szdet.state.resume import resolve_resume
from szdet.state.run_dir import RunDir


def plan_action(
    action: str,
    config: str | Path,
    resume: str = "auto",
    checkpoint: str = "",
    split: str = "dev",
    overrides: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    cfg = load_config(config, overrides)
    plan: dict[str, Any] = {
        "data_root": str(cfg.paths.data_root),  # where build-cache mounts the EDF bucket
        "cache_dir": str(cfg.paths.cache_dir),
        "run_dir": str(cfg.run_dir),
        # `szdet cache verify --expect` syntax; empty = no count check
        "expect": ",".join(f"{s}={n}" for s, n in sorted(cfg.data.expected_recordings.items())),
        "endpoint_url": cfg.cloud.s3_endpoint_url,
    }
    if action == "populate-cache":
        plan.update(_populate(cfg, str(config)))
    elif action == "build-cache":
        plan.update(_build(cfg, str(config)))
    elif action == "train":
        _need_cache(cfg, [cfg.data.train_split, cfg.data.dev_split])
        resolve_resume(resume, RunDir(cfg.run_dir).checkpoints)  # the checks `szdet train` makes
    elif action == "evaluate":
        _need_cache(cfg, [split])
        plan.update(_evaluate(cfg, checkpoint, split))
    elif action != "test-mamba":
        raise UserError(f"unknown action {action!r}")
    return plan


def _populate(cfg: Config, config: str) -> dict[str, Any]:
    if not cfg.cloud.cache_url:
        raise UserError(
            f"{config}: cloud.cache_url is not set (the s3:// URL `szdet cache push` uploaded to)"
        )
    parse_s3_url(cfg.cloud.cache_url)
    return {"cache_url": cfg.cloud.cache_url, "workers": cfg.cloud.transfer_workers}


def _build(cfg: Config, config: str) -> dict[str, Any]:
    if not cfg.cloud.edf_url:
        raise UserError(f"{config}: cloud.edf_url is not set (the s3:// URL holding TUSZ's edf/)")
    edf = parse_s3_url(cfg.cloud.edf_url)
    return {
        "bucket": edf.bucket,
        "key_prefix": f"{edf.prefix}/" if edf.prefix else None,  # a bucket mount wants the slash
        "splits": [cfg.data.train_split, cfg.data.dev_split],
        "shards": cfg.cloud.build_shards,
    }


def _need_cache(cfg: Config, splits: list[str]) -> None:
    for split in splits:
        folder = cfg.paths.cache_dir / split
        if not (folder / "manifest.json").is_file():
            raise UserError(f"{folder}: no cache here; run the populate-cache action first")


def _evaluate(cfg: Config, checkpoint: str, split: str) -> dict[str, Any]:
    """The files `szdet evaluate --config` will use (szdet/commands.py: the same defaults)."""
    run = RunDir(cfg.run_dir)
    path = Path(checkpoint) if checkpoint else run.best
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint")
    return {"checkpoint": str(path), "out": str(run.evaluation(split))}
