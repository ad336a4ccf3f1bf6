"""The multigraph file: one node vocabulary, many typed, weighted edge layers.

This is the contract between ``kgbuild`` (which writes graphs) and ``gnn`` / ``txpert_head`` (which read
them). A graph with ``N`` nodes, ``E`` edges and ``L`` layers is six arrays:

=============== ============== =====================================================================
array           dtype, shape   meaning
=============== ============== =====================================================================
``nodes``       unicode (N,)   node vocabulary (HGNC gene symbols), unique, non-empty strings
``edge_index``  int64 (2, E)   row 0 source, row 1 target; messages flow source -> target
``edge_weight`` float32 (E,)   finite, non-negative weight (score/1000, Jaccard, abs cosine, ...)
``edge_layer``  int16 (E,)     index into ``layers``
``layers``      unicode (L,)   layer names, unique (``string``, ``go``, ``reactome``, ``depmap``, ...)
``meta``        unicode (1,)   JSON provenance (see below)
=============== ============== =====================================================================

Edges are kept in one canonical order, sorted by ``(layer, target, source)``: the incoming edges of a
node in a layer are contiguous, and the same inputs always give byte-identical arrays. An edge
``(source, target)`` appears at most once per layer.

``meta`` is a JSON object ``{"format", "format_version", "tool_version", "created", "layers": {name:
{...}}}`` where each layer entry records its source, version, input files with sha256 and every filter
parameter. The file is an ``.npz`` read with ``allow_pickle=False``: no torch and no pickle needed.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np

from kgbuild._version import __version__
from kgbuild.atomic import atomic_write

if TYPE_CHECKING:  # pragma: no cover
    import networkx
    import torch_geometric.data

log = logging.getLogger(__name__)

FORMAT_NAME = "txpert-kg multigraph"
FORMAT_VERSION = 1
SUFFIX = ".kg.npz"
ARRAYS = ("nodes", "edge_index", "edge_weight", "edge_layer", "layers", "meta")


class GraphFileError(ValueError):
    """A multigraph file that cannot be read: names the file and what is wrong with it."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class GraphError(ValueError):
    """Arrays that do not form a valid multigraph (wrong shape, dtype, range or duplicates)."""


def utc_now() -> str:
    """Creation time for provenance, ISO 8601 in UTC; honours ``SOURCE_DATE_EPOCH`` for reproducible builds."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch else datetime.now(timezone.utc)
    return when.replace(microsecond=0).isoformat()


def new_meta(layers: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """A fresh provenance record with the given per-layer entries."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "tool_version": __version__,
        "created": utc_now(),
        "layers": {name: dict(entry) for name, entry in (layers or {}).items()},
    }


@dataclass(frozen=True, eq=False)
class MultiGraph:
    """Nodes, typed weighted directed edges and provenance; see the module docstring for the arrays.

    Construct with :meth:`from_edges` (names) or directly from arrays; the constructor validates and
    puts edges into canonical order. Instances are immutable: every operation returns a new graph.
    """

    nodes: np.ndarray
    edge_index: np.ndarray
    edge_weight: np.ndarray
    edge_layer: np.ndarray
    layers: np.ndarray
    meta: dict[str, Any] = field(default_factory=new_meta)

    def __post_init__(self) -> None:
        nodes = _as_str_array(self.nodes, "nodes")
        layers = _as_str_array(self.layers, "layers")
        try:
            edge_index = np.asarray(self.edge_index)
            edge_weight = np.asarray(self.edge_weight)
            edge_layer = np.asarray(self.edge_layer)
        except (TypeError, ValueError) as err:
            raise GraphError(f"edge arrays are not numeric arrays: {err}") from None
        if edge_index.ndim != 2 or edge_index.shape[0] != 2:
            raise GraphError(f"edge_index must have shape (2, E), got {edge_index.shape}")
        n_edges = edge_index.shape[1]
        if edge_weight.shape != (n_edges,):
            raise GraphError(f"edge_weight must have shape ({n_edges},), got {edge_weight.shape}")
        if edge_layer.shape != (n_edges,):
            raise GraphError(f"edge_layer must have shape ({n_edges},), got {edge_layer.shape}")
        for name, arr in (("edge_index", edge_index), ("edge_layer", edge_layer)):
            if n_edges and not np.issubdtype(arr.dtype, np.integer):
                raise GraphError(f"{name} must hold integers, got dtype {arr.dtype}")
        if n_edges and not (np.issubdtype(edge_weight.dtype, np.floating) or np.issubdtype(edge_weight.dtype, np.integer)):
            raise GraphError(f"edge_weight must hold numbers, got dtype {edge_weight.dtype}")
        if len(np.unique(nodes)) != len(nodes):
            dup = _first_duplicate(nodes)
            raise GraphError(f"node names must be unique; {dup!r} appears more than once")
        if len(np.unique(layers)) != len(layers):
            raise GraphError(f"layer names must be unique; {_first_duplicate(layers)!r} appears more than once")
        if any(len(s) == 0 for s in nodes.tolist()) or any(len(s) == 0 for s in layers.tolist()):
            raise GraphError("node and layer names must be non-empty strings")
        if len(layers) > np.iinfo(np.int16).max:
            raise GraphError(f"at most {np.iinfo(np.int16).max} layers are supported, got {len(layers)}")
        if n_edges:
            lo, hi = int(edge_index.min()), int(edge_index.max())
            if lo < 0 or hi >= len(nodes):
                raise GraphError(f"edge_index refers to node {lo if lo < 0 else hi}, but there are {len(nodes)} nodes")
            llo, lhi = int(edge_layer.min()), int(edge_layer.max())
            if llo < 0 or lhi >= len(layers):
                raise GraphError(f"edge_layer refers to layer {llo if llo < 0 else lhi}, but there are {len(layers)} layers")
            finite = np.isfinite(edge_weight)
            if not finite.all():
                i = int(np.flatnonzero(~finite)[0])
                edge = _edge_name(nodes, layers, edge_index, edge_layer, i)
                raise GraphError(f"edge_weight holds NaN or infinite values: {edge} has weight "
                                 f"{float(edge_weight[i])} ({int((~finite).sum())} such weight(s) in all)")
            if float(edge_weight.min()) < 0:
                raise GraphError(f"edge_weight must be non-negative, found {float(edge_weight.min())}")
            # stored as float32: a larger weight would become inf and the file could not be read back
            too_big = np.abs(edge_weight) > np.finfo(np.float32).max
            if too_big.any():
                i = int(np.flatnonzero(too_big)[0])
                raise GraphError(
                    f"{_edge_name(nodes, layers, edge_index, edge_layer, i)} has weight {float(edge_weight[i]):g}, "
                    f"which does not fit in float32 (max {float(np.finfo(np.float32).max):.4g}; {int(too_big.sum())} "
                    "such weight(s) in all): scale the weights down"
                )
        edge_index = edge_index.astype(np.int64, copy=False)
        edge_layer = edge_layer.astype(np.int16, copy=False)
        edge_weight = edge_weight.astype(np.float32, copy=False)
        order = np.lexsort((edge_index[0], edge_index[1], edge_layer))
        if n_edges and not np.array_equal(order, np.arange(n_edges)):
            edge_index, edge_weight, edge_layer = edge_index[:, order], edge_weight[order], edge_layer[order]
        if n_edges > 1:
            same = (
                (edge_layer[1:] == edge_layer[:-1])
                & (edge_index[0, 1:] == edge_index[0, :-1])
                & (edge_index[1, 1:] == edge_index[1, :-1])
            )
            if same.any():
                i = int(np.flatnonzero(same)[0])
                raise GraphError(
                    f"edge {nodes[edge_index[0, i]]} -> {nodes[edge_index[1, i]]} appears more than once "
                    f"in layer {layers[edge_layer[i]]!r}"
                )
        meta = dict(self.meta) if self.meta is not None else new_meta()
        meta.setdefault("layers", {})
        if not isinstance(meta["layers"], dict):
            raise GraphError("meta['layers'] must be a mapping from layer name to provenance")
        meta["layers"] = {name: dict(meta["layers"].get(name, {})) for name in layers.tolist()}
        for name, arr in (("nodes", nodes), ("layers", layers), ("edge_index", edge_index),
                          ("edge_weight", edge_weight), ("edge_layer", edge_layer)):
            arr = np.array(arr, copy=True) if not arr.flags.owndata else arr
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "meta", meta)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_edges(
        cls,
        layer: str,
        sources: Sequence[str],
        targets: Sequence[str],
        weights: Sequence[float] | np.ndarray,
        layer_meta: Mapping[str, Any] | None = None,
        nodes: Iterable[str] | None = None,
    ) -> "MultiGraph":
        """A one-layer graph from edges named by gene symbols.

        ``nodes`` adds genes that may have no edge; the vocabulary is the sorted union of ``nodes`` and
        every endpoint, so the same edges always give the same arrays.
        """
        sources = np.asarray(sources, dtype=str)
        targets = np.asarray(targets, dtype=str)
        weights = np.asarray(weights, dtype=np.float64)
        if not (sources.shape == targets.shape == weights.shape) or sources.ndim != 1:
            raise GraphError(
                f"sources, targets and weights must be 1-D of one length, got {sources.shape}, "
                f"{targets.shape}, {weights.shape}"
            )
        extra = np.asarray(list(nodes) if nodes is not None else [], dtype=str)
        vocab = np.unique(np.concatenate([sources, targets, extra]))
        edge_index = np.stack([np.searchsorted(vocab, sources), np.searchsorted(vocab, targets)]).astype(np.int64)
        return cls(
            nodes=vocab,
            edge_index=edge_index.reshape(2, -1),
            edge_weight=weights,
            edge_layer=np.zeros(len(weights), dtype=np.int16),
            layers=np.asarray([layer]),
            meta=new_meta({layer: dict(layer_meta or {})}),
        )

    # ------------------------------------------------------------------ basic properties
    @property
    def num_nodes(self) -> int:
        return int(len(self.nodes))

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    @property
    def layer_names(self) -> list[str]:
        return self.layers.tolist()

    def node_ids(self, genes: Iterable[str]) -> np.ndarray:
        """Positions of ``genes`` in the vocabulary; ``-1`` for genes not in the graph."""
        lookup = self.node_lookup
        return np.asarray([lookup.get(g, -1) for g in genes], dtype=np.int64)

    @property
    def node_lookup(self) -> dict[str, int]:
        """Gene symbol -> node position."""
        cached = self.__dict__.get("_lookup")
        if cached is None:
            cached = {g: i for i, g in enumerate(self.nodes.tolist())}
            object.__setattr__(self, "_lookup", cached)
        return cached

    def in_degree(self, layer: str | None = None) -> np.ndarray:
        """Number of incoming edges per node, in one layer or over all layers. Shape ``(N,)``."""
        dst = self.edge_index[1] if layer is None else self.edge_index[1, self.edge_layer == self._layer_id(layer)]
        return np.bincount(dst, minlength=self.num_nodes)

    def layer_in_degree(self, layer: str) -> np.ndarray:
        """In-degree within ``layer`` of each node that has an edge of that layer (either direction), in node
        order: ``deg_l(v) = |{(u, v) in E_l}|`` for ``v`` touched by ``E_l``. Shape ``(nodes with edges,)``."""
        mask = self.edge_layer == self._layer_id(layer)
        deg = np.bincount(self.edge_index[1, mask], minlength=self.num_nodes)
        return deg[np.union1d(self.edge_index[0, mask], self.edge_index[1, mask])]

    def _layer_id(self, name: str) -> int:
        names = self.layer_names
        if name not in names:
            raise KeyError(f"no layer {name!r}; this graph has layers {names}")
        return names.index(name)

    def __repr__(self) -> str:
        per = ", ".join(f"{n}: {int(c)}" for n, c in zip(self.layer_names, self._edges_per_layer()))
        return f"MultiGraph({self.num_nodes} nodes, {self.num_edges} edges; {per})"

    def _edges_per_layer(self) -> np.ndarray:
        return np.bincount(self.edge_layer.astype(np.int64), minlength=len(self.layers))

    def equals(self, other: "MultiGraph", check_meta: bool = False) -> bool:
        """True when every array is identical (and, optionally, the provenance too)."""
        same = all(np.array_equal(getattr(self, a), getattr(other, a)) for a in ARRAYS if a != "meta")
        same = same and all(getattr(self, a).dtype == getattr(other, a).dtype for a in ("edge_index", "edge_weight", "edge_layer"))
        return same and (not check_meta or self.meta == other.meta)

    # ------------------------------------------------------------------ file I/O
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The six arrays exactly as stored on disk."""
        return {
            "nodes": np.asarray(self.nodes, dtype=str),
            "edge_index": self.edge_index,
            "edge_weight": self.edge_weight,
            "edge_layer": self.edge_layer,
            "layers": np.asarray(self.layers, dtype=str),
            "meta": np.asarray([json.dumps(self.meta, sort_keys=True)]),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` atomically (temporary file in the same folder, then rename); returns the path.

        A failure at any point leaves no file at ``path`` and no temporary file behind.
        """
        path = atomic_write(path, lambda fh: np.savez_compressed(fh, **self.to_arrays()))
        log.info("wrote %s (%d nodes, %d edges, %d layers)", path, self.num_nodes, self.num_edges, len(self.layers))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MultiGraph":
        """Read a multigraph file; any damage raises :class:`GraphFileError` naming the file and the problem."""
        path = Path(path)
        if not path.exists():
            raise GraphFileError(path, "no such file")
        if path.is_dir():
            raise GraphFileError(path, "is a folder, not a multigraph file")
        if not zipfile.is_zipfile(path):
            raise GraphFileError(path, "not a multigraph file (not an .npz archive)")
        try:
            with np.load(path, allow_pickle=False) as npz:
                missing = [a for a in ARRAYS if a not in npz.files]
                if missing:
                    raise GraphFileError(path, f"not a multigraph file: missing array(s) {', '.join(missing)}")
                arrays = {a: npz[a] for a in ARRAYS}
        except GraphFileError:
            raise
        except Exception as err:  # zip, CRC, header or pickle errors from numpy / zipfile internals
            raise GraphFileError(path, f"damaged file ({type(err).__name__}: {err})") from None
        meta_arr = arrays["meta"]
        if meta_arr.shape != (1,) or meta_arr.dtype.kind != "U":
            raise GraphFileError(path, f"'meta' must be one unicode string, got dtype {meta_arr.dtype} shape {meta_arr.shape}")
        try:
            meta = json.loads(str(meta_arr[0]))
        except json.JSONDecodeError as err:
            raise GraphFileError(path, f"'meta' is not valid JSON ({err})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise GraphFileError(path, f"not a multigraph file: meta.format is not {FORMAT_NAME!r}")
        version = meta.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise GraphFileError(path, f"format version {version!r} is newer than this kgbuild ({FORMAT_VERSION}); upgrade txpert-kg")
        for name in ("nodes", "layers"):
            if arrays[name].dtype.kind != "U" or arrays[name].ndim != 1:
                raise GraphFileError(path, f"'{name}' must be a 1-D unicode array, got dtype {arrays[name].dtype} shape {arrays[name].shape}")
        expected = {"edge_index": np.int64, "edge_weight": np.float32, "edge_layer": np.int16}
        for name, dtype in expected.items():
            if arrays[name].dtype != dtype:
                raise GraphFileError(path, f"'{name}' must be {np.dtype(dtype).name}, got {arrays[name].dtype}")
        layer_meta = meta.get("layers")
        if not isinstance(layer_meta, dict) or sorted(layer_meta) != sorted(arrays["layers"].tolist()):
            raise GraphFileError(path, "meta.layers does not list the same layers as the 'layers' array")
        try:
            graph = cls(
                nodes=arrays["nodes"],
                edge_index=arrays["edge_index"],
                edge_weight=arrays["edge_weight"],
                edge_layer=arrays["edge_layer"],
                layers=arrays["layers"],
                meta=meta,
            )
        except GraphError as err:
            raise GraphFileError(path, str(err)) from None
        return graph

    # ------------------------------------------------------------------ graph operations
    @classmethod
    def merge(cls, graphs: Sequence["MultiGraph"]) -> "MultiGraph":
        """Union the node vocabularies (sorted) and concatenate the layers, in the order given.

        Layer names must be distinct across the inputs; each layer keeps its provenance.
        """
        if not graphs:
            raise GraphError("merge needs at least one graph")
        names = [n for g in graphs for n in g.layer_names]
        if len(set(names)) != len(names):
            dup = _first_duplicate(np.asarray(names))
            raise GraphError(f"layer {dup!r} is in more than one input; give the layers distinct names before merging")
        vocab = np.unique(np.concatenate([g.nodes for g in graphs]))
        edge_index, weights, layer_ids, offset = [], [], [], 0
        for g in graphs:
            remap = np.searchsorted(vocab, g.nodes)
            edge_index.append(remap[g.edge_index])
            weights.append(g.edge_weight)
            layer_ids.append(g.edge_layer.astype(np.int64) + offset)
            offset += len(g.layers)
        meta = new_meta({n: e for g in graphs for n, e in g.meta["layers"].items()})
        meta["merged_from"] = [{"created": g.meta.get("created"), "layers": g.layer_names} for g in graphs]
        return cls(
            nodes=vocab,
            edge_index=np.concatenate(edge_index, axis=1) if edge_index else np.zeros((2, 0), np.int64),
            edge_weight=np.concatenate(weights),
            edge_layer=np.concatenate(layer_ids).astype(np.int16),
            layers=np.asarray(names),
            meta=meta,
        )

    def restrict(self, genes: Iterable[str], keep_missing: bool = False) -> "MultiGraph":
        """The subgraph induced on ``genes``, nodes in the order given (duplicates dropped).

        With ``keep_missing`` genes absent from the graph become isolated nodes; otherwise they are
        left out. Every layer is kept, even if it loses all its edges.
        """
        genes = list(dict.fromkeys(genes))
        ids = self.node_ids(genes)
        keep = ids >= 0
        if not keep_missing:
            genes = [g for g, k in zip(genes, keep) if k]
            ids = ids[keep]
        new_id = np.full(self.num_nodes, -1, dtype=np.int64)
        present = ids >= 0
        new_id[ids[present]] = np.flatnonzero(present)
        mapped = new_id[self.edge_index]
        mask = (mapped[0] >= 0) & (mapped[1] >= 0)
        meta = dict(self.meta)
        meta["restricted_to"] = {"genes_requested": len(genes), "genes_in_graph": int(present.sum())}
        return MultiGraph(
            nodes=np.asarray(genes, dtype=str),
            edge_index=mapped[:, mask],
            edge_weight=self.edge_weight[mask],
            edge_layer=self.edge_layer[mask],
            layers=self.layers,
            meta=meta,
        )

    def layer(self, name: str) -> "MultiGraph":
        """One layer as a single-layer graph over the same node vocabulary."""
        lid = self._layer_id(name)
        mask = self.edge_layer == lid
        meta = dict(self.meta)
        meta["layers"] = {name: self.meta["layers"].get(name, {})}
        return MultiGraph(
            nodes=self.nodes,
            edge_index=self.edge_index[:, mask],
            edge_weight=self.edge_weight[mask],
            edge_layer=np.zeros(int(mask.sum()), dtype=np.int16),
            layers=np.asarray([name]),
            meta=meta,
        )

    # ------------------------------------------------------------------ conversions
    def to_networkx(self) -> "networkx.MultiDiGraph":
        """A ``networkx.MultiDiGraph``: nodes are gene symbols, edges carry ``weight`` and ``layer``."""
        import networkx as nx

        g = nx.MultiDiGraph()
        g.add_nodes_from(self.nodes.tolist())
        names, layer_names = self.nodes.tolist(), self.layer_names
        for (s, t), w, lid in zip(self.edge_index.T.tolist(), self.edge_weight.tolist(), self.edge_layer.tolist()):
            g.add_edge(names[s], names[t], key=layer_names[lid], weight=w, layer=layer_names[lid])
        return g

    def to_pyg(self) -> "torch_geometric.data.Data":
        """A PyTorch Geometric ``Data`` with ``edge_index`` (2, E) long, ``edge_weight`` (E,) float,
        ``edge_type`` (E,) long (the layer), ``num_nodes``, ``node_names`` and ``layer_names``."""
        import torch
        from torch_geometric.data import Data

        return Data(
            edge_index=torch.from_numpy(np.array(self.edge_index)),
            edge_weight=torch.from_numpy(np.array(self.edge_weight)),
            edge_type=torch.from_numpy(self.edge_layer.astype(np.int64)),
            num_nodes=self.num_nodes,
            node_names=self.nodes.tolist(),
            layer_names=self.layer_names,
        )

    def to_dgl(self):
        """A ``dgl.graph`` with ``edata['weight']`` (E,) float and ``edata['etype']`` (E,) long.

        DGL is imported only here; without it this raises ``ImportError`` saying how to install it.
        """
        try:
            import dgl
        except Exception as err:  # DGL raises more than ImportError when its torch does not match
            raise ImportError(
                "the DGL backend needs dgl, which on PyPI exists only for torch<=2.2.1: "
                "pip install 'txpert-kg[dgl]' in an environment with torch==2.2.1 "
                f"(import failed: {err})"
            ) from err
        import torch

        g = dgl.graph(
            (torch.from_numpy(np.array(self.edge_index[0])), torch.from_numpy(np.array(self.edge_index[1]))),
            num_nodes=self.num_nodes,
        )
        g.edata["weight"] = torch.from_numpy(np.array(self.edge_weight))
        g.edata["etype"] = torch.from_numpy(self.edge_layer.astype(np.int64))
        return g

    # ------------------------------------------------------------------ summaries
    def summary(self) -> dict[str, Any]:
        """Counts and degree statistics: overall and per layer."""
        per_layer = {}
        for lid, name in enumerate(self.layer_names):
            mask = self.edge_layer == lid
            deg = self.layer_in_degree(name)
            w = self.edge_weight[mask]
            per_layer[name] = {
                "edges": int(mask.sum()),
                "nodes_with_edges": int(len(deg)),
                "in_degree": _stats(deg),
                "weight": _stats(w),
                "source": self.meta["layers"].get(name, {}).get("source"),
            }
        return {
            "nodes": self.num_nodes,
            "edges": self.num_edges,
            "layers": per_layer,
            "isolated_nodes": int(np.sum(np.bincount(self.edge_index.ravel(), minlength=self.num_nodes) == 0)),
        }

    def format_summary(self) -> str:
        """A one-screen text summary (what ``kgbuild info`` prints)."""
        s = self.summary()
        lines = [f"{s['nodes']:,} nodes, {s['edges']:,} edges, {len(s['layers'])} layer(s), {s['isolated_nodes']:,} isolated nodes"]
        width = max([14] + [len(name) + 2 for name in s["layers"]])
        header = f"{'layer':<{width}}{'edges':>12}{'nodes':>9}  {'in-degree min/median/mean/max':<32}{'weight min/mean/max'}"
        lines.append(header)
        for name, e in s["layers"].items():
            d, w = e["in_degree"], e["weight"]
            deg = f"{d['min']:g}/{d['median']:g}/{d['mean']:.2f}/{d['max']:g}" if d["n"] else "-"
            wt = f"{w['min']:.3g}/{w['mean']:.3g}/{w['max']:.3g}" if w["n"] else "-"
            lines.append(f"{name:<{width}}{e['edges']:>12,}{e['nodes_with_edges']:>9,}  {deg:<32}{wt}")
        return "\n".join(lines)


# ---------------------------------------------------------------------- helpers
def _as_str_array(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise GraphError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "UO":
        raise GraphError(f"{name} must hold strings, got dtype {arr.dtype}")
    if arr.dtype.kind == "O":
        if not all(isinstance(v, str) for v in arr.tolist()):
            raise GraphError(f"{name} must hold strings only")
    return arr.astype(str) if arr.size else np.zeros(0, dtype="<U1")


def _edge_name(nodes: np.ndarray, layers: np.ndarray, edge_index: np.ndarray, edge_layer: np.ndarray, i: int) -> str:
    """``edge A -> B in layer 'x'`` for the error messages of the constructor (indices already checked)."""
    return (f"edge {nodes[int(edge_index[0, i])]} -> {nodes[int(edge_index[1, i])]} in layer "
            f"{str(layers[int(edge_layer[i])])!r}")


def _first_duplicate(values: np.ndarray) -> str:
    seen: set[str] = set()
    for v in values.tolist():
        if v in seen:
            return v
        seen.add(v)
    return ""


def _stats(x: np.ndarray) -> dict[str, float]:
    if len(x) == 0:
        return {"n": 0, "min": 0.0, "median": 0.0, "mean": 0.0, "max": 0.0}
    x = np.asarray(x, dtype=np.float64)
    return {"n": int(len(x)), "min": float(x.min()), "median": float(np.median(x)), "mean": float(x.mean()), "max": float(x.max())}


def load_graph(path: str | os.PathLike) -> MultiGraph:
    """Shorthand for :meth:`MultiGraph.load`."""
    return MultiGraph.load(path)
