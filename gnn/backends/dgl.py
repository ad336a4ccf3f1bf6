"""The primitives on DGL's fused kernels: ``dgl.ops.edge_softmax``, ``gsddmm`` (``u_add_v``, ``e_dot_v``, ``u_dot_v``)
and ``gspmm`` (``copy_e_sum``, ``u_mul_e_sum``), which never materialise the ``(E, H, C)`` message tensor.

DGL on PyPI stops at 2.1.0 (torch <= 2.2.1, numpy < 2): this module imports it lazily and
:func:`dgl_available` says whether it works here.
"""

from __future__ import annotations

import functools
import os

from torch import Tensor

from gnn.backends.base import Backend, GraphOps, check_edges


@functools.lru_cache(maxsize=1)
def _import_dgl():
    os.environ.setdefault("DGLBACKEND", "pytorch")
    import dgl  # noqa: F401  (raises when its torch / numpy do not match)
    import dgl.ops  # noqa: F401

    return dgl


def dgl_available() -> bool:
    """True when ``import dgl`` works in this environment (any failure counts as unavailable)."""
    try:
        _import_dgl()
    except Exception:  # DGL raises FileNotFoundError / OSError / ImportError on a torch mismatch
        return False
    return True


class DGLGraph(GraphOps):
    """DGL's kernels write into dense buffers: every input is made contiguous first (a no-op when it is)."""

    backend_name = "dgl"

    def __init__(self, src: Tensor, dst: Tensor, num_nodes: int):
        super().__init__(src, dst, num_nodes)
        dgl = _import_dgl()
        self._dgl = dgl
        # edge ids follow the order of (src, dst), so per-edge tensors line up with the PyG backend
        self.g = dgl.graph((src, dst), num_nodes=self.num_nodes, device=src.device)

    def u_add_v(self, xs: Tensor, xd: Tensor) -> Tensor:
        return self._dgl.ops.u_add_v(self.g, xs.contiguous(), xd.contiguous())

    def e_dot_v(self, e: Tensor, x: Tensor) -> Tensor:
        return self._dgl.ops.e_dot_v(self.g, e.contiguous(), x.contiguous()).squeeze(-1)

    def u_dot_v(self, xs: Tensor, xd: Tensor) -> Tensor:
        return self._dgl.ops.u_dot_v(self.g, xs.contiguous(), xd.contiguous()).squeeze(-1)

    def edge_softmax(self, score: Tensor) -> Tensor:
        return self._dgl.ops.edge_softmax(self.g, score.contiguous())

    def aggregate(self, msg: Tensor) -> Tensor:
        return self._dgl.ops.copy_e_sum(self.g, msg.contiguous())

    def u_mul_e_sum(self, x: Tensor, a: Tensor) -> Tensor:
        return self._dgl.ops.u_mul_e_sum(self.g, x.contiguous(), a.unsqueeze(-1).contiguous())


class DGLBackend(Backend):
    """DGL backend; constructing it fails with a clear ImportError when DGL does not import."""

    name = "dgl"

    def __init__(self) -> None:
        try:
            _import_dgl()
        except Exception as err:
            raise ImportError(
                "backend='dgl' needs dgl, which on PyPI exists only for torch<=2.2.1 and numpy<2; "
                "build that environment with .ci/dgl_env.sh (import failed: "
                f"{type(err).__name__}: {err})"
            ) from err

    def graph(self, src: Tensor, dst: Tensor, num_nodes: int) -> DGLGraph:
        check_edges(src, dst)
        return DGLGraph(src, dst, num_nodes)
