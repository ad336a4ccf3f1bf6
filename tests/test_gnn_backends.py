"""DGL and PyG backends give the same numbers: primitives, every encoder's output and gradients (1e-5).

Marked ``dgl``: they skip where DGL does not import (the main env) and run in the DGL environment built by
``.ci/dgl_env.sh``, which sets ``TXPERT_REQUIRE_DGL=1`` so that a broken DGL fails instead of skipping.
"""

from __future__ import annotations

import os

import pytest
import torch

from gnn import KINDS, PerturbationEncoder, dgl_available, get_backend
from gnn_graphs import multigraph

if not dgl_available() and os.environ.get("TXPERT_REQUIRE_DGL") == "1":
    from gnn.backends.dgl import _import_dgl

    _import_dgl()  # raises the real import error under the DGL environment

pytestmark = [pytest.mark.dgl, pytest.mark.skipif(not dgl_available(), reason="DGL is not importable here")]
TOL = dict(rtol=1e-5, atol=1e-5)


def test_auto_backend_is_dgl_when_importable():
    assert get_backend("auto").name == "dgl"


def test_primitives_agree():
    torch.manual_seed(0)
    n, e, h, c = 30, 200, 2, 4
    src, dst = torch.randint(0, n, (e,)), torch.randint(0, n, (e,))
    pyg, dgl = get_backend("pyg").graph(src, dst, n), get_backend("dgl").graph(src, dst, n)
    x, y, ed, s = torch.randn(n, h, c), torch.randn(n, h, c), torch.randn(e, h, c), torch.randn(e, h)
    for name, args in [("u_add_v", (x, y)), ("e_dot_v", (ed, y)), ("edge_softmax", (s,)),
                       ("aggregate", (ed,)), ("u_mul_e_sum", (x, s)), ("gather_src", (x,)), ("gather_dst", (x,))]:
        torch.testing.assert_close(getattr(dgl, name)(*args), getattr(pyg, name)(*args), **TOL, msg=name)


@pytest.mark.parametrize("kind", list(KINDS))
def test_encoder_same_output_and_gradients_on_both_backends(kind):
    graph = multigraph(n_genes=40, n_edges=120)
    opts = dict(genes=["G1", "NOVEL1"], kind=kind, dim=16, layers=2, heads=2)
    if kind.startswith("exphormer"):
        opts.update(num_virtual=2, expander_degree=4)
    results = {}
    for backend in ("pyg", "dgl"):
        torch.manual_seed(0)
        enc = PerturbationEncoder(graph, backend=backend, **opts)
        z = enc()
        target = torch.randn(z.shape, generator=torch.Generator().manual_seed(1))
        ((z - target) ** 2).sum().backward()
        results[backend] = (z.detach(), {n: p.grad.clone() for n, p in enc.named_parameters()})
    (z_p, g_p), (z_d, g_d) = results["pyg"], results["dgl"]
    torch.testing.assert_close(z_d, z_p, **TOL)
    assert g_p.keys() == g_d.keys()
    for name in g_p:
        torch.testing.assert_close(g_d[name], g_p[name], **TOL, msg=f"gradient of {name}")


@pytest.mark.parametrize("kind", ["gat", "exphormer-mg", "gat-mlg", "hybrid-bmp"])
def test_effect_inputs_same_output_prior_and_gradients_on_both_backends(kind):
    graph = multigraph(n_genes=40, n_edges=120)
    gen = torch.Generator().manual_seed(3)
    coded = [f"G{i}" for i in range(0, 40, 3)]
    codes, feats = torch.randn(len(coded), 5, generator=gen), torch.randn(20, 5, generator=gen)
    results = {}
    for backend in ("pyg", "dgl"):
        torch.manual_seed(0)
        enc = PerturbationEncoder(graph, genes=["G1", "NOVEL1"], kind=kind, dim=16, layers=2, heads=2, backend=backend,
                                  node_inputs="effects", code_dim=5, gene_dim=5)
        enc.set_effects(coded, codes, codes.mean(0))
        enc.set_gene_features([f"G{i}" for i in range(20)], feats)
        out = enc.encode(torch.arange(enc.num_nodes) % 4 == 0)  # a quarter of the own codes hidden
        target = torch.randn(out.Z.shape, generator=torch.Generator().manual_seed(1))
        (((out.Z - target) ** 2).sum() + out.prior.square().sum()).backward()
        results[backend] = (out.Z.detach(), out.prior.detach(), {n: p.grad.clone() for n, p in enc.named_parameters()})
    (z_p, pr_p, g_p), (z_d, pr_d, g_d) = results["pyg"], results["dgl"]
    torch.testing.assert_close(z_d, z_p, **TOL)
    torch.testing.assert_close(pr_d, pr_p, **TOL)
    for name in g_p:  # the input projection's bias sums O(100) terms per entry: float32 rounding scales with them
        atol = TOL["atol"] * max(1.0, float(g_p[name].abs().max()))
        torch.testing.assert_close(g_d[name], g_p[name], rtol=TOL["rtol"], atol=atol, msg=f"gradient of {name}")
