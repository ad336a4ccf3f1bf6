"""Score any model's predictions with the project's metrics (``txpert score``).

A predictions file (``.h5ad``) from any tool -- GEARS, scGPT, a linear model, TxPert's own -- is compared
with the truth of a Perturb-seq data file exactly as ``txpert train`` / ``evaluate`` compare TxPert:

* Truth: the data file read as training reads it (:meth:`txpert_head.runs.folder.DataOptions.load`), the true
  means ``x̄_p`` and batch-matched references ``r_p`` of :func:`txpert_head.data.profiles.true_profiles`, the
  retrieval / Systema candidates of :func:`txpert_head.data.profiles.retrieval_candidates`.
* Metrics: :func:`txpert_head.metrics.expression.evaluate` (Pearson Δ, MSE, retrieval, Systema's Pearson Δ against
  the perturbed mean and centroid accuracy, PerturBench rank, target-gene error).
* Baselines on the same conditions (:func:`txpert_head.evaluation.baselines.run_baselines`) and the paired
  comparison of the predictions with each (:func:`txpert_head.metrics.paired.paired_comparison`), put beside the
  model's scores as ``txpert evaluate`` does (:func:`txpert_head.runs.folder._baseline_section`).

So a TxPert run's own predictions scored here give ``txpert evaluate``'s figures.

What a predictions file may hold:

* rows: one mean profile per perturbation, or cells (several rows per perturbation; averaged to one mean
  profile per perturbation, per cell line when a cell-line column exists);
* labels: ``A``, ``A+B`` (any order), GEARS's ``A+ctrl`` / ``ctrl+A`` / ``ctrl``, or the project's
  ``line|A+B`` names (the names of ``per_perturbation.csv`` and ``split.json``); control rows are not scored;
* the perturbation column: given, or detected: the obs columns named like
  :data:`kgbuild.labels.PERTURBATION_COLUMNS` first, then every other text column, then the obs names -- the
  one whose labels parse as perturbations and name conditions of the data;
* genes: ``var_names`` must include every gene of the data (extra genes are ignored, the order need not match);
* scale: log1p of normalised expression, as the data after :func:`txpert_head.data.perturb_data.load_h5ad`. Cells of raw
  integer counts are normalised the way the data was (same ``target_sum`` + log1p) when the data itself was
  normalised from counts; anything else far from the data's scale (unlogged values, changes Δ instead of
  expression) is refused with a :class:`txpert_head.data.perturb_data.DataError` that says what was seen.

Which conditions are scored: with a split (``split.json`` of a run, or a :class:`~txpert_head.data.splits.Split`),
its test (or ``part``) conditions, every one of which must be predicted; without, every predicted
perturbation that has truth in the data, and the baselines are trained on the data's other perturbations.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from kgbuild.labels import CELL_LINE_COLUMNS, CONTROL_LABELS, PERTURBATION_COLUMNS
from txpert_head.metrics import expression as metrics
from txpert_head.evaluation.baselines import run_baselines
from txpert_head.data.controls import ControlIndex
from txpert_head.data.perturb_data import (CONTROL, LOG_SCALE_MAX, DataError, PerturbData, looks_like_counts, normalize_counts,
                              parse_label)
from txpert_head.data.profiles import (ConditionMeans, condition_name, retrieval_candidates, rows_by_condition,
                                      true_profiles)
from txpert_head.data.splits import Condition, Split

log = logging.getLogger(__name__)

#: the predictions' mean expression may differ from the truth's by at most this factor (either way) before
#: the predictions are taken to be on another scale (unlogged, counts, or changes instead of expression)
SCALE_RATIO_MAX = 2.0
#: share of clearly negative predicted values (< -0.05) that, with a mean far below the truth's, marks changes (Δ)
#: rather than log expression (models predict some slightly negative expression: GEARS does, for a few % of values)
NEGATIVE_SHARE_MAX = 0.01


@dataclass
class Predictions:
    """Predicted mean expression (P, G) in the data's gene order, one row per condition."""

    conditions: list[Condition]
    X: np.ndarray
    notes: dict[str, Any] = field(default_factory=dict)


def _read(path: str | Path):
    import anndata

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such predictions file")
    try:
        return anndata.read_h5ad(path)
    except Exception as err:  # h5py / anndata raise many types for damaged files
        raise DataError(f"{path}: cannot read as .h5ad ({type(err).__name__}: {err})") from None


def _split_line(label: str) -> tuple[str | None, str]:
    """``line|pert`` -> (line, pert); a plain label -> (None, label)."""
    label = str(label).strip()
    if "|" in label:
        line, pert = label.split("|", 1)
        return line.strip(), pert.strip()
    return None, label


def _parse_labels(values: Sequence[object], controls: Sequence[str]) -> list[tuple[str | None, str]] | None:
    """(line or None, canonical condition) per label; None when a label does not parse as a perturbation."""
    out, cache = [], {}
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return None
        key = str(v)
        if key not in cache:
            line, pert = _split_line(key)
            try:
                cache[key] = (line, parse_label(pert, controls))
            except DataError:
                return None
        out.append(cache[key])
    return out


def _text_column(col: pd.Series) -> bool:
    if isinstance(col.dtype, pd.CategoricalDtype):
        return not pd.api.types.is_numeric_dtype(col.cat.categories.dtype)
    return pd.api.types.is_object_dtype(col.dtype) or pd.api.types.is_string_dtype(col.dtype)


def _perturbation_labels(obs: pd.DataFrame, obs_names: Sequence[str], column: str | None, controls: Sequence[str],
                         truth: set[str], path: str) -> tuple[str, list[tuple[str | None, str]]]:
    """The perturbation column of the predictions (given or detected) and its parsed labels."""
    if column is not None:
        if column not in obs.columns:
            raise DataError(f"{path}: no obs column {column!r} for the perturbation; columns present: "
                            f"{', '.join(map(str, obs.columns)) or 'none'}")
        parsed = _parse_labels(obs[column].astype(str).tolist(), controls)
        if parsed is None:
            bad = next(v for v in obs[column].astype(str).unique() if _parse_labels([v], controls) is None)
            raise DataError(f"{path}: obs column {column!r}: label {bad!r} is not a perturbation; expected gene "
                            f"symbols joined by '+' (A, A+B, GEARS's A+ctrl), a control label, or the project's "
                            f"line|A+B names")
        return column, parsed
    lower = {str(c).lower(): str(c) for c in obs.columns}
    named = [lower[n] for n in PERTURBATION_COLUMNS if n in lower]
    others = [str(c) for c in obs.columns if str(c) not in named]
    tiers = [("by name", [(n, obs[n]) for n in named]),
             ("by content", [(n, obs[n]) for n in others]),
             ("obs names", [("obs_names", pd.Series(list(obs_names), dtype=object))])]
    for how, cols in tiers:
        found: list[tuple[str, list]] = []
        for name, col in cols:
            if not _text_column(col):
                continue
            parsed = _parse_labels(col.astype(str).tolist(), controls)
            if parsed is None or not any(p in truth for _, p in parsed):
                continue
            if not any(parsed == f for _, f in found):
                found.append((name, parsed))
        if len(found) > 1:
            raise DataError(f"{path}: ambiguous perturbation column: {', '.join(repr(n) for n, _ in found)} (found "
                            f"{how}) hold different perturbation labels; choose one with --pred-perturbation-col")
        if found:
            log.warning("%s: perturbation labels from %s (detected %s); --pred-perturbation-col to choose", path,
                        repr(found[0][0]) if how != "obs names" else "the obs names", how)
            return found[0]
    raise DataError(
        f"{path}: cannot find the perturbation labels: no obs column (looked by name for "
        f"{', '.join(PERTURBATION_COLUMNS)}, then at every text column) nor the obs names hold labels that parse as "
        f"perturbations (A, A+B, A+ctrl, line|A+B) and name a perturbation of the data (e.g. "
        f"{', '.join(sorted(truth)[:3])}); obs has: {', '.join(map(str, obs.columns)) or 'no columns'}; "
        f"pass --pred-perturbation-col")


def _cell_lines(obs: pd.DataFrame, column: str | None, parsed: list[tuple[str | None, str]], data_lines: list[str],
                path: str) -> np.ndarray:
    """The cell line of each predictions row: ``line|`` of the label, else the cell-line column, else the data's
    only line."""
    if column is not None and column not in obs.columns:
        raise DataError(f"{path}: no obs column {column!r} for the cell line; columns present: "
                        f"{', '.join(map(str, obs.columns))}")
    if column is None:
        lower = {str(c).lower(): str(c) for c in obs.columns}
        named = [lower[n] for n in CELL_LINE_COLUMNS if n in lower]
        column = named[0] if named else None
    col = obs[column].astype(str).to_numpy() if column is not None else None
    lines = []
    for i, (line, _) in enumerate(parsed):
        if line is None and col is not None:
            line = col[i]
        if line is None:
            if len(data_lines) > 1:
                raise DataError(f"{path}: the data has several cell lines ({', '.join(data_lines)}) but the "
                                "predictions name none: give a cell-line column (--pred-cell-line-col) or label "
                                "rows line|perturbation")
            line = data_lines[0]
        elif line not in data_lines and len(data_lines) == 1 and data_lines[0] == "all":
            line = "all"  # the data has one unnamed line: any line of the predictions is that one
        lines.append(line)
    unknown = sorted(set(lines) - set(data_lines))
    if unknown:
        raise DataError(f"{path}: cell line(s) {', '.join(map(repr, unknown))} of the predictions are not in the "
                        f"data (which has {', '.join(map(repr, data_lines))})")
    return np.asarray(lines, dtype=object)


def _check_scale(pred: np.ndarray, truth: np.ndarray, path: str, data_source: str) -> None:
    """Refuse predictions whose values are clearly on another scale than the truth (log1p expression)."""
    if not np.all(np.isfinite(pred)):
        raise DataError(f"{path}: {int(np.sum(~np.isfinite(pred)))} predicted value(s) are NaN or infinite")
    p_mean, t_mean = float(pred.mean()), float(truth.mean())
    p_max, t_max = float(pred.max()), float(truth.max())
    neg = float(np.mean(pred < -0.05))
    seen = (f"predicted mean {p_mean:.3g}, max {p_max:.3g}, {neg:.1%} values below -0.05; the data's true means "
            f"of the same perturbations: mean {t_mean:.3g}, max {t_max:.3g}")
    if (p_max > LOG_SCALE_MAX >= t_max) or (t_mean > 0 and p_mean > SCALE_RATIO_MAX * t_mean):
        raise DataError(f"{path}: the predictions look like expression on a raw (not log1p) scale ({seen}); give "
                        f"log1p of normalised expression as in {data_source} (np.log1p of the values if they "
                        "are normalised counts; cells of raw counts are normalised here)")
    if t_mean > 0 and p_mean < t_mean / SCALE_RATIO_MAX:
        what = ("changes (Δ versus control) rather than expression; give control mean + Δ" if neg > NEGATIVE_SHARE_MAX
                else "another transform (log2, log10, scaled) rather than log1p expression")
        raise DataError(f"{path}: the predictions are far below the data's scale ({seen}): they look like {what} "
                        f"on the scale of {data_source}")


def read_predictions(path: str | Path, data: PerturbData, perturbation_col: str | None = None,
                     cell_line_col: str | None = None) -> Predictions:
    """The predictions file as mean profiles (one per (cell line, condition), data gene order); see the module
    docstring for what is accepted. Conditions without truth in ``data`` are kept (the caller decides)."""
    path = str(path)
    adata = _read(path)
    if adata.n_obs == 0:
        raise DataError(f"{path}: the predictions file has no rows")
    controls = tuple(dict.fromkeys([*CONTROL_LABELS, *data.notes.get("columns", {}).get("control", []), CONTROL]))
    truth = set(data.perturbations())
    column, parsed = _perturbation_labels(adata.obs, adata.obs_names.astype(str).tolist(), perturbation_col,
                                          controls, truth, path)
    lines = _cell_lines(adata.obs, cell_line_col, parsed, sorted(set(data.cell_line.tolist())), path)
    genes = [str(g) for g in adata.var_names]
    pos = {g: i for i, g in enumerate(genes)}
    if len(pos) != len(genes):
        raise DataError(f"{path}: duplicate gene names in var_names ({len(genes) - len(pos)} repeated)")
    missing = [g for g in data.genes if g not in pos]
    if missing:
        raise DataError(f"{path}: {len(missing)} of the data's {data.n_genes} genes are not predicted (e.g. "
                        f"{', '.join(missing[:5])}); the predictions must cover every measured gene of {data.source} "
                        f"(var_names: {', '.join(genes[:5])}{' ...' if len(genes) > 5 else ''})")
    X = adata.X
    if X is None:
        raise DataError(f"{path}: the predictions file has no expression matrix (X is empty)")
    try:
        X = sp.csr_matrix(X, dtype=np.float64) if sp.issparse(X) else np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(f"{path}: the predictions are not numeric ({err})") from None
    cols = np.asarray([pos[g] for g in data.genes], dtype=np.int64)
    conds = np.asarray([p for _, p in parsed], dtype=object)
    keep = conds != CONTROL
    if not keep.any():
        raise DataError(f"{path}: every row of {column!r} is a control label; nothing to score")
    notes: dict[str, Any] = {"file": path, "perturbation_col": column, "rows": int(adata.n_obs),
                             "control_rows_skipped": int((~keep).sum()), "extra_genes": len(genes) - len(cols)}
    norm = data.notes.get("normalization", {})
    if looks_like_counts(X) and int(pd.Series(list(zip(lines[keep], conds[keep]))).value_counts().max()) > 1:
        if not norm.get("normalized_here"):
            raise DataError(f"{path}: the predictions are raw integer counts but {data.source} is not counts (used "
                            "as stored); give predictions on the data's scale")
        X = normalize_counts(sp.csr_matrix(X), norm["target_sum"]).astype(np.float64)
        notes["normalized"] = f"raw counts -> {norm['target_sum']:g} per cell + log1p, as the data"
        log.warning("%s: %s", path, notes["normalized"])
    frame = pd.DataFrame({"l": lines[keep], "c": conds[keep]})
    groups = frame.groupby(["l", "c"], sort=True).indices
    X = X[np.flatnonzero(keep)]
    out = np.zeros((len(groups), len(cols)))
    for k, idx in enumerate(groups.values()):
        out[k] = np.asarray(X[idx].mean(axis=0)).ravel()[cols]
    n_rows = [len(v) for v in groups.values()]
    notes["rows_per_condition_max"] = int(max(n_rows))
    notes["averaged"] = bool(max(n_rows) > 1)
    return Predictions([(str(l), str(c)) for l, c in groups], out, notes)


def _resolve_split(split: Split | str | Path | None) -> Split | None:
    if split is None or isinstance(split, Split):
        return split
    path = Path(split)
    if path.is_dir():
        path = path / "split.json"
    if not path.exists():
        raise DataError(f"{path}: no such split file (a run folder's split.json)")
    try:
        return Split.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a split file ({type(err).__name__}: {err})") from None


def score_predictions(predictions: str | Path | Predictions, data: PerturbData,
                      split: Split | str | Path | None = None,
                      part: str = "test", graph=None, baselines: bool = True, split_half_seeds: int = 5,
                      seed: int | None = None, perturbation_col: str | None = None,
                      cell_line_col: str | None = None, metric_seed: int | None = None,
                      ) -> tuple[pd.DataFrame, dict[str, Any], dict[str, dict]]:
    """Score predictions against ``data``'s truth; returns ``(table, summary, paired)`` as ``txpert evaluate``:

    * ``table``: one row per scored condition (``condition`` as ``line|pert`` or ``pert``, the metrics of
      :func:`txpert_head.metrics.expression.evaluate`, and ``<baseline>_<metric>`` columns);
    * ``summary``: the mean metrics at the top level, ``"baselines"`` (and ``"baselines_sd"``), ``"paired"``
      and ``"scored"`` (what was read: file, column, rows, conditions left out);
    * ``paired``: the predictions minus each baseline in Pearson Δ over the same conditions
      (:func:`txpert_head.metrics.paired.paired_comparison`); ``{}`` without baselines.

    ``predictions``: a ``.h5ad`` path (:func:`read_predictions`) or :class:`Predictions`. ``split``: a
    :class:`Split`, a ``split.json`` or a run folder; its ``part`` conditions are scored. ``graph``: a
    :class:`kgbuild.graph.MultiGraph` for the graph baselines. ``seed``: of the baselines and the paired test
    (default: the split's seed, else 0); ``metric_seed``: of the sampled retrieval (``retrieval_fast``; a TxPert
    run uses its model seed; default ``seed``)."""
    from txpert_head.runs.folder import _baseline_section

    split = _resolve_split(split)
    if split is not None and part not in ("train", "val", "test"):
        raise ValueError(f"part must be train, val or test, got {part!r}")
    pred = predictions if isinstance(predictions, Predictions) else read_predictions(
        predictions, data, perturbation_col, cell_line_col)
    where = pred.notes.get("file", "predictions")
    rows = rows_by_condition(data)
    have = {c: k for k, c in enumerate(pred.conditions)}
    if split is not None:
        conds = list(getattr(split, part))
        if not conds:
            raise DataError(f"the {part} part of the split is empty")
        no_truth = [condition_name(c) for c in conds if c not in rows]
        if no_truth:
            raise DataError(f"{len(no_truth)} {part} condition(s) of the split have no rows in {data.source} (e.g. "
                            f"{', '.join(no_truth[:5])}): is it the data the split was made on?")
        absent = [condition_name(c) for c in conds if c not in have]
        if absent:
            raise DataError(f"{where}: {len(absent)} of the {len(conds)} {part} condition(s) of the split are not "
                            f"predicted: {', '.join(absent[:10])}{' ...' if len(absent) > 10 else ''}")
        base_split = dataclasses.replace(split, test=conds, subgroups={})
    else:
        conds = [c for c in pred.conditions if c in rows]
        if not conds:
            raise DataError(f"{where}: none of the {len(pred.conditions)} predicted perturbation(s) (e.g. "
                            f"{', '.join(condition_name(c) for c in pred.conditions[:5])}) is in {data.source} "
                            f"(which has e.g. {', '.join(data.perturbations()[:5])})")
        scored = set(conds)
        base_split = Split("scored", [c for c in rows if c[1] != CONTROL and c not in scored], [], conds,
                           seed=0 if seed is None else seed)
    left_out = [condition_name(c) for c in pred.conditions if c not in set(conds)]
    seed = (split.seed if split is not None else 0) if seed is None else seed
    controls = ControlIndex(data)
    profile_means = ConditionMeans(data, rows)   # one pass over the data: the truths, candidates and baselines
    true_mean, ref = true_profiles(data, controls, conds, rows, profile_means)
    X = pred.X[[have[c] for c in conds]]
    _check_scale(X, true_mean, where, data.source)
    cand, self_index = retrieval_candidates(data, controls, conds, rows, profile_means)
    names = [condition_name(c) for c in conds]
    table, means = metrics.evaluate(names, X, true_mean, ref, data.gene_index, cand, self_index,
                                    seed=seed if metric_seed is None else metric_seed)
    summary: dict[str, Any] = dict(means)
    summary["scored"] = {**pred.notes, "conditions": len(conds), "part": part if split is not None else None,
                         "not_scored": left_out}
    if left_out:
        log.warning("%s: %d predicted condition(s) not scored (%s): %s", where, len(left_out),
                    f"not in the split's {part} part" if split is not None else "no truth in the data",
                    ", ".join(left_out[:10]) + (" ..." if len(left_out) > 10 else ""))
    if baselines and not base_split.train:
        summary["baselines_skipped"] = "no other perturbation in the data to train the baselines on"
    elif baselines:
        base = run_baselines(data, base_split, split_half_seeds=split_half_seeds, controls=controls, seed=seed,
                             graph=graph, means=profile_means)
        table = _baseline_section(summary, table, base, seed)
    return table, summary, summary.get("paired", {})


def score_files(predictions: str | Path, data: str | Path, split: str | Path | None = None, part: str = "test",
                graph: str | Path | None = None, baselines: bool = True, split_half_seeds: int = 5,
                seed: int | None = None, perturbation_col: str | None = None, cell_line_col: str | None = None,
                data_options: dict[str, Any] | None = None,
                ) -> tuple[pd.DataFrame, dict[str, Any], dict[str, dict], list[str]]:
    """:func:`score_predictions` from files: the predictions ``.h5ad``, the data ``.h5ad``, and optionally a
    run's ``split.json`` (or run folder) and a ``.kg.npz`` graph for the graph baselines.

    ``data_options``: :class:`txpert_head.runs.folder.DataOptions` fields given by the caller (``perturbation_col``,
    ``control``, ``cell_line_col``, ``batch_col``, ``normalize``, ``target_sum``, ``gene_info``; None or
    missing: not given). When ``split`` belongs to a run folder, the data options the run recorded in its
    ``config.json`` (:meth:`DataOptions.from_config`), its graph (:func:`txpert_head.runs.folder.run_graph_path`, when
    the file is still there) and its model seed fill what is not given, so a run's own predictions reproduce
    ``txpert evaluate``. ``perturbation_col`` / ``cell_line_col``: columns of the *predictions* file. Returns
    ``(table, summary, paired, taken)`` with ``taken`` the names of the options taken from the run."""
    from txpert_head.runs.folder import DataOptions, load_graph_for, run_graph_path

    given = {k: v for k, v in (data_options or {}).items() if v is not None}
    if isinstance(given.get("control"), str):
        given["control"] = [given["control"]]
    run = run_config(split)
    taken: list[str] = []
    metric_seed = None
    if run is None:
        opts = DataOptions(str(data), **given)
    else:
        config, run_dir = run
        recorded = {k: v for k, v in config["data"].items() if k != "path"}
        taken = [k for k, v in recorded.items() if k not in given and v is not None]
        opts = DataOptions.from_config({**recorded, **given, "path": str(data)})
        recorded_graph = config.get("graph_resolved") or config.get("graph")
        if graph is None and recorded_graph and Path(recorded_graph).exists():
            graph = run_graph_path(config, run_dir)  # refused when its content changed since training
            taken.append("graph")
        metric_seed = config.get("train", {}).get("seed")
    loaded = opts.load()
    graph_obj = load_graph_for(loaded, graph, opts.gene_info) if graph is not None and baselines else None
    table, summary, paired = score_predictions(predictions, loaded, split, part, graph=graph_obj,
                                               baselines=baselines, split_half_seeds=split_half_seeds, seed=seed,
                                               perturbation_col=perturbation_col, cell_line_col=cell_line_col,
                                               metric_seed=metric_seed)
    return table, summary, paired, taken


def run_config(split_path: str | Path | None) -> tuple[dict[str, Any], Path] | None:
    """``(config, run folder)``: the ``config.json`` of the run folder ``split_path`` is (or whose ``split.json``
    it is), or None when it is not in a run folder."""
    from txpert_head.runs.predictor import _read_json

    if split_path is None:
        return None
    path = Path(split_path)
    run_dir = path if path.is_dir() else path.parent
    if not (run_dir / "config.json").exists():
        return None
    config = _read_json(run_dir / "config.json")
    if not isinstance(config, dict) or not isinstance(config.get("data"), dict):
        return None
    return config, run_dir
