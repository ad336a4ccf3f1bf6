"""Graph ablations: randomly rewire or drop a fraction of each layer's edges (``kgbuild perturb``).

Used to reproduce the graph-ablation experiment: train on the original and on degraded graphs and see
how much of a model's accuracy the graph's true structure is responsible for.

**Downsample** (``fraction = q``): in every selected layer keep a uniformly random subset of exactly
``round((1 - q) * E_l)`` edges. Directed edges are dropped independently, so a symmetric layer may keep
one direction of a pair.

**Rewire** (``fraction = p``), per selected layer, by degree-preserving double-edge swaps: two edges
``a -> b`` and ``c -> d`` become ``a -> d`` and ``c -> b``; each edge keeps its weight (it travels with
its source). A swap is rejected when it would create a self-loop or an edge that already exists in the
layer, or change nothing. Swaps are drawn in vectorised rounds from the edges not yet touched, until
``ceil(p * E_l)`` edges have been rewired (or the layer has no valid swaps left: the achieved fraction is
recorded). Every node keeps its in-degree and out-degree in every layer, and each layer keeps its weight
multiset, so a ``--max-in-degree`` cap still holds; what is destroyed is *which* genes are connected.
Directed swaps do not keep a symmetric layer symmetric.

Downsampling runs first, then rewiring on what is left. Randomness comes from
``SeedSequence([seed, layer_index])``: the same seed gives identical arrays; layers are independent.
Provenance: each ablated layer's entry gets an ``ablation`` record (method, fractions requested and
achieved, seed, edge counts) and the file's ``meta`` an ``ablation`` record naming the input file.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterable

import numpy as np

from kgbuild.errors import KgbuildInputError
from kgbuild.graph import MultiGraph, utc_now
from kgbuild.provenance import input_record

REWIRE_METHOD = "degree-preserving double-edge swaps (targets exchanged; weights stay with sources)"
MAX_ROUNDS = 200


def downsample_edges(n_edges: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of the ``round((1 - fraction) * n_edges)`` edges to keep; ``(K,)`` int64."""
    keep = int(round((1.0 - fraction) * n_edges))
    return np.sort(rng.choice(n_edges, size=keep, replace=False)).astype(np.int64)


def rewire_edges(src: np.ndarray, dst_in: np.ndarray, num_nodes: int, fraction: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Double-edge swaps on one layer's edges (``src``, ``dst``: int ``(E,)``).

    Returns ``(new_dst, n_rewired)``: the sources (and so the weights) stay in place and only targets
    move, so ``new_dst`` is a permutation of ``dst``. ``n_rewired`` counts the edges of the result that
    are not edges of the input.
    """
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst_in, dtype=np.int64).copy()
    n = len(src)
    target = min(n, math.ceil(fraction * n))
    touched = np.zeros(n, dtype=bool)
    n_rewired = 0
    stale_rounds = 0
    for _ in range(MAX_ROUNDS):
        if n_rewired >= target:
            break
        pool = np.flatnonzero(~touched)
        if len(pool) < 2 or stale_rounds >= 3:  # untouched edges exhausted: allow swapping touched ones
            pool = np.arange(n)
        pool = rng.permutation(pool)
        if len(pool) % 2:
            pool = pool[:-1]
        i, j = pool[0::2], pool[1::2]
        a, b, c, d = src[i], dst[i], src[j], dst[j]
        ok = (a != d) & (c != b) & (b != d) & (a != c)
        new1, new2 = a * num_nodes + d, c * num_nodes + b
        current = np.sort(src * num_nodes + dst)
        ok &= ~_isin_sorted(new1, current) & ~_isin_sorted(new2, current)
        proposed = np.concatenate([new1[ok], new2[ok]])
        uniq, counts = np.unique(proposed, return_counts=True)
        clash = uniq[counts > 1]
        ok[ok] &= ~(np.isin(new1[ok], clash) | np.isin(new2[ok], clash))
        ok_idx = np.flatnonzero(ok)
        room = target - n_rewired
        fresh = (~touched[i[ok_idx]]).astype(int) + (~touched[j[ok_idx]]).astype(int)
        take = ok_idx[: int(np.searchsorted(np.cumsum(fresh), room) + 1)] if room > 0 else ok_idx[:0]
        if len(take) == 0:
            stale_rounds += 1
            if stale_rounds >= 6:
                break
            continue
        before = int(touched.sum())
        dst[i[take]], dst[j[take]] = d[take], b[take]
        touched[i[take]] = True
        touched[j[take]] = True
        gained = int(touched.sum()) - before
        stale_rounds = stale_rounds + 1 if gained == 0 else 0
        n_rewired = int(touched.sum())
    original = np.sort(src * num_nodes + np.asarray(dst_in, dtype=np.int64))
    changed = ~_isin_sorted(src * num_nodes + dst, original)
    return dst, int(changed.sum())


def _isin_sorted(values: np.ndarray, sorted_ref: np.ndarray) -> np.ndarray:
    """``values in sorted_ref`` elementwise, by binary search. Shapes ``(M,)`` and ``(R,)`` -> ``(M,)``."""
    if len(sorted_ref) == 0:
        return np.zeros(len(values), dtype=bool)
    pos = np.searchsorted(sorted_ref, values)
    pos = np.minimum(pos, len(sorted_ref) - 1)
    return sorted_ref[pos] == values


def perturb_graph(graph: MultiGraph, rewire: float = 0.0, downsample: float = 0.0, seed: int = 0,
                  layers: Iterable[str] | None = None,
                  input_path: str | os.PathLike | None = None) -> MultiGraph:
    """The ablated graph (see the module docstring); ``layers`` limits the ablation to those layers."""
    for name, value in (("rewire", rewire), ("downsample", downsample)):
        if not (0.0 <= value <= 1.0) or math.isnan(value):
            raise KgbuildInputError(f"--{name} must be a fraction between 0 and 1, got {value}")
    names = graph.layer_names
    chosen = list(names) if layers is None else list(dict.fromkeys(layers))
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise KgbuildInputError(f"no layer {unknown[0]!r} in the graph; it has layers {names}",
                                path=input_path)
    edge_index, weights, layer_ids = [], [], []
    meta = dict(graph.meta)
    meta["layers"] = {n: dict(e) for n, e in graph.meta["layers"].items()}
    for lid, name in enumerate(names):
        mask = graph.edge_layer == lid
        src, dst, w = graph.edge_index[0, mask], graph.edge_index[1, mask], graph.edge_weight[mask]
        if name in chosen:
            rng = np.random.default_rng(np.random.SeedSequence([seed, lid]))
            before = len(w)
            keep = downsample_edges(len(w), downsample, rng) if downsample > 0 else np.arange(len(w))
            src, dst, w = src[keep], dst[keep], w[keep]
            n_rewired = 0
            if rewire > 0 and len(w) > 1:
                dst, n_rewired = rewire_edges(src, dst, graph.num_nodes, rewire, rng)
            meta["layers"][name]["ablation"] = {
                "method": REWIRE_METHOD if rewire > 0 else "uniform edge downsampling",
                "rewire": rewire, "downsample": downsample, "seed": seed,
                "edges_before": int(before), "edges_after": int(len(w)),
                "rewired_edges": int(n_rewired),
                "rewired_fraction": float(n_rewired / len(w)) if len(w) else 0.0,
            }
        edge_index.append(np.stack([src, dst]))
        weights.append(w)
        layer_ids.append(np.full(len(w), lid, dtype=np.int16))
    meta["created"] = utc_now()
    record: dict[str, Any] = {"rewire": rewire, "downsample": downsample, "seed": seed, "layers": chosen}
    if input_path is not None:
        record["input"] = input_record(input_path)
    meta["ablation"] = record
    return MultiGraph(
        nodes=graph.nodes,
        edge_index=np.concatenate(edge_index, axis=1) if edge_index else np.zeros((2, 0), np.int64),
        edge_weight=np.concatenate(weights) if weights else np.zeros(0, np.float32),
        edge_layer=np.concatenate(layer_ids) if layer_ids else np.zeros(0, np.int16),
        layers=graph.layers,
        meta=meta,
    )
