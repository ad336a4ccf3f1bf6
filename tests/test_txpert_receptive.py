"""Restricting the graph to the perturbed genes' receptive field leaves their embeddings unchanged."""

from __future__ import annotations

import torch

from gnn import PerturbationEncoder
from txpert_head.model.receptive import receptive_field
from txpert_head.simulate.fixtures import synthetic_graph


def test_receptive_field_gives_same_embeddings():
    graph = synthetic_graph(200, degree=4, seed=1)
    genes = ["G3", "G77", "G150"]
    small = receptive_field(graph, genes, hops=2)
    assert small.num_nodes < graph.num_nodes and small.num_edges < graph.num_edges
    torch.manual_seed(0)
    full = PerturbationEncoder(graph, genes, kind="gat", dim=8, layers=2, heads=2, backend="pyg")
    part = PerturbationEncoder(small, genes, kind="gat", dim=8, layers=2, heads=2, backend="pyg")
    state = part.state_dict()  # keeps the small graph's edge buffers; parameters come from the full encoder
    for k, v in full.state_dict().items():
        if k == "embedding.weight":
            state[k] = v[full.index(small.nodes.tolist())]
        elif not k.startswith("body.edges."):
            state[k] = v
    part.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(part()[part.index(genes)], full()[full.index(genes)])


def test_encoder_field_keeps_the_edges_an_encoder_reads():
    """Chain E -> D -> C -> B -> A, X -> B, Y -> C (only Y has an effect code): a one-layer encoder for A reads
    the edges into A (messages; the prior and the neighbour term) and, into A's in-neighbour B, only those
    from coded genes (B's effect features); two layers also read every edge into B, and the coded ones into C."""
    from kgbuild.graph import MultiGraph
    from txpert_head.model.receptive import encoder_field, hop_distances

    graph = MultiGraph.from_edges("l", ["E", "D", "C", "B", "X", "Y"], ["D", "C", "B", "A", "B", "C"],
                                  [1.0] * 6, {"source": "t"}, nodes=["A", "B", "C", "D", "E", "X", "Y", "Z"])
    assert dict(zip(graph.nodes, hop_distances(graph, ["A"], 2))) == {
        "A": 0, "B": 1, "C": 2, "D": -1, "E": -1, "X": 2, "Y": -1, "Z": -1}

    def edges(g):
        return sorted((g.nodes[s], g.nodes[d]) for s, d in g.edge_index.T)

    one = encoder_field(graph, ["A", "Z"], layers=1, coded=["Y", "X"])
    assert edges(one) == [("B", "A"), ("X", "B")]
    assert one.nodes.tolist() == ["A", "B", "X", "Z"]  # the genes themselves stay, edges or not
    two = encoder_field(graph, ["A"], layers=2, coded=["Y"])
    assert edges(two) == [("B", "A"), ("C", "B"), ("X", "B"), ("Y", "C")]
    assert edges(encoder_field(graph, ["A"], layers=0, coded=["B"])) == [("B", "A")]
    assert two.meta["receptive_field"] == {"encoder layers": 2, "nodes": 5, "edges": 4}
    full = receptive_field(graph, ["A"], hops=3)  # the plain cut keeps every edge into nodes within 2 hops
    assert edges(full) == [("B", "A"), ("C", "B"), ("D", "C"), ("X", "B"), ("Y", "C")]
