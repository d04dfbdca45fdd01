"""The assembled V3 model: shapes, live parameters, robustness, checkpoints, optimizer groups."""

import io
from pathlib import Path

import pytest
import torch

from szdet.cli import main
from szdet.config import ModelConfig
from szdet.config_load import load_config
from szdet.models import build_model, param_groups

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs/local/smoke.yaml"
WINDOW = 15360


def smoke_config(**overrides) -> ModelConfig:
    return load_config(SMOKE).model.model_copy(update=overrides)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(smoke_config(dropout=0.0))


def test_logits_per_sample_for_any_length_divisible_by_downsample(model):
    step = model.downsample
    with torch.no_grad():
        for batch, length in ((1, WINDOW), (3, 30 * step)):
            assert model(torch.randn(batch, 19, length)).shape == (batch, length)
    with pytest.raises(ValueError, match="divisible by downsample"):
        model(torch.randn(1, 19, WINDOW + 1))


def test_the_logits_are_the_node_logits_fused(model):
    """Where the seizure is (evaluate/localise.py) reads each node's own logit, the one the
    auxiliary loss trains (train/step.py): the detection's logits must be those same node logits
    combined by the head's fusing weights, not another computation."""
    model.eval()
    x = torch.randn(2, 19, WINDOW)
    with torch.no_grad():
        logits = model(x)
        localised_logits, node_logits = model.localised(x)
        trained_logits, trained_nodes = model(x, with_nodes=True)
    steps = WINDOW // model.downsample
    assert node_logits.shape == (2, 19, WINDOW) and trained_nodes.shape == (2, 19, steps)
    fused = torch.einsum("bnl,n->bl", node_logits, model.head.fuse.weight[0]) + model.head.fuse.bias
    torch.testing.assert_close(localised_logits, logits, rtol=0, atol=0)
    torch.testing.assert_close(trained_logits, logits, rtol=0, atol=0)
    torch.testing.assert_close(fused, logits, rtol=0, atol=1e-5)
    # The upsampled node logits are the trained ones, in between steps linearly.
    middle = model.downsample // 2
    torch.testing.assert_close(
        node_logits[..., middle :: model.downsample], trained_nodes, rtol=0, atol=0.05
    )
    assert node_logits.std(dim=1).mean() > 0  # the nodes differ
    model.train()


def test_every_parameter_gets_a_gradient_from_one_backward(model):
    model.zero_grad(set_to_none=True)
    x = torch.randn(2, 19, 64 * model.downsample)
    model(x).square().mean().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []


def hostile_inputs() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    length = 64 * 64
    base = torch.randn(2, 19, length)
    nan_inf = base.clone()
    nan_inf[0, 3, 100:200] = float("nan")
    nan_inf[1, 5, :50] = float("inf")
    nan_inf[1, 6, 60:] = float("-inf")
    flat = base.clone()
    flat[:, :10] = 0.0
    flat[1] = 3.0  # one window flat on every channel
    return {
        "nan_inf": nan_inf,
        "huge": torch.where(base > 0, 1e4, -1e4),
        "flat": flat,
        "identical": base[:, :1].expand(2, 19, length).clone(),  # a degenerate graph
        "zeros": torch.zeros(2, 19, length),
    }


@pytest.mark.parametrize("case", list(hostile_inputs()))
def test_hostile_inputs_give_finite_outputs_and_gradients(model, case):
    x = hostile_inputs()[case]
    model.zero_grad(set_to_none=True)
    out = model(x)
    out.square().mean().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_state_dict_round_trips_strictly_between_kernel_settings(model):
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    other = build_model(smoke_config(dropout=0.0, kernels="auto", recompute_pure_mamba=True))
    other.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    assert set(model.state_dict()) == {n for n, _ in model.named_parameters()}  # no buffers
    model.eval()
    other.eval()
    x = torch.randn(1, 19, 32 * model.downsample)
    with torch.no_grad():
        assert torch.equal(model(x), other(x))


def test_param_groups_exempt_exactly_biases_norms_and_ssm_scalars(model):
    decay, no_decay = param_groups(model, weight_decay=0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    exempt = {names[id(p)] for p in no_decay["params"]}
    expected = {
        n
        for n in names.values()
        if n.endswith((".bias", ".A_log", ".D", ".dt_bias", "norm.weight"))
    }
    assert exempt == expected
    assert {names[id(p)] for p in decay["params"]} == set(names.values()) - expected
    assert any(n.endswith("conv1d.weight") for n in set(names.values()) - expected)


def test_model_summary_prints_every_component(capsys):
    assert main(["model-summary", "--config", str(SMOKE)]) == 0
    out = capsys.readouterr().out
    for component in ("tcn", "electrodes", "node_stream", "edge_stream", "graph", "head", "total"):
        assert component in out
    assert f"{sum(p.numel() for p in build_model(smoke_config()).parameters()):,}" in out


@pytest.mark.slow
def test_cloud_size_model_runs_forward_and_backward_on_cpu():
    cfg = load_config(ROOT / "configs/cloud/train.yaml").model
    # The cloud config trains the reference sizes, and requires the kernels on a GPU.
    assert cfg.kernels == "cuda" and cfg.model_copy(update={"kernels": "auto"}) == ModelConfig()
    torch.manual_seed(0)
    net = build_model(cfg)
    out = net(torch.randn(1, 19, WINDOW))
    out.square().mean().backward()
    assert out.shape == (1, WINDOW) and torch.isfinite(out).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
