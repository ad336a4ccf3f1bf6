"""All-pairs Jaccard similarity of gene sets (GO terms, Reactome pathways), blockwise and memory bounded.

Each gene ``g`` has a set ``S_g`` (its GO terms, its pathways). With the binary gene x set matrix
``A`` (``N x M``, ``A[g, m] = 1`` iff ``m in S_g``)::

    inter = A @ A.T                      |S_a & S_b|       (N x N, never held whole)
    size  = A.sum(1)                     |S_a|
    J[a, b] = inter[a, b] / (size[a] + size[b] - inter[a, b])

For a block of ``B`` target rows the ``B x N`` intersection counts are computed, turned into Jaccard
values, thresholded (``J > min_jaccard``, strict, self-pairs excluded) and, when ``max_in_degree = k`` is
set, cut to each target's ``k`` heaviest sources right away (ties by source name, via the shared
:func:`kgbuild.filters.max_in_degree_mask`), so memory is ``O(B * N)`` plus the kept edges, never ``N x N``.
``B`` shrinks as ``N`` grows so that one block holds at most :data:`BLOCK_VALUES` values (a few such
float32 arrays live at once: about 0.5 GB at the default, whatever ``N``).

Memory and time also grow with the largest set: every pair of its genes shares it. A set of more than
``max_set_size`` genes (default :data:`DEFAULT_MAX_SET_SIZE`, above every GO term and Reactome pathway of
the human genome) is refused before anything is computed, with an error naming it.
Because ``J`` is symmetric, row ``b`` of a block holds every candidate *source* of target ``b``: the cut
per block is exact.

Speed: ``A @ A.T`` is split by set size. The few sets holding many genes (more than ``dense_fraction * N``)
go through a dense float32 GEMM (exact for integer counts below 2**24); the many small sets through a
sparse product, whose cost is ``sum_m |m|**2 / N`` per row. On human GO (~19k genes) this is ~20x faster
than a purely sparse product.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.sparse as sp

from kgbuild.edge_table import EdgeTable
from kgbuild.errors import KgbuildInputError
from kgbuild.filters import max_in_degree_mask

log = logging.getLogger(__name__)

_EPS = 1e-6  # margin around float32 Jaccard values when shortlisting candidates
BLOCK_VALUES = 1 << 25  # at most this many values in one block array (B x N): 128 MB as float32
DEFAULT_MAX_SET_SIZE = 50_000  # genes in one set (a human GO term or pathway has at most ~20,000)


def set_too_large(what: str, size: int, limit: int) -> str:
    """The message for a gene set above ``max_set_size``."""
    return (f"{what} has {size:,} genes, more than `max_set_size={limit}`: a set that large makes the all-pairs "
            f"similarity cost grow with the square of its size (and is not a real gene set of one genome); "
            f"check the file, or raise `max_set_size` if it is meant")


def block_rows_for(n: int, block_rows: int) -> int:
    """Rows per block: at most ``block_rows``, and at most :data:`BLOCK_VALUES` values per ``B x n`` block."""
    return max(1, min(int(block_rows), BLOCK_VALUES // max(int(n), 1)))


def membership_matrix(gene_codes: np.ndarray, set_codes: np.ndarray, n_genes: int, n_sets: int) -> sp.csr_matrix:
    """Binary CSR ``(n_genes, n_sets)`` float32 with a 1 for every ``(gene, set)`` pair (repeats count once)."""
    a = sp.csr_matrix(
        (np.ones(len(gene_codes), dtype=np.float32), (np.asarray(gene_codes), np.asarray(set_codes))),
        shape=(n_genes, n_sets),
    )
    a.sum_duplicates()
    a.data[:] = 1.0
    return a


def jaccard_edges(
    a: sp.csr_matrix,
    min_jaccard: float = 0.1,
    max_in_degree: int | None = 20,
    block_rows: int = 512,
    dense_fraction: float = 0.04,
    progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """Edges ``source -> target`` with ``J > min_jaccard`` (and the per-target cap) from membership ``a``.

    ``a``: binary ``(N, M)``; rows must be ordered by gene name for name-ordered tie breaking. Returns
    ``(src, dst, weight, counts)`` with int64 / int64 / float64 arrays ``(E,)`` (row indices of ``a``) and
    ``counts = {"pairs_above_threshold": directed pairs with J > min_jaccard before the cap}``.
    """
    from kgbuild.progress import progress as _progress

    a = sp.csr_matrix(a, dtype=np.float32)
    n = a.shape[0]
    if n >= 1 << 24 or a.shape[1] >= 1 << 24:
        raise ValueError("float32 counting is exact only below 2**24 genes and sets")
    size = np.asarray(a.sum(axis=1), dtype=np.float32).ravel()
    genes_per_set = np.asarray(a.sum(axis=0)).ravel()
    heavy = genes_per_set > max(64.0, dense_fraction * n)
    a_dense = np.ascontiguousarray(a[:, heavy].toarray(), dtype=np.float32) if heavy.any() else None
    a_sparse = a[:, ~heavy].tocsr()
    a_sparse_t = a_sparse.T.tocsr()
    k = int(max_in_degree or 0)
    block_rows = block_rows_for(n, block_rows)
    out_src, out_dst, out_w = [], [], []
    above = 0
    # None or True: a bar on a terminal, plain periodic lines otherwise (kgbuild.progress); False: silent
    bar = _progress(total=n, desc="Jaccard", unit="genes", enabled=None if progress is None else bool(progress))
    for b0 in range(0, n, block_rows):
        b1 = min(n, b0 + block_rows)
        # intersection and union counts: float32 holds these integers exactly
        inter = (a_sparse[b0:b1] @ a_sparse_t).toarray()
        if a_dense is not None:
            inter += a_dense[b0:b1] @ a_dense.T
        union = size[b0:b1, None] + size[None, :]
        union -= inter
        np.maximum(union, 1.0, out=union)  # two empty sets: J = 0 / 1 = 0
        # float32 Jaccard (abs. error < 1.2e-7) only to shortlist candidates; the kept weights are
        # recomputed exactly in float64 below, so thresholds and ties are decided on exact values
        jac = inter / union
        rows = np.arange(b1 - b0)
        jac[rows, rows + b0] = -1.0  # no self-pairs
        mask = jac > min_jaccard - _EPS
        band = np.abs(jac - min_jaccard) <= _EPS
        above += int((jac > min_jaccard + _EPS).sum())
        if band.any():
            br, bc = np.nonzero(band & (jac > -0.5))
            above += int((inter[br, bc].astype(np.float64) / union[br, bc] > min_jaccard).sum())
        if k and k < n:
            # k-th largest per row; partitioning the negated values at k-1 stays fast when a row holds
            # many equal values (zeros), where partitioning at n-k degrades badly in numpy
            neg = np.negative(jac)
            neg.partition(k - 1, axis=1)
            kth = -neg[:, k - 1]
            del neg
            mask &= jac >= (kth - _EPS)[:, None]
        r, c = np.nonzero(mask)
        w = inter[r, c].astype(np.float64) / union[r, c].astype(np.float64)
        exact = w > min_jaccard
        dst = r[exact].astype(np.int64) + b0
        src = c[exact].astype(np.int64)
        w = w[exact]
        if k:
            keep = max_in_degree_mask(src, dst, w, k)
            src, dst, w = src[keep], dst[keep], w[keep]
        out_src.append(src)
        out_dst.append(dst)
        out_w.append(w)
        bar.update(b1 - b0)
    bar.close()
    if not out_src:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0), {"pairs_above_threshold": 0}
    return np.concatenate(out_src), np.concatenate(out_dst), np.concatenate(out_w), {"pairs_above_threshold": above}


def jaccard_table(
    genes: np.ndarray,
    sets: np.ndarray,
    min_jaccard: float = 0.1,
    max_in_degree: int | None = 20,
    block_rows: int = 512,
    progress: bool | None = None,
    max_set_size: int | None = DEFAULT_MAX_SET_SIZE,
) -> tuple[EdgeTable, dict[str, Any]]:
    """The Jaccard edge table from membership pairs: ``genes[i]`` belongs to ``sets[i]`` (unicode ``(P,)``).

    Returns the table and a provenance record (see :func:`jaccard_table_from_matrix`).
    """
    genes = np.asarray(genes, dtype=str)
    sets = np.asarray(sets, dtype=str)
    gene_vocab, g = np.unique(genes, return_inverse=True)
    set_vocab, s = np.unique(sets, return_inverse=True)
    a = membership_matrix(g.ravel(), s.ravel(), len(gene_vocab), len(set_vocab))
    return jaccard_table_from_matrix(gene_vocab, a, min_jaccard, max_in_degree, block_rows, progress,
                                     max_set_size=max_set_size, set_names=set_vocab)


def jaccard_table_from_matrix(
    gene_vocab: np.ndarray,
    a: sp.csr_matrix,
    min_jaccard: float = 0.1,
    max_in_degree: int | None = 20,
    block_rows: int = 512,
    progress: bool | None = None,
    max_set_size: int | None = DEFAULT_MAX_SET_SIZE,
    set_names: np.ndarray | None = None,
) -> tuple[EdgeTable, dict[str, Any]]:
    """The Jaccard edge table from a binary membership matrix ``a`` (``(N, M)``) whose rows are the genes
    of the sorted ``gene_vocab`` (unicode ``(N,)``).

    A set (column) of more than ``max_set_size`` genes raises :class:`~kgbuild.errors.KgbuildInputError`
    naming it (``set_names``, unicode ``(M,)``) before anything is computed; None: no limit.

    Returns the table and a provenance record: threshold (strict), cap, genes with a non-empty set, sets
    with a member, memberships, directed pairs above the threshold, edges kept.
    """
    gene_vocab = np.asarray(gene_vocab, dtype=str)
    if len(gene_vocab) != a.shape[0]:
        raise ValueError(f"{len(gene_vocab)} gene names for a matrix with {a.shape[0]} rows")
    if len(gene_vocab) > 1 and not np.all(gene_vocab[1:] > gene_vocab[:-1]):
        raise ValueError("gene_vocab must be sorted and unique (ties are broken by row order)")
    a = sp.csr_matrix(a, dtype=np.float32)
    if max_set_size is not None and a.shape[1]:
        sizes = np.bincount(a.indices, minlength=a.shape[1])
        big = int(np.argmax(sizes))
        if sizes[big] > max_set_size:
            name = f"set {str(set_names[big])!r}" if set_names is not None else f"set number {big + 1}"
            raise KgbuildInputError(set_too_large(name, int(sizes[big]), int(max_set_size)))
    src, dst, w, counts = jaccard_edges(a, min_jaccard, max_in_degree, block_rows, progress=progress)
    record = {
        "min_jaccard": float(min_jaccard),
        "min_jaccard_strict": True,
        "max_in_degree": int(max_in_degree) if max_in_degree else None,
        "max_set_size": int(max_set_size) if max_set_size is not None else None,
        "genes_with_sets": int((np.diff(a.indptr) > 0).sum()),
        "sets": int((np.asarray(a.sum(axis=0)).ravel() > 0).sum()),
        "memberships": int(a.nnz),
        "pairs_above_threshold": counts["pairs_above_threshold"],
        "edges_out": int(len(w)),
    }
    return EdgeTable.from_codes(gene_vocab, src, dst, w), record
