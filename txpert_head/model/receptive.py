"""The receptive field of the perturbed genes: the only part of a graph an L-layer GNN reads for them.

After L message-passing layers a node's output depends only on nodes within L incoming hops, and only
through edges whose target lies within L - 1 hops. Keeping exactly those nodes and edges gives the same
``z_p`` for every perturbed gene p (for the message-passing kinds ``gat``/``gatv2``/``gat-hybrid``/
``gat-mlg``/``hybrid-bmp`` with ``hops >= layers``; the Exphormer kinds add global expander edges and
are not exact), at a fraction of the cost on large graphs. Genes outside the field can no longer be
predicted from the graph.
"""

from __future__ import annotations

import logging
from typing import Iterable

import numpy as np

from kgbuild.graph import MultiGraph

log = logging.getLogger(__name__)


def receptive_field(graph: MultiGraph, genes: Iterable[str], hops: int) -> MultiGraph:
    """Nodes within ``hops`` incoming hops of ``genes`` (in graph order) and the edges into nodes within
    ``hops - 1`` hops. Genes absent from the graph are ignored (the encoder gives them isolated rows)."""
    ids = graph.node_ids(list(genes))
    dist = np.full(graph.num_nodes, -1, dtype=np.int64)
    frontier = np.unique(ids[ids >= 0])
    dist[frontier] = 0
    src, dst = graph.edge_index
    for h in range(1, hops + 1):
        into = np.isin(dst, frontier)
        new = np.unique(src[into])
        new = new[dist[new] < 0]
        dist[new] = h
        frontier = new
    keep_nodes = np.flatnonzero(dist >= 0)
    new_id = np.full(graph.num_nodes, -1, dtype=np.int64)
    new_id[keep_nodes] = np.arange(len(keep_nodes))
    mask = (dist[dst] >= 0) & (dist[dst] <= hops - 1) & (dist[src] >= 0)
    meta = dict(graph.meta)
    meta["receptive_field"] = {"hops": hops, "nodes": int(len(keep_nodes)), "edges": int(mask.sum())}
    out = MultiGraph(nodes=graph.nodes[keep_nodes], edge_index=new_id[graph.edge_index[:, mask]],
                     edge_weight=graph.edge_weight[mask], edge_layer=graph.edge_layer[mask], layers=graph.layers,
                     meta=meta)
    log.info("receptive field (%d hops): %d of %d nodes, %d of %d edges", hops, out.num_nodes, graph.num_nodes,
             out.num_edges, graph.num_edges)
    return out
