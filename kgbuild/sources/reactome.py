"""Reactome pathways -> gene-gene edges weighted by the Jaccard index of the genes' pathway sets.

Two input layouts:

* ``ReactomePathways.gmt`` - one pathway per line: ``name<TAB>R-HSA-id<TAB>gene symbol<TAB>...``. Genes are
  HGNC symbols already. A gene listed twice on one line counts once; a pathway id on two lines is an error
  (which gene set would be meant?); a line with a name and id but no genes is skipped and counted.
* ``NCBI2Reactome.txt`` - ``entrez id<TAB>pathway id<TAB>url<TAB>name<TAB>evidence<TAB>species``, all
  species, no header; rows are kept for ``species`` (default ``Homo sapiens``). It is keyed by NCBI Gene
  (Entrez) ids. **Choice:** with ``gene_map`` (a table of Entrez id -> symbol, e.g. NCBI's
  ``Homo_sapiens.gene_info.gz`` with columns ``GeneID`` and ``Symbol``) ids become symbols, and ids missing
  from the map are counted, reported and dropped; without it the nodes stay Entrez ids (as strings) - a
  valid graph, but one that will not line up with symbol-keyed graphs or datasets, and a warning says so.
  Note that this table lists *lowest-level* pathways only, while the GMT lists every pathway with all genes
  of its sub-pathways, so the two give different (both legitimate) graphs.

Then, as for GO: ``weight(a -> b) = |P_a & P_b| / |P_a | P_b|``, keep ``J > min_jaccard`` (strict), at most
``max_in_degree`` incoming edges per gene (:mod:`kgbuild.jaccard`).
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
from kgbuild.jaccard import DEFAULT_MAX_SET_SIZE, jaccard_table, set_too_large
from kgbuild.provenance import input_record
from kgbuild.sources.textfiles import find_bad_line, iter_lines, raise_bad_line, reader_error

log = logging.getLogger(__name__)

NCBI2REACTOME_COLUMNS = ("entrez_id", "pathway_id", "url", "name", "evidence", "species")


# ---------------------------------------------------------------------- GMT
def read_gmt(path: str | os.PathLike, max_set_size: int | None = DEFAULT_MAX_SET_SIZE
             ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Membership pairs ``(genes, pathway ids)`` (unicode ``(P,)`` each) from a GMT file, plus counts.

    Malformed lines (fewer than two fields, an empty pathway id), bytes that are not UTF-8, pathway ids on
    two lines and pathways of more than ``max_set_size`` genes (None: no limit) raise
    :class:`KgbuildInputError` naming the line, the last as soon as that line is read.
    """
    genes: list[str] = []
    sets: list[str] = []
    seen: dict[str, int] = {}
    counts = {"pathways": 0, "empty_pathways_skipped": 0, "repeated_genes_in_a_pathway": 0}
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or not fields[1].strip():
            raise KgbuildInputError(
                "expected 'name<TAB>pathway id<TAB>gene<TAB>...' (a GMT line needs at least a name and an id)"
                f": {line[:100]!r}", path=path, line=number,
            )
        pid = fields[1].strip()
        if pid in seen:
            raise KgbuildInputError(
                f"pathway id {pid!r} is also on line {seen[pid]}; each gene set must appear once",
                path=path, line=number,
            )
        seen[pid] = number
        members = [g.strip() for g in fields[2:] if g.strip()]
        unique = list(dict.fromkeys(members))
        if max_set_size is not None and len(unique) > max_set_size:
            raise KgbuildInputError(set_too_large(f"pathway {pid!r}", len(unique), max_set_size),
                                    path=path, line=number)
        counts["repeated_genes_in_a_pathway"] += len(members) - len(unique)
        if not unique:
            counts["empty_pathways_skipped"] += 1
            continue
        counts["pathways"] += 1
        genes.extend(unique)
        sets.extend([pid] * len(unique))
    return np.asarray(genes, dtype=str), np.asarray(sets, dtype=str), counts


# ---------------------------------------------------------------------- NCBI2Reactome
def read_ncbi2reactome(
    path: str | os.PathLike, species: str = "Homo sapiens", max_set_size: int | None = DEFAULT_MAX_SET_SIZE,
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Membership pairs ``(entrez ids, pathway ids)`` for ``species`` from the NCBI2Reactome table; a pathway
    of more than ``max_set_size`` genes (None: no limit) is an error."""
    try:
        df = pd.read_csv(
            path, sep="\t", header=None, names=list(NCBI2REACTOME_COLUMNS), dtype=str, keep_default_na=False,
            na_filter=False, quoting=csv.QUOTE_NONE, skip_blank_lines=True, engine="c", compression="infer",
        )
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError, OSError, EOFError) as err:
        located = reader_error(path, err)
        if located is not None:
            raise located from None
        _raise_n2r_problem(path, str(err))
    if len(df) and ((df["entrez_id"].str.len() == 0) | (df["pathway_id"].str.len() == 0) | (df["species"].str.len() == 0)).any():
        _raise_n2r_problem(path, "empty field")
    counts = {"rows_read": int(len(df))}
    df = df[df["species"] == species]
    counts["rows_for_species"] = int(len(df))
    df = df.drop_duplicates(["entrez_id", "pathway_id"])
    counts["pathways"] = int(df["pathway_id"].nunique())
    if max_set_size is not None and len(df):
        sizes = df["pathway_id"].value_counts()
        if int(sizes.iloc[0]) > max_set_size:
            raise KgbuildInputError(set_too_large(f"pathway {sizes.index[0]!r}", int(sizes.iloc[0]), max_set_size),
                                    path=path)
    return df["entrez_id"].to_numpy(dtype=str), df["pathway_id"].to_numpy(dtype=str), counts


def _raise_n2r_problem(path: str | os.PathLike, reader_message: str) -> None:
    def check(line: str) -> str | None:
        fields = line.split("\t")
        if len(fields) != len(NCBI2REACTOME_COLUMNS):
            return f"expected {len(NCBI2REACTOME_COLUMNS)} tab-separated fields ({', '.join(NCBI2REACTOME_COLUMNS)}), got {len(fields)}"
        if not fields[0] or not fields[1] or not fields[5]:
            return "empty Entrez id, pathway id or species"
        return None

    found = find_bad_line(path, check, skip=lambda line: not line.strip())
    if found is not None:
        raise_bad_line(path, found)
    raise KgbuildInputError(f"cannot parse the NCBI2Reactome table: {reader_message}", path=path)


def read_gene_map(path: str | os.PathLike, id_column: str = "GeneID", symbol_column: str = "Symbol") -> dict[str, str]:
    """Entrez id -> symbol from a tab-separated table with a header (NCBI ``gene_info``: ``#tax_id GeneID
    Symbol ...``); a leading ``#`` on the header is ignored. An id mapped to two symbols is an error."""
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_filter=False,
                         quoting=csv.QUOTE_NONE, engine="c", compression="infer")
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError, OSError, EOFError) as err:
        located = reader_error(path, err)
        if located is not None:
            raise located from None
        raise KgbuildInputError(f"cannot parse the gene map: {err}", path=path) from None
    df.columns = [c.lstrip("#") for c in df.columns]
    missing = [c for c in (id_column, symbol_column) if c not in df.columns]
    if missing:
        raise KgbuildInputError(
            f"missing column(s) {missing}; the columns are {list(df.columns)}", path=path, column=missing[0]
        )
    df = df[[id_column, symbol_column]].drop_duplicates()
    dup = df[id_column].duplicated(keep=False)
    if dup.any():
        gid = df[id_column][dup].iloc[0]
        raise KgbuildInputError(
            f"id {gid!r} maps to several symbols: {sorted(df[symbol_column][df[id_column] == gid])}", path=path,
        )
    return dict(zip(df[id_column], df[symbol_column]))


# ---------------------------------------------------------------------- build
def build(
    gmt: str | os.PathLike | None = None,
    ncbi2reactome: str | os.PathLike | None = None,
    *,
    gene_map: str | os.PathLike | None = None,
    species: str = "Homo sapiens",
    min_jaccard: float = 0.1,
    max_in_degree: int | None = 20,
    max_set_size: int | None = DEFAULT_MAX_SET_SIZE,
    progress: bool | None = None,
) -> tuple[EdgeTable, dict[str, Any]]:
    """Build the Reactome Jaccard edge table from a GMT file *or* an NCBI2Reactome table (module docstring).

    ``max_set_size``: refuse a pathway of more genes than this (None: no limit) before any similarity is
    computed; the all-pairs cost grows with the square of the largest set."""
    if (gmt is None) == (ncbi2reactome is None):
        raise KgbuildInputError("give exactly one of a GMT file and an NCBI2Reactome table")
    if not 0 <= min_jaccard < 1:
        raise KgbuildInputError(f"`min_jaccard` must be within [0, 1), got {min_jaccard}")
    meta: dict[str, Any] = {"source": "Reactome", "version": None}
    if gmt is not None:
        genes, sets, counts = read_gmt(gmt, max_set_size)
        meta.update(layout="gmt", inputs=[input_record(gmt, "gmt")], node_ids="symbol")
    else:
        genes, sets, counts = read_ncbi2reactome(ncbi2reactome, species, max_set_size)
        meta.update(layout="ncbi2reactome", species=species, inputs=[input_record(ncbi2reactome, "ncbi2reactome")])
        if gene_map is not None:
            mapping = read_gene_map(gene_map)
            mapped = np.asarray([mapping.get(g, "") for g in genes.tolist()], dtype=object)
            unknown = sorted(set(genes[mapped == ""].tolist()))
            counts["unmapped_ids"] = len(unknown)
            counts["unmapped_rows_dropped"] = int((mapped == "").sum())
            if unknown:
                log.warning("%d Entrez id(s) of %s are not in the gene map %s (e.g. %s); their rows are dropped",
                            len(unknown), ncbi2reactome, gene_map, ", ".join(unknown[:5]))
            keep = mapped != ""
            genes, sets = mapped[keep].astype(str), sets[keep]
            meta["inputs"].append(input_record(gene_map, "gene_map"))
            meta["node_ids"] = "symbol (via gene map)"
            meta["unmapped_examples"] = unknown[:10]
        else:
            log.warning("no gene map given: the Reactome graph's nodes are Entrez ids, not gene symbols")
            meta["node_ids"] = "entrez"
    table, record = jaccard_table(genes, sets, min_jaccard, max_in_degree, progress=progress,
                                  max_set_size=max_set_size)
    meta.update(weight="Jaccard index of pathway-membership sets", filters=record, memberships=counts)
    return table, meta
