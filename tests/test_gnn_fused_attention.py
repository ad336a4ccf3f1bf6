"""The fused Exphormer attention kernels (gnn/backends/fused_attention.c) against the composed primitives:
the same outputs, attention and gradients, in float64 and float32, for every shape the kernels specialise
and for run-time shapes; the layer falls back to the primitives when switched off or in dropout training."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from gnn.backends import fused_attention, get_backend
from gnn.edges import EdgeSet
from gnn.layers import ExphormerAttention
from gnn.layers.blocks import EdgeFeatures

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler here: the layer composes primitives")


def composed(q, k, v, u, b, src, dst, n, weight, etype, clamp):
    """The attention of the fused kernels, written with plain gather / scatter (the module docstring)."""
    eps = (weight.view(-1, 1, 1) * u if weight is not None else 0) + b[etype if etype is not None else 0 * src]
    s = ((q[dst] * k[src] * eps).sum(-1) / math.sqrt(q.shape[-1])).clamp(-clamp, clamp)
    peak = torch.full((n, s.shape[1]), -torch.inf, dtype=s.dtype).scatter_reduce(
        0, dst.view(-1, 1).expand_as(s), s, "amax")
    ex = (s - peak[dst]).exp()
    alpha = ex / (torch.zeros(n, s.shape[1], dtype=s.dtype).index_add(0, dst, ex)[dst] + 1e-16)
    return torch.zeros_like(q).index_add(0, dst, alpha.unsqueeze(-1) * v[src]), alpha


def problem(n, e, heads, ch, types, dtype, seed, scale=1.0, isolated=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n, (e,), generator=g)
    dst = torch.randint(isolated, n, (e,), generator=g)   # nodes < isolated get no incoming edge
    q, k, v = (scale * torch.randn(n, heads, ch, generator=g, dtype=dtype) for _ in range(3))
    u = torch.randn(heads, ch, generator=g, dtype=dtype)
    b = torch.randn(types, heads, ch, generator=g, dtype=dtype)
    weight = torch.rand(e, generator=g, dtype=dtype)
    etype = torch.randint(0, types, (e,), generator=g)
    return src, dst, [t.requires_grad_() for t in (q, k, v, u, b)], weight, etype


def at_one_and_n_threads(fn, params, threads):
    """``fn(*params)``'s output and the gradients of its squared sum, at 1 thread and at ``threads``:
    ``(out_1, grads_1, out_n, grads_n)``; torch's thread count is restored after."""
    before = torch.get_num_threads()
    runs = []
    try:
        for n in (1, threads):
            torch.set_num_threads(n)
            out = fn(*params)
            runs += [out, torch.autograd.grad(out.square().sum(), params)]
    finally:
        torch.set_num_threads(before)
    return tuple(runs)


def check_layer_takes_its_kernel(monkeypatch, kernel, run, params):
    """``run()`` (a layer's forward) goes through ``fused_attention.<kernel>``; with ``TXPERT_FUSED_ATTENTION=0``
    it composes the primitives and gives the same output, attention and gradients of ``params``; and with
    attention dropout while training it never calls the kernel. ``run`` returns ``(layer, output)``."""
    calls = []
    real = getattr(fused_attention, kernel)
    monkeypatch.setattr(fused_attention, kernel, lambda *a: calls.append(1) or real(*a))
    layer, out = run()
    alpha = layer.last_attention
    assert calls, "the layer did not take the fused kernels"
    monkeypatch.setenv(fused_attention.ENV_SWITCH, "0")
    _, ref = run()
    assert len(calls) == 1, "TXPERT_FUSED_ATTENTION=0 must compose the primitives"
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(alpha, layer.last_attention, rtol=1e-5, atol=1e-6)
    for got, want in zip(torch.autograd.grad(out.square().sum(), params), torch.autograd.grad(ref.square().sum(), params)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)

    layer.dropout = 0.3   # attention dropout while training: composed, never the kernels
    monkeypatch.setattr(fused_attention, kernel, lambda *a: pytest.fail("fused kernel in dropout training"))
    monkeypatch.setenv(fused_attention.ENV_SWITCH, "1")
    layer.train()
    run()


@needs_cc
def test_the_kernels_build_here():
    assert fused_attention.library() is not None, "cc is present, so the kernels must compile and load"


@needs_cc
@pytest.mark.parametrize("heads,ch", [(2, 32), (4, 16), (1, 64), (3, 5)])   # specialised, and run-time sizes
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("features", ["weight+type", "type", "weight"])
def test_fused_equals_composed_outputs_attention_and_gradients(heads, ch, dtype, features):
    n, e, types = 40, 300, 4
    # scale 3: many scores reach the clamp, so its gradient mask is exercised; 5 nodes have no incoming edge
    src, dst, (q, k, v, u, b), weight, etype = problem(n, e, heads, ch, types, dtype, seed=heads * ch, scale=3.0,
                                                       isolated=5)
    weight = weight if "weight" in features else None
    etype = etype if "type" in features else None
    b_used = b if etype is not None else b[:1]
    index = fused_attention.TypedAttentionIndex(src, dst, n, weight, etype)
    out, alpha = fused_attention.typed_attention(q, k, v, u, b_used, index, clamp=5.0)
    ref, ref_alpha = composed(q, k, v, u, b_used, src, dst, n, weight, etype, 5.0)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out, ref, **tol)
    torch.testing.assert_close(index.edge_order(alpha), ref_alpha.detach(), **tol)
    assert (out[:5] == 0).all()
    grad = torch.randn_like(out)
    params = (q, k, v, u, b)
    got_all = torch.autograd.grad(out, params, grad)
    for got, want in zip(got_all, torch.autograd.grad(ref, params, grad, allow_unused=True)):
        if want is None:   # u without the weight as a feature: no gradient there, zeros from the kernel
            assert (got == 0).all()
            continue
        torch.testing.assert_close(got, want, **(tol if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)))


@needs_cc
def test_fused_gradcheck_float64():
    src, dst, (q, k, v, u, b), weight, etype = problem(9, 40, 2, 3, 3, torch.float64, seed=1)
    index = fused_attention.TypedAttentionIndex(src, dst, 9, weight, etype)
    assert torch.autograd.gradcheck(lambda *t: fused_attention.typed_attention(*t, index, 5.0)[0], (q, k, v, u, b))


@needs_cc
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_fused_results_do_not_depend_on_the_thread_count(threads):
    src, dst, (q, k, v, u, b), weight, etype = problem(200, 3000, 2, 32, 4, torch.float32, seed=5)
    index = fused_attention.TypedAttentionIndex(src, dst, 200, weight, etype)
    ref, grads_ref, out, grads = at_one_and_n_threads(
        lambda *t: fused_attention.typed_attention(*t, index, 5.0)[0], (q, k, v, u, b), threads)
    assert torch.equal(out, ref)   # rows are independent: bitwise the same
    for got, want in zip(grads[:3], grads_ref[:3]):
        assert torch.equal(got, want)
    for got, want in zip(grads[3:], grads_ref[3:]):   # per-block partial sums: rounding only
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _layer_and_edges(n=30, e=200):
    src, dst, *_ = problem(n, e, 2, 4, 3, torch.float32, seed=7)
    etype = torch.randint(0, 3, (e,), generator=torch.Generator().manual_seed(3))
    edges = EdgeSet(src.numpy(), dst.numpy(), torch.rand(e).numpy(), etype.numpy(), n)
    feats = EdgeFeatures(True, num_types=3, type_dim=4)
    torch.manual_seed(0)
    return ExphormerAttention(8, 8, heads=2, edge_dim=feats.dim), edges, feats


@needs_cc
def test_layer_uses_the_kernels_and_equals_the_composed_layer(monkeypatch):
    layer, edges, feats = _layer_and_edges()
    backend = get_backend("pyg")
    x = torch.randn(30, 8, requires_grad=True)
    calls = []
    real = fused_attention.typed_attention
    monkeypatch.setattr(fused_attention, "typed_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    out = layer(x, edges.ops(backend), feats.typed(edges, backend))
    alpha = layer.last_attention
    assert calls, "the layer did not take the fused kernels"
    monkeypatch.setenv(fused_attention.ENV_SWITCH, "0")
    ref = layer(x, edges.ops(backend), feats.typed(edges, backend))
    assert len(calls) == 1, "TXPERT_FUSED_ATTENTION=0 must compose the primitives"
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(alpha, layer.last_attention, rtol=1e-5, atol=1e-6)
    params = [x] + list(layer.parameters()) + list(feats.parameters())
    for got, want in zip(torch.autograd.grad(out.square().sum(), params), torch.autograd.grad(ref.square().sum(), params)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_dropout_training_composes_the_primitives(monkeypatch):
    layer, edges, feats = _layer_and_edges()
    layer.dropout = 0.3
    backend = get_backend("pyg")
    monkeypatch.setattr(fused_attention, "typed_attention", lambda *a, **kw: pytest.fail("fused kernel in dropout training"))
    layer.train()
    layer(torch.randn(30, 8), edges.ops(backend), feats.typed(edges, backend))


# -- the softmax-and-sum kernels (GAT's and GATv2's aggregation) ------------------------------------------------


def softmax_sum_reference(score, x, src, dst, n):
    """``alpha = softmax(score)`` over each target's incoming edges and ``sum_e alpha_e x_src``, with plain
    gather / scatter (PyG's formula: max-shifted, ``exp / (sum + 1e-16)``)."""
    peak = torch.full((n, score.shape[1]), -torch.inf, dtype=score.dtype).scatter_reduce(
        0, dst.view(-1, 1).expand_as(score), score, "amax")
    ex = (score - peak[dst]).exp()
    alpha = ex / (torch.zeros(n, score.shape[1], dtype=score.dtype).index_add(0, dst, ex)[dst] + 1e-16)
    return torch.zeros_like(x).index_add(0, dst, alpha.unsqueeze(-1) * x[src]), alpha


def softmax_sum_problem(n, e, heads, ch, dtype, seed, isolated=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n, (e,), generator=g)
    dst = torch.randint(isolated, n, (e,), generator=g)   # nodes < isolated get no incoming edge
    score = (4 * torch.randn(e, heads, generator=g, dtype=dtype)).requires_grad_()   # peaked softmaxes too
    x = torch.randn(n, heads, ch, generator=g, dtype=dtype).requires_grad_()
    return src, dst, score, x


@needs_cc
@pytest.mark.parametrize("heads,ch", [(2, 32), (4, 16), (1, 64), (3, 5)])   # specialised, and run-time sizes
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_softmax_sum_equals_the_reference_with_gradients(heads, ch, dtype):
    n = 40
    src, dst, score, x = softmax_sum_problem(n, 300, heads, ch, dtype, seed=heads * ch, isolated=5)
    index = fused_attention.TypedAttentionIndex(src, dst, n, None, None)
    out, alpha = fused_attention.softmax_sum(score, x, index)
    ref, ref_alpha = softmax_sum_reference(score, x, src, dst, n)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, ref, **tol)
    torch.testing.assert_close(index.edge_order(alpha), ref_alpha.detach(), **tol)
    assert (out[:5] == 0).all()
    grad = torch.randn_like(out)
    for got, want in zip(torch.autograd.grad(out, (score, x), grad), torch.autograd.grad(ref, (score, x), grad)):
        torch.testing.assert_close(got, want, **(tol if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)))


@needs_cc
def test_softmax_sum_gradcheck_float64():
    src, dst, score, x = softmax_sum_problem(9, 40, 2, 3, torch.float64, seed=2, isolated=1)
    index = fused_attention.TypedAttentionIndex(src, dst, 9, None, None)
    assert torch.autograd.gradcheck(lambda s, v: fused_attention.softmax_sum(s, v, index)[0], (score, x))


@needs_cc
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_softmax_sum_does_not_depend_on_the_thread_count(threads):
    src, dst, score, x = softmax_sum_problem(200, 3000, 2, 32, torch.float32, seed=6)
    index = fused_attention.TypedAttentionIndex(src, dst, 200, None, None)
    ref, grads_ref, out, grads = at_one_and_n_threads(
        lambda s, v: fused_attention.softmax_sum(s, v, index)[0], (score, x), threads)
    assert torch.equal(out, ref)   # every row, and every edge's score gradient, belongs to one thread
    for got, want in zip(grads, grads_ref):
        assert torch.equal(got, want)


@needs_cc
@pytest.mark.parametrize("conv", ["gat", "gatv2"])
def test_gat_layers_use_the_softmax_sum_kernels_and_equal_the_composed_layers(conv, monkeypatch):
    from gnn.layers import GATConv, GATv2Conv

    n, e = 30, 200
    src, dst, *_ = softmax_sum_problem(n, e, 2, 4, torch.float32, seed=8, isolated=3)
    ops = get_backend("pyg").graph(src, dst, n)
    torch.manual_seed(0)
    layer = (GATConv if conv == "gat" else GATv2Conv)(8, 4, heads=2, edge_dim=1)
    x, ea = torch.randn(n, 8, requires_grad=True), torch.rand(e, 1)
    check_layer_takes_its_kernel(monkeypatch, "softmax_sum", lambda: (layer, layer(x, ops, ea)),
                                 [x] + list(layer.parameters()))


# -- GATv2's attention on factored edge features ------------------------------------------------------------------


def gatv2_reference(l, r, u, b, att, src, dst, n, weight, etype, slope):
    """GATv2's attention with plain gather / scatter: ``z = l_src + r_dst + (w u + B_t)``, score
    ``sum_c att LeakyReLU(z)``, softmax over incoming edges, ``sum_e alpha l_src``."""
    eps = (weight.view(-1, 1, 1) * u if weight is not None else 0) + b[etype if etype is not None else 0 * src]
    z = l[src] + r[dst] + eps
    score = (torch.nn.functional.leaky_relu(z, slope) * att).sum(-1)
    return softmax_sum_reference(score, l, src, dst, n)


@needs_cc
@pytest.mark.parametrize("heads,ch", [(2, 32), (4, 16), (1, 64), (3, 5)])   # specialised, and run-time sizes
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("features", ["weight+type", "type", "weight", "none"])
def test_gatv2_kernels_equal_the_reference_with_gradients(heads, ch, dtype, features):
    n, e, types = 40, 300, 4
    src, dst, (l, r, _, u, b), weight, etype = problem(n, e, heads, ch, types, dtype, seed=heads + ch, isolated=5)
    att = torch.randn(heads, ch, dtype=dtype, generator=torch.Generator().manual_seed(9)).requires_grad_()
    weight = weight if "weight" in features else None
    etype = etype if "type" in features else None
    b_used = b if etype is not None else b[:1]
    index = fused_attention.TypedAttentionIndex(src, dst, n, weight, etype)
    out, alpha = fused_attention.gatv2_attention(l, r, u, b_used, att, index, 0.2)
    ref, ref_alpha = gatv2_reference(l, r, u, b_used, att, src, dst, n, weight, etype, 0.2)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out, ref, **tol)
    torch.testing.assert_close(index.edge_order(alpha), ref_alpha.detach(), **tol)
    assert (out[:5] == 0).all()
    grad = torch.randn_like(out)
    params = (l, r, u, b, att)
    for got, want in zip(torch.autograd.grad(out, params, grad), torch.autograd.grad(ref, params, grad, allow_unused=True)):
        if want is None:   # u without the weight as a feature: no gradient there, zeros from the kernel
            assert (got == 0).all()
            continue
        torch.testing.assert_close(got, want, **(tol if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)))


@needs_cc
def test_gatv2_parameter_gradients_over_many_row_groups_equal_the_reference():
    # the first backward pass sums du, dB and da per group of FLUSH_ROWS (32) target rows, then across groups:
    # 333 rows in one or two blocks end in full groups and in a partial one
    n, e = 333, 4000
    src, dst, (l, r, _, u, b), weight, etype = problem(n, e, 2, 32, 5, torch.float32, seed=11, isolated=3)
    att = torch.randn(2, 32, generator=torch.Generator().manual_seed(5)).requires_grad_()
    index = fused_attention.TypedAttentionIndex(src, dst, n, weight, etype)
    params = (l, r, u, b, att)
    _, grads_1, _, grads_2 = at_one_and_n_threads(
        lambda *t: fused_attention.gatv2_attention(*t, index, 0.2)[0], params, 2)
    ref, _ = gatv2_reference(l, r, u, b, att, src, dst, n, weight, etype, 0.2)
    want = torch.autograd.grad(ref.square().sum(), params)
    for got in (grads_1, grads_2):
        for g_, w_ in zip(got, want):
            torch.testing.assert_close(g_, w_, rtol=1e-4, atol=1e-3)


@needs_cc
def test_gatv2_kernels_gradcheck_float64():
    src, dst, (l, r, _, u, b), weight, etype = problem(9, 40, 2, 3, 3, torch.float64, seed=3, isolated=1)
    att = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    index = fused_attention.TypedAttentionIndex(src, dst, 9, weight, etype)
    assert torch.autograd.gradcheck(lambda *t: fused_attention.gatv2_attention(*t, index, 0.2)[0], (l, r, u, b, att))


@needs_cc
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_gatv2_kernels_do_not_depend_on_the_thread_count(threads):
    src, dst, (l, r, _, u, b), weight, etype = problem(200, 3000, 2, 32, 4, torch.float32, seed=4)
    att = torch.randn(2, 32, requires_grad=True)
    index = fused_attention.TypedAttentionIndex(src, dst, 200, weight, etype)
    ref, grads_ref, out, grads = at_one_and_n_threads(
        lambda *t: fused_attention.gatv2_attention(*t, index, 0.2)[0], (l, r, u, b, att), threads)
    assert torch.equal(out, ref)   # rows are independent: bitwise the same
    for got, want in zip(grads[:2], grads_ref[:2]):
        assert torch.equal(got, want)
    for got, want in zip(grads[2:], grads_ref[2:]):   # per-block partial sums of 3000 float32 terms: rounding
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@needs_cc
@pytest.mark.parametrize("features", ["weight+type", "weight", "none"])
def test_gatv2_layer_uses_its_kernels_and_equals_the_composed_layer(features, monkeypatch):
    from gnn.edges import TypedEdgeFeatures
    from gnn.layers import GATv2Conv

    n, e = 30, 200
    src, dst, *_ = softmax_sum_problem(n, e, 2, 4, torch.float32, seed=11, isolated=3)
    ops = get_backend("pyg").graph(src, dst, n)
    gen = torch.Generator().manual_seed(4)
    weight = torch.rand(e, generator=gen) if "weight" in features else None
    table = torch.randn(3, 5, generator=gen, requires_grad=True) if "type" in features else None
    feats = None if features == "none" else \
        TypedEdgeFeatures(weight, table, torch.randint(0, 3, (e,), generator=gen), [], None)
    edge_dim = None if feats is None else int(weight is not None) + (5 if table is not None else 0)
    torch.manual_seed(0)
    layer = GATv2Conv(8, 4, heads=2, edge_dim=edge_dim)
    x = torch.randn(n, 8, requires_grad=True)
    check_layer_takes_its_kernel(monkeypatch, "gatv2_attention", lambda: (layer, layer(x, ops, feats)),
                                 [x] + list(layer.parameters()) + ([table] if table is not None else []))
