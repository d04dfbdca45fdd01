"""modal/app.py offline, in the launcher environment (modal, no szdet): every function's resources,
and the user's command lines parsed by Modal's own CLI code, without a token or a network."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import click
import pytest

from szdet.cloud import restart

# (a plain "modal" would also find this repo's modal/ folder as a namespace package)
if getattr(importlib.util.find_spec("modal"), "origin", None) in (None, "namespace"):
    pytest.skip("launcher tests run in .venv-launch (make test does)", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "modal" / "app.py"
DAY_S = 86_400


@pytest.fixture(scope="module")
def app_module():
    spec = importlib.util.spec_from_file_location("szdet_modal_app", APP)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_imports_with_only_modal_installed():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('a', {str(APP)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        # szdet is not installed here: only its standard-library restart policy (and the exit
        # codes it speaks, errors.py) is taken, from the checkout
        f"assert importlib.util.find_spec('szdet').origin.startswith({str(REPO / 'src')!r})\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('szdet'))\n"
        "assert loaded == ['szdet', 'szdet.cloud', 'szdet.cloud.restart', 'szdet.errors'], loaded\n"
    )
    for image in ("", "ghcr.io/acme/szdet:0.1.0"):  # built from the Dockerfile, or pulled
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(REPO / "nonexistent-home"),
            "SZDET_IMAGE": image,
        }
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr


def resources(fn) -> dict:
    info = fn.info()  # static, from the decorator: no token needed
    return {
        "gpus": info.gpus,
        "cpu": info.cpu,
        "memory_mib": info.memory_mib,
        "timeout": info.timeout,
        "retries": info.max_retries,
        "volumes": {path: v.name for path, v in info.volumes.items()},
        "secrets": sorted(s.split("'")[1] for s in info.secrets),
    }


def test_gpu_functions_run_on_an_a100_80gb(app_module):
    for name in ("train", "test_mamba", "evaluate"):
        assert resources(getattr(app_module, name))["gpus"] == [("A100-80GB", 1)], name
    for name in ("preflight", "populate_cache", "build_shard", "merge_and_verify"):
        assert resources(getattr(app_module, name))["gpus"] == [], f"{name} needs no GPU"


def test_train_resources_volume_secrets_and_retries(app_module):
    train = resources(app_module.train)
    assert (train["cpu"], train["memory_mib"]) == (24, 96 * 1024)
    assert train["timeout"] == DAY_S  # Modal's most per attempt; the run continues in segments
    # A crash or a preemption resumes from the last checkpoint, as often as the policy allows.
    assert train["retries"] == restart.MAX_CRASH_RESTARTS
    assert train["volumes"] == {"/results": "szdet-results"}
    assert train["secrets"] == ["aws", "wandb"]
    # szdet stops itself with a checkpoint well before the container is killed
    assert 30 * 60 <= app_module.TRAIN_MARGIN_S < DAY_S


def test_every_function_fits_the_platform_limits(app_module):
    for name in ("preflight", "populate_cache", "build_shard", "merge_and_verify", "test_mamba",
                 "train", "evaluate"):  # fmt: skip
        r = resources(getattr(app_module, name))
        assert 0 < r["timeout"] <= DAY_S, name
        if name != "test_mamba":
            assert r["volumes"] == {"/results": "szdet-results"}, name
    assert resources(app_module.populate_cache)["secrets"] == ["aws"]
    assert resources(app_module.build_shard)["secrets"] == ["aws"]


def parse_modal_run(argv: list[str]) -> tuple[dict, dict]:
    """``modal run …`` parsed by Modal's click group and the entrypoint's generated command,
    without running anything: (modal run's own options, the entrypoint's parameters)."""
    from modal.cli.run import run

    assert argv[:2] == ["modal", "run"]
    ctx = run.make_context("run", argv[2:])
    name, command, rest = run.resolve_command(ctx, [*ctx.protected_args, *ctx.args])
    return ctx.params, command.make_context(name, rest, parent=ctx).params


# The user's plan, verbatim, with deploy/modal/app.py read as modal/app.py.
USER_COMMANDS = [
    ("modal run modal/app.py --action populate-cache", False,
     {"action": "populate-cache", "config": "configs/modal/train.yaml", "resume": "auto"}),
    ("modal run modal/app.py --action test-mamba", False, {"action": "test-mamba"}),
    ("modal run modal/app.py --action train --config configs/modal/smoke.yaml", False,
     {"action": "train", "config": "configs/modal/smoke.yaml", "resume": "auto"}),
    ("modal run --detach modal/app.py --action train --config configs/modal/smoke.yaml", True,
     {"action": "train", "config": "configs/modal/smoke.yaml"}),
    ("modal run --detach modal/app.py --action train --config configs/modal/train.yaml", True,
     {"action": "train", "config": "configs/modal/train.yaml", "resume": "auto"}),
    ("modal run --detach modal/app.py --action train --config configs/modal/train.yaml "
     "--resume true", True,
     {"action": "train", "config": "configs/modal/train.yaml", "resume": "true"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("line", "detach", "expected"), USER_COMMANDS, ids=[c[0] for c in USER_COMMANDS]
)
def test_user_command_lines_parse(line, detach, expected, app_module, monkeypatch):
    monkeypatch.chdir(REPO)
    options, params = parse_modal_run(line.split())
    assert options["detach"] is detach
    assert {k: params[k] for k in expected} == expected
    # ...and what the entrypoint does first with them succeeds on this checkout
    app_module.container_config(params["config"])
    app_module.check_resume(params["resume"])


def test_unknown_action_is_refused_before_the_app_starts(monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(click.BadParameter, match="'nope' is not one of 'populate-cache'"):
        parse_modal_run(["modal", "run", "modal/app.py", "--action", "nope"])


def test_configs_are_found_and_mapped_into_the_image(app_module, tmp_path):
    assert (
        app_module.container_config("configs/modal/train.yaml", cwd=REPO)
        == "configs/modal/train.yaml"
    )
    absolute = REPO / "configs" / "cloud" / "smoke.yaml"
    assert app_module.container_config(str(absolute), cwd=tmp_path) == "configs/cloud/smoke.yaml"
    with pytest.raises(
        SystemExit, match=r"^error: configs/modal/nope\.yaml: config file not found$"
    ):
        app_module.container_config("configs/modal/nope.yaml", cwd=REPO)
    with pytest.raises(SystemExit, match="configs must live under"):
        app_module.container_config("pyproject.toml", cwd=REPO)  # not shipped to the containers


def test_resume_accepts_the_words_and_volume_paths_only(app_module):
    for value in ("auto", "true", "false", "/results/runs/v3-train/checkpoints/step-000001000.pt"):
        assert app_module.check_resume(value) == value
    for value in ("yes", "True", "1", "runs/x.pt"):
        with pytest.raises(SystemExit, match=f"--resume '{value}': expected auto, true, false"):
            app_module.check_resume(value)


def test_image_tag_comes_from_szdet_image(app_module):
    assert (
        app_module.image_tag({"SZDET_IMAGE": "ghcr.io/acme/szdet:0.1.0"})
        == "ghcr.io/acme/szdet:0.1.0"
    )
    assert app_module.image_tag({"SZDET_IMAGE": ""}) is None
    assert app_module.image_tag({}) is None


def test_smoke_training_gets_a_fresh_run_name_and_an_explicit_one_wins(app_module):
    smoke, train = "configs/modal/smoke.yaml", "configs/modal/train.yaml"
    (fresh,) = app_module.run_name_overrides("train", smoke, "", "auto")
    assert fresh.startswith("paths.run_name=smoke-2")  # smoke-YYYYmmdd-HHMMSS, UTC
    # the long run keeps its config's name, so --resume auto finds its checkpoints
    assert app_module.run_name_overrides("train", train, "", "auto") == []
    assert app_module.run_name_overrides("train", smoke, "", "true") == []  # continuing one
    assert app_module.run_name_overrides("evaluate", smoke, "", "auto") == []
    assert app_module.run_name_overrides("evaluate", smoke, "smoke-1", "auto") == [
        "paths.run_name=smoke-1"
    ]


def test_paths_come_from_the_config_and_lie_on_the_volume(app_module):
    # The containers' szdet commands read paths.* with --config; this side only checks the
    # preflight plan's folders against the volume, its one mount point of its own.
    assert "/data/tusz" not in APP.read_text() and "/results/cache" not in APP.read_text()
    app_module.check_on_volume("c.yaml", {"cache_dir": "/results/cache/x", "run_dir": "/results/r"})
    with pytest.raises(
        SystemExit,
        match=r"^error: c\.yaml: paths\.cache_dir puts /tmp/cache off the volume mounted at /results$",
    ):
        app_module.check_on_volume("c.yaml", {"cache_dir": "/tmp/cache", "run_dir": "/results/r"})
