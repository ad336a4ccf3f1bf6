"""``txpert simulate``: write the simulated example (source files + Perturb-seq AnnData + ground truth)."""

from __future__ import annotations

from pathlib import Path

import click

from kgbuild.cli_common import user_errors


@click.command("simulate")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write into (created if missing; files in it with the same names are replaced).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of everything; same seed, same bytes.")
@click.option("--genes", type=click.IntRange(min=10), default=300, show_default=True,
              help="Genes in the ground-truth network (all of them are measured).")
@click.option("--singles", type=click.IntRange(min=1), default=60, show_default=True,
              help="Single-gene perturbations.")
@click.option("--doubles", type=click.IntRange(min=0), default=20, show_default=True,
              help="Double perturbations (pairs of the singles).")
@click.option("--cells-per-perturbation", type=click.IntRange(min=1), default=50, show_default=True,
              help="Cells per perturbation and cell line, spread evenly over the batches.")
@click.option("--control-cells", type=click.IntRange(min=1), default=None,
              help="Control cells per cell line [default: 4 x cells per perturbation].")
@click.option("--batches", type=click.IntRange(min=1), default=3, show_default=True,
              help="Batches (each with its own per-gene scaling and library size).")
@click.option("--cell-lines", type=click.IntRange(min=1), default=1, show_default=True,
              help="Cell lines (different baseline expression and a partly rewired network each).")
@user_errors(ValueError, OSError)
def simulate(out_dir: Path, seed: int, genes: int, singles: int, doubles: int, cells_per_perturbation: int,
             control_cells: int | None, batches: int, cell_lines: int) -> None:
    """Write a simulated example into OUTPUT: a ground-truth gene network, example source files in the
    real layouts kgbuild parses (STRING links/info, GO OBO + GAF, Reactome GMT, a gene-embedding table),
    each a noisy partial view of that network, and a Perturb-seq screen (perturbseq.h5ad: raw counts,
    batches, controls, singles, doubles) whose effects propagate over the network.

    Use it to test a pipeline end to end, or to check that a graph helps (or that a rewired one hurts):
    the truth is written beside the data (truth/). OUTPUT/README.md and OUTPUT/simulation.json describe
    every file and parameter.

    \b
    Examples:
      txpert simulate -o sim
      txpert simulate -o sim2 --seed 7 --genes 500 --singles 100 --doubles 40 --cell-lines 2
      kgbuild string --links sim/string/9606.protein.links.sim.txt.gz \\
                     --info sim/string/9606.protein.info.sim.txt.gz -o sim/string.kg.npz
    """
    from txpert_head.simulate.bundle import write_example_bundle
    from txpert_head.simulate.perturbseq import PerturbSeqConfig

    config = PerturbSeqConfig(n_singles=singles, n_doubles=doubles, cells_per_perturbation=cells_per_perturbation,
                              control_cells=control_cells, n_batches=batches, n_cell_lines=cell_lines)
    m = write_example_bundle(out_dir, seed=seed, n_genes=genes, config=config)
    ps = m["perturbseq"]
    click.echo(f"wrote {out_dir} in {m['seconds']:.1f} s")
    click.echo(f"  network: {m['network']['genes']} genes, {m['network']['modules']} modules, "
               f"{m['network']['edges']} edges (truth/)")
    for name, entry in m["sources"].items():
        files = ", ".join(v for k, v in entry.items() if isinstance(v, str))
        click.echo(f"  {name}: {files}")
    click.echo(f"  perturbseq.h5ad: {ps['cells']} cells x {ps['genes']} genes, {ps['singles']} singles, "
               f"{ps['doubles']} doubles, {len(ps['batches'])} batches, {len(ps['cell_lines'])} cell line(s)")
