"""The stages of the GPU check, run in order in this one process (package docstring).

Each stage's result lands in the report, and the report on disk, as soon as the stage ends (a
stage may save partial results sooner); an exception, or a time budget spent, leaves the stage's
one-line reason instead of numbers and the check goes on to the next. Compiled and autotuned
kernels are paid for once: later stages reuse what earlier ones compiled.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from szdet.config import Config
from szdet.config_load import load_config
from szdet.fileio import write_text_atomic
from szdet.gpu_check import components, environment, loader, variants
from szdet.gpu_check.precompile import precompile
from szdet.gpu_check.step import TrainStep, is_out_of_memory
from szdet.kernel_proof import parity
from szdet.kernel_proof.check import mixer_sizes

STAGES = ("environment", "parity", "train_step", "components", "variants", "loader")
REPORT = "gpu_check.json"


class Report:
    """The JSON on disk, rewritten whole (temp file + rename) after every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {}

    def put(self, stage: str, result: dict[str, Any]) -> None:
        self.data[stage] = result
        write_text_atomic(self.path, json.dumps(self.data, indent=2, default=str) + "\n")


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300]}" if text else type(error).__name__


class Check:
    def __init__(self, args: argparse.Namespace, cfg: Config, bundle: dict[str, Any] | None):
        self.args, self.cfg, self.bundle = args, cfg, bundle
        self.device = torch.device(args.device)
        self.report = Report(args.out / REPORT)
        self.deadline = time.monotonic() + args.budget_s
        self.batch = args.batch  # lowered by stage 2 if it runs out of memory
        environment.kernels(self.device)  # before anything asks which Mamba-2 path to take

    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def stage(self, number: int, name: str, body: Callable[[Callable[[dict], None]], dict]) -> None:
        print(
            f"== {number}/{len(STAGES) - 1} {name} ({self.left_s():.0f} s of budget left)",
            flush=True,
        )
        start = time.monotonic()

        def save(partial: dict[str, Any]) -> None:
            self.report.put(name, {**partial, "stage_s": round(time.monotonic() - start, 1)})

        try:
            if self.left_s() <= 0:
                raise TimeoutError(f"the check's budget of {self.args.budget_s:.0f} s was spent")
            result = body(save)
        except Exception as error:  # the stage's reason, then the next stage
            traceback.print_exc()
            result = {"skipped": one_line(error)}
        finally:
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        save(result)
        print(json.dumps(self.report.data[name], default=str)[:1500], flush=True)

    # --- the stages ------------------------------------------------------------------------------

    def environment(self, save: Callable[[dict], None]) -> dict[str, Any]:
        return environment.describe(self.device, self.bundle)

    def parity(self, save: Callable[[dict], None]) -> dict[str, Any]:
        model = self.cfg.model
        if self.device.type != "cuda":  # the interpreter, at the sizes it can afford
            if os.environ.get("TRITON_INTERPRET") != "1":
                raise RuntimeError("on a CPU this stage needs TRITON_INTERPRET=1 (gpu_check.sh)")
            return parity.interpreter_parity(model)
        result: dict[str, Any] = {"tolerance": parity.TOLERANCES, "precompiled": self.precompile()}
        save(result)
        steps = self.cfg.window_samples // model.downsample
        rows_per_pass = max(1, 2**20 // steps)  # ~1M tokens: ~9 GB for the pure path
        for size in mixer_sizes(model):  # a batch's rows: 19 electrodes, or 171 pairs, per window
            module = parity.stream_module(model, size.name, self.device)
            u = torch.randn(self.batch * size.sequences, steps, size.d_model, device=self.device)
            result[size.name] = parity.compare(module, u, torch.bfloat16, rows_per_pass)
            save(result)
            del module, u
        return result

    def precompile(self) -> dict[str, Any]:
        try:
            return precompile(self.cfg, self.batch, self.device)
        except Exception as error:  # no harm done: the autotuner compiles what it needs
            traceback.print_exc()
            return {"skipped": one_line(error)}

    def _timed_step(self) -> tuple[TrainStep, dict[str, Any]]:
        step = TrainStep(self.cfg, self.device, self.batch)
        return step, step.measure(self.args.warmup, self.args.steps)

    def train_step(self, save: Callable[[dict], None]) -> dict[str, Any]:
        tried: list[dict[str, Any]] = []
        while True:
            try:
                step, result = self._timed_step()
                break
            except Exception as error:
                if not is_out_of_memory(error) or self.batch == 1:
                    raise
                tried.append({"batch": self.batch, "error": "out of memory"})
            # The failed attempt's model and activations went with its frame: free them, halve.
            gc.collect()
            torch.cuda.empty_cache()
            self.batch //= 2
        result["out_of_memory_at"] = tried
        save(result)  # the timings are safe on disk before the audit runs
        try:
            result["launch_audit"] = step.launch_audit()
        except Exception as error:  # Triton internals differ by version: keep the timings
            traceback.print_exc()
            result["launch_audit"] = {"skipped": one_line(error)}
        return result

    def components(self, save: Callable[[dict], None]) -> dict[str, Any]:
        return components.time_components(self.cfg, self.device, self.batch, self.args.steps)

    def variants(self, save: Callable[[dict], None]) -> dict[str, Any]:
        baseline = self.report.data.get("train_step", {}).get("windows_per_s")
        result: dict[str, Any] = {"baseline_windows_per_s": baseline, "batch": self.batch}
        for variant in variants.VARIANTS:
            if self.left_s() < self.args.loader_reserve_s:  # leave the loader its time
                result[variant.name] = {"skipped": "time budget: left for the loader stage"}
                continue
            try:
                cfg = variants.variant_config(self.cfg, variant)
                row = TrainStep(cfg, self.device, self.batch).measure(1, self.args.variant_steps)
                row["vs_baseline"] = row["windows_per_s"] / baseline if baseline else None
                row["set"] = " ".join(variants.set_flags(self.cfg, variant))
            except Exception as error:
                traceback.print_exc()
                row = {"skipped": one_line(error)}
            result[variant.name] = row
            save(result)
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        return result

    def loader(self, save: Callable[[dict], None]) -> dict[str, Any]:
        cuda = self.device.type == "cuda"
        return loader.loader_throughput(
            self.cfg,
            self.device,
            self.args.workers,
            recordings=48 if cuda else 4,
            minutes=20 if cuda else 5,
            batches=40 if cuda else 3,
        )

    def run(self) -> int:
        for number, name in enumerate(STAGES):
            self.stage(number, name, getattr(self, name))
        skipped = [n for n in STAGES if "skipped" in self.report.data[n]]
        print(f"== gpu_check: {REPORT} in {self.args.out}; stages skipped: {skipped or 'none'}")
        return 1 if skipped else 0


def run_check(args: argparse.Namespace, bundle: dict[str, Any] | None) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(args.config)
    cpu = args.device == "cpu"
    args.batch = args.batch or (min(cfg.train.batch_size, 2) if cpu else cfg.train.batch_size)
    args.workers = cfg.train.num_workers if args.workers is None else args.workers
    print(f"== gpu_check: {args.config} on {args.device}, batch {args.batch}, out {args.out}")
    sys.stdout.flush()
    return Check(args, cfg, bundle).run()
