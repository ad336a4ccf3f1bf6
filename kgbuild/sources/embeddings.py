"""Embedding tables for screen graphs: one profile per gene, read from parquet / csv / tsv / h5ad.

This is the parsing half of :mod:`kgbuild.sources.screen` (which searches the profiles for similar pairs).

Inputs (:func:`load_embeddings`):

* genes x features tables (parquet, csv, tsv; ``.gz`` allowed): one gene column (``gene_column``, or
  the only non-numeric column) and numeric feature columns. Several rows of one gene are aggregated
  (``mean`` by default, ``median``, ``first``; ``none`` makes duplicates an error). NaN or inf is an
  error naming gene and column, unless ``max_nan_frac`` is given (then: genes with a larger NaN fraction
  are dropped, remaining NaN replaced by the feature's mean over genes).
* features x genes tables such as DepMap's ``CRISPRGeneEffect.csv`` (rows = models ``ACH-...``, columns
  ``SYMBOL (EntrezID)``): detected from the headers (or ``orientation="features-by-genes"``),
  transposed, symbols parsed from the headers; genes with more than ``max_nan_frac`` (default 0.5) NaN
  are dropped and the remaining NaN replaced by that gene's mean over the models it was screened in.
* ``.h5ad`` Perturb-seq data (cells x measured genes): with an ``obs`` column of perturbation labels
  (``obs_column``; auto-detected among ``perturbation``, ``condition``, ``target``, ``gene`` when it
  holds a control label), each single-gene perturbation ``p`` becomes the row
  ``mean(X[cells of p]) - mean(X[control cells])`` (mean change of expression; ``X`` is used as stored,
  so normalise raw counts first); combinations (``A+B``) are skipped and counted. Without such a column
  ``.X`` itself is read as a genes x features table (gene = ``obs_names`` or ``obs[gene_column]``).

Rows whose profile is all zeros have no direction: they are dropped, counted and logged.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kgbuild.errors import KgbuildInputError
from kgbuild.labels import CONTROL_LABELS, PERTURBATION_COLUMNS
from kgbuild.sources.textfiles import first_line, guess_separator, reader_error

log = logging.getLogger(__name__)

ORIENTATIONS = ("auto", "genes-by-features", "features-by-genes")
AGGREGATES = ("mean", "median", "first", "none")
DEPMAP_HEADER = re.compile(r"^\s*(\S+)\s+\((\d+)\)\s*$")  # "TP53 (7157)"
GENE_COLUMN_NAMES = ("gene", "genes", "symbol", "gene_symbol", "gene_name", "hgnc_symbol")
DEFAULT_DEPMAP_MAX_NAN = 0.5
TEXT_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
_SEP_NAMES = {",": "comma", "\t": "tab"}
_SEP_SUFFIX = {",": ".csv", "\t": ".tsv"}


# ---------------------------------------------------------------------- embedding table
@dataclass(frozen=True)
class EmbeddingTable:
    """Profiles ready for similarity search.

    ``genes``: unicode ``(N,)``, unique and sorted; ``values``: float32 ``(N, D)``, finite, no all-zero
    row; ``features``: the ``D`` feature names; ``record``: how the table was read (for provenance).
    """

    genes: np.ndarray
    values: np.ndarray
    features: list[str]
    record: dict[str, Any] = field(default_factory=dict)


def _read_frame(path: Path):
    """A pandas DataFrame from parquet / csv / tsv (optionally gzipped); parquet indexes become columns."""
    import pandas as pd

    suffixes = [s.lower() for s in path.suffixes]
    base = suffixes[-2] if suffixes and suffixes[-1] in (".gz", ".bz2", ".xz", ".zst") and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    try:
        if base in (".parquet", ".pq"):
            df = pd.read_parquet(path)
            if not isinstance(df.index, pd.RangeIndex):
                df = df.reset_index()
            return df
        if base in TEXT_SUFFIXES:
            sep = TEXT_SUFFIXES[base]
            df = pd.read_csv(path, sep=sep, low_memory=False)
            if df.shape[1] == 1:
                other = guess_separator(first_line(path), sep)
                if other is not None:
                    rename = f" (or rename it to {_SEP_SUFFIX[other]})" if other in _SEP_SUFFIX else ""
                    raise KgbuildInputError(
                        f"the table has a single column {str(df.columns[0])[:60]!r}: it looks {other!r}-separated, "
                        f"but a {base} file is read as {sep!r}-separated; save it {_SEP_NAMES[sep]}-separated"
                        f"{rename}", path=path, line=1)
            return df
    except KgbuildInputError:
        raise
    except (ValueError, OSError, EOFError, pd.errors.ParserError, UnicodeDecodeError) as err:
        located = reader_error(path, err)
        if located is not None:
            raise located from None
        raise KgbuildInputError(f"cannot read the table ({type(err).__name__}: {err})", path=path) from None
    raise KgbuildInputError(
        f"unknown embedding file type {''.join(path.suffixes) or '(none)'}; use .parquet, .csv, .tsv, .txt "
        "(optionally .gz) or .h5ad", path=path,
    )


def _is_numeric(series) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _row_location(path: Path, row: int) -> dict[str, Any]:
    """``line=`` for text tables (header is line 1), a row number in the message otherwise."""
    return {"line": row + 2} if _is_text(path) else {}


def _is_text(path: Path) -> bool:
    return any(s.lower() in TEXT_SUFFIXES for s in path.suffixes)


def _where_row(path: Path, row: int) -> str:
    return "" if _is_text(path) else f" (row {row + 1})"


def load_embeddings(
    path: str | Path,
    *,
    gene_column: str | None = None,
    orientation: str = "auto",
    aggregate: str = "mean",
    max_nan_frac: float | None = None,
    obs_column: str | None = None,
    control: str | None = None,
) -> EmbeddingTable:
    """Read an embedding table (see the module docstring) into unique, sorted, finite gene profiles."""
    path = Path(path)
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    if not path.is_file():
        raise KgbuildInputError("no such file", path=path)
    if path.suffix.lower() == ".h5ad":
        genes, values, features, record = _from_h5ad(path, gene_column, obs_column, control)
        row_lines = None
    else:
        genes, values, features, record, row_lines = _from_frame(path, gene_column, orientation)
    orient = record["orientation"]
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise KgbuildInputError(f"empty table: {values.shape[0]} gene rows x {values.shape[1]} numeric features", path=path)
    if max_nan_frac is None and orient == "features-by-genes":
        max_nan_frac = DEFAULT_DEPMAP_MAX_NAN
    _check_finite(path, genes, values, features, row_lines, allow_nan=max_nan_frac is not None)
    genes, values, n_dup = _aggregate(path, genes, values, aggregate, row_lines)
    record.update(genes_in=int(len(genes) + n_dup), duplicate_rows_aggregated=int(n_dup), aggregate=aggregate)
    if max_nan_frac is not None:
        genes, values, nan_record = _drop_and_impute(genes, values, max_nan_frac,
                                                     per_gene=(orient == "features-by-genes"))
        record.update(nan_record)
    norms = np.linalg.norm(values.astype(np.float64), axis=1)
    zero = norms == 0
    if zero.any():
        log.warning("%s: %d gene(s) have an all-zero profile and are left out (e.g. %s)", path, int(zero.sum()),
                    ", ".join(genes[zero][:5].tolist()))
        genes, values = genes[~zero], values[~zero]
    record["zero_profiles_dropped"] = int(zero.sum())
    record.update(genes=int(len(genes)), features=int(values.shape[1]))
    if len(genes) == 0:
        raise KgbuildInputError("no gene profile is left after removing NaN-heavy and all-zero rows", path=path)
    return EmbeddingTable(genes=genes, values=np.ascontiguousarray(values, dtype=np.float32),
                          features=list(features), record=record)


def _from_frame(path: Path, gene_column: str | None, orientation: str):
    df = _read_frame(path)
    columns = [str(c) for c in df.columns]
    df.columns = columns
    if df.shape[0] == 0:
        raise KgbuildInputError(f"empty table (no data rows; columns: {', '.join(columns[:10])})", path=path)
    numeric = [c for c in columns if _is_numeric(df[c])]
    text = [c for c in columns if c not in numeric]
    depmap_like = sum(bool(DEPMAP_HEADER.match(c)) for c in numeric)
    if orientation == "auto":
        orientation = ("features-by-genes" if numeric and depmap_like >= 0.5 * len(numeric) and gene_column is None
                       else "genes-by-features")
    record: dict[str, Any] = {"format": "table", "orientation": orientation}
    if orientation == "features-by-genes":
        if gene_column is not None:
            raise KgbuildInputError(
                f"`gene_column={gene_column!r}` does not apply to a features x genes table (genes are the "
                "column headers); drop it or use `orientation=genes-by-features`", path=path)
        if not numeric:
            raise KgbuildInputError(f"no numeric columns (columns: {', '.join(columns[:10])})", path=path)
        genes = np.asarray([_symbol(c) for c in numeric], dtype=str)
        values = df[numeric].to_numpy(dtype=np.float64).T
        features = (df[text[0]].astype(str).tolist() if text else [f"row{r + 1}" for r in range(df.shape[0])])
        record.update(sample_id_column=text[0] if text else None, symbols_parsed=int(depmap_like))
        return genes, values, features, record, None
    # genes x features
    if gene_column is None:
        named = [c for c in text if c.lower() in GENE_COLUMN_NAMES]
        if len(text) == 1:
            gene_column = text[0]
        elif len(named) == 1:
            gene_column = named[0]
        elif not text:
            raise KgbuildInputError(
                f"no gene column: every column is numeric ({', '.join(columns[:10])}{', ...' if len(columns) > 10 else ''}); "
                "give `gene_column`, or `orientation=features-by-genes` if genes are the column headers", path=path)
        else:
            raise KgbuildInputError(
                f"several text columns ({', '.join(text[:10])}); say which holds the genes with `gene_column`",
                path=path)
    if gene_column not in columns:
        raise KgbuildInputError(
            f"no column {gene_column!r}; the columns are: {', '.join(columns[:20])}{', ...' if len(columns) > 20 else ''}",
            path=path)
    feature_cols = [c for c in columns if c != gene_column]
    for c in feature_cols:
        if c in numeric:
            continue
        import pandas as pd

        coerced = pd.to_numeric(df[c], errors="coerce")
        bad = np.flatnonzero(coerced.isna().to_numpy() & df[c].notna().to_numpy())
        if len(bad):
            r = int(bad[0])
            raise KgbuildInputError(
                f"value {df[c].iloc[r]!r} is not a number{_where_row(path, r)} (every column but the gene column "
                f"{gene_column!r} must be numeric)", path=path, column=c, **_row_location(path, r))
        df[c] = coerced
    if not feature_cols:
        raise KgbuildInputError(f"no feature columns besides the gene column {gene_column!r}", path=path)
    raw = df[gene_column]
    missing = np.flatnonzero(raw.isna().to_numpy() | (raw.astype(str).str.strip() == "").to_numpy())
    if len(missing):
        r = int(missing[0])
        raise KgbuildInputError(f"empty gene name{_where_row(path, r)}", path=path, column=gene_column,
                                **_row_location(path, r))
    genes = raw.astype(str).str.strip().to_numpy(dtype=str)
    values = df[feature_cols].to_numpy(dtype=np.float64)
    record["gene_column"] = gene_column
    row_lines = np.arange(len(genes)) + (2 if _is_text(path) else 1)
    record["row_unit"] = "line" if _is_text(path) else "row"
    return genes, values, feature_cols, record, row_lines


def _symbol(header: str) -> str:
    m = DEPMAP_HEADER.match(header)
    return m.group(1) if m else header.strip()


def _from_h5ad(path: Path, gene_column: str | None, obs_column: str | None, control: str | None):
    import anndata
    import scipy.sparse as sp

    try:
        adata = anndata.read_h5ad(path)
    except Exception as err:  # h5py / anndata raise many kinds
        raise KgbuildInputError(f"cannot read the .h5ad file ({type(err).__name__}: {err})", path=path) from None
    obs = adata.obs
    features = [str(v) for v in adata.var_names]
    if obs_column is None:
        for cand in PERTURBATION_COLUMNS:
            if cand in obs.columns and _find_control(obs[cand].astype(str), control) is not None:
                obs_column = cand
                break
    if obs_column is not None:
        if obs_column not in obs.columns:
            raise KgbuildInputError(f"no obs column {obs_column!r}; obs has: {', '.join(map(str, obs.columns))}",
                                    path=path)
        labels = obs[obs_column].astype(str).to_numpy()
        ctrl = _find_control(obs[obs_column].astype(str), control)
        if ctrl is None:
            top = ", ".join(f"{k} ({v})" for k, v in obs[obs_column].astype(str).value_counts().head(8).items())
            raise KgbuildInputError(
                f"no control cells: none of {control or '/'.join(CONTROL_LABELS)} in obs[{obs_column!r}] "
                f"(most common labels: {top}); name the control label with `control`", path=path)
        X = adata.X
        X = X.tocsr() if sp.issparse(X) else np.asarray(X)

        def mean_rows(mask: np.ndarray) -> np.ndarray:
            sub = X[np.flatnonzero(mask)]
            return np.asarray(sub.mean(axis=0), dtype=np.float64).ravel()

        control_mean = mean_rows(labels == ctrl)
        perturbations = sorted(set(labels) - {ctrl})
        singles = [p for p in perturbations if "+" not in p and p.strip() and p.lower() != "nan"]
        rows = [mean_rows(labels == p) - control_mean for p in singles]
        values = np.vstack(rows) if rows else np.zeros((0, len(features)))
        record = {
            "format": "h5ad", "orientation": "perturbation-means", "obs_column": obs_column, "control": ctrl,
            "control_cells": int((labels == ctrl).sum()), "cells": int(adata.n_obs),
            "combinations_skipped": int(len(perturbations) - len(singles)),
            "profile": "mean(X[cells of p]) - mean(X[control cells])",
        }
        return np.asarray(singles, dtype=str), values, features, record
    # .X is a genes x features table
    if gene_column is not None:
        if gene_column not in obs.columns:
            raise KgbuildInputError(f"no obs column {gene_column!r}; obs has: {', '.join(map(str, obs.columns))}",
                                    path=path)
        genes = obs[gene_column].astype(str).str.strip().to_numpy(dtype=str)
    else:
        genes = np.asarray([str(g).strip() for g in adata.obs_names], dtype=str)
    X = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    record = {"format": "h5ad", "orientation": "genes-by-features", "gene_column": gene_column or "obs_names",
              "row_unit": "row"}
    return genes, np.asarray(X, dtype=np.float64), features, record


def _find_control(labels, control: str | None) -> str | None:
    values = set(labels.unique().tolist()) if hasattr(labels, "unique") else set(labels)
    if control is not None:
        return control if control in values else None
    lowered = {v.lower(): v for v in values}
    for cand in CONTROL_LABELS:
        if cand.lower() in lowered:
            return lowered[cand.lower()]
    return None


def _check_finite(path: Path, genes: np.ndarray, values: np.ndarray, features, row_lines, allow_nan: bool) -> None:
    """inf is always an error; NaN is an error unless ``allow_nan`` (then handled by the NaN policy)."""
    bad = np.isinf(values) if allow_nan else ~np.isfinite(values)
    if not bad.any():
        return
    r, c = (int(v) for v in np.argwhere(bad)[0])
    kind = "NaN" if np.isnan(values[r, c]) else "an infinite value"
    hint = ("; remove it, or pass `max_nan_frac=F` to drop genes with more than a fraction F of NaN and "
            "fill the rest with the feature mean") if kind == "NaN" else ""
    sep = next((TEXT_SUFFIXES[s.lower()] for s in path.suffixes if s.lower() in TEXT_SUFFIXES), None)
    other = guess_separator(str(genes[r]), sep) if sep is not None and kind == "NaN" else None
    if other is not None and np.isnan(values[r]).all():
        hint = (f"; the gene name holds {other!r} and every value of the row is missing: this line looks "
                f"{other!r}-separated, but the file is read as {sep!r}-separated")
    where = {}
    if row_lines is not None:
        where = {"line": int(row_lines[r])} if _is_text(path) else {}
    n_bad = int(bad.sum())
    raise KgbuildInputError(f"{kind} in the embedding ({n_bad} bad value(s) in all){hint}", path=path,
                            gene=str(genes[r]), column=str(features[c]), **where)


def _aggregate(path: Path, genes: np.ndarray, values: np.ndarray, how: str, row_lines):
    """One row per gene, genes sorted; returns ``(genes, values, n_rows_merged)``."""
    order = np.argsort(genes, kind="stable")
    g = genes[order]
    first = np.r_[True, g[1:] != g[:-1]] if len(g) else np.zeros(0, bool)
    n_dup = int(len(g) - first.sum())
    if n_dup == 0:
        return g, values[order], 0
    if how == "none":
        i = int(np.flatnonzero(~first)[0])
        gene = str(g[i])
        rows = order[g == gene]
        unit = "lines" if _is_text(path) else "rows"
        at = ", ".join(str(int(row_lines[r])) if row_lines is not None else str(int(r) + 1) for r in rows[:5])
        raise KgbuildInputError(
            f"appears in {len(rows)} {unit} ({at}); {n_dup} duplicated row(s) in all. Choose `aggregate` "
            "(mean|median|first) to merge them", path=path, gene=gene)
    starts = np.flatnonzero(first)
    v = values[order]
    if how == "first":
        out = v[starts]
    elif how == "mean":
        with np.errstate(invalid="ignore"):
            sums = np.add.reduceat(np.nan_to_num(v, nan=0.0), starts, axis=0)
            counts = np.add.reduceat((~np.isnan(v)).astype(np.int64), starts, axis=0)
            out = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    else:  # median
        bounds = np.r_[starts, len(g)]
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices stay NaN
            out = np.vstack([np.nanmedian(v[a:b], axis=0) for a, b in zip(bounds[:-1], bounds[1:])])
    log.info("%s: merged %d duplicated row(s) by %s", path, n_dup, how)
    return g[starts], out, n_dup


def _drop_and_impute(genes: np.ndarray, values: np.ndarray, max_nan_frac: float, per_gene: bool):
    """Drop genes with NaN fraction > ``max_nan_frac``; fill remaining NaN with the gene's mean over its
    observed values (``per_gene``, DepMap orientation) or the feature's mean over genes."""
    nan = np.isnan(values)
    frac = nan.mean(axis=1)
    drop = frac > max_nan_frac
    if drop.any():
        log.warning("dropped %d gene(s) with more than %.0f%% NaN (e.g. %s)", int(drop.sum()), 100 * max_nan_frac,
                    ", ".join(genes[drop][:5].tolist()))
    genes, values, nan = genes[~drop], values[~drop].copy(), nan[~drop]
    n_filled = int(nan.sum())
    if n_filled:
        if per_gene:
            fill = np.nanmean(np.where(nan, np.nan, values), axis=1)
            values[nan] = np.broadcast_to(fill[:, None], values.shape)[nan]
        else:
            with np.errstate(invalid="ignore"):
                fill = np.nanmean(values, axis=0)
            empty = np.isnan(fill)
            if empty.any():
                raise KgbuildInputError(f"feature column(s) with no value at all after dropping NaN-heavy genes: "
                                        f"{', '.join(map(str, np.flatnonzero(empty)[:5]))}")
            values[nan] = np.broadcast_to(fill[None, :], values.shape)[nan]
    return genes, values, {
        "max_nan_frac": float(max_nan_frac),
        "nan_genes_dropped": int(drop.sum()),
        "nan_values_imputed": n_filled,
        "impute": "gene mean over its observed values" if per_gene else "feature mean over genes",
    }
