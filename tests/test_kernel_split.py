"""The fused Mamba-2 path's CPU-checkable parts: calls split to CUDA's grid limits, the kernel
requirement of cloud configs, the causal-conv1d stand-in, and check-kernels --interpret's refusals.
(The interpreter, launch audit and AOT compile themselves: tests/kernels, in .venv-kernels.)"""

import importlib.util
import math

import pytest
import torch

from szdet.cli import main
from szdet.errors import UserError
from szdet.kernel_proof import parity, shims
from szdet.kernel_proof.report import problems
from szdet.models import kernels
from szdet.models.kernels import CUDA_GRID_YZ_MAX, AutoMamba2, rows_per_call, select_path


def test_rows_per_call_keeps_rows_times_chunks_under_the_limit():
    assert rows_per_call(960, 64) == CUDA_GRID_YZ_MAX // 15
    assert rows_per_call(961, 64) == CUDA_GRID_YZ_MAX // 16  # a partial chunk counts
    assert rows_per_call(64 * CUDA_GRID_YZ_MAX, 64) == 1
    with pytest.raises(ValueError, match="grid blocks"):
        rows_per_call(64 * CUDA_GRID_YZ_MAX + 1, 64)


def test_fused_scan_splits_rows_into_fitting_calls_in_order():
    mixer = AutoMamba2(d_model=16, d_state=8, headdim=4, kernel_chunk_size=64)
    rows, steps = 10_944, 960  # batch 64 x 171 pairs: 164,160 rows x chunks in one call
    calls = []

    def fused(zxbcdt, *args, **kwargs):  # stands in for mamba_ssm's kernel: records, echoes
        calls.append(zxbcdt.shape[0])
        return zxbcdt[..., : mixer.d_model]

    zxbcdt = torch.arange(rows, dtype=torch.float32)[:, None, None].expand(rows, steps, 88)
    out = mixer.fused_scan(zxbcdt, fused)
    per_call = rows_per_call(steps, 64)
    assert len(calls) == math.ceil(rows / per_call) == 3
    assert max(calls) <= per_call and sum(calls) == rows
    assert all(n % 16 == 0 for n in calls)  # one kernel specialisation for every piece
    assert max(calls) * math.ceil(steps / 64) <= CUDA_GRID_YZ_MAX
    assert torch.equal(out[:, 0, 0], torch.arange(rows, dtype=torch.float32))  # order kept


def test_cuda_kernels_required_on_a_gpu_without_them(monkeypatch):
    monkeypatch.setattr(kernels, "fused_mamba2_kernel", lambda: None)
    with pytest.raises(UserError, match=r"model\.kernels is 'cuda'"):
        select_path("cuda", "cuda")
    assert "pure PyTorch" in select_path("auto", "cuda")  # auto may fall back
    with pytest.raises(UserError, match=r"training runs on cpu"):  # a cloud config on a CPU
        select_path("cuda", "cpu")


def test_interpret_without_kernel_tools_is_a_one_line_error(capsys):
    if importlib.util.find_spec("triton") is not None:
        pytest.skip("this environment has the kernel tools (tests/kernels covers it)")
    assert main(["check-kernels", "--interpret"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "make kernel-tools" in err and "triton" in err
    # the command it names is one `make kernel-tools` creates (a venv's python; it installs no
    # `szdet` script there)
    assert "then run .venv-kernels/bin/python -m szdet.cli" in err


def test_conv_stand_in_matches_autograd_and_refuses_what_the_cuda_kernel_refuses():
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 16, 40), torch.randn(16, 4), torch.randn(16)
    for silu in (False, True):
        leaves = [t.clone().requires_grad_(True) for t in (x, w, b)]
        ref = shims._reference_conv(*leaves, silu)
        dout = torch.randn_like(ref)
        ref.backward(dout)
        out, dx, dw, db = (
            torch.empty_like(x),
            torch.empty_like(x),
            torch.empty_like(w),
            torch.empty_like(b),
        )
        shims.causal_conv1d_fwd(x, w, b, None, None, out, None, silu)
        shims.causal_conv1d_bwd(x, w, b, dout, None, None, None, dx, dw, db, None, silu)
        assert torch.allclose(out, ref.detach())
        for got, leaf in zip((dx, dw, db), leaves, strict=True):
            assert torch.allclose(got, leaf.grad, atol=1e-5)
    last = torch.randn(2, 40, 12).transpose(1, 2)  # channel-last, 12 channels
    with pytest.raises(RuntimeError, match="divisible by 8"):
        shims.causal_conv1d_fwd(
            last, torch.randn(12, 4), None, None, None, torch.empty_like(last), None, True
        )
    with pytest.raises(RuntimeError, match="width between 2 and 4"):
        shims.causal_conv1d_fwd(
            x, torch.randn(16, 5), None, None, None, torch.empty_like(x), None, True
        )


def test_problems_name_each_failed_check_first_numbers_first():
    row = {"out_rel_err": 0.5, "grad_rel_err": 1e-6, "worst_grad": "D", "within_tolerance": False}
    report = {
        "parity": {"float32": {"node": row}, "bf16": {}},
        "launch_audit": {"batch": 64, "over_limit": [
            {"kernel": "_chunk_scan_fwd_kernel", "grid": [2, 164160, 16], "limits": [1, 2, 3]}]},
        "aot": {"failed": [], "over_shared_memory": [
            {"kernel": "k", "shared_bytes": 200_000, "target": "A100-80GB", "limit_bytes": 166_912}]},
    }  # fmt: skip
    found = problems(report)
    assert found[0].startswith("parity: node stream in float32: output 5.00e-01, gradient 1.00e-06")
    assert "_chunk_scan_fwd_kernel launches grid [2, 164160, 16] at batch 64" in found[1]
    assert "200000 B of shared memory" in found[2] and len(found) == 3
    row["within_tolerance"] = True
    assert len(problems(report)) == 2


@pytest.mark.parametrize(
    ("dtype", "row", "passes"),
    [
        ("float32", {"out_rel_err": 1e-3, "grad_rel_err": 1e-3}, True),
        ("float32", {"out_rel_err": 3e-3, "grad_rel_err": 0.0}, False),
        ("bf16", {"out_rel_err": 0.04, "grad_rel_err": 0.04}, True),
        # a gradient summed over every step loses more in bf16: within twice the pure path's own
        (
            "bf16",
            {
                "out_rel_err": 0.01,
                "grad_rel_err": 0.09,
                "floor_out_rel_err": 0.01,
                "floor_grad_rel_err": 0.05,
            },
            True,
        ),
        (
            "bf16",
            {
                "out_rel_err": 0.3,
                "grad_rel_err": 0.01,
                "floor_out_rel_err": 0.05,
                "floor_grad_rel_err": 0.05,
            },
            False,
        ),
    ],
)
def test_parity_reads_bf16_against_the_pure_paths_own_error(dtype, row, passes):
    assert parity.within_tolerance(row, dtype) is passes
