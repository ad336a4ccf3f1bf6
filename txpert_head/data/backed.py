"""Out-of-core expression: a read-only CSR matrix on disk (an ``.h5ad``'s ``X`` or a layer), read by rows.

A genome-wide screen (2M cells x 8k genes, ~10 % non-zero) is ~13 GB as float32 CSR: more than fits next to
training. :class:`BackedCSR` keeps only the row pointers in memory (``8 (n + 1)`` bytes) and reads the rows a
mini-batch or a pass needs from the file with h5py (anndata's on-disk CSR layout: a group with ``data``,
``indices``, ``indptr``, attribute ``shape`` and ``encoding-type = csr_matrix``). Indexing it with row indices
returns an in-memory ``scipy.sparse.csr_matrix`` of those rows, in the order given, exactly as slicing the
in-memory matrix would; raw counts that :func:`~txpert_head.data.perturb_data.load_h5ad` decided to normalise
are normalised row by row as they are read (bit-identical: the normalisation of a row depends only on it).

Passes over many rows (control means, per-condition means, aggregated training examples) go through
:func:`group_sums` in row blocks whose size comes from the memory budget, for in-memory and on-disk data alike:
it accumulates in the order scipy does (float32, row after row), so its results equal the whole-matrix scipy
expressions bit for bit and do not depend on the block size.

The memory budget (``memory_budget``, bytes; ``"8GB"`` strings via :func:`parse_bytes`, GB = 2**30 bytes)
decides ``backed="auto"`` (on disk when the matrix's in-memory size, ``nnz * 8 + (n + 1) * 8`` bytes, exceeds
it) and sizes the blocks of those passes (about a sixteenth of it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import numpy as np
import scipy.sparse as sp

#: default memory budget: 4 GiB (the matrix stays in memory below it; blocks of passes take ~1/16 of it)
DEFAULT_MEMORY_BUDGET = 4 << 30
BACKED_MODES = ("auto", "yes", "no")
#: bytes a stored entry costs in a block pass (gathered data + indices, csr copy, float64 row sums, flat index)
_BYTES_PER_ENTRY = 40
#: gaps of at most this many entries between requested rows are read through (one h5py read instead of two)
_GAP = 2048
#: HDF5 chunk cache per dataset for compressed matrices (chunks are decompressed whole)
_COMPRESSED_CACHE = 64 << 20
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}


def parse_bytes(value: object) -> int:
    """A memory size in bytes: an int, or a string ``"8GB"``, ``"500MB"``, ``"1.5G"``, ``"4096"`` (binary units:
    KB = 2**10, MB = 2**20, GB = 2**30, TB = 2**40; case-insensitive). Raises ValueError with the accepted
    forms otherwise; the size must be positive."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        size = int(value)
    elif isinstance(value, float) and np.isfinite(value):
        size = int(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _UNITS:
            raise ValueError(f"memory budget must be a size such as 8GB, 500MB or a number of bytes, got {value!r}")
        size = int(float(m.group(1)) * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"memory budget must be positive, got {value!r}")
    return size


def format_bytes(size: int) -> str:
    """``4 GB``, ``512 MB``, ``1.5 GB`` (binary units, as :func:`parse_bytes` reads them)."""
    for unit, scale in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} B"


def backed_mode(value: object) -> str:
    """``"auto"``, ``"yes"`` or ``"no"`` from a bool or one of those strings (``true``/``false`` too)."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    text = str(value).strip().lower()
    text = {"true": "yes", "false": "no", "on": "yes", "off": "no", "1": "yes", "0": "no"}.get(text, text)
    if text not in BACKED_MODES:
        raise ValueError(f"backed must be one of {', '.join(BACKED_MODES)} (or True / False), got {value!r}")
    return text


class BackedCSR:
    """A read-only CSR matrix in an HDF5 group (anndata's layout), read by rows; see the module docstring.

    The scipy interface the code base uses on expression matrices: ``shape``, ``dtype`` (float32), ``nnz``,
    ``indptr`` (int64, in memory), ``data`` / ``indices`` (the stored h5py datasets, raw values), and
    ``X[rows]`` for an index array (any order, repeats allowed), a boolean mask or a slice -> in-memory
    ``csr_matrix`` float32 of those rows in that order (``X[rows, cols]`` reads the rows, then cuts columns).
    ``target_sum``: when set, rows are normalised as they are read (``log1p(target_sum * x / rowsum(x))``).
    """

    def __init__(self, path: str | Path, key: str = "X", target_sum: float | None = None):
        import h5py

        self.path, self.key, self.target_sum = str(path), key, target_sum
        # no chunk cache: a read of scattered rows then copies only the selected values of each chunk (with
        # h5py's 8 MB cache HDF5 copies whole chunks, ~4 MB each: 15x slower for a batch of random rows);
        # compressed chunks must be decompressed whole, so they get a cache
        self._file = h5py.File(self.path, "r", rdcc_nbytes=0)
        group = self._file[key]
        check_csr_group(group, self.path, key)
        if group["data"].compression or group["indices"].compression:
            self._file.close()
            self._file = h5py.File(self.path, "r", rdcc_nbytes=_COMPRESSED_CACHE, rdcc_nslots=100_003)
            group = self._file[key]
        self.shape = tuple(int(s) for s in _shape_of(group))
        self.indptr = np.asarray(group["indptr"][...], dtype=np.int64)
        if self.indptr.shape != (self.shape[0] + 1,):
            raise ValueError(f"{self.path}: {key}/indptr has {self.indptr.size} entries for {self.shape[0]} rows")
        self.data, self.indices = group["data"], group["indices"]
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    # pickling (a worker process): reopen the file
    def __getstate__(self):
        return {"path": self.path, "key": self.key, "target_sum": self.target_sum}

    def __setstate__(self, state):
        self.__init__(state["path"], state["key"], state["target_sum"])

    def __repr__(self) -> str:
        return (f"<BackedCSR {self.shape[0]}x{self.shape[1]} nnz={self.nnz} {self.path}:{self.key}"
                f"{'' if self.target_sum is None else f' normalised to {self.target_sum:g}'}>")

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def close(self) -> None:
        self._file.close()

    def __getitem__(self, key) -> sp.csr_matrix:
        cols = None
        if isinstance(key, tuple):
            if len(key) != 2:
                raise IndexError(f"BackedCSR takes [rows] or [rows, cols], got {len(key)} indices")
            key, cols = key
        n = self.shape[0]
        if isinstance(key, slice):
            rows = np.arange(n, dtype=np.int64)[key]
        else:
            rows = np.asarray(key)
            if rows.dtype == bool:
                if rows.shape != (n,):
                    raise IndexError(f"boolean row mask of length {rows.size} for {n} rows")
                rows = np.flatnonzero(rows)
            rows = rows.astype(np.int64, copy=False).reshape(-1)
            if rows.size and (rows.min() < -n or rows.max() >= n):
                raise IndexError(f"row index out of range for {n} rows")
            rows = np.where(rows < 0, rows + n, rows)
        out = self.rows(rows)
        return out if cols is None else out[:, cols]

    def rows(self, rows: np.ndarray) -> sp.csr_matrix:
        """The given rows (int64 array, any order, repeats allowed) as an in-memory float32 CSR matrix."""
        rows = np.asarray(rows, dtype=np.int64)
        uniq, where = np.unique(rows, return_inverse=True)
        starts, ends = self.indptr[uniq], self.indptr[uniq + 1]
        data, indices, offset = self._read_ranges(starts, ends)
        lens = (ends - starts)[where]
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lens, out=indptr[1:])
        total = int(indptr[-1])
        if len(uniq) == len(rows) and np.array_equal(uniq, rows) and total == data.size:
            take = None  # sorted distinct rows read back to back: already in order
        else:
            take = np.repeat(offset[where] - indptr[:-1], lens) + np.arange(total, dtype=np.int64)
        data = np.asarray(data if take is None else data[take], dtype=np.float32)
        indices = np.asarray(indices if take is None else indices[take], dtype=np.int32)
        idx_dtype = np.int32 if total < np.iinfo(np.int32).max else np.int64
        out = sp.csr_matrix((data, indices.astype(idx_dtype, copy=False), indptr.astype(idx_dtype)),
                            shape=(len(rows), self.shape[1]))
        if self.target_sum is not None:
            from txpert_head.data.perturb_data import normalize_rows

            out = normalize_rows(out, self.target_sum)
        return out

    def _read_ranges(self, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Read the entry ranges ``[starts[i], ends[i])`` (ascending, disjoint) with as few h5py reads as
        possible: ranges closer than :data:`_GAP` entries are read as one. Returns the stored data and indices
        read and each range's offset in them."""
        if not len(starts):
            return np.zeros(0, self.data.dtype), np.zeros(0, self.indices.dtype), np.zeros(0, np.int64)
        gap = starts[1:] - ends[:-1]
        brk = np.flatnonzero(gap > _GAP) + 1
        run_first = np.concatenate([[0], brk])
        run_last = np.concatenate([brk - 1, [len(starts) - 1]])
        lo, hi = starts[run_first], ends[run_last]
        sizes = hi - lo
        pos = np.zeros(len(lo) + 1, dtype=np.int64)
        np.cumsum(sizes, out=pos[1:])
        data = _read_union(self.data, lo, hi, int(pos[-1]))
        indices = _read_union(self.indices, lo, hi, int(pos[-1]))
        run_of = np.repeat(np.arange(len(lo)), np.diff(np.concatenate([run_first, [len(starts)]])))
        offset = pos[run_of] + (starts - lo[run_of])
        return data, indices, offset


#: ranges per HDF5 read in :func:`_read_union`: OR-ing hyperslabs into one selection costs time quadratic in
#: their number (200k control cells of a 2M-cell screen took over 10 minutes in one selection)
_RANGES_PER_READ = 512


def _read_union(ds, lo: np.ndarray, hi: np.ndarray, total: int) -> np.ndarray:
    """``concatenate([ds[a:b] for a, b in zip(lo, hi)])`` (ascending, disjoint ranges) in HDF5 reads of the
    union of up to :data:`_RANGES_PER_READ` ranges each (hyperslab selections; h5py's per-slice reads cost
    ~70 µs each)."""
    from h5py import h5s

    out = np.empty(total, dtype=ds.dtype)
    if total == 0:
        return out
    keep = hi > lo
    lo, hi = lo[keep], hi[keep]
    pos = np.concatenate([[0], np.cumsum(hi - lo)])
    fspace = ds.id.get_space()
    for first in range(0, len(lo), _RANGES_PER_READ):
        part = slice(first, first + _RANGES_PER_READ)
        fspace.select_none()
        for a, b in zip(lo[part].tolist(), hi[part].tolist()):
            fspace.select_hyperslab((a,), (b - a,), op=h5s.SELECT_OR)
        a, b = int(pos[first]), int(pos[min(first + _RANGES_PER_READ, len(lo))])
        ds.id.read(h5s.create_simple((b - a,)), fspace, out[a:b])
    return out


def _shape_of(group) -> tuple[int, int]:
    shape = group.attrs.get("shape", group.attrs.get("h5sparse_shape"))
    return tuple(np.asarray(shape).tolist())


def _encoding(node) -> str:
    """``csr_matrix``, ``csc_matrix``, ``array`` (dense), ... of an h5 node (anndata's attributes, old or new)."""
    import h5py

    if isinstance(node, h5py.Dataset):
        return "array"
    enc = node.attrs.get("encoding-type", node.attrs.get("h5sparse_format", ""))
    enc = enc.decode() if isinstance(enc, bytes) else str(enc)
    return {"csr": "csr_matrix", "csc": "csc_matrix"}.get(enc, enc)


def check_csr_group(node, path: str, key: str) -> None:
    """Raise :class:`~txpert_head.data.perturb_data.DataError` unless ``node`` is an on-disk CSR matrix, saying
    how to convert the file."""
    from txpert_head.data.perturb_data import DataError

    enc = _encoding(node)
    if enc == "csr_matrix" and all(k in node for k in ("data", "indices", "indptr")):
        return
    what = {"array": "a dense array", "csc_matrix": "CSC (column-compressed) sparse"}.get(enc, f"{enc or 'unknown'} encoding")
    attr = "X" if key == "X" else f"layers[{key.split('/', 1)[-1]!r}]"
    raise DataError(
        f"{path}: backed (on-disk) reading needs the expression matrix {key!r} stored as CSR (row-compressed "
        f"sparse); this file stores it as {what}. Read it in memory (--backed no), or convert the file once: "
        f"adata = anndata.read_h5ad(path); adata.{attr} = scipy.sparse.csr_matrix(adata.{attr}); "
        f"adata.write_h5ad(new_path)")


def stored_matrix_info(path: str | Path, key: str = "X") -> dict:
    """What the file stores at ``key`` without reading it: ``encoding``, ``shape``, ``nnz`` (CSR/CSC) and
    ``memory`` (its in-memory size as float32 CSR: ``nnz * 8 + (n + 1) * 8``; dense: ``n * G * 4``)."""
    import h5py

    with h5py.File(str(path), "r") as f:
        if key not in f:
            return {"encoding": None}
        node = f[key]
        enc = _encoding(node)
        if enc in ("csr_matrix", "csc_matrix") and "indptr" in node:
            shape = _shape_of(node)
            nnz = int(node["data"].shape[0])
            return {"encoding": enc, "shape": shape, "nnz": nnz, "memory": nnz * 8 + (shape[0] + 1) * 8}
        shape = tuple(node.shape) if enc == "array" else tuple(_shape_of(node) or (0, 0))
        return {"encoding": enc, "shape": shape, "nnz": None,
                "memory": int(np.prod(shape, dtype=np.int64)) * 4 if len(shape) == 2 else 0}


def budget_bytes(budget: int | None) -> int:
    """A memory budget in bytes: ``budget``, or :data:`DEFAULT_MEMORY_BUDGET` when None (a data set's
    ``memory_budget`` when the user gave none)."""
    return DEFAULT_MEMORY_BUDGET if budget is None else int(budget)


def block_rows(X, budget: int | None = None) -> int:
    """Rows per block of a pass over ``X`` under the memory ``budget`` (bytes; default
    :data:`DEFAULT_MEMORY_BUDGET`): a block's entries take about a sixteenth of it."""
    budget = budget_bytes(budget)
    n = max(int(X.shape[0]), 1)
    per_row = max(X.nnz / n, 1.0) * _BYTES_PER_ENTRY + 64
    return max(1, int(budget // 16 // per_row))


def row_blocks(n: int, size: int) -> Iterator[slice]:
    for lo in range(0, n, size):
        yield slice(lo, min(lo + size, n))


def read_rows(X, rows: np.ndarray, budget: int | None = None) -> sp.csr_matrix:
    """``X[rows]`` as one float32 CSR matrix (int32 indices when they fit), read in blocks of :func:`block_rows`
    rows into arrays allocated once: the peak is the result plus one block, not the several whole-size copies
    of one read (the range reads, their reordering, normalisation). In memory or backed, the same matrix."""
    rows = np.asarray(rows, dtype=np.int64)
    lens = np.asarray(X.indptr[rows + 1] - X.indptr[rows], dtype=np.int64)
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lens, out=indptr[1:])
    total = int(indptr[-1])
    data = np.empty(total, dtype=np.float32)
    indices = np.empty(total, dtype=np.int32 if X.shape[1] < np.iinfo(np.int32).max else np.int64)
    for part in row_blocks(len(rows), block_rows(X, budget)):
        block = X[rows[part]]
        lo, hi = indptr[part.start], indptr[part.stop]
        if block.nnz != hi - lo:
            raise RuntimeError(f"rows {part.start}..{part.stop}: read {block.nnz} entries, the index says {hi - lo}")
        data[lo:hi] = block.data
        indices[lo:hi] = block.indices
    return sp.csr_matrix((data, indices, indptr.astype(np.int32) if total < np.iinfo(np.int32).max else indptr),
                         shape=(len(rows), int(X.shape[1])))


def group_sums(X, rows: np.ndarray, group: np.ndarray, n_groups: int, scale: np.ndarray | None = None,
               budget: int | None = None) -> np.ndarray:
    """``S[g] = Σ_{i: group[i] = g} scale[i] · X[rows[i]]`` as a float32 (n_groups, G) array, accumulated in
    float32 entry after entry in the order of ``rows`` (reading ``X`` in blocks of :func:`block_rows` rows).

    This is the order scipy accumulates in, so for ascending ``rows`` it equals ``M @ X[rows]`` (M the 0/1
    group-membership matrix) and, with ``scale = float32(1 / n_g)``, ``X[rows_g].mean(axis=0)`` per group, bit
    for bit, whatever the block size, in memory or backed."""
    rows = np.asarray(rows, dtype=np.int64)
    group = np.asarray(group, dtype=np.int64)
    G = int(X.shape[1])
    acc = np.zeros(int(n_groups) * G, dtype=np.float32)
    size = block_rows(X, budget)
    for part in row_blocks(len(rows), size):
        block = X[rows[part]]
        counts = np.diff(block.indptr)
        flat = np.repeat(group[part] * G, counts) + block.indices
        vals = block.data if scale is None else block.data * np.repeat(np.asarray(scale[part], np.float32), counts)
        np.add.at(acc, flat, vals)
    return acc.reshape(int(n_groups), G)


def group_means(X, row_groups: list[np.ndarray], budget: int | None = None) -> np.ndarray:
    """``X[rows].mean(axis=0)`` for every array of (ascending) ``rows`` in ``row_groups`` as a float32
    (len(row_groups), G) array, in one pass over the rows in ascending order; bit-identical to scipy's
    per-group mean (empty groups give zeros)."""
    sizes = np.asarray([len(r) for r in row_groups], dtype=np.int64)
    if not sizes.sum():
        return np.zeros((len(row_groups), int(X.shape[1])), dtype=np.float32)
    rows = np.concatenate([np.asarray(r, dtype=np.int64) for r in row_groups])
    group = np.repeat(np.arange(len(row_groups), dtype=np.int64), sizes)
    scale = np.repeat(np.asarray([np.float32(1.0 / s) if s else np.float32(0) for s in sizes.tolist()],
                                 dtype=np.float32), sizes)
    order = np.argsort(rows, kind="stable")  # one ascending pass over the file; a row's groups keep their order
    return group_sums(X, rows[order], group[order], len(row_groups), scale[order], budget)
