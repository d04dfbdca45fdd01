"""Windows in parallel on a CPU (evaluate/cpu_workers.py): one core per forward, the same tracks."""

import os
import threading

import numpy as np
import pytest
import torch

from montage_support import write_referential_edf
from szdet import device
from szdet.data.edf import EdfSignal
from szdet.evaluate.cpu_workers import CoreWorkers
from szdet.evaluate.inference import load_detector
from test_evaluate_cli import trained  # noqa: F401  (the tiny trained checkpoint)


@pytest.fixture
def three_threads():
    """torch at 3 threads in this (the calling) thread, and as the process-wide value."""
    saved = torch.get_num_threads()
    torch.set_num_threads(3)
    yield
    torch.set_num_threads(saved)


def threads_of_a_new_thread() -> int:
    """The intra-op threads a thread started now takes at its first op (the process-wide value)."""
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return seen[0]


def test_each_worker_runs_torch_on_one_core_and_the_caller_keeps_its_threads(three_threads):
    both_running = threading.Barrier(2, timeout=30)  # broken (an error) if the parts ran in turn

    def forward(part: torch.Tensor) -> tuple[int, int, bool]:
        both_running.wait()
        return torch.get_num_threads(), threading.get_ident(), torch.is_grad_enabled()

    with CoreWorkers(2) as workers:
        assert torch.get_num_threads() == 3
        assert threads_of_a_new_thread() == 3  # the process-wide value is put back
        parts = workers.map(forward, torch.zeros(4, 1))
    assert [threads for threads, _, _ in parts] == [1, 1]
    idents = {ident for _, ident, _ in parts}
    assert len(idents) == 2 and threading.get_ident() not in idents
    assert not any(grad for _, _, grad in parts)  # no autograd in the workers either
    assert torch.get_num_threads() == 3 and threads_of_a_new_thread() == 3


def test_parts_come_back_in_order_and_a_short_batch_uses_fewer_workers():
    x = torch.arange(7.0)[:, None]
    with CoreWorkers(3) as workers:
        assert [p.flatten().tolist() for p in workers.map(lambda p: p, x)] == [
            [0, 1, 2],
            [3, 4, 5],
            [6],
        ]
        assert len(workers.map(lambda p: p, x[:2])) == 2


def test_a_workers_error_reaches_the_caller():
    def forward(part: torch.Tensor) -> torch.Tensor:
        if part[0] > 0:
            raise RuntimeError("window 2 failed")
        return part

    with CoreWorkers(2) as workers, pytest.raises(RuntimeError, match="window 2 failed"):
        workers.map(forward, torch.arange(4.0))


def test_detect_on_cores_in_parallel_gives_the_track_of_one_forward(trained, tmp_path):  # noqa: F811
    """The real model on a real EDF: windows split over 3 workers (batches of 2 per worker, so
    parts of unequal size at the chunk ends) against one forward over the whole batch of 2."""
    edf = write_referential_edf(tmp_path / "rec.edf", 330.0, 256.0, "EEG {}-REF", seed=5)
    tracks = {}
    for workers in (1, 3):
        overrides = [f"evaluate.cpu_workers={workers}", "evaluate.cpu_batch_size=2"]
        detector = load_detector(trained["best"], overrides)
        assert detector.cpu_workers == workers
        assert detector.batch_size == 2 * workers
        cfg = detector.cfg
        tracks[workers] = detector.predict_edf(
            EdfSignal(edf, cfg.preprocess, cfg.data.montage, chunk_s=100.0), show_progress=False
        )
    (one, one_evidence), (three, three_evidence) = tracks[1], tracks[3]
    np.testing.assert_allclose(three, one, rtol=0, atol=1e-6)
    np.testing.assert_allclose(three_evidence, one_evidence, rtol=0, atol=1e-5)
    assert one.max() > 0


@pytest.mark.parametrize(
    ("threads", "cpu_max", "expected"),
    [(3, "max 100000", min(3, len(os.sched_getaffinity(0)))), (3, "150000 100000", 1),
     (1, "max 100000", 1)],
)  # fmt: skip
def test_cpu_workers_default_to_the_cores_this_process_may_use(
    trained,  # noqa: F811
    tmp_path,
    monkeypatch,
    threads,
    cpu_max,
    expected,
):
    """torch's threads, lowered to the CPU affinity and a container's quota, never raised."""
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    monkeypatch.setattr(device, "CGROUP_ROOT", tmp_path)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert load_detector(trained["best"]).cpu_workers == expected
        assert torch.get_num_threads() == expected  # so onnxruntime and numba's rows follow too
    finally:
        torch.set_num_threads(saved)


def test_a_worker_that_cannot_start_fails_the_with_instead_of_hanging(monkeypatch):
    saved, set_threads = torch.get_num_threads(), torch.set_num_threads

    def refused_in_workers(n: int) -> None:
        if threading.current_thread().name.startswith("szdet-core"):
            raise RuntimeError("no thread for you")
        set_threads(n)

    monkeypatch.setattr(torch, "set_num_threads", refused_in_workers)
    outcome: list[BaseException] = []

    def enter() -> None:
        try:
            with CoreWorkers(2):
                pass
        except RuntimeError as error:
            outcome.append(error)

    caller = threading.Thread(target=enter, daemon=True)  # daemon: a hang cannot hold pytest
    caller.start()
    caller.join(timeout=30)
    assert not caller.is_alive(), "CoreWorkers hung on a worker that failed to start"
    assert [str(error) for error in outcome] == ["no thread for you"]
    assert torch.get_num_threads() == saved
