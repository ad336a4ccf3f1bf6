"""kgbuild from Python: one function per graph source, each returning a one-layer :class:`MultiGraph`.

::

    import kgbuild

    string = kgbuild.string(min_score=700)                 # downloads STRING's files into the cache if needed
    go = kgbuild.go(obo="go-basic.obo", gaf="goa_human.gaf.gz", aspects="P")
    reactome = kgbuild.reactome(offline=True)              # only from the cache
    depmap = kgbuild.screen("depmap.parquet", top_pct=1, layer_name="depmap")
    mine = kgbuild.edges("my_map.tsv", source_col="a", target_col="b", weight_col="w", symmetric=True)
    multi = kgbuild.merge(string, go, reactome, depmap, mine, output="multi.kg.npz")

The ``kgbuild`` command line is a thin layer over these functions: same parameters (``--min-score`` is
``min_score``), same graphs, same provenance. Each function

* takes the input files as paths, or (for ``string``, ``go``, ``reactome``) fetches the missing ones
  from the download cache exactly as ``kgbuild fetch`` does (``cache_dir``, ``offline``; the download
  records - URL, version, sha256, license, citation - go into the layer's ``downloaded`` provenance);
* runs the stages: the source's parser (``kgbuild.sources.<source>.read`` / ``build``) makes an
  :class:`~kgbuild.edge_table.EdgeTable`, the filters of :mod:`kgbuild.filters` clean it up, and
  :meth:`~kgbuild.edge_table.EdgeTable.to_graph` makes the layer. (The Jaccard sources, GO and
  Reactome, apply their ``min_jaccard`` threshold and in-degree cap per block while computing the
  similarities, so memory stays proportional to the kept edges; :mod:`kgbuild.jaccard`.)
* with ``output=...`` also writes the graph there atomically; an output that is one of the inputs is
  refused before anything is read or downloaded.

Errors are :class:`~kgbuild.errors.KgbuildInputError` (bad input: the message names file, line, column or
gene, and the parameter to change, as `` `min_score` ``), :class:`~kgbuild.fetch.FetchError` (download
or cache problems) and :class:`~kgbuild.graph.GraphError`.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from kgbuild.edge_table import EdgeTable
from kgbuild.errors import KgbuildInputError
from kgbuild.filters import apply_filters, max_in_degree_mask, top_pairs_index
from kgbuild.graph import MultiGraph, new_meta
from kgbuild.jaccard import DEFAULT_MAX_SET_SIZE
from kgbuild.outputs import check_output_not_input, output_errors

PathLike = str | os.PathLike

__all__ = ["string", "go", "reactome", "screen", "edges", "merge", "string_links_key", "fetch_inputs",
           "finish_layer", "DOWNLOAD_FIELDS"]

#: the fields of a download record (kgbuild.fetch) kept in a layer's ``downloaded`` provenance
DOWNLOAD_FIELDS = ("url", "version", "retrieved", "sha256", "license", "citation")


# ---------------------------------------------------------------------- the glue every builder shares
def string_links_key(channel: str) -> str:
    """The STRING file that holds ``channel``: ``links`` for ``combined_score``, else ``links_detailed``
    (the per-channel scores are only in protein.links.detailed)."""
    return "links" if channel == "combined_score" else "links_detailed"


def fetch_inputs(source: str, given: Mapping[str, PathLike | None], *, cache_dir: PathLike | None = None,
                 offline: bool = False, output: PathLike | None = None,
                 labels: Mapping[str, str] | None = None) -> tuple[dict[str, Path], dict[str, dict]]:
    """The input files of a builder: those ``given`` (``{file key: path or None}``), plus the missing ones
    from the download cache (:func:`kgbuild.fetch.fetch`; downloaded unless ``offline``).

    Returns ``(paths, {key: download record})``. ``output``, when given, must not be any of the inputs
    (given or cached): checked before and after the download. ``labels`` names the parameter that gives
    each key (default: the key itself), for the error message.
    """
    labels = dict(labels or {})
    paths = {k: Path(p) for k, p in given.items() if p is not None}
    if output is not None:
        check_output_not_input(output, [(f"`{labels.get(k, k)}`", p) for k, p in paths.items()])
    missing = [k for k, p in given.items() if p is None]
    records: dict[str, dict] = {}
    if missing:
        import kgbuild.fetch as fetching

        fetched = fetching.fetch(source, missing, cache_dir, offline)
        if output is not None:
            check_output_not_input(output, [(f"cached {source}/{k}", p) for k, p in fetched.items()])
        paths.update({k: Path(p) for k, p in fetched.items()})
        records = {k: fetching.fetch_record(p) or {} for k, p in fetched.items()}
    return paths, records


def finish_layer(table: EdgeTable, meta: dict[str, Any], layer_name: str, fetched: Mapping[str, dict],
                 hint: str, output: PathLike | None = None) -> MultiGraph:
    """The last stage: refuse an empty filtered table (``hint`` says what to loosen), attach the download
    provenance, make the one-layer graph and, with ``output``, write it."""
    if len(table) == 0:
        where = f", nothing written to {output}" if output is not None else ""
        raise KgbuildInputError(f"no edges left after filtering{where}; {hint}")
    if fetched:
        meta["downloaded"] = {k: {f: r.get(f) for f in DOWNLOAD_FIELDS} for k, r in fetched.items()}
        versions = {r.get("version") for r in fetched.values() if r.get("version")}
        if not meta.get("version") and len(versions) == 1:
            meta["version"] = versions.pop()
    return _save(table.to_graph(layer_name, meta), output)


def _save(graph: MultiGraph, output: PathLike | None) -> MultiGraph:
    if output is not None:
        with output_errors(output):
            graph.save(output)
    return graph


def _as_list(values: str | Iterable[str]) -> list[str]:
    """``"P,F"`` or ``["P", "F,C"]`` -> ``["P", "F", "C"]``."""
    items = [values] if isinstance(values, str) else list(values)
    return [v.strip() for item in items for v in str(item).split(",") if v.strip()]


# ---------------------------------------------------------------------- the builders
def string(
    links: PathLike | None = None,
    info: PathLike | None = None,
    *,
    min_score: int = 700,
    max_in_degree: int | None = 20,
    channel: str = "combined_score",
    unknown_ids: str = "warn",
    layer_name: str = "string",
    cache_dir: PathLike | None = None,
    offline: bool = False,
    output: PathLike | None = None,
) -> MultiGraph:
    """STRING protein-protein associations as a gene graph, weight ``score / 1000`` (``kgbuild string``).

    ``links``/``info``: protein.links(.detailed) and protein.info files; a missing one is fetched
    (``kgbuild fetch string``; a ``channel`` other than ``combined_score`` needs protein.links.detailed).
    ``min_score``: keep ``score >= min_score`` (0-1000). ``max_in_degree``: per gene keep the heaviest
    incoming links (None or 0: no cap). ``unknown_ids``: ``warn`` (drop and count) or ``error``.
    """
    from kgbuild.sources import string as source

    key = string_links_key(channel)
    paths, fetched = fetch_inputs("string", {key: links, "info": info}, cache_dir=cache_dir, offline=offline,
                                  output=output, labels={key: "links"})
    table, meta = source.read(paths[key], paths["info"], min_score=min_score, channel=channel,
                              unknown_ids=unknown_ids)
    table, record = apply_filters(table, **source.FILTERS, max_in_degree=max_in_degree or None)
    meta["filters"].update(record)
    return finish_layer(table, meta, layer_name, fetched, "lower `min_score` or check the files", output)


def go(
    obo: PathLike | None = None,
    gaf: PathLike | None = None,
    *,
    aspects: str | Iterable[str] = ("P", "F", "C"),
    exclude_evidence: str | Iterable[str] = (),
    min_jaccard: float = 0.1,
    max_in_degree: int | None = 20,
    max_set_size: int | None = DEFAULT_MAX_SET_SIZE,
    layer_name: str = "go",
    cache_dir: PathLike | None = None,
    offline: bool = False,
    progress: bool | None = None,
    output: PathLike | None = None,
) -> MultiGraph:
    """Gene Ontology graph, weight = Jaccard index of two genes' propagated GO-term sets (``kgbuild go``).

    ``obo``/``gaf``: go-basic.obo and a GAF file; a missing one is fetched (``kgbuild fetch go``).
    ``aspects``: any of P, F, C (``"P,F"`` or a list). ``exclude_evidence``: evidence codes to drop, e.g.
    ``"IEA"``. Pairs with Jaccard > ``min_jaccard`` are kept, then the ``max_in_degree`` cap.
    ``max_set_size``: refuse a GO term with more genes than this (None: no limit).
    """
    from kgbuild.sources import go as source

    paths, fetched = fetch_inputs("go", {"obo": obo, "gaf": gaf}, cache_dir=cache_dir, offline=offline,
                                  output=output)
    table, meta = source.build(paths["obo"], paths["gaf"], aspects=_as_list(aspects),
                               exclude_evidence=_as_list(exclude_evidence), min_jaccard=min_jaccard,
                               max_in_degree=max_in_degree or None, max_set_size=max_set_size, progress=progress)
    return finish_layer(table, meta, layer_name, fetched, "lower `min_jaccard` or use more `aspects`", output)


def reactome(
    gmt: PathLike | None = None,
    *,
    ncbi2reactome: PathLike | None = None,
    gene_map: PathLike | None = None,
    species: str = "Homo sapiens",
    min_jaccard: float = 0.1,
    max_in_degree: int | None = 20,
    max_set_size: int | None = DEFAULT_MAX_SET_SIZE,
    layer_name: str = "reactome",
    cache_dir: PathLike | None = None,
    offline: bool = False,
    progress: bool | None = None,
    output: PathLike | None = None,
) -> MultiGraph:
    """Reactome graph, weight = Jaccard index of two genes' pathway sets (``kgbuild reactome``).

    Either ``gmt`` (ReactomePathways.gmt; fetched when neither it nor ``ncbi2reactome`` is given) or
    ``ncbi2reactome`` (NCBI2Reactome.txt, rows of ``species``; ``gene_map``, an NCBI gene_info table,
    turns its Entrez ids into symbols).
    """
    from kgbuild.sources import reactome as source

    if gmt is not None and ncbi2reactome is not None:
        raise KgbuildInputError("give either `gmt` or `ncbi2reactome`, not both")
    if gene_map is not None and ncbi2reactome is None:
        raise KgbuildInputError("`gene_map` only applies to `ncbi2reactome`")
    fetched: dict[str, dict] = {}
    if output is not None:
        check_output_not_input(output, [("`ncbi2reactome`", ncbi2reactome), ("`gene_map`", gene_map)])
    if ncbi2reactome is None:
        paths, fetched = fetch_inputs("reactome", {"gmt": gmt}, cache_dir=cache_dir, offline=offline, output=output)
        gmt = paths["gmt"]
    table, meta = source.build(gmt, ncbi2reactome, gene_map=gene_map, species=species, min_jaccard=min_jaccard,
                               max_in_degree=max_in_degree or None, max_set_size=max_set_size, progress=progress)
    return finish_layer(table, meta, layer_name, fetched, "lower `min_jaccard` or check the pathway file", output)


def screen(
    embeddings: PathLike,
    *,
    top_pct: float = 1.0,
    max_in_degree: int | None = None,
    layer_name: str | None = None,
    block_rows: int = 2048,
    use_gpu: bool | None = None,
    progress: bool | None = None,
    output: PathLike | None = None,
    **read_options: Any,
) -> MultiGraph:
    """Link genes with similar screen profiles (``kgbuild screen``): the global top ``top_pct`` percent of
    gene pairs by ``|cosine|``, both directions, weight ``|cos|``; every gene of the table is a node.

    ``embeddings``: .parquet/.csv/.tsv (genes x features, or DepMap-style models x genes) or a Perturb-seq
    .h5ad; ``read_options`` say how to read it, by the keywords of
    :func:`kgbuild.sources.embeddings.load_embeddings`: ``gene_column``, ``orientation`` ("auto"),
    ``aggregate`` ("mean"), ``max_nan_frac``, ``obs_column``, ``control``. ``max_in_degree`` (None/0 =
    off) then keeps each gene's heaviest incoming edges. ``layer_name``: default the file name.
    """
    from kgbuild.sources import screen as source
    from kgbuild.sources.embeddings import load_embeddings

    path = Path(embeddings)
    if output is not None:
        check_output_not_input(output, [("`embeddings`", path)])
    # every reading keyword, defaults filled in: the layer's provenance is the same however they were given
    defaults = {k: p.default for k, p in inspect.signature(load_embeddings).parameters.items()
                if p.kind is p.KEYWORD_ONLY}
    unknown = sorted(set(read_options) - set(defaults))
    if unknown:
        raise TypeError(f"screen() got unexpected keyword(s) {', '.join(unknown)}; reading options are "
                        f"{', '.join(defaults)}")
    candidates, genes, search, meta = source.read(path, top_pct=top_pct, block_rows=block_rows, use_gpu=use_gpu,
                                                  progress=progress, **{**defaults, **read_options})
    # filter: the global top-K unordered pairs (K of all N (N - 1) / 2 pairs), |cos| clipped to 1 after ranking
    n = len(genes)
    _, rows, cols = candidates.codes()
    weights = candidates.weights.astype(np.float32)
    order = top_pairs_index(rows, cols, weights, source.n_top_pairs(n, top_pct), n)
    kept = np.minimum(weights[order], np.float32(1.0))
    # both directions of every kept pair, then the optional in-degree cap
    src = np.concatenate([rows[order], cols[order]])
    dst = np.concatenate([cols[order], rows[order]])
    w = np.concatenate([kept, kept])
    capped = None
    if max_in_degree:
        keep = max_in_degree_mask(src, dst, w.astype(np.float64), int(max_in_degree))
        capped = int(len(keep) - keep.sum())
        src, dst, w = src[keep], dst[keep], w[keep]
    if len(w) == 0:
        raise KgbuildInputError("the graph is empty after filtering", path=path)
    layer = layer_name or source.default_layer_name(path)
    meta["parameters"]["max_in_degree"] = int(max_in_degree) if max_in_degree else None
    meta["selection"] = {
        "pairs_total": int(search.n_pairs), "pairs_kept": int(len(kept)),
        "threshold_abs_cos": float(kept[-1]) if len(kept) else float("nan"), "engine": search.engine,
        "passes": search.passes, "max_candidates_held": int(search.max_candidates),
        "directed_edges": int(2 * len(kept)), "max_in_degree_removed": capped,
    }
    graph = MultiGraph(
        nodes=genes,
        edge_index=np.stack([src, dst]).astype(np.int64),
        edge_weight=w.astype(np.float32),
        edge_layer=np.zeros(len(w), dtype=np.int16),
        layers=np.asarray([layer]),
        meta=new_meta({layer: meta}),
    )
    return _save(graph, output)


def edges(
    path: PathLike,
    *,
    source_col: str = "source",
    target_col: str = "target",
    weight_col: str | None = None,
    sep: str | None = None,
    symmetric: bool = False,
    duplicates: str = "max",
    weight_scale: float = 1.0,
    min_weight: float | None = None,
    top_pct: float | None = None,
    max_in_degree: int | None = 20,
    layer_name: str = "edges",
    output: PathLike | None = None,
) -> MultiGraph:
    """Your own edge list (.csv/.tsv/.txt, optionally .gz, or .parquet) as a layer (``kgbuild edges``).

    ``weight_col`` None: every edge weighs 1. ``symmetric``: each row is an undirected pair.
    ``duplicates``: max/min/mean/sum/first/error. ``weight_scale`` multiplies the weights first;
    ``min_weight``, ``top_pct`` (of edges by |weight|) and ``max_in_degree`` filter them.
    """
    from kgbuild.sources import edges as source

    if output is not None:
        check_output_not_input(output, [("`path`", path)])
    table, meta = source.read(path, source_col, target_col, weight_col, sep=sep, weight_scale=weight_scale)
    table, meta["filters"] = apply_filters(
        table, drop_self_loops=True, min_weight=min_weight, symmetric=symmetric, dedupe=duplicates,
        top_pct=top_pct, max_in_degree=max_in_degree or None,
    )
    return finish_layer(table, meta, layer_name, {}, "loosen `min_weight` / `top_pct` or check the columns", output)


def merge(*graphs: MultiGraph | PathLike | Iterable[MultiGraph | PathLike],
          output: PathLike | None = None) -> MultiGraph:
    """One multigraph from several (``kgbuild merge``): union of the node vocabularies, one layer per input
    layer (layer names must be distinct). Graphs are :class:`MultiGraph` objects or paths of graph files;
    a single list of them works too."""
    items: list[Any] = []
    for g in graphs:
        if isinstance(g, (MultiGraph, str, os.PathLike)):
            items.append(g)
        else:
            items.extend(g)
    paths = [Path(g) for g in items if not isinstance(g, MultiGraph)]
    if output is not None:
        check_output_not_input(output, [("", p) for p in paths])
    loaded = [g if isinstance(g, MultiGraph) else MultiGraph.load(g) for g in items]
    return _save(MultiGraph.merge(loaded), output)
