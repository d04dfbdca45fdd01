"""The training loop's overhead over bare model steps, on CPU. Target: <= 10 %.

Bare steps: the batches already in memory, then forward, focal loss, backward, gradient clipping,
AdamW and the schedule, nothing else. The loop: `Trainer.train_epoch` over the same batches (same
model, same initial weights, same order), i.e. reading windows from the float16 cache through the
balanced sampler and DataLoader, the non-finite check and its rank agreement, the monitor, a
metrics.jsonl row and a log line every step (the worst case: the default logs every 50), and the
progress bar. Checkpoints and validation are excluded: they are timed by their own intervals.

Run: .venv/bin/python benchmarks/bench_train_loop.py [--steps N] [--repeats R]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

from szdet.config_load import load_config
from szdet.data.cache import build_cache
from szdet.models import build_model, param_groups
from szdet.synth.corpus import write_corpus
from szdet.train.distributed import DistInfo
from szdet.train.loop import Trainer
from szdet.train.losses import focal_loss
from szdet.train.schedule import WarmupCosine

TARGET_OVERHEAD = 0.10
SMOKE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "local" / "smoke.yaml"


def make_cache(root: Path) -> Path:
    cfg = load_config(SMOKE_CONFIG)
    write_corpus(root / "corpus", patients=6, minutes=10, seed=1)
    build_cache(root / "corpus", "train", root / "cache", cfg.preprocess, 2, None, None)
    return root / "cache"


def make_trainer(root: Path, cache: Path, steps: int, batch_size: int) -> Trainer:
    cfg = load_config(
        SMOKE_CONFIG,
        [
            f"paths.cache_dir={cache}",
            f"paths.runs_dir={root / 'runs'}",
            f"train.max_steps_per_epoch={steps}",
            f"train.batch_size={batch_size}",
            "train.epochs=1",
            "train.log_every_steps=1",
            "train.checkpoint_every_min=1000000",
            "tracking.mode=disabled",
            "data.dev_split=train",  # the Validator opens it; validation itself is not timed
        ],
    )
    # A fresh run directory each time: --resume false refuses to overwrite checkpoints.
    cfg.paths.run_name = f"bench-{time.monotonic_ns()}"
    return Trainer(cfg, DistInfo(0, 1, 0, torch.device("cpu")), resume="false")


def bare_steps(
    trainer: Trainer, batches: list[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[float, float]:
    """(wall, CPU) seconds of the model steps alone over ``batches``, from the trainer's weights."""
    cfg = trainer.cfg
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model)
    model.load_state_dict(trainer.model.state_dict())
    model.train()
    optimizer = torch.optim.AdamW(param_groups(model, cfg.train.weight_decay), lr=cfg.train.lr)
    scheduler = WarmupCosine(optimizer, cfg.train.warmup_steps, 10**6, cfg.train.min_lr_ratio)
    start, start_cpu = time.perf_counter(), time.process_time()
    for x, y in batches:
        loss = focal_loss(model(x), y, cfg.train.focal_alpha, cfg.train.focal_gamma)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
    return time.perf_counter() - start, time.process_time() - start_cpu


def loop_steps(trainer: Trainer) -> tuple[float, float]:
    """(wall, CPU) seconds of ``Trainer.train_epoch`` over the same batches."""
    start, start_cpu = time.perf_counter(), time.process_time()
    code = trainer.train_epoch(0)
    elapsed = time.perf_counter() - start, time.process_time() - start_cpu
    assert code is None, f"train_epoch stopped with exit code {code}"
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = make_cache(root)
        bare: list[tuple[float, float]] = []
        loop: list[tuple[float, float]] = []
        for repeat in range(args.repeats):
            trainer = make_trainer(root, cache, args.steps, args.batch_size)
            batches = [(x, y) for x, y, _, _ in trainer.data.loader][: args.steps]
            trainer.data.sampler.set_epoch(0)
            assert len(batches) == args.steps == trainer.data.steps_per_epoch
            bare_steps(trainer, batches[:1])  # warm-up: first-call allocations, thread pools
            if repeat % 2 == 0:  # alternate the order, so neither always runs on a warmer cache
                bare.append(bare_steps(trainer, batches))
                loop.append(loop_steps(trainer))
            else:
                loop.append(loop_steps(trainer))
                bare.append(bare_steps(trainer, batches))
            trainer.close(0)
    windows = args.steps * args.batch_size
    print(f"{args.steps} steps x batch {args.batch_size}, smoke model, 60 s windows, CPU")
    print(f"  (best of {args.repeats}; CPU time is the steadier figure on a shared machine)")
    for i, clock in enumerate(("wall", "CPU")):
        b, lp = min(t[i] for t in bare), min(t[i] for t in loop)
        print(
            f"  {clock:4s} bare model steps: {b / args.steps:7.3f} s/step {windows / b:7.2f} win/s"
        )
        print(
            f"  {clock:4s} training loop   : {lp / args.steps:7.3f} s/step {windows / lp:7.2f} win/s"
        )
        print(
            f"  {clock:4s} loop / bare     : {lp / b:7.3f} (overhead {lp / b - 1:+.1%}, target <= +10%)"
        )
    cpu_overhead = min(t[1] for t in loop) / min(t[1] for t in bare) - 1
    print(f"  {'PASS' if cpu_overhead <= TARGET_OVERHEAD else 'FAIL'} (CPU time)")


if __name__ == "__main__":
    main()
