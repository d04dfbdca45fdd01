"""Compile every kernel and autotune config a training step can launch, for sm_80 and sm_90.

Each recorded launch (launches.py: every autotune config, the arguments as the step passes them,
bf16 where autocast makes them so) is bound for the target exactly as ``JITFunction.run`` binds
it there, and compiled to a cubin by ``triton.compile`` (Triton's own ptxas). The compiled
kernel's shared memory is checked against the target's per-block maximum: a config over it fails
at launch on that GPU, which fails the autotuner and the step.

Launches that bind alike (argument types, alignment and integer specialisation, constexprs,
options) share one binary, as in ``JITFunction.run``'s cache; each binary is compiled once, on
every core. Alignment alone changes shared memory (swizzled layouts follow the vector width),
so no variant is left out.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from szdet.kernel_proof.launches import Launch, bind
from szdet.kernel_proof.shims import GpuModel

# (gpu, kernel name, ASTSource, options) to compile; set before the worker processes fork.
_JOBS: list[tuple[GpuModel, str, Any, Any]] = []


def _variants(launches: list[Launch], gpu: GpuModel) -> list[tuple[str, Any, Any]]:
    """(kernel, ASTSource, options) of each distinct binary the launches need on ``gpu``."""
    from triton.compiler import ASTSource

    variants: dict[tuple, tuple[str, Any, Any]] = {}
    for launch in launches:
        kwargs = {"debug": False, **launch.kwargs}
        bound, specialization, options, backend = bind(
            launch.jit_fn, gpu.capability, launch.args, kwargs
        )
        key = (id(launch.jit_fn), str(specialization), str(sorted(launch.kwargs.items())))
        if key in variants:
            continue
        options, signature, constexprs, attrs = launch.jit_fn._pack_args(
            backend, kwargs, bound, specialization, options
        )
        source = ASTSource(launch.jit_fn, signature, constexprs, attrs)
        variants[key] = (launch.kernel, source, options)
    return list(variants.values())


def _compile(index: int) -> int | str:
    """Shared memory in bytes of job ``index``, or the compiler's error."""
    import triton
    from triton.backends.compiler import GPUTarget

    gpu, _, source, options = _JOBS[index]
    try:
        target = GPUTarget("cuda", gpu.capability, 32)
        return int(triton.compile(source, target=target, options=options.__dict__).metadata.shared)
    except Exception as e:  # a compile error is a finding, reported with its kernel
        return f"{type(e).__name__}: {str(e)[:300]}"


def compile_all(launches_by_gpu: dict[GpuModel, list[Launch]]) -> dict[str, Any]:
    """Compile each variant once per target GPU, from the launches recorded for it, on every
    core; report shared memory against that GPU's limit."""
    start = time.perf_counter()
    _JOBS.clear()
    for gpu, launches in launches_by_gpu.items():
        variants = _variants(launches, gpu)
        _JOBS.extend((gpu, name, source, options) for name, source, options in variants)
    # Forked workers inherit the jobs (ASTSource does not pickle); compiling is CPU-bound.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1, mp_context=context) as pool:
        results = list(pool.map(_compile, range(len(_JOBS))))
    report: dict[str, Any] = {"targets": {}, "over_shared_memory": [], "failed": []}
    for gpu in launches_by_gpu:
        report["targets"][f"sm_{gpu.capability}"] = {
            "gpu": gpu.name,
            "shared_limit_bytes": gpu.shared_mem_per_block_bytes,
            "binaries": 0,
            "kernels": {},
        }
    for (gpu, name, _, _), result in zip(_JOBS, results, strict=True):
        target = report["targets"][f"sm_{gpu.capability}"]
        if isinstance(result, str):
            report["failed"].append(
                {"target": f"sm_{gpu.capability}", "kernel": name, "error": result}
            )
            continue
        target["binaries"] += 1
        entry = target["kernels"].setdefault(name, {"binaries": 0, "max_shared_bytes": 0})
        entry["binaries"] += 1
        entry["max_shared_bytes"] = max(entry["max_shared_bytes"], result)
        if result > gpu.shared_mem_per_block_bytes:
            report["over_shared_memory"].append(
                {"target": gpu.name, "kernel": name, "shared_bytes": result,
                 "limit_bytes": gpu.shared_mem_per_block_bytes}
            )  # fmt: skip
    _JOBS.clear()
    report["compile_s"] = round(time.perf_counter() - start, 1)
    return report
