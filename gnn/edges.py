"""Edge sets an encoder passes messages over, built from a :class:`~kgbuild.graph.MultiGraph`.

An :class:`EdgeSet` holds ``src``, ``dst`` (LongTensor ``(E,)``), ``weight`` (float ``(E,)``) and ``etype``
(LongTensor ``(E,)``, an edge-type id whose meaning the encoder defines) as buffers, so ``.to(device)``
moves them; :meth:`EdgeSet.ops` returns the backend's :class:`~gnn.backends.base.GraphOps` for them,
cached per backend and device (and :meth:`EdgeSet.ops_by_type` one handle per edge type, for layers that
work per type on :class:`TypedEdgeFeatures`). The numpy helpers below build the pieces: the graph's own edges, self
loops, expander edges (a random ``d``-regular graph or Hamiltonian cycles, seeded) and virtual-node edges.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from gnn.backends.base import Backend, GraphOps


class EdgeSet(nn.Module):
    """Directed edges ``src -> dst`` over ``num_nodes`` nodes with weights and type ids, as buffers (saved in
    the module's ``state_dict`` unless ``persistent=False``: an edge set derived from others)."""

    def __init__(self, src: np.ndarray, dst: np.ndarray, weight: np.ndarray, etype: np.ndarray, num_nodes: int,
                 persistent: bool = True):
        super().__init__()
        src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
        if src.shape != dst.shape or src.ndim != 1:
            raise ValueError(f"src and dst must be 1-D of one length, got {src.shape} and {dst.shape}")
        if len(src) and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= num_nodes):
            raise ValueError(f"edge endpoints must lie in [0, {num_nodes})")
        self.num_nodes = int(num_nodes)
        self.register_buffer("src", torch.from_numpy(src.copy()), persistent=persistent)
        self.register_buffer("dst", torch.from_numpy(dst.copy()), persistent=persistent)
        self.register_buffer("weight", torch.from_numpy(np.asarray(weight, dtype=np.float32).copy()), persistent=persistent)
        self.register_buffer("etype", torch.from_numpy(np.asarray(etype, dtype=np.int64).copy()), persistent=persistent)
        self._cache: dict[tuple, GraphOps] = {}
        self._type_cache: dict[tuple, tuple[list[tuple[int, GraphOps]], Tensor | None]] = {}

    @property
    def num_edges(self) -> int:
        return int(self.src.numel())

    def ops(self, backend: Backend) -> GraphOps:
        """The backend's primitives for these edges on their current device (cached)."""
        key = (backend.name, self.src.device, self.src.data_ptr(), self.dst.data_ptr())
        handle = self._cache.get(key)
        if handle is None:
            self._cache.clear()
            handle = self._cache[key] = backend.graph(self.src, self.dst, self.num_nodes)
        return handle

    def ops_by_type(self, backend: Backend) -> tuple[list[tuple[int, GraphOps]], Tensor | None]:
        """One handle per edge type present, ``[(type id, handle over the edges of that type)]`` in ascending
        type order, and ``order`` (LongTensor ``(E,)``): per edge its row in the per-type results
        concatenated in that order, or ``None`` when the edges are already grouped by ascending type
        (then concatenation is edge order). Built once per backend and device (cached)."""
        key = (backend.name, self.src.device, self.src.data_ptr(), self.dst.data_ptr(), self.etype.data_ptr())
        hit = self._type_cache.get(key)
        if hit is None:
            self._type_cache.clear()
            grouped = torch.argsort(self.etype, stable=True)
            types = torch.unique(self.etype).tolist()
            counts = torch.bincount(self.etype).tolist() if self.num_edges else []
            handles, start = [], 0
            for t in types:
                idx = grouped[start:start + counts[t]]
                start += counts[t]
                handles.append((int(t), backend.graph(self.src[idx], self.dst[idx], self.num_nodes)))
            identity = bool(torch.equal(grouped, torch.arange(self.num_edges, device=grouped.device)))
            order = None if identity else torch.empty_like(grouped).index_copy_(
                0, grouped, torch.arange(self.num_edges, device=grouped.device))
            hit = self._type_cache[key] = (handles, order)
        return hit

    def extra_repr(self) -> str:
        return f"num_nodes={self.num_nodes}, num_edges={self.num_edges}"


class TypedEdgeFeatures(NamedTuple):
    r"""The edge features ``f_e = [w_e \| T[t_e]]`` of :class:`gnn.layers.blocks.EdgeFeatures`, not assembled:
    a layer that only applies a linear map to them, ``W f_e + b = w_e W_{:,0} + (T W_{:,1:}^T + b)[t_e]``, can
    then work per edge type on node-sized tensors instead of on an ``(E, dim)`` tensor
    (:class:`gnn.layers.attention_convs.ExphormerAttention` does).

    ``weight`` ``(E,)`` when the weight is a feature, else None; ``table`` the type embedding ``T (K, d_t)``
    when the type is a feature, else None (then every edge counts as type 0); ``etype`` ``(E,)``;
    ``by_type`` / ``order`` as returned by :meth:`EdgeSet.ops_by_type` (one type-0 handle when ``table`` is None).
    """

    weight: Tensor | None
    table: Tensor | None
    etype: Tensor
    by_type: list[tuple[int, GraphOps]]
    order: Tensor | None

    def dense(self) -> Tensor:
        """The assembled features ``(E, F_e)``, as :class:`~gnn.layers.blocks.EdgeFeatures` returns them."""
        parts = ([self.weight.unsqueeze(-1)] if self.weight is not None else []) + \
            ([self.table[self.etype]] if self.table is not None else [])
        if not parts:
            raise ValueError("these edge features are empty")
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


# ---------------------------------------------------------------------- numpy builders
def self_loops(nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(src, dst)`` of one self loop per node id in ``nodes``."""
    nodes = np.asarray(nodes, dtype=np.int64)
    return nodes.copy(), nodes.copy()


def hamiltonian_cycle_edges(nodes: np.ndarray, degree: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Expander edges from ``degree // 2`` random Hamiltonian cycles over ``nodes``, each in both directions.

    Every node gets ``2 * (degree // 2)`` incoming expander edges (a ``degree``-regular multigraph for even
    ``degree``); repeated pairs across cycles are kept (they are distinct edges). Seeded, deterministic.
    """
    nodes = np.asarray(nodes, dtype=np.int64)
    n = len(nodes)
    if n < 3 or degree < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    srcs, dsts = [], []
    for _ in range(degree // 2):
        perm = nodes[rng.permutation(n)]
        nxt = np.roll(perm, -1)
        srcs += [perm, nxt]
        dsts += [nxt, perm]
    return np.concatenate(srcs), np.concatenate(dsts)


def random_regular_edges(nodes: np.ndarray, degree: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Expander edges of a random ``degree``-regular simple graph over ``nodes`` (both directions), seeded.

    Uses ``networkx.random_regular_graph``; when no such graph exists (``n * degree`` odd or
    ``degree >= n``) falls back to :func:`hamiltonian_cycle_edges`.
    """
    import networkx as nx

    nodes = np.asarray(nodes, dtype=np.int64)
    n = len(nodes)
    if degree < 1 or n < 3:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if degree >= n or (n * degree) % 2:
        return hamiltonian_cycle_edges(nodes, max(2, degree + degree % 2), seed)
    g = nx.random_regular_graph(degree, n, seed=seed)
    pairs = np.asarray(sorted(g.edges()), dtype=np.int64).reshape(-1, 2)
    a, b = nodes[pairs[:, 0]], nodes[pairs[:, 1]]
    return np.concatenate([a, b]), np.concatenate([b, a])


def expander_edges(nodes: np.ndarray, degree: int, seed: int, method: str = "regular") -> tuple[np.ndarray, np.ndarray]:
    """Expander edges over ``nodes`` with ``method`` ``"regular"`` or ``"cycles"``; see the two builders."""
    if method == "regular":
        return random_regular_edges(nodes, degree, seed)
    if method == "cycles":
        return hamiltonian_cycle_edges(nodes, degree, seed)
    raise ValueError(f"unknown expander method {method!r}; choose 'regular' or 'cycles'")


def virtual_node_edges(nodes: np.ndarray, first_virtual: int, num_virtual: int) -> tuple[np.ndarray, np.ndarray]:
    """Edges both ways between every node in ``nodes`` and virtual nodes ``first_virtual ..
    first_virtual + num_virtual - 1``."""
    nodes = np.asarray(nodes, dtype=np.int64)
    srcs, dsts = [], []
    for k in range(num_virtual):
        v = np.full(len(nodes), first_virtual + k, dtype=np.int64)
        srcs += [nodes, v]
        dsts += [v, nodes]
    if not srcs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(srcs), np.concatenate(dsts)
