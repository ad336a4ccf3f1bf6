"""Export a multigraph to formats other tools read: a TSV edge list or GraphML (Cytoscape, Gephi, networkx).

Both writers are atomic: the output is written to a temporary file beside it and renamed into place, so a
failure never leaves a half-written file.

* TSV: header ``source<TAB>target<TAB>weight<TAB>layer``, one row per edge in the graph's canonical order
  (layer, target, source); weights printed as the shortest decimal that reads back as the same float32.
* GraphML: a directed multigraph; nodes are gene symbols; each edge has ``weight`` (double) and ``layer``
  (string), its key is the layer name; the graph attribute ``meta`` holds the provenance JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO

import numpy as np

from kgbuild.atomic import atomic_write
from kgbuild.graph import MultiGraph

FORMATS = ("tsv", "graphml")


def export_tsv(graph: MultiGraph, path: str | os.PathLike) -> Path:
    """Write ``graph`` as a TSV edge list (see the module docstring)."""
    names = graph.nodes
    layers = graph.layers

    def write(fh: IO[bytes]) -> None:
        fh.write(b"source\ttarget\tweight\tlayer\n")
        chunk = 1 << 18
        for i in range(0, graph.num_edges, chunk):
            sl = slice(i, i + chunk)
            src = names[graph.edge_index[0, sl]]
            dst = names[graph.edge_index[1, sl]]
            w = graph.edge_weight[sl].astype(str)  # shortest text that reads back as the same float32
            lay = layers[graph.edge_layer[sl].astype(np.int64)]
            rows = ["\t".join(r) for r in zip(src.tolist(), dst.tolist(), w.tolist(), lay.tolist())]
            fh.write(("\n".join(rows) + "\n").encode("utf-8"))

    return atomic_write(path, write)


def export_graphml(graph: MultiGraph, path: str | os.PathLike) -> Path:
    """Write ``graph`` as GraphML via networkx (see the module docstring)."""
    import networkx as nx

    g = graph.to_networkx()
    g.graph["meta"] = json.dumps(graph.meta, sort_keys=True)
    return atomic_write(path, lambda fh: nx.write_graphml(g, fh))


def export_graph(graph: MultiGraph, path: str | os.PathLike, fmt: str) -> Path:
    """Write ``graph`` to ``path`` in ``fmt`` (``tsv`` or ``graphml``)."""
    if fmt == "tsv":
        return export_tsv(graph, path)
    if fmt == "graphml":
        return export_graphml(graph, path)
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
