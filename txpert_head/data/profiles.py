"""Per-condition profiles: which rows make up a condition, their mean, and the batch-matched reference.

For a condition p (cell line, perturbation) with rows I_p: ``x̄_p = mean_{i∈I_p} x_i`` and
``r_p = mean_{i∈I_p} c_{b(i)}`` (the control means of the rows' batches, weighted by row counts).

A run needs the means of several sets of conditions (training changes, validation, test, the retrieval
candidates of every condition). :class:`ConditionMeans` reads them all in one pass over the data and the
others take their rows from it: on a backed file every pass is a read of the file.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

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


class ConditionMeans:
    """The mean row ``x̄_p`` of every condition in ``conditions`` (default: every non-control condition of
    ``rows``) as ``values`` (P, G) float32, from one pass over their rows in row blocks, in memory or on disk
    (:func:`~txpert_head.data.backed.group_means`: each condition's mean is bit-identical to
    ``data.X[rows[p]].mean(axis=0)``, whichever other conditions share the pass)."""

    def __init__(self, data: PerturbData, rows: dict[Condition, np.ndarray],
                 conditions: Sequence[Condition] | None = None):
        self.conditions = [c for c in rows if c[1] != "ctrl"] if conditions is None else list(conditions)
        self._pos = {c: k for k, c in enumerate(self.conditions)}
        self.values = group_means(data.X, [rows[c] for c in self.conditions], data.memory_budget)

    def covers(self, conditions: Sequence[Condition]) -> bool:
        """Whether every one of ``conditions`` is here."""
        return all(c in self._pos for c in conditions)

    def of(self, conditions: Sequence[Condition]) -> np.ndarray:
        """The means of ``conditions`` (P, G) float64; KeyError names a condition that is not here."""
        missing = [c for c in conditions if c not in self._pos]
        if missing:
            raise KeyError(f"no mean was read for: {missing[:5]}")
        return self.values[[self._pos[c] for c in conditions]].astype(np.float64)


def batch_matched_references(controls: ControlIndex, row_sets: Sequence[np.ndarray]) -> np.ndarray:
    """``r_p = mean_{i∈I_p} c_{b(i)}`` for every row set ``I_p`` of ``row_sets``: (P, G) float64.

    One sparse product ``W C`` with ``W[p, b]`` = the rows of ``I_p`` in group ``b`` (ascending ``b``), then a
    division by ``|I_p|``: the same float64 operations in the same order as summing ``count_b c_b`` over p's
    groups one by one, so bit-identical to it."""
    sizes = np.asarray([len(r) for r in row_sets], dtype=np.int64)
    groups = (controls.group_of_row[np.concatenate([np.asarray(r, dtype=np.int64) for r in row_sets])]
              if sizes.sum() else np.zeros(0, dtype=np.int64))
    counts = sp.csr_matrix((np.ones(len(groups)), (np.repeat(np.arange(len(sizes)), sizes), groups)),
                           shape=(len(sizes), len(controls.means)))
    counts.sum_duplicates()   # per row: ascending groups, each with its count
    with np.errstate(invalid="ignore", divide="ignore"):   # an empty row set has no reference: NaN
        return (counts @ controls.means.astype(np.float64)) / sizes[:, None]


def true_profiles(data: PerturbData, controls: ControlIndex, conditions: Sequence[Condition],
                  rows: dict[Condition, np.ndarray] | None = None,
                  means: ConditionMeans | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(x̄, r)``: true means and batch-matched references, each (P, G) float64. The means come from
    ``means`` when it holds every one of ``conditions``, else from one pass over their rows."""
    rows = rows_by_condition(data) if rows is None else rows
    if means is not None and means.covers(conditions):
        mean = means.of(conditions)
    else:  # bit-identical to data.X[idx].mean(axis=0) per condition, in memory or on disk
        mean = group_means(data.X, [rows[cond] for cond in conditions], data.memory_budget).astype(np.float64)
    return mean, batch_matched_references(controls, [rows[cond] for cond in conditions])


def retrieval_candidates(data: PerturbData, controls: ControlIndex, test: Sequence[Condition],
                         rows: dict[Condition, np.ndarray] | None = None,
                         means: ConditionMeans | None = None) -> tuple[np.ndarray, np.ndarray]:
    """True changes of every non-control condition (R, G) and the row of each test condition in it (P,).

    Retrieval compares each test prediction with all perturbations of the dataset, not only the (few)
    test ones, so its resolution does not depend on the size of the test split. The candidates do not depend
    on ``test``: a caller scoring several splits keeps them and asks :meth:`Candidates.index_of` for the rows.
    Their means come from ``means`` when it has them all (:func:`true_profiles`).
    """
    rows = rows_by_condition(data) if rows is None else rows
    everything = [c for c in rows if c[1] != "ctrl"]
    mean, ref = true_profiles(data, controls, everything, rows, means)
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
