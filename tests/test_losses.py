"""Focal loss: equals the textbook formula, stays finite at extreme logits, float32 under autocast."""

import math

import pytest
import torch

from szdet.train.losses import focal_loss


def textbook_focal(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float):
    """FL = -alpha_t (1 - p_t)^gamma log(p_t), straight from probabilities in float64."""
    p = torch.sigmoid(logits.double())
    y = targets.double()
    p_t = y * p + (1 - y) * (1 - p)
    alpha_t = alpha * y + (1 - alpha) * (1 - y)
    return (-alpha_t * (1 - p_t) ** gamma * torch.log(p_t)).mean()


@pytest.mark.parametrize(("alpha", "gamma"), [(0.5, 2.0), (0.25, 2.0), (0.75, 0.0), (0.5, 1.5)])
def test_matches_textbook_formula(alpha, gamma):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 300, generator=gen) * 4
    targets = (torch.rand(4, 300, generator=gen) < 0.3).float()
    got = focal_loss(logits, targets, alpha, gamma)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(
        textbook_focal(logits, targets, alpha, gamma).item(), rel=1e-5
    )


def test_gamma_zero_is_weighted_binary_cross_entropy():
    logits = torch.tensor([[-3.0, 0.5, 2.0, 7.0]])
    targets = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    assert focal_loss(logits, targets, alpha=0.5, gamma=0.0).item() == pytest.approx(
        0.5 * bce.item(), rel=1e-6
    )


def test_extreme_logits_give_finite_loss_and_gradients():
    logits = torch.tensor([[-1e4, -100.0, 100.0, 1e4, 1e4, -1e4]], requires_grad=True)
    targets = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0, 1.0]])
    loss = focal_loss(logits, targets)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()
    # Two confidently wrong samples of 1e4 each: the loss is their log-likelihood, not inf or 0.
    assert loss.item() == pytest.approx(0.5 * 2 * 1e4 / 6, rel=1e-4)


def test_easy_samples_weigh_less_than_hard_ones():
    targets = torch.ones(1, 1)
    easy = focal_loss(torch.full((1, 1), 3.0), targets).item()
    hard = focal_loss(torch.full((1, 1), -3.0), targets).item()
    # The focal factor shrinks the easy sample far more than plain cross-entropy's ratio.
    ce_ratio = math.log1p(math.exp(-3.0)) / math.log1p(math.exp(3.0))
    assert easy / hard < ce_ratio / 100


def test_float32_inside_bf16_autocast():
    logits = torch.randn(2, 64)
    targets = (torch.rand(2, 64) < 0.5).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = focal_loss(logits.bfloat16(), targets)
    assert got.dtype == torch.float32
    expected = textbook_focal(logits.bfloat16().float(), targets, 0.5, 2.0)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_known_mask_averages_over_the_known_elements_only():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, generator=gen, requires_grad=True)
    targets = (torch.rand(3, 50, generator=gen) < 0.3).float()
    known = torch.rand(3, 50, generator=gen) < 0.6
    anything = torch.where(known, targets, torch.nan)  # what an unknown target holds is ignored
    got = focal_loss(logits, anything, 0.25, 2.0, known)
    expected = textbook_focal(logits[known], targets[known], 0.25, 2.0)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    got.backward()
    assert torch.isfinite(logits.grad).all() and not logits.grad[~known].any()
    none_known = focal_loss(logits, targets, known=torch.zeros_like(known))
    assert none_known.item() == 0.0  # finite: a batch with nothing known is not a bad step
