"""The primitives on PyTorch Geometric's utilities (``torch_geometric.utils.softmax``) and torch sparse / scatter ops.

Edge softmax is PyG's ``softmax(score, index=dst, num_nodes=N)`` (max-shifted, per target), as one autograd
node with a hand-written backward; sums into targets are ``Tensor.index_add_`` (what PyG's
``scatter(..., reduce='sum')`` does).

``u_mul_e_sum`` -- the weighted sum of source rows that every attention layer ends with -- never
materialises the ``(E, H, C)`` message tensor on CPU: it is one sparse-dense product ``A X`` with ``A`` the
block-diagonal CSR matrix of the per-head edge weights (rows = targets; :class:`_CSRIndex`) and ``X`` the
``(N, H, C)`` node tensor seen as ``(N H, C)``; its backward is ``A^T G`` (gradient of ``X``) and the sampled
dot products ``G[dst] . X[src]`` (gradient of the weights, ``torch.sparse.sampled_addmm``). ``u_dot_v`` is
that sampled product, with CSR products as its backward. Both are exact sums of the same terms as
gather / scatter (float rounding aside). The CSR index structures (edges sorted by target and by source, row
pointers) are built once per graph handle and head count; :meth:`gnn.edges.EdgeSet.ops` caches the handle.
On other devices and dtypes the primitives fall back to gather / ``index_add_``.

``typed_dot_attention`` -- Exphormer's whole attention on typed edge features -- runs the fused C kernels of
:mod:`gnn.backends.fused_attention` on CPU float tensors (one pass over the edges for the forward, two for
the backward), where the composed primitives would take nine sparse products. ``edge_softmax_sum`` -- the
edge softmax and ``u_mul_e_sum`` that GAT and GATv2 end with -- runs that module's softmax-and-sum kernels
the same way (one gathered row per edge and pass, no CSR value permutations), and ``gatv2_attention`` --
GATv2's whole attention on factored edge features -- its GATv2 kernels, without the ``(E, H, C)`` tensors
the composed layer needs.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from gnn.backends import fused_attention
from gnn.backends.base import Backend, GraphOps, check_edges


class _Layout(NamedTuple):
    """One direction of a :class:`_CSRIndex`: CSR row pointers, column indices and, per stored entry, the
    flat index ``e * H + h`` of the ``(E, H)`` edge tensor it holds."""

    crow: Tensor
    col: Tensor
    flat: Tensor


class _CSRIndex:
    """The edges as the block-diagonal ``(N H, N H)`` CSR matrix of ``H`` heads: row ``v H + h`` holds the
    edges into ``v`` for head ``h`` at columns ``src H + h`` (``fwd``), and its transpose (``bwd``: rows
    ``src H + h``). With ``(N, H, C)`` node tensors seen as ``(N H, C)`` every head is one sparse product.
    Columns ascend within a row (what torch's / MKL's CSR kernels expect); repeated edges stay separate
    entries; int32 indices when they fit."""

    def __init__(self, src: Tensor, dst: Tensor, num_nodes: int, heads: int):
        n, h = int(num_nodes), int(heads)
        itype = torch.int32 if max(n * h + 1, src.numel() * h) < 2**31 - 1 else torch.int64
        self.num_rows = n * h
        self.heads = h
        self.fwd = self._layout(dst, src, n, h, itype)
        self.bwd = self._layout(src, dst, n, h, itype)
        self._zeros: dict[torch.dtype, Tensor] = {}

    @staticmethod
    def _layout(rows: Tensor, cols: Tensor, n: int, h: int, itype: torch.dtype) -> _Layout:
        e = rows.numel()
        perm = torch.argsort(rows * n + cols, stable=True)
        r, c = rows.index_select(0, perm), cols.index_select(0, perm)
        deg = torch.bincount(rows, minlength=n)
        start = torch.cumsum(deg, 0) - deg                      # first sorted edge of each row
        heads = torch.arange(h, device=rows.device)
        # sorted edge j of row v goes, for head k, to entry H start[v] + k deg[v] + (j - start[v])
        pos = ((h - 1) * start.index_select(0, r) + torch.arange(e, device=rows.device)).unsqueeze(1) \
            + deg.index_select(0, r).unsqueeze(1) * heads
        pos = pos.reshape(-1)
        flat = torch.empty(e * h, dtype=torch.int64, device=rows.device)
        flat[pos] = (perm.unsqueeze(1) * h + heads).reshape(-1)
        col = torch.empty(e * h, dtype=torch.int64, device=rows.device)
        col[pos] = (c.unsqueeze(1) * h + heads).reshape(-1)
        crow = torch.cat([(h * start.unsqueeze(1) + deg.unsqueeze(1) * heads).reshape(-1),
                          torch.tensor([e * h], device=rows.device)])
        return _Layout(crow.to(itype), col.to(itype), flat)

    def _matrix(self, values: Tensor, layout: _Layout) -> Tensor:
        with warnings.catch_warnings():  # torch warns once that CSR tensors are "beta"; these never leave here
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(layout.crow, layout.col, values, (self.num_rows, self.num_rows),
                                           check_invariants=False)

    def spmm(self, a: Tensor, x: Tensor, transpose: bool = False) -> Tensor:
        """``out[:, h] = A_h x[:, h]`` (``transpose``: ``A_h^T``); ``a (E, H)`` in edge order, ``x (N, H, C)``."""
        layout = self.bwd if transpose else self.fwd
        values = a.reshape(-1).index_select(0, layout.flat)
        out = torch.sparse.mm(self._matrix(values, layout), x.reshape(self.num_rows, -1))
        return out.view(x.shape)

    def sddmm(self, g: Tensor, x: Tensor) -> Tensor:
        """``out[e, h] = g[dst_e, h] . x[src_e, h]`` for ``g, x (N, H, C)``; ``(E, H)`` in edge order."""
        zeros = self._zeros.get(g.dtype)
        if zeros is None:  # sampled_addmm with beta=0 reads only the pattern of its input
            zeros = self._zeros[g.dtype] = g.new_zeros(self.fwd.flat.numel())
        vals = torch.sparse.sampled_addmm(self._matrix(zeros, self.fwd), g.reshape(self.num_rows, -1),
                                          x.reshape(self.num_rows, -1).t(), beta=0.0).values()
        out = torch.empty(vals.numel(), dtype=vals.dtype, device=vals.device).index_copy_(0, self.fwd.flat, vals)
        return out.view(-1, self.heads)


class _UMulESum(torch.autograd.Function):
    """``out[v] = sum_{e: dst_e = v} a[e, h] x[src_e, h, :]`` on CSR products (module docstring)."""

    @staticmethod
    def forward(ctx, x: Tensor, a: Tensor, index: _CSRIndex) -> Tensor:
        ctx.save_for_backward(x, a)
        ctx.index = index
        return index.spmm(a, x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, a = ctx.saved_tensors
        grad = grad.contiguous()
        gx = ctx.index.spmm(a, grad, transpose=True) if ctx.needs_input_grad[0] else None
        ga = ctx.index.sddmm(grad, x) if ctx.needs_input_grad[1] else None
        return gx, ga, None


class _UDotV(torch.autograd.Function):
    """``out[e, h] = xs[src_e, h] . xd[dst_e, h]`` as a sampled dense-dense product; the gradients are the CSR
    products ``A_g^T xd`` (of ``xs``) and ``A_g xs`` (of ``xd``) with the edge values ``g``."""

    @staticmethod
    def forward(ctx, xs: Tensor, xd: Tensor, index: _CSRIndex) -> Tensor:
        ctx.save_for_backward(xs, xd)
        ctx.index = index
        return index.sddmm(xd, xs)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        xs, xd = ctx.saved_tensors
        grad = grad.contiguous()
        gxs = ctx.index.spmm(grad, xd, transpose=True) if ctx.needs_input_grad[0] else None
        gxd = ctx.index.spmm(grad, xs) if ctx.needs_input_grad[1] else None
        return gxs, gxd, None


class _EdgeSoftmax(torch.autograd.Function):
    """PyG's ``softmax(score, index=dst)`` (max-shifted; ``exp / (sum + 1e-16)``) with a hand-written backward
    ``grad_s = a * (g - sum_{e' -> dst_e} a_e' g_e')`` that keeps only the output ``a`` for it."""

    @staticmethod
    def forward(ctx, score: Tensor, dst: Tensor, num_nodes: int) -> Tensor:
        shape = (num_nodes,) + tuple(score.shape[1:])
        index = dst.view((-1,) + (1,) * (score.dim() - 1)).expand_as(score)
        peak = score.new_zeros(shape).scatter_reduce_(0, index, score, "amax", include_self=False)
        out = (score - peak.index_select(0, dst)).exp_()
        total = score.new_zeros(shape).index_add_(0, dst, out).add_(1e-16)
        out = out.div_(total.index_select(0, dst))
        ctx.save_for_backward(out, dst)
        ctx.num_nodes = num_nodes
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        out, dst = ctx.saved_tensors
        t = grad * out
        total = t.new_zeros((ctx.num_nodes,) + tuple(t.shape[1:])).index_add_(0, dst, t)
        return t.sub_(out * total.index_select(0, dst)), None, None


def _sparse_ok(*tensors: Tensor) -> bool:
    """Whether the CSR kernels take these node tensors ``(N, H, C)``: CPU, float32/64, one dtype."""
    t0 = tensors[0]
    return all(t.device.type == "cpu" and t.dim() == 3 and t.dtype == t0.dtype for t in tensors) and \
        t0.dtype in (torch.float32, torch.float64)


class PyGGraph(GraphOps):
    backend_name = "pyg"

    def __init__(self, src: Tensor, dst: Tensor, num_nodes: int):
        super().__init__(src, dst, num_nodes)
        self._csr: dict[int, _CSRIndex] = {}
        self._typed: dict[tuple, fused_attention.TypedAttentionIndex] = {}

    def csr(self, heads: int) -> _CSRIndex:
        """The CSR index structures of these edges for ``heads`` heads, built on first use and kept here."""
        index = self._csr.get(heads)
        if index is None:
            index = self._csr[heads] = _CSRIndex(self.src, self.dst, self.num_nodes, heads)
        return index

    def u_add_v(self, xs: Tensor, xd: Tensor) -> Tensor:
        return xs.index_select(0, self.src) + xd.index_select(0, self.dst)

    def e_dot_v(self, e: Tensor, x: Tensor) -> Tensor:
        return (e * x.index_select(0, self.dst)).sum(-1)

    def edge_softmax(self, score: Tensor) -> Tensor:
        if score.is_floating_point() and self.num_edges > 0:
            return _EdgeSoftmax.apply(score, self.dst, self.num_nodes)
        from torch_geometric.utils import softmax

        return softmax(score, index=self.dst, num_nodes=self.num_nodes, dim=0)

    def aggregate(self, msg: Tensor) -> Tensor:
        out = msg.new_zeros((self.num_nodes,) + tuple(msg.shape[1:]))
        return out.index_add_(0, self.dst, msg)

    def u_dot_v(self, xs: Tensor, xd: Tensor) -> Tensor:
        if self.num_edges > 0 and _sparse_ok(xs, xd) and xs.shape == xd.shape:
            return _UDotV.apply(xs, xd, self.csr(xs.shape[1]))
        return super().u_dot_v(xs, xd)

    def u_mul_e_sum(self, x: Tensor, a: Tensor) -> Tensor:
        if (self.num_edges > 0 and _sparse_ok(x) and a.dtype == x.dtype and a.shape == (self.num_edges, x.shape[1])):
            return _UMulESum.apply(x, a, self.csr(x.shape[1]))
        return self.aggregate(x.index_select(0, self.src) * a.unsqueeze(-1))

    def typed_dot_attention(self, q: Tensor, k: Tensor, v: Tensor, u: Tensor, b: Tensor, weight: Tensor | None,
                            etype: Tensor | None, clamp: float):
        """The fused CPU kernels of :mod:`gnn.backends.fused_attention` (float32/64 on CPU, when they could be
        compiled here); None otherwise."""
        index = self._typed_index(weight, etype, b.shape[0], q, k, v, u, b)
        if index is None:
            return None
        out, alpha = fused_attention.typed_attention(q, k, v, u, b, index, clamp)
        return out, alpha, index.edge_order

    def gatv2_attention(self, l: Tensor, r: Tensor, u: Tensor, b: Tensor, att: Tensor, weight: Tensor | None,
                        etype: Tensor | None, negative_slope: float):
        """The fused CPU kernels of :mod:`gnn.backends.fused_attention` (float32/64 on CPU, when they could be
        compiled here); None otherwise."""
        index = self._typed_index(weight, etype, b.shape[0], l, r, u, b, att)
        if index is None:
            return None
        out, alpha = fused_attention.gatv2_attention(l, r, u, b, att, index, negative_slope)
        return out, alpha, index.edge_order

    def edge_softmax_sum(self, score: Tensor, x: Tensor):
        """The fused CPU kernels of :mod:`gnn.backends.fused_attention` (float32/64 on CPU, when they could be
        compiled here); None otherwise."""
        if not self._fused_ok(x, score) or x.dim() != 3 or score.shape != (self.num_edges, x.shape[1]):
            return None
        index = self._attention_index(None, None)
        out, alpha = fused_attention.softmax_sum(score, x, index)
        return out, alpha, index.edge_order

    def _typed_index(self, weight: Tensor | None, etype: Tensor | None, num_types: int,
                     *tensors: Tensor) -> fused_attention.TypedAttentionIndex | None:
        """The edge layouts for a typed fused kernel on these tensors, or None when it does not take them (the
        kernels index edge types with uint8: at most 256 types)."""
        if not self._fused_ok(*tensors) or (etype is not None and num_types > 256):
            return None
        return self._attention_index(weight, etype)

    def _fused_ok(self, *tensors: Tensor) -> bool:
        """Whether the fused kernels take these tensors on these edges (they index with int32)."""
        return self.num_edges > 0 and max(self.num_edges, self.num_nodes) < 2**31 and \
            fused_attention.available(*tensors)

    def _attention_index(self, weight: Tensor | None, etype: Tensor | None) -> fused_attention.TypedAttentionIndex:
        """The fused kernels' edge layouts for these edge weights and types, kept here (the last few)."""
        key = tuple(None if t is None else (t.data_ptr(), t._version) for t in (weight, etype))
        index = self._typed.get(key)
        if index is None:
            if len(self._typed) >= 4:
                self._typed.clear()
            index = self._typed[key] = fused_attention.TypedAttentionIndex(self.src, self.dst, self.num_nodes,
                                                                           weight, etype)
        return index


class PyGBackend(Backend):
    """PyTorch Geometric backend (always available: torch-geometric is a dependency)."""

    name = "pyg"

    def graph(self, src: Tensor, dst: Tensor, num_nodes: int) -> PyGGraph:
        check_edges(src, dst)
        return PyGGraph(src, dst, num_nodes)
