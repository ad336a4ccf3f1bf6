"""Edge filters shared by every graph builder (STRING, GO, Reactome, screens, user edge lists).

Each public filter takes an :class:`~kgbuild.edge_table.EdgeTable` and returns a new one. They all run on
integer codes into the table's *sorted* node vocabulary, so "ties broken by name" is "ties broken by
code", and the work is vectorised numpy (sorts, no per-edge Python). Parsers that already hold codes (the
STRING parser on ~14 M rows) call :func:`filter_codes` directly, without building string arrays first.

The order used by :func:`apply_filters` (and every builder) is::

    drop self-loops -> min weight -> dedupe -> symmetrize (optional) -> top pct (optional)
    -> max in-degree (optional)

``dedupe`` merges repeated ``(source, target)`` rows of the input (``how``: max, min, sum, mean, first or
error); ``symmetrize`` then adds each edge's reverse, and where both directions were given with different
weights keeps the larger one for both.

Symmetric sources are expanded to both directions *before* the in-degree cap, as the design asks.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kgbuild.edge_table import EdgeTable
from kgbuild.errors import KgbuildInputError

DEDUPE_MODES = ("max", "min", "first", "sum", "mean", "error")


# ---------------------------------------------------------------------- masks and reductions on codes
def self_loop_mask(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``True`` for edges that are not self-loops (``src != dst``). Shapes ``(E,)``."""
    return np.asarray(src) != np.asarray(dst)


def min_weight_mask(weights: np.ndarray, threshold: float, strict: bool = False) -> np.ndarray:
    """``True`` where ``weight >= threshold`` (or ``weight > threshold`` when ``strict``)."""
    w = np.asarray(weights)
    return w > threshold if strict else w >= threshold


def max_in_degree_mask(src: np.ndarray, dst: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """``True`` for the ``k`` heaviest incoming edges of every target.

    Edges are ranked per target by weight, descending; equal weights by source code, ascending (with a
    sorted vocabulary: by source name). ``src``, ``dst``: int ``(E,)``; returns bool ``(E,)``.
    ``k <= 0`` keeps everything.
    """
    src, dst, weights = np.asarray(src), np.asarray(dst), np.asarray(weights)
    n = len(weights)
    if k <= 0 or n == 0:
        return np.ones(n, dtype=bool)
    order = np.lexsort((src, -weights, dst))
    d = dst[order]
    starts = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
    group_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    rank = np.arange(n) - group_start
    keep = np.zeros(n, dtype=bool)
    keep[order[rank < k]] = True
    return keep


def top_pct_count(n_edges: int, pct: float) -> int:
    """How many edges the top ``pct`` percent of ``n_edges`` is: ``ceil(n_edges * pct / 100)``."""
    return min(n_edges, int(math.ceil(n_edges * pct / 100.0 - 1e-9)))


def top_pct_mask(src: np.ndarray, dst: np.ndarray, weights: np.ndarray, pct: float) -> np.ndarray:
    """``True`` for the global top ``pct`` percent of edges by ``|weight|`` (see :func:`top_pct_count`).

    Ties are broken by the unordered pair ``(min(src, dst), max(src, dst))`` and then by ``src``, all
    ascending: deterministic, and an edge and its reverse (same weight) sit next to each other in the
    ranking, so a symmetric table loses at most one half-pair at the cut-off.
    """
    src, dst, weights = np.asarray(src), np.asarray(dst), np.asarray(weights)
    n = len(weights)
    n_keep = top_pct_count(n, pct)
    keep = np.zeros(n, dtype=bool)
    if n_keep == 0:
        return keep
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    order = np.lexsort((src, hi, lo, -np.abs(weights)))
    keep[order[:n_keep]] = True
    return keep


def top_pairs_index(rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, k: int, n: int) -> np.ndarray:
    """Positions of the ``k`` heaviest unordered pairs ``(rows[i] < cols[i])``, heaviest first; equal weights
    in ``(row, col)`` order (codes into a sorted vocabulary of ``n`` names, so: by gene names).

    The screen builder's top-% cut (``k`` = :func:`top_pct_count` of all ``n (n - 1) / 2`` pairs), applied
    to the candidate pairs of the search (:func:`kgbuild.sources.screen.abs_cosine_candidates`).
    """
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    pair_key = rows * int(n) + cols  # (row, col) order as one integer key
    return np.lexsort((pair_key, -np.asarray(weights)))[: int(k)]


def dedupe_codes(
    src: np.ndarray, dst: np.ndarray, weights: np.ndarray, how: str = "max",
    vocab: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """One edge per ``(src, dst)``: returns ``(src, dst, weights, n_removed)`` sorted by ``(dst, src)``.

    ``how``: ``max`` / ``min`` / ``sum`` / ``mean`` of the duplicates' weights, ``first`` (the earliest
    row), or ``error`` (raise :class:`KgbuildInputError` naming the first duplicated pair, by name when
    ``vocab`` is given).
    """
    if how not in DEDUPE_MODES:
        raise ValueError(f"dedupe mode must be one of {DEDUPE_MODES}, got {how!r}")
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    n = len(weights)
    if n == 0:
        return src, dst, weights, 0
    width = int(max(src.max(), dst.max())) + 1
    key = dst * width + src
    if how in ("max", "min"):
        order = np.lexsort((-weights if how == "max" else weights, key))
    else:
        order = np.argsort(key, kind="stable")
    k = key[order]
    first = np.r_[True, k[1:] != k[:-1]]
    n_removed = int(n - first.sum())
    if n_removed and how == "error":
        i = order[int(np.flatnonzero(~first)[0])]
        s, t = (vocab[src[i]], vocab[dst[i]]) if vocab is not None else (int(src[i]), int(dst[i]))
        raise KgbuildInputError(
            f"edge {s} -> {t} appears more than once ({n_removed} duplicated edge(s) in all); "
            "choose how to merge duplicates (e.g. keep the max weight)"
        )
    idx = order[first]
    w = weights[idx]
    if how in ("sum", "mean") and n_removed:
        starts = np.flatnonzero(first)
        w = np.add.reduceat(weights[order], starts)
        if how == "mean":
            w = w / np.diff(np.r_[starts, n])
    return src[idx], dst[idx], w, n_removed


# ---------------------------------------------------------------------- the pipeline on codes
def filter_codes(
    vocab: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    weights: np.ndarray,
    *,
    drop_self_loops: bool = True,
    min_weight: float | None = None,
    min_weight_strict: bool = False,
    symmetric: bool = False,
    dedupe: str = "max",
    top_pct: float | None = None,
    max_in_degree: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Run the filter pipeline (module docstring) on codes into the sorted ``vocab``.

    Returns ``(src, dst, weights, record)``; ``record`` holds every parameter and how many edges each
    step removed (or added, for ``symmetrize``), for the layer's provenance.
    """
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    record: dict[str, Any] = {
        "drop_self_loops": bool(drop_self_loops),
        "min_weight": None if min_weight is None else float(min_weight),
        "min_weight_strict": bool(min_weight_strict),
        "symmetrize": bool(symmetric),
        "dedupe": dedupe,
        "top_pct": None if top_pct is None else float(top_pct),
        "max_in_degree": None if not max_in_degree else int(max_in_degree),
        "edges_in": int(len(weights)),
    }
    counts: dict[str, int] = {}

    def keep(mask: np.ndarray, name: str) -> None:
        nonlocal src, dst, weights
        counts[name] = int(len(mask) - mask.sum())
        if counts[name]:
            src, dst, weights = src[mask], dst[mask], weights[mask]

    if drop_self_loops:
        keep(self_loop_mask(src, dst), "self_loops_removed")
    if min_weight is not None:
        keep(min_weight_mask(weights, min_weight, min_weight_strict), "below_min_weight_removed")
    src, dst, weights, counts["duplicates_removed"] = dedupe_codes(src, dst, weights, dedupe, vocab)
    if symmetric:
        n0 = len(weights)
        src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
        weights = np.concatenate([weights, weights])
        src, dst, weights, _ = dedupe_codes(src, dst, weights, "max")
        counts["symmetrize_added"] = int(len(weights) - n0)
    if top_pct is not None:
        keep(top_pct_mask(src, dst, weights, top_pct), "top_pct_removed")
    if max_in_degree:
        keep(max_in_degree_mask(src, dst, weights, max_in_degree), "max_in_degree_removed")
    record.update(counts)
    record["edges_out"] = int(len(weights))
    return src, dst, weights, record


# ---------------------------------------------------------------------- filters on edge tables
def drop_self_loops(t: EdgeTable) -> EdgeTable:
    """Remove edges whose source and target are the same gene."""
    return t.select(t.sources != t.targets)


def min_weight(t: EdgeTable, w: float, strict: bool = False) -> EdgeTable:
    """Keep edges with ``weight >= w`` (``weight > w`` when ``strict``)."""
    return t.select(min_weight_mask(t.weights, w, strict))


def symmetrize(t: EdgeTable) -> EdgeTable:
    """Both directions of every edge: ``(a, b, w)`` adds ``(b, a, w)``; duplicates keep the max weight.

    Use for symmetric sources given one row per pair. Output sorted by ``(target, source)``.
    """
    vocab, s, d = t.codes()
    s, d = np.concatenate([s, d]), np.concatenate([d, s])
    s, d, w, _ = dedupe_codes(s, d, np.concatenate([t.weights, t.weights]), "max")
    return EdgeTable.from_codes(vocab, s, d, w)


def dedupe(t: EdgeTable, how: str = "max") -> EdgeTable:
    """One edge per ``(source, target)``; ``how`` merges the duplicates' weights (see :func:`dedupe_codes`)."""
    vocab, s, d = t.codes()
    s, d, w, _ = dedupe_codes(s, d, t.weights, how, vocab)
    return EdgeTable.from_codes(vocab, s, d, w)


def top_pct(t: EdgeTable, pct: float) -> EdgeTable:
    """Keep the global top ``pct`` percent of edges by ``|weight|`` (``ceil(E * pct / 100)`` edges);
    ties broken by gene names (see :func:`top_pct_mask`)."""
    if not 0 <= pct <= 100:
        raise ValueError(f"pct must be within 0-100, got {pct}")
    _, s, d = t.codes()
    return t.select(top_pct_mask(s, d, t.weights, pct))


def max_in_degree(t: EdgeTable, k: int) -> EdgeTable:
    """Per target keep the ``k`` heaviest incoming edges; equal weights are broken by source name,
    ascending (alphabetically first source wins). ``k <= 0`` keeps everything."""
    _, s, d = t.codes()
    return t.select(max_in_degree_mask(s, d, t.weights, k))


def apply_filters(t: EdgeTable, **params: Any) -> tuple[EdgeTable, dict[str, Any]]:
    """Run the whole pipeline on a table; ``params`` are those of :func:`filter_codes`.

    Returns the filtered table and the provenance record (every parameter plus per-step counts).
    """
    vocab, s, d = t.codes()
    s, d, w, record = filter_codes(vocab, s, d, t.weights, **params)
    return EdgeTable.from_codes(vocab, s, d, w), record
