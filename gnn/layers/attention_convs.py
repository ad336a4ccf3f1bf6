"""Graph attention convolutions written once on the backend primitives (:mod:`gnn.backends.base`).

Notation: ``N`` nodes, ``E`` edges ``j -> i`` (source ``j = src_e``, target ``i = dst_e``), ``H`` heads of
``C`` channels, ``F_e`` edge-feature width, ``N(i)`` the incoming edges of ``i`` (self loops are whatever the
edge set holds: these layers add none). ``x`` is ``(N, F_in)``; the output is ``(N, H*C)`` with
``concat=True``, else ``(N, C)`` (mean over heads). Attention ``alpha`` is ``(E, H)`` and sums to 1 over the
incoming edges of every node that has any.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnn.backends.base import GraphOps
from gnn.edges import TypedEdgeFeatures
from gnn.layers.linear import Linear, linear


def _glorot(t: Tensor) -> None:
    bound = math.sqrt(6.0 / (t.size(-2) + t.size(-1)))
    with torch.no_grad():
        t.uniform_(-bound, bound)


def factored_edge_projection(weight: Tensor, bias: Tensor | None, f: TypedEdgeFeatures) -> tuple[Tensor | None, Tensor]:
    """``W f_e + b = w_e u + B_{t_e}`` for a linear map ``W (M, F_e)``, ``b (M,)`` (or None) of factored edge
    features ``f``: ``u (M,)`` (None when the weight is not a feature) and ``B (K, M)`` (one row, ``b`` or
    zeros, when the type is not a feature)."""
    width = int(f.weight is not None) + (f.table.shape[1] if f.table is not None else 0)
    if width != weight.shape[1]:
        raise ValueError(f"edge features have {width} columns but the layer was built with edge_dim={weight.shape[1]}")
    off = int(f.weight is not None)
    if f.table is not None:
        per_type = f.table @ weight[:, off:].t() + (bias if bias is not None else 0)
    else:
        per_type = bias.unsqueeze(0) if bias is not None else weight.new_zeros((1, weight.shape[0]))
    return (weight[:, 0] if off else None), per_type


class _Attends(nn.Module):
    """What every attention layer here shares: the softmax-and-sum step and ``last_attention``, the attention
    ``alpha (E, H)`` of the last forward in the edge set's order (detached). A backend's fused kernel returns
    ``alpha`` in an order of its own; it is put into edge order only when someone reads it."""

    dropout: float = 0.0
    _last_attention: Tensor | None = None
    _pending_attention: tuple | None = None   # (alpha in a backend's order, its map to edge order)

    @property
    def last_attention(self) -> Tensor | None:
        if self._pending_attention is not None:
            alpha, order = self._pending_attention
            self._last_attention, self._pending_attention = order(alpha), None
        return self._last_attention

    @last_attention.setter
    def last_attention(self, value: Tensor | None) -> None:
        self._last_attention, self._pending_attention = value, None

    def _take_fused(self, fused: tuple[Tensor, Tensor, object] | None) -> Tensor | None:
        """The output of a backend's fused kernel, ``(out, alpha, order)`` or None, keeping its attention."""
        if fused is None:
            return None
        out, alpha, order = fused
        self._last_attention, self._pending_attention = None, (alpha, order)
        return out

    def _fusable(self) -> bool:
        """Attention dropout sits between the softmax and the sum while training, so no fused kernel then."""
        return not (self.training and self.dropout > 0)

    def _softmax_sum(self, score: Tensor, x: Tensor, ops: GraphOps) -> Tensor:
        """``alpha = softmax`` of ``score (E, H)`` over each target's incoming edges (then attention dropout),
        ``out_i = sum_e alpha_e x_j``: ``(N, H, C)``. The backend's fused kernel when it has one."""
        out = self._take_fused(ops.edge_softmax_sum(score, x) if self._fusable() else None)
        if out is not None:
            return out
        alpha = ops.edge_softmax(score)
        self.last_attention = alpha.detach()
        alpha = F.dropout(alpha, p=self.dropout, training=self.training)
        return ops.u_mul_e_sum(x, alpha)


class _AttentionConv(_Attends):
    def __init__(self, in_dim: int, out_dim: int, heads: int, edge_dim: int | None, concat: bool,
                 negative_slope: float, dropout: float, bias: bool):
        super().__init__()
        self.in_dim, self.out_dim, self.heads = in_dim, out_dim, heads
        self.edge_dim, self.concat = edge_dim, concat
        self.negative_slope, self.dropout = negative_slope, dropout
        self.bias = nn.Parameter(torch.zeros(heads * out_dim if concat else out_dim)) if bias else None

    def forward(self, x: Tensor, ops: GraphOps, edge_attr: Tensor | TypedEdgeFeatures | None = None) -> Tensor:
        return self.attend(self.project(x), ops, edge_attr)

    def project(self, x: Tensor, bias: bool = True) -> tuple[Tensor, ...]:
        """The node projections the attention reads, each ``(N, H*C)``; without their biases when ``bias`` is
        False. They are affine in ``x``, so the projections of rows ``x_i + p_l`` are ``project(x)_i`` plus
        ``project(p, bias=False)_l`` (:class:`gnn.kinds.multigraph.MLGBody` uses it)."""
        raise NotImplementedError

    def attend(self, projected: tuple[Tensor, ...], ops: GraphOps,
               edge_attr: Tensor | TypedEdgeFeatures | None = None) -> Tensor:
        """The layer's output from :meth:`project`'s projections."""
        raise NotImplementedError

    def _finish(self, out: Tensor) -> Tensor:
        out = out.reshape(out.shape[0], -1) if self.concat else out.mean(dim=1)
        return out + self.bias if self.bias is not None else out

    def extra_repr(self) -> str:
        return f"{self.in_dim}, {self.out_dim}, heads={self.heads}, edge_dim={self.edge_dim}"


class GATConv(_AttentionConv):
    r"""GAT (Veličković et al. 2018), with optional edge features as in PyG's ``GATConv``.

    .. math::
        h_j = W x_j \in R^{H \times C}, \qquad
        s_{e,h} = \mathrm{LeakyReLU}\big(a_{src,h}^\top h_{j,h} + a_{dst,h}^\top h_{i,h}
                   + a_{edge,h}^\top (W_e f_e)_h\big), \\
        \alpha_{e,h} = \mathrm{softmax}_{e \in N(i)}(s_{e,h}), \qquad
        out_{i,h} = \sum_{e=(j \to i)} \alpha_{e,h}\, h_{j,h}, \qquad out_i \leftarrow out_i + b.

    Shapes: ``x (N, F_in)``, ``edge_attr (E, F_e)`` or None, out ``(N, H*C)`` (concat) or ``(N, C)``.
    """

    def __init__(self, in_dim: int, out_dim: int, heads: int = 1, edge_dim: int | None = None, concat: bool = True,
                 negative_slope: float = 0.2, dropout: float = 0.0, bias: bool = True):
        super().__init__(in_dim, out_dim, heads, edge_dim, concat, negative_slope, dropout, bias)
        self.lin = Linear(in_dim, heads * out_dim, bias=False)
        self.att_src = nn.Parameter(torch.empty(1, heads, out_dim))
        self.att_dst = nn.Parameter(torch.empty(1, heads, out_dim))
        if edge_dim is not None:
            self.lin_edge = Linear(edge_dim, heads * out_dim, bias=False)
            self.att_edge = nn.Parameter(torch.empty(1, heads, out_dim))
        else:
            self.lin_edge, self.att_edge = None, None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in (self.lin.weight, self.att_src, self.att_dst):
            _glorot(p)
        if self.lin_edge is not None:
            _glorot(self.lin_edge.weight)
            _glorot(self.att_edge)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def project(self, x: Tensor, bias: bool = True) -> tuple[Tensor]:
        """``(W x,)``, ``(N, H*C)`` (no bias either way)."""
        return (self.lin(x),)

    def attend(self, projected: tuple[Tensor], ops: GraphOps, edge_attr: Tensor | None = None) -> Tensor:
        H, C = self.heads, self.out_dim
        h = projected[0].view(-1, H, C)
        a_src = (h * self.att_src).sum(-1)            # (N, H)
        a_dst = (h * self.att_dst).sum(-1)            # (N, H)
        score = ops.u_add_v(a_src, a_dst)             # (E, H)
        if self.lin_edge is not None:
            if edge_attr is None:
                raise ValueError("this layer was built with edge_dim; pass edge_attr")
            # sum_c (W_e f_e)_{h,c} a_{edge,h,c} = f_e . (sum_c W_e[h,c,:] a_{edge,h,c}): fold the attention vector
            # into the edge projection so only an (E, H) tensor is made, never the (E, H, C) projection
            w = (self.lin_edge.weight.view(H, C, -1) * self.att_edge.view(H, C, 1)).sum(1)   # (H, F_e)
            if isinstance(edge_attr, TypedEdgeFeatures):   # f_e . w = w_e u + B[t_e], per type
                u, per_type = factored_edge_projection(w, None, edge_attr)
                if u is not None:
                    score = score + edge_attr.weight.unsqueeze(-1) * u
                if edge_attr.table is not None:
                    score = score + per_type[edge_attr.etype]
            else:
                score = score + edge_attr @ w.t()
        score = F.leaky_relu(score, self.negative_slope)
        return self._finish(self._softmax_sum(score, h, ops))


class GATv2Conv(_AttentionConv):
    r"""GATv2 (Brody et al. 2022): dynamic attention; the same function as PyG's ``GATv2Conv``
    (``share_weights=False``, edges as given, i.e. ``add_self_loops=False`` there).

    .. math::
        l_j = W_l x_j + b_l,\quad r_i = W_r x_i + b_r \in R^{H \times C}, \\
        s_{e,h} = a_h^\top \mathrm{LeakyReLU}\big(l_{j,h} + r_{i,h} + (W_e f_e)_h\big), \qquad
        \alpha_{e,h} = \mathrm{softmax}_{e \in N(i)}(s_{e,h}), \\
        out_{i,h} = \sum_{e=(j \to i)} \alpha_{e,h}\, l_{j,h}, \qquad out_i \leftarrow out_i + b.

    Shapes: ``x (N, F_in)``, ``edge_attr (E, F_e)`` or None, out ``(N, H*C)`` (concat) or ``(N, C)``;
    the pre-activation tensor is ``(E, H, C)``.
    """

    def __init__(self, in_dim: int, out_dim: int, heads: int = 1, edge_dim: int | None = None, concat: bool = True,
                 negative_slope: float = 0.2, dropout: float = 0.0, bias: bool = True):
        super().__init__(in_dim, out_dim, heads, edge_dim, concat, negative_slope, dropout, bias)
        self.lin_l = Linear(in_dim, heads * out_dim, bias=bias)
        self.lin_r = Linear(in_dim, heads * out_dim, bias=bias)
        self.att = nn.Parameter(torch.empty(1, heads, out_dim))
        self.lin_edge = Linear(edge_dim, heads * out_dim, bias=False) if edge_dim is not None else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.lin_l, self.lin_r, self.lin_edge):
            if lin is not None:
                _glorot(lin.weight)
                if lin.bias is not None:
                    nn.init.zeros_(lin.bias)
        _glorot(self.att)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def project(self, x: Tensor, bias: bool = True) -> tuple[Tensor, Tensor]:
        """``(W_l x + b_l, W_r x + b_r)``, each ``(N, H*C)``; without ``b_l, b_r`` when ``bias`` is False."""
        if bias:
            return self.lin_l(x), self.lin_r(x)
        return linear(x, self.lin_l.weight), linear(x, self.lin_r.weight)

    def attend(self, projected: tuple[Tensor, Tensor], ops: GraphOps,
               edge_attr: Tensor | TypedEdgeFeatures | None = None) -> Tensor:
        H, C = self.heads, self.out_dim
        xl, xr = (t.view(-1, H, C) for t in projected)
        if self.lin_edge is not None and edge_attr is None:
            raise ValueError("this layer was built with edge_dim; pass edge_attr")
        if self._fusable() and (self.lin_edge is None or isinstance(edge_attr, TypedEdgeFeatures)):
            out = self._take_fused(self._fused(xl, xr, ops, edge_attr))
            if out is not None:   # the backend's fused kernel (same math, no (E, H, C) tensor)
                return self._finish(out)
        if isinstance(edge_attr, TypedEdgeFeatures):
            edge_attr = edge_attr.dense()
        z = ops.u_add_v(xl, xr)                        # (E, H, C)
        # the (E, H, C) tensors dominate time and memory: update z in place (add and LeakyReLU with a
        # positive slope need neither input for their gradients) and contract with `att` without
        # materialising z * att
        if self.lin_edge is not None:
            z = z.add_(self.lin_edge(edge_attr).view(-1, H, C))
        z = F.leaky_relu(z, self.negative_slope, inplace=self.negative_slope > 0)
        score = torch.einsum("ehc,hc->eh", z, self.att[0])   # (E, H)
        return self._finish(self._softmax_sum(score, xl, ops))

    def _fused(self, xl: Tensor, xr: Tensor, ops: GraphOps, f: TypedEdgeFeatures | None):
        """The backend's fused GATv2 attention on factored edge features ``W_e f_e = w_e u + B_{t_e}``
        (``lin_edge`` has no bias), or None."""
        H, C = self.heads, self.out_dim
        if self.lin_edge is None:
            u, per_type, weight, etype = None, xl.new_zeros((1, H, C)), None, None
        else:
            u, per_type = factored_edge_projection(self.lin_edge.weight, None, f)
            per_type, weight, etype = per_type.view(-1, H, C), f.weight, (f.etype if f.table is not None else None)
        u = u.view(H, C) if u is not None else xl.new_zeros((H, C))
        return ops.gatv2_attention(xl, xr, u, per_type, self.att[0], weight, etype, self.negative_slope)


class ExphormerAttention(_Attends):
    r"""Exphormer's sparse attention (Shirzad et al. 2023) over whatever edges the edge set holds
    (graph ∪ expander ∪ virtual-node edges), with edge features modulating the keys.

    .. math::
        q_i = W_Q x_i,\; k_j = W_K x_j,\; v_j = W_V x_j \in R^{H \times C},\qquad
        \epsilon_e = W_E f_e \in R^{H \times C}, \\
        s_{e,h} = \mathrm{clamp}\Big(\tfrac{1}{\sqrt{C}} \sum_c q_{i,h,c}\, k_{j,h,c}\, \epsilon_{e,h,c},\,-5, 5\Big),
        \qquad \alpha_{e,h} = \mathrm{softmax}_{e \in N(i)}(s_{e,h}), \\
        out_i = W_O \big[\textstyle\sum_{e=(j\to i)} \alpha_{e,h}\, v_{j,h}\big]_{h=1..H}.

    Shapes: ``x (N, F_in)``, ``edge_attr (E, F_e)`` (required), out ``(N, out_dim)``.

    ``edge_attr`` may also be :class:`gnn.edges.TypedEdgeFeatures` ``f_e = [w_e \| T[t_e]]`` (what
    :class:`~gnn.kinds.single.ExphormerBody` passes): then ``\epsilon_e = w_e u + B_{t_e}`` with
    ``u = W_E[:, 0]``, ``B = T W_E[:, 1:]^\top + b_E`` and the score is
    ``w_e \langle q_i, k_j \odot u\rangle + \langle q_i, k_j \odot B_{t_e}\rangle`` (per head), one
    ``u_dot_v`` over all edges and one per edge type over node-sized tensors: the same numbers up to float
    rounding, without the ``(E, H, C)`` tensors.
    """

    def __init__(self, in_dim: int, out_dim: int, heads: int, edge_dim: int, dropout: float = 0.0, clamp: float = 5.0):
        super().__init__()
        if out_dim % heads:
            raise ValueError(f"out_dim {out_dim} must be divisible by heads {heads}")
        self.heads, self.head_dim, self.clamp, self.dropout = heads, out_dim // heads, clamp, dropout
        self.lin_q = Linear(in_dim, out_dim, bias=True)
        self.lin_k = Linear(in_dim, out_dim, bias=True)
        self.lin_v = Linear(in_dim, out_dim, bias=True)
        self.lin_e = Linear(edge_dim, out_dim, bias=True)
        self.lin_o = Linear(out_dim, out_dim, bias=True)

    def forward(self, x: Tensor, ops: GraphOps, edge_attr: Tensor) -> Tensor:
        H, C = self.heads, self.head_dim
        q = self.lin_q(x).view(-1, H, C)
        k = self.lin_k(x).view(-1, H, C)
        v = self.lin_v(x).view(-1, H, C)
        if isinstance(edge_attr, TypedEdgeFeatures) and self._fusable():
            u, per_type = self._edge_projection(edge_attr)
            fused = ops.typed_dot_attention(
                q, k, v, u if u is not None else q.new_zeros((H, C)), per_type, edge_attr.weight,
                edge_attr.etype if edge_attr.table is not None else None, self.clamp)
            out = self._take_fused(fused)
            if out is not None:   # the backend's fused kernel (same math, one pass over the edges)
                return self.lin_o(out.reshape(out.shape[0], H * C))
        if isinstance(edge_attr, TypedEdgeFeatures):
            score = self._typed_score(q, k, ops, edge_attr) / math.sqrt(C)  # (E, H)
        else:
            ke = ops.gather_src(k) * self.lin_e(edge_attr).view(-1, H, C)   # (E, H, C)
            score = ops.e_dot_v(ke, q) / math.sqrt(C)                        # (E, H)
        out = self._softmax_sum(score.clamp(-self.clamp, self.clamp), v, ops)   # (N, H, C)
        return self.lin_o(out.reshape(out.shape[0], H * C))

    def _edge_projection(self, f: TypedEdgeFeatures) -> tuple[Tensor | None, Tensor]:
        """``W_E f_e + b_E = w_e u + B_{t_e}`` (:func:`factored_edge_projection`): ``u (H, C)`` or None,
        ``B (K, H, C)``."""
        u, per_type = factored_edge_projection(self.lin_e.weight, self.lin_e.bias, f)
        return (u.view(self.heads, -1) if u is not None else None), per_type.view(per_type.shape[0], self.heads, -1)

    def _typed_score(self, q: Tensor, k: Tensor, ops: GraphOps, f: TypedEdgeFeatures) -> Tensor:
        """``sum_c q[dst] k[src] (W_E f_e + b_E)`` per head, ``(E, H)``, for factored features (class docstring)."""
        u, per_type = self._edge_projection(f)
        score = None
        if u is not None:
            score = ops.u_dot_v(k * u, q) * f.weight.unsqueeze(-1)
        parts = [handle.u_dot_v(k * per_type[t], q) for t, handle in f.by_type]
        typed = parts[0] if len(parts) == 1 else torch.cat(parts) if parts else q.new_zeros((0, self.heads))
        if f.order is not None:
            typed = typed.index_select(0, f.order)
        return typed if score is None else score + typed
