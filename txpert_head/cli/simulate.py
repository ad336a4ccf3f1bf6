"""``txpert simulate``: write the simulated example (source files + Perturb-seq AnnData + ground truth)."""

from __future__ import annotations

from pathlib import Path

import click

from kgbuild.cli_common import user_errors
from txpert_head.simulate.perturbseq import PerturbSeqConfig  # light: numpy only (defaults of the options)

DEFAULT_KNOBS = {"systematic": 0.0, "spread": PerturbSeqConfig.steps, "beta": PerturbSeqConfig.beta,
                 "graph_noise": 1.0, "effect_size": 1.0}


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
@click.option("--systematic", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Strength S of a systematic response shared by all perturbations (as Systema finds in real "
                   "screens): each perturbed condition gets S x a_p x v added to its log-fold change, v one "
                   "random unit-variance gene vector per cell line, a_p ~ U(0.5, 1.5) per single (doubles: the "
                   "sum). 0 = none.")
@click.option("--spread", type=click.IntRange(min=0), default=PerturbSeqConfig.steps, show_default=True,
              help="How far effects travel over the network: diffusion steps (0 = only the target changes).")
@click.option("--beta", type=click.FloatRange(min=0, max=1), default=PerturbSeqConfig.beta, show_default=True,
              help="Damping of each diffusion step (smaller: effects fade faster with distance).")
@click.option("--graph-noise", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Noise of the example source graphs, one scale for all (STRING coverage, recall and false "
                   "pairs, GO / Reactome / screen noise): 0 = clean views of the truth, 1 = the default "
                   "levels, 2 = much noisier.")
@click.option("--effect-size", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Multiplies the downstream (off-target) effects of every perturbation; the knock-down of "
                   "the target itself stays. 1 = default.")
@user_errors(ValueError, OSError)
def simulate(out_dir: Path, seed: int, genes: int, singles: int, doubles: int, cells_per_perturbation: int,
             control_cells: int | None, batches: int, cell_lines: int, systematic: float, spread: int, beta: float,
             graph_noise: float, effect_size: float) -> None:
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
      txpert simulate -o hard --systematic 1 --spread 5 --graph-noise 2 --effect-size 0.5
      kgbuild string --links sim/string/9606.protein.links.sim.txt.gz \\
                     --info sim/string/9606.protein.info.sim.txt.gz -o sim/string.kg.npz
    """
    from txpert_head.simulate.bundle import write_example_bundle

    config = PerturbSeqConfig(n_singles=singles, n_doubles=doubles, cells_per_perturbation=cells_per_perturbation,
                              control_cells=control_cells, n_batches=batches, n_cell_lines=cell_lines,
                              steps=spread, beta=beta, systematic=systematic, effect_size=effect_size)
    m = write_example_bundle(out_dir, seed=seed, n_genes=genes, config=config, graph_noise=graph_noise)
    ps = m["perturbseq"]
    click.echo(f"wrote {out_dir} in {m['seconds']:.1f} s")
    click.echo(f"  network: {m['network']['genes']} genes, {m['network']['modules']} modules, "
               f"{m['network']['edges']} edges (truth/)")
    for name, entry in m["sources"].items():
        files = ", ".join(v for k, v in entry.items() if isinstance(v, str))
        click.echo(f"  {name}: {files}")
    click.echo(f"  perturbseq.h5ad: {ps['cells']} cells x {ps['genes']} genes, {ps['singles']} singles, "
               f"{ps['doubles']} doubles, {len(ps['batches'])} batches, {len(ps['cell_lines'])} cell line(s)")
    if m["knobs"] != DEFAULT_KNOBS:
        click.echo("  knobs: " + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in m["knobs"].items()))
