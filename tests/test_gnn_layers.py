"""Layers and primitives: our GAT / GATv2 equal PyG's given the same weights; attention is a softmax over
each node's incoming edges; the primitives match a dense reference."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.nn import GATConv as PyGGATConv
from torch_geometric.nn import GATv2Conv as PyGGATv2Conv

from gnn.backends import get_backend
from gnn.layers import ExphormerAttention, GATConv, GATv2Conv


def random_edges(n: int, e: int, seed: int, self_loops: bool = True):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n, (e,), generator=g)
    dst = torch.randint(0, n, (e,), generator=g)
    if self_loops:
        src, dst = torch.cat([src, torch.arange(n)]), torch.cat([dst, torch.arange(n)])
    return src, dst


# float64 compares the math (the fused CPU kernels and the composed primitives both agree with PyG to ~1e-14);
# float32 the rounding: the gradient through the softmax backward (alpha (a - sum alpha a), with cancellation)
# differs from PyG's by up to 3.8e-6 at |grad| ~ 0.1 on either of our paths, so its atol is 1e-5 there
TOLERANCES = {torch.float64: (1e-10, 1e-12, 1e-12), torch.float32: (1e-5, 1e-6, 1e-5)}   # rtol, atol out, atol grad


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("edge_dim", [None, 1, 3])
@pytest.mark.parametrize("concat", [True, False])
def test_gatv2_equals_pyg_gatv2conv(edge_dim, concat, dtype):
    torch.manual_seed(0)
    n, heads, c = 15, 3, 5
    src, dst = random_edges(n, 60, seed=1)  # includes repeated edges and self loops
    x = torch.randn(n, 7, dtype=dtype, requires_grad=True)
    ea = torch.rand(src.numel(), edge_dim, dtype=dtype) if edge_dim else None
    ref = PyGGATv2Conv(7, c, heads=heads, edge_dim=edge_dim, concat=concat, add_self_loops=False).to(dtype)
    torch.nn.init.normal_(ref.bias)  # make the bias matter
    ours = GATv2Conv(7, c, heads=heads, edge_dim=edge_dim, concat=concat).to(dtype)
    ours.load_state_dict(ref.state_dict())  # same parameter names and shapes
    out_ref = ref(x, torch.stack([src, dst]), edge_attr=ea)
    out = ours(x, get_backend("pyg").graph(src, dst, n), ea)
    assert out.shape == out_ref.shape == (n, heads * c if concat else c)
    rtol, atol_out, atol_grad = TOLERANCES[dtype]
    torch.testing.assert_close(out, out_ref, rtol=rtol, atol=atol_out)
    g_ref = torch.autograd.grad(out_ref.square().sum(), x)[0]
    g = torch.autograd.grad(out.square().sum(), x)[0]
    torch.testing.assert_close(g, g_ref, rtol=rtol, atol=atol_grad)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gatv2_on_factored_edge_weights_equals_pyg_gatv2conv(dtype):
    """The edge weight as the layer's factored feature (what the encoders pass, and what the fused CPU kernels
    take) = PyG's layer on the same weight as a 1-column edge_attr."""
    from gnn.edges import TypedEdgeFeatures

    torch.manual_seed(0)
    n, heads, c = 15, 3, 5
    src, dst = random_edges(n, 60, seed=1)
    x = torch.randn(n, 7, dtype=dtype, requires_grad=True)
    w = torch.rand(src.numel(), dtype=dtype)
    ref = PyGGATv2Conv(7, c, heads=heads, edge_dim=1, add_self_loops=False).to(dtype)
    torch.nn.init.normal_(ref.bias)
    ours = GATv2Conv(7, c, heads=heads, edge_dim=1).to(dtype)
    ours.load_state_dict(ref.state_dict())
    out_ref = ref(x, torch.stack([src, dst]), edge_attr=w.unsqueeze(-1))
    out = ours(x, get_backend("pyg").graph(src, dst, n), TypedEdgeFeatures(w, None, torch.zeros_like(src), [], None))
    rtol, atol_out, atol_grad = TOLERANCES[dtype]
    torch.testing.assert_close(out, out_ref, rtol=rtol, atol=atol_out)
    g_ref = torch.autograd.grad(out_ref.square().sum(), x)[0]
    g = torch.autograd.grad(out.square().sum(), x)[0]
    torch.testing.assert_close(g, g_ref, rtol=rtol, atol=atol_grad)


def test_gatv2_with_pyg_self_loops_equals_ours_on_looped_edges():
    """PyG's add_self_loops (fill 'mean' of incoming edge features) = our layer on explicitly looped edges."""
    torch.manual_seed(3)
    n = 12
    src, dst = random_edges(n, 40, seed=4, self_loops=False)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    ea = torch.rand(src.numel(), 1)
    ref = PyGGATv2Conv(6, 4, heads=2, edge_dim=1)  # add_self_loops=True, fill_value='mean'
    ours = GATv2Conv(6, 4, heads=2, edge_dim=1)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(n, 6)
    loop_attr = torch.zeros(n, 1).index_add_(0, dst, ea) / torch.bincount(dst, minlength=n).clamp(min=1).unsqueeze(1)
    s2, d2 = torch.cat([src, torch.arange(n)]), torch.cat([dst, torch.arange(n)])
    out = ours(x, get_backend("pyg").graph(s2, d2, n), torch.cat([ea, loop_attr]))
    torch.testing.assert_close(out, ref(x, torch.stack([src, dst]), edge_attr=ea), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("edge_dim", [None, 2])
def test_gat_equals_pyg_gatconv(edge_dim):
    torch.manual_seed(1)
    n = 10
    src, dst = random_edges(n, 35, seed=2)
    x = torch.randn(n, 6)
    ea = torch.rand(src.numel(), edge_dim) if edge_dim else None
    ref = PyGGATConv(6, 4, heads=2, edge_dim=edge_dim, add_self_loops=False)
    torch.nn.init.normal_(ref.bias)
    ours = GATConv(6, 4, heads=2, edge_dim=edge_dim)
    ours.load_state_dict(ref.state_dict())
    out = ours(x, get_backend("pyg").graph(src, dst, n), ea)
    torch.testing.assert_close(out, ref(x, torch.stack([src, dst]), edge_attr=ea), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [
    lambda: GATConv(8, 4, heads=2, edge_dim=1),
    lambda: GATv2Conv(8, 4, heads=2, edge_dim=1),
    lambda: ExphormerAttention(8, 8, heads=2, edge_dim=1),
])
def test_attention_sums_to_one_over_incoming_edges(make):
    torch.manual_seed(0)
    n = 20
    src, dst = random_edges(n, 70, seed=5, self_loops=False)
    layer = make()
    layer(torch.randn(n, 8), get_backend("pyg").graph(src, dst, n), torch.rand(src.numel(), 1))
    alpha = layer.last_attention
    assert alpha.shape == (src.numel(), 2) and (alpha >= 0).all()
    sums = torch.zeros(n, 2).index_add_(0, dst, alpha)
    has_in = torch.bincount(dst, minlength=n) > 0
    assert (~has_in).any(), "the test graph should have a node without incoming edges"
    torch.testing.assert_close(sums[has_in], torch.ones(int(has_in.sum()), 2))
    assert (sums[~has_in] == 0).all()


def test_pyg_primitives_match_dense_reference():
    torch.manual_seed(0)
    n, h, c = 6, 2, 3
    src = torch.tensor([0, 1, 2, 2, 5, 3, 0])
    dst = torch.tensor([1, 1, 1, 0, 0, 4, 4])
    ops = get_backend("pyg").graph(src, dst, n)
    x, y = torch.randn(n, h, c), torch.randn(n, h, c)
    e = torch.randn(7, h, c)
    s = torch.randn(7, h)
    torch.testing.assert_close(ops.u_add_v(x, y), torch.stack([x[s_] + y[d_] for s_, d_ in zip(src.tolist(), dst.tolist())]))
    torch.testing.assert_close(ops.e_dot_v(e, y), torch.stack([(e[k] * y[d_]).sum(-1) for k, d_ in enumerate(dst.tolist())]))
    alpha = ops.edge_softmax(s)
    for v in range(n):
        m = dst == v
        if m.any():
            torch.testing.assert_close(alpha[m], torch.softmax(s[m], dim=0))
    out = ops.u_mul_e_sum(x, alpha)
    ref = torch.zeros(n, h, c)
    for k, (s_, d_) in enumerate(zip(src.tolist(), dst.tolist())):
        ref[d_] += alpha[k].unsqueeze(-1) * x[s_]
    torch.testing.assert_close(out, ref)
    assert (out[[2, 3, 5]] == 0).all()  # no incoming edges
    torch.testing.assert_close(ops.aggregate(e), torch.zeros(n, h, c).index_add_(0, dst, e))


def _dense_u_mul_e_sum(x, a, src, dst, n):
    return torch.zeros(n, *x.shape[1:], dtype=x.dtype).index_add_(0, dst, x[src] * a.unsqueeze(-1))


@pytest.mark.parametrize("heads", [1, 3])
def test_pyg_sparse_kernels_match_gather_scatter_with_gradients(heads):
    """The CSR forms of u_mul_e_sum and u_dot_v (repeated edges, self loops, nodes without incoming or
    outgoing edges, edges in no particular order) equal gather/scatter, values and gradients."""
    torch.manual_seed(0)
    n, c = 13, 4
    src, dst = random_edges(n, 50, seed=7)
    src, dst = torch.cat([src, src[:5]]), torch.cat([dst, dst[:5]])  # exact duplicates
    keep = (dst != 2) & (src != 3)  # node 2 receives no edge, node 3 sends none
    src, dst = src[keep], dst[keep]
    ops = get_backend("pyg").graph(src, dst, n)
    x = torch.randn(n, heads, c, dtype=torch.float64, requires_grad=True)
    y = torch.randn(n, heads, c, dtype=torch.float64, requires_grad=True)
    a = torch.rand(src.numel(), heads, dtype=torch.float64, requires_grad=True)
    out = ops.u_mul_e_sum(x, a)
    ref = _dense_u_mul_e_sum(x, a, src, dst, n)
    torch.testing.assert_close(out, ref)
    assert (out[2] == 0).all()
    g = torch.randn_like(out)
    for got, want in zip(torch.autograd.grad(out, (x, a), g), torch.autograd.grad(ref, (x, a), g)):
        torch.testing.assert_close(got, want)
    s = ops.u_dot_v(x, y)
    s_ref = (x[src] * y[dst]).sum(-1)
    torch.testing.assert_close(s, s_ref)
    g = torch.randn_like(s)
    for got, want in zip(torch.autograd.grad(s, (x, y), g), torch.autograd.grad(s_ref, (x, y), g)):
        torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(lambda x_, a_: ops.u_mul_e_sum(x_, a_), (x, a))
    assert torch.autograd.gradcheck(lambda x_, y_: ops.u_dot_v(x_, y_), (x, y))
    # float32 too
    x32 = x.detach().float()
    torch.testing.assert_close(ops.u_mul_e_sum(x32, a.detach().float()),
                               _dense_u_mul_e_sum(x32, a.detach().float(), src, dst, n), rtol=1e-5, atol=1e-6)


def test_exphormer_typed_edge_features_equal_the_assembled_ones():
    """ExphormerAttention on TypedEdgeFeatures (per-type u_dot_v) = on the assembled (E, F_e) features."""
    from gnn.edges import EdgeSet
    from gnn.layers.blocks import EdgeFeatures

    torch.manual_seed(0)
    n = 16
    src, dst = random_edges(n, 60, seed=3)
    etype = torch.randint(0, 4, (src.numel(),), generator=torch.Generator().manual_seed(2))
    etype[etype == 2] = 3  # a type id with no edge
    weight = torch.rand(src.numel())
    edges = EdgeSet(src.numpy(), dst.numpy(), weight.numpy(), etype.numpy(), n)
    backend = get_backend("pyg")
    for use_weight, num_types in [(True, 4), (False, 4), (True, 1)]:
        feats = EdgeFeatures(use_weight, num_types=num_types, type_dim=5)
        layer = ExphormerAttention(8, 8, heads=2, edge_dim=feats.dim)
        x = torch.randn(n, 8, requires_grad=True)
        typed = feats.typed(edges, backend)
        torch.testing.assert_close(typed.dense(), feats(edges))
        out = layer(x, edges.ops(backend), typed)
        ref = layer(x, edges.ops(backend), feats(edges))
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
        params = [x] + list(layer.parameters()) + list(feats.parameters())
        grads = torch.autograd.grad(out.square().sum(), params)
        grads_ref = torch.autograd.grad(ref.square().sum(), params)
        for got, want in zip(grads, grads_ref):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_edge_set_ops_by_type_covers_every_edge_once():
    from gnn.edges import EdgeSet

    src, dst = random_edges(9, 30, seed=1)
    etype = torch.randint(0, 3, (src.numel(),), generator=torch.Generator().manual_seed(0))
    edges = EdgeSet(src.numpy(), dst.numpy(), torch.ones(src.numel()).numpy(), etype.numpy(), 9)
    handles, order = edges.ops_by_type(get_backend("pyg"))
    assert [t for t, _ in handles] == sorted(set(etype.tolist()))
    cat_src = torch.cat([h.src for _, h in handles])
    cat_dst = torch.cat([h.dst for _, h in handles])
    assert torch.equal(cat_src[order], src) and torch.equal(cat_dst[order], dst)
    assert edges.ops_by_type(get_backend("pyg"))[0][0][1] is handles[0][1]  # cached


def test_pyg_edge_softmax_equals_pyg_utils_softmax_with_gradients():
    from torch_geometric.utils import softmax

    torch.manual_seed(0)
    n = 11
    src, dst = random_edges(n, 40, seed=9, self_loops=False)
    ops = get_backend("pyg").graph(src, dst, n)
    s = (torch.randn(src.numel(), 3, dtype=torch.float64) * 30).requires_grad_()  # large: the max shift matters
    out, ref = ops.edge_softmax(s), softmax(s, index=dst, num_nodes=n, dim=0)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, s, g)[0], torch.autograd.grad(ref, s, g)[0])
    assert torch.autograd.gradcheck(ops.edge_softmax, (s.detach()[:, :1].clone().requires_grad_(),))
