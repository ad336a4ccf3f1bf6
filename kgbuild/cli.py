"""The ``kgbuild`` command line: build, merge, inspect and export gene-gene multigraph files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import click

from kgbuild import api
from kgbuild.cli_common import common_group_options, set_short_help, setup_logging, user_errors
from kgbuild.fetch import FetchError, fetch, list_manifests
from kgbuild.errors import KgbuildInputError
from kgbuild.graph import GraphError, GraphFileError, MultiGraph
from kgbuild.jaccard import DEFAULT_MAX_SET_SIZE
from kgbuild.outputs import check_output_not_input, output_errors

INPUT_ERRORS = (GraphError, GraphFileError, FileNotFoundError, KeyError, KgbuildInputError)

# ---------------------------------------------------------------------- library parameters -> command-line flags
#: library messages name parameters as `name` or `name=value` (kgbuild.api); these have another flag
_FLAG_ALIASES = {"path": "--edges", "manifests": "--manifest-dir", "output": "-o"}
_PARAM = re.compile(r"`([a-z][a-z0-9_]*)(?:=([^`]*))?`")


def flag_message(message: str, command: click.Command | None) -> str:
    """A library message for the command line: `` `min_score` `` -> ``--min-score``, `` `max_set_size=3` ``
    -> ``--max-set-size 3`` (flags of ``command``; other names lose only the backticks)."""
    opts = {p.name: p for p in (command.params if command is not None else []) if isinstance(p, click.Option)}

    def flag(match: re.Match) -> str:
        name, value = match.group(1), match.group(2)
        option = opts.get(name)
        opt = _FLAG_ALIASES.get(name) or (max(option.opts, key=len) if option is not None else None)
        if opt is None:
            return name if value is None else f"{name}={value}"
        if option is not None and option.is_flag:
            return opt
        return opt if value is None else f"{opt} {value}"

    return _PARAM.sub(flag, message)


def library_errors(*kinds: type[BaseException]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Like :func:`user_errors` (``Error: ...``, exit code 1), with parameter names turned into this
    command's flags (:func:`flag_message`)."""

    def message(err: BaseException) -> str:
        ctx = click.get_current_context(silent=True)
        return flag_message(str(err), ctx.command if ctx else None)

    return user_errors(*kinds, message=message)


# ---------------------------------------------------------------------- options shared by the builders
output_option = click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
    help="Multigraph file to write (*.kg.npz); written atomically, never half-written.",
)
cache_dir_option = click.option(
    "--cache-dir", type=click.Path(file_okay=False, path_type=Path), envvar="KGBUILD_CACHE_DIR",
    default=None, show_envvar=True,
    help="Download cache (default: ~/.cache/txpert-kg).",
)
offline_option = click.option(
    "--offline", is_flag=True, help="Never use the network: take inputs from the cache or the given paths.",
)


def max_in_degree_option(default: int | None):
    """``--max-in-degree K``: per target node keep the K heaviest incoming edges (0 = no cap)."""
    return click.option(
        "--max-in-degree", type=click.IntRange(min=0), default=default, show_default=True,
        help="Keep at most this many incoming edges per target node, the heaviest (ties broken by "
             "source name); 0 turns the cap off.",
    )


def write_graph(graph: MultiGraph, output: Path) -> None:
    """Save a built graph atomically and print its one-screen summary (a write error, e.g. a full disk or
    a read-only folder, is a clean error; no partial file is left)."""
    with output_errors(output):
        graph.save(output)
    report_written(graph, output)


def report_written(graph: MultiGraph, output: Path) -> None:
    """Print where the graph went and its one-screen summary."""
    click.echo(f"wrote {output}")
    click.echo(graph.format_summary())


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@common_group_options("kgbuild")
def main(verbose: int) -> None:
    """Build gene-gene knowledge graphs and write them as multigraph files (*.kg.npz).

    A multigraph file holds one node vocabulary (gene symbols) and one or more typed, weighted edge
    layers (string, go, reactome, a screen such as depmap, or your own map graph), with the provenance of
    every layer: sources, versions, input checksums and filter settings.

    \b
    Typical session:
      kgbuild string --min-score 700 -o string.kg.npz
      kgbuild go -o go.kg.npz
      kgbuild reactome -o reactome.kg.npz
      kgbuild screen --embeddings depmap.parquet --top-pct 1 -o depmap.kg.npz
      kgbuild edges --edges my_map.tsv --source-col a --target-col b --weight-col w -o mymap.kg.npz
      kgbuild merge string.kg.npz go.kg.npz reactome.kg.npz depmap.kg.npz mymap.kg.npz -o multi.kg.npz
      kgbuild info multi.kg.npz
    """
    setup_logging(verbose)


@main.command()
@click.argument("graph", type=click.Path(dir_okay=False, path_type=Path))
@user_errors(*INPUT_ERRORS)
def info(graph: Path) -> None:
    """Print a summary of GRAPH: nodes, edges and degree statistics per layer, and its provenance."""
    g = MultiGraph.load(graph)
    click.echo(f"{graph}")
    click.echo(g.format_summary())
    click.echo(f"created {g.meta.get('created')} by txpert-kg {g.meta.get('tool_version')}")
    for name, entry in g.meta["layers"].items():
        details = ", ".join(f"{k}={v}" for k, v in entry.items() if k not in ("inputs",))
        click.echo(f"  {name}: {details}")
        for item in entry.get("inputs", []):
            click.echo(f"    input {item.get('path')} sha256={str(item.get('sha256'))[:16]}...")


@main.command()
@click.argument("graphs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@output_option
@library_errors(*INPUT_ERRORS)
def merge(graphs: tuple[Path, ...], output: Path) -> None:
    """Merge GRAPHS into one multigraph: union of the node vocabularies, one layer per input layer.

    Layer names must be distinct across the inputs. Nothing is written if any input is unreadable; the
    output must not be one of the inputs.
    """
    report_written(api.merge(graphs, output=output), output)


# ---------------------------------------------------------------------- fetch (kgbuild.fetch)
@main.command("fetch")
@click.argument("source", required=False)
@click.option("--file", "files", multiple=True, metavar="KEY",
              help="Only this file of the source (repeatable); default: all files in its manifest.")
@click.option("--list", "list_sources", is_flag=True, help="List the known sources with version, license and citation.")
@cache_dir_option
@offline_option
@click.option("--force", is_flag=True, help="Download again even when the file is cached (refreshes 'current' releases).")
@click.option("--retries", type=click.IntRange(min=0), default=4, show_default=True,
              help="Retries after connection errors and HTTP 5xx, with exponential backoff (1, 2, 4, ... s).")
@click.option("--manifest-dir", type=click.Path(file_okay=False, path_type=Path), envvar="KGBUILD_MANIFEST_DIR",
              show_envvar=True, default=None,
              help="Folder of *.toml source manifests (default: the ones installed with kgbuild, kgbuild/manifests/).")
@library_errors(FetchError)
def fetch_command(source: str | None, files: tuple[str, ...], list_sources: bool, cache_dir: Path | None,
                  offline: bool, force: bool, retries: int, manifest_dir: Path | None) -> None:
    """Download the files of SOURCE (string, go, reactome, ...) into the cache and print where they are.

    Each source's files, URLs, version, license and citation are listed in its manifest,
    kgbuild/manifests/SOURCE.toml (installed with the package; --manifest-dir to use others).
    Downloads stream with a progress bar, resume partial files, retry on connection errors and HTTP 5xx,
    are checked against the manifest's sha256 when it pins one, and are moved into the cache only when
    complete. Cached files are checked against the sha256 recorded at download before they are used: a
    damaged one is downloaded again (or, with --offline, reported). Builders (kgbuild
    string/go/reactome) call the same code when given no input path.

    \b
    Examples:
      kgbuild fetch --list
      kgbuild fetch string                        # links, info and links_detailed
      kgbuild fetch string --file links --file info
      kgbuild fetch go --cache-dir /data/kgcache   # or: export KGBUILD_CACHE_DIR=/data/kgcache
      kgbuild fetch reactome --offline             # only check the cache; never touches the network
      KGBUILD_MIRROR=http://mirror.example.org/kg kgbuild fetch string   # <mirror>/<source>/<file>
    """
    if list_sources:
        for m in list_manifests(manifest_dir):
            click.echo(f"{m.source:<10} version {m.version:<8} license: {m.license}")
            if m.description:
                click.echo(f"  {m.description}")
            for spec in m.files.values():
                pin = "sha256 pinned" if spec.sha256 else "sha256 recorded at download"
                where = spec.url or f"manual download: {spec.instructions}"
                click.echo(f"  --file {spec.key:<15} {where} ({pin})")
            click.echo(f"  cite: {m.citation}")
        return
    if not source:
        raise click.UsageError("give a SOURCE (e.g. string) or --list")
    paths = fetch(source, list(files) or None, cache_dir, offline, manifests=manifest_dir, force=force,
                  retries=retries)
    for key, path in paths.items():
        click.echo(f"{source}/{key}\t{path}")


# ---------------------------------------------------------------------- perturb (kgbuild.perturb)
@main.command("perturb")
@click.argument("graph", type=click.Path(dir_okay=False, path_type=Path))
@output_option
@click.option("--rewire", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Fraction of each layer's edges to rewire (degree-preserving double-edge swaps).")
@click.option("--downsample", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Fraction of each layer's edges to drop at random (before rewiring).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed; same seed, same graph.")
@click.option("--layer", "layers", multiple=True, metavar="NAME",
              help="Ablate only this layer (repeatable); default: every layer.")
@user_errors(*INPUT_ERRORS, KgbuildInputError)
def perturb_command(graph: Path, output: Path, rewire: float, downsample: float, seed: int,
                    layers: tuple[str, ...]) -> None:
    """Ablate GRAPH: randomly rewire and/or drop a fraction of each layer's edges, for graph-ablation
    experiments (train on the original and the degraded graph and compare).

    Rewiring swaps the targets of random pairs of edges (a->b, c->d become a->d, c->b), so every gene
    keeps its in- and out-degree and every layer its weights, but who is connected to whom is random.
    Downsampling keeps a uniform random subset of each layer's edges. The ablation (fractions asked and
    achieved, seed, input checksum) is recorded in the output's provenance (kgbuild info).

    \b
    Examples:
      kgbuild perturb --rewire 1.0 --seed 1 multi.kg.npz -o multi.rewired.kg.npz
      kgbuild perturb --downsample 0.5 --seed 1 multi.kg.npz -o multi.half.kg.npz
      kgbuild perturb --rewire 0.5 --layer string multi.kg.npz -o multi.string-half-rewired.kg.npz
    """
    from kgbuild.perturb import perturb_graph

    check_output_not_input(output, [("", graph)])
    g = MultiGraph.load(graph)
    out = perturb_graph(g, rewire=rewire, downsample=downsample, seed=seed, layers=layers or None,
                        input_path=graph)
    for name, entry in out.meta["layers"].items():
        ab = entry.get("ablation")
        if ab:
            click.echo(f"{name}: {ab['edges_before']} -> {ab['edges_after']} edges, "
                       f"{ab['rewired_edges']} rewired ({100 * ab['rewired_fraction']:.1f}%)")
    write_graph(out, output)


# ---------------------------------------------------------------------- screen (kgbuild.sources.screen)
@main.command("screen")
@click.option("--embeddings", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Gene profiles: .parquet/.csv/.tsv (genes x features, or DepMap-style models x genes) or .h5ad.")
@output_option
@click.option("--top-pct", type=click.FloatRange(0, 100, min_open=True), default=1.0, show_default=True,
              help="Keep this percentage of all unordered gene pairs, the most similar by |cosine|.")
@max_in_degree_option(0)
@click.option("--gene-column", default=None,
              help="Column holding the gene symbols (default: the only text column, or one named gene/symbol); "
                   "for .h5ad an obs column (default: obs_names).")
@click.option("--orientation", type=click.Choice(["auto", "genes-by-features", "features-by-genes"]),
              default="auto", show_default=True,
              help="Table layout; auto detects DepMap's 'SYMBOL (EntrezID)' headers as features x genes.")
@click.option("--aggregate", type=click.Choice(["mean", "median", "first", "none"]), default="mean",
              show_default=True, help="How to merge several rows of one gene; 'none' makes duplicates an error.")
@click.option("--max-nan-frac", type=click.FloatRange(0, 1), default=None,
              help="Drop genes with more NaN than this fraction and fill the rest (default: NaN is an error for "
                   "genes x features tables, 0.5 for DepMap-style tables).")
@click.option("--obs-column", default=None,
              help=".h5ad: obs column of perturbation labels; each single-gene perturbation becomes its mean "
                   "expression change vs control (auto: perturbation/condition/target/gene).")
@click.option("--control", default=None, help=".h5ad: the control label in --obs-column (auto: control, ctrl, "
                                              "non-targeting, ...).")
@click.option("--layer-name", default=None, help="Layer name (default: the file name without suffixes).")
@click.option("--block-rows", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Rows per similarity block; memory grows with it, never with genes squared.")
@library_errors(KgbuildInputError, GraphError)
def screen_command(embeddings: Path, output: Path, top_pct: float, max_in_degree: int, gene_column: str | None,
                   orientation: str, aggregate: str, max_nan_frac: float | None, obs_column: str | None,
                   control: str | None, layer_name: str | None, block_rows: int) -> None:
    """Link genes with similar screen profiles: the global top --top-pct percent of gene pairs by
    absolute cosine similarity (exact, FAISS, in row blocks), as edges in both directions.

    Profiles are L2-normalised; |cos| is used because strongly anti-correlated profiles are as related
    as correlated ones. Several rows per gene are merged (--aggregate). DepMap's CRISPRGeneEffect.csv
    (models x genes, headers 'SYMBOL (EntrezID)') is recognised and transposed; its NaN-heavy genes are
    dropped and remaining NaN filled with the gene's mean. For a Perturb-seq .h5ad, each perturbed gene's
    profile is its mean expression change against control cells. Every gene of the table becomes a node.

    \b
    Examples:
      kgbuild screen --embeddings depmap_vae_gene_embeddings.parquet -o depmap.kg.npz
      kgbuild screen --embeddings CRISPRGeneEffect.csv --top-pct 0.5 --max-nan-frac 0.2 -o depmap.kg.npz
      kgbuild screen --embeddings profiles.tsv --gene-column symbol --aggregate median -o screen.kg.npz
      kgbuild screen --embeddings norman.h5ad --obs-column perturbation --control control -o norman.kg.npz
      kgbuild screen --embeddings emb.parquet --top-pct 1 --max-in-degree 20 --layer-name depmap -o d.kg.npz
    """
    graph = api.screen(
        embeddings, top_pct=top_pct, max_in_degree=max_in_degree or None, layer_name=layer_name,
        block_rows=block_rows, gene_column=gene_column, orientation=orientation, aggregate=aggregate,
        max_nan_frac=max_nan_frac, obs_column=obs_column, control=control, output=output,
    )
    report_written(graph, output)


# ---------------------------------------------------------------------- string / go / reactome / edges / export
layer_name_option = lambda default: click.option(  # noqa: E731
    "--layer-name", default=default, show_default=True, help="Name of the layer in the output file.")
max_set_size_option = click.option(
    "--max-set-size", type=click.IntRange(min=1), default=DEFAULT_MAX_SET_SIZE, show_default=True,
    help="Refuse a gene set (GO term, pathway) with more genes than this, before any similarity is computed: "
         "the cost grows with the square of the largest set.")
min_jaccard_option = click.option(
    "--min-jaccard", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True,
    help="Keep gene pairs with Jaccard index strictly greater than this (GEARS: > 0.1).")
BUILDER_ERRORS = (*INPUT_ERRORS, KgbuildInputError, FetchError)


@main.command("string")
@click.option("--links", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="protein.links(.detailed) file (.txt or .txt.gz); default: download STRING's human links.")
@click.option("--info", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="protein.info file (id -> gene symbol); default: download it.")
@output_option
@click.option("--min-score", type=click.IntRange(0, 1000), default=700, show_default=True,
              help="Keep links with score >= this, on STRING's 0-1000 scale (400 medium, 700 high, 900 highest "
                   "confidence).")
@max_in_degree_option(20)
@click.option("--channel", default="combined_score", show_default=True,
              help="Score column: combined_score, or one evidence channel of protein.links.detailed "
                   "(neighborhood, fusion, cooccurence, coexpression, experimental, database, textmining).")
@click.option("--unknown-ids", type=click.Choice(["warn", "error"]), default="warn", show_default=True,
              help="Protein ids of the links file missing from the info file: drop them with a warning (counted "
                   "in the provenance), or stop with an error.")
@layer_name_option("string")
@cache_dir_option
@offline_option
@library_errors(*BUILDER_ERRORS)
def string_command(links: Path | None, info: Path | None, output: Path, min_score: int, max_in_degree: int,
                   channel: str, unknown_ids: str, layer_name: str, cache_dir: Path | None, offline: bool) -> None:
    """STRING protein-protein associations as a gene graph: weight = score / 1000.

    Ids (9606.ENSP...) become gene symbols through protein.info; proteins of one gene are merged (max
    weight); both directions of every pair are kept; then each gene keeps its --max-in-degree heaviest
    incoming links. Without --links/--info the files are downloaded (kgbuild fetch string) into the cache.

    \b
    Examples:
      kgbuild string --min-score 700 -o string.kg.npz
      kgbuild string --links 9606.protein.links.v12.0.txt.gz --info 9606.protein.info.v12.0.txt.gz \\
                     --min-score 900 --max-in-degree 0 -o string900.kg.npz
      kgbuild string --channel experimental --min-score 400 --layer-name string_exp -o exp.kg.npz
      kgbuild string --offline --cache-dir /data/kgcache -o string.kg.npz
    """
    graph = api.string(links, info, min_score=min_score, max_in_degree=max_in_degree or None, channel=channel,
                       unknown_ids=unknown_ids, layer_name=layer_name, cache_dir=cache_dir, offline=offline,
                       output=output)
    meta = graph.meta["layers"][layer_name]
    unk = meta["unknown_ids"]
    click.echo(f"read {meta['rows_read']:,} links; {meta['rows_below_min_score']:,} below score {min_score}; "
               f"{unk['ids']:,} unknown protein id(s) in {unk['rows']:,} row(s) dropped")
    if unk["ids"]:
        click.echo(f"warning: {unk['ids']} protein id(s) not in the info file, e.g. {', '.join(unk['examples'][:5])}",
                   err=True)
    report_written(graph, output)


@main.command("go")
@click.option("--obo", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="go-basic.obo (plain text); default: download it.")
@click.option("--gaf", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="GAF 2.x annotations (.gaf or .gaf.gz), genes named by column 3; default: download goa_human.")
@output_option
@click.option("--aspects", multiple=True, default=("P,F,C",), show_default=True,
              help="GO aspects to use: P (process), F (function), C (component); comma-separated or repeated.")
@click.option("--exclude-evidence", multiple=True, metavar="CODE",
              help="Drop annotations with these evidence codes, e.g. IEA (comma-separated or repeated).")
@min_jaccard_option
@max_in_degree_option(20)
@max_set_size_option
@layer_name_option("go")
@cache_dir_option
@offline_option
@library_errors(*BUILDER_ERRORS)
def go_command(obo: Path | None, gaf: Path | None, output: Path, aspects: tuple[str, ...],
               exclude_evidence: tuple[str, ...], min_jaccard: float, max_in_degree: int, max_set_size: int,
               layer_name: str, cache_dir: Path | None, offline: bool) -> None:
    """Gene Ontology graph: weight = Jaccard index of two genes' GO-term sets.

    Annotations (NOT-qualified rows dropped) are propagated to every ancestor term through is_a and
    part_of; the three root terms are left out of the sets (every gene has them). Pairs with Jaccard >
    --min-jaccard are kept, then each gene keeps its --max-in-degree most similar genes as incoming edges.
    Computed blockwise, never as a genes x genes matrix.

    \b
    Examples:
      kgbuild go -o go.kg.npz
      kgbuild go --obo go-basic.obo --gaf goa_human.gaf.gz --aspects P --exclude-evidence IEA -o go_bp.kg.npz
      kgbuild go --min-jaccard 0.2 --max-in-degree 10 -o go_strict.kg.npz
    """
    graph = api.go(obo, gaf, aspects=aspects, exclude_evidence=exclude_evidence, min_jaccard=min_jaccard,
                   max_in_degree=max_in_degree or None, max_set_size=max_set_size, layer_name=layer_name,
                   cache_dir=cache_dir, offline=offline, output=output)
    meta = graph.meta["layers"][layer_name]
    ann, flt = meta["annotations"], meta["filters"]
    click.echo(f"read {ann['rows_read']:,} annotation rows; used {ann['annotation_rows_used']:,} "
               f"(NOT {ann['not_rows_dropped']:,}, other aspects {ann['other_aspect_rows_dropped']:,}, excluded "
               f"evidence {ann['excluded_evidence_rows_dropped']:,}, unknown GO ids {ann['unknown_go_id_rows_dropped']:,} "
               f"dropped); {flt['genes_with_sets']:,} genes, {flt['sets']:,} terms; "
               f"{flt['pairs_above_threshold']:,} directed pairs with Jaccard > {min_jaccard}")
    report_written(graph, output)


@main.command("reactome")
@click.option("--gmt", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="ReactomePathways.gmt (name, id, gene symbols...); default (without --ncbi2reactome): download it.")
@click.option("--ncbi2reactome", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="NCBI2Reactome.txt (Entrez id, pathway, url, name, evidence, species) instead of a GMT.")
@click.option("--gene-map", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --ncbi2reactome: Entrez id -> symbol table with columns GeneID and Symbol (NCBI "
                   "gene_info); without it the nodes stay Entrez ids.")
@click.option("--species", default="Homo sapiens", show_default=True, help="With --ncbi2reactome: rows to keep.")
@output_option
@min_jaccard_option
@max_in_degree_option(20)
@max_set_size_option
@layer_name_option("reactome")
@cache_dir_option
@offline_option
@library_errors(*BUILDER_ERRORS)
def reactome_command(gmt: Path | None, ncbi2reactome: Path | None, gene_map: Path | None, species: str,
                     output: Path, min_jaccard: float, max_in_degree: int, max_set_size: int, layer_name: str,
                     cache_dir: Path | None, offline: bool) -> None:
    """Reactome graph: weight = Jaccard index of two genes' pathway-membership sets.

    Pairs with Jaccard > --min-jaccard are kept, then each gene keeps its --max-in-degree most similar
    genes as incoming edges. The GMT lists every pathway with all its genes; NCBI2Reactome lists only
    lowest-level pathways and is keyed by Entrez ids (give --gene-map to get symbols).

    \b
    Examples:
      kgbuild reactome -o reactome.kg.npz
      kgbuild reactome --gmt ReactomePathways.gmt --min-jaccard 0.2 -o reactome.kg.npz
      kgbuild reactome --ncbi2reactome NCBI2Reactome.txt --gene-map Homo_sapiens.gene_info.gz -o r.kg.npz
    """
    if gmt is not None and ncbi2reactome is not None:
        raise click.UsageError("give either --gmt or --ncbi2reactome, not both")
    if gene_map is not None and ncbi2reactome is None:
        raise click.UsageError("--gene-map only applies to --ncbi2reactome")
    graph = api.reactome(gmt, ncbi2reactome=ncbi2reactome, gene_map=gene_map, species=species,
                         min_jaccard=min_jaccard, max_in_degree=max_in_degree or None, max_set_size=max_set_size,
                         layer_name=layer_name, cache_dir=cache_dir, offline=offline, output=output)
    flt = graph.meta["layers"][layer_name]["filters"]
    click.echo(f"{flt['sets']:,} pathways over {flt['genes_with_sets']:,} genes; "
               f"{flt['pairs_above_threshold']:,} directed pairs with Jaccard > {min_jaccard}")
    report_written(graph, output)


@main.command("edges")
@click.option("--edges", "edges_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Edge list: .csv, .tsv/.txt (optionally .gz) with a header row, or .parquet.")
@click.option("--source-col", default="source", show_default=True, help="Column with the source gene.")
@click.option("--target-col", default="target", show_default=True, help="Column with the target gene.")
@click.option("--weight-col", default=None, help="Column with non-negative weights (default: every edge weighs 1).")
@click.option("--sep", default=None, help="Field separator of a text file (default: from the suffix, .csv ',' "
                                          "else tab).")
@click.option("--symmetric", is_flag=True, help="Each row is an undirected pair: add the reverse edge too "
                                                "(before the in-degree cap).")
@click.option("--duplicates", type=click.Choice(["max", "min", "mean", "sum", "first", "error"]), default="max",
              show_default=True, help="How to merge a (source, target) pair listed more than once.")
@click.option("--weight-scale", type=float, default=1.0, show_default=True,
              help="Multiply weights by this first (e.g. 0.001 for 0-1000 scores).")
@click.option("--min-weight", type=float, default=None, help="Keep edges with (scaled) weight >= this.")
@click.option("--top-pct", type=click.FloatRange(0, 100, min_open=True), default=None,
              help="Keep only the global top percentage of edges by |weight|.")
@max_in_degree_option(20)
@layer_name_option("edges")
@output_option
@library_errors(*BUILDER_ERRORS)
def edges_command(edges_file: Path, source_col: str, target_col: str, weight_col: str | None, sep: str | None,
                  symmetric: bool, duplicates: str, weight_scale: float, min_weight: float | None,
                  top_pct: float | None, max_in_degree: int, layer_name: str, output: Path) -> None:
    """Your own map graph (proprietary, curated, from another tool) as a layer, with the same filters.

    Gene names are used as they are, so use the symbols of your other graphs and datasets. Self-loops
    are dropped; every filter setting and count is kept in the layer's provenance.

    \b
    Examples:
      kgbuild edges --edges pxmap.parquet --source-col gene_a --target-col gene_b --weight-col sim \\
                    --symmetric --top-pct 1 --max-in-degree 0 --layer-name pxmap -o pxmap.kg.npz
      kgbuild edges --edges string_v12_dmfind_edges.tsv.gz --source-col symbol1 --target-col symbol2 \\
                    --weight-col combined_score --weight-scale 0.001 --min-weight 0.7 --symmetric -o s.kg.npz
      kgbuild edges --edges regulators.csv --source-col tf --target-col target -o grn.kg.npz
    """
    graph = api.edges(edges_file, source_col=source_col, target_col=target_col, weight_col=weight_col, sep=sep,
                      symmetric=symmetric, duplicates=duplicates, weight_scale=weight_scale, min_weight=min_weight,
                      top_pct=top_pct, max_in_degree=max_in_degree or None, layer_name=layer_name, output=output)
    meta = graph.meta["layers"][layer_name]
    flt = meta["filters"]
    click.echo(f"read {meta['rows_read']:,} rows; {flt['self_loops_removed']:,} self-loops and "
               f"{flt['duplicates_removed']:,} duplicates removed")
    report_written(graph, output)


@main.command("export")
@click.argument("graph", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["tsv", "graphml"]), default="tsv", show_default=True,
              help="tsv: source, target, weight, layer per row; graphml: for Cytoscape, Gephi, networkx.")
@click.option("--layer", "layers", multiple=True, metavar="NAME", help="Export only this layer (repeatable).")
@output_option
@user_errors(*INPUT_ERRORS)
def export_command(graph: Path, fmt: str, layers: tuple[str, ...], output: Path) -> None:
    """Write GRAPH as a TSV edge list or GraphML (atomically: never a half-written file).

    \b
    Examples:
      kgbuild export multi.kg.npz --format tsv -o multi.tsv
      kgbuild export multi.kg.npz --format graphml --layer string -o string.graphml
    """
    from kgbuild.export import export_graph

    check_output_not_input(output, [("", graph)])
    g = MultiGraph.load(graph)
    if layers:
        g = MultiGraph.merge([g.layer(name) for name in layers])
    with output_errors(output):
        export_graph(g, output, fmt)
    click.echo(f"wrote {output} ({g.num_edges:,} edges, {len(g.layers)} layer(s), {fmt})")


set_short_help(main, {
    "edges": "Your own map graph from an edge table.",
    "export": "Write GRAPH as a TSV edge list or GraphML.",
    "fetch": "Download the source files of a source into the cache.",
    "go": "Gene Ontology graph (Jaccard of GO annotations).",
    "info": "Print a summary of GRAPH: nodes, edges, provenance.",
    "merge": "Merge GRAPHS into one multigraph.",
    "perturb": "Ablate GRAPH: rewire and/or drop edges.",
    "reactome": "Reactome graph (Jaccard of pathway memberships).",
    "screen": "Link genes with similar screen profiles.",
    "string": "STRING protein-protein associations as a graph.",
})


if __name__ == "__main__":  # pragma: no cover
    main()
