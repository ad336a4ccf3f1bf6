"""Cell-level AnnData for external evaluators: ``txpert predict --cells N`` and the matching truth file.

Arc's ``cell-eval`` (the Virtual Cell Challenge evaluator) and scanpy expect one file holding *cells*: the
predicted (or true) cells of every perturbation plus control cells, labelled in one categorical obs column.
This module writes that layout, the same way for a prediction and for the truth, so that::

    cell-eval run -ap pred.h5ad -ar real.h5ad --pert-col perturbation --control-pert ctrl --profile vcc

accepts the pair with no edits (``tests/test_cell_eval_agreement.py`` runs it). The layout:

* ``X`` (float32, dense): log1p-normalised expression, **clipped at 0** -- a model's output can dip below 0 on
  genes near zero, log-expression cannot, and cell-eval rejects negative values;
* ``obs['perturbation']`` (categorical): the plain perturbation label, ``A`` or ``A+B`` (genes sorted, as the
  data names them), and :data:`~txpert_head.data.perturb_data.CONTROL` (``ctrl``) for the control cells; ``obs['cell_line']``;
* ``var_names``: the genes; ``uns['log1p']`` (scanpy's marker of log1p data, natural log) and
  ``uns['normalization']`` (``target_sum`` of ``normalize_total``, or ``"none"`` when the data was used as
  stored); ``uns['control_label']`` and ``uns['perturbation_column']`` name the labels.

Control cells: the control rows of the cell line, at most ``max_control_cells`` of them, drawn by
:func:`control_rows` (the VCC block's seed and stream; on data with one cell line the very cells the VCC block
uses, :mod:`txpert_head.evaluation.vcc`, which draws further lines from the same stream); a prediction and the
truth written with the same seed therefore carry the *same* control cells, so the control means cancel in
cell-eval's PDS and Pearson Δ as they do in the VCC block.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kgbuild.atomic import atomic_path
from kgbuild.outputs import output_errors
from txpert_head.data.controls import ControlIndex
from txpert_head.data.perturb_data import CONTROL, DataError, PerturbData
from txpert_head.data.profiles import rows_by_condition
from txpert_head.evaluation.vcc import DEFAULT_MAX_CONTROL_CELLS

__all__ = ["PERT_COL", "cells_anndata", "control_rows", "normalization_note", "predict_cells_run",
           "truth_cells_anndata"]

log = logging.getLogger(__name__)

PERT_COL = "perturbation"


def control_rows(controls: ControlIndex, line: str, max_control_cells: int = DEFAULT_MAX_CONTROL_CELLS,
                 seed: int = 0) -> np.ndarray:
    """The control rows of ``line`` written beside the cells: all of them, or ``max_control_cells`` drawn without
    replacement with ``numpy.random.default_rng([seed, 4243])``, sorted (the VCC block's seed; the same cells as
    the VCC block for the first line it scores, e.g. on data with one cell line)."""
    rows = controls.by_line.get(line)
    if rows is None or not len(rows):
        raise DataError(f"cell line {line!r} has no control cells")
    if len(rows) > max_control_cells:
        rng = np.random.default_rng([seed, 4_243])
        rows = np.sort(rng.choice(rows, max_control_cells, replace=False))
    return np.asarray(rows, dtype=np.int64)


def normalization_note(data: PerturbData) -> dict[str, Any]:
    """``uns['normalization']`` of a written file: how the expression in ``X`` was normalised (reads only
    ``data.notes``, so a :class:`txpert_head.runs.predictor.Predictor`'s data summary serves too)."""
    norm = data.notes.get("normalization", {})
    here = bool(norm.get("normalized_here", False))
    return {"target_sum": norm.get("target_sum") if here else "none", "normalized_here": here,
            "method": "normalize_total + log1p" if here else "as stored in the data"}


def cells_anndata(cells: Mapping[str, np.ndarray], control: np.ndarray, genes: Sequence[str], *,
                  cell_line: str, normalization: Mapping[str, Any], control_label: str = CONTROL):
    """One AnnData of perturbed and control cells (the layout of the module docstring).

    ``cells``: ``{label: (n_p, G)}`` log-expression of each perturbation (labels ``A`` / ``A+B``);
    ``control``: (n_c, G). ``X = max(0, values)`` as float32, perturbations first (in the order given), then
    the controls; obs names ``p<i>`` / ``ctrl<i>``.
    """
    import anndata

    if control_label in cells:
        raise ValueError(f"{control_label!r} is the control label; it cannot be a perturbation")
    blocks = [np.asarray(v, dtype=np.float64) for v in cells.values()] + [np.asarray(control, dtype=np.float64)]
    for b in blocks:
        if b.ndim != 2 or b.shape[1] != len(genes):
            raise ValueError(f"cell arrays must be (n, {len(genes)}); got {b.shape}")
    labels = [lab for lab, v in cells.items() for _ in range(len(v))] + [control_label] * len(control)
    X = np.maximum(np.vstack(blocks), 0.0).astype(np.float32)
    n_pert = len(labels) - len(control)
    obs = pd.DataFrame({PERT_COL: pd.Categorical(labels, categories=[control_label, *cells]),
                        "cell_line": pd.Categorical([cell_line] * len(labels))},
                       index=[f"p{i}" for i in range(n_pert)] + [f"ctrl{i}" for i in range(len(control))])
    adata = anndata.AnnData(X, obs=obs, var=pd.DataFrame(index=pd.Index([str(g) for g in genes])))
    adata.uns["log1p"] = {}  # scanpy's marker of log1p data (no "base": natural log)
    adata.uns["normalization"] = dict(normalization)
    adata.uns["control_label"] = control_label
    adata.uns["perturbation_column"] = PERT_COL
    return adata


def truth_cells_anndata(data: PerturbData, line: str, perturbations: Sequence[str], *,
                        max_cells: int | None = None, max_control_cells: int = DEFAULT_MAX_CONTROL_CELLS,
                        seed: int = 0):
    """The true cells of ``perturbations`` in cell line ``line`` with :func:`control_rows`, as :func:`cells_anndata`
    -- the real file a ``txpert predict --cells`` output is evaluated against. ``max_cells``: cap per
    perturbation (seeded draw), default all cells."""
    controls = ControlIndex(data)
    rows = rows_by_condition(data)
    rng = np.random.default_rng([seed, 7_919])
    cells = {}
    for p in perturbations:
        idx = rows.get((line, p))
        if idx is None or not len(idx):
            raise DataError(f"no cells of {p!r} in cell line {line!r}")
        if max_cells is not None and len(idx) > max_cells:
            idx = np.sort(rng.choice(idx, max_cells, replace=False))
        cells[p] = data.X[idx].toarray()
    ctrl = data.X[control_rows(controls, line, max_control_cells, seed)].toarray()
    return cells_anndata(cells, ctrl, data.genes, cell_line=line, normalization=normalization_note(data))


def predict_cells_run(run_dir: str | Path, perturbations: Sequence[str], out: str | Path, n_cells: int,
                      cell_line: str | None = None, *, control: Sequence[str] = (CONTROL,),
                      allow_unknown: bool = False, max_control_cells: int = DEFAULT_MAX_CONTROL_CELLS,
                      seed: int = 0) -> Path:
    """``txpert predict --cells N``: ``n_cells`` predicted cells per perturbation plus control cells, as ``.h5ad``.

    Each predicted cell is the model's output for one control input of the cell line: ``n_cells`` control rows
    are drawn (seeded by ``seed``; with replacement only when the line has fewer), and the input for each is
    chosen by the run's ``control_mode`` as in training (``batch``/``random``: a control cell of the row's
    batch / line, ``mean``: the batch mean, giving one point per batch). The controls written are
    :func:`control_rows` (real cells). Values are clipped at 0 (see the module docstring). Uses the run's
    predictor bundle (:class:`txpert_head.runs.predictor.Predictor`): no training data is read (run folders of earlier
    versions are loaded with their training data).
    """
    from txpert_head.runs.predictor import Predictor

    if n_cells < 1:
        raise ValueError(f"n_cells must be at least 1, got {n_cells}")
    pred = Predictor.load(run_dir)  # the run's predictor bundle: no training data is read
    cell_line = pred.check_cell_line(cell_line)
    canon, cells, known = pred.sample_cells(perturbations, n_cells, cell_line, allow_unknown=allow_unknown,
                                             control=control, seed=seed)
    ctrl = pred.control_cells(cell_line, max_control_cells, seed)
    adata = cells_anndata(dict(zip(canon, cells)), ctrl, pred.genes, cell_line=cell_line,
                          normalization=pred.normalization)
    known_of = dict(zip(canon, known))
    adata.obs["known"] = [known_of.get(p, True) for p in adata.obs[PERT_COL].astype(str)]
    adata.uns["txpert_run"] = str(run_dir)
    adata.uns["cells_per_perturbation"] = int(n_cells)
    adata.uns["clipped_at_zero"] = True
    out = Path(out)
    with output_errors(out), atomic_path(out) as tmp:
        adata.write_h5ad(tmp)
    return out
