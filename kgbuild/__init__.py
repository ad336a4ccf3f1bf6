"""kgbuild: build gene-gene knowledge graphs (STRING, GO, Reactome, screen embeddings, user edge lists)
and write them as multigraph files (one node vocabulary, many typed edge layers).

From Python (:mod:`kgbuild.api`; the ``kgbuild`` command line is a thin layer over these)::

    import kgbuild
    g = kgbuild.merge(kgbuild.string(min_score=700), kgbuild.go(), output="multi.kg.npz")

The builders (``string``, ``go``, ``reactome``, ``screen``, ``edges``, ``merge``) are loaded on first use,
so ``import kgbuild`` stays as light as reading a graph file needs.
"""

from typing import Any

from kgbuild._version import __version__
from kgbuild.graph import GraphError, GraphFileError, MultiGraph, load_graph

_API = ("string", "go", "reactome", "screen", "edges", "merge")

__all__ = ["__version__", "MultiGraph", "GraphError", "GraphFileError", "load_graph", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from kgbuild import api

        return getattr(api, name)
    raise AttributeError(f"module 'kgbuild' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
