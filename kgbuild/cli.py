"""The ``kgbuild`` command line: build, merge, inspect and export gene-gene multigraph files."""

from __future__ import annotations

from pathlib import Path

import click

from kgbuild.cli_common import common_group_options, setup_logging, user_errors
from kgbuild.fetch import FetchError, fetch, list_manifests
from kgbuild.errors import KgbuildInputError
from kgbuild.graph import GraphError, GraphFileError, MultiGraph

INPUT_ERRORS = (GraphError, GraphFileError, FileNotFoundError, KeyError)

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
    """Save a built graph atomically and print its one-screen summary."""
    graph.save(output)
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
      kgbuild screen --embeddings depmap.parquet --top-pct 1 -o depmap.kg.npz
      kgbuild merge string.kg.npz depmap.kg.npz -o multi.kg.npz
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
@user_errors(*INPUT_ERRORS)
def merge(graphs: tuple[Path, ...], output: Path) -> None:
    """Merge GRAPHS into one multigraph: union of the node vocabularies, one layer per input layer.

    Layer names must be distinct across the inputs. Nothing is written if any input is unreadable.
    """
    write_graph(MultiGraph.merge([MultiGraph.load(p) for p in graphs]), output)


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
              show_envvar=True, default=None, help="Folder of *.toml source manifests (default: data_manifests/).")
@user_errors(FetchError)
def fetch_command(source: str | None, files: tuple[str, ...], list_sources: bool, cache_dir: Path | None,
                  offline: bool, force: bool, retries: int, manifest_dir: Path | None) -> None:
    """Download the files of SOURCE (string, go, reactome, ...) into the cache and print where they are.

    Each source's files, URLs, version, license and citation are listed in data_manifests/SOURCE.toml.
    Downloads stream with a progress bar, resume partial files, retry on connection errors and HTTP 5xx,
    are checked against the manifest's sha256 when it pins one, and are moved into the cache only when
    complete. Builders (kgbuild string/go/reactome) call the same code when given no input path.

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
@user_errors(KgbuildInputError, GraphError)
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
    from kgbuild.sources.screen import build_screen_graph

    graph = build_screen_graph(
        embeddings, top_pct=top_pct, max_in_degree=max_in_degree or None, layer_name=layer_name,
        block_rows=block_rows, gene_column=gene_column, orientation=orientation, aggregate=aggregate,
        max_nan_frac=max_nan_frac, obs_column=obs_column, control=control,
    )
    write_graph(graph, output)


if __name__ == "__main__":  # pragma: no cover
    main()
