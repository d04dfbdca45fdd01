"""Windows in parallel on a CPU: each core runs whole forwards of its own windows.

By default torch splits every op of a forward over all cores. This model's CPU forward is
hundreds of mid-sized ops (the Mamba-2 streams' per-step work, products with 16-64 inner
channels), and on 2 cores that split buys only 1.44-1.56x per component; windows are independent,
so one forward per core buys nearly 2x instead (benchmarks/bench_cpu_inference.py: "every op on
all cores" beside the rows detect runs). The Python threads overlap because torch's ops and the
compiled Mamba-2 loop (models/mamba2_cpu.py) run without the GIL.

torch's intra-op thread count belongs to each thread (OpenMP's and MKL's settings are per
thread); a thread takes the process-wide value at its first op, and ``torch.set_num_threads``
also writes that value. So each worker sets itself to one thread as it starts, and the caller
puts the process-wide value back once every worker has.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch
from torch import Tensor

T = TypeVar("T")


class CoreWorkers:
    """``workers`` threads, each running torch on one core, for the length of a ``with``."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._started = threading.Barrier(workers + 1)
        self._failure: BaseException | None = None
        self._pool = ThreadPoolExecutor(workers, "szdet-core", initializer=self._one_core)

    def __enter__(self) -> CoreWorkers:
        process_threads = torch.get_num_threads()
        # The pool starts a thread per task while none is idle: each blocks in the barrier until
        # all have set themselves to one core.
        try:
            started = [self._pool.submit(lambda: None) for _ in range(self.workers)]
            self._started.wait()
            for task in started:
                task.result()
        except BaseException:
            self._started.abort()  # no thread left waiting for one that failed
            self._pool.shutdown(wait=True)
            if self._failure is not None:  # the cause, not the pool's "broken" that follows it
                raise self._failure from None
            raise
        finally:
            torch.set_num_threads(process_threads)
        return self

    def __exit__(self, *_: object) -> None:
        self._pool.shutdown(wait=True)

    def _one_core(self) -> None:
        try:
            torch.get_num_threads()  # takes the process-wide value first, so it is not re-read
            torch.set_num_threads(1)
        except BaseException as error:  # the pool would only log it: the caller raises it
            self._failure = error
            self._started.abort()
            raise
        self._started.wait()

    def map(self, forward: Callable[[Tensor], T], x: Tensor) -> list[T]:
        """``forward`` of consecutive parts of the batch ``x``, one per worker (fewer if ``x`` has
        fewer windows), without autograd, in the order of ``x``."""

        def run(part: Tensor) -> T:
            with torch.no_grad():  # autograd's mode is per thread too
                return forward(part)

        size = math.ceil(len(x) / self.workers)
        return list(self._pool.map(run, x.split(size)))
