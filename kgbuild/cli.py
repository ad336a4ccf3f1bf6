"""The ``kgbuild`` command line: build, merge, inspect and export gene-gene multigraph files."""

from __future__ import annotations

from pathlib import Path

import click

from kgbuild.cli_common import common_group_options, setup_logging, user_errors
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


if __name__ == "__main__":  # pragma: no cover
    main()
