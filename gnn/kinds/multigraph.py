"""Provenance-aware multigraph encoders: ``gat-hybrid``, ``gat-mlg``, ``hybrid-bmp`` (``exphormer-mg`` is
:class:`~gnn.kinds.single.ExphormerBody` with ``by_layer=True``).

``L`` = number of graph layers, ``V`` = vocabulary size, ``d`` = width. Each body maps ``(V, d) -> (V, d)``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnn.backends.base import Backend
from gnn.edges import EdgeSet, self_loops
from gnn.kinds.spec import EncoderSpec, concat_edges, typed
from gnn.layers.blocks import ConvBlock, EdgeFeatures, LayerAttention, conv_edge_features, make_conv
from gnn.layers.linear import Linear


class HybridBody(nn.Module):
    r"""GAT-Hybrid: one GNN per graph layer, then node-level attention across layers.

    For each layer ``l``: ``H_l = \mathrm{GNN}_l(H^0)`` — ``layers`` × ConvBlock(``conv``) over layer ``l``'s
    edges plus self loops, own weights. Then ``Z_i = \sum_l \beta_{i,l} H_{l,i}`` with
    ``\beta_{i,\cdot} = \mathrm{softmax}_l(q^\top \tanh(W H_{l,i} + b))``
    (:class:`~gnn.layers.blocks.LayerAttention`); the weights ``(V, L)`` are in ``combine.last_weights``.
    """

    def __init__(self, spec: EncoderSpec, conv: str = "gatv2", add_self_loops: bool = True):
        super().__init__()
        src, dst, w, layer = spec.graph_edges()
        loops = typed(*self_loops(np.arange(spec.num_nodes)), 1.0, 0)
        self.edges = nn.ModuleList()
        self.stacks = nn.ModuleList()
        self.edge_features = EdgeFeatures(spec.use_edge_weight, num_types=1)
        for lid in range(spec.num_layers_graph):
            m = layer == lid
            parts = [typed(src[m], dst[m], w[m], 0)] + ([loops] if add_self_loops else [])
            self.edges.append(EdgeSet(*concat_edges(*parts), num_nodes=spec.num_nodes))
            self.stacks.append(nn.ModuleList(
                ConvBlock(make_conv(conv, spec.dim, spec.heads, self.edge_features.dim, spec.dropout), spec.dim, spec.dropout)
                for _ in range(spec.layers)
            ))
        self.combine = LayerAttention(spec.dim)

    def forward(self, h0: Tensor, backend: Backend) -> Tensor:
        outs = []
        for edges, stack in zip(self.edges, self.stacks):
            ops, ea, h = edges.ops(backend), conv_edge_features(self.edge_features, edges, backend), h0
            for block in stack:
                h = block(h, ops, ea)
            outs.append(h)
        return self.combine(torch.stack(outs, dim=0))


class MLGBody(nn.Module):
    r"""GAT-MLG: a supra-graph of ``L`` copies of every node.

    Copy ``(l, i)`` is supra-node ``l V + i`` with input ``H^0_i + P_l`` (``P`` a learnable layer embedding).
    Edges: intra-layer edges of layer ``l`` between copies in ``l`` (type ``l``); inter-layer coupling edges
    ``(l, i) \to (m, i)`` for every graph node ``i`` and ``l \ne m`` (type ``L``, weight ``coupling_weight``);
    a self loop per copy (type ``L+1``). ``layers`` × ConvBlock(GATv2) with edge features
    ``[w_e, T[type_e]]``. Output: ``Z_i`` = node-level attention (:class:`LayerAttention`) over the ``L``
    copies of ``i``. Without coupling edges and the cross-copy combination the layers ``l > 0`` could not
    influence one another; both are here. Genes absent from the graph get no coupling edges.

    The first block's projections of the ``L V`` copies are affine in their input, so they are computed as
    ``A(H^0_i + P_l) = A(H^0)_i + (A P)_l`` (``A`` the convolution's projections, :meth:`project`; ``A P``
    without bias): products over ``V`` rows and ``L`` rows instead of ``L V`` rows, the same function up to
    float rounding.
    """

    def __init__(self, spec: EncoderSpec, conv: str = "gatv2", coupling_weight: float = 1.0, type_dim: int = 16):
        super().__init__()
        L, V = spec.num_layers_graph, spec.num_nodes
        src, dst, w, layer = spec.graph_edges()
        parts = [typed(src + layer * V, dst + layer * V, w, layer)]
        nodes = spec.connected_nodes()
        for l in range(L):
            for m in range(L):
                if l != m:
                    parts.append(typed(nodes + l * V, nodes + m * V, coupling_weight, L))
        parts.append(typed(*self_loops(np.arange(L * V)), 1.0, L + 1))
        self.num_copies, self.num_nodes = L, V
        self.edges = EdgeSet(*concat_edges(*parts), num_nodes=L * V)
        self.layer_emb = nn.Parameter(torch.zeros(L, spec.dim))
        self.edge_features = EdgeFeatures(spec.use_edge_weight, num_types=L + 2, type_dim=type_dim)
        self.blocks = nn.ModuleList(
            ConvBlock(make_conv(conv, spec.dim, spec.heads, self.edge_features.dim, spec.dropout), spec.dim, spec.dropout)
            for _ in range(spec.layers)
        )
        self.combine = LayerAttention(spec.dim)

    def forward(self, h0: Tensor, backend: Backend) -> Tensor:
        L, V = self.num_copies, self.num_nodes
        h = (h0.unsqueeze(0) + self.layer_emb.unsqueeze(1)).reshape(L * V, -1)
        ops, ea = self.edges.ops(backend), conv_edge_features(self.edge_features, self.edges, backend)
        for k, block in enumerate(self.blocks):
            h = block(h, ops, ea, self.project(block.conv, h0) if k == 0 else None)
        return self.combine(h.view(L, V, -1))

    def project(self, conv: nn.Module, h0: Tensor) -> tuple[Tensor, ...]:
        """``conv.project`` of the copies ``H^0_i + P_l`` (rows ``l V + i``), from ``V`` + ``L`` rows."""
        L, V = self.num_copies, self.num_nodes
        return tuple((a.unsqueeze(0) + o.unsqueeze(1)).reshape(L * V, -1)
                     for a, o in zip(conv.project(h0), conv.project(self.layer_emb, bias=False)))


class BMPBlock(nn.Module):
    r"""Bidirectional message passing over the union adjacency ``A`` (all layers):

    .. math::
        m^{in} = \mathrm{conv}_{in}(h; A),\quad m^{out} = \mathrm{conv}_{out}(h; A^\top),\qquad
        h' = \mathrm{LN}\big(h + \mathrm{Dropout}(\mathrm{ELU}(W [m^{in} \| m^{out}] + b))\big),

    i.e. node ``i`` hears its in-neighbours (``j \to i``) and, with separate weights, its out-neighbours
    (``i \to j``). ``(V, d) -> (V, d)``.
    """

    def __init__(self, conv: str, dim: int, heads: int, edge_dim: int, dropout: float):
        super().__init__()
        self.conv_in = make_conv(conv, dim, heads, edge_dim, dropout)
        self.conv_out = make_conv(conv, dim, heads, edge_dim, dropout)
        self.mix = Linear(2 * dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = dropout

    def forward(self, h: Tensor, ops_in, ea_in, ops_out, ea_out) -> Tensor:
        m = torch.cat([self.conv_in(h, ops_in, ea_in), self.conv_out(h, ops_out, ea_out)], dim=-1)
        return self.norm(h + F.dropout(F.elu(self.mix(m)), self.dropout, self.training))


class BMPBody(nn.Module):
    r"""Hybrid-BMP: ``layers`` × :class:`BMPBlock` over the union of all layers, messages along incoming and
    outgoing edges; each edge's layer of origin is an edge-type feature in the attention (``[w_e, T[l_e]]``),
    self loops (type ``L``) in both directions' edge sets.
    """

    def __init__(self, spec: EncoderSpec, conv: str = "gatv2", type_dim: int = 16):
        super().__init__()
        L = spec.num_layers_graph
        src, dst, w, layer = spec.graph_edges()
        loops = typed(*self_loops(np.arange(spec.num_nodes)), 1.0, L)
        self.edges_in = EdgeSet(*concat_edges(typed(src, dst, w, layer), loops), num_nodes=spec.num_nodes)
        self.edges_out = EdgeSet(*concat_edges(typed(dst, src, w, layer), loops), num_nodes=spec.num_nodes)
        self.edge_features = EdgeFeatures(spec.use_edge_weight, num_types=L + 1, type_dim=type_dim)
        self.blocks = nn.ModuleList(
            BMPBlock(conv, spec.dim, spec.heads, self.edge_features.dim, spec.dropout) for _ in range(spec.layers)
        )

    def forward(self, h: Tensor, backend: Backend) -> Tensor:
        ops_in, ops_out = self.edges_in.ops(backend), self.edges_out.ops(backend)
        ea_in = conv_edge_features(self.edge_features, self.edges_in, backend)
        ea_out = conv_edge_features(self.edge_features, self.edges_out, backend)
        for block in self.blocks:
            h = block(h, ops_in, ea_in, ops_out, ea_out)
        return h
