"""PerturbationEncoder: vocabulary and index, every kind runs, isolated genes, gradients, attention,
and for every multigraph kind the edges of every layer (not only the first) change the output."""

from __future__ import annotations

import pytest
import torch

from gnn import KINDS, PerturbationEncoder
from gnn.backends.pyg import PyGBackend, PyGGraph
from gnn.layers.attention_convs import ExphormerAttention, GATConv, GATv2Conv
from gnn.layers.blocks import conv_edge_features
from gnn_graphs import multigraph, rewire_layer

MULTIGRAPH_KINDS = ["exphormer-mg", "gat-hybrid", "gat-mlg", "hybrid-bmp"]


def build(graph, kind, seed=0, **kw):
    torch.manual_seed(seed)
    opts = dict(genes=["G1", "NOVEL1", "NOVEL2"], kind=kind, dim=16, layers=2, heads=2, backend="pyg")
    if kind.startswith("exphormer"):
        opts.update(num_virtual=1, expander_degree=4)
    opts.update(kw)
    return PerturbationEncoder(graph, **opts)


@pytest.fixture(scope="module")
def graph():
    return multigraph()


def test_vocab_and_index(graph):
    enc = build(graph, "gat")
    assert enc.vocab == graph.nodes.tolist() + ["NOVEL1", "NOVEL2"]
    assert enc.num_nodes == graph.num_nodes + 2
    idx = enc.index(["G3", "NOVEL2"])
    assert idx.dtype == torch.long and idx.tolist() == [enc.vocab.index("G3"), graph.num_nodes + 1]
    with pytest.raises(KeyError, match="NOPE"):
        enc.index(["G3", "NOPE"])


def test_bad_arguments_are_named(graph):
    with pytest.raises(ValueError, match="unknown encoder kind 'gcnx'"):
        PerturbationEncoder(graph, kind="gcnx")
    with pytest.raises(ValueError, match="divisible"):
        PerturbationEncoder(graph, dim=15, heads=2)
    with pytest.raises(TypeError, match="num_virtual"):
        PerturbationEncoder(graph, kind="gat", num_virtual=2)
    with pytest.raises(ValueError, match="unknown backend"):
        PerturbationEncoder(graph, backend="jax")


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_embeds_every_gene_and_gradients_reach_inputs(graph, kind):
    enc = build(graph, kind)
    z = enc()
    assert z.shape == (enc.num_nodes, 16) and torch.isfinite(z).all()
    # a loss that is not constant under LayerNorm (a plain sum would be)
    target = torch.randn(z.shape, generator=torch.Generator().manual_seed(1))
    ((z - target) ** 2).sum().backward()
    grad = enc.embedding.weight.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert (grad.abs().sum(1) > 0).all(), "every input row (graph genes, LONELY, absent genes) gets a gradient"
    for name, p in enc.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"


@pytest.mark.parametrize("kind", list(KINDS))
def test_gene_without_edges_gets_its_own_embedding(graph, kind):
    enc = build(graph, kind)
    lonely, novel1, novel2 = enc.index(["LONELY", "NOVEL1", "NOVEL2"]).tolist()
    z = enc()
    assert not torch.allclose(z[novel1], z[novel2]) and not torch.allclose(z[lonely], z[novel1])
    # its embedding depends on its own input row only: changing another gene's row leaves it unchanged.
    # LONELY is a graph node without edges: Exphormer's expander / virtual nodes reach it by design.
    isolated = (novel1, novel2) if kind.startswith("exphormer") else (lonely, novel1, novel2)
    with torch.no_grad():
        enc.embedding.weight[enc.index(["G5"])] += 1.0
    z2 = enc()
    for row in isolated:
        torch.testing.assert_close(z2[row], z[row])
    assert not torch.allclose(z2[enc.index(["G5"])], z[enc.index(["G5"])])


@pytest.mark.parametrize("kind", MULTIGRAPH_KINDS)
@pytest.mark.parametrize("layer", ["go", "depmap"])
def test_edges_of_a_later_layer_change_the_output(graph, kind, layer):
    base = build(graph, kind)()
    changed = build(rewire_layer(graph, layer, seed=99), kind)()
    assert changed.shape == base.shape
    assert (changed - base).abs().max() > 1e-3, f"{kind}: rewiring layer {layer!r} did not change the output"
    # control: rebuilding with unchanged edges gives the same output, so the difference is the edges
    torch.testing.assert_close(build(graph, kind)(), base)


class RecordingGraph(PyGGraph):
    """PyG primitives that record every edge softmax they compute, composed or inside a fused kernel (the
    Exphormer attention, GATv2's attention, GAT's softmax-and-sum): (targets (E,), attention (E, H) in edge
    order)."""

    records: list = []

    def edge_softmax(self, score):
        alpha = super().edge_softmax(score)
        RecordingGraph.records.append((self.dst, self.num_nodes, alpha.detach()))
        return alpha

    def typed_dot_attention(self, *args):
        return self._record(super().typed_dot_attention(*args))

    def edge_softmax_sum(self, *args):
        return self._record(super().edge_softmax_sum(*args))

    def gatv2_attention(self, *args):
        return self._record(super().gatv2_attention(*args))

    def _record(self, fused):
        if fused is not None:
            out, alpha, order = fused
            RecordingGraph.records.append((self.dst, self.num_nodes, order(alpha)))
        return fused


class RecordingBackend(PyGBackend):
    def graph(self, src, dst, num_nodes):
        return RecordingGraph(src, dst, num_nodes)


@pytest.mark.parametrize("kind", list(KINDS))
def test_attention_sums_to_one_in_every_layer(graph, kind):
    RecordingGraph.records = []
    build(graph, kind, backend=RecordingBackend())()
    n_convs = sum(isinstance(m, (GATConv, GATv2Conv, ExphormerAttention)) for m in build(graph, kind).modules())
    assert len(RecordingGraph.records) == n_convs > 0
    for dst, n, alpha in RecordingGraph.records:
        sums = torch.zeros(n, alpha.shape[1]).index_add_(0, dst, alpha)
        has_in = torch.bincount(dst, minlength=n) > 0
        torch.testing.assert_close(sums[has_in], torch.ones_like(sums[has_in]))
        assert (sums[~has_in] == 0).all()


def test_graph_tensors_are_buffers_and_move_with_the_module(graph):
    enc = build(graph, "exphormer-mg")
    names = dict(enc.named_buffers())
    assert any(n.endswith("edges.src") for n in names) and any(n.endswith("edges.etype") for n in names)
    enc = enc.to(torch.float64)
    assert enc().dtype == torch.float64
    assert all(b.device == enc.embedding.weight.device for b in enc.buffers())


def test_encoder_output_deterministic_and_dropout_only_in_training(graph):
    a = build(graph, "gatv2", dropout=0.5)
    a.eval()
    torch.testing.assert_close(a(), a())
    a.train()
    assert not torch.allclose(a(), a())


def test_edge_weights_matter_only_when_used(graph):
    import numpy as np
    from kgbuild.graph import MultiGraph

    heavier = MultiGraph(graph.nodes, graph.edge_index, np.asarray(graph.edge_weight) * 3.0, graph.edge_layer,
                         graph.layers, graph.meta)
    for use in (True, False):
        z1 = build(graph, "gatv2", use_edge_weight=use)()
        z2 = build(heavier, "gatv2", use_edge_weight=use)()
        assert torch.allclose(z1, z2) is (not use)


def test_from_file_whole_or_restricted(graph, tmp_path):
    path = graph.save(tmp_path / "g.kg.npz")
    torch.manual_seed(0)
    whole = PerturbationEncoder.from_file(path, genes=["G1", "NEW"], kind="gatv2", dim=8, heads=2, backend="pyg")
    assert whole.vocab == graph.nodes.tolist() + ["NEW"]
    cut = PerturbationEncoder.from_file(path, genes=["G2", "G1", "NEW"], restrict=True, kind="gat-mlg", dim=8,
                                        heads=2, backend="pyg")
    assert cut.vocab == ["G2", "G1", "NEW"] and cut().shape == (3, 8)
    with pytest.raises(ValueError, match="restrict=True needs"):
        PerturbationEncoder.from_file(path, restrict=True)


def test_unknown_token_replaces_the_input_row_of_genes_not_known(graph):
    """With unknown_token, a gene not marked known enters through the shared row u: its own embedding row has
    no effect, two such genes without edges get the same output, and hide= masks known genes for one call."""
    enc = build(graph, "gat", unknown_token=True)
    with torch.no_grad():
        enc.unknown.normal_()
    enc.set_known(["G1", "G2"])
    enc.eval()
    z = enc()
    n1, n2 = enc.index(["NOVEL1", "NOVEL2"]).tolist()
    assert torch.allclose(z[n1], z[n2])  # no edges and the same input row
    g3 = enc.index(["G3"]).item()
    with torch.no_grad():
        enc.embedding.weight[g3].normal_()  # G3 is not known: its own row is unused
    assert torch.allclose(enc(), z)
    g1 = enc.index(["G1"]).item()
    hide = torch.zeros(enc.num_nodes, dtype=torch.bool)
    hide[g1] = True
    z_hidden = enc(hide=hide)
    assert not torch.allclose(z_hidden[g1], z[g1])
    with torch.no_grad():
        enc.embedding.weight[g1].normal_()
    assert torch.allclose(enc(hide=hide), z_hidden)  # hidden: G1's own row unused in this call
    z.sum().backward()
    assert enc.unknown.grad is not None and enc.unknown.grad.abs().sum() > 0


def test_unknown_token_off_by_default_and_checked(graph):
    enc = build(graph, "gat")
    assert enc.unknown is None
    with pytest.raises(ValueError, match="unknown_token"):
        enc.set_known(["G1"])
    with pytest.raises(ValueError, match="unknown_token"):
        enc(hide=torch.zeros(enc.num_nodes, dtype=torch.bool))
    # an encoder with the option and every gene known gives the same output as one without it
    on = build(graph, "gat", unknown_token=True)
    on.eval(), enc.eval()
    assert torch.allclose(on(), enc())


@pytest.mark.parametrize("conv", ["gatv2", "gat"])
def test_mlg_first_block_projects_the_copies_from_the_genes_and_the_layer_rows(graph, conv):
    # A(H0_i + P_l) = A(H0)_i + (A P)_l: the first block reads the projections of the L V copies computed from V
    # + L rows; output and gradients equal those of projecting the L V copies themselves (float64 rounding)
    enc = build(graph, "gat-mlg", conv=conv).double()
    body = enc.body
    with torch.no_grad():
        body.layer_emb.normal_()   # zeros at initialisation would hide a missing or misplaced offset
        for block in body.blocks:
            for name, p in block.conv.named_parameters():
                if "bias" in name:
                    p.normal_()
    h0 = torch.randn(enc.num_nodes, 16, dtype=torch.float64, requires_grad=True)
    L, V = body.num_copies, body.num_nodes
    copies = (h0.unsqueeze(0) + body.layer_emb.unsqueeze(1)).reshape(L * V, -1)
    first = body.blocks[0]
    ops = body.edges.ops(enc.backend)
    ea = conv_edge_features(body.edge_features, body.edges, enc.backend)
    direct = first(copies, ops, ea)
    factored = first(copies, ops, ea, body.project(first.conv, h0))
    torch.testing.assert_close(factored, direct, rtol=1e-10, atol=1e-10)
    weight = torch.randn_like(direct)
    params = [h0, body.layer_emb] + list(first.parameters())
    for got, want in zip(torch.autograd.grad((factored * weight).sum(), params, allow_unused=True),
                         torch.autograd.grad((direct * weight).sum(), params, allow_unused=True)):
        if want is None:
            assert got is None
        else:
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
