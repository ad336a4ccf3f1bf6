"""Encoders over the union of the graph's layers, blind to provenance: ``gat``, ``gatv2``, ``exphormer``.

Each body maps the input embeddings ``H0 (V, d)`` to ``Z (V, d)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from gnn.backends.base import Backend
from gnn.edges import EdgeSet, expander_edges, self_loops, virtual_node_edges
from gnn.kinds.spec import EncoderSpec, concat_edges, typed
from gnn.layers.blocks import ConvBlock, EdgeFeatures, ExphormerBlock, conv_edge_features, make_conv


class GATBody(nn.Module):
    r"""``layers`` × :class:`~gnn.layers.blocks.ConvBlock` of GAT or GATv2 over the union of all graph layers
    plus one self loop per node (weight 1). Edge feature: the weight (if ``use_edge_weight``).

    ``H^{k+1} = \mathrm{LN}(H^k + \mathrm{ELU}(\mathrm{conv}_k(H^k)))``, ``Z = H^{layers}``; ``(V, d) -> (V, d)``.
    """

    def __init__(self, spec: EncoderSpec, conv: str = "gatv2", add_self_loops: bool = True):
        super().__init__()
        src, dst, w, _ = spec.graph_edges()
        parts = [typed(src, dst, w, 0)]
        if add_self_loops:
            parts.append(typed(*self_loops(np.arange(spec.num_nodes)), 1.0, 0))
        s, d, w, t = concat_edges(*parts)
        self.edges = EdgeSet(s, d, w, t, spec.num_nodes)
        self.edge_features = EdgeFeatures(spec.use_edge_weight, num_types=1)
        self.blocks = nn.ModuleList(
            ConvBlock(make_conv(conv, spec.dim, spec.heads, self.edge_features.dim, spec.dropout), spec.dim, spec.dropout)
            for _ in range(spec.layers)
        )

    def forward(self, h: Tensor, backend: Backend) -> Tensor:
        ops = self.edges.ops(backend)
        ea = conv_edge_features(self.edge_features, self.edges, backend)
        for block in self.blocks:
            h = block(h, ops, ea)
        return h


class ExphormerBody(nn.Module):
    r"""Exphormer: ``layers`` × :class:`~gnn.layers.blocks.ExphormerBlock` whose attention runs over
    graph edges ∪ expander edges ∪ virtual-node edges ∪ self loops, each with an edge-type embedding.

    Edge types: with ``by_layer=False`` (``exphormer``) graph edges are type 0; with ``by_layer=True``
    (``exphormer-mg``) a graph edge's type is its layer of origin ``0..L-1``. Then expander, virtual and
    self-loop edges get the next three ids. The expander (``expander="regular"``: a random
    ``expander_degree``-regular graph; ``"cycles"``: ``expander_degree // 2`` Hamiltonian cycles; seeded by
    ``seed``) and the ``num_virtual`` virtual nodes connect only graph nodes: genes absent from the graph
    receive no message (only their self loop). Expander/virtual/self edges have weight 1.
    ``(V, d) -> (V, d)``; virtual nodes have their own learnable input rows and are dropped from the output.
    """

    def __init__(self, spec: EncoderSpec, by_layer: bool = False, expander: str = "regular", expander_degree: int = 4,
                 num_virtual: int = 0, seed: int = 0, type_dim: int = 16):
        super().__init__()
        n_graph_types = spec.num_layers_graph if by_layer else 1
        t_exp, t_virt, t_self = n_graph_types, n_graph_types + 1, n_graph_types + 2
        src, dst, w, layer = spec.graph_edges()
        graph_nodes = spec.connected_nodes()
        parts = [typed(src, dst, w, layer if by_layer else 0)]
        if expander_degree > 0:
            parts.append(typed(*expander_edges(graph_nodes, expander_degree, seed, expander), 1.0, t_exp))
        total = spec.num_nodes + num_virtual
        if num_virtual > 0:
            parts.append(typed(*virtual_node_edges(graph_nodes, spec.num_nodes, num_virtual), 1.0, t_virt))
        parts.append(typed(*self_loops(np.arange(total)), 1.0, t_self))
        self.num_nodes = spec.num_nodes
        self.edges = EdgeSet(*concat_edges(*parts), num_nodes=total)
        self.edge_features = EdgeFeatures(spec.use_edge_weight, num_types=n_graph_types + 3, type_dim=type_dim)
        self.virtual = nn.Parameter(torch.randn(num_virtual, spec.dim)) if num_virtual > 0 else None
        self.blocks = nn.ModuleList(
            ExphormerBlock(spec.dim, spec.heads, self.edge_features.dim, spec.dropout) for _ in range(spec.layers)
        )

    def forward(self, h: Tensor, backend: Backend) -> Tensor:
        if self.virtual is not None:
            h = torch.cat([h, self.virtual], dim=0)
        ops = self.edges.ops(backend)
        ea = self.edge_features.typed(self.edges, backend)  # unassembled: the attention works per edge type
        for block in self.blocks:
            h = block(h, ops, ea)
        return h[: self.num_nodes]
