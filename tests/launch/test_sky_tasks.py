"""sky/*.yaml validated by SkyPilot's own Task.from_yaml, offline and without credentials.

SkyPilot writes ~/.sky on import and its CLI starts a local API server: the tasks are loaded in a
subprocess whose HOME is a temporary folder, the `sky` CLI is never called, and the tests check
that neither the real ~/.sky nor a server is left behind."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from szdet.cloud import restart
from szdet.config_load import load_config

# sky is imported only in a subprocess with a temporary HOME; here, only look that it exists
# (a plain "sky" would also find this repo's sky/ folder as a namespace package).
if getattr(importlib.util.find_spec("sky"), "origin", None) in (None, "namespace"):
    pytest.skip("launcher tests run in .venv-launch (make test does)", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
TASKS = sorted((REPO / "sky").glob("*.yaml"))

LOAD = """
import json, sys, yaml
import sky

def describe(task):
    return {
        "name": task.name,
        "num_nodes": task.num_nodes,
        "run": task.run,
        "envs": dict(task.envs),
        "secrets": sorted(task.secrets),
        "secret_refs": sorted(ref.name for ref in task.managed_secret_refs),
        "resources": [  # in the order SkyPilot tries them
            {"cloud": str(r.cloud) if r.cloud else None, "use_spot": r.use_spot,
             "accelerators": r.accelerators, "image_id": r.image_id, "disk_size": r.disk_size,
             "job_recovery": r.job_recovery}
            for r in task.resources
        ],
        "mounts": {dst: {"source": s.source, "mode": s.mode.value}
                   for dst, s in task.storage_mounts.items()},
    }

out = {}
for path in sys.argv[1:]:
    out[path] = describe(sky.Task.from_yaml(path))
    # what `sky launch --env CACHE_BUCKET=... --secret WANDB_API_KEY` hands to SkyPilot
    config = yaml.safe_load(open(path))
    out[path + ":overridden"] = describe(sky.Task.from_yaml_config(
        config,
        env_overrides=[("CACHE_BUCKET", "s3://real-bucket/cache"), ("RUNS_BUCKET", "s3://real-bucket/runs")],
        secrets_overrides=[("WANDB_API_KEY", "not-a-real-key")],
    ))
print(json.dumps(out))
"""


def sky_servers() -> set[str]:
    found = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "sky.server" in text:  # the API server runs as `python -m sky.server.server`
            found.add(cmdline.parent.name)
    return found


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> dict[str, dict]:
    home = tmp_path_factory.mktemp("home")
    real_sky = Path.home() / ".sky"
    had_sky, servers_before = real_sky.exists(), sky_servers()
    env = {"HOME": str(home), "PATH": os.environ["PATH"], "SKYPILOT_DISABLE_USAGE_COLLECTION": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", LOAD, *map(str, TASKS)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert real_sky.exists() == had_sky, "SkyPilot wrote the real ~/.sky"
    assert sky_servers() <= servers_before, "a SkyPilot API server was left running"
    return {Path(k).name: v for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def test_every_task_file_is_validated(tasks):
    # SkyPilot's own loader validated each file (the fixture) and its resources came back whole
    loaded = {name for name in tasks if not name.endswith(":overridden")}
    assert loaded == {p.name for p in TASKS} >= {"train.yaml", "smoke.yaml"}
    assert all(task["resources"] and task["run"] for task in tasks.values())


def test_train_runs_the_image_on_a100_80gb_spot_first_with_fallbacks(tasks):
    resources = tasks["train.yaml"]["resources"]
    assert all(r["accelerators"] == {"A100-80GB": 1} for r in resources)
    assert all(next(iter(r["image_id"].values())).startswith("docker:") for r in resources)
    spot = [r["use_spot"] for r in resources]
    assert spot == sorted(spot, reverse=True) and spot[0] and not spot[-1]  # spot before on-demand
    assert len({r["cloud"] for r in resources}) >= 2  # another cloud when one has no capacity
    # Restarts on a checkpointed stop (75) and a crash (70, bounded by scripts/torchrun.sh), never
    # on bad input (1-4), which would only copy the cache again to fail again.
    recovery = resources[0]["job_recovery"]
    assert recovery["max_restarts_on_errors"] == 0
    assert sorted(recovery["recover_on_exit_codes"]) == sorted(restart.RESTART_EXIT_CODES)


def test_cache_is_copied_and_checkpoints_are_mounted_from_buckets(tasks):
    for name in ("train.yaml", "smoke.yaml"):
        mounts = tasks[name]["mounts"]
        assert mounts["/results/cache"]["mode"] == "COPY"
        assert mounts["/results/runs"]["mode"] == "MOUNT_CACHED"
        overridden = tasks[f"{name}:overridden"]["mounts"]
        assert overridden["/results/cache"]["source"] == "s3://real-bucket/cache"
        assert overridden["/results/runs"]["source"] == "s3://real-bucket/runs"


def test_wandb_key_is_a_secret_never_a_value_in_the_file(tasks):
    for name in ("train.yaml", "smoke.yaml"):
        assert tasks[name]["secret_refs"] == ["WANDB_API_KEY"]
        assert "WANDB_API_KEY" not in tasks[name]["envs"]
        assert tasks[f"{name}:overridden"]["secrets"] == ["WANDB_API_KEY"]
    for path in TASKS:
        assert "not-a-real-key" not in path.read_text()


def test_train_run_uses_torchrun_with_skypilot_layout_and_resumes(tasks):
    # The run goes through scripts/torchrun.sh, which lays torchrun out by SkyPilot's variables
    # and passes the trainer's exit 75 through (its behaviour is tested in test_train_stops.py).
    assert "scripts/torchrun.sh configs/cloud/train.yaml" in tasks["train.yaml"]["run"]
    launcher = (REPO / "scripts/torchrun.sh").read_text()
    for variable in ("SKYPILOT_NODE_RANK", "SKYPILOT_NODE_IPS", "SKYPILOT_NUM_NODES",
                     "SKYPILOT_NUM_GPUS_PER_NODE"):  # fmt: skip
        assert f"${{{variable}" in launcher
    assert '-m szdet.cli train --config "$config" --resume auto --exit-status' in launcher
    assert (REPO / "configs/cloud/train.yaml").is_file()


def test_smoke_runs_the_image_smoke_command(tasks):
    assert "scripts/entrypoint.sh smoke" in tasks["smoke.yaml"]["run"]
    assert tasks["smoke.yaml"]["resources"][0]["accelerators"] == {"A100-80GB": 1}


def test_build_cache_reads_raw_edf_from_a_bucket_on_cpu(tasks):
    task = tasks["build-cache.yaml"]
    assert task["mounts"]["/data/tusz"]["mode"] == "MOUNT"
    assert all(r["accelerators"] is None for r in task["resources"])
    assert "szdet cache push" in task["run"]


def test_mounts_are_where_the_cloud_configs_put_their_paths(tasks):
    # SkyPilot cannot read szdet's config: its mount points must be the cloud configs' paths.*,
    # which the commands in `run` read themselves (no path restated there).
    for config, names in (
        ("train", ("train.yaml", "build-cache.yaml")),
        ("smoke", ("smoke.yaml",)),
    ):
        paths = load_config(REPO / f"configs/cloud/{config}.yaml").paths
        for name in names:
            mounts = {Path(dst): m["mode"] for dst, m in tasks[name]["mounts"].items()}
            if name == "build-cache.yaml":
                assert mounts == {paths.data_root: "MOUNT"}
                assert str(paths.data_root) not in tasks[name]["run"]
                assert str(paths.cache_dir) not in tasks[name]["run"]
                continue
            cache = [m for m in mounts if paths.cache_dir.is_relative_to(m)]
            assert [mounts[m] for m in cache] == ["COPY"], name
            assert mounts[paths.runs_dir] == "MOUNT_CACHED", name
