"""``python -m szdet.gpu_check``: the GPU check's one process (scripts/gpu_check.sh runs it)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from szdet.gpu_check.bundle import use_bundle


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_check", description=__doc__)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--config", type=Path, default=Path("configs/cloud/train.yaml"))
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_out")))
    p.add_argument("--bundle", type=Path, default=Path("device-bundle"),
                   help="make device-bundle's folder, used where it exists")  # fmt: skip
    p.add_argument("--batch", type=int, default=None,
                   help="windows per step (default: the config's; 2 on a CPU)")  # fmt: skip
    p.add_argument("--steps", type=int, default=None, help="timed steps (10; 2 on a CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps after the first (3; 1)")
    p.add_argument("--variant-steps", type=int, default=None, help="timed steps per variant (5; 1)")
    p.add_argument("--workers", type=int, default=None,
                   help="loader stage workers (default: the config's train.num_workers)")  # fmt: skip
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="stages not started by then are skipped, so the check ends in time")  # fmt: skip
    p.add_argument("--loader-reserve-s", type=float, default=60.0,
                   help="variants stop when less than this is left, for the loader stage")  # fmt: skip
    args = p.parse_args(argv)
    cpu = args.device == "cpu"
    for name, on_gpu, on_cpu in (("steps", 10, 2), ("warmup", 3, 1), ("variant_steps", 5, 1)):
        if getattr(args, name) is None:
            setattr(args, name, on_cpu if cpu else on_gpu)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    bundle = use_bundle(args.bundle) if args.bundle.is_dir() else None
    from szdet.gpu_check.run import run_check  # after the bundle: the config needs pydantic

    return run_check(args, bundle)


if __name__ == "__main__":
    sys.exit(main())
