"""The speed variants (src/szdet/gpu_check/variants.py) on this CPU, against the reference model
measured in the same run: forward GMAC and parameters per 60 s window, and the forward time of
one window at batch 1 (what `szdet detect` pays per window; the GPU figures come from stage 4 of
scripts/gpu_check.sh).

    .venv/bin/python benchmarks/bench_variants.py [--config configs/cloud/train.yaml] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from szdet.config import Config
from szdet.config_load import load_config
from szdet.gpu_check.variants import VARIANTS, Variant, variant_config
from szdet.models import build_model
from szdet.models.summary import count_parameters, forward_flops

ROOT = Path(__file__).resolve().parent.parent


def forward_times(cfgs: list[Config], repeats: int) -> list[float]:
    """Best forward time of one window for each config, measured round-robin (each round times
    every model once) so that the machine's drift falls on all of them alike."""
    torch.manual_seed(0)
    models = [build_model(cfg.model).eval() for cfg in cfgs]
    inputs = [torch.randn(1, cfg.model.in_channels, cfg.window_samples) for cfg in cfgs]
    best = [float("inf")] * len(cfgs)
    with torch.no_grad():
        for model, x in zip(models, inputs, strict=True):
            model(x)  # warm-up
        for _ in range(repeats):
            for i, (model, x) in enumerate(zip(models, inputs, strict=True)):
                start = time.perf_counter()
                model(x)
                best[i] = min(best[i], time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs/cloud/train.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    print(f"{args.config}: one {cfg.windows.length_s:g} s window, batch 1, forward, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print(f"{'variant':<15}{'GMAC fwd':>10}{'params':>12}{'forward s':>11}{'vs reference':>14}")
    variants = (Variant("reference", "the defaults", lambda m: {}), *VARIANTS)
    cfgs = [variant_config(cfg, variant) for variant in variants]
    seconds = forward_times(cfgs, args.repeats)
    for variant, each, t in zip(variants, cfgs, seconds, strict=True):
        gmac = forward_flops(each.model, each.window_samples)["total"] / 2e9
        params = count_parameters(build_model(each.model))
        print(f"{variant.name:<15}{gmac:>10.2f}{params:>12,}{t:>11.2f}{seconds[0] / t:>13.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
