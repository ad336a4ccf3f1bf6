"""The ``kgbuild`` command line: build, merge, inspect and export gene-gene multigraph files."""

from __future__ import annotations

from pathlib import Path

import click

from kgbuild.cli_common import common_group_options, setup_logging, user_errors
from kgbuild.graph import GraphError, GraphFileError, MultiGraph

INPUT_ERRORS = (GraphError, GraphFileError, FileNotFoundError, KeyError)


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
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The merged multigraph file to write (*.kg.npz).")
@user_errors(*INPUT_ERRORS)
def merge(graphs: tuple[Path, ...], output: Path) -> None:
    """Merge GRAPHS into one multigraph: union of the node vocabularies, one layer per input layer.

    Layer names must be distinct across the inputs. Nothing is written if any input is unreadable.
    """
    loaded = [MultiGraph.load(p) for p in graphs]
    merged = MultiGraph.merge(loaded)
    merged.save(output)
    click.echo(f"wrote {output}")
    click.echo(merged.format_summary())


if __name__ == "__main__":  # pragma: no cover
    main()
