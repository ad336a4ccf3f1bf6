"""Message-passing backends: the same primitives on DGL and on PyTorch Geometric (see :mod:`gnn.backends.base`)."""

from __future__ import annotations

from gnn.backends.base import Backend, GraphOps
from gnn.backends.dgl import DGLBackend, dgl_available
from gnn.backends.pyg import PyGBackend

BACKENDS = ("auto", "dgl", "pyg")


def get_backend(name: str | Backend = "auto") -> Backend:
    """``"dgl"``, ``"pyg"`` or ``"auto"`` (DGL when it imports, else PyG); a Backend is returned as is."""
    if isinstance(name, Backend):
        return name
    if name == "auto":
        return DGLBackend() if dgl_available() else PyGBackend()
    if name == "dgl":
        return DGLBackend()
    if name == "pyg":
        return PyGBackend()
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["Backend", "GraphOps", "get_backend", "dgl_available", "DGLBackend", "PyGBackend", "BACKENDS"]
