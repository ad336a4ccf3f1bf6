"""Per-condition profiles: which rows make up a condition, their mean, and the batch-matched reference.

For a condition p (cell line, perturbation) with rows I_p: ``x̄_p = mean_{i∈I_p} x_i`` and
``r_p = mean_{i∈I_p} c_{b(i)}`` (the control means of the rows' batches, weighted by row counts).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from txpert_head.data.backed import group_means
from txpert_head.data.controls import ControlIndex
from txpert_head.data.perturb_data import PerturbData
from txpert_head.data.splits import Condition


def rows_by_condition(data: PerturbData) -> dict[Condition, np.ndarray]:
    """(cell line, condition) -> row indices (sorted)."""
    frame = pd.DataFrame({"l": data.cell_line, "c": data.condition})
    return {(l, c): np.asarray(idx, dtype=np.int64)
            for (l, c), idx in frame.groupby(["l", "c"], observed=True, sort=True).indices.items()}


def condition_name(cond: Condition) -> str:
    """``line|perturbation`` (or just the perturbation when the data has a single unnamed line)."""
    line, pert = cond
    return pert if line == "all" else f"{line}|{pert}"


def true_profiles(data: PerturbData, controls: ControlIndex, conditions: Sequence[Condition],
                  rows: dict[Condition, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(x̄, r)``: true means and batch-matched references, each (P, G) float64."""
    rows = rows_by_condition(data) if rows is None else rows
    P, G = len(conditions), data.n_genes
    # every condition's mean in one pass over its rows in row blocks (in memory or on disk); bit-identical to
    # data.X[idx].mean(axis=0) per condition
    mean = group_means(data.X, [rows[cond] for cond in conditions], data.memory_budget).astype(np.float64)
    ref = np.zeros((P, G))
    for k, cond in enumerate(conditions):
        idx = rows[cond]
        groups, counts = np.unique(controls.group_of_row[idx], return_counts=True)
        ref[k] = (controls.means[groups].astype(np.float64) * counts[:, None]).sum(0) / counts.sum()
    return mean, ref


def retrieval_candidates(data: PerturbData, controls: ControlIndex, test: Sequence[Condition],
                         rows: dict[Condition, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """True changes of every non-control condition (R, G) and the row of each test condition in it (P,).

    Retrieval compares each test prediction with all perturbations of the dataset, not only the (few)
    test ones, so its resolution does not depend on the size of the test split. The candidates do not depend
    on ``test``: a caller scoring several splits keeps them and asks :meth:`Candidates.index_of` for the rows.
    """
    rows = rows_by_condition(data) if rows is None else rows
    everything = [c for c in rows if c[1] != "ctrl"]
    mean, ref = true_profiles(data, controls, everything, rows)
    cand = Candidates(mean - ref, [c[0] for c in everything], everything)
    return cand, cand.index_of(test)


class Candidates(np.ndarray):
    """True changes of candidate conditions (R, G) that also know each row's cell line (``.lines``), so that
    :func:`txpert_head.metrics.expression.evaluate` can compare within a cell line (Systema metrics), and
    each row's condition (``.conditions``, or None)."""

    def __new__(cls, values: np.ndarray, lines: Sequence[str], conditions: Sequence[Condition] | None = None):
        obj = np.asarray(values).view(cls)
        obj.lines = list(lines)
        obj.conditions = list(conditions) if conditions is not None else None
        return obj

    def __array_finalize__(self, obj):
        self.lines = getattr(obj, "lines", None)
        self.conditions = getattr(obj, "conditions", None)

    def index_of(self, conditions: Sequence[Condition]) -> np.ndarray:
        """The row of each of ``conditions`` (P,) int64; KeyError names a condition that is not a candidate."""
        pos = {c: k for k, c in enumerate(self.conditions or [])}
        missing = [c for c in conditions if c not in pos]
        if missing:
            raise KeyError(f"not among the retrieval candidates: {missing[:5]}")
        return np.asarray([pos[c] for c in conditions], dtype=np.int64)
