"""STRING protein links -> gene-gene edges weighted ``score / 1000``.

Inputs (STRING's download layout):

* ``protein.links`` - space-separated, header ``protein1 protein2 combined_score``, ids ``9606.ENSP...``,
  integer scores 0-1000, every pair listed in both orientations (~13.7 M rows for human v12);
* ``protein.links.detailed`` - the same plus one column per evidence channel (``neighborhood fusion
  cooccurence coexpression experimental database textmining``), usable with ``channel=...``;
* ``protein.info`` - tab-separated, header ``#string_protein_id preferred_name ...``: id -> gene symbol.

Steps: keep rows with ``score >= min_score`` (0-1000 scale, inclusive); map both ids to symbols through
``protein.info`` (rows with an id missing there are dropped, **counted and reported**, or an error with
``unknown_ids="error"``); weight = ``score / 1000``. That is :func:`read`, the parse stage. The builder
(:func:`kgbuild.api.string`, or :func:`build` here) then applies the shared filters (:mod:`kgbuild.filters`,
:data:`FILTERS`): self-loops dropped (two proteins of one gene), duplicate symbol pairs merged keeping the
max weight, both orientations ensured (symmetrize), and at most ``max_in_degree`` incoming edges per gene.

Speed: the links file is read by pyarrow's multithreaded CSV reader with dictionary-encoded id columns, so
ids become int32 codes at parse time; every later step is vectorised numpy on those codes. Gene-symbol
strings are only built for the edges that survive.
"""

from __future__ import annotations

import csv
import logging
import os
from typing import Any

import numpy as np
import pandas as pd

from kgbuild.edge_table import EdgeTable
from kgbuild.errors import KgbuildInputError
from kgbuild.filters import apply_filters, min_weight_mask
from kgbuild.provenance import input_record
from kgbuild.sources.textfiles import find_bad_line, first_line, raise_bad_line, reader_error, release_from_name

log = logging.getLogger(__name__)

COMBINED = "combined_score"
CHANNELS = ("neighborhood", "fusion", "cooccurence", "coexpression", "experimental", "database", "textmining")
UNKNOWN_ID_POLICIES = ("warn", "error")
INFO_ID_COLUMN = "#string_protein_id"
INFO_NAME_COLUMN = "preferred_name"
#: the filter pipeline (:func:`kgbuild.filters.apply_filters`) the builder runs on :func:`read`'s table
FILTERS = {"drop_self_loops": True, "symmetric": True, "dedupe": "max"}


# ---------------------------------------------------------------------- protein.info
def read_info(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, symbols)`` from ``protein.info``: unicode ``(P,)`` each, in file order.

    Raises :class:`KgbuildInputError` for a wrong header, an empty id or name, or an id listed twice
    (naming the line).
    """
    header = first_line(path).split("\t")
    id_col = header[0] if header and header[0].lstrip("#") == INFO_ID_COLUMN.lstrip("#") else None
    if id_col is None or INFO_NAME_COLUMN not in header:
        raise KgbuildInputError(
            f"not a STRING protein.info file: the tab-separated header must start with "
            f"'{INFO_ID_COLUMN}' and have '{INFO_NAME_COLUMN}'; found columns {header}",
            path=path, line=1,
        )
    name_pos = header.index(INFO_NAME_COLUMN)
    try:
        df = pd.read_csv(
            path, sep="\t", usecols=[0, name_pos], dtype=str, keep_default_na=False, na_filter=False,
            quoting=csv.QUOTE_NONE, skip_blank_lines=False, engine="c", compression="infer",
        )
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError, OSError, EOFError) as err:
        located = reader_error(path, err)
        if located is not None:
            raise located from None
        raise KgbuildInputError(f"cannot parse the file: {err}", path=path) from None
    ids = df.iloc[:, 0].to_numpy(dtype=str)
    names = df.iloc[:, 1].to_numpy(dtype=str)
    bad = np.flatnonzero((np.char.str_len(ids) == 0) | (np.char.str_len(names) == 0))
    if len(bad):
        # line = header (1) + row position + 1 (skip_blank_lines=False keeps positions aligned with lines)
        line = int(bad[0]) + 2
        raise KgbuildInputError(
            f"empty '{INFO_ID_COLUMN}' or '{INFO_NAME_COLUMN}' (expected {len(header)} tab-separated fields)",
            path=path, line=line,
        )
    uniq, first_pos, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = str(uniq[counts > 1][0])
        rows = np.flatnonzero(ids == dup)
        raise KgbuildInputError(
            f"protein id {dup!r} is listed more than once (lines {', '.join(str(r + 2) for r in rows[:5])})",
            path=path, line=int(rows[1]) + 2,
        )
    return ids, names


# ---------------------------------------------------------------------- protein.links
def links_columns(path: str | os.PathLike) -> list[str]:
    """The header of a links file (space-separated)."""
    header = first_line(path).split(" ")
    if len(header) < 3 or header[0] != "protein1" or header[1] != "protein2":
        raise KgbuildInputError(
            f"not a STRING protein.links file: the space-separated header must start with "
            f"'protein1 protein2' and name a score column; found {header}",
            path=path, line=1,
        )
    return header


def read_links(
    path: str | os.PathLike, column: str = COMBINED
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parse a links file into ``(ids, src, dst, scores)``.

    ``ids``: unicode ``(P,)`` every protein id seen; ``src``, ``dst``: int64 ``(E,)`` positions in
    ``ids``; ``scores``: int32 ``(E,)`` the values of ``column``. Malformed lines, missing or
    non-integer scores and scores outside 0-1000 raise :class:`KgbuildInputError` naming the line.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    header = links_columns(path)
    if column not in header:
        hint = (
            "; per-channel scores are in protein.links.detailed: pass that file as `links`, or leave "
            "`links` out to download it" if column != COMBINED else ""
        )
        raise KgbuildInputError(
            f"no column {column!r}; the columns are {header}{hint}", path=path, line=1, column=column
        )
    n_fields = len(header)
    col_pos = header.index(column)
    dict_type = pa.dictionary(pa.int32(), pa.string())
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 22),
            parse_options=pacsv.ParseOptions(delimiter=" "),
            convert_options=pacsv.ConvertOptions(
                column_types={"protein1": dict_type, "protein2": dict_type, column: pa.int32()},
                include_columns=["protein1", "protein2", column],
                strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, OSError, EOFError) as err:
        _raise_links_problem(path, n_fields, col_pos, str(err))
    if table.num_rows == 0:
        return np.zeros(0, dtype="<U1"), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32)
    table = table.unify_dictionaries()
    scores_col = table.column(column)
    if scores_col.null_count:
        _raise_links_problem(path, n_fields, col_pos, f"{scores_col.null_count} missing score(s)")
    scores = scores_col.to_numpy().astype(np.int32, copy=False)
    if scores.min() < 0 or scores.max() > 1000:
        _raise_links_problem(path, n_fields, col_pos, "score outside 0-1000")

    p1, p2 = table.column("protein1"), table.column("protein2")
    d1 = np.asarray(p1.chunk(0).dictionary.to_numpy(zero_copy_only=False), dtype=str)
    d2 = np.asarray(p2.chunk(0).dictionary.to_numpy(zero_copy_only=False), dtype=str)
    i1 = np.concatenate([c.indices.to_numpy() for c in p1.chunks]).astype(np.int64)
    i2 = np.concatenate([c.indices.to_numpy() for c in p2.chunks]).astype(np.int64)
    ids, inv = np.unique(np.concatenate([d1, d2]), return_inverse=True)
    inv = inv.ravel()
    src = inv[: len(d1)][i1]
    dst = inv[len(d1):][i2]
    if (np.char.str_len(ids) == 0).any():
        _raise_links_problem(path, n_fields, col_pos, "empty protein id")
    return ids, src, dst, scores


def _raise_links_problem(path: str | os.PathLike, n_fields: int, col_pos: int, reader_message: str) -> None:
    """Locate the first bad line of a links file and raise an error naming it."""

    def check(line: str) -> str | None:
        fields = line.split(" ")
        if len(fields) != n_fields:
            return f"expected {n_fields} space-separated fields, got {len(fields)}"
        if not fields[0] or not fields[1]:
            return "empty protein id"
        try:
            score = int(fields[col_pos])
        except ValueError:
            return f"score {fields[col_pos]!r} is not an integer"
        if not 0 <= score <= 1000:
            return f"score {score} is outside 0-1000"
        return None

    found = find_bad_line(path, check, skip=lambda line: not line, header_lines=1)
    if found is not None:
        raise_bad_line(path, found)
    # header problems are caught earlier; when no line is at fault, report what the reader said
    raise KgbuildInputError(f"cannot parse the links file: {reader_message}", path=path)


# ---------------------------------------------------------------------- parse, build
def read(
    links: str | os.PathLike,
    info: str | os.PathLike,
    *,
    min_score: int = 700,
    channel: str = COMBINED,
    unknown_ids: str = "warn",
    version: str | None = None,
) -> tuple[EdgeTable, dict[str, Any]]:
    """Parse the STRING files into an edge table (``score >= min_score``, ids mapped to symbols, weight
    ``score / 1000``; not yet filtered) and the layer provenance so far (see the module docstring).

    ``min_score``: keep ``score >= min_score`` (0-1000). ``channel``: score column to use.
    ``unknown_ids``: ``warn`` drops rows whose protein is not in ``info`` (counted in the provenance and
    logged), ``error`` raises instead.
    """
    if not 0 <= min_score <= 1000:
        raise KgbuildInputError(f"`min_score` must be within 0-1000, got {min_score}")
    if unknown_ids not in UNKNOWN_ID_POLICIES:
        raise ValueError(f"unknown_ids must be one of {UNKNOWN_ID_POLICIES}, got {unknown_ids!r}")
    info_ids, info_names = read_info(info)
    ids, src, dst, scores = read_links(links, channel)
    rows = int(len(scores))

    # protein id -> symbol code (symbols sorted, so codes order like names)
    symbols, symbol_of_info = np.unique(info_names, return_inverse=True)
    pos = pd.Index(info_ids).get_indexer(ids)
    code_of_id = np.where(pos >= 0, symbol_of_info.ravel()[np.maximum(pos, 0)], -1)
    unknown = np.flatnonzero(pos < 0)
    s, d = code_of_id[src], code_of_id[dst]
    unknown_rows = (s < 0) | (d < 0)
    n_unknown_rows = int(unknown_rows.sum())
    unknown_record = {
        "ids": int(len(unknown)), "rows": n_unknown_rows,
        "examples": ids[unknown[:10]].tolist(),
    }
    if len(unknown):
        message = (
            f"{len(unknown)} protein id(s) in {links} are not in {info} "
            f"(e.g. {', '.join(ids[unknown[:5]].tolist())}); {n_unknown_rows} of {rows} rows use them"
        )
        if unknown_ids == "error":
            raise KgbuildInputError(message + "; fix the files or allow dropping them (`unknown_ids=warn`)")
        log.warning("%s and were dropped", message)

    keep = min_weight_mask(scores, min_score) & ~unknown_rows
    below = int(rows - min_weight_mask(scores, min_score).sum())
    s, d, w = s[keep], d[keep], scores[keep].astype(np.float64) / 1000.0
    per_symbol = np.bincount(symbol_of_info.ravel(), minlength=len(symbols))
    table = EdgeTable.from_codes(symbols, s, d, w)
    meta: dict[str, Any] = {
        "source": "STRING",
        "version": version or release_from_name(links),
        "weight": f"{channel} / 1000",
        "channel": channel,
        "inputs": [input_record(links, "links"), input_record(info, "info")],
        "filters": {"min_score": int(min_score), "min_score_inclusive": True},
        "rows_read": rows,
        "rows_below_min_score": below,
        "unknown_ids": unknown_record,
        "unknown_id_policy": unknown_ids,
        "symbols_with_several_proteins": int((per_symbol > 1).sum()),
    }
    return table, meta


def build(
    links: str | os.PathLike,
    info: str | os.PathLike,
    *,
    min_score: int = 700,
    max_in_degree: int | None = 20,
    channel: str = COMBINED,
    unknown_ids: str = "warn",
    version: str | None = None,
) -> tuple[EdgeTable, dict[str, Any]]:
    """:func:`read`, then the filters (:data:`FILTERS` and the ``max_in_degree`` cap): the STRING edge table
    and its layer provenance, ready for :meth:`EdgeTable.to_graph` (:func:`kgbuild.api.string` does all)."""
    table, meta = read(links, info, min_score=min_score, channel=channel, unknown_ids=unknown_ids, version=version)
    table, record = apply_filters(table, **FILTERS, max_in_degree=max_in_degree)
    meta["filters"].update(record)
    return table, meta
