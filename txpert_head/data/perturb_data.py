"""Perturb-seq data for TxPert: read an AnnData ``.h5ad``, parse perturbation labels, normalise counts.

A dataset is ``n`` cells (or pseudobulk rows) by ``G`` measured genes. Each row has

* a *condition*: a perturbation, canonically the sorted constituent gene symbols joined by ``+``
  (``"KLF1+SET"``), or :data:`CONTROL` (``"ctrl"``) for control cells;
* a cell line and a batch (one of each when the file has no such column).

Expression is kept sparse (CSR, float32) and log-normalised: raw integer counts are scaled to
``target_sum`` counts per cell (default 4,000, the scale TxPert's defaults were chosen on; scanpy's
common ``normalize_total`` choice is 10,000: ``target_sum=1e4``) and ``log1p``-ed,
``x' = log(1 + target_sum * x / sum(x))``; input that is already normalised (non-integer values) is used as
is. Run folders without a recorded target were trained with 4,000 (:data:`LEGACY_TARGET_SUM`). The choice
is logged at the default verbosity (a warning). Both can be forced with ``normalize="counts"|"none"``.
A matrix that is raw counts except for a few entries (negative or non-integer values among integer
counts, e.g. five negative entries) is neither: ``auto`` refuses it with the reason and the override,
instead of silently training on unnormalised values; values used as is that are far above log scale
give a warning.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from kgbuild.labels import BATCH_COLUMNS, CELL_LINE_COLUMNS, CONTROL_LABELS, PERTURBATION_COLUMNS, is_control_label
from txpert_head.data.backed import (DEFAULT_MEMORY_BUDGET, BackedCSR, backed_mode, format_bytes, parse_bytes,
                                     stored_matrix_info)

log = logging.getLogger(__name__)

CONTROL = "ctrl"
#: counts per cell that raw counts are scaled to before log1p (the scale the defaults were chosen on;
#: scanpy's common ``normalize_total`` target is 1e4, ``--target-sum 10000``)
TARGET_SUM = 4000.0
#: the target of earlier versions (run folders whose config.json records no ``target_sum`` used it)
LEGACY_TARGET_SUM = 4000.0
_GENE_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/:@]*$")
NORMALIZE_MODES = ("auto", "counts", "none")


class DataError(ValueError):
    """Input data that cannot be used: names the file, column, label or batch that is wrong."""


@dataclass
class PerturbData:
    """Log-normalised expression and per-row labels.

    ``X``: CSR (n, G) float32, in memory or on disk (:class:`~txpert_head.data.backed.BackedCSR`: indexing
    it with rows gives in-memory CSR rows). ``condition``, ``cell_line``, ``batch``: str arrays (n,).
    ``conditions``: sorted unique conditions; ``cond_id`` (n,) int64 indexes into it. ``memory_budget``
    (bytes, None: the default): sizes the row blocks of passes over many rows
    (:func:`~txpert_head.data.backed.group_sums`); it does not change any number.
    """

    X: sp.csr_matrix
    genes: list[str]
    condition: np.ndarray
    cell_line: np.ndarray
    batch: np.ndarray
    source: str = "<memory>"
    pseudobulk: bool = False
    normalized_here: bool = False
    notes: dict = field(default_factory=dict)
    memory_budget: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.X, BackedCSR):
            self.X = sp.csr_matrix(self.X, dtype=np.float32)
        n = self.X.shape[0]
        for name in ("condition", "cell_line", "batch"):
            arr = np.asarray(getattr(self, name)).astype(str)
            if arr.shape != (n,):
                raise DataError(f"{self.source}: {name} has {arr.shape[0]} entries for {n} rows")
            setattr(self, name, arr)
        self.genes = [str(g) for g in self.genes]
        if len(self.genes) != self.X.shape[1]:
            raise DataError(f"{self.source}: {len(self.genes)} gene names for {self.X.shape[1]} columns")
        self.conditions, self.cond_id = np.unique(self.condition, return_inverse=True)
        self.cond_id = self.cond_id.astype(np.int64)

    @property
    def n_obs(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_genes(self) -> int:
        return int(self.X.shape[1])

    @property
    def gene_index(self) -> dict[str, int]:
        return {g: i for i, g in enumerate(self.genes)}

    @property
    def is_control(self) -> np.ndarray:
        return self.condition == CONTROL

    def perturbations(self) -> list[str]:
        """Non-control conditions, sorted."""
        return [c for c in self.conditions.tolist() if c != CONTROL]

    def perturbed_genes(self) -> list[str]:
        """Every gene that is a constituent of some perturbation, sorted."""
        return sorted({g for c in self.perturbations() for g in constituents(c)})

    def subset(self, rows: np.ndarray) -> "PerturbData":
        """A new dataset of the given rows (indices or boolean mask)."""
        rows = np.asarray(rows)
        return PerturbData(self.X[rows], self.genes, self.condition[rows], self.cell_line[rows], self.batch[rows],
                           source=self.source, pseudobulk=self.pseudobulk, normalized_here=self.normalized_here,
                           notes=dict(self.notes), memory_budget=self.memory_budget)

    def rename_perturbed_genes(self, mapping: dict[str, str]) -> None:
        """Rename constituent genes of the perturbations in place (``{"MARCH8": "MARCHF8"}``); conditions are
        re-canonicalised (constituents sorted). Measured genes (columns) keep their names."""
        if not mapping:
            return
        renamed = {c: "+".join(sorted(mapping.get(g, g) for g in constituents(c))) if c != CONTROL else c
                   for c in self.conditions.tolist()}
        names = np.asarray([renamed[c] for c in self.conditions.tolist()], dtype=object)
        self.condition = names[self.cond_id].astype(str)
        self.conditions, self.cond_id = np.unique(self.condition, return_inverse=True)
        self.cond_id = self.cond_id.astype(np.int64)
        self.notes.setdefault("renamed_genes", {}).update(mapping)


def constituents(condition: str) -> tuple[str, ...]:
    """The genes of a canonical condition; ``()`` for control."""
    return () if condition == CONTROL else tuple(condition.split("+"))


def parse_label(label: object, control_labels: Sequence[str]) -> str:
    """Canonical condition of one obs label.

    ``"A+B"`` -> ``"A+B"`` (constituents sorted), a control label -> :data:`CONTROL`, and GEARS-style
    ``"A+ctrl"`` -> ``"A"``. Raises :class:`DataError` for anything else (empty parts, spaces, repeats).
    """
    if label is None or (isinstance(label, float) and np.isnan(label)):
        raise DataError("missing perturbation label (NaN)")
    text = str(label).strip()
    if text in control_labels:
        return CONTROL
    parts = text.split("+")
    genes = [p for p in parts if p not in control_labels]
    if not genes:
        return CONTROL
    bad = [p for p in genes if not _GENE_TOKEN.match(p)]
    if bad or len(set(genes)) != len(genes):
        why = f"part {bad[0]!r} is not a gene symbol" if bad else "a gene is repeated"
        raise DataError(
            f"perturbation label {text!r} has unknown syntax ({why}); expected gene symbols joined by '+' "
            f"(e.g. 'KLF1+SET') or a control label ({', '.join(map(repr, control_labels))})"
        )
    return "+".join(sorted(genes))


def canonical_conditions(labels: Iterable[object], control_labels: Sequence[str], where: str = "") -> np.ndarray:
    """Vectorised :func:`parse_label` over unique labels; errors say where the label came from."""
    values = pd.Series(list(labels), dtype=object)
    if values.isna().any():
        row = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise DataError(f"{where}missing perturbation label at row {row}")
    uniq, inv = np.unique(values.astype(str).to_numpy(), return_inverse=True)
    out = []
    for lab in uniq.tolist():
        try:
            out.append(parse_label(lab, control_labels))
        except DataError as err:
            n = int(np.sum(uniq[inv] == lab))
            raise DataError(f"{where}{err} ({n} row(s))") from None
    return np.asarray(out, dtype=object)[inv].astype(str)


#: at most this share of the non-zero values may break the integer-count pattern for a matrix to be
#: refused as "counts with a few bad entries" rather than taken as already-normalised data
NEAR_COUNTS_SHARE = 0.01
#: values used as is above this are far from log-normalised scale (log1p(4000) ~ 8.3, log1p(1e6) ~ 13.8)
LOG_SCALE_MAX = 30.0


@dataclass
class ValueProfile:
    """What the stored (non-zero) values of an expression matrix look like: counts, log data, or neither."""

    n: int = 0  # non-zero stored values
    negative: int = 0
    non_integer: int = 0
    max: float = 0.0
    first_negative: int | None = None  # position in X.data of the first negative / non-integer value
    first_non_integer: int | None = None

    @property
    def counts(self) -> bool:
        """Raw counts: every value a non-negative integer, some above 1."""
        return self.n > 0 and self.negative == 0 and self.non_integer == 0 and self.max > 1

    @property
    def near_counts(self) -> bool:
        """Integer counts except for a few entries (at most :data:`NEAR_COUNTS_SHARE` of the values)."""
        bad = self.negative + self.non_integer
        return not self.counts and self.max > 1 and 0 < bad <= NEAR_COUNTS_SHARE * self.n


def value_profile(X: sp.csr_matrix, chunk: int = 1 << 24) -> ValueProfile:
    """Scan every stored value of ``X`` (in chunks): counts of negative and non-integer values, the maximum."""
    data = X.data  # in memory, or the stored values on disk (a :class:`BackedCSR`'s h5py dataset), read in chunks
    prof = ValueProfile()
    for lo in range(0, data.size, chunk):
        part = np.asarray(data[lo:lo + chunk], dtype=np.float32)
        nz = part != 0
        neg = part < 0
        frac = np.abs(part - np.round(part)) >= 1e-6
        prof.n += int(nz.sum())
        prof.negative += int(neg.sum())
        prof.non_integer += int(frac.sum())
        if part.size:
            prof.max = max(prof.max, float(part.max()))
        if prof.first_negative is None and neg.any():
            prof.first_negative = lo + int(np.argmax(neg))
        if prof.first_non_integer is None and frac.any():
            prof.first_non_integer = lo + int(np.argmax(frac))
    return prof


def _where(X: sp.csr_matrix, k: int, rows: Sequence[str], genes: Sequence[str]) -> str:
    """``value at cell 'c12', gene 'G4'`` for position ``k`` of ``X.data``."""
    row = int(np.searchsorted(X.indptr, k, side="right") - 1)
    return f"{X.data[k]:g} at cell {rows[row]!r}, gene {genes[int(X.indices[k])]!r}"


def looks_like_counts(X: sp.spmatrix | np.ndarray, sample: int = 200_000) -> bool:
    """True when every sampled stored value is a non-negative integer (raw UMI counts)."""
    data = X.data if sp.issparse(X) else np.asarray(X).ravel()
    if data.size == 0:
        return False
    if data.size > sample:
        data = data[np.random.default_rng(0).choice(data.size, sample, replace=False)]
    return bool(np.all(data >= 0) and np.all(np.abs(data - np.round(data)) < 1e-6) and data.max() > 1)


def normalize_counts(X: sp.csr_matrix, target_sum: float = TARGET_SUM) -> sp.csr_matrix:
    """``log1p(target_sum * x / rowsum(x))`` per row; all-zero rows stay zero. CSR in, CSR float32 out."""
    return normalize_rows(X, target_sum, warn=True)


def normalize_rows(X: sp.csr_matrix, target_sum: float = TARGET_SUM, warn: bool = False) -> sp.csr_matrix:
    """:func:`normalize_counts` (a row's result depends on that row only: on-disk rows are normalised as they are
    read, bit-identical to rows of the normalised matrix); ``warn``: log the number of rows without counts."""
    X = sp.csr_matrix(X, dtype=np.float32, copy=True)
    # row sums in float64 (float32 sums of huge counts overflow to inf)
    totals = np.asarray(sp.csr_matrix(X, dtype=np.float64).sum(axis=1)).ravel()
    empty = totals <= 0
    if warn and empty.any():
        log.warning("%d row(s) have no counts; left as zeros", int(empty.sum()))
    scale = np.where(empty, 0.0, target_sum / np.where(empty, 1.0, totals)).astype(np.float32)
    X.data *= np.repeat(scale, np.diff(X.indptr))
    np.log1p(X.data, out=X.data)
    return X


def _column(obs: pd.DataFrame, name: str | None, role: str, path: str, default: str) -> np.ndarray:
    if name is None:
        return np.full(len(obs), default, dtype=object)
    if name not in obs.columns:
        raise DataError(
            f"{path}: no obs column {name!r} for the {role}; columns present: {', '.join(map(str, obs.columns))}"
        )
    col = obs[name]
    if col.isna().any():
        row = obs.index[int(np.flatnonzero(col.isna().to_numpy())[0])]
        raise DataError(f"{path}: obs column {name!r} ({role}) is empty for row {row!r}")
    return col.astype(str).to_numpy()


#: value of ``batch_col`` / ``cell_line_col`` that asks for detection (by name, see :mod:`kgbuild.labels`)
AUTO = "auto"


@dataclass
class Detected:
    """The obs columns and control label(s) :func:`detect_columns` chose; ``detected`` names what was detected
    (rather than given)."""

    perturbation_col: str
    control: tuple[str, ...]
    cell_line_col: str | None = None
    batch_col: str | None = None
    n_labels: int = 0
    n_control_cells: int = 0
    detected: tuple[str, ...] = ()


def _labels_of(col: pd.Series) -> tuple[list[str], np.ndarray] | None:
    """Unique string labels of a text / categorical column and their row counts; None for other columns."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        kind = col.cat.categories.dtype
        if pd.api.types.is_numeric_dtype(kind) or pd.api.types.is_bool_dtype(kind):
            return None
    elif not (pd.api.types.is_object_dtype(col.dtype) or pd.api.types.is_string_dtype(col.dtype)):
        return None
    counts = col.astype(str).value_counts()
    counts = counts[counts > 0]
    return [str(v) for v in counts.index], counts.to_numpy()


def _control_like(labels: Sequence[str], control: Sequence[str] | None) -> list[str]:
    """The labels (or ``+``-parts of labels, GEARS's ``A+ctrl``) that mark controls, as spelled in the data."""
    found: dict[str, None] = {}
    for lab in labels:
        for part in str(lab).strip().split("+"):
            part = part.strip()
            if (part in control) if control else is_control_label(part):
                found[part] = None
    return list(found)


def _gene_like(labels: Sequence[str], controls: Sequence[str]) -> bool:
    """Every label parses as genes joined by '+' or a control, and at least one is not a control."""
    perturbed = 0
    for lab in labels:
        try:
            perturbed += parse_label(lab, controls) != CONTROL
        except DataError:
            return False
    return perturbed > 0


def _column_candidate(obs: pd.DataFrame, name: str, control: Sequence[str] | None) -> dict | None:
    """A description of ``obs[name]`` when it looks like a perturbation column: a text column with a
    control-looking label and gene-like labels (``A``, ``A+B``, ``A+ctrl``)."""
    got = _labels_of(obs[name])
    if got is None:
        return None
    labels, counts = got
    ctrls = _control_like(labels, control)
    if not ctrls or not _gene_like(labels, ctrls):
        return None
    n_ctrl = int(sum(c for lab, c in zip(labels, counts) if parse_label(lab, ctrls) == CONTROL))
    return {"name": name, "controls": ctrls, "n_labels": len(labels), "n_control_cells": n_ctrl,
            "values": obs[name].astype(str).to_numpy()}


def _describe(cands: list[dict]) -> str:
    return "; ".join(f"{c['name']!r} ({c['n_labels']} labels, control {'/'.join(map(repr, c['controls']))})"
                     for c in cands)


def _detect_perturbation(obs: pd.DataFrame, control: Sequence[str] | None, path: str) -> dict:
    """The perturbation column: by name (:data:`PERTURBATION_COLUMNS`, checked for content), else by content
    alone. Columns holding the same labels row by row count as one (the first name wins)."""
    lower = {str(c).lower(): str(c) for c in obs.columns}
    named = [lower[n] for n in PERTURBATION_COLUMNS if n in lower]
    cands = [c for c in (_column_candidate(obs, n, control) for n in named) if c is not None]
    how = "by name"
    if not cands:
        how = "by content"
        others = [str(c) for c in obs.columns if str(c) not in named]
        cands = [c for c in (_column_candidate(obs, n, control) for n in others) if c is not None]
    distinct: list[dict] = []
    for c in cands:
        if not any(np.array_equal(c["values"], d["values"]) for d in distinct):
            distinct.append(c)
    what = f"a control label ({', '.join(map(repr, control))})" if control else "a control-looking label"
    if not distinct:
        raise DataError(
            f"{path}: cannot find the perturbation column: no obs column holds {what} "
            f"and gene labels (looked by name for {', '.join(PERTURBATION_COLUMNS)}, then at every text "
            f"column); obs has: {', '.join(map(str, obs.columns)) or 'no columns'}; "
            f"pass --perturbation-col (and --control)")
    if len(distinct) > 1:
        raise DataError(
            f"{path}: ambiguous perturbation column: {len(distinct)} obs columns (found {how}) hold different "
            f"perturbation labels: {_describe(distinct)}; choose one with --perturbation-col")
    return distinct[0]


def _detect_control(obs: pd.DataFrame, column: str, path: str) -> dict:
    """The control label of the chosen ``column`` (one control-looking label, see :data:`CONTROL_LABELS`)."""
    got = _labels_of(obs[column])
    if got is None:  # a numeric column given by name: its values as text
        counts = obs[column].astype(str).value_counts()
        got = [str(v) for v in counts.index], counts.to_numpy()
    labels, counts = got
    ctrls = _control_like(labels, None)
    if not ctrls:
        top = ", ".join(f"{lab!r} ({c:,})" for lab, c in list(zip(labels, counts))[:5])
        raise DataError(
            f"{path}: no control label in column {column!r}: none of {', '.join(map(repr, CONTROL_LABELS))} "
            f"(any case); most common labels: {top}; name it with --control")
    if len(ctrls) > 1:
        whole = dict(zip(labels, counts))
        listed = ", ".join(f"{c!r} ({int(whole.get(c, 0)):,} cells)" for c in ctrls)
        raise DataError(
            f"{path}: ambiguous control label in column {column!r}: {listed} all look like controls; "
            f"pass --control for each label that marks control cells (repeatable)")
    n_ctrl = int(sum(c for lab, c in zip(labels, counts) if lab.strip() in ctrls))
    return {"name": column, "controls": ctrls, "n_labels": len(labels), "n_control_cells": n_ctrl}


def _detect_by_name(obs: pd.DataFrame, names: Sequence[str], role: str, option: str, path: str) -> str | None:
    """The obs column of ``role`` among ``names`` with more than one value (None if there is none)."""
    lower = {str(c).lower(): str(c) for c in obs.columns}
    found = [lower[n] for n in names if n in lower and obs[lower[n]].nunique() > 1]
    distinct: list[str] = []
    for c in found:
        codes = pd.factorize(obs[c].astype(str))[0]
        if not any(np.array_equal(codes, pd.factorize(obs[d].astype(str))[0]) for d in distinct):
            distinct.append(c)
    if len(distinct) > 1:
        raise DataError(f"{path}: ambiguous {role} column: {', '.join(map(repr, distinct))} all hold several "
                        f"{role}s; choose one with {option}")
    return distinct[0] if distinct else None


def detect_columns(obs: pd.DataFrame, perturbation_col: str | None = None,
                   control: str | Sequence[str] | None = None, cell_line_col: str | None = None,
                   batch_col: str | None = None, path: str = "<obs>") -> Detected:
    """Fill in what was not given: the perturbation column (``None``), its control label(s) (``None``), and
    the cell-line and batch columns when they are :data:`AUTO`. What is given is used as is.

    * Perturbation column: the obs columns named like :data:`kgbuild.labels.PERTURBATION_COLUMNS` (any case)
      that are text/categorical, hold a control-looking label (:data:`kgbuild.labels.CONTROL_LABELS`, any case,
      also as a part of GEARS's ``A+ctrl``) and otherwise gene labels (``A``, ``A+B``); if no column is named
      so, every text column is checked by content. Columns with the same labels row by row are one choice
      (the first name wins); two different ones raise :class:`DataError` listing them.
    * Control label: the control-looking label of that column; none, or two different ones (``ctrl`` and
      ``non-targeting``), raise :class:`DataError` listing them.
    * Batch / cell line (only for ``"auto"``): the columns named like :data:`kgbuild.labels.BATCH_COLUMNS` /
      :data:`kgbuild.labels.CELL_LINE_COLUMNS` with more than one value; none found: one batch / cell line.
    """
    controls = None if control is None else ((control,) if isinstance(control, str) else tuple(control))
    if controls is not None and not controls:
        controls = None
    done: list[str] = []
    if perturbation_col is None:
        chosen = _detect_perturbation(obs, controls, path)
        perturbation_col = chosen["name"]
        done.append("perturbation_col")
    elif perturbation_col not in obs.columns:
        raise DataError(f"{path}: no obs column {perturbation_col!r} for the perturbation; columns present: "
                        f"{', '.join(map(str, obs.columns))}")
    if controls is None:
        chosen = _detect_control(obs, perturbation_col, path)
        controls = tuple(chosen["controls"])
        done.append("control")
    if cell_line_col == AUTO:
        cell_line_col = _detect_by_name(obs, CELL_LINE_COLUMNS, "cell line", "--cell-line-col", path)
        done.append("cell_line_col")
    if batch_col == AUTO:
        batch_col = _detect_by_name(obs, BATCH_COLUMNS, "batch", "--batch-col", path)
        done.append("batch_col")
    values = obs[perturbation_col].astype(str)
    n_labels = int(values.nunique())
    n_ctrl = int(values.str.strip().isin(controls).sum())
    return Detected(perturbation_col, controls, cell_line_col, batch_col, n_labels, n_ctrl, tuple(done))


def _log_detected(found: Detected, path: str) -> None:
    """One line at the default verbosity (a warning) saying what was detected and which option overrides it."""
    if not found.detected:
        return
    parts, options = [], []
    if "perturbation_col" in found.detected:
        parts.append(f"perturbation column {found.perturbation_col!r} ({found.n_labels:,} labels)")
        options.append("--perturbation-col")
    if "control" in found.detected:
        parts.append(f"control label {'/'.join(map(repr, found.control))} ({found.n_control_cells:,} cells)")
        options.append("--control")
    if "cell_line_col" in found.detected:
        parts.append(f"cell-line column {found.cell_line_col!r}" if found.cell_line_col
                     else "no cell-line column (one cell line)")
        options.append("--cell-line-col")
    if "batch_col" in found.detected:
        parts.append(f"batch column {found.batch_col!r}" if found.batch_col else "no batch column (one batch)")
        options.append("--batch-col")
    log.warning("%s: %s: detected; %s to choose", path, ", ".join(parts), " / ".join(options))


def load_h5ad(
    path: str | Path,
    perturbation_col: str | None = None,
    control: str | Sequence[str] | None = None,
    cell_line_col: str | None = None,
    batch_col: str | None = None,
    normalize: str = "auto",
    pseudobulk: bool | None = None,
    layer: str | None = None,
    target_sum: float = TARGET_SUM,
    backed: bool | str = "auto",
    memory_budget: int | str | None = None,
) -> PerturbData:
    """Read ``path`` into a :class:`PerturbData`.

    ``perturbation_col``: the obs column with the perturbation; ``None`` detects it. ``control``: one label or
    several marking control rows (``ctrl``, ``control``, ``non-targeting``); ``None`` detects it.
    ``cell_line_col`` / ``batch_col``: obs columns, ``None`` for one cell line / batch, or ``"auto"`` to detect
    them by name. Detection: :func:`detect_columns`; what was used is in ``notes["columns"]`` and what was
    detected is logged at the default verbosity (a warning).
    ``normalize``: ``auto`` (raw integer counts are normalised, anything else used as is), ``counts``
    (always normalise), ``none`` (never). ``pseudobulk``: ``None`` detects it (at most one row per
    condition x cell line x batch). ``layer``: read ``adata.layers[layer]`` instead of ``X``.
    ``target_sum``: counts per cell that raw counts are scaled to before ``log1p`` (default 4,000;
    scanpy's common choice is 1e4). The result's ``notes["normalization"]`` records what was done.
    ``backed``: ``"yes"`` (True) keeps the matrix on disk and reads rows as needed
    (:class:`~txpert_head.data.backed.BackedCSR`; needs it stored as CSR), ``"no"`` (False) reads it whole,
    ``"auto"`` keeps a CSR matrix on disk when its in-memory size (``nnz * 8 + (n + 1) * 8`` bytes) exceeds
    ``memory_budget`` (bytes or ``"8GB"``; default :data:`~txpert_head.data.backed.DEFAULT_MEMORY_BUDGET`, 4 GB),
    which also sizes the row blocks of passes over many rows. Every number is the same either way.
    """
    import anndata

    path = str(path)
    if not Path(path).exists():
        raise DataError(f"{path}: no such file")
    if normalize not in NORMALIZE_MODES:
        raise DataError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
    target_sum = check_target_sum(target_sum)
    try:
        mode = backed_mode(backed)
        budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else parse_bytes(memory_budget)
    except ValueError as err:
        raise DataError(str(err)) from None
    key = "X" if layer is None else f"layers/{layer}"
    on_disk = False
    if mode != "no":
        try:
            info = stored_matrix_info(path, key)
        except Exception as err:  # h5py raises many types for damaged files
            raise DataError(f"{path}: cannot read as .h5ad ({type(err).__name__}: {err})") from None
        on_disk = mode == "yes" or (info["encoding"] == "csr_matrix" and info["memory"] > budget)
        if mode == "auto" and on_disk:
            log.warning("%s: expression matrix takes %s in memory (> memory budget %s): read from disk by rows "
                        "(--backed no to read it whole)", path, format_bytes(info["memory"]), format_bytes(budget))
    try:
        adata = _BackedFile(path, layer) if on_disk else anndata.read_h5ad(path)
    except DataError:
        raise
    except Exception as err:  # h5py / anndata raise many types for damaged files
        raise DataError(f"{path}: cannot read as .h5ad ({type(err).__name__}: {err})") from None
    if adata.n_obs == 0:
        raise DataError(f"{path}: the file has no cells (0 rows)")
    if adata.n_vars == 0:
        raise DataError(f"{path}: the file has no genes (0 columns)")
    check_unique_genes(adata.var_names.astype(str).tolist(), path)
    obs = adata.obs
    found = detect_columns(obs, perturbation_col, control, cell_line_col, batch_col, path)
    _log_detected(found, path)
    perturbation_col, controls = found.perturbation_col, found.control
    cell_line_col, batch_col = found.cell_line_col, found.batch_col
    labels = _column(obs, perturbation_col, "perturbation", path, "")
    cell_line = _column(obs, cell_line_col, "cell line", path, "all")
    batch = _column(obs, batch_col, "batch", path, "all")
    condition = canonical_conditions(labels, controls, where=f"{path}: column {perturbation_col!r}: ")
    if not np.any(condition == CONTROL):
        top = pd.Series(labels).value_counts().head(5).index.tolist()
        raise DataError(
            f"{path}: no control rows: no label in column {perturbation_col!r} equals "
            f"{', '.join(map(repr, controls))}; most common labels: {', '.join(map(repr, top))} "
            f"(set the control label option)"
        )
    if np.all(condition == CONTROL):
        raise DataError(
            f"{path}: no perturbed cells: every row of column {perturbation_col!r} is a control label "
            f"({', '.join(map(repr, controls))}); check --perturbation-col and --control"
        )
    if layer is not None:
        if layer not in adata.layers:
            raise DataError(f"{path}: no layer {layer!r}; layers present: {', '.join(adata.layers.keys()) or 'none'}")
        X = adata.layers[layer]
    else:
        X = adata.X
    if X is None:
        raise DataError(f"{path}: the file has no expression matrix (X is empty)")
    if isinstance(X, BackedCSR):
        if X.data.dtype.kind not in "biuf":
            raise DataError(f"{path}: the expression matrix is not numeric (stored as {X.data.dtype})")
    else:
        try:
            X = sp.csr_matrix(X, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise DataError(f"{path}: the expression matrix is not numeric ({err})") from None
    bad = _count_nonfinite(X.data)
    if bad:
        raise DataError(f"{path}: expression holds {bad} NaN or infinite value(s) (or values beyond the float32 "
                        f"range, ~3.4e38)")
    do_norm = _normalise_or_not(X, normalize, path, adata.obs_names.astype(str), adata.var_names.astype(str))
    if do_norm:
        log.warning("%s: normalised raw counts: %s per cell + log1p (scanpy normalize_total(target_sum=%g) + log1p); "
                    "--target-sum to change (scanpy's common choice: 10000)", path, f"{target_sum:,.6g}",
                    target_sum)
        if isinstance(X, BackedCSR):  # rows are normalised as they are read
            empty = int(np.sum(np.diff(X.indptr) == 0))
            if empty:
                log.warning("%d row(s) have no counts; left as zeros", empty)
            X.target_sum = target_sum
        else:
            X = normalize_counts(X, target_sum)
    else:
        log.info("%s: using expression as is (%s)", path, "normalize=none" if normalize == "none" else "not integer counts")
    keys = pd.DataFrame({"c": condition, "l": cell_line, "b": batch})
    max_rows = int(keys.groupby(["c", "l", "b"], observed=True).size().max())
    detected = max_rows == 1
    if pseudobulk is None:
        pseudobulk = detected
    if pseudobulk:
        log.info("%s: pseudobulk input (one row per condition x cell line x batch)", path)
    data = PerturbData(X, adata.var_names.astype(str).tolist(), condition, cell_line, batch, source=path,
                       pseudobulk=bool(pseudobulk), normalized_here=do_norm,
                       notes={"normalization": normalization_record(do_norm, target_sum),
                              "columns": {"perturbation_col": perturbation_col, "control": list(controls),
                                          "cell_line_col": cell_line_col, "batch_col": batch_col,
                                          "detected": list(found.detected)}},
                       memory_budget=budget)
    check_controls_per_batch(data)
    log.info("%s: %d rows x %d genes, %d perturbations, %d cell line(s), %d batch(es)", path, data.n_obs,
             data.n_genes, len(data.perturbations()), len(np.unique(cell_line)), len(np.unique(batch)))
    return data


class _BackedFile:
    """The parts of an ``.h5ad`` that :func:`load_h5ad` uses, with the expression matrix left on disk: ``obs``,
    ``obs_names``, ``var_names``, ``n_obs``, ``n_vars``, ``layers`` (names; the one read is a
    :class:`BackedCSR`) and ``X`` (a :class:`BackedCSR` of ``X`` or of ``layer``)."""

    def __init__(self, path: str, layer: str | None):
        import h5py
        from anndata.io import read_elem

        with h5py.File(path, "r") as f:
            self.obs = read_elem(f["obs"])
            var = read_elem(f["var"])
            names = list(f["layers"].keys()) if "layers" in f else []
        self.obs_names, self.var_names = self.obs.index, var.index
        self.n_obs, self.n_vars = len(self.obs), len(var)
        self.layers = {name: None for name in names}
        if layer is not None and layer not in self.layers:
            self.X = None
            return
        X = BackedCSR(path, "X" if layer is None else f"layers/{layer}")
        if X.shape != (self.n_obs, self.n_vars):
            raise DataError(f"{path}: expression matrix of shape {X.shape} for {self.n_obs} obs x {self.n_vars} var")
        self.X = X
        if layer is not None:
            self.layers[layer] = X


def _count_nonfinite(data, chunk: int = 1 << 24) -> int:
    """NaN / infinite values (after conversion to float32) among the stored values, in chunks (in memory or on
    disk)."""
    bad = 0
    for lo in range(0, data.size, chunk):
        part = np.asarray(data[lo:lo + chunk], dtype=np.float32)
        bad += int(part.size - np.count_nonzero(np.isfinite(part)))
    return bad


def check_target_sum(target_sum: object) -> float:
    """``target_sum`` as a positive finite float; :class:`DataError` otherwise."""
    try:
        value = float(target_sum)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(f"target_sum must be a number, got {target_sum!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise DataError(f"target_sum must be a positive number of counts per cell, got {target_sum!r}")
    return value


def normalization_record(normalized_here: bool, target_sum: float) -> dict:
    """What was done to the expression: ``{"normalized_here", "target_sum", "log1p"}`` (``target_sum`` None and
    ``log1p`` False when the values were used as stored)."""
    return {"normalized_here": bool(normalized_here), "target_sum": float(target_sum) if normalized_here else None,
            "log1p": bool(normalized_here)}


def check_unique_genes(genes: Sequence[str], source: str) -> None:
    """Raise :class:`DataError` naming the repeated gene names (``var_names``) with their columns."""
    seen: dict[str, list[int]] = {}
    for i, g in enumerate(genes):
        seen.setdefault(g, []).append(i)
    dups = {g: cols for g, cols in seen.items() if len(cols) > 1}
    if dups:
        shown = "; ".join(f"{g!r} (columns {', '.join(map(str, cols[:5]))}{' ...' if len(cols) > 5 else ''})"
                          for g, cols in list(dups.items())[:10])
        raise DataError(
            f"{source}: duplicate gene names in var_names: {len(seen)} unique names for {len(genes)} columns; "
            f"{len(dups)} repeated: {shown}{' ...' if len(dups) > 10 else ''}. Each column must be one gene: "
            f"drop or merge the repeated columns (or make the names unique, e.g. anndata's var_names_make_unique)"
        )


def _normalise_or_not(X: sp.csr_matrix, normalize: str, path: str, rows: Sequence[str],
                      genes: Sequence[str]) -> bool:
    """Whether to normalise ``X`` as counts (see the module docstring); raises :class:`DataError` for counts with
    a few bad entries under ``auto`` and for negative values under ``counts``; warns when values used as is are
    far above log scale."""
    prof = value_profile(X)
    if prof.n == 0:
        raise DataError(f"{path}: every expression value is 0; there is nothing to learn from")
    if normalize == "counts":
        if prof.negative:
            raise DataError(
                f"{path}: --normalize counts, but {prof.negative} value(s) are negative (e.g. "
                f"{_where(X, prof.first_negative, rows, genes)}); counts cannot be negative. Fix those entries, "
                f"or use --normalize none to use the values as they are")
        return True
    if normalize == "none":
        return False
    if prof.counts:
        return True
    if prof.near_counts:
        bad = []
        if prof.negative:
            bad.append(f"{prof.negative} negative value(s) (e.g. {_where(X, prof.first_negative, rows, genes)})")
        if prof.non_integer:
            bad.append(f"{prof.non_integer} non-integer value(s) (e.g. {_where(X, prof.first_non_integer, rows, genes)})")
        share = 1 - (prof.negative + prof.non_integer) / prof.n
        raise DataError(
            f"{path}: the expression looks like raw counts ({share:.2%} of the {prof.n:,} non-zero values are "
            f"non-negative integers, max {prof.max:g}) except for {' and '.join(bad)}, so it is neither counts "
            f"nor normalised data and is not normalised automatically. Fix those entries, or choose: "
            f"--normalize none (use the values as they are) or --normalize counts (normalise them as counts; "
            f"needs no negative values)")
    if prof.max > LOG_SCALE_MAX:
        log.warning(
            "%s: expression is used as is (not integer counts), but values reach %g, far above log-normalised "
            "scale (log1p(4000) = 8.3): the values look not log-transformed, and training on them weights the "
            "highest-expressed genes. If they are counts or unlogged values, pass --normalize counts; if they are "
            "as intended, pass --normalize none to silence this", path, prof.max)
    return False


def dense_rows(X: sp.csr_matrix, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``X[rows].toarray()`` as float32 (len(rows), G): one C gather of the rows' CSR entries by the index
    array and one densification, written into ``out`` when given (a C-contiguous float32 array of that shape,
    zeroed here; e.g. a reused pinned buffer) instead of a new array."""
    rows = np.asarray(rows, dtype=np.int64)
    shape = (len(rows), X.shape[1])
    if out is None:
        out = np.zeros(shape, dtype=np.float32)
    else:
        if out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}")
        out.fill(0.0)
    if len(rows):
        part = X[rows]
        if part.dtype == np.float32:
            part.toarray(out=out)  # adds the entries (duplicates summed) into the zeroed buffer
        else:
            out[...] = part.toarray()
    return out


def check_controls_per_batch(data: PerturbData) -> None:
    """Every (cell line, batch) with perturbed rows must have control rows (batch-matched references)."""
    frame = pd.DataFrame({"l": data.cell_line, "b": data.batch, "ctrl": data.is_control})
    has = frame.groupby(["l", "b"], observed=True)["ctrl"].any()
    missing = has[~has]
    if len(missing):
        line, batch = missing.index[0]
        where = f"batch {batch!r}" + (f" of cell line {line!r}" if line != "all" else "")
        raise DataError(
            f"{data.source}: no control cells in {where} ({len(missing)} batch(es) without controls); "
            f"batch-matched control means need controls in every batch"
        )


def graph_overlap(data: PerturbData, graph_nodes: Iterable[str], graph_name: str = "graph") -> dict[str, int]:
    """Count perturbed genes in / not in the graph; raise :class:`DataError` when none is.

    Genes missing from the graph still get an (isolated, learnable) encoder row; they are counted in the log.
    """
    nodes = set(graph_nodes)
    genes = data.perturbed_genes()
    present = [g for g in genes if g in nodes]
    missing = [g for g in genes if g not in nodes]
    if genes and not present:
        sample = sorted(nodes)[:5]
        raise DataError(
            f"{graph_name} has no overlap with the data's perturbed genes: none of {len(genes)} genes "
            f"(e.g. {', '.join(genes[:5])}) is a node; graph nodes look like {', '.join(sample) or '(no nodes)'}"
        )
    if missing:
        log.warning("%d of %d perturbed genes are not in %s (isolated encoder rows): %s%s", len(missing), len(genes),
                    graph_name, ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""),
                    "" if data.notes.get("symbols") else "; --gene-info maps previous symbols and aliases "
                    "(e.g. MARCH8 -> MARCHF8) to the graph's")
    measured = len(set(data.genes) & nodes)
    log.info("%s: %d/%d perturbed genes and %d/%d measured genes are graph nodes", graph_name, len(present),
             len(genes), measured, data.n_genes)
    return {"perturbed_genes": len(genes), "perturbed_in_graph": len(present), "perturbed_missing": len(missing),
            "measured_in_graph": measured}
