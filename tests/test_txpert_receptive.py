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
