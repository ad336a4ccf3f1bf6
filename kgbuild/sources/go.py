"""Gene Ontology -> gene-gene edges weighted by the Jaccard index of the genes' GO-term sets.

Inputs: ``go-basic.obo`` (read with goatools' ``GODag``, ``optional_attrs={"relationship"}`` so that
``part_of`` is available) and a GAF 2.x annotation file (17 tab-separated columns, ``!`` header lines,
plain or gzip; parsed here with pandas - goatools' GAF reader needs plain text and is slower).

Steps:

1. GAF rows: drop ``NOT``-qualified rows (Qualifier contains ``NOT``), keep the chosen aspects
   (``P`` biological process, ``F`` molecular function, ``C`` cellular component), drop excluded evidence
   codes (e.g. ``IEA``). Genes are named by DB_Object_Symbol (column 3).
2. GO ids are resolved through the ontology (``alt_id`` -> primary id); ids not in it (obsolete or from
   another release) are counted, reported and dropped.
3. Each annotation is propagated to all ancestors through ``is_a`` and ``part_of`` (the true-path rule;
   ancestors from goatools' ``get_go2ancestors``): ``S_g = direct(g) + ancestors(direct(g))``.
4. The three roots (``GO:0008150`` biological_process, ``GO:0003674`` molecular_function,
   ``GO:0005575`` cellular_component) are removed from every set: after propagation nearly every gene has
   them, and they would inflate every Jaccard index without saying anything about the pair.
5. ``weight(a -> b) = |S_a & S_b| / |S_a | S_b|``; keep pairs with ``J > min_jaccard`` (strict, as GEARS:
   "Jaccard > 0.1"), then at most ``max_in_degree`` heaviest incoming edges per gene (ties by source name).
   Computed blockwise (:mod:`kgbuild.jaccard`), never as an N x N matrix.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from kgbuild.edge_table import EdgeTable
from kgbuild.errors import KgbuildInputError
from kgbuild.jaccard import DEFAULT_MAX_SET_SIZE, jaccard_table_from_matrix, membership_matrix
from kgbuild.provenance import input_record
from kgbuild.sources.textfiles import (GZIP_ERRORS, decode_line, find_bad_line, first_line, gzip_error, open_binary,
                                       open_text, raise_bad_line)

log = logging.getLogger(__name__)

ROOTS = ("GO:0008150", "GO:0003674", "GO:0005575")
ASPECTS = ("P", "F", "C")
PROPAGATE_RELATIONSHIPS = ("part_of",)
GAF_COLUMNS = (
    "DB", "DB_Object_ID", "DB_Object_Symbol", "Qualifier", "GO_ID", "DB_Reference", "Evidence_Code",
    "With_From", "Aspect", "DB_Object_Name", "DB_Object_Synonym", "DB_Object_Type", "Taxon", "Date",
    "Assigned_By", "Annotation_Extension", "Gene_Product_Form_ID",
)
_GO_ID = re.compile(r"^GO:\d{7}$")
NAMESPACES = ("biological_process", "molecular_function", "cellular_component")


# ---------------------------------------------------------------------- ontology
def load_ontology(obo: str | os.PathLike):
    """goatools ``GODag`` of ``obo`` with ``relationship`` loaded (no obsolete terms).

    The file is checked first (:func:`check_obo`), so that its problems are reported naming the term and
    the line instead of surfacing from goatools as a bare id or a recursion error."""
    from goatools.obo_parser import GODag

    if Path(obo).is_file() and Path(obo).stat().st_size == 0:
        raise KgbuildInputError("empty file, not an OBO ontology", path=obo)
    head = first_line(obo)
    if not head.startswith("format-version:"):
        raise KgbuildInputError(
            f"not an OBO ontology file (the first line should be 'format-version: 1.2', found {head[:60]!r})",
            path=obo, line=1,
        )
    check_obo(obo)
    try:
        return GODag(str(obo), optional_attrs={"relationship"}, load_obsolete=False, prt=None)
    except Exception as err:  # goatools raises plain Exceptions on malformed stanzas
        raise KgbuildInputError(f"goatools cannot read the ontology: {err}", path=obo) from None


def _obo_value(value: str) -> str:
    """A tag value without its trailing ``! comment`` and ``{qualifiers}``."""
    value = value.split(" !", 1)[0]
    return re.sub(r"\s*\{.*\}\s*$", "", value).strip()


def check_obo(obo: str | os.PathLike) -> None:
    """Check what the builder relies on in an OBO file, raising :class:`KgbuildInputError` naming the line:

    every ``[Term]`` has one id of the form ``GO:0000000`` (not defined twice, not another term's
    ``alt_id``), a name and a GO namespace; every ``is_a`` / ``relationship`` target is a non-obsolete term
    of the file (goatools cannot load anything else); ``is_a`` + ``part_of`` (the propagation edges) have
    no cycle; text is UTF-8; and the file does not end inside a term (a truncated download).
    """
    terms: dict[str, int] = {}  # id -> line of its "id:" tag
    alt_ids: dict[str, tuple[str, int]] = {}
    obsolete: set[str] = set()
    edges: list[tuple[str, str, str, int]] = []  # (child, relation, parent, line)
    stanza: dict[str, Any] | None = None  # the [Term] being read
    truncated = "; the file ends in the middle of this line: it looks truncated, download it again"

    def close(term: dict[str, Any] | None, at_end: bool) -> None:
        if term is None:
            return
        cut = " (the file ends inside this term: it looks truncated, download it again)" if at_end else ""
        if term["id"] is None:
            raise KgbuildInputError(f"[Term] without an id{cut}", path=obo, line=term["line"])
        for tag in ("name", "namespace"):
            if term[tag] is None:
                raise KgbuildInputError(f"term {term['id']} has no {tag}{cut}", path=obo, line=term["line"])

    try:
        with open_binary(obo) as fh:
            for number, raw in enumerate(fh, start=1):
                ended = raw.endswith(b"\n")
                line = decode_line(obo, number, raw).rstrip("\r\n")
                suffix = "" if ended else truncated
                if line.startswith("["):
                    if not line.rstrip().endswith("]"):
                        raise KgbuildInputError(f"malformed stanza header {line[:40]!r}{suffix}", path=obo, line=number)
                    close(stanza, at_end=False)
                    is_term = line.strip() == "[Term]"
                    stanza = {"line": number, "id": None, "name": None, "namespace": None} if is_term else None
                    continue
                if stanza is None or ":" not in line or line.startswith("!"):
                    continue
                tag, _, value = line.partition(":")
                value = _obo_value(value)
                if tag == "id":
                    if stanza["id"] is not None:
                        raise KgbuildInputError(f"term {stanza['id']} has a second id {value!r}{suffix}",
                                                path=obo, line=number)
                    if not _GO_ID.match(value):
                        raise KgbuildInputError(f"term id {value!r} is not of the form GO:0000000{suffix}",
                                                path=obo, line=number)
                    if value in terms:
                        raise KgbuildInputError(f"term {value} is defined twice (first on line {terms[value]})",
                                                path=obo, line=number)
                    stanza["id"] = value
                    terms[value] = number
                    continue
                term = stanza["id"]
                if term is None:
                    raise KgbuildInputError(f"the [Term] of line {stanza['line']} has {tag!r} before its id{suffix}",
                                            path=obo, line=number)
                if tag == "name":
                    stanza["name"] = value
                elif tag == "namespace":
                    if value not in NAMESPACES:
                        raise KgbuildInputError(f"term {term} has namespace {value!r}, not one of "
                                                f"{', '.join(NAMESPACES)}{suffix}", path=obo, line=number)
                    stanza["namespace"] = value
                elif tag == "alt_id":
                    alt_ids[value] = (term, number)
                elif tag == "is_obsolete" and value == "true":
                    obsolete.add(term)
                elif tag in ("is_a", "relationship"):
                    relation, _, parent = (("is_a", "", value) if tag == "is_a" else value.partition(" "))
                    parent = parent.strip()
                    if not _GO_ID.match(parent):
                        raise KgbuildInputError(f"term {term} has {relation} parent {parent!r}, not of the form "
                                                f"GO:0000000{suffix}", path=obo, line=number)
                    edges.append((term, relation, parent, number))
    except GZIP_ERRORS as err:
        raise gzip_error(obo, err) from None
    close(stanza, at_end=True)
    if not terms:
        raise KgbuildInputError("no [Term] stanza: not a GO ontology (or a truncated file)", path=obo)
    for alt, (term, line) in alt_ids.items():
        if alt in terms:
            raise KgbuildInputError(f"alt_id {alt} of term {term} is also the id of the term on line {terms[alt]}",
                                    path=obo, line=line)
    for child, relation, parent, line in edges:
        if child in obsolete:
            continue
        if parent not in terms:
            known = f" (it is an alt_id of {alt_ids[parent][0]})" if parent in alt_ids else ""
            raise KgbuildInputError(f"{child} has {relation} parent {parent}, which is not a term of this file{known}",
                                    path=obo, line=line)
        if parent in obsolete:
            raise KgbuildInputError(f"{child} has {relation} parent {parent}, which is obsolete", path=obo, line=line)
    _check_acyclic(obo, [(c, r, p, n) for c, r, p, n in edges
                         if r in ("is_a", *PROPAGATE_RELATIONSHIPS) and c not in obsolete])


def _check_acyclic(obo: str | os.PathLike, edges: list[tuple[str, str, str, int]]) -> None:
    """Raise naming the cycle when ``child -> parent`` edges loop (iterative depth-first search)."""
    up: dict[str, list[tuple[str, str, int]]] = {}
    for child, relation, parent, line in edges:
        up.setdefault(child, []).append((parent, relation, line))
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(up):
        if state.get(start):
            continue
        path: list[tuple[str, int]] = [(start, 0)]  # (term, index of the next parent to visit)
        via: list[tuple[str, int]] = []  # (relation, line) of the edge into path[i + 1]
        state[start] = 1
        while path:
            term, i = path[-1]
            parents = up.get(term, [])
            if i == len(parents):
                state[term] = 2
                path.pop()
                if via:
                    via.pop()
                continue
            path[-1] = (term, i + 1)
            parent, relation, line = parents[i]
            if state.get(parent) == 1:
                first = [t for t, _ in path].index(parent)
                loop = [t for t, _ in path[first:]] + [parent]
                rels = [r for r, _ in via[first:]] + [relation]
                lines = [n for _, n in via[first:]] + [line]
                shown = loop[0] + "".join(f" -{r}-> {t}" for r, t in zip(rels, loop[1:]))
                raise KgbuildInputError(
                    f"cycle in is_a/part_of: {shown} (lines {', '.join(map(str, lines))}); a term cannot be its "
                    "own ancestor", path=obo, line=lines[0])
            if not state.get(parent):
                state[parent] = 1
                path.append((parent, 0))
                via.append((relation, line))


def ontology_version(obo: str | os.PathLike) -> str | None:
    """``data-version`` from the OBO header (e.g. ``releases/2022-07-01``)."""
    with open_text(obo) as fh:
        for _, line in zip(range(50), fh):
            if line.startswith("data-version:"):
                return line.split(":", 1)[1].strip()
            if line.startswith("[Term]"):
                break
    return None


def ancestor_closure(dag, terms: Iterable[str]) -> dict[str, set[str]]:
    """``{term: {term} | ancestors(term)}`` through ``is_a`` and ``part_of`` for the given primary ids."""
    from goatools.godag.go_tasks import get_go2ancestors

    objs = {dag[t] for t in terms}
    up = get_go2ancestors(objs, set(PROPAGATE_RELATIONSHIPS))
    return {o.id: {o.id} | set(up.get(o.id, ())) for o in objs}


# ---------------------------------------------------------------------- annotations
def read_gaf(path: str | os.PathLike) -> pd.DataFrame:
    """The GAF as a DataFrame of strings with columns ``symbol, qualifier, go_id, evidence, aspect, line``.

    ``line`` is the 1-based line number in the file. Rows with fewer than 15 columns, an empty symbol,
    a malformed GO id or an unknown aspect raise :class:`KgbuildInputError` naming the line.
    """
    try:
        with open_binary(path) as fh:
            text = fh.read()
    except GZIP_ERRORS as err:
        raise gzip_error(path, err) from None
    except OSError as err:
        raise KgbuildInputError(f"cannot read the file ({err})", path=path) from None
    # exact per-line field counts, vectorised over the raw bytes: line i spans starts[i]:ends[i]
    raw = np.frombuffer(text, dtype=np.uint8)
    ends = np.flatnonzero(raw == ord("\n"))
    if len(raw) and raw[-1] != ord("\n"):
        ends = np.r_[ends, len(raw)]
    starts = np.r_[0, ends[:-1] + 1] if len(ends) else np.zeros(0, np.int64)
    first = raw[np.minimum(starts, max(len(raw) - 1, 0))] if len(raw) else np.zeros(0, np.uint8)
    comment = (first == ord("!")) & (starts < ends)
    n_header = int(np.argmin(comment)) if len(comment) and not comment.all() else len(comment)
    tabs = np.flatnonzero(raw == ord("\t"))
    fields = np.searchsorted(tabs, ends) - np.searchsorted(tabs, starts) + 1
    bad_count = (fields < 15) | (fields > len(GAF_COLUMNS))
    bad_count[:n_header] = False
    if bad_count.any():
        i = int(np.flatnonzero(bad_count)[0])
        line = text[starts[i]:ends[i]].decode("utf-8", "replace").rstrip("\r")
        raise_bad_line(path, (i + 1, line, f"expected 15-17 tab-separated GAF columns, got {int(fields[i])}"))
    try:
        df = pd.read_csv(
            io.BytesIO(text), sep="\t", header=None, usecols=[2, 3, 4, 6, 8], dtype=str, keep_default_na=False,
            na_filter=False, quoting=csv.QUOTE_NONE, skiprows=n_header, skip_blank_lines=False, engine="c",
        )
    except pd.errors.EmptyDataError:
        df = pd.DataFrame({c: [] for c in (2, 3, 4, 6, 8)}, dtype=str)
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as err:
        _raise_gaf_problem(path, str(err))
    df.columns = ["symbol", "qualifier", "go_id", "evidence", "aspect"]
    df["line"] = np.arange(len(df)) + n_header + 1
    bad = (
        (df["symbol"].str.len() == 0)
        | ~df["go_id"].str.match(_GO_ID.pattern)
        | ~df["aspect"].isin(ASPECTS)
        | (df["evidence"].str.len() == 0)
    )
    if bad.any():
        _raise_gaf_problem(path, f"bad row near line {int(df['line'][bad].iloc[0])}")
    return df


def _raise_gaf_problem(path: str | os.PathLike, reader_message: str) -> None:
    def check(line: str) -> str | None:
        fields = line.split("\t")
        if len(fields) < 15 or len(fields) > len(GAF_COLUMNS):
            return f"expected 15-17 tab-separated GAF columns, got {len(fields)}"
        if not fields[2]:
            return "empty DB_Object_Symbol (column 3)"
        if not _GO_ID.match(fields[4]):
            return f"GO_ID (column 5) {fields[4]!r} is not of the form GO:0000000"
        if not fields[6]:
            return "empty Evidence_Code (column 7)"
        if fields[8] not in ASPECTS:
            return f"Aspect (column 9) {fields[8]!r} is not one of P, F, C"
        return None

    found = find_bad_line(path, check, skip=lambda line: line.startswith("!"))
    if found is not None:
        raise_bad_line(path, found)
    raise KgbuildInputError(f"cannot parse the GAF file: {reader_message}", path=path)


# ---------------------------------------------------------------------- build
def build(
    obo: str | os.PathLike,
    gaf: str | os.PathLike,
    *,
    aspects: Iterable[str] = ASPECTS,
    exclude_evidence: Iterable[str] = (),
    min_jaccard: float = 0.1,
    max_in_degree: int | None = 20,
    block_rows: int = 512,
    progress: bool | None = None,
    max_set_size: int | None = DEFAULT_MAX_SET_SIZE,
) -> tuple[EdgeTable, dict[str, Any]]:
    """Build the GO Jaccard edge table and its layer provenance (see the module docstring).

    ``max_set_size``: refuse a GO term with more genes than this after propagation (None: no limit)."""
    aspects = sorted({a.strip().upper() for a in aspects if a.strip()})
    bad = [a for a in aspects if a not in ASPECTS]
    if bad or not aspects:
        raise KgbuildInputError(f"`aspects` must be among P, F, C; got {bad or 'none'}")
    exclude = sorted({e.strip().upper() for e in exclude_evidence if e.strip()})
    if not 0 <= min_jaccard < 1:
        raise KgbuildInputError(f"`min_jaccard` must be within [0, 1), got {min_jaccard}")

    dag = load_ontology(obo)
    df = read_gaf(gaf)
    counts: dict[str, int] = {"rows_read": int(len(df))}
    is_not = df["qualifier"].str.split("|").apply(lambda q: "NOT" in q) if len(df) else pd.Series([], dtype=bool)
    counts["not_rows_dropped"] = int(is_not.sum())
    df = df[~is_not.to_numpy(dtype=bool)]
    in_aspect = df["aspect"].isin(aspects)
    counts["other_aspect_rows_dropped"] = int((~in_aspect).sum())
    df = df[in_aspect]
    excluded = df["evidence"].isin(exclude)
    counts["excluded_evidence_rows_dropped"] = int(excluded.sum())
    df = df[~excluded]

    # resolve GO ids (alt ids -> primary); unknown/obsolete ids are counted and dropped
    go_ids = df["go_id"].unique()
    primary = {g: dag[g].id for g in go_ids if g in dag}
    unknown = sorted(set(go_ids) - set(primary))
    unknown_rows = df["go_id"].isin(unknown)
    counts["unknown_go_id_rows_dropped"] = int(unknown_rows.sum())
    if unknown:
        log.warning(
            "%s: %d GO id(s) are not in %s (obsolete or from another release; e.g. %s); %d annotation row(s) dropped",
            gaf, len(unknown), obo, ", ".join(unknown[:5]), int(unknown_rows.sum()),
        )
    df = df[~unknown_rows]
    counts["annotation_rows_used"] = int(len(df))

    # gene x direct-term matrix D, term closure C (term -> itself + ancestors, roots removed): A = (D C) > 0
    genes, gene_codes = np.unique(df["symbol"].to_numpy(dtype=str), return_inverse=True)
    direct = np.asarray([primary[g] for g in df["go_id"].to_numpy()], dtype=str)
    direct_terms, direct_codes = np.unique(direct, return_inverse=True)
    closure = ancestor_closure(dag, direct_terms.tolist())
    all_terms = np.asarray(sorted(set().union(*closure.values()) - set(ROOTS)) if closure else [], dtype=str)
    term_pos = {t: i for i, t in enumerate(all_terms.tolist())}
    c_rows, c_cols = [], []
    for i, t in enumerate(direct_terms.tolist()):
        cols = [term_pos[x] for x in closure[t] if x in term_pos]
        c_rows.extend([i] * len(cols))
        c_cols.extend(cols)
    d = membership_matrix(gene_codes.ravel(), direct_codes.ravel(), len(genes), len(direct_terms))
    c = membership_matrix(np.asarray(c_rows, np.int64), np.asarray(c_cols, np.int64), len(direct_terms), len(all_terms))
    a = (d @ c).tocsr()
    a.data[:] = 1.0
    a.eliminate_zeros()
    table, record = jaccard_table_from_matrix(genes, a, min_jaccard, max_in_degree, block_rows, progress,
                                              max_set_size=max_set_size, set_names=all_terms)
    meta: dict[str, Any] = {
        "source": "Gene Ontology",
        "version": ontology_version(obo),
        "weight": "Jaccard index of propagated GO-term sets (roots excluded)",
        "inputs": [input_record(obo, "obo"), input_record(gaf, "gaf")],
        "aspects": aspects,
        "exclude_evidence": exclude,
        "propagation": ["is_a", *PROPAGATE_RELATIONSHIPS],
        "excluded_terms": list(ROOTS),
        "filters": record,
        "annotations": counts,
        "unknown_go_ids": {"count": len(unknown), "examples": unknown[:10]},
    }
    return table, meta
