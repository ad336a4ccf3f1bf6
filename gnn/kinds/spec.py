"""What every encoder body is built from: the graph, the vocabulary size and the shared hyper-parameters."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kgbuild.graph import MultiGraph


@dataclass(frozen=True)
class EncoderSpec:
    """``graph`` has ``num_graph_nodes`` nodes, which are rows ``0..num_graph_nodes-1`` of the vocabulary;
    rows ``num_graph_nodes..num_nodes-1`` are genes absent from the graph (isolated)."""

    graph: MultiGraph
    num_nodes: int
    dim: int
    layers: int
    heads: int
    dropout: float
    use_edge_weight: bool

    @property
    def num_graph_nodes(self) -> int:
        return self.graph.num_nodes

    @property
    def num_layers_graph(self) -> int:
        """Number of edge layers (provenance types) in the graph."""
        return len(self.graph.layers)

    def graph_edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(src, dst, weight, layer)`` of every graph edge (union of layers, multi-edges kept)."""
        g = self.graph
        return (g.edge_index[0].astype(np.int64), g.edge_index[1].astype(np.int64),
                g.edge_weight.astype(np.float32), g.edge_layer.astype(np.int64))

    def connected_nodes(self) -> np.ndarray:
        """Graph node ids (all graph nodes: absent genes are not part of the graph)."""
        return np.arange(self.num_graph_nodes, dtype=np.int64)


def concat_edges(*parts: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]):
    """Concatenate ``(src, dst, weight, etype)`` tuples."""
    return tuple(np.concatenate([np.asarray(p[k]) for p in parts]) for k in range(4))


def typed(src: np.ndarray, dst: np.ndarray, weight: float | np.ndarray, etype: int | np.ndarray):
    """A ``(src, dst, weight, etype)`` tuple with scalars broadcast to the edge count."""
    n = len(src)
    w = np.broadcast_to(np.asarray(weight, dtype=np.float32), (n,)).copy()
    t = np.broadcast_to(np.asarray(etype, dtype=np.int64), (n,)).copy()
    return np.asarray(src, np.int64), np.asarray(dst, np.int64), w, t
