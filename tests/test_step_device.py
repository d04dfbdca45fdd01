"""The training step leaves the device alone: no host read per step (the figures are summed on the
device and read at boundaries), the batch crosses as float16, a non-finite step is skipped on the
device (fused AdamW's found_inf), and max_nonfinite_in_row still stops a run whose bad streak
ended between two reads. On CPU, ``aten::_local_scalar_dense`` (behind every ``.item()``,
``float()`` and ``bool()`` of a tensor) is what would make the host wait for a CUDA device.
"""

import collections
import logging
import math

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from szdet.errors import EXIT_NONFINITE
from szdet.state.run_dir import read_metrics
from szdet.train.distributed import DistInfo
from szdet.train.monitor import StepMonitor
from szdet.train.step import Stepper, StepResult
from train_support import in_process_trainer, nan_output_on

CPU = DistInfo(0, 1, 0, torch.device("cpu"))


def host_reads(fn) -> collections.Counter:
    """The ``_local_scalar_dense`` calls of ``fn()``, by the op that made them."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return collections.Counter(
        e.cpu_parent.cpu_parent.name if e.cpu_parent and e.cpu_parent.cpu_parent else "python"
        for e in prof.events()
        if e.name == "aten::_local_scalar_dense"
    )


def fused_stepper(trainer) -> Stepper:
    """The trainer's step with the fused AdamW that CUDA gets (loop.py), here on the CPU."""
    t = trainer.stepper
    opt = torch.optim.AdamW(trainer.model.parameters(), lr=trainer.cfg.train.lr, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    return Stepper(t.cfg, t.info, t.model, t.ddp_model, opt, sched, None)


@pytest.mark.slow
def test_a_step_reads_nothing_from_the_device_but_eighs_own_error_check(tmp_path, cache_dir):
    trainer = in_process_trainer(tmp_path, cache_dir)
    step = fused_stepper(trainer)
    x, y, node_y, ids = next(iter(trainer.data.loader))
    assert x.dtype == torch.float16  # as cached: half the bytes of float32 cross to the device
    seen = []
    trainer.model.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    step(x, y, node_y)  # the first creates AdamW's state

    def two_steps():
        for _ in range(2):
            trainer.monitor.record(step(x, y, node_y), ids)

    reads = host_reads(two_steps)
    # The CPU's fused AdamW kernel reads its step counts where they are, on the host; the CUDA
    # one reads them inside the kernel.
    del reads["aten::_fused_adamw_"]
    # torch.linalg.eigh checks its error codes on the host, with no variant that does not
    # (models/graph.py); nothing else in a step reads the device.
    assert reads == {"aten::_linalg_check_errors": 2}, reads
    assert seen == [torch.float32] * 3  # widened on the device
    trainer.monitor.read(False, False, CPU)
    assert trainer.monitor.interval_steps == 2 and trainer.monitor.nonfinite_total == 0
    trainer.close(0)


@pytest.mark.slow
def test_fused_adamw_skips_a_nonfinite_step_on_the_device(tmp_path, cache_dir):
    trainer = in_process_trainer(tmp_path, cache_dir)
    step = fused_stepper(trainer)
    x, y, node_y, _ = next(iter(trainer.data.loader))
    step(x, y, node_y)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    moments = [s["exp_avg"].clone() for s in step.optimizer.state.values()]
    first = next(p for p in trainer.model.parameters() if p.requires_grad)
    handle = first.register_hook(lambda grad: grad * math.inf)
    result = step(x, y, node_y)
    assert result.skipped and result.bad_here and torch.isfinite(result.loss)
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    states = list(step.optimizer.state.values())
    assert all(s["step"] == 1 for s in states)  # the skipped step is not counted either
    assert all(torch.equal(m, s["exp_avg"]) for m, s in zip(moments, states, strict=True))
    handle.remove()
    assert not step(x, y, node_y).skipped and all(s["step"] == 2 for s in states)
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    trainer.close(0)


@pytest.mark.slow
def test_an_eigh_failure_is_a_skipped_step(tmp_path, cache_dir, monkeypatch):
    trainer = in_process_trainer(tmp_path, cache_dir)
    x, y, node_y, _ = next(iter(trainer.data.loader))
    eigh, calls = torch.linalg.eigh, []

    def failing_once(a):
        calls.append(1)
        if len(calls) == 1:
            raise torch.linalg.LinAlgError("linalg.eigh: the algorithm failed to converge")
        return eigh(a)

    monkeypatch.setattr(torch.linalg, "eigh", failing_once)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    result = trainer.stepper(x, y, node_y)
    assert len(calls) == 2  # a forward of silence, so this rank backpropagates with the rest
    assert result.skipped and result.bad_here and not torch.isfinite(result.loss)
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert not trainer.stepper(x, y, node_y).skipped
    trainer.close(0)


def fake_step(loss: float, norm: float = 1.0) -> StepResult:
    loss_t, norm_t = torch.tensor(loss), torch.tensor(norm)
    bad = ~(loss_t.isfinite() & norm_t.isfinite())
    return StepResult(loss_t, norm_t, bad, bad, lr=0.1)


def test_monitor_sums_on_the_device_as_the_host_would_and_keeps_runs_across_reads():
    monitor = StepMonitor(10, 4, torch.device("cpu"), 1.0)
    losses = [0.125, math.nan, math.nan, 0.75, math.inf, 0.375]
    for i, loss in enumerate(losses[:4]):
        monitor.record(fake_step(loss), torch.tensor([i]))
    with pytest.raises(AssertionError):
        monitor.state_dict()  # not read yet: the host copies are stale
    found = monitor.read(save_due=True, stop_due=False, info=CPU)
    assert (found.save, found.stop, found.peak_in_row, found.grad_norm) == (True, False, 2, 1.0)
    assert found.bad_ids.tolist() == [2]  # the last batch with a non-finite figure
    assert monitor.interval_loss_sum == 0.125 + 0.75 and monitor.nonfinite_total == 2
    row = monitor.step_row(4, 0, 0.1, found.grad_norm)
    assert row["loss"] == (0.125 + 0.75) / 2 and row["nonfinite_total"] == 2
    monitor.record(fake_step(losses[4]), torch.tensor([4]))
    found = monitor.read(False, True, CPU)
    assert (found.stop, found.peak_in_row, found.grad_norm, monitor.nonfinite_in_row) == (
        True, 1, None, 1,
    )  # fmt: skip
    monitor.record(fake_step(losses[5]), torch.tensor([5]))
    monitor.read(False, False, CPU)
    state = monitor.state_dict()
    assert state["epoch_loss_sum"] == 0.125 + 0.75 + 0.375 and state["epoch_steps"] == 3
    assert (state["interval_steps"], state["nonfinite_in_row"]) == (1, 0)
    assert monitor.end_epoch() == (0.125 + 0.75 + 0.375) / 3
    resumed = StepMonitor(10, 4, torch.device("cpu"), 1.0)
    resumed.load_state_dict(state, start_step=6)
    resumed.record(fake_step(0.5), torch.tensor([6]))
    resumed.read(False, False, CPU)
    assert resumed.interval_loss_sum == 0.375 + 0.5 and resumed.nonfinite_total == 3


@pytest.mark.slow
def test_a_nonfinite_streak_that_ended_between_reads_still_stops_the_run(
    tmp_path, cache_dir, caplog
):
    trainer = in_process_trainer(
        tmp_path,
        cache_dir,
        max_nonfinite_in_row=2,
        log_every_steps=3,
        checkpoint_every_steps=None,
        max_steps_per_epoch=5,
    )
    nan_output_on({1, 2}, trainer)
    with caplog.at_level(logging.ERROR, logger="szdet.train.loop"):
        code = trainer.fit()
    trainer.close(code)
    assert code == EXIT_NONFINITE  # noticed at the first read, step 3, after a finite step
    assert "2 non-finite losses or gradients in a row" in caplog.text and "at step 3" in caplog.text
    (row,) = read_metrics(trainer.run.metrics)  # the interval's one finite step: step 3's
    assert (row["step"], row["nonfinite_total"]) == (3, 2)
    assert row["loss"] is not None and row["grad_norm"] is not None


@pytest.mark.slow
def test_the_loss_is_the_detections_plus_the_weighted_node_loss(tmp_path, cache_dir):
    """The auxiliary node loss (train.node_loss_weight) reaches the step, masked where the
    recording does not say where its seizure is."""
    from szdet.train.losses import focal_loss

    trainer = in_process_trainer(tmp_path, cache_dir, node_loss_weight=0.7)
    # A batch with a seizure: the synthetic corpus says where it is.
    x, y, node_y, _ = next(b for b in trainer.data.loader if (b[2] == 1).any())
    assert (node_y == 0).any() and y.any()
    node_y[0] = -1  # as for a recording with a seizure and no per-channel rows
    trainer.model.eval()  # no dropout: the same forward twice
    with torch.no_grad():
        logits, node_logits = trainer.model(x.float(), with_nodes=True)
    cfg = trainer.cfg.train
    detection = focal_loss(logits, y, cfg.focal_alpha, cfg.focal_gamma)
    nodes = focal_loss(node_logits[1:], node_y[1:].float(), cfg.focal_alpha, cfg.focal_gamma)
    result = trainer.stepper(x, y, node_y)
    assert result.loss.item() == pytest.approx((detection + 0.7 * nodes).item(), rel=1e-5)
    assert 0.7 * nodes.item() > 1e-3 * detection.item()  # not vanishing beside the detection's
    trainer.close(0)
