"""Control cells: the model's basal input and the metrics' batch-matched references.

A *group* is one (cell line, batch). For a perturbed row the control input is

* ``random``: a random control row of the same cell line (any batch);
* ``batch``: a random control row of the same cell line and batch;
* ``mean``: the mean of the control rows of the same cell line and batch (batch-averaged).

``means`` (n_groups, G) float32 holds the batch control means ``c_b`` that every Δ is measured against.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from txpert_head.data.backed import group_means
from txpert_head.data.perturb_data import DataError, PerturbData, check_controls_per_batch, dense_rows

CONTROL_MODES = ("random", "batch", "mean")


class ControlIndex:
    """Control rows per group and per cell line, and the batch control means."""

    def __init__(self, data: PerturbData):
        check_controls_per_batch(data)
        keys = pd.MultiIndex.from_arrays([data.cell_line, data.batch])
        group_keys, group = np.unique(np.asarray([f"{l}\x1f{b}" for l, b in keys]), return_inverse=True)
        self._index([tuple(k.split("\x1f")) for k in group_keys.tolist()], group, data.is_control, data.X)
        # one pass over the control rows in row blocks (in memory or on disk); equals X[rows].mean(0) per group
        self.means = group_means(data.X, self.by_group, data.memory_budget)

    @classmethod
    def from_groups(cls, groups: list[tuple[str, str]], group_of_row: np.ndarray, is_control: np.ndarray,
                    means: np.ndarray, X) -> "ControlIndex":
        """An index from stored parts (a run's predictor bundle): the (cell line, batch) ``groups`` in sorted
        order, each row's group, which rows are controls, the batch control ``means`` (n_groups, G) and the
        rows ``X``. The same rows in the same order give the same draws as the index of the whole data."""
        index = cls.__new__(cls)
        index._index([tuple(g) for g in groups], group_of_row, is_control, X)
        index.means = np.asarray(means, dtype=np.float32)
        return index

    def _index(self, groups: list[tuple[str, str]], group_of_row: np.ndarray, is_control: np.ndarray, X) -> None:
        """Groups, each row's group, the control rows per group and per cell line, and the rows ``X``."""
        self.groups = groups
        self.group_keys = np.asarray([f"{l}\x1f{b}" for l, b in groups])
        self.group_of_row = np.asarray(group_of_row, dtype=np.int64)
        self.line_of_group = np.asarray([l for l, _ in groups])
        ctrl = np.asarray(is_control, dtype=bool)
        self.by_group = [np.flatnonzero(ctrl & (self.group_of_row == g)) for g in range(len(groups))]
        line_of_row = self.line_of_group[self.group_of_row] if len(self.group_of_row) else np.zeros(0, dtype=str)
        self.by_line = {l: np.flatnonzero(ctrl & (line_of_row == l)) for l in sorted({l for l, _ in groups})}
        self.X = X

    def sample(self, rows: np.ndarray, mode: str, rng: np.random.Generator) -> np.ndarray:
        """Control row index per entry of ``rows`` (modes ``random`` and ``batch``).

        Draws: for each group (``batch``) or cell line (``random``) present, in ascending order,
        ``rng.integers(0, pool size, count)`` for its entries in the order they come in ``rows``. The only
        Python loop is one generator call per group present (not per cell); the entries are routed to and
        from the groups with one stable sort."""
        rows = np.asarray(rows, dtype=np.int64)
        groups = self.group_of_row[rows]
        if mode not in ("batch", "random"):
            raise ValueError(f"sample() is for modes 'random' and 'batch', got {mode!r}")
        key_of_group, ptr, flat = self._pools(mode)
        keys = groups if key_of_group is None else key_of_group[groups]
        order = np.argsort(keys, kind="stable")  # entries of each key keep their order in ``rows``
        present, counts = np.unique(keys, return_counts=True)
        start = ptr[present]
        sizes = ptr[present + 1] - start
        draws = np.empty(len(rows), dtype=np.int64)
        pos = 0
        for k, n, c in zip(present.tolist(), sizes.tolist(), counts.tolist()):
            if mode == "batch" and n == 0:
                raise DataError(f"no control cells in batch {self.groups[k][1]!r} of cell line {self.groups[k][0]!r}")
            draws[pos:pos + c] = rng.integers(0, n, c)
            pos += c
        out = np.empty(len(rows), dtype=np.int64)
        out[order] = flat[np.repeat(start, counts) + draws]
        return out

    def _pools(self, mode: str) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """``(key_of_group, ptr, flat)`` for :meth:`sample`, built once from :attr:`by_group` / :attr:`by_line`
        (lazily: training with batch-mean inputs never needs them): the pool of key k is
        ``flat[ptr[k]:ptr[k + 1]]``; keys are groups (``batch``; ``key_of_group`` None) or the cell lines in
        sorted order (``random``)."""
        cache = self.__dict__.setdefault("_pool_cache", {})
        if mode not in cache:
            if mode == "batch":
                cache[mode] = (None, *_flat_pools(self.by_group))
            else:
                lines = sorted(self.by_line)
                key = np.searchsorted(np.asarray(lines), np.asarray(self.line_of_group)).astype(np.int64)
                cache[mode] = (key, *_flat_pools([self.by_line[l] for l in lines]))
        return cache[mode]

    def inputs(self, rows: np.ndarray, mode: str, rng: np.random.Generator) -> np.ndarray:
        """Dense control input (len(rows), G) float32 for the given perturbed rows."""
        return self.dense_inputs(self.input_sources(rows, mode, rng), mode)

    def input_sources(self, rows: np.ndarray, mode: str, rng: np.random.Generator) -> np.ndarray:
        """What each perturbed row's input is made of, (len(rows),) int64: a control row (modes ``random`` and
        ``batch``, drawn by :meth:`sample`) or the row's group, whose control mean is the input (``mean``)."""
        if mode not in CONTROL_MODES:
            raise ValueError(f"control mode must be one of {CONTROL_MODES}, got {mode!r}")
        if mode == "mean":
            return self.group_of_row[np.asarray(rows, dtype=np.int64)]
        return self.sample(rows, mode, rng)

    def dense_inputs(self, sources: np.ndarray, mode: str) -> np.ndarray:
        """The inputs (len(sources), G) float32 of :meth:`input_sources`' ids."""
        if mode == "mean":
            return self.means[np.asarray(sources, dtype=np.int64)]
        return dense_rows(self.X, sources)

    def source_rows(self, sources: np.ndarray, mode: str):
        """The inputs of :meth:`input_sources`' ids as stored, read once: sparse rows of ``X`` (CSR,
        (len(sources), G)) for control rows, dense float32 control means for groups (``mean``). For
        :meth:`dense_inputs` and :func:`average_rows` without reading a row twice (from disk, when backed)."""
        sources = np.asarray(sources, dtype=np.int64)
        return self.means[sources] if mode == "mean" else self.X[sources]


def average_rows(rows, of_group: np.ndarray, n_groups: int) -> np.ndarray:
    """The mean of each group's rows, (n_groups, G) float64: entry k of the groups' members is row
    ``of_group[k][1]`` of ``rows`` (CSR or dense, (R, G)) in group ``of_group[k][0]``; ``of_group`` (K, 2)
    int64, rows may repeat within and across groups, every group non-empty. One product with the (sparse)
    averaging matrix."""
    of_group = np.asarray(of_group, dtype=np.int64).reshape(-1, 2)
    counts = np.bincount(of_group[:, 0], minlength=n_groups).astype(np.float64)
    average = sp.csr_matrix((1.0 / counts[of_group[:, 0]], (of_group[:, 0], of_group[:, 1])),
                            shape=(n_groups, rows.shape[0]))   # repeated (group, row) entries are summed
    out = average @ (rows.astype(np.float64) if sp.issparse(rows) else np.asarray(rows, dtype=np.float64))
    return out.toarray() if sp.issparse(out) else np.asarray(out)


def _flat_pools(pools: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(ptr, flat)``: the pools concatenated, pool k being ``flat[ptr[k]:ptr[k + 1]]``."""
    ptr = np.zeros(len(pools) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(p) for p in pools])
    flat = np.concatenate(pools).astype(np.int64) if pools else np.zeros(0, np.int64)
    return ptr, flat
