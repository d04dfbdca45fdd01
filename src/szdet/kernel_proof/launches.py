"""Triton launches without a GPU: record them (grids, arguments) or run them in the interpreter.

A Triton kernel call goes ``Autotuner.run`` -> (``Heuristics.run``) -> ``JITFunction.run``, which
binds the arguments, compiles for the current device and launches ``grid(bound arguments)``.

- :func:`recording` replaces the last step: it binds the arguments exactly as ``JITFunction.run``
  does for an A100, evaluates the grid, stores the launch and returns without compiling or
  running anything, so meta tensors of any size will do (on a GPU, ``execute=True`` records the
  grid and then runs the launch, the autotuner untouched). Its autotuner goes through every config
  (on a GPU the autotuner benchmarks them all, and any one may win), so each kernel's largest
  grid, and every variant the AOT compile must build, is seen.
- :func:`interpreted` is for ``TRITON_INTERPRET=1`` runs on real CPU tensors: the autotuner takes
  the first config instead of timing them all, after the reset to zero a GPU does before its
  final run; and ``tl.dot`` on bf16 operands computes what a GPU computes (below).

Triton's interpreter keeps bf16 tiles as their uint16 bit patterns (numpy has no bf16) and its
``tl.dot`` multiplies those patterns as integers: a 16x16 bf16 dot comes out ~1e10 off. A GPU's
tensor cores multiply the bf16 values exactly and accumulate in float32, so widening the operands
to float32 first computes the GPU's result; :func:`interpreter_dot_error` measures the flaw.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from szdet.kernel_proof.shims import A100, patched


@dataclass
class Launch:
    kernel: str
    grid: tuple[int, int, int]
    jit_fn: Any = field(repr=False)  # triton.runtime.jit.JITFunction
    args: tuple = field(repr=False)
    kwargs: dict = field(repr=False)


@functools.cache
def _binder(jit_fn: Any, capability: int) -> tuple[Any, Any]:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    backend = make_backend(GPUTarget("cuda", capability, 32))
    return create_function_from_signature(jit_fn.signature, jit_fn.params, backend), backend


def bind(jit_fn: Any, capability: int, args: tuple, kwargs: dict) -> tuple[dict, list, Any, Any]:
    """(bound arguments, specialization, options, backend), as ``JITFunction.run`` computes them
    for a GPU of this compute capability."""
    binder, backend = _binder(jit_fn, capability)
    bound, specialization, options = binder(*args, **kwargs)
    return bound, specialization, options, backend


def _grid3(grid: Any, bound: dict) -> tuple[int, int, int]:
    dims = tuple(int(d) for d in (grid(bound) if callable(grid) else grid))
    padded = (*dims, 1, 1, 1)
    return padded[0], padded[1], padded[2]


@contextlib.contextmanager
def recording(execute: bool = False) -> Iterator[list[Launch]]:
    """Record every Triton launch made inside the context, running none (module docstring);
    ``execute``: on a GPU, record and run them, the autotuner left as it is."""
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    launches: list[Launch] = []
    run = JITFunction.run

    def record(self: Any, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> Any:
        bound, _, _, _ = bind(self, A100.capability, args, kwargs)
        kept = ((), {}) if execute else (args, kwargs)  # real tensors would pin the activations
        launches.append(Launch(self.__name__, _grid3(grid, bound), self, *kept))
        return run(self, *args, grid=grid, warmup=warmup, **kwargs) if execute else None

    def every_config(self: Any, *args: Any, **kwargs: Any) -> None:
        self.nargs = dict(zip(self.arg_names, args, strict=False))  # defaults may be omitted
        try:
            configs = self.prune_configs(kwargs)
            for config in configs:
                self.fn.run(*args, **kwargs, **config.all_kwargs())
            self.best_config = configs[0]  # read back by some callers (ssd_state_passing.py)
        finally:
            self.nargs = None

    with contextlib.ExitStack() as stack:
        stack.enter_context(patched(JITFunction, "run", record))
        if not execute:
            stack.enter_context(patched(Autotuner, "run", every_config))
        yield launches


@contextlib.contextmanager
def interpreted() -> Iterator[None]:
    """Under the interpreter: each autotuned kernel runs its first config, and bf16 dots are
    computed as on a GPU (module docstring)."""
    with _first_config(), _bf16_dots_widened():
        yield


@contextlib.contextmanager
def _bf16_dots_widened() -> Iterator[None]:
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    create_dot = builder.create_dot

    def widen(handle: Any) -> Any:
        if handle.dtype.scalar != tl.bfloat16:
            return handle
        bits = interpreter._convert_float(handle.data, tl.bfloat16, tl.float32, None)
        return interpreter.TensorHandle(bits.view(np.float32), tl.float32)

    def dot(self: Any, a: Any, b: Any, *args: Any) -> Any:
        return create_dot(self, widen(a), widen(b), *args)

    with patched(builder, "create_dot", dot):
        yield


def interpreter_dot_error(widened: bool) -> float:
    """max |error| / max |result| of a 16x16 bf16 ``tl.dot`` under the interpreter, against
    torch in float32 (TRITON_INTERPRET=1 must be set before Triton loads)."""
    import torch
    import triton
    import triton.language as tl

    @triton.jit
    def dot16(a_ptr: Any, b_ptr: Any, c_ptr: Any) -> None:
        rows = tl.arange(0, 16)[:, None] * 16 + tl.arange(0, 16)[None, :]
        tl.store(c_ptr + rows, tl.dot(tl.load(a_ptr + rows), tl.load(b_ptr + rows)))

    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(16, 16, generator=gen).to(torch.bfloat16) for _ in range(2))
    c = torch.empty(16, 16)
    with _bf16_dots_widened() if widened else contextlib.nullcontext():
        dot16[(1,)](a, b, c)
    want = a.float() @ b.float()
    return float((c - want).abs().max() / want.abs().max())


@contextlib.contextmanager
def _first_config() -> Iterator[None]:
    from triton.runtime.autotuner import Autotuner

    def first_config(self: Any, *args: Any, **kwargs: Any) -> Any:
        self.nargs = dict(zip(self.arg_names, args, strict=False))  # defaults may be omitted
        try:
            config = self.best_config = self.prune_configs(kwargs)[0]
            full = {**self.nargs, **kwargs, **config.all_kwargs()}
            self.pre_hook(full, reset_only=True)
            if config.pre_hook is not None:
                config.pre_hook(full)
            return self.fn.run(*args, **kwargs, **config.all_kwargs())
        finally:
            self.nargs = None

    with patched(Autotuner, "run", first_config):
        yield
