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

from txpert_head.data import DataError, PerturbData, check_controls_per_batch

CONTROL_MODES = ("random", "batch", "mean")


class ControlIndex:
    """Control rows per group and per cell line, and the batch control means."""

    def __init__(self, data: PerturbData):
        check_controls_per_batch(data)
        keys = pd.MultiIndex.from_arrays([data.cell_line, data.batch])
        self.group_keys, group = np.unique(np.asarray([f"{l}\x1f{b}" for l, b in keys]), return_inverse=True)
        self.group_of_row = group.astype(np.int64)
        self.groups = [tuple(k.split("\x1f")) for k in self.group_keys.tolist()]
        ctrl = data.is_control
        self.by_group = [np.flatnonzero(ctrl & (self.group_of_row == g)) for g in range(len(self.groups))]
        lines = sorted({l for l, _ in self.groups})
        self.by_line = {l: np.flatnonzero(ctrl & (data.cell_line == l)) for l in lines}
        self.line_of_group = np.asarray([l for l, _ in self.groups])
        G = data.n_genes
        self.means = np.zeros((len(self.groups), G), dtype=np.float32)
        for g, rows in enumerate(self.by_group):
            if len(rows):
                self.means[g] = np.asarray(data.X[rows].mean(axis=0), dtype=np.float32).ravel()
        self.X = data.X

    def sample(self, rows: np.ndarray, mode: str, rng: np.random.Generator) -> np.ndarray:
        """Control row index per entry of ``rows`` (modes ``random`` and ``batch``)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty(len(rows), dtype=np.int64)
        groups = self.group_of_row[rows]
        if mode == "batch":
            for g in np.unique(groups):
                pool, sel = self.by_group[g], groups == g
                if not len(pool):
                    raise DataError(f"no control cells in batch {self.groups[g][1]!r} of cell line {self.groups[g][0]!r}")
                out[sel] = pool[rng.integers(0, len(pool), int(sel.sum()))]
        elif mode == "random":
            lines = self.line_of_group[groups]
            for line in np.unique(lines):
                pool, sel = self.by_line[line], lines == line
                out[sel] = pool[rng.integers(0, len(pool), int(sel.sum()))]
        else:
            raise ValueError(f"sample() is for modes 'random' and 'batch', got {mode!r}")
        return out

    def inputs(self, rows: np.ndarray, mode: str, rng: np.random.Generator) -> np.ndarray:
        """Dense control input (len(rows), G) float32 for the given perturbed rows."""
        if mode not in CONTROL_MODES:
            raise ValueError(f"control mode must be one of {CONTROL_MODES}, got {mode!r}")
        if mode == "mean":
            return self.means[self.group_of_row[np.asarray(rows, dtype=np.int64)]]
        picked = self.sample(rows, mode, rng)
        return np.asarray(self.X[picked].toarray(), dtype=np.float32)
