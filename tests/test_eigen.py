"""Jacobi eigensolver against torch.linalg.eigh; the PE's solver and step options; the model."""

import io
from pathlib import Path

import pytest
import torch

from szdet.config_load import load_config
from szdet.models import build_model
from szdet.models.eigen import jacobi_eigh
from szdet.models.graph import (
    held_laplacian_pe,
    laplacian_pe,
    learned_adjacency,
    normalised_laplacian,
)

N = 19
PAIRS = N * (N - 1) // 2
SMOKE = Path(__file__).resolve().parent.parent / "configs/local/smoke.yaml"


def random_symmetric(batch, n, seed=0):
    x = torch.randn(batch, n, n, generator=torch.Generator().manual_seed(seed))
    return (x + x.mT) / 2


def learned_graphs(*batch, top_k=3, seed=0):
    weights = torch.rand(*batch, PAIRS, generator=torch.Generator().manual_seed(seed))
    return learned_adjacency(weights, N, top_k)


def sign_fixed(vecs):
    """The PE's sign rule: each eigenvector's entry of largest magnitude is positive."""
    peak = vecs.gather(-2, vecs.abs().argmax(-2, keepdim=True))
    return vecs * torch.where(peak < 0, -1.0, 1.0)


def assert_matches_eigh(sym):
    vals, vecs = jacobi_eigh(sym)
    ref_vals, ref_vecs = torch.linalg.eigh(sym.double())
    scale = ref_vals.abs().amax(-1, keepdim=True)
    assert ((vals - ref_vals) / scale).abs().max() < 1e-5
    residual = (sym @ vecs - vecs * vals[..., None, :]).norm(dim=-2) / scale
    assert residual.max() < 1e-5
    assert (vecs.mT @ vecs - torch.eye(sym.shape[-1])).abs().max() < 1e-5
    # An eigenvector is defined (up to sign) only when its eigenvalue is apart from both
    # neighbours, and then it moves by about rounding error / gap (Davis-Kahan): measured
    # error x gap is at most 6e-7.
    gaps = ref_vals.diff(dim=-1) / scale
    apart = torch.full_like(gaps[..., :1], torch.inf)
    gap = torch.minimum(torch.cat([apart, gaps], -1), torch.cat([gaps, apart], -1))
    distinct = gap > 1e-3
    error = (sign_fixed(vecs).double() - sign_fixed(ref_vecs)).abs().amax(-2)
    assert distinct.any() and (error * gap)[distinct].max() < 1e-5
    return distinct


@pytest.mark.parametrize("n", [2, 5, 8, 19])
def test_jacobi_matches_eigh_on_random_symmetric_matrices(n):
    distinct = assert_matches_eigh(random_symmetric(64, n))
    assert distinct.float().mean() > 0.99  # random spectra: nearly every eigenvector compared


def test_jacobi_matches_eigh_on_learned_graph_laplacians():
    assert_matches_eigh(normalised_laplacian(learned_graphs(64)))
    # top-1 graphs fall apart into components: repeated eigenvalues (0 for each), where only the
    # values, residuals and orthogonality are defined
    distinct = assert_matches_eigh(normalised_laplacian(learned_graphs(64, top_k=1)))
    assert not distinct.all()


@pytest.mark.slow
def test_a_training_batch_of_61440_matrices_runs():
    # One sweep: the batch handling is under test, and every sweep repeats the same ops. Still ~5 s
    # on an idle 2-core CPU: each op's ~100 MB temporary is a fresh mmap that page-faults.
    vals, vecs = jacobi_eigh(random_symmetric(64 * 960, N), sweeps=1)
    assert vals.shape == (64 * 960, N) and vecs.shape == (64 * 960, N, N)
    assert vals.isfinite().all() and vecs.isfinite().all()
    assert (vals.diff(dim=-1) >= 0).all()


def test_solver_exports_as_plain_ops_without_data_dependent_control_flow():
    class Solve(torch.nn.Module):
        def forward(self, sym):
            return jacobi_eigh(sym, sweeps=2)

    # export fails on .item(), host syncs or branches on values; the batch size stays symbolic
    batch = torch.export.Dim("batch")
    program = torch.export.export(Solve(), (random_symmetric(4, 5),), dynamic_shapes=({0: batch},))
    ops = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert not any("linalg" in op or "eig" in op for op in ops)
    sym = random_symmetric(7, 5, seed=1)
    for got, expected in zip(program.module()(sym), jacobi_eigh(sym, sweeps=2), strict=True):
        assert torch.allclose(got, expected, atol=1e-6)


def test_jacobi_pe_equals_eigh_pe_on_learned_graphs():
    adj = learned_graphs(64)  # top-3 graphs with random weights: distinct eigenvalues
    eigh = laplacian_pe(adj, 16, grad=False)
    jacobi = laplacian_pe(adj, 16, grad=False, eigensolver="jacobi")
    assert jacobi.dtype == torch.float32
    assert torch.allclose(jacobi, eigh, atol=5e-4)  # measured: 5e-5


@pytest.mark.parametrize("eigensolver", ["eigh", "jacobi"])
def test_pe_gradients_are_finite_with_both_solvers_even_for_repeated_eigenvalues(eigensolver):
    complete = torch.ones(N, N) - torch.eye(N)  # eigenvalue N / (N - 1), N - 1 times
    for adj in (complete, learned_graphs(4)):
        adj = adj.clone().requires_grad_(True)
        pe = laplacian_pe(adj, 8, grad=True, eigensolver=eigensolver)
        (grad,) = torch.autograd.grad((pe * torch.randn_like(pe)).sum(), adj)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_pe_gradients_of_both_solvers_agree_on_distinct_eigenvalues():
    adj = learned_graphs(4).requires_grad_(True)
    weights = torch.randn(4, N, 8)
    grads = []
    for solver in ("eigh", "jacobi"):
        pe = laplacian_pe(adj, 8, grad=True, eigensolver=solver)
        assert torch.equal(pe, laplacian_pe(adj, 8, grad=False, eigensolver=solver))  # its own
        grads.append(torch.autograd.grad((pe * weights).sum(), adj)[0])
    assert torch.allclose(grads[0], grads[1], atol=1e-3 * grads[0].abs().max())


@pytest.mark.parametrize("eigensolver", ["eigh", "jacobi"])
def test_pe_every_k_steps_is_the_step_pe_held_for_k_steps(eigensolver):
    adj = learned_graphs(2, 10)  # T = 10: not a multiple of k = 4
    every = laplacian_pe(adj, 4, grad=False, eigensolver=eigensolver)
    held = held_laplacian_pe(adj, 4, False, every_steps=4, eigensolver=eigensolver)
    assert held.shape == every.shape == (2, 10, N, 4)
    # Jacobi's ops are per matrix, so the batch changes no bit; LAPACK's results move with it
    # (1e-5 here).
    assert torch.allclose(held[:, ::4], every[:, ::4], atol=0 if eigensolver == "jacobi" else 1e-4)
    for start in (0, 4, 8):
        block = held[:, start : start + 4]
        assert torch.equal(block, block[:, :1].expand_as(block))
    assert not torch.allclose(held[:, 1], every[:, 1])  # the graph did change in between
    assert torch.equal(held_laplacian_pe(adj, 4, False, 1, eigensolver), every)  # k = 1: as before


def smoke_model(**overrides):
    torch.manual_seed(0)
    cfg = load_config(SMOKE).model.model_copy(update={"dropout": 0.0, **overrides})
    return build_model(cfg)


def test_model_trains_with_jacobi_and_held_pe_and_their_state_dicts_interchange():
    jacobi = smoke_model(eigensolver="jacobi", pe_grad=True)
    held = smoke_model(pe_every_steps=4)
    x = torch.randn(2, 19, 30 * held.downsample)  # 30 steps: not a multiple of 4
    for model in (jacobi, held):
        out = model(x)
        out.square().mean().backward()
        assert out.shape == x[:, 0].shape and out.isfinite().all()
        assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters())
    for source, target in ((jacobi, held), (held, jacobi)):
        buffer = io.BytesIO()
        torch.save(source.state_dict(), buffer)
        buffer.seek(0)
        target.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
