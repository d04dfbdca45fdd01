"""Triton launches without a GPU: record them (grids, arguments) or run them in the interpreter.

A Triton kernel call goes ``Autotuner.run`` -> (``Heuristics.run``) -> ``JITFunction.run``, which
binds the arguments, compiles for the current device and launches ``grid(bound arguments)``.

- :func:`recording` replaces the last step: it binds the arguments exactly as ``JITFunction.run``
  does for an A100, evaluates the grid, stores the launch and returns without compiling or
  running anything, so meta tensors of any size will do (on a GPU, ``execute=True`` records the
  grid and then runs the launch, the autotuner untouched). Its autotuner goes through every config
  (on a GPU the autotuner benchmarks them all, and any one may win), so each kernel's largest
  grid, and every variant the AOT compile must build, is seen.
- :func:`one_config` is for ``TRITON_INTERPRET=1`` runs on real CPU tensors: the autotuner takes
  the first config instead of timing them all, after the reset to zero a GPU does before its
  final run.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from szdet.models.kernel_proof.shims import A100, patched


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
def one_config() -> Iterator[None]:
    """Under the interpreter: each autotuned kernel runs its first config (module docstring)."""
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
