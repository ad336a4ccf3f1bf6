"""The edge table: what every source parser produces and every filter consumes.

An :class:`EdgeTable` with ``E`` edges is three aligned 1-D arrays:

=========== ============== =======================================================
array       dtype, shape   meaning
=========== ============== =======================================================
``sources`` unicode (E,)   source gene symbol (messages flow source -> target)
``targets`` unicode (E,)   target gene symbol
``weights`` float64 (E,)   edge weight (score/1000, Jaccard, abs cosine, user weight)
=========== ============== =======================================================

The table is a plain intermediate: it may hold duplicates, self-loops or one orientation only; the
functions in :mod:`kgbuild.filters` clean it up, and :meth:`EdgeTable.to_graph` turns it into a one-layer
:class:`~kgbuild.graph.MultiGraph` (which requires each ``(source, target)`` at most once).

Large parsers work on integer codes into a sorted vocabulary and build the table at the end with
:meth:`EdgeTable.from_codes`; :meth:`EdgeTable.codes` goes the other way. Because the vocabulary is
sorted, comparing codes is comparing names, which is how filters break ties deterministically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from kgbuild.graph import GraphError, MultiGraph


@dataclass(frozen=True, eq=False)
class EdgeTable:
    """Aligned ``sources`` / ``targets`` (unicode, ``(E,)``) and ``weights`` (float64, ``(E,)``)."""

    sources: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    #: ``(vocab, src, dst)`` when built from codes (:meth:`from_codes`): :meth:`codes` returns them as they are
    _codes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        src = _str_array(self.sources, "sources")
        dst = _str_array(self.targets, "targets")
        w = np.asarray(self.weights, dtype=np.float64)
        if w.ndim != 1 or not (src.shape == dst.shape == w.shape):
            raise GraphError(
                f"sources, targets and weights must be 1-D of one length, got {src.shape}, {dst.shape}, {w.shape}"
            )
        object.__setattr__(self, "sources", src)
        object.__setattr__(self, "targets", dst)
        object.__setattr__(self, "weights", w)

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls) -> "EdgeTable":
        """A table with no edges."""
        return cls(np.zeros(0, dtype="<U1"), np.zeros(0, dtype="<U1"), np.zeros(0, dtype=np.float64))

    @classmethod
    def from_codes(
        cls, vocab: np.ndarray, src: np.ndarray, dst: np.ndarray, weights: np.ndarray
    ) -> "EdgeTable":
        """A table from integer codes into ``vocab`` (unicode ``(N,)``): ``sources = vocab[src]`` etc."""
        vocab = np.asarray(vocab, dtype=str)
        if len(vocab) == 0:
            return cls.empty()
        src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
        return cls(vocab[src], vocab[dst], weights, (vocab, src, dst))

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str, float]]) -> "EdgeTable":
        """A table from ``(source, target, weight)`` triples (convenient for small, hand-made tables)."""
        rows = list(pairs)
        if not rows:
            return cls.empty()
        s, t, w = zip(*rows)
        return cls(np.asarray(s, dtype=str), np.asarray(t, dtype=str), np.asarray(w, dtype=np.float64))

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return int(len(self.weights))

    @property
    def num_edges(self) -> int:
        return len(self)

    def codes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(vocab, src, dst)``: the sorted unique endpoint names (unicode ``(N,)``) and each edge's
        source and target as int64 positions in it (``(E,)`` each). A table made by :meth:`from_codes`
        returns the codes it was made from (its sorted vocabulary may then hold names without edges)."""
        if self._codes is not None:
            return self._codes
        if len(self) == 0:
            return np.zeros(0, dtype="<U1"), np.zeros(0, np.int64), np.zeros(0, np.int64)
        vocab, inverse = np.unique(np.concatenate([self.sources, self.targets]), return_inverse=True)
        inverse = inverse.astype(np.int64).ravel()
        return vocab, inverse[: len(self)], inverse[len(self):]

    def select(self, mask_or_index: np.ndarray) -> "EdgeTable":
        """The edges picked by a boolean mask or an index array, in that order."""
        return EdgeTable(self.sources[mask_or_index], self.targets[mask_or_index], self.weights[mask_or_index])

    def nodes(self) -> np.ndarray:
        """Sorted unique endpoint names."""
        return np.unique(np.concatenate([self.sources, self.targets])) if len(self) else np.zeros(0, dtype="<U1")

    def to_graph(
        self, layer: str, layer_meta: Mapping[str, Any] | None = None, nodes: Sequence[str] | None = None
    ) -> MultiGraph:
        """A one-layer :class:`MultiGraph` named ``layer`` with provenance ``layer_meta``.

        ``nodes`` adds genes without edges to the vocabulary. Duplicate ``(source, target)`` pairs are an
        error here: run :func:`kgbuild.filters.dedupe` first.
        """
        return MultiGraph.from_edges(layer, self.sources, self.targets, self.weights, layer_meta, nodes=nodes)

    def __repr__(self) -> str:
        return f"EdgeTable({len(self)} edges)"


def _str_array(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise GraphError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype="<U1")
    if arr.dtype.kind == "U":
        return arr
    if arr.dtype.kind == "O" and all(isinstance(v, str) for v in arr.tolist()):
        return arr.astype(str)
    raise GraphError(f"{name} must hold strings (gene symbols), got dtype {arr.dtype}")
