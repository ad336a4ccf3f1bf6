"""The primitives on PyTorch Geometric's utilities (``torch_geometric.utils.softmax``) and torch scatter ops.

Edge softmax is PyG's ``softmax(score, index=dst, num_nodes=N)`` (max-shifted, per target); sums into
targets are ``Tensor.index_add_`` (what PyG's ``scatter(..., reduce='sum')`` does).
"""

from __future__ import annotations

from torch import Tensor

from gnn.backends.base import Backend, GraphOps, check_edges


class PyGGraph(GraphOps):
    backend_name = "pyg"

    def u_add_v(self, xs: Tensor, xd: Tensor) -> Tensor:
        return xs.index_select(0, self.src) + xd.index_select(0, self.dst)

    def e_dot_v(self, e: Tensor, x: Tensor) -> Tensor:
        return (e * x.index_select(0, self.dst)).sum(-1)

    def edge_softmax(self, score: Tensor) -> Tensor:
        from torch_geometric.utils import softmax

        return softmax(score, index=self.dst, num_nodes=self.num_nodes, dim=0)

    def aggregate(self, msg: Tensor) -> Tensor:
        out = msg.new_zeros((self.num_nodes,) + tuple(msg.shape[1:]))
        return out.index_add_(0, self.dst, msg)

    def u_mul_e_sum(self, x: Tensor, a: Tensor) -> Tensor:
        return self.aggregate(x.index_select(0, self.src) * a.unsqueeze(-1))


class PyGBackend(Backend):
    """PyTorch Geometric backend (always available: torch-geometric is a dependency)."""

    name = "pyg"

    def graph(self, src: Tensor, dst: Tensor, num_nodes: int) -> PyGGraph:
        check_edges(src, dst)
        return PyGGraph(src, dst, num_nodes)
