"""The part of a graph an encoder reads for a set of perturbed genes, and nothing more.

After L message-passing layers a node's output depends only on nodes within L incoming hops, and only
through edges whose target lies within L - 1 hops. Two cuts keep exactly what the rows of the perturbed
genes need (for the message-passing kinds ``gat``/``gatv2``/``gat-hybrid``/``gat-mlg``/``hybrid-bmp``;
the Exphormer kinds add global expander edges and are not exact), at a fraction of the cost on large graphs:

* :func:`receptive_field` (``graph_hops = k``): every node within ``k`` hops and every edge into a node
  within ``k - 1`` hops.
* :func:`encoder_field` (``graph_hops = "auto"``, the default): what an L-layer encoder with effect inputs
  reads, edge by edge -- the message-passing edges (into nodes within L - 1 hops), every edge into a
  perturbed gene (the prior and the neighbour-response term read them), and of the edges into nodes within
  L hops only those from genes with an observed training effect (the effect features of a node are means
  over its in-neighbours' codes; a neighbour without a code adds nothing). On the merged real graph and
  Papalexi's 25 perturbed genes (one layer, split seed 0) that is 882 nodes and 1,817 edges instead of the
  8,332 nodes and 46,118 edges of the 2-hop receptive field.

Only the perturbed genes' rows are exact; the other rows of the cut graph miss edges. Genes outside
``genes`` are predicted on the whole graph (:meth:`txpert_head.training.prediction.ModelPredictions.cover_genes`).
"""

from __future__ import annotations

import logging
from typing import Iterable

import numpy as np

from kgbuild.graph import MultiGraph

log = logging.getLogger(__name__)


def hop_distances(graph: MultiGraph, genes: Iterable[str], hops: int) -> np.ndarray:
    """(N,) int64: each node's number of incoming hops to the nearest of ``genes`` (0 for the genes
    themselves), up to ``hops``; -1 beyond. Genes absent from the graph are ignored."""
    ids = graph.node_ids(list(genes))
    dist = np.full(graph.num_nodes, -1, dtype=np.int64)
    frontier = np.unique(ids[ids >= 0])
    dist[frontier] = 0
    src, dst = graph.edge_index
    for h in range(1, hops + 1):
        if not len(frontier):
            break
        new = np.unique(src[np.isin(dst, frontier)])
        new = new[dist[new] < 0]
        dist[new] = h
        frontier = new
    return dist


def _cut(graph: MultiGraph, node_mask: np.ndarray, edge_mask: np.ndarray, info: dict) -> MultiGraph:
    """The subgraph of the edges in ``edge_mask``, with the nodes in ``node_mask`` and those the edges touch
    (graph order)."""
    node_mask = node_mask.copy()
    node_mask[graph.edge_index[:, edge_mask].ravel()] = True
    keep_nodes = np.flatnonzero(node_mask)
    new_id = np.full(graph.num_nodes, -1, dtype=np.int64)
    new_id[keep_nodes] = np.arange(len(keep_nodes))
    meta = dict(graph.meta)
    meta["receptive_field"] = {**info, "nodes": int(len(keep_nodes)), "edges": int(edge_mask.sum())}
    out = MultiGraph(nodes=graph.nodes[keep_nodes], edge_index=new_id[graph.edge_index[:, edge_mask]],
                     edge_weight=graph.edge_weight[edge_mask], edge_layer=graph.edge_layer[edge_mask],
                     layers=graph.layers, meta=meta)
    log.info("%s: %d of %d nodes, %d of %d edges", ", ".join(f"{k} {v}" for k, v in info.items()), out.num_nodes,
             graph.num_nodes, out.num_edges, graph.num_edges)
    return out


def receptive_field(graph: MultiGraph, genes: Iterable[str], hops: int) -> MultiGraph:
    """Nodes within ``hops`` incoming hops of ``genes`` (in graph order) and the edges into nodes within
    ``hops - 1`` hops. Genes absent from the graph are ignored (the encoder gives them isolated rows)."""
    dist = hop_distances(graph, genes, hops)
    src, dst = graph.edge_index
    mask = (dist[dst] >= 0) & (dist[dst] <= hops - 1) & (dist[src] >= 0)
    # every node within `hops` hops, even one whose only edges lead to nodes at the rim
    return _cut(graph, dist >= 0, mask, {"hops": hops})


def encoder_field(graph: MultiGraph, genes: Iterable[str], layers: int, coded: Iterable[str] = ()) -> MultiGraph:
    """The edges an encoder of ``layers`` message-passing layers reads for the rows of ``genes`` (module
    docstring): into nodes within ``layers - 1`` hops; into ``genes``; and, from genes of ``coded`` (those with
    an observed effect code), into nodes within ``layers`` hops. Nodes: those edges' ends and ``genes``."""
    dist = hop_distances(graph, genes, layers)
    src, dst = graph.edge_index
    is_coded = np.zeros(graph.num_nodes, dtype=bool)
    ids = graph.node_ids(list(coded))
    is_coded[ids[ids >= 0]] = True
    reached = dist[dst] >= 0
    mask = reached & ((dist[dst] <= max(layers - 1, 0)) | is_coded[src])
    return _cut(graph, dist == 0, mask, {"encoder layers": layers})  # the genes stay, edges or not
