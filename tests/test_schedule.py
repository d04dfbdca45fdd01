"""Warm-up + cosine: values at the key steps, and an exact state-dict round trip."""

import itertools
import math

import pytest
import torch

from szdet.train.schedule import WarmupCosine, lr_factor


def make(peak_lr=1e-3, warmup=10, total=110, min_ratio=0.01):
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.AdamW(
        [{"params": params[:1], "weight_decay": 0.1}, {"params": params[1:], "weight_decay": 0.0}],
        lr=peak_lr,
    )
    return opt, WarmupCosine(opt, warmup, total, min_ratio)


def rates_over(opt, sched, steps):
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


def test_values_at_key_steps():
    opt, sched = make()
    rates = rates_over(opt, sched, 130)
    assert rates[0] == pytest.approx(1e-4)  # 1/10 of the peak on the first step
    assert rates[4] == pytest.approx(5e-4)
    assert rates[9] == pytest.approx(1e-3)  # warm-up ends at the peak
    assert rates[10] == pytest.approx(1e-3)  # cosine starts at the peak
    mid = 1e-5 + (1e-3 - 1e-5) * 0.5  # half-way through the decay: the mean of peak and floor
    assert rates[60] == pytest.approx(mid)
    assert rates[110] == pytest.approx(1e-5)  # floor reached at total_steps ...
    assert rates[129] == pytest.approx(1e-5)  # ... and kept after
    assert all(a >= b for a, b in itertools.pairwise(rates[10:]))  # monotone decay
    assert [g["lr"] / rates[-1] for g in opt.param_groups] == pytest.approx([1.0, 1.0])


def test_no_warmup_starts_at_peak():
    assert lr_factor(0, 0, 100, 0.1) == 1.0
    assert lr_factor(50, 0, 100, 0.1) == pytest.approx(
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2))
    )


def test_state_dict_round_trip_resumes_exactly():
    opt, sched = make()
    rates_over(opt, sched, 37)
    saved_opt, saved_sched = opt.state_dict(), sched.state_dict()
    expected = rates_over(opt, sched, 50)

    fresh_opt, fresh_sched = make()
    fresh_opt.load_state_dict(saved_opt)
    fresh_sched.load_state_dict(saved_sched)
    assert fresh_opt.param_groups[0]["lr"] == expected[0]
    assert rates_over(fresh_opt, fresh_sched, 50) == expected  # bit-identical, not approximate
