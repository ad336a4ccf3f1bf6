"""kgbuild: build gene-gene knowledge graphs (STRING, GO, Reactome, screen embeddings, user edge lists)
and write them as multigraph files (one node vocabulary, many typed edge layers)."""

from kgbuild._version import __version__
from kgbuild.graph import GraphError, GraphFileError, MultiGraph, load_graph

__all__ = ["__version__", "MultiGraph", "GraphError", "GraphFileError", "load_graph"]
