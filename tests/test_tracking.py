"""W&B tracking: offline runs, resume by id, images, and no secret or environment in the files."""

import json

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from szdet.config import TrackingConfig
from szdet.train.tracking import Tracker, resolve_mode

SENTINELS = {
    "AWS_SECRET_ACCESS_KEY": "sentinel-aws-Zq81",
    "AWS_ACCESS_KEY_ID": "sentinel-akid-Zq82",
    "HF_TOKEN": "sentinel-hf-Zq83",
    "SKYPILOT_DOCKER_PASSWORD": "sentinel-docker-Zq84",
    "MODAL_TOKEN_SECRET": "sentinel-modal-Zq85",
}


def test_mode_auto_follows_the_api_key(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert resolve_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"
    assert resolve_mode("disabled") == "disabled"


def test_disabled_and_non_main_ranks_are_no_ops(tmp_path):
    for tracker in (
        Tracker.start(TrackingConfig(mode="disabled"), tmp_path, "r", {}),
        Tracker.start(TrackingConfig(mode="offline"), tmp_path, "r", {}, enabled=False),
    ):
        assert tracker.run_id is None
        tracker.log({"loss": 1.0}, step=1)
        tracker.finish()
    assert not (tmp_path / "wandb").exists()


def test_offline_run_resumes_with_same_id_and_leaks_no_secret(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for name, value in SENTINELS.items():
        monkeypatch.setenv(name, value)
    cfg = TrackingConfig(mode="auto", project="szdet-test")
    config = {"train": {"lr": 0.001}, "paths": {"run_name": "t"}}

    first = Tracker.start(cfg, tmp_path, "t", config)
    run_id = first.run_id
    assert run_id
    first.log({"train/loss": 0.5}, step=1)
    first.log({"train/loss": 0.25}, step=2)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    png = tmp_path / "curve.png"
    fig.savefig(png)
    plt.close(fig)
    first.log_images({"plots/curve": png}, step=2)
    first_dir = first.run_dir
    first.finish()

    resumed = Tracker.start(cfg, tmp_path, "t", config, run_id=run_id)
    assert resumed.run_id == run_id
    resumed.log({"train/loss": 0.125}, step=2)  # a step repeated after resume is still recorded
    second_dir = resumed.run_dir
    resumed.finish()

    assert first_dir != second_dir
    for run_dir in (first_dir, second_dir):
        assert run_dir.name.startswith("offline-run-") and f"-{run_id}" in run_dir.name
        assert b"train/loss" in (run_dir / f"run-{run_id}.wandb").read_bytes()
    assert any(first_dir.rglob("*.png"))  # the image was stored with the run

    files = [p for p in (tmp_path / "wandb").rglob("*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        for name, value in SENTINELS.items():
            assert value.encode() not in data, f"{name}'s value leaked into {path}"
    metadata = first_dir / "files" / "wandb-metadata.json"
    if metadata.exists():  # meta capture is off: no environment, command line or host dump
        meta = json.loads(metadata.read_text())
        assert not {"args", "host", "username", "env", "executable"} & meta.keys()


@pytest.mark.slow
def test_unreachable_server_falls_back_to_offline_without_leaking_the_key(tmp_path, monkeypatch):
    api_key = "sentinel" + "k" * 32
    monkeypatch.setenv("WANDB_API_KEY", api_key)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "5")
    tracker = Tracker.start(TrackingConfig(mode="auto"), tmp_path, "t", {"train": {}})
    run_id = tracker.run_id
    assert run_id
    tracker.log({"train/loss": 1.0}, step=1)
    run_dir = tracker.run_dir
    tracker.finish()
    assert run_dir.name.startswith("offline-run-")
    assert b"train/loss" in (run_dir / f"run-{run_id}.wandb").read_bytes()
    for path in (p for p in (tmp_path / "wandb").rglob("*") if p.is_file()):
        assert api_key.encode() not in path.read_bytes(), f"the API key leaked into {path}"


def test_a_failing_wandb_turns_tracking_off_with_one_warning(caplog):
    class FullDiskRun:
        id, calls = "abc", 0

        def log(self, row):
            self.calls += 1
            raise OSError(28, "No space left on device")

    run = FullDiskRun()
    tracker = Tracker(run)
    with caplog.at_level("WARNING", logger="szdet.train.tracking"):
        tracker.log({"loss": 1.0}, step=1)
        tracker.log({"loss": 0.5}, step=2)
        tracker.finish(exit_code=0)
    assert run.calls == 1 and tracker.run_id is None
    assert [r.getMessage() for r in caplog.records] == [
        "W&B failed (OSError: [Errno 28] No space left on device); tracking is off for the rest "
        "of this run"
    ]
