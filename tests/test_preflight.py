"""What stops a cloud run at its start instead of hours in: a GPU that is not there, /dev/shm too
small for the loader, kernel caches that die with the container."""

import os
from pathlib import Path

import pytest
import torch

from szdet.cli import main
from szdet.config_load import load_config
from szdet.device import pick_device
from szdet.errors import UserError
from szdet.models.kernels import select_path
from szdet.train import preflight

ROOT = Path(__file__).resolve().parent.parent
CLOUD_CONFIGS = ["configs/cloud/train.yaml", "configs/cloud/smoke.yaml",
                 "configs/modal/train.yaml", "configs/modal/smoke.yaml"]  # fmt: skip


@pytest.mark.parametrize("name", CLOUD_CONFIGS)
def test_cloud_configs_never_fall_back_to_the_cpu(name):
    cfg = load_config(ROOT / name)
    assert cfg.train.device == "cuda" and cfg.model.kernels == "cuda"


def test_a_missing_gpu_is_named_with_the_driver_and_torchs_cuda():
    with pytest.raises(UserError, match=r"^train.device is cuda, but CUDA is not usable here: .*"
                       r"driver .*; torch .* built for CUDA ") as e:  # fmt: skip
        pick_device("cuda", 0)
    assert "\n" not in str(e.value)


def test_cuda_kernels_refuse_a_cpu_device():
    with pytest.raises(UserError, match=r"model\.kernels is 'cuda' but training runs on cpu"):
        select_path("cuda", torch.device("cpu"))
    assert "pure PyTorch" in select_path("auto", torch.device("cpu"))


def test_training_a_cuda_config_on_a_cpu_is_one_line(tmp_path, capsys):
    code = main(["train", "--config", str(ROOT / "configs/cloud/smoke.yaml"),
                 "--set", "train.device=cpu", "--set", f"paths.runs_dir={tmp_path}"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 1 and "model.kernels is 'cuda' but training runs on cpu" in err
    assert len(err.splitlines()) == 1 and not any(tmp_path.iterdir())  # nothing written


def test_the_cloud_loader_needs_more_shared_memory_than_docker_gives():
    cfg = load_config(ROOT / "configs/cloud/train.yaml")
    # 64 windows x 19 channels x 15,360 float16 samples + float32 labels: 41.3 MB a batch.
    assert preflight.batch_bytes(cfg, 64) == 64 * 19 * 15360 * 2 + 64 * 15360 * 4 + 64 * 8
    needed = preflight.shared_memory_needed(cfg)
    assert 16 * 2 * 41.2e6 < needed < 2e9 and needed > 64 * 2**20  # Docker's default: 64 MB
    assert preflight.shared_memory_needed(cfg, processes=8) == pytest.approx(8 * needed, abs=8)
    no_workers = cfg.model_copy(update={"train": cfg.train.model_copy(update={"num_workers": 0})})
    assert preflight.shared_memory_needed(no_workers) == 0


def test_a_small_dev_shm_stops_training_in_one_line(tmp_path, monkeypatch):
    cfg = load_config(ROOT / "configs/cloud/train.yaml")
    usage = type("Usage", (), {"total": 64 * 2**20, "used": 0, "free": 64 * 2**20})
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: usage)
    with pytest.raises(UserError, match=r"0.07 GB free, but 16 loader workers need 1.65 GB.*"
                       r"--ipc=host") as e:  # fmt: skip
        preflight.check_shared_memory(cfg, tmp_path)
    assert str(e.value).startswith(str(tmp_path)) and "\n" not in str(e.value)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun: four processes share the machine's
    with pytest.raises(UserError, match=r"4 x 16 loader workers need 6.61 GB"):
        preflight.check_shared_memory(cfg, tmp_path)
    usage.free = 8 * 10**9
    preflight.check_shared_memory(cfg, tmp_path)  # enough now


def test_kernel_caches_live_on_the_volume_beside_the_runs():
    for name in CLOUD_CONFIGS:
        env = preflight.kernel_cache_environment(load_config(ROOT / name))
        assert env["TRITON_CACHE_DIR"] == "/results/runs/.kernel-cache/triton"
        assert env["TORCHINDUCTOR_CACHE_DIR"] == "/results/runs/.kernel-cache/inductor"


def test_a_cuda_preflight_sets_the_caches_a_user_has_not(monkeypatch, tmp_path, caplog):
    cfg = load_config(None, [f"paths.runs_dir={tmp_path}"])
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/mine")
    monkeypatch.setattr(preflight, "describe_cuda", lambda device: "a GPU")
    with caplog.at_level("INFO"):
        preflight.prepare(cfg, torch.device("cuda"))
    assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / ".kernel-cache/triton")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/mine"
    assert "CUDA: a GPU" in caplog.text
