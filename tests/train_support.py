"""Shared by the trainer's tests: a tiny V3 config, a synthetic corpus + cache, run helpers."""

import json
import math
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from szdet.config import Config
from szdet.config_load import load_config
from szdet.data.cache import build_cache
from szdet.state.checkpoint import list_checkpoints, read_checkpoint
from szdet.state.run_dir import read_metrics
from szdet.synth.corpus import write_corpus
from szdet.train.distributed import DistInfo
from szdet.train.loop import Trainer

# The V3 structure at the smallest widths, on 2 s windows: seconds per run on 2 CPU cores.
TINY = {
    "windows": {"length_s": 2.0, "train_stride_s": 1.0, "eval_stride_s": 4.0},
    "model": {
        "tcn_channels": [8] * 8,
        "node_dim": 8, "node_layers": 1, "node_d_state": 4, "node_headdim": 4,
        "edge_dim": 4, "edge_layers": 1, "edge_d_state": 4, "edge_headdim": 2,
        "pe_dim": 4, "gnn_layers": 1,
    },
    "train": {
        "epochs": 2, "batch_size": 2, "max_steps_per_epoch": 3, "warmup_steps": 2,
        "precision": "fp32", "device": "cpu", "num_workers": 0, "log_every_steps": 1,
        "checkpoint_every_steps": 1, "keep_last": 2,
    },
    "evaluate": {"timeline_recordings": 1, "sweep_points": 20},
    "tracking": {"mode": "disabled"},
}  # fmt: skip


def build_tiny_cache(root: Path) -> Path:
    """A synthetic corpus (3 train, 2 dev recordings) and its train/dev cache under ``root``."""
    write_corpus(root / "corpus", patients=5, minutes=4, seed=3)
    for split in ("train", "dev"):
        build_cache(root / "corpus", split, root / "cache", Config().preprocess, 1, None, None)
    return root / "cache"


def write_config(tmp_path: Path, cache_dir: Path, **sections) -> Path:
    cfg = json.loads(json.dumps(TINY))
    cfg["paths"] = {"cache_dir": str(cache_dir), "runs_dir": str(tmp_path / "runs")}
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def train_cmd(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "szdet.cli", "train", "--config", str(config), *args]


def train(config: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        train_cmd(config, *args), capture_output=True, text=True, timeout=300, env=env
    )


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(list_checkpoints(run_dir / "checkpoints")[-1])["model"]


def step_sequence(run_dir: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "step"]


def in_process_trainer(tmp_path: Path, cache_dir: Path, **train) -> Trainer:
    tmp_path.mkdir(exist_ok=True)
    cfg = load_config(write_config(tmp_path, cache_dir, train=train))
    device = torch.device("cuda" if cfg.train.device == "cuda" else "cpu")
    return Trainer(cfg, DistInfo(0, 1, 0, device), resume="auto")


def nan_output_on(steps: set[int], trainer: Trainer):
    """A numerical blow-up at the model's output (logits, and node logits when the step asks for
    them) on the given (1-based) training steps."""

    def hook(module, inputs, output):
        if trainer.position.step + 1 not in steps or not module.training:
            return output
        return (
            tuple(o * math.nan for o in output) if isinstance(output, tuple) else output * math.nan
        )

    return trainer.model.register_forward_hook(hook)
