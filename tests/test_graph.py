"""Graph stage: batched dense ops against PyG's SSGConv, adjacency rules, Laplacian PE."""

import torch
import torch.nn.functional as F
from torch_geometric.nn import SSGConv

from szdet.models.graph import (
    DenseSSGConv,
    GraphStage,
    gcn_propagation,
    laplacian_pe,
    learned_adjacency,
    pairwise_cosine,
    ssg_operator,
    stable_eigh,
)

N = 19
PAIRS = N * (N - 1) // 2


def random_graphs(*batch, density=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(*batch, N, N, generator=g) * (torch.rand(*batch, N, N, generator=g) < density)
    return w * (1 - torch.eye(N))


def test_pairwise_cosine_matches_torch_and_zero_vectors_give_zero():
    torch.manual_seed(0)
    nodes = torch.randn(2, N, 5, 8)
    nodes[0, 3] = 0.0  # a flat electrode
    sim = pairwise_cosine(nodes)
    assert sim.shape == (2, 5, PAIRS)
    rows, cols = torch.triu_indices(N, N, 1)
    expected = F.cosine_similarity(nodes[:, rows], nodes[:, cols], dim=-1).transpose(1, 2)
    assert torch.allclose(sim[1], expected[1], atol=1e-5)
    touches_3 = (rows == 3) | (cols == 3)
    assert torch.equal(sim[0][:, touches_3], torch.zeros(5, int(touches_3.sum())))


def test_batched_ssgconv_matches_pyg_on_random_graphs():
    torch.manual_seed(0)
    adj = random_graphs(2, 3)  # directed, some nodes without in-edges
    adj[0, 1, 4] = 0.0
    adj[0, 1, 4, 4] = 0.7  # an existing self-loop keeps its weight, as in PyG
    x = torch.randn(2, 3, N, 12)
    pyg = SSGConv(12, 7, alpha=0.05, K=2)
    dense = DenseSSGConv(12, 7)
    dense.lin.load_state_dict(pyg.lin.state_dict())
    got = dense(x, ssg_operator(gcn_propagation(adj), alpha=0.05, hops=2))
    for b in range(2):
        for t in range(3):  # the per-graph reference
            edge_index = adj[b, t].nonzero().T
            ref = pyg(x[b, t], edge_index, adj[b, t][edge_index[0], edge_index[1]])
            assert torch.allclose(got[b, t], ref, atol=1e-5)


def test_adjacency_is_symmetric_top_k_with_self_loops_only_for_isolated_nodes():
    torch.manual_seed(0)
    weights = torch.rand(2, 4, PAIRS) + 0.01
    weights[1, 2] = 0.0  # every edge of this step has zero weight
    adj = learned_adjacency(weights, N, top_k=3)
    assert torch.equal(adj, adj.transpose(-1, -2))
    full = torch.zeros(2, 4, N, N)
    rows, cols = torch.triu_indices(N, N, 1)
    full[..., rows, cols] = weights
    full = full + full.transpose(-1, -2)
    kept = adj[0, 0] > 0
    for i in range(N):  # each node keeps its own 3 strongest edges, and only edges someone kept
        assert set(full[0, 0, i].topk(3).indices.tolist()) <= set(kept[i].nonzero()[:, 0].tolist())
        for j in kept[i].nonzero()[:, 0].tolist():
            assert j in full[0, 0, i].topk(3).indices or i in full[0, 0, j].topk(3).indices
            assert adj[0, 0, i, j] == full[0, 0, i, j]
    assert torch.equal(adj[0, 0].diagonal(), torch.zeros(N))
    assert torch.equal(adj[1, 2], torch.eye(N))  # isolated everywhere: self-loops only


def test_pe_is_deterministic_sign_fixed_and_permutes_with_the_nodes():
    torch.manual_seed(0)
    w = torch.rand(6, N, N)
    adj = (w + w.mT) * (1 - torch.eye(N))  # dense: distinct eigenvalues almost surely
    pe = laplacian_pe(adj, 16, grad=False)
    assert pe.shape == (6, N, 16) and pe.dtype == torch.float32
    assert torch.equal(pe, laplacian_pe(adj.clone(), 16, grad=False))
    peak = pe.gather(-2, pe.abs().argmax(-2, keepdim=True))
    assert (peak > 0).all()  # the sign rule
    perm = torch.randperm(N)
    permuted = laplacian_pe(adj[:, perm][:, :, perm], 16, grad=False)
    assert torch.allclose(permuted, pe[:, perm], atol=1e-4)


def test_pe_is_float32_under_autocast_and_gradient_switch_works():
    adj = random_graphs(3, density=0.6) + random_graphs(3, density=0.6, seed=1).mT
    adj = adj.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pe = laplacian_pe(adj, 8, grad=False)
    assert pe.dtype == torch.float32 and not pe.requires_grad
    pe = laplacian_pe(adj, 8, grad=True)
    (grad,) = torch.autograd.grad((pe * torch.randn_like(pe)).sum(), adj)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_stable_eigh_gradient_matches_torch_and_stays_finite_when_degenerate():
    torch.manual_seed(0)
    sym = torch.randn(4, 6, 6, dtype=torch.float64)
    sym = (sym + sym.mT).requires_grad_(True)
    g_vec = torch.randn(4, 6, 6, dtype=torch.float64)
    ref_vals, ref_vecs = torch.linalg.eigh(sym)
    (ref,) = torch.autograd.grad((ref_vecs * g_vec).sum() + ref_vals.sum(), sym)
    vals, vecs = stable_eigh(sym)
    (got,) = torch.autograd.grad((vecs * g_vec).sum() + vals.sum(), sym)
    assert torch.allclose(got, ref, atol=1e-6)
    degenerate = torch.eye(6, dtype=torch.float64).requires_grad_(True)  # all eigenvalues equal
    vals, vecs = stable_eigh(degenerate)
    (grad,) = torch.autograd.grad((vecs * g_vec[0]).sum(), degenerate)
    assert torch.isfinite(grad).all()


def test_graph_stage_is_finite_for_zero_and_identical_weights():
    torch.manual_seed(0)
    stage = GraphStage(8, 4, layers=2, alpha=0.05, hops=2, top_k=3, pe_grad=True)
    nodes = torch.randn(2, 3, N, 8, requires_grad=True)
    for weights in (torch.zeros(2, 3, PAIRS), torch.ones(2, 3, PAIRS)):
        weights.requires_grad_(True)
        out = stage(nodes, weights)
        grads = torch.autograd.grad(out.square().sum(), [nodes, weights, *stage.parameters()])
        assert torch.isfinite(out).all()
        assert all(torch.isfinite(g).all() for g in grads)


def test_pe_of_a_non_finite_graph_does_not_raise_and_its_nan_reaches_the_output():
    # eigh would raise on this rank alone, while DDP needs every rank to reach backward.
    adj = random_graphs(3)
    adj[1, 2, 5] = adj[1, 5, 2] = torch.nan
    for grad in (False, True):
        assert laplacian_pe(adj, 4, grad=grad).shape == (3, N, 4)
    stage = GraphStage(node_dim=8, pe_dim=4, layers=1, alpha=0.1, hops=2, top_k=3, pe_grad=False)
    edges = torch.rand(3, 2, PAIRS)
    edges[1, 0, 7] = torch.inf
    out = stage(torch.randn(3, 2, N, 8), edges)
    assert not out[1].isfinite().all() and out[[0, 2]].isfinite().all()
