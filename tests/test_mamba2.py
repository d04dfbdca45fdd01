"""Pure-PyTorch Mamba-2: exact against a step-by-step recurrence, mamba_ssm's layout, any dtype."""

import math

import pytest
import torch
import torch.nn.functional as F

from szdet.models import bimamba2, mamba2, mamba2_cpu
from szdet.models.bimamba2 import BiMamba2Layer, BiMamba2Stack
from szdet.models.kernels import AutoMamba2, describe_path, uses_cuda_kernels
from szdet.models.mamba2 import (
    GatedRMSNorm,
    Mamba2,
    ssd_chunked,
    ssd_chunked_inference,
)


def recurrence(x, dt, A, B, C, floor=-math.inf):
    """Written here, independently of the package: one head, one step at a time, float64; each
    step's log decay at least ``floor``."""
    b, length, h, p = x.shape
    g = B.shape[2]
    y = torch.zeros(b, length, h, p, dtype=torch.float64)
    for head in range(h):
        group = head // (h // g)
        state = torch.zeros(b, p, B.shape[-1], dtype=torch.float64)
        for t in range(length):
            decay = torch.exp((dt[:, t, head].double() * A[head].double()).clamp_min(floor))
            inp = (dt[:, t, head].double()[:, None] * x[:, t, head].double())[:, :, None]
            state = decay[:, None, None] * state + inp * B[:, t, group].double()[:, None, :]
            y[:, t, head] = (state @ C[:, t, group].double()[:, :, None])[..., 0]
    return y


def random_scan_inputs(length, heads=4, headdim=3, groups=2, d_state=5, batch=2):
    g = torch.Generator().manual_seed(length)
    x = torch.randn(batch, length, heads, headdim, generator=g)
    dt = F.softplus(torch.randn(batch, length, heads, generator=g) - 1)
    A = -torch.rand(heads, generator=g) * 4 - 0.5
    B = torch.randn(batch, length, groups, d_state, generator=g)
    C = torch.randn(batch, length, groups, d_state, generator=g)
    return x, dt, A, B, C


@pytest.mark.parametrize("length", [16, 64, 37, 100])
@pytest.mark.parametrize("chunk_size", [8, 16])
def test_chunked_scan_matches_recurrence(length, chunk_size):
    x, dt, A, B, C = random_scan_inputs(length)
    got = ssd_chunked(x, dt, A, B, C, chunk_size)
    assert got.shape == x.shape and got.dtype == torch.float32
    ref = recurrence(x, dt, A, B, C)
    assert (got.double() - ref).abs().max() <= 1e-4 * max(1.0, ref.abs().max().item())


@pytest.mark.parametrize("length", [5, 16, 37, 100, 250])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("chunk_size", [8, 16])
def test_inference_scan_matches_chunked_scan_and_recurrence(length, groups, chunk_size):
    x, dt, A, B, C = random_scan_inputs(length, groups=groups)
    dt = dt * 0.2  # decays a step from ~0.95 down to the floor: states carried across chunks
    got = ssd_chunked_inference(x, dt, A, B, C, chunk_size)
    assert got.shape == x.shape and got.dtype == torch.float32
    ref = recurrence(x, dt, A, B, C)
    tol = 1e-5 * max(1.0, ref.abs().max().item())
    assert (got.double() - ref).abs().max() <= tol
    assert (got - ssd_chunked(x, dt, A, B, C, chunk_size)).abs().max() <= tol
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = ssd_chunked_inference(x, dt, A, B, C, chunk_size)
    assert auto.dtype == torch.float32 and (auto - got).abs().max() <= 0.05 * got.abs().max()


@pytest.mark.parametrize("scan", [ssd_chunked, ssd_chunked_inference])
@pytest.mark.parametrize("groups", [1, 2])
def test_scans_carry_the_state_across_chunks_under_decays_at_the_floor(scan, groups):
    """Log decays from -0.2 to -70 a step, many floored at -10 (chunks of 16): each chunk's
    first steps still see the end of the previous one (the inference scan once lost it, its
    carry factor flushed to zero in float32)."""
    x, dt, A, B, C = random_scan_inputs(70, groups=groups)
    dt = dt * 8
    assert (dt * A).min() < -10 < (dt * A).max()
    got = scan(x, dt, A, B, C, 16)
    ref = recurrence(x, dt, A, B, C, floor=-10.0)
    assert (got.double() - ref).abs().max() <= 1e-5 * max(1.0, ref.abs().max().item())


def test_module_takes_the_inference_scan_only_without_autograd(monkeypatch):
    torch.manual_seed(0)
    m = Mamba2(d_model=16, d_state=8, headdim=4, ngroups=2, chunk_size=16)
    u = torch.randn(3, 70, 16)
    trained = m(u)  # autograd on: the chunked scan
    calls = []
    monkeypatch.setattr(mamba2, "ssd_chunked", lambda *a: calls.append(a) or ssd_chunked(*a))
    with torch.no_grad():
        inferred = m(u)
    assert not calls and (inferred - trained).abs().max() <= 1e-5
    m(u)
    assert len(calls) == 1


def reference_mamba2(m: Mamba2, u, floor=-math.inf):
    """The module's computation from its parameters: nn.Conv1d, then the test's recurrence."""
    length = u.shape[1]
    z, xbc, dt = torch.split(
        m.in_proj(u), [m.d_inner, m.d_inner + 2 * m.ngroups * m.d_state, m.nheads], dim=-1
    )
    xbc = F.silu(m.conv1d(xbc.transpose(1, 2))[..., :length].transpose(1, 2))
    x, B, C = torch.split(xbc, [m.d_inner, m.ngroups * m.d_state, m.ngroups * m.d_state], -1)
    x = x.reshape(*x.shape[:2], m.nheads, m.headdim)
    dt = F.softplus(dt + m.dt_bias)
    B = B.reshape(*B.shape[:2], m.ngroups, m.d_state)
    C = C.reshape(*C.shape[:2], m.ngroups, m.d_state)
    y = recurrence(x, dt, -torch.exp(m.A_log), B, C, floor).float() + x * m.D[:, None]
    y = y.flatten(-2) * F.silu(z)  # gated RMSNorm, norm_before_gate=False, per group
    grouped = y.unflatten(-1, (m.ngroups, -1))
    y = (grouped / torch.sqrt(grouped.pow(2).mean(-1, keepdim=True) + 1e-5)).flatten(-2)
    return m.out_proj(y * m.norm.weight)


@pytest.mark.parametrize("length", [48, 50])
def test_module_matches_reference(length):
    torch.manual_seed(0)
    m = Mamba2(d_model=8, d_state=4, headdim=4, ngroups=2, chunk_size=16)
    with torch.no_grad():
        m.dt_bias.normal_()
        m.D.normal_()
        m.norm.weight.normal_(1, 0.3)
    u = torch.randn(2, length, 8)
    with torch.no_grad():
        assert torch.allclose(m(u), reference_mamba2(m, u), atol=1e-4)


def test_mamba_ssm_default_chunk_size_runs_and_gives_the_same_output():
    # mamba_ssm's constructor default (chunk_size=256) tunes its kernel; the pure scan caps it.
    torch.manual_seed(0)
    default = Mamba2(d_model=8, d_state=4, headdim=4)
    short = Mamba2(d_model=8, d_state=4, headdim=4, chunk_size=16)
    short.load_state_dict(default.state_dict())
    u = torch.randn(2, 40, 8)
    with torch.no_grad():
        assert torch.equal(default(u), short(u))


def test_parameter_names_shapes_and_init_follow_mamba_ssm():
    m = Mamba2(d_model=64, d_state=16, d_conv=4, expand=2, headdim=8)
    d_inner, nheads = 128, 16
    conv_dim = d_inner + 2 * 16
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == {
        "dt_bias": (nheads,),
        "A_log": (nheads,),
        "D": (nheads,),
        "in_proj.weight": (2 * d_inner + 2 * 16 + nheads, 64),
        "conv1d.weight": (conv_dim, 1, 4),
        "conv1d.bias": (conv_dim,),
        "norm.weight": (d_inner,),
        "out_proj.weight": (64, d_inner),
    }
    A = torch.exp(m.A_log)
    dt = F.softplus(m.dt_bias)
    assert A.min() >= 1 and A.max() <= 16
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    assert torch.equal(m.D, torch.ones(nheads)) and torch.equal(m.norm.weight, torch.ones(d_inner))
    assert all(getattr(p, "_no_weight_decay", False) for p in (m.A_log, m.D, m.dt_bias))


def test_bfloat16_module_and_autocast_stay_close_to_float32():
    torch.manual_seed(0)
    m = Mamba2(d_model=16, d_state=8, headdim=4, chunk_size=16)
    u = torch.randn(2, 70, 16)
    ref = m(u)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = m(u)
    half = Mamba2(d_model=16, d_state=8, headdim=4, chunk_size=16).to(torch.bfloat16)
    half.load_state_dict(m.state_dict())
    pure_bf16 = half(u.bfloat16())
    scale = ref.abs().max()
    for out in (auto, pure_bf16):
        assert out.dtype == torch.bfloat16
        assert (out.float() - ref).abs().max() <= 0.05 * scale


def test_forward_mixer_is_causal_and_bidirectional_layer_sees_the_future():
    torch.manual_seed(0)
    layer = BiMamba2Layer(8, lambda: Mamba2(8, d_state=4, headdim=4, chunk_size=16), 0.0)
    u = torch.randn(1, 40, 8)
    changed = u.clone()
    changed[:, 30] += torch.randn(8)  # perturb step 30 only (not a constant: LayerNorm drops those)
    with torch.no_grad():
        fwd_delta = (layer.fwd(changed) - layer.fwd(u)).abs().sum(-1)[0]
        bi_delta = (layer(changed) - layer(u)).abs().sum(-1)[0]
    assert fwd_delta[:30].max() == 0 and fwd_delta[30:].min() > 0  # causal
    assert bi_delta[25:30].min() > 0  # earlier steps hear of step 30 via the reversed mixer


def test_auto_module_runs_pure_on_cpu_and_shares_the_state_dict():
    torch.manual_seed(0)
    pure = Mamba2(16, d_state=8, headdim=4, chunk_size=16)
    auto = AutoMamba2(16, d_state=8, headdim=4, chunk_size=16, kernels="auto", recompute=True)
    auto.load_state_dict(pure.state_dict(), strict=True)
    pure.load_state_dict(auto.state_dict(), strict=True)
    u = torch.randn(3, 33, 16, requires_grad=True)
    assert not uses_cuda_kernels("auto", "cpu")
    assert "pure" in describe_path("auto", "cpu") and "'pure'" in describe_path("pure", "cuda")
    out_auto = auto(u)
    (g_auto,) = torch.autograd.grad(out_auto.square().sum(), u)
    out_pure = pure(u)
    (g_pure,) = torch.autograd.grad(out_pure.square().sum(), u)
    assert torch.allclose(out_auto, out_pure) and torch.allclose(g_auto, g_pure, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scan", [ssd_chunked, ssd_chunked_inference])
def test_decays_never_overflow_for_long_strong_sequences(dtype, scan):
    x, dt, A, B, C = random_scan_inputs(300)
    y = scan(x.to(dtype), dt * 50, A * 10, B.to(dtype), C.to(dtype), 16)  # e^-700 a step
    assert torch.isfinite(y).all()
    assert math.isfinite(float(y.abs().max()))
    with pytest.raises(ValueError, match="chunk_size 32"):
        scan(x, dt, A, B, C, 32)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (CPU counterpart above)")
def test_cuda_pure_path_matches_cpu():
    torch.manual_seed(0)
    m = Mamba2(64, d_state=16, headdim=8, chunk_size=16)
    u = torch.randn(4, 130, 64)
    ref = m(u)
    got = m.cuda()(u.cuda()).cpu()
    assert (got - ref).abs().max() <= 1e-4 * max(1.0, ref.abs().max().item())


@pytest.mark.parametrize("groups", [1, 2])
def test_gated_norm_in_place_matches_the_autograd_path_before_its_weight(groups):
    torch.manual_seed(0)
    norm = GatedRMSNorm(32, group_size=32 // groups)
    with torch.no_grad():
        norm.weight.normal_(1, 0.3)
    x, z = torch.randn(2, 7, 32), torch.randn(2, 7, 32)
    x[0, 0] = 0  # a zero gated vector stays zero
    trained = norm(x, z)
    x_before = x.clone()
    with torch.no_grad():
        inferred = norm.unweighted_in_place(x, z) * norm.weight
    assert torch.equal(x, x_before)  # x untouched; z is the output's memory
    assert (inferred - trained).abs().max() <= 1e-6 and not inferred[0, 0].any()


@pytest.fixture(params=["compiled", "torch"])
def cpu_inference(request, monkeypatch):
    """Mamba2's CPU inference as it runs: the compiled loop (mamba2_cpu.py), or without numba
    installed, the chunked inference scan."""
    if request.param == "torch":
        monkeypatch.setattr(mamba2_cpu, "numba", None)
    return request.param


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("d_conv", [2, 4])
def test_inference_forward_matches_the_autograd_forward(groups, d_conv, cpu_inference):
    """The inference form (three in_proj products, the conv as a channels-last image, the norm's
    weight in out_proj) against the training form, on trained-looking parameters."""
    torch.manual_seed(groups)
    m = Mamba2(d_model=16, d_state=8, d_conv=d_conv, headdim=4, ngroups=groups, chunk_size=16)
    with torch.no_grad():
        for p in (m.conv1d.bias, m.dt_bias, m.D):
            p.normal_()
        m.norm.weight.normal_(1, 0.3)
    u = torch.randn(3, 45, 16)
    trained = m(u)
    with torch.no_grad():
        inferred = m(u)
    assert (inferred - trained).abs().max() <= 1e-5 * trained.abs().max()


def test_stack_runs_blocks_of_rows_without_autograd_on_cpu(monkeypatch):
    torch.manual_seed(0)
    stack = BiMamba2Stack(8, 2, lambda: Mamba2(8, d_state=4, headdim=4, chunk_size=16), 0.0)
    u = torch.randn(7, 40, 8)
    trained = stack(u)
    # in_proj has 2 * 16 + 2 * 4 + 4 = 44 outputs: 3 rows of 40 steps per block, so 3 blocks
    monkeypatch.setattr(bimamba2, "INFERENCE_BLOCK_ELEMENTS", 3 * 40 * 44)
    blocks = []
    stack.layers[0].register_forward_hook(lambda _, args, __: blocks.append(args[0].shape[0]))
    with torch.no_grad():
        inferred = stack(u)
    assert blocks == [3, 3, 1] and (inferred - trained).abs().max() <= 1e-5


def test_cpu_inference_runs_the_compiled_loop_only_in_float32_without_autograd(monkeypatch):
    calls = []
    compiled = mamba2_cpu.scan_gate_norm
    monkeypatch.setattr(mamba2_cpu, "scan_gate_norm", lambda *a: calls.append(a) or compiled(*a))
    torch.manual_seed(0)
    m = Mamba2(d_model=16, d_state=8, headdim=4, chunk_size=16)
    u = torch.randn(2, 40, 16)
    m(u)  # autograd: the chunked scan
    with torch.no_grad():
        m.to(torch.bfloat16)(u.bfloat16())  # not float32: the torch inference form
        assert not calls
        m.float()(u)
    assert len(calls) == 1


@pytest.mark.parametrize("groups", [1, 2])
def test_compiled_loop_matches_the_recurrence_with_decays_at_the_floor(groups):
    """Strong decays (dt up to ~8, A down to -16: log decays far below the floor of -10 a step
    for chunks of 16) through the whole module: the compiled loop takes the chunked scan's
    floor, so it computes the same function as the test's float64 recurrence with that floor."""
    torch.manual_seed(groups)
    m = Mamba2(d_model=16, d_state=8, headdim=4, ngroups=groups, chunk_size=16)
    with torch.no_grad():
        m.dt_bias.copy_(torch.linspace(-4, 8, m.nheads))
        m.A_log.copy_(torch.linspace(0, math.log(16), m.nheads))
        m.D.normal_()
        m.norm.weight.normal_(1, 0.3)
    u = torch.randn(3, 50, 16)
    with torch.no_grad():
        got = m(u)
        ref = reference_mamba2(m, u, floor=-10.0)
    # the floor moves this output by ~2e-4: a loop without it fails
    assert (got - ref).abs().max() <= 1e-5 * max(1.0, ref.abs().max().item())


def test_compiled_loop_splits_rows_over_threads_with_the_same_result():
    torch.manual_seed(0)
    m = Mamba2(d_model=16, d_state=8, headdim=4, chunk_size=16)
    u = torch.randn(5, 33, 16)
    threads = torch.get_num_threads()
    try:
        with torch.no_grad():
            torch.set_num_threads(1)
            one = m(u)
            torch.set_num_threads(3)  # 2, 2 and 1 rows
            three = m(u)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, three)


def test_compiled_loop_compiles_without_a_writable_cache(monkeypatch):
    """A read-only install and home (a container run as another user): numba finds no cache
    directory and would raise at import; the loop compiles in memory instead."""

    def read_only(self):
        raise PermissionError(f"read-only: {self.get_cache_path()}")

    import numba.core.caching

    monkeypatch.setattr(numba.core.caching._CacheLocator, "ensure_cache_path", read_only)

    def double(x):
        return 2 * x

    with pytest.raises(RuntimeError, match="no locator"):
        numba.njit(cache=True)(double)
    assert mamba2_cpu._jit(double)(21) == 42
