"""Screen graphs: genes whose screen profiles are alike (or mirror images) are linked.

Input: an embedding table with one profile per gene (``N`` genes x ``D`` features). Output: a one-layer
multigraph with the global top ``top_pct`` percent of unordered gene pairs by absolute cosine similarity,
each pair as two directed edges of weight ``|cos|``.

Math. With ``x_i`` the profile of gene ``i`` and ``u_i = x_i / ||x_i||_2`` (rows of ``U``, ``(N, D)``),
``w_ij = |u_i . u_j|`` (absolute value: strongly anti-correlated profiles are as related as correlated
ones). Of the ``P = N (N - 1) / 2`` unordered pairs, the ``K = ceil(P * top_pct / 100)`` largest ``w_ij``
are kept (ties broken by gene names, as in :func:`kgbuild.filters.top_pct_mask`).

Search (:func:`top_abs_cosine_pairs`) is exact and memory-bounded: rows are taken in blocks of ``B``;
block ``[r0, r1)`` is searched with a FAISS ``IndexFlatIP`` holding ``[U[r0:]; -U[r0:]]`` (only the upper
triangle; the negated copy turns "most negative" into "largest", so one range search returns every
``|u_i . u_j| > radius``). The radius starts at a sampled estimate of the K-th value (set low, so that
about 2K pairs pass) and rises to the K-th best pair found so far once K candidates are held, so the
candidate store stays O(K) and no N x N matrix is ever built. If the estimate was too high (fewer than K
pairs above it), the blocks are searched again for the band below it. With FAISS GPUs present, the
block search runs on GPU 0 (k-NN on the GPU, CPU range search for rows whose k-th neighbour is still
above the radius: exact either way).

Stages. :func:`read` parses the table (:mod:`kgbuild.sources.embeddings`: genes x features, DepMap-style
features x genes, or Perturb-seq ``.h5ad``) and runs the search; it returns the *candidate* pairs as an
edge table (one row per unordered pair, ``source < target``, weight ``|cos|``): every pair among the top
``K`` plus, possibly, some just below (the search only needs ``K`` to bound its memory). The builder
(:func:`kgbuild.api.screen`) then applies the filters of :mod:`kgbuild.filters`: the exact top-``K`` cut
(:func:`kgbuild.filters.top_pairs_index`), both directions of every kept pair, and the optional in-degree
cap. :func:`top_abs_cosine_pairs` is search + cut on a matrix of unit rows.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kgbuild.edge_table import EdgeTable
from kgbuild.errors import KgbuildInputError
from kgbuild.filters import top_pairs_index, top_pct_count
from kgbuild.provenance import input_record
from kgbuild.sources.embeddings import (  # noqa: F401  (re-exported: the table readers live there)
    AGGREGATES, DEFAULT_DEPMAP_MAX_NAN, DEPMAP_HEADER, GENE_COLUMN_NAMES, ORIENTATIONS, EmbeddingTable,
    load_embeddings,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------- exact top pairs by |cosine|
@dataclass(frozen=True)
class PairSelection:
    """The top pairs: ``rows < cols`` (int64 ``(K,)``), ``weights`` = ``|cos|`` (float32 ``(K,)``), sorted
    by weight descending then ``(row, col)``; plus bookkeeping for provenance."""

    rows: np.ndarray
    cols: np.ndarray
    weights: np.ndarray
    n_pairs: int
    threshold: float
    passes: int
    max_candidates: int
    engine: str


def l2_normalise(values: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm, float32 ``(N, D)`` (rows must be non-zero)."""
    v = np.asarray(values, dtype=np.float64)
    return np.ascontiguousarray(v / np.linalg.norm(v, axis=1, keepdims=True), dtype=np.float32)


def n_top_pairs(n_genes: int, top_pct: float) -> int:
    """``K = ceil(P * top_pct / 100)`` with ``P = N (N - 1) / 2`` unordered pairs."""
    return top_pct_count(n_genes * (n_genes - 1) // 2, top_pct)


def estimate_threshold(unit: np.ndarray, fraction: float, max_values: int = 4_000_000, seed: int = 0) -> float:
    """The ``1 - fraction`` quantile of ``|cos|`` over pairs of sampled rows with all rows (self excluded).

    Samples ``s = min(N, max(16, max_values // N))`` rows (all rows for small N), so at most about
    ``max_values`` similarities are computed. Returns 0 when ``fraction >= 1``.
    """
    n = len(unit)
    if fraction >= 1 or n < 2:
        return 0.0
    s = min(n, max(16, max_values // n))
    rows = np.arange(n) if s == n else np.sort(np.random.default_rng(seed).choice(n, s, replace=False))
    sims = np.abs(unit[rows] @ unit.T)
    sims[np.arange(len(rows)), rows] = np.nan
    vals = sims[~np.isnan(sims)]
    return float(np.quantile(vals, 1.0 - fraction)) if len(vals) else 0.0


class _TopStore:
    """Running candidate pairs; once it holds more than ``k``, it keeps only those ``>=`` the k-th weight
    (so ties at the cut survive) and that weight becomes the ``floor`` for later searches."""

    def __init__(self, k: int):
        self.k = k
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.weights: list[np.ndarray] = []
        self.size = 0
        self.floor = -math.inf
        self.max_size = 0

    def add(self, rows: np.ndarray, cols: np.ndarray, weights: np.ndarray) -> None:
        if len(weights):
            self.rows.append(rows.astype(np.int32))
            self.cols.append(cols.astype(np.int32))
            self.weights.append(weights.astype(np.float32))
            self.size += len(weights)
            self.max_size = max(self.max_size, self.size)
        if self.size > self.k:
            r, c, w = self.arrays()
            kth = np.partition(w, len(w) - self.k)[len(w) - self.k]
            keep = w >= kth
            self.rows, self.cols, self.weights = [r[keep]], [c[keep]], [w[keep]]
            self.size = int(keep.sum())
            self.floor = float(kth)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.weights:
            return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32)
        if len(self.weights) > 1:
            self.rows = [np.concatenate(self.rows)]
            self.cols = [np.concatenate(self.cols)]
            self.weights = [np.concatenate(self.weights)]
        return self.rows[0], self.cols[0], self.weights[0]


def _gpu_resources():
    """FAISS GPU resources when FAISS sees a GPU, else None."""
    import faiss

    try:
        if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
            return faiss.StandardGpuResources()
    except Exception as err:  # pragma: no cover - depends on the FAISS build
        log.warning("FAISS GPU unavailable (%s); using the CPU", err)
    return None


def _block_pairs(unit: np.ndarray, r0: int, r1: int, radius: float, gpu=None, gpu_index_factory=None,
                 gpu_k: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All ``(i, j, |u_i . u_j|)`` with ``r0 <= i < r1``, ``j > i`` and ``|u_i . u_j| > radius``.

    FAISS ``IndexFlatIP`` over ``[U[r0:]; -U[r0:]]``: ids ``< M`` are ``+u_j``, the rest ``-u_j``
    (``M = N - r0``). With ``radius >= 0`` at most one of the two copies of ``j`` passes.
    """
    import faiss

    n, d = unit.shape
    m = n - r0
    base = unit[r0:]
    cpu_index = faiss.IndexFlatIP(d)
    cpu_index.add(base)
    cpu_index.add(-base)
    queries = unit[r0:r1]
    if gpu is not None or gpu_index_factory is not None:
        from faiss.contrib.exhaustive_search import range_search_gpu

        index = (gpu_index_factory(cpu_index) if gpu_index_factory is not None
                 else faiss.index_cpu_to_gpu(gpu, 0, cpu_index))
        lims, dist, ids = range_search_gpu(queries, radius, index, cpu_index, gpu_k=gpu_k)
    else:
        lims, dist, ids = cpu_index.range_search(queries, radius)
    counts = np.diff(np.asarray(lims, dtype=np.int64))
    q = np.repeat(np.arange(r0, r1, dtype=np.int64), counts)
    col = ids % m + r0
    keep = col > q
    return q[keep], col[keep], dist[keep]


@dataclass(frozen=True)
class Candidates:
    """What the search found: every pair among the top ``k`` (and maybe some just below), ``rows < cols``
    (int64 ``(C,)``), ``weights`` = ``|cos|`` (float32 ``(C,)``, in no particular order); plus bookkeeping."""

    rows: np.ndarray
    cols: np.ndarray
    weights: np.ndarray
    n_pairs: int
    k: int
    passes: int
    max_candidates: int
    engine: str


def abs_cosine_candidates(
    unit: np.ndarray,
    top_pct: float,
    *,
    block_rows: int = 2048,
    use_gpu: bool | None = None,
    progress: bool | None = None,
) -> Candidates:
    """Search for the global top ``top_pct`` percent of unordered pairs by ``|cos|`` (exact; see the
    module docstring): a superset of them, which :func:`select_top_pairs` cuts to exactly ``K``.

    ``unit``: float32 ``(N, D)``, rows of unit L2 norm. Memory: the candidate store (about 2K pairs at
    12 bytes each) plus one block's FAISS index (``2 N D`` floats); never ``N x N``. ``use_gpu``: None =
    use a FAISS GPU when present.
    """
    from kgbuild.progress import progress as progress_report

    unit = np.ascontiguousarray(unit, dtype=np.float32)
    n = len(unit)
    n_pairs = n * (n - 1) // 2
    k = n_top_pairs(n, top_pct)
    gpu = _gpu_resources() if use_gpu in (None, True) else None
    if use_gpu and gpu is None:
        log.warning("no FAISS GPU found; searching on the CPU")
    engine = f"faiss IndexFlatIP exact range search on {'GPU' if gpu is not None else 'CPU'}, {block_rows}-row blocks"
    if k == 0:
        return Candidates(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), n_pairs, 0, 0,
                          0, engine)
    store = _TopStore(k)
    fraction = 2.0 * k / n_pairs
    tau = estimate_threshold(unit, fraction)
    upper = math.inf
    blocks = [(r0, min(r0 + block_rows, n)) for r0 in range(0, n - 1, block_rows)]
    passes = 0
    while True:
        passes += 1
        for r0, r1 in progress_report(blocks, desc=f"|cos| search pass {passes}", unit="block",
                                      enabled=False if progress is False else None, leave=False):
            radius = max(tau, store.floor)
            if radius >= upper:
                continue
            i, j, w = _block_pairs(unit, r0, r1, radius, gpu)
            if upper < math.inf:
                band = w <= upper
                i, j, w = i[band], j[band], w[band]
            store.add(i, j, w)
        if store.size >= k or tau <= 0:
            break
        log.info("threshold estimate %.4f left only %d of %d pairs; searching the band below it", tau, store.size, k)
        upper = tau
        fraction = min(1.0, fraction * 4)
        new_tau = estimate_threshold(unit, fraction)
        tau = new_tau if new_tau < upper else (upper / 2 if upper > 1e-3 else 0.0)
        if fraction >= 1:
            tau = 0.0
    rows, cols, weights = store.arrays()
    return Candidates(rows.astype(np.int64), cols.astype(np.int64), weights, n_pairs, k, passes, store.max_size,
                      engine)


def top_abs_cosine_pairs(
    unit: np.ndarray,
    top_pct: float,
    *,
    block_rows: int = 2048,
    use_gpu: bool | None = None,
    progress: bool | None = None,
) -> PairSelection:
    """The global top ``top_pct`` percent of unordered pairs by ``|cos|`` (exact; see the module docstring):
    :func:`abs_cosine_candidates` then the cut :func:`kgbuild.filters.top_pairs_index`.

    ``unit``: float32 ``(N, D)``, rows of unit L2 norm. ``use_gpu``: None = use a FAISS GPU when present.
    """
    cand = abs_cosine_candidates(unit, top_pct, block_rows=block_rows, use_gpu=use_gpu, progress=progress)
    return select_top_pairs(cand, len(unit))


def select_top_pairs(cand: "Candidates", n: int) -> PairSelection:
    """The ``cand.k`` best candidates (ties by ``(row, col)``), ``|cos|`` clipped to 1 after ranking."""
    order = top_pairs_index(cand.rows, cand.cols, cand.weights, cand.k, n)
    weights = np.minimum(cand.weights[order], np.float32(1.0))
    return PairSelection(
        rows=cand.rows[order], cols=cand.cols[order], weights=weights,
        n_pairs=cand.n_pairs, threshold=float(weights[-1]) if len(weights) else math.nan, passes=cand.passes,
        max_candidates=cand.max_candidates, engine=cand.engine,
    )


# ---------------------------------------------------------------------- the parse + search stage
def default_layer_name(path: str | Path) -> str:
    """The file name without its suffixes (``depmap.parquet`` -> ``depmap``), or ``screen``."""
    name = Path(path).name
    for suffix in (".gz", ".bz2", ".xz", ".zst", ".parquet", ".pq", ".csv", ".tsv", ".txt", ".h5ad"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name.strip() or "screen"


def read(
    embeddings: str | Path,
    *,
    top_pct: float = 1.0,
    block_rows: int = 2048,
    use_gpu: bool | None = None,
    progress: bool | None = None,
    **load_options: Any,
) -> tuple[EdgeTable, np.ndarray, "Candidates", dict[str, Any]]:
    """Read the profiles and search them: ``(candidates, genes, search, meta)``.

    ``candidates``: the candidate pairs as an edge table (``source < target`` by name, weight ``|cos|``
    as float32 values, not yet clipped); ``genes``: every gene of the table (unicode ``(N,)``, sorted:
    all become nodes); ``search``: the raw :class:`Candidates` (codes into ``genes``); ``meta``: the
    layer provenance so far. ``top_pct`` bounds the search; the cut itself is the builder's
    (:func:`kgbuild.api.screen`). ``load_options`` go to :func:`load_embeddings`.
    """
    path = Path(embeddings)
    if not 0 < top_pct <= 100:
        raise KgbuildInputError(f"`top_pct` must be in (0, 100], got {top_pct}")
    table = load_embeddings(path, **load_options)
    n = len(table.genes)
    if n < 2:
        raise KgbuildInputError(f"only {n} gene(s) with a usable profile: no pairs to rank", path=path)
    cand = abs_cosine_candidates(l2_normalise(table.values), top_pct, block_rows=block_rows, use_gpu=use_gpu,
                                 progress=progress)
    edges = EdgeTable.from_codes(table.genes, cand.rows, cand.cols, cand.weights)
    meta = {
        "source": "screen",
        "kind": "absolute cosine similarity of L2-normalised profiles",
        "inputs": [input_record(path, role="embeddings")],
        "parameters": {
            "top_pct": float(top_pct), "max_in_degree": None,
            "block_rows": int(block_rows), **{k: v for k, v in load_options.items() if v is not None},
        },
        "embedding": table.record,
    }
    return edges, table.genes, cand, meta


def build_screen_graph(embeddings: str | Path, **options: Any):
    """The screen layer as a :class:`~kgbuild.graph.MultiGraph`: :func:`kgbuild.api.screen` (kept for
    existing callers; same parameters)."""
    from kgbuild.api import screen

    return screen(embeddings, **options)
