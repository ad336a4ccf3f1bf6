"""The fused block kernels (gnn/layers/fused_blocks.c) against the torch operations they replace: the residual
ELU + LayerNorm that ends a ConvBlock and LayerAttention's combination; same outputs and gradients in
float64 and float32, at several widths and thread counts; the layers take them, and fall back to torch when
switched off or in dropout training; every encoder kind gives the same numbers either way."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gnn import KINDS, PerturbationEncoder
from gnn.layers import fused_blocks
from gnn.layers.blocks import ConvBlock, LayerAttention, make_conv

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler here: the layers compose torch")


def _norm(width: int, dtype: torch.dtype, seed: int = 0) -> torch.nn.LayerNorm:
    torch.manual_seed(seed)
    norm = torch.nn.LayerNorm(width).to(dtype)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    return norm


def _grads(out: torch.Tensor, g: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(out, params, g))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("rows,width", [(500, 64), (37, 20), (3, 128)])
@pytest.mark.parametrize("threads", [1, 3])
def test_residual_elu_norm_equals_torch(dtype, tol, rows, width, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        norm = _norm(width, dtype)
        gen = torch.Generator().manual_seed(1)
        h = torch.randn(rows, width, generator=gen, dtype=dtype, requires_grad=True)
        c = (3 * torch.randn(rows, width, generator=gen, dtype=dtype)).requires_grad_()   # both sides of 0
        g = torch.randn(rows, width, generator=gen, dtype=dtype)
        params = [h, c, norm.weight, norm.bias]
        fused = fused_blocks.residual_elu_norm(h, c, norm)
        assert fused is not None and fused.grad_fn.name().startswith("_ResidualEluNorm")
        ref = norm(h + F.elu(c))
        torch.testing.assert_close(fused, ref, rtol=tol, atol=tol)
        for a, b in zip(_grads(fused, g, params), _grads(ref, g, params)):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol * max(1.0, b.abs().max().item()))
    finally:
        torch.set_num_threads(before)


def test_residual_elu_norm_gradcheck_and_nan():
    norm = _norm(6, torch.float64)
    h, c = (torch.randn(5, 6, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(lambda *t: fused_blocks._ResidualEluNorm.apply(*t, 1e-5),
                                    (h, c, norm.weight, norm.bias))
    x = torch.tensor([[float("nan"), -100.0, -1e-8, 0.0, 1e-8, 3.0]])
    out = fused_blocks.residual_elu_norm(torch.zeros_like(x), x, torch.nn.LayerNorm(6))
    assert out.isnan().all(), "a NaN in a row makes the whole normalised row NaN, as in torch"
    y = torch.tensor([[-100.0, -20.0, -1e-8, 0.0, 1e-8, 3.0]])
    torch.testing.assert_close(fused_blocks.residual_elu_norm(torch.zeros_like(y), y, torch.nn.LayerNorm(6)),
                               torch.nn.LayerNorm(6)(F.elu(y)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("views,nodes,width", [(4, 300, 64), (3, 41, 20), (1, 7, 16)])
@pytest.mark.parametrize("threads", [1, 2])
def test_layer_attention_equals_torch(monkeypatch, dtype, tol, views, nodes, width, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        layer = LayerAttention(width).to(dtype)
        gen = torch.Generator().manual_seed(2)
        h = (2 * torch.randn(views, nodes, width, generator=gen, dtype=dtype)).requires_grad_()
        g = torch.randn(nodes, width, generator=gen, dtype=dtype)
        params = [h, *layer.parameters()]
        runs = {}
        for switch in ("1", "0"):
            monkeypatch.setenv(fused_blocks.ENV_SWITCH, switch)
            z = layer(h)
            runs[switch] = (z, layer.last_weights, _grads(z, g, params))
        assert runs["1"][0].grad_fn.name().startswith("_LayerAttention"), "switched on, the fused kernel runs"
        assert not runs["0"][0].grad_fn.name().startswith("_LayerAttention")
        (z1, w1, g1), (z0, w0, g0) = runs["1"], runs["0"]
        torch.testing.assert_close(z1, z0, rtol=tol, atol=tol)
        assert w1.shape == w0.shape == (nodes, views)
        torch.testing.assert_close(w1, w0, rtol=tol, atol=tol)
        torch.testing.assert_close(w1.sum(1), torch.ones(nodes, dtype=dtype))
        for a, b in zip(g1, g0):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol * max(1.0, b.abs().max().item()))
    finally:
        torch.set_num_threads(before)


def test_layer_attention_gradcheck():
    gen = torch.Generator().manual_seed(3)
    p, h = (torch.randn(3, 5, k, generator=gen, dtype=torch.float64, requires_grad=True) for k in (4, 6))
    q = torch.randn(4, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: fused_blocks.layer_attention(*t)[0], (p, h, q))


def test_conv_block_takes_the_kernel_unless_switched_off_or_dropout_training(monkeypatch):
    from gnn.backends import get_backend
    from gnn.edges import EdgeSet

    torch.manual_seed(0)
    edges = EdgeSet(np.array([0, 1, 2, 3, 1]), np.array([1, 2, 3, 0, 0]), np.ones(5), np.zeros(5, np.int64), num_nodes=4)
    ops = edges.ops(get_backend("pyg"))
    block = ConvBlock(make_conv("gat", 8, 2, None, 0.0), 8, dropout=0.5)
    h = torch.randn(4, 8)
    calls = []
    real = fused_blocks.residual_elu_norm
    monkeypatch.setattr(fused_blocks, "residual_elu_norm", lambda *a: calls.append(1) or real(*a))
    block.eval()
    out = block(h, ops, None)
    assert calls == [1], "no dropout at evaluation: the fused tail"
    block.train()
    torch.manual_seed(1)
    block(h, ops, None)
    assert calls == [1], "dropout while training sits between ELU and the residual: torch"
    block.eval()
    monkeypatch.setenv(fused_blocks.ENV_SWITCH, "0")
    ref = block(h, ops, None)
    assert calls == [1, 1], "asked, but it declines when switched off"
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_encoder_gives_the_same_numbers_with_and_without_the_kernels(monkeypatch, kind):
    from gnn_graphs import multigraph

    graph = multigraph()
    runs = []
    for switch in ("1", "0"):
        monkeypatch.setenv(fused_blocks.ENV_SWITCH, switch)
        torch.manual_seed(0)
        enc = PerturbationEncoder(graph, kind=kind, dim=16, layers=2, heads=2, backend="pyg")
        z = enc()
        (z.square().sum() + z[:, 0].sum()).backward()
        runs.append((z.detach(), [p.grad for p in enc.parameters() if p.grad is not None]))
    (z1, g1), (z0, g0) = runs
    torch.testing.assert_close(z1, z0, rtol=1e-5, atol=1e-5)
    assert len(g1) == len(g0)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_a_kernel_library_is_named_by_its_source_and_the_headers_it_includes(tmp_path, monkeypatch):
    """Both kernel sources include gnn/backends/fast_math.h; editing a header must give a new library name (a
    rebuild), not a stale cached library."""
    from gnn.backends.compiled import CompiledLibrary

    monkeypatch.setenv("TXPERT_KERNEL_CACHE", str(tmp_path / "kernels"))
    (tmp_path / "inc").mkdir()
    (tmp_path / "inc" / "deep.h").write_text("#define DEEP 1\n")
    (tmp_path / "shared.h").write_text('#include "inc/deep.h"\n#define SHARED 1\n')
    source = tmp_path / "k.c"
    source.write_text('#include <math.h>\n  #  include "shared.h"\nint txk_one_f32(void) { return SHARED - DEEP; }\n'
                      'int txk_one_f64(void) { return 0; }\n')
    lib = CompiledLibrary(source, lambda lib: None, "test kernels", "nothing", "TXPERT_TEST_SWITCH")
    assert lib.files() == [source.resolve(), (tmp_path / "shared.h").resolve(), (tmp_path / "inc" / "deep.h").resolve()]
    first = lib.path()
    (tmp_path / "inc" / "deep.h").write_text("#define DEEP 0\n")
    assert lib.path() != first
    assert lib.load() is not None and lib.load().txk_one_f32() == 1   # built with the edited header
    from gnn.backends import fused_attention

    assert Path(fused_attention.SOURCE).with_name("fast_math.h").resolve() in fused_attention._KERNELS.files()
    assert Path(fused_attention.SOURCE).with_name("fast_math.h").resolve() in fused_blocks._KERNELS.files()
