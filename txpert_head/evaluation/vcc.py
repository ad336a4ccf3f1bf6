"""Virtual Cell Challenge (VCC) metrics of a trained run and of the baselines: gathering the cells.

:mod:`txpert_head.metrics.vcc` holds the formulas (DES, PDS, MAE, scaling, S, the VCC's Pearson Δ; they agree
with Arc's cell-eval, see tests/test_cell_eval_agreement.py); this module
collects, for every evaluated condition ``p = (cell line L, perturbation)``, the four cell sets they need:

* **true cells**: the data rows of p. For the model these are exactly the rows whose matched control
  cells were its inputs (:meth:`Trainer.predict_cells` with ``return_rows=True``: up to ``eval_cells``
  rows per condition, seeded), so prediction and truth are the same cells; for a baselines-only
  evaluation, up to ``max_cells`` rows drawn with ``seed``. The cap keeps the Wilcoxon tests quick.
* **control cells**: the control rows of cell line L (all batches; :class:`ControlIndex` ``by_line``),
  at most ``max_control_cells`` of them (seeded draw). DE genes are called against these, for the truth
  and every prediction alike: Wilcoxon rank-sum + Benjamini-Hochberg at ``alpha`` (default 0.05), and
  their pooled mean is the reference of PDS and of the VCC Pearson Δ (as in a cell-eval run whose
  predicted file carries the real control cells).
* **predicted cells**: TxPert's output for each matched control input is one predicted cell, shape
  (n_p, G). With ``control_mode="mean"`` every input of a batch is that batch's control mean, so the
  predicted cells are one point per batch (a point mass): DES then rests on the fold-change truncation
  explained in :mod:`txpert_head.metrics.vcc`. The block's ``prediction`` field says which kind was scored.
  The baselines (general, additive, nearest cell line, graph neighbours, linear, linear graph) predict a
  mean profile (G,), passed as such: :func:`vcc_metrics.score_perturbation` replicates it to as many
  identical cells as the truth has.
  ``split_half`` is not scored (its "prediction" is the other half of the same cells).
* **cell-mean baseline**: the VCC reference every scaled value is measured against. For line L it is the
  mean of the perturbed training cells of L, every cell equal to that mean (what
  :func:`vcc_metrics.cell_mean_baseline` builds; passed as the (G,) mean, which is replicated to the true
  set size, so it costs no memory per cell). When L has no perturbed training cells (the held-out line of ``cross_cell_line``) it is L's
  control mean plus the mean training change ``mean_i (x_i − c_{b(i)})`` over the perturbed training
  cells of the other lines (``c_b``: control mean of the cell's batch).

Several cell lines: each line is scored on its own, like one cell-eval run per line (its controls, its
cell-mean baseline; PDS ranks a perturbation only among the perturbations of the same line, leaving out
of the distances the gene named like the perturbation label, as cell-eval does: the target of a single,
nothing for a combination ``A+B``). The reported DES / PDS / MAE / Pearson Δ are means over all evaluated
conditions of the per-condition values, and the scaled values and ``S`` are computed from those pooled means
against the pooled cell-mean-baseline means (:func:`vcc_metrics.scale_against_baseline`)::

    scaled_DES = max(0, (DES − DES_cm) / (1 − DES_cm)),  scaled_PDS likewise,
    scaled_MAE = max(0, 1 − MAE / MAE_cm),               S = 100 · mean(scaled values)

With one cell line this equals :func:`vcc_metrics.vcc_scores` with the cell-mean baseline, exactly.

Cost: streamed, one condition at a time (:func:`score_predictions`). Per condition the true cells are
tested once and each of the K prediction sets and the cell mean once: K + 2 Wilcoxon calls. Memory: one
condition's dense true and predicted cells, the control cells of each line, and per set the (P, G)
pseudobulks PDS needs (:func:`memory_needed`), not the P · eval_cells · G cells of every condition.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from kgbuild.progress import progress as progress_report
from txpert_head.data.backed import budget_bytes, group_means
from txpert_head.data.controls import ControlIndex
from txpert_head.data.perturb_data import CONTROL, PerturbData
from txpert_head.data.profiles import condition_name, rows_by_condition
from txpert_head.data.splits import Condition
from txpert_head.metrics.vcc import (DEFAULT_ALPHA, ControlCells, close_block, label_gene_indices, overall_score,
                                     score_perturbation, summarise_true)

__all__ = ["CELL_MEAN", "VCC_BASELINES", "baselines_vcc", "line_cell_mean", "memory_needed", "memory_skip", "model_vcc",
           "prediction_kind", "score_predictions"]

log = logging.getLogger(__name__)

CELL_MEAN = "cell_mean"
PSEUDOBULK_SKIPPED = {"skipped": "pseudobulk data: DES needs single cells"}  # the block for pseudobulk data
VCC_BASELINES = ("general", "additive", "nearest_cell_line", "graph_neighbours", "linear", "linear_graph")
DEFAULT_MAX_CONTROL_CELLS = 2048
METRICS = ("des", "pds", "mae", "pearson_delta")  # per condition; S uses the first three

Prediction = Mapping[Condition, np.ndarray]  # condition -> (n, G) cells or (G,) mean


def prediction_kind(control_mode: str) -> str:
    """What the model's predicted cells are, in words, for the printed block."""
    if control_mode == "mean":
        return ("point mass per batch (control_mode=mean: each predicted cell is the output for its batch's "
                "control mean)")
    return f"cells (control_mode={control_mode}: one output per matched control cell)"


def memory_needed(n_genes: int, conditions: Sequence[Condition], sets: int, max_cells: int = 256,
                  max_control_cells: int = DEFAULT_MAX_CONTROL_CELLS) -> int:
    """Bytes :func:`score_predictions` holds (float64): per prediction set (``sets``, the cell mean and the
    truth included) the pseudobulks of every condition, per cell line its control cells, and one condition's
    true and predicted cells at a time::

        8 · G · (sets · P + lines · max_control_cells + 2 · max_cells)
    """
    lines = len({c[0] for c in conditions})
    return 8 * n_genes * (sets * len(conditions) + lines * max_control_cells + 2 * max_cells)


def memory_skip(data: PerturbData, conditions: Sequence[Condition], sets: int, max_cells: int = 256) -> dict | None:
    """``{"skipped": reason}`` when :func:`memory_needed` exceeds the data's memory budget (``data.memory_budget``,
    default 4 GB), else None. ``sets``: the prediction sets scored (model and baselines), without the cell mean
    and the truth. Streaming keeps this small: on a genome-wide screen (2,000 test perturbations x 8,000 genes,
    8 sets) it is about 1.3 GB."""
    budget = budget_bytes(data.memory_budget)
    need = memory_needed(data.n_genes, conditions, sets + 2, max_cells)
    if need <= budget:
        return None
    reason = (f"the VCC block would hold {need / 2**30:.1f} GB ({len(conditions):,} conditions x {data.n_genes:,} "
              f"genes x {sets + 2} pseudobulk sets, the control cells and one condition's cells, float64), over the "
              f"memory budget of {budget / 2**30:.1f} GB; raise --memory-budget, or score fewer conditions")
    log.warning("VCC metrics skipped: %s", reason)
    return {"skipped": reason}


def _require_cells(data: PerturbData) -> None:
    if data.pseudobulk:
        raise ValueError(f"{data.source}: VCC metrics need single cells (DES tests cell distributions); "
                         "the data is pseudobulk")


def _dense(data: PerturbData, rows: np.ndarray) -> np.ndarray:
    return np.asarray(data.X[np.asarray(rows, dtype=np.int64)].toarray(), dtype=np.float64)


def line_cell_mean(data: PerturbData, controls: ControlIndex, train: Sequence[Condition],
                   rows: Mapping[Condition, np.ndarray], line: str) -> np.ndarray:
    """Mean perturbed training cell of ``line`` (G,); see the module docstring for a line without any."""
    # the perturbed training cells are most of a screen: read them in row blocks (data.memory_budget), in file order
    own = [rows[c] for c in train if c[0] == line and c in rows and c[1] != CONTROL]
    if own:
        idx = np.sort(np.concatenate(own))
        return group_means(data.X, [idx], data.memory_budget)[0].astype(np.float64)
    other = [rows[c] for c in train if c in rows and c[1] != CONTROL]
    if not other:
        raise ValueError("the cell-mean baseline needs perturbed training cells, but the training split has none")
    idx = np.sort(np.concatenate(other))
    change = (group_means(data.X, [idx], data.memory_budget)[0].astype(np.float64)
              - controls.means[controls.group_of_row[idx]].astype(np.float64).mean(0))
    line_ctrl = group_means(controls.X, [controls.by_line[line]], data.memory_budget)[0]  # read in row blocks
    return line_ctrl.astype(np.float64) + change


def score_predictions(data: PerturbData, controls: ControlIndex, conditions: Sequence[Condition],
                      train: Sequence[Condition], predictions: Mapping[str, Prediction], *,
                      true_rows: Mapping[Condition, np.ndarray] | None = None, max_cells: int = 256,
                      max_control_cells: int = DEFAULT_MAX_CONTROL_CELLS, seed: int = 0,
                      alpha: float = DEFAULT_ALPHA, progress: bool = False) -> tuple[dict, pd.DataFrame]:
    """VCC metrics of every prediction set in ``predictions`` (``{label: {condition: cells or mean}}``).

    ``conditions``: the evaluated conditions (each must have data rows); ``train``: the training
    conditions (for the cell-mean baseline). ``true_rows``: the true cells' rows per condition (default: up
    to ``max_cells`` rows drawn with ``seed``). Returns ``(summary, table)``:

    * ``summary``: ``{label: {"des", "pds", "mae", "pearson_delta", "scaled": {"des", "pds", "mae"}, "score",
      "n_perturbations"}}`` for every label and for :data:`CELL_MEAN` (whose scaled values and S are 0
      by construction), plus ``"cell_lines"``, ``"control_cells"`` (per line), ``"alpha"``, ``"test"``;
    * ``table``: one row per condition (``condition`` = :func:`condition_name`) with
      ``<label>_vcc_des``, ``<label>_vcc_pds``, ``<label>_vcc_mae``, ``<label>_vcc_pearson_delta``,
      ``vcc_n_de_true`` (DE genes of the truth) and ``<label>_vcc_n_de`` (DE genes of the prediction).

    Streamed: the conditions are scored one at a time in the order given, each condition's rows read
    (``true_rows[c]``) before its predictions (``predictions[label][c]``), so both may be lazy mappings that
    produce one condition at a time (:func:`model_vcc` passes the model's cells so). Only the current
    condition's true and predicted cells are dense; what stays is, per cell line, its control cells and,
    per prediction set, the pseudobulks ``(P, G)`` that PDS compares (:func:`memory_needed`). ``progress``:
    report the conditions done on stderr once the block has run 10 s (:func:`kgbuild.progress.progress`).
    """
    conditions = list(conditions)
    if not conditions:
        raise ValueError("no conditions to evaluate")
    if CELL_MEAN in predictions:
        raise ValueError(f"{CELL_MEAN!r} is the reference baseline computed here; use another label")
    rows = rows_by_condition(data)
    missing = [condition_name(c) for c in conditions if c not in rows]
    if missing:
        raise KeyError(f"no cells for condition(s) {', '.join(missing[:5])} in {data.source}")
    for label, pred in predictions.items():
        lacking = [condition_name(c) for c in conditions if c not in pred]
        if lacking:
            raise ValueError(f"prediction {label!r} lacks condition(s) {', '.join(lacking[:5])}")
    rng = np.random.default_rng([seed, 4_243])
    labels = [*predictions, CELL_MEAN]
    names = [condition_name(c) for c in conditions]
    lines = sorted({c[0] for c in conditions})
    # per line (in this order, so the draws are those of every earlier version): its controls, then the true rows
    control, cell_mean, drawn = {}, {}, {}
    control_counts: dict[str, int] = {}
    for line in lines:
        ctrl_rows = controls.by_line.get(line)
        if ctrl_rows is None or not len(ctrl_rows):
            raise ValueError(f"cell line {line!r} has no control cells to call DE genes against")
        if len(ctrl_rows) > max_control_cells:
            ctrl_rows = np.sort(rng.choice(ctrl_rows, max_control_cells, replace=False))
        control[line] = ControlCells(_dense(data, ctrl_rows))
        control_counts[line] = int(len(ctrl_rows))
        if true_rows is None:
            for c in conditions:
                if c[0] == line:
                    idx = rows[c]
                    drawn[c] = np.sort(rng.choice(idx, max_cells, replace=False)) if len(idx) > max_cells else idx
        cell_mean[line] = line_cell_mean(data, controls, train, rows, line)
    per: dict[str, dict[str, dict]] = {lab: {} for lab in labels}  # label -> name -> metrics
    means = {lab: np.empty((len(conditions), data.n_genes)) for lab in labels}  # predicted pseudobulks
    true_means = np.empty((len(conditions), data.n_genes))
    with progress_report(total=len(conditions), desc="VCC block", unit="conditions",
                         enabled=None if progress else False, delay=10.0, leave=False) as bar:
        for k, (c, name) in enumerate(zip(conditions, names)):
            line = c[0]
            idx = drawn[c] if true_rows is None else np.asarray(true_rows[c])
            if not len(idx):
                raise ValueError(f"condition {name}: no true cells")
            truth = summarise_true(name, _dense(data, idx), control[line], alpha)
            true_means[k] = truth.mean
            for lab in labels:
                # the (G,) cell mean is replicated to the true set size without copying: the cells
                # cell_mean_baseline(training cells, sizes) gives, in O(G) memory
                pred = cell_mean[line] if lab == CELL_MEAN else predictions[lab][c]
                per[lab][name], means[lab][k] = score_perturbation(name, pred, truth, control[line], alpha)
            bar.update(1)
    for line in lines:  # PDS ranks a perturbation among the perturbations of its line
        at = [k for k, c in enumerate(conditions) if c[0] == line]
        exclude = label_gene_indices([conditions[k][1] for k in at], data.genes)
        for lab in labels:  # close_block writes each one's "pds" into these per-perturbation dicts
            close_block({names[k]: per[lab][names[k]] for k in at}, means[lab][at], true_means[at],
                        control[line].mean, exclude)
    summary: dict = {"cell_lines": lines, "control_cells": control_counts, "alpha": alpha,
                     "test": "Wilcoxon rank-sum vs the line's control cells, Benjamini-Hochberg FDR"}
    raw = {lab: {m: _mean([per[lab][n][m] for n in names]) for m in METRICS} for lab in labels}
    for lab in labels:
        scaled, score = overall_score(raw[lab], raw[CELL_MEAN])
        summary[lab] = {**raw[lab], "scaled": scaled, "score": score, "n_perturbations": len(names)}
    table = pd.DataFrame({"condition": names, "vcc_n_de_true": [per[CELL_MEAN][n]["n_de_true"] for n in names]})
    for lab in labels:
        for m in METRICS:
            table[f"{lab}_vcc_{m}"] = [per[lab][n][m] for n in names]
        table[f"{lab}_vcc_n_de"] = [per[lab][n]["n_de_pred"] for n in names]
    return summary, table


def _mean(values: Sequence[float]) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


class _Streamed:
    """The model's ``(rows, cells)`` per condition from :meth:`iter_predicted_cells`, seen as two mappings
    (``rows``, ``cells``) that produce one condition at a time, in the order of ``conditions``: asking for the
    next condition drops the current one (:func:`score_predictions` asks in that order)."""

    def __init__(self, conditions: Sequence[Condition], pairs):
        self.order, self._pairs, self._next, self._current = list(conditions), iter(pairs), 0, None
        self.rows, self.cells = _View(self, 0), _View(self, 1)

    def get(self, c: Condition, part: int) -> np.ndarray:
        if self._current is None or self._current[0] != c:
            if self._next >= len(self.order) or self.order[self._next] != c:
                raise RuntimeError(f"condition {condition_name(c)} asked out of order: the model's cells are produced "
                                   "once, in the order of the conditions")
            self._current = (c, *next(self._pairs))
            self._next += 1
        return self._current[1 + part]


class _View(Mapping):
    def __init__(self, stream: _Streamed, part: int):
        self._stream, self._part, self._keys = stream, part, set(stream.order)

    def __getitem__(self, c):
        return self._stream.get(c, self._part)

    def __contains__(self, c) -> bool:
        return c in self._keys

    def __iter__(self):
        return iter(self._stream.order)

    def __len__(self) -> int:
        return len(self._stream.order)


def _baseline_predictions(conditions: Sequence[Condition], baselines: Mapping[str, dict]) -> dict[str, Prediction]:
    """``{name: {condition: (G,) mean}}`` from :func:`run_baselines` output (entries with ``pred``)."""
    return {name: {c: np.asarray(res["pred"][k], dtype=np.float64) for k, c in enumerate(conditions)}
            for name, res in baselines.items() if name in VCC_BASELINES and "pred" in res}


def _arrange(summary: dict, model_label: str | None, base_labels: Sequence[str], kind: str | None,
             seconds: float, max_cells: int) -> dict:
    out = {k: summary[k] for k in ("cell_lines", "control_cells", "alpha", "test")}
    out.update({"prediction": kind, "max_cells_per_condition": max_cells, "seconds": seconds,
                "cell_mean": summary[CELL_MEAN]})
    if model_label is not None:
        out["model"] = summary[model_label]
    out["baselines"] = {b: summary[b] for b in base_labels}
    return out


def model_vcc(trainer, conditions: Sequence[Condition], baselines: Mapping[str, dict] | None = None, *,
              max_control_cells: int = DEFAULT_MAX_CONTROL_CELLS, seed: int = 0,
              alpha: float = DEFAULT_ALPHA) -> tuple[dict, pd.DataFrame]:
    """The VCC block of a :class:`~txpert_head.training.trainer.Trainer` (its current weights) and of the baselines.

    ``conditions``: evaluated conditions (with data rows); ``baselines``: :func:`run_baselines` output on
    the same conditions (its ``split.test`` must be ``conditions``), or ``None``. The model's true cells are
    the rows its inputs were matched to (at most ``trainer.cfg.eval_cells`` per condition); the baselines
    are scored on the same true cells. Returns ``(block, table)``: ``block`` = ``{"prediction",
    "model": {...}, "baselines": {name: {...}}, "cell_mean": {...}, "cell_lines", "control_cells", "alpha",
    "test", "max_cells_per_condition", "seconds"}`` (each entry as in
    :func:`score_predictions`); ``table`` has ``condition``, ``vcc_des/pds/mae/pearson_delta/n_de`` (model),
    ``<baseline>_vcc_*`` and ``cell_mean_vcc_*``.
    """
    start = time.perf_counter()
    conditions = list(conditions)
    _require_cells(trainer.data)
    stream = _Streamed(conditions, trainer.iter_predicted_cells(conditions))
    preds: dict[str, Prediction] = {"TxPert": stream.cells}
    base = _baseline_predictions(conditions, baselines or {})
    preds.update(base)
    summary, table = score_predictions(trainer.data, trainer.controls, conditions, trainer.split.train, preds,
                                       true_rows=stream.rows, max_control_cells=max_control_cells,
                                       seed=seed, alpha=alpha, progress=trainer.cfg.progress)
    table = table.rename(columns={f"TxPert_vcc_{m}": f"vcc_{m}" for m in (*METRICS, "n_de")})
    block = _arrange(summary, "TxPert", list(base), prediction_kind(trainer.cfg.control_mode),
                     time.perf_counter() - start, trainer.cfg.eval_cells)
    return block, table


def baselines_vcc(data: PerturbData, controls: ControlIndex, conditions: Sequence[Condition],
                  train: Sequence[Condition], baselines: Mapping[str, dict], *, max_cells: int = 256,
                  max_control_cells: int = DEFAULT_MAX_CONTROL_CELLS, seed: int = 0,
                  alpha: float = DEFAULT_ALPHA, progress: bool = True) -> tuple[dict, pd.DataFrame]:
    """The VCC block of the baselines alone (``txpert baseline``): as :func:`model_vcc` without ``model``;
    true cells are up to ``max_cells`` rows per condition drawn with ``seed``; ``progress`` as in
    :func:`score_predictions`."""
    start = time.perf_counter()
    _require_cells(data)
    base = _baseline_predictions(list(conditions), baselines)
    summary, table = score_predictions(data, controls, conditions, train, base, max_cells=max_cells,
                                       max_control_cells=max_control_cells, seed=seed, alpha=alpha,
                                       progress=progress)
    return _arrange(summary, None, list(base), "mean profiles (baselines)", time.perf_counter() - start,
                    max_cells), table

