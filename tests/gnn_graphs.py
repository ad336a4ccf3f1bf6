"""Small synthetic multigraphs for the gnn tests (seeded, deterministic)."""

from __future__ import annotations

import numpy as np

from kgbuild.graph import MultiGraph

LAYERS = ("string", "go", "depmap")


def layer_graph(name: str, genes: list[str], n_edges: int, seed: int) -> MultiGraph:
    """One layer of random distinct directed edges (no self loops) among ``genes``."""
    rng = np.random.default_rng(seed)
    pairs: set[tuple[str, str]] = set()
    while len(pairs) < n_edges:
        a, b = rng.choice(len(genes), 2, replace=False)
        pairs.add((genes[a], genes[b]))
    pairs = sorted(pairs)
    return MultiGraph.from_edges(name, [p[0] for p in pairs], [p[1] for p in pairs],
                                 rng.uniform(0.1, 1.0, len(pairs)), nodes=genes)


def multigraph(n_genes: int = 24, n_edges: int = 40, layers=LAYERS, seed: int = 0, lonely: bool = True) -> MultiGraph:
    """``len(layers)`` random layers over ``G0..G{n-1}``; with ``lonely`` also gene ``LONELY`` with no edge."""
    genes = [f"G{i}" for i in range(n_genes)]
    graphs = [layer_graph(name, genes, n_edges, seed + 17 * k) for k, name in enumerate(layers)]
    if lonely:
        graphs[0] = MultiGraph.from_edges(
            graphs[0].layer_names[0],
            graphs[0].nodes[graphs[0].edge_index[0]], graphs[0].nodes[graphs[0].edge_index[1]],
            graphs[0].edge_weight, nodes=genes + ["LONELY"])
    return MultiGraph.merge(graphs)


def rewire_layer(graph: MultiGraph, layer: str, seed: int) -> MultiGraph:
    """``graph`` with the edges of ``layer`` replaced by other random edges (same count, same nodes)."""
    genes = [g for g in graph.nodes.tolist() if g != "LONELY"]
    others = [graph.layer(n) for n in graph.layer_names if n != layer]
    new = layer_graph(layer, genes, int((graph.edge_layer == graph.layer_names.index(layer)).sum()), seed)
    merged = MultiGraph.merge(others + [new])
    # keep the original layer order and vocabulary
    order = [merged.layer_names.index(n) for n in graph.layer_names]
    remap = np.empty(len(order), dtype=np.int64)
    remap[order] = np.arange(len(order))
    lookup = {g: i for i, g in enumerate(graph.nodes.tolist())}
    to_old = np.asarray([lookup[g] for g in merged.nodes.tolist()])
    return MultiGraph(graph.nodes, to_old[merged.edge_index], merged.edge_weight,
                      remap[merged.edge_layer.astype(np.int64)].astype(np.int16), graph.layers, graph.meta)
