"""gnn: the TxPert perturbation encoders (GAT, GATv2, Exphormer and multigraph variants) on DGL or PyG.

Public API: :class:`PerturbationEncoder` (see :mod:`gnn.encoder`), :data:`KINDS`, :func:`get_backend`.
"""

from gnn.backends import dgl_available, get_backend
from gnn.encoder import KINDS, PerturbationEncoder

__all__ = ["PerturbationEncoder", "KINDS", "get_backend", "dgl_available"]
