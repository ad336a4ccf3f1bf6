"""The message-passing primitives every layer is written on, and the graph handle they act on.

A layer never indexes edges itself: it asks a :class:`GraphOps` handle (built by a backend for one edge
set ``src -> dst`` over ``N`` nodes, ``E`` edges) for these operations, so the same layer code runs on
DGL's fused kernels and on PyTorch Geometric's scatter utilities:

================================ ======================================= ===================================
primitive                        math                                    shapes
================================ ======================================= ===================================
``gather_src(x)``                ``x[src_e]``                            ``(N, *F) -> (E, *F)``
``gather_dst(x)``                ``x[dst_e]``                            ``(N, *F) -> (E, *F)``
``u_add_v(xs, xd)``              ``xs[src_e] + xd[dst_e]``               ``(N, *F), (N, *F) -> (E, *F)``
``e_dot_v(e, x)``                ``sum_c e[e, h, c] * x[dst_e, h, c]``   ``(E, H, C), (N, H, C) -> (E, H)``
``u_dot_v(xs, xd)``              ``sum_c xs[src_e,h,c] * xd[dst_e,h,c]`` ``(N, H, C), (N, H, C) -> (E, H)``
``edge_softmax(s)``              ``exp(s_e) / sum_{e': dst_e'=dst_e}``   ``(E, H) -> (E, H)``
                                 ``exp(s_e')`` (over incoming edges)
``aggregate(m)``                 ``out[v] = sum_{e: dst_e = v} m_e``     ``(E, *F) -> (N, *F)``
``u_mul_e_sum(x, a)``            ``out[v] = sum_{e: dst_e=v} a_e x[src_e]`` ``(N, H, C), (E, H) -> (N, H, C)``
================================ ======================================= ===================================

Nodes with no incoming edge get zeros from ``aggregate`` / ``u_mul_e_sum``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor


class GraphOps(ABC):
    """One edge set on one device, with the primitives above. Built by :meth:`Backend.graph`."""

    backend_name: str = "?"

    def __init__(self, src: Tensor, dst: Tensor, num_nodes: int):
        if src.shape != dst.shape or src.dim() != 1:
            raise ValueError(f"src and dst must be 1-D of one length, got {tuple(src.shape)} and {tuple(dst.shape)}")
        self.src = src
        self.dst = dst
        self.num_nodes = int(num_nodes)

    @property
    def num_edges(self) -> int:
        return int(self.src.numel())

    def gather_src(self, x: Tensor) -> Tensor:
        """``x[src]``: ``(N, *F) -> (E, *F)``."""
        return x.index_select(0, self.src)

    def gather_dst(self, x: Tensor) -> Tensor:
        """``x[dst]``: ``(N, *F) -> (E, *F)``."""
        return x.index_select(0, self.dst)

    @abstractmethod
    def u_add_v(self, xs: Tensor, xd: Tensor) -> Tensor:
        """``xs[src] + xd[dst]``: ``(N, *F), (N, *F) -> (E, *F)``."""

    @abstractmethod
    def e_dot_v(self, e: Tensor, x: Tensor) -> Tensor:
        """``sum_c e[:, h, c] * x[dst, h, c]``: ``(E, H, C), (N, H, C) -> (E, H)``."""

    def u_dot_v(self, xs: Tensor, xd: Tensor) -> Tensor:
        """``sum_c xs[src, h, c] * xd[dst, h, c]``: ``(N, H, C), (N, H, C) -> (E, H)`` (backends override this
        generic version with a kernel that does not materialise the ``(E, H, C)`` products)."""
        return (self.gather_src(xs) * self.gather_dst(xd)).sum(-1)

    @abstractmethod
    def edge_softmax(self, score: Tensor) -> Tensor:
        """Softmax of ``score`` ``(E, H)`` over the incoming edges of each target node; ``(E, H)``."""

    @abstractmethod
    def aggregate(self, msg: Tensor) -> Tensor:
        """Sum of edge messages into their targets: ``(E, *F) -> (N, *F)``."""

    @abstractmethod
    def u_mul_e_sum(self, x: Tensor, a: Tensor) -> Tensor:
        """``out[v] = sum_{e: dst=v} a[e, h] * x[src_e, h, :]``: ``(N, H, C), (E, H) -> (N, H, C)``."""

    def typed_dot_attention(self, q: Tensor, k: Tensor, v: Tensor, u: Tensor, b: Tensor, weight: Tensor | None,
                            etype: Tensor | None, clamp: float) -> tuple[Tensor, Tensor, Callable] | None:
        """A fused kernel for Exphormer's attention on typed edge features, or None (the default): then the
        layer composes it from the primitives above. The math (:mod:`gnn.backends.fused_attention`):
        ``s_e = clamp(<q_dst, k_src * (w_e u + b[t_e])> / sqrt(C))`` per head, ``alpha = softmax`` over each
        target's incoming edges, ``out_i = sum_e alpha_e v_src``. ``q, k, v (N, H, C)``, ``u (H, C)``,
        ``b (K, H, C)``, ``weight (E,)`` (None: ``w_e = 0``), ``etype (E,)`` (None: every edge type 0).
        Returns ``out (N, H, C)``, ``alpha (E, H)`` in an order of the backend's and the function that puts an
        ``(E, ...)`` tensor of that order into edge order."""
        return None

    def gatv2_attention(self, l: Tensor, r: Tensor, u: Tensor, b: Tensor, att: Tensor, weight: Tensor | None,
                        etype: Tensor | None, negative_slope: float) -> tuple[Tensor, Tensor, Callable] | None:
        """A fused kernel for GATv2's attention on factored edge features, or None (the default): then the layer
        composes it from the primitives. ``z_e = l_src + r_dst + w_e u + b[t_e]``, ``s_e = sum_c att
        LeakyReLU(z_e)`` per head, ``alpha = softmax`` over each target's incoming edges, ``out_i = sum_e
        alpha_e l_src``. ``l, r (N, H, C)``, ``u (H, C)``, ``b (K, H, C)``, ``att (H, C)``, ``weight (E,)``
        (None: ``w_e = 0``), ``etype (E,)`` (None: every edge type 0). Returns like
        :meth:`typed_dot_attention`."""
        return None

    def edge_softmax_sum(self, score: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Callable] | None:
        """A fused kernel for :meth:`edge_softmax` followed by :meth:`u_mul_e_sum`, or None (the default): then
        the layer composes the two. ``alpha = softmax`` of ``score (E, H)`` over each target's incoming edges,
        ``out_i = sum_{e=(j->i)} alpha_e x_j`` for ``x (N, H, C)``. Returns ``out (N, H, C)``, ``alpha (E, H)``
        in an order of the backend's and the function that puts it into edge order."""
        return None


class Backend(ABC):
    """A factory of :class:`GraphOps` handles."""

    name: str = "?"

    @abstractmethod
    def graph(self, src: Tensor, dst: Tensor, num_nodes: int) -> GraphOps:
        """A handle for the edges ``src[e] -> dst[e]`` (LongTensors on one device) over ``num_nodes`` nodes."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def check_edges(src: Tensor, dst: Tensor) -> None:
    """Both long tensors on one device."""
    if src.dtype != torch.long or dst.dtype != torch.long:
        raise TypeError(f"edge indices must be int64, got {src.dtype} and {dst.dtype}")
    if src.device != dst.device:
        raise ValueError(f"src on {src.device} but dst on {dst.device}")
