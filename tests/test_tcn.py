"""The TCN encoder: today's layout at pool_every=0, the multi-rate and the fused variants."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from szdet.config import ModelConfig
from szdet.config_load import load_config
from szdet.errors import UserError
from szdet.models import build_model
from szdet.models.tcn import FusedTCNBlock, TCNEncoder

ROOT = Path(__file__).resolve().parent.parent
SMALL = [8, 8, 16, 16, 16, 16, 32, 32]  # the reference's 8 layers and width changes, cheap


def reference_tcn(state: dict[str, Tensor], x: Tensor, pool_every: int) -> Tensor:
    """The TCN written out from its state dict: dilation 2**i at the full rate (today's TCN), and
    with pooling a 2x average pool before layers e, 2e, ... and dilations divided by the pooling."""
    pooling, i = 1, 0
    while f"blocks.{i}.conv.weight" in state:
        p = f"blocks.{i}."
        if pool_every and i and i % pool_every == 0:
            x, pooling = F.avg_pool1d(x, 2), pooling * 2
        w, d = state[p + "conv.weight"], 2**i // pooling
        h = F.conv1d(x, w, state[p + "conv.bias"], dilation=d, padding=d * (w.shape[-1] - 1) // 2)
        h = F.gelu(F.group_norm(h, 1, state[p + "norm.weight"], state[p + "norm.bias"]))
        if p + "skip.weight" in state:
            x = F.conv1d(x, state[p + "skip.weight"], state[p + "skip.bias"])
        x, i = h + x, i + 1
    w = state["downsample.weight"]
    return F.conv1d(x, w, state["downsample.bias"], stride=w.shape[-1])


def test_pool_every_0_keeps_todays_state_dict():
    tcn = TCNEncoder(3, [4, 4, 8], kernel_size=5, downsample=4)
    expected = {
        "blocks.0.conv.weight": (4, 3, 5),
        "blocks.0.conv.bias": (4,),
        "blocks.0.norm.weight": (4,),
        "blocks.0.norm.bias": (4,),
        "blocks.0.skip.weight": (4, 3, 1),
        "blocks.0.skip.bias": (4,),
        "blocks.1.conv.weight": (4, 4, 5),
        "blocks.1.conv.bias": (4,),
        "blocks.1.norm.weight": (4,),
        "blocks.1.norm.bias": (4,),
        "blocks.2.conv.weight": (8, 4, 5),
        "blocks.2.conv.bias": (8,),
        "blocks.2.norm.weight": (8,),
        "blocks.2.norm.bias": (8,),
        "blocks.2.skip.weight": (8, 4, 1),
        "blocks.2.skip.bias": (8,),
        "downsample.weight": (8, 8, 4),
        "downsample.bias": (8,),
    }
    assert {k: tuple(v.shape) for k, v in tcn.state_dict().items()} == expected


@pytest.mark.parametrize("pool_every", [0, 2])
def test_output_is_the_written_out_tcn_at_one_step_per_downsample(pool_every):
    torch.manual_seed(0)
    tcn = TCNEncoder(19, SMALL, kernel_size=7, downsample=16, pool_every=pool_every)
    x = torch.randn(2, 19, 1024)
    with torch.no_grad():
        out = tcn(x)
        assert out.shape == (2, SMALL[-1], 1024 // 16)
        assert torch.equal(out, reference_tcn(tcn.state_dict(), x, pool_every))


def receptive_field(pool_every: int) -> int:
    """Input samples that one output step's gradient reaches (first to last non-zero)."""
    torch.manual_seed(0)
    tcn = TCNEncoder(3, [4] * 8, kernel_size=7, downsample=16, pool_every=pool_every).double()
    for block in tcn.blocks:
        block.norm = nn.Identity()  # GroupNorm's statistics span the window; the convs do not
    x = torch.randn(1, 3, 8192, dtype=torch.float64, requires_grad=True)
    out = tcn(x)
    out[0, :, out.shape[-1] // 2].sum().backward()
    assert x.grad is not None
    reached = x.grad[0].abs().sum(0).nonzero().flatten()
    return int(reached[-1] - reached[0]) + 1


def test_multi_rate_keeps_the_receptive_field():
    plain = receptive_field(0)
    assert plain == 6 * (2**8 - 1) + 16  # (kernel - 1) * (2**layers - 1) + downsample
    assert abs(receptive_field(2) - plain) <= 0.1 * plain


def forward_macs(**variant) -> float:
    cfg = ModelConfig()  # the reference widths, one 60 s window at 256 Hz
    with torch.device("meta"):
        tcn = TCNEncoder(
            cfg.in_channels, cfg.tcn_channels, cfg.tcn_kernel_size, cfg.downsample, **variant
        )
        x = torch.zeros(1, cfg.in_channels, 15360)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        tcn(x)
    return counter.get_total_flops() / 2


def test_multi_rate_cuts_the_reference_tcns_macs_at_least_5x():
    plain = forward_macs()
    assert plain > 60e9  # the reference's ~62.75 GMAC: the count sees every layer
    assert forward_macs(fused=True) == plain  # the same convolutions, laid out differently
    assert forward_macs(pool_every=2) * 5 <= plain


@pytest.mark.parametrize("pool_every", [0, 2])
def test_fused_computes_the_plain_tcn_forward_and_gradients(pool_every):
    torch.manual_seed(0)
    plain = TCNEncoder(19, SMALL, kernel_size=7, downsample=16, pool_every=pool_every)
    fused = TCNEncoder(19, SMALL, kernel_size=7, downsample=16, pool_every=pool_every, fused=True)
    fused.load_state_dict(plain.state_dict(), strict=True)
    plain.load_state_dict(fused.state_dict(), strict=True)
    x = torch.randn(2, 19, 2048)
    assert fused.blocks(x).stride(1) == 1  # channels-last between blocks, the plain one is not
    assert plain.blocks(x).stride(1) != 1
    weights = torch.randn(2, SMALL[-1], 2048 // 16)
    outs = []
    for tcn in (plain, fused):
        out = tcn(x)
        (out * weights).sum().backward()
        outs.append(out)
    assert_close_relative(outs[1], outs[0], "output")
    for (name, p), q in zip(plain.named_parameters(), fused.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None
        assert_close_relative(q.grad, p.grad, name)


def assert_close_relative(actual: Tensor, expected: Tensor, name: str) -> None:
    """Equal within 1e-5 of the largest value: float32 sums in another order, not another function."""
    atol = 1e-5 * expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=atol, msg=lambda m: f"{name}: {m}")


def test_fused_blocks_keep_the_convolutions_dtype_under_autocast():
    fused = TCNEncoder(3, [4, 4, 8], kernel_size=3, downsample=4, pool_every=2, fused=True)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        assert fused.blocks(torch.randn(1, 3, 64)).dtype == torch.bfloat16


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.tcn_pool_every=2"],
        ["model.tcn_fused=true"],
        ["model.tcn_pool_every=2", "model.tcn_fused=true"],
    ],
)
def test_v3_model_runs_forward_and_backward_with_each_variant(overrides):
    cfg = load_config(ROOT / "configs/local/smoke.yaml", ["model.dropout=0", *overrides]).model
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model.tcn.blocks[0], FusedTCNBlock) == cfg.tcn_fused
    assert model.tcn.downsample.stride == (cfg.downsample // cfg.tcn_pooling,)
    x = torch.randn(1, 19, 16 * cfg.downsample)
    out = model(x)
    out.square().mean().backward()
    assert out.shape == (1, x.shape[-1]) and torch.isfinite(out).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_a_pooling_that_does_not_divide_downsample_is_refused():
    # pool_every=1 pools 8 layers' rate 2**7 = 128-fold: no divisor of the reference's 16.
    with pytest.raises(
        UserError,
        match=r"^--set model.tcn_pool_every=1: model: .*tcn_pool_every.*downsample \(16\)",
    ) as e:
        load_config(None, ["model.tcn_pool_every=1"])
    assert "\n" not in str(e.value)
    assert load_config(None, ["model.tcn_pool_every=2"]).model.tcn_pooling == 8
    with pytest.raises(ValueError, match="does not divide downsample"):
        TCNEncoder(3, [4] * 8, kernel_size=3, downsample=16, pool_every=1)
