"""A user's own edge list (a proprietary map graph, a curated network, ...) -> edge table.

Formats: ``.csv``, ``.tsv`` / ``.tab`` / ``.txt`` (each optionally ``.gz``; the separator can be forced) and
``.parquet``. Text files need a header row. Columns are named by the caller: source, target and, optionally,
weight (without one every edge weighs 1.0). Gene names are taken as they are (surrounding spaces stripped).

Checks, each naming the file and the line (text: 1-based file line, header = line 1; parquet: 1-based
row): a missing column (the error lists the columns present), an empty gene name, a weight that is not a
number, NaN or infinite, a negative weight. Duplicated edges are merged by the ``duplicates`` policy (max
by default, or ``error``); self-loops are dropped. Both counted in the provenance.

:func:`read` is the parse stage; the builder (:func:`kgbuild.api.edges`, or :func:`build` here) then runs
the shared filters (:func:`kgbuild.filters.apply_filters`): min weight, symmetrize (``symmetric``: each
row is an undirected pair), top pct, max in-degree.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kgbuild.edge_table import EdgeTable
from kgbuild.errors import KgbuildInputError
from kgbuild.filters import apply_filters
from kgbuild.provenance import input_record
from kgbuild.sources.textfiles import first_line, guess_separator, reader_error

TEXT_SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": "\t"}
FLOAT32_MAX = float(np.finfo(np.float32).max)  # graphs store weights as float32


def parse_separator(sep: str | None) -> str | None:
    """``--sep`` as given on a command line: one character, or an escape such as ``\\t`` (a tab)."""
    if sep is None:
        return None
    named = {"\\t": "\t", "tab": "\t", "\\s": " ", "space": " "}
    sep = named.get(sep, sep)
    if len(sep) != 1:
        raise KgbuildInputError(f"the separator must be one character (or \\t for a tab), got {sep!r}")
    return sep


def file_kind(path: str | os.PathLike, sep: str | None = None) -> tuple[str, str | None]:
    """``("parquet", None)`` or ``("text", separator)`` from the name (``.gz`` ignored) or ``sep``."""
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    suffix = Path(name).suffix
    if suffix in (".parquet", ".pq"):
        return "parquet", None
    if sep is not None:
        return "text", parse_separator(sep)
    if suffix in TEXT_SEPARATORS:
        return "text", TEXT_SEPARATORS[suffix]
    header = first_line(path)
    return "text", "\t" if "\t" in header else ","


def read_edge_file(
    path: str | os.PathLike,
    source_col: str,
    target_col: str,
    weight_col: str | None = None,
    sep: str | None = None,
) -> tuple[EdgeTable, dict[str, Any]]:
    """Read and validate an edge list; returns the raw table (duplicates, loops still in) and its format."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    kind, sep = file_kind(path, sep)
    wanted = [c for c in (source_col, target_col, weight_col) if c is not None]
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            present = pq.read_schema(path).names
        except Exception as err:  # pyarrow raises ArrowInvalid / OSError on non-parquet files
            raise KgbuildInputError(f"not a readable parquet file ({err})", path=path) from None
        _check_columns(path, wanted, present)
        df = pd.read_parquet(path, columns=list(dict.fromkeys(wanted)))
        where = "row"
        first_row_number = 1
    else:
        header = first_line(path)
        present = next(csv.reader([header], delimiter=sep)) if header else []
        _check_columns(path, wanted, present, sep, guess_separator(header, sep))
        try:
            # all columns (no usecols): only then does the parser reject a line with too many fields
            df = pd.read_csv(
                path, sep=sep, dtype=str, keep_default_na=False, na_filter=False, skip_blank_lines=False,
                engine="c", compression="infer",
            )[list(dict.fromkeys(wanted))]
        except pd.errors.ParserError as err:
            # pandas: "Error tokenizing data. C error: Expected 3 fields in line 3, saw 5" (file lines)
            detail = str(err).split("C error: ")[-1].strip()
            raise KgbuildInputError(f"malformed line: {detail}", path=path) from None
        except (ValueError, UnicodeDecodeError, OSError, EOFError) as err:
            located = reader_error(path, err)
            if located is not None:
                raise located from None
            raise KgbuildInputError(f"cannot parse the file: {err}", path=path) from None
        where = "line"
        first_row_number = 2  # the header is line 1
    row_number = np.arange(len(df)) + first_row_number

    def fail(mask: np.ndarray, column: str, problem: str) -> None:
        bad = np.flatnonzero(mask)
        if len(bad):
            nums = ", ".join(str(int(row_number[i])) for i in bad[:5])
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise KgbuildInputError(
                f"{problem} ({where}s {nums}{more})", path=path, column=column,
                line=int(row_number[bad[0]]) if where == "line" else None,
            )

    names = {}
    for col in (source_col, target_col):
        values = df[col].astype(str).str.strip()
        fail((df[col].isna() | (values == "")).to_numpy(), col, "empty gene name")
        names[col] = values.to_numpy(dtype=str)
    if weight_col is None:
        weights = np.ones(len(df), dtype=np.float64)
    else:
        raw = df[weight_col]
        numeric = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
        fail(np.isnan(numeric), weight_col, "weight is missing, NaN or not a number")
        fail(np.isinf(numeric), weight_col, "weight is infinite")
        fail(numeric < 0, weight_col, "weight is negative (edge weights must be >= 0)")
        weights = numeric
    fmt = {"format": kind, "separator": sep, "source_col": source_col, "target_col": target_col,
           "weight_col": weight_col, "rows_read": int(len(df)), "first_row_number": first_row_number}
    return EdgeTable(names[source_col], names[target_col], weights), fmt


def _check_columns(path: Path, wanted: list[str], present: list[str], sep: str | None = None,
                   other_sep: str | None = None) -> None:
    missing = [c for c in wanted if c not in present]
    if missing:
        if other_sep is not None and len(present) == 1:
            shown = "\\t" if other_sep == "\t" else other_sep
            raise KgbuildInputError(
                f"the file has a single column {present[0][:60]!r}: it looks {other_sep!r}-separated, but was read "
                f"as {sep!r}-separated; give the separator with `sep='{shown}'`", path=path, line=1,
            )
        raise KgbuildInputError(
            f"missing column(s) {', '.join(repr(c) for c in missing)}; the file has columns {present} "
            "(name them with `source_col` / `target_col` / `weight_col`)",
            path=path, column=missing[0],
        )


def _check_float32(path: str | os.PathLike, weights: np.ndarray, fmt: dict[str, Any], weight_col: str | None,
                   weight_scale: float) -> None:
    """Weights are stored as float32: refuse one that would overflow to inf, naming its line (or row)."""
    too_big = weights > FLOAT32_MAX
    if not too_big.any():
        return
    i = int(np.flatnonzero(too_big)[0])
    number = int(fmt["first_row_number"]) + i
    scaled = f" after `weight_scale={weight_scale:g}`" if weight_scale != 1.0 else ""
    where = {"line": number} if fmt["format"] == "text" else {}
    row = "" if fmt["format"] == "text" else f" (row {number})"
    raise KgbuildInputError(
        f"weight {float(weights[i]):g}{scaled}{row} does not fit in float32, the type graphs store weights in "
        f"(max {FLOAT32_MAX:.4g}; {int(too_big.sum())} such weight(s)); scale the weights down"
        + (" with a smaller `weight_scale`" if scaled else " with `weight_scale`"),
        path=path, column=weight_col, **where,
    )


def read(
    path: str | os.PathLike,
    source_col: str,
    target_col: str,
    weight_col: str | None = None,
    *,
    sep: str | None = None,
    weight_scale: float = 1.0,
) -> tuple[EdgeTable, dict[str, Any]]:
    """Parse a user edge list into an edge table (weights times ``weight_scale``; not yet filtered) and the
    layer provenance so far. ``weight_scale`` multiplies every weight (e.g. ``0.001`` for STRING-style
    0-1000 scores)."""
    if not (weight_scale > 0 and np.isfinite(weight_scale)):
        raise KgbuildInputError(f"`weight_scale` must be a positive number, got {weight_scale}")
    raw, fmt = read_edge_file(path, source_col, target_col, weight_col, sep)
    if weight_scale != 1.0:
        with np.errstate(over="ignore"):
            raw = EdgeTable(raw.sources, raw.targets, raw.weights * weight_scale)
    _check_float32(path, raw.weights, fmt, weight_col, weight_scale)
    meta = {
        "source": "user edge list",
        "version": None,
        "weight": weight_col or "1.0 (no weight column)",
        "inputs": [input_record(path, "edges")],
        **{k: v for k, v in fmt.items() if k != "first_row_number"},
        "weight_scale": float(weight_scale),
        "filters": None,
    }
    return raw, meta


def build(
    path: str | os.PathLike,
    source_col: str,
    target_col: str,
    weight_col: str | None = None,
    *,
    sep: str | None = None,
    symmetric: bool = False,
    duplicates: str = "max",
    min_weight: float | None = None,
    top_pct: float | None = None,
    max_in_degree: int | None = 20,
    weight_scale: float = 1.0,
) -> tuple[EdgeTable, dict[str, Any]]:
    """:func:`read`, then the shared filters (:func:`kgbuild.filters.apply_filters`); returns the table and
    its layer provenance (:func:`kgbuild.api.edges` does this and makes the graph).

    ``min_weight`` applies to the scaled weights.
    """
    raw, meta = read(path, source_col, target_col, weight_col, sep=sep, weight_scale=weight_scale)
    table, meta["filters"] = apply_filters(
        raw, drop_self_loops=True, min_weight=min_weight, symmetric=symmetric, dedupe=duplicates,
        top_pct=top_pct, max_in_degree=max_in_degree,
    )
    return table, meta
