"""The speed variants (src/szdet/gpu_check/variants.py) on this CPU, against the reference model
measured in the same run: forward GMAC and parameters per 60 s window, and the forward time of
one window at batch 1 (what `szdet detect` pays per window; the GPU figures come from stage 4 of
scripts/gpu_check.sh).

    .venv/bin/python benchmarks/bench_variants.py [--config configs/cloud/train.yaml] [--repeats 2]
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


def forward_s(cfg: Config, repeats: int) -> float:
    """Best of ``repeats`` forward passes of one window, after a warm-up."""
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    x = torch.randn(1, cfg.model.in_channels, cfg.window_samples)
    times = []
    with torch.no_grad():
        model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs/cloud/train.yaml")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    print(f"{args.config}: one {cfg.windows.length_s:g} s window, batch 1, forward, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print(f"{'variant':<15}{'GMAC fwd':>10}{'params':>12}{'forward s':>11}{'vs reference':>14}")
    reference = None
    for variant in (Variant("reference", "the defaults", lambda m: {}), *VARIANTS):
        each = variant_config(cfg, variant)
        gmac = forward_flops(each.model, each.window_samples)["total"] / 2e9
        seconds = forward_s(each, args.repeats)
        reference = reference or seconds
        params = count_parameters(build_model(each.model))
        print(f"{variant.name:<15}{gmac:>10.2f}{params:>12,}{seconds:>11.2f}"
              f"{reference / seconds:>13.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
