"""Residual blocks, edge features and the cross-layer combiner the encoders are assembled from.

Shapes: ``N`` nodes, ``d`` hidden width, ``E`` edges, ``L`` graph layers (edge types of provenance).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnn.backends.base import Backend, GraphOps
from gnn.edges import EdgeSet, TypedEdgeFeatures
from gnn.layers import fused_blocks
from gnn.layers.attention_convs import ExphormerAttention, GATConv, GATv2Conv
from gnn.layers.linear import Linear


class EdgeFeatures(nn.Module):
    r"""Per-edge features for attention: ``f_e = [w_e \,\|\, T[t_e]]`` — the edge weight (when used) and a
    learnable embedding ``T \in R^{K \times d_t}`` of the edge type (when there is more than one type).

    ``forward(edges) -> (E, dim)`` or ``None`` when neither part is used (``dim == 0``).
    """

    def __init__(self, use_weight: bool, num_types: int, type_dim: int = 16):
        super().__init__()
        self.use_weight = use_weight
        self.type_emb = nn.Embedding(num_types, type_dim) if num_types > 1 else None
        self.dim = int(use_weight) + (type_dim if self.type_emb is not None else 0)

    def forward(self, edges: EdgeSet) -> Tensor | None:
        parts = []
        if self.use_weight:
            parts.append(edges.weight.unsqueeze(-1))
        if self.type_emb is not None:
            parts.append(self.type_emb(edges.etype))
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def typed(self, edges: EdgeSet, backend: Backend, handles: bool = True) -> TypedEdgeFeatures:
        """The same features, unassembled (:class:`gnn.edges.TypedEdgeFeatures`), with per-type handles (none
        with ``handles=False``: for layers that never work per type)."""
        if self.dim == 0:
            raise ValueError("typed edge features need the weight or the type as a feature")
        if not handles:
            by_type, order = [], None
        elif self.type_emb is not None:
            by_type, order = edges.ops_by_type(backend)
        else:
            by_type, order = [(0, edges.ops(backend))], None
        return TypedEdgeFeatures(edges.weight if self.use_weight else None,
                                 self.type_emb.weight if self.type_emb is not None else None,
                                 edges.etype, by_type, order)


def conv_edge_features(features: EdgeFeatures, edges: EdgeSet, backend: Backend) -> TypedEdgeFeatures | None:
    """What a GAT / GATv2 convolution takes as ``edge_attr``: the features unassembled (a fused kernel works on
    them as they are; the composed layers assemble them), or None when no edge feature is used."""
    return features.typed(edges, backend, handles=False) if features.dim else None


def make_conv(kind: str, dim: int, heads: int, edge_dim: int | None, dropout: float) -> nn.Module:
    """A ``gat`` or ``gatv2`` convolution ``(N, dim) -> (N, dim)`` with ``heads`` heads of ``dim // heads``."""
    if dim % heads:
        raise ValueError(f"dim {dim} must be divisible by heads {heads}")
    cls = {"gat": GATConv, "gatv2": GATv2Conv}[kind]
    return cls(dim, dim // heads, heads=heads, edge_dim=edge_dim or None, concat=True, dropout=dropout)


class ConvBlock(nn.Module):
    r"""``h' = \mathrm{LayerNorm}\big(h + \mathrm{Dropout}(\mathrm{ELU}(\mathrm{conv}(h)))\big)``: ``(N, d) -> (N, d)``.

    The residual is the self path: a node with no incoming edge keeps ``LayerNorm(h + ELU(b))``.
    ``projected``: ``conv.project(h)`` when the caller has it already (``conv.attend`` then takes it).
    """

    def __init__(self, conv: nn.Module, dim: int, dropout: float):
        super().__init__()
        self.conv = conv
        self.norm = nn.LayerNorm(dim)
        self.dropout = dropout

    def forward(self, h: Tensor, ops: GraphOps, edge_attr: Tensor | None,
                projected: tuple[Tensor, ...] | None = None) -> Tensor:
        c = self.conv(h, ops, edge_attr) if projected is None else self.conv.attend(projected, ops, edge_attr)
        if not (self.training and self.dropout > 0):   # one fused pass when no dropout sits in between
            out = fused_blocks.residual_elu_norm(h, c, self.norm)
            if out is not None:
                return out
        return self.norm(h + F.dropout(F.elu(c), self.dropout, self.training))


class ExphormerBlock(nn.Module):
    r"""One Exphormer layer (post-norm transformer block with sparse attention):

    .. math::
        h \leftarrow \mathrm{LN}\big(h + \mathrm{Dropout}(\mathrm{Attn}(h))\big),\qquad
        h \leftarrow \mathrm{LN}\big(h + \mathrm{Dropout}(W_2\,\mathrm{ReLU}(W_1 h))\big),

    ``Attn`` = :class:`~gnn.layers.attention_convs.ExphormerAttention`; ``W_1 \in R^{2d \times d}``. ``(N, d) -> (N, d)``.
    """

    def __init__(self, dim: int, heads: int, edge_dim: int, dropout: float):
        super().__init__()
        self.attn = ExphormerAttention(dim, dim, heads, edge_dim, dropout=dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(Linear(dim, 2 * dim), nn.ReLU(), Linear(2 * dim, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = dropout

    def forward(self, h: Tensor, ops: GraphOps, edge_attr: Tensor | TypedEdgeFeatures) -> Tensor:
        h = self.norm1(h + F.dropout(self.attn(h, ops, edge_attr), self.dropout, self.training))
        return self.norm2(h + F.dropout(self.ffn(h), self.dropout, self.training))


class LayerAttention(nn.Module):
    r"""Node-level attention across ``L`` views of every node (HAN's semantic attention, kept per node):

    .. math::
        s_{i,l} = q^\top \tanh(W h_{i,l} + b),\qquad \beta_{i,l} = \mathrm{softmax}_l(s_{i,l}),\qquad
        z_i = \sum_l \beta_{i,l}\, h_{i,l}.

    ``forward(h (L, N, d)) -> (N, d)``; the weights ``(N, L)`` are kept in ``last_weights``.
    """

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or dim
        self.proj = Linear(dim, hidden)
        self.query = Linear(hidden, 1, bias=False)
        self.last_weights: Tensor | None = None

    def forward(self, h: Tensor) -> Tensor:
        p = self.proj(h)                                        # (L, N, hidden)
        fused = fused_blocks.layer_attention(p, h, self.query.weight[0])
        if fused is not None:                                   # one fused pass (gnn.layers.fused_blocks)
            z, beta = fused
            self.last_weights = beta.detach()
            return z
        s = self.query(torch.tanh(p)).squeeze(-1)               # (L, N)
        beta = torch.softmax(s, dim=0)                          # (L, N)
        self.last_weights = beta.detach().t()
        return (beta.unsqueeze(-1) * h).sum(0)
