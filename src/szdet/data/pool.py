"""The cache build's process pool, which leaves no process behind however the build ends.

Ctrl-C, SIGTERM or an error end the workers at once (what they were building is redone by the
rerun, szdet.data.cache); kill -9 of the build, which runs no cleanup, ends them too.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def run_parallel(build: Callable[[T], R], todo: list[T], workers: int) -> Iterator[R]:
    """``build`` each item, results in completion order, in this process or a pool of
    ``workers``."""
    if workers <= 1 or len(todo) <= 1:
        yield from map(build, todo)
        return
    # forkserver: workers start from a clean process, not a fork of one running threads (tqdm)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["szdet.data.cache", "mne.io"])  # imported once, not per worker
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(todo)),
        mp_context=context,
        initializer=_exit_with,
        initargs=(os.getpid(),),
    )
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        futures = [pool.submit(build, item) for item in todo]
        for future in as_completed(futures):
            yield future.result()
    except BaseException:  # Ctrl-C, SIGTERM, an error: end the recordings in flight too (a
        # rerun redoes them) rather than wait for them; records already written stay
        for worker in pool._processes.values():  # Executor.terminate_workers() is Python 3.14+
            worker.terminate()
        raise
    finally:  # and do not wait for the queued recordings
        signal.signal(signal.SIGTERM, previous)
        pool.shutdown(wait=True, cancel_futures=True)


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM (docker stop, a preempted machine) stops a parallel build as Ctrl-C does: its
    default would end this process at once, leaving the pool's processes running."""
    raise KeyboardInterrupt


def _exit_with(parent: int) -> None:
    """Pool initializer: end this worker as soon as the build process ends, even by kill -9.

    A worker's parent is the forkserver, which lives as long as its workers (they hold its alive
    pipe), so neither PR_SET_PDEATHSIG nor polling os.getppid() would see the build die; a pidfd
    of the build process becomes readable when it exits, reaped or not, and never names a reused
    pid. Linux only (pidfd_open); elsewhere workers end with the pool as before.
    """
    if not hasattr(os, "pidfd_open"):
        return
    try:
        pidfd = os.pidfd_open(parent)
    except ProcessLookupError:  # gone already
        os._exit(1)
    threading.Thread(target=_exit_when_readable, args=(pidfd,), daemon=True).start()


def _exit_when_readable(fd: int) -> None:
    select.select([fd], [], [])
    os._exit(1)  # at once: the temporary file in progress is deleted by the rerun
