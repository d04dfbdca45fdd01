"""The CPU preflight of the cloud actions (modal/app.py calls it inside the image): every missing
setting or file ends as one UserError naming it, before any GPU is attached."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from szdet.cloud.plan import plan_action
from szdet.errors import UserError
from szdet.state.checkpoint import FORMAT

REPO = Path(__file__).resolve().parents[1]


def write_config(tmp_path: Path, cloud: str = "") -> Path:
    path = tmp_path / "cloud.yaml"
    path.write_text(
        f"paths:\n  cache_dir: {tmp_path}/cache\n  runs_dir: {tmp_path}/runs\n  run_name: r1\n"
        "data:\n  expected_recordings: {train: 4667, dev: 1832}\n" + cloud
    )
    return path


def make_cache(tmp_path: Path, *splits: str) -> None:
    for split in splits:
        (tmp_path / "cache" / split).mkdir(parents=True)
        (tmp_path / "cache" / split / "manifest.json").write_text("{}")


def test_populate_needs_the_cache_url(tmp_path):
    config = write_config(tmp_path)
    with pytest.raises(UserError, match=rf"^{config}: cloud\.cache_url is not set"):
        plan_action("populate-cache", config)
    config = write_config(tmp_path, "cloud:\n  cache_url: s3://bkt/cache/tusz\n")
    plan = plan_action("populate-cache", config)
    assert plan["cache_url"] == "s3://bkt/cache/tusz"
    assert plan["cache_dir"] == str(tmp_path / "cache")
    assert plan["expect"] == "dev=1832,train=4667"  # `szdet cache verify --expect` syntax
    assert plan["workers"] == 16


def test_populate_refuses_a_url_that_is_not_s3(tmp_path):
    config = write_config(tmp_path, "cloud:\n  cache_url: https://bkt/cache\n")
    with pytest.raises(UserError, match="expected an s3://bucket/prefix URL"):
        plan_action("populate-cache", config)


def test_build_cache_mounts_the_edf_bucket_prefix(tmp_path):
    with pytest.raises(UserError, match=r"cloud\.edf_url is not set"):
        plan_action("build-cache", write_config(tmp_path))
    config = write_config(tmp_path, "cloud:\n  edf_url: s3://tusz-raw/v2.0.3\n  build_shards: 8\n")
    plan = plan_action("build-cache", config, overrides=["paths.data_root=/mnt/edf"])
    assert (plan["bucket"], plan["key_prefix"]) == ("tusz-raw", "v2.0.3/")
    assert plan["data_root"] == "/mnt/edf"  # where modal/app.py mounts the bucket
    assert (plan["splits"], plan["shards"]) == (["train", "dev"], 8)


def test_train_needs_both_cache_splits(tmp_path):
    config = write_config(tmp_path)
    make_cache(tmp_path, "train")
    with pytest.raises(UserError, match=rf"^{tmp_path}/cache/dev: no cache here"):
        plan_action("train", config)
    make_cache(tmp_path, "dev")
    assert plan_action("train", config)["run_dir"] == str(tmp_path / "runs" / "r1")


def test_train_resume_is_checked_as_szdet_train_would(tmp_path):
    config = write_config(tmp_path)
    make_cache(tmp_path, "train", "dev")
    with pytest.raises(UserError, match="--resume true, but there is no checkpoint"):
        plan_action("train", config, resume="true")
    with pytest.raises(UserError, match="--resume checkpoint not found"):
        plan_action("train", config, resume=str(tmp_path / "missing.pt"))
    checkpoints = tmp_path / "runs" / "r1" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "step-000000100.pt").write_bytes(b"x")
    with pytest.raises(UserError, match="no checkpoint here reads back"):  # found on a CPU
        plan_action("train", config, resume="true")
    torch.save({"format": FORMAT, "step": 100}, checkpoints / "step-000000100.pt")
    assert plan_action("train", config, resume="true")["run_dir"] == str(tmp_path / "runs" / "r1")
    with pytest.raises(UserError, match="holds checkpoints of an earlier run"):
        plan_action("train", config, resume="false")


def test_evaluate_defaults_to_the_runs_best_checkpoint(tmp_path):
    config = write_config(tmp_path)
    make_cache(tmp_path, "dev")
    best = tmp_path / "runs" / "r1" / "checkpoints" / "best.pt"
    with pytest.raises(UserError, match=rf"^{best}: no such checkpoint$"):
        plan_action("evaluate", config)
    best.parent.mkdir(parents=True)
    best.write_bytes(b"x")
    plan = plan_action("evaluate", config)
    assert (plan["checkpoint"], plan["out"]) == (str(best), str(tmp_path / "runs/r1/eval-dev"))
    with pytest.raises(UserError, match=rf"{tmp_path}/cache/eval: no cache here"):
        plan_action("evaluate", config, split="eval")


def test_shipped_modal_configs_load_with_the_one_layout():
    for name in ("train", "smoke"):
        plan = plan_action("test-mamba", REPO / "configs" / "modal" / f"{name}.yaml")
        assert plan["cache_dir"] == "/results/cache/tusz"
        assert plan["run_dir"].startswith("/results/runs/")
        assert plan["expect"] == "dev=1832,train=4667"


def test_unknown_action_and_bad_config_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown action 'deploy'"):
        plan_action("deploy", write_config(tmp_path))
    with pytest.raises(UserError, match="config file not found"):
        plan_action("train", tmp_path / "nope.yaml")
