"""Write the whole simulated example: source files, the Perturb-seq AnnData, the ground truth and a README.

Layout of ``out_dir`` (paths relative to it; ``simulation.json`` lists them under ``files``)::

    string/9606.protein.links.sim.txt.gz   STRING links (gzip)          kgbuild string --links ... --info ...
    string/9606.protein.info.sim.txt.gz    STRING protein info (gzip)
    go/go-basic.obo                        GO ontology (OBO 1.2)        kgbuild go ...
    go/goa_human.sim.gaf.gz                GO annotations (GAF 2.2)
    reactome/ReactomePathways.sim.gmt      pathway gene sets (GMT)      kgbuild reactome ...
    screen/screen_gene_embeddings.sim.parquet   gene embeddings          kgbuild screen ...
    perturbseq.h5ad                        raw counts, obs perturbation / batch / cell_line
    truth/network.tsv                      true edges: source target weight (signed)
    truth/modules.tsv                      gene -> module
    truth/effects.tsv.gz                   true log-fold change per (cell line, condition) x gene
    truth/systematic.tsv.gz                its systematic part, same layout (only with --systematic > 0)
    simulation.json                        every parameter, seed, file and count
    README.md                              the same, for people

Each part draws from its own seed derived from ``seed`` (``SeedSequence([seed, k])``), so changing, say, the
number of doubles does not change the example graphs. The same arguments give byte-identical files.

The knobs of a run (``systematic``, ``spread``, ``beta``, ``graph_noise``, ``effect_size``; see perturbseq.py
and example_sources.py) are under ``knobs`` in ``simulation.json`` and in README.md; at their defaults
every data file (sources, perturbseq.h5ad, truth/) is the same as before the knobs existed.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from kgbuild._version import __version__
from kgbuild.atomic import atomic_path
from txpert_head.simulate import example_sources as src
from txpert_head.simulate.files import write_text
from txpert_head.simulate.network import GroundTruthNetwork, NetworkParams, make_network
from txpert_head.simulate.perturbseq import PerturbSeqConfig, SimulatedScreen, simulate_perturbseq

PERTURBSEQ = "perturbseq.h5ad"
TRUTH_NETWORK = "truth/network.tsv"
TRUTH_MODULES = "truth/modules.tsv"
TRUTH_EFFECTS = "truth/effects.tsv.gz"
TRUTH_SYSTEMATIC = "truth/systematic.tsv.gz"
MANIFEST = "simulation.json"
README = "README.md"

PART_SEEDS = {"network": 0, "string": 1, "go": 2, "reactome": 3, "screen": 4, "perturbseq": 5}


def part_seed(seed: int, part: str) -> int:
    """The seed of one part of the simulation, derived from the user's ``seed``."""
    return int(np.random.SeedSequence([seed, PART_SEEDS[part]]).generate_state(1)[0])


def effects_text(genes: list[str], effects: dict[tuple[str, str], np.ndarray]) -> str:
    """``cell_line perturbation <gene>...`` rows, 5 decimals (the layout of truth/effects.tsv.gz)."""
    lines = ["cell_line\tperturbation\t" + "\t".join(genes)]
    for (line, cond), d in effects.items():
        lines.append(f"{line}\t{cond}\t" + "\t".join(f"{v:.5f}" for v in d.tolist()))
    return "\n".join(lines) + "\n"


def write_truth(net: GroundTruthNetwork, screen: SimulatedScreen, out_dir: Path) -> None:
    """The true network, modules and effects as plain tables (and the systematic part, when there is one)."""
    s, t, w = net.edges()
    write_text(out_dir / TRUTH_NETWORK, "source\ttarget\tweight\n" + "".join(
        f"{net.genes[a]}\t{net.genes[b]}\t{v:.6f}\n" for a, b, v in zip(s.tolist(), t.tolist(), w.tolist())))
    write_text(out_dir / TRUTH_MODULES, "gene\tmodule\n" + "".join(
        f"{g}\t{m + 1}\n" for g, m in zip(net.genes.tolist(), net.module.tolist())))
    write_text(out_dir / TRUTH_EFFECTS, effects_text(net.genes.tolist(), screen.effects))
    if screen.systematic:
        write_text(out_dir / TRUTH_SYSTEMATIC, effects_text(net.genes.tolist(), screen.systematic))


def write_h5ad(screen: SimulatedScreen, path: Path) -> None:
    """``perturbseq.h5ad`` atomically, gzip-compressed (HDF5's deflate filter stores no time stamp)."""
    with atomic_path(path) as tmp:
        screen.adata.write_h5ad(tmp, compression="gzip")


def screen_stats(screen: SimulatedScreen) -> dict:
    """Numbers for the manifest: cells, genes, conditions, counts per cell."""
    x = screen.adata.X
    per_cell = np.asarray(x.sum(axis=1)).ravel()
    return {
        "cells": int(x.shape[0]), "genes": int(x.shape[1]), "singles": len(screen.singles),
        "doubles": len(screen.doubles), "cell_lines": screen.cell_lines, "batches": screen.batches,
        "control_cells": int((screen.adata.obs["perturbation"] == "ctrl").sum()),
        "umi_per_cell_median": float(np.median(per_cell)), "nonzero_fraction": float(x.nnz / np.prod(x.shape)),
    }


def write_example_bundle(out_dir: str | Path, seed: int = 0, n_genes: int = 300,
                         config: PerturbSeqConfig = PerturbSeqConfig(),
                         network_params: NetworkParams = NetworkParams(), graph_noise: float = 1.0) -> dict:
    """Write everything listed in the module docstring into ``out_dir``; returns the manifest dict.

    ``graph_noise`` scales the noise of the example source files (:meth:`SourceNoise.scaled`: 0 clean,
    1 the defaults, 2 much noisier).
    """
    out_dir = Path(out_dir)
    started = time.perf_counter()
    config.validate(n_genes)
    noise = src.SourceNoise.scaled(graph_noise)
    net = make_network(n_genes, part_seed(seed, "network"), network_params)
    sources = {
        "string": src.write_string(net, out_dir, part_seed(seed, "string"), **noise.kwargs("string")),
        "go": src.write_go(net, out_dir, part_seed(seed, "go"), **noise.kwargs("go")),
        "reactome": src.write_reactome(net, out_dir, part_seed(seed, "reactome"), **noise.kwargs("reactome")),
        "screen": src.write_screen(net, out_dir, part_seed(seed, "screen"), **noise.kwargs("screen")),
    }
    screen = simulate_perturbseq(net, part_seed(seed, "perturbseq"), config)
    write_h5ad(screen, out_dir / PERTURBSEQ)
    write_truth(net, screen, out_dir)
    n_edges = int(np.count_nonzero(net.weight))
    files = {"string_links": src.STRING_LINKS, "string_info": src.STRING_INFO, "go_obo": src.GO_OBO,
             "go_gaf": src.GO_GAF, "reactome_gmt": src.REACTOME_GMT, "screen_embeddings": src.SCREEN_PARQUET,
             "perturbseq": PERTURBSEQ, "truth_network": TRUTH_NETWORK, "truth_modules": TRUTH_MODULES,
             "truth_effects": TRUTH_EFFECTS, "readme": README}
    if screen.systematic:
        files["truth_systematic"] = TRUTH_SYSTEMATIC
    manifest = {
        "tool": "txpert simulate", "tool_version": __version__, "seed": seed,
        "knobs": {"systematic": config.systematic, "spread": config.steps, "beta": config.beta,
                  "graph_noise": graph_noise, "effect_size": config.effect_size},
        "network": {"genes": n_genes, "modules": net.n_modules, "edges": n_edges,
                    "positive_edges": int((net.weight > 0).sum()), **asdict(network_params)},
        "perturbseq": {**asdict(config), **screen_stats(screen), "singles_list": screen.singles,
                       "doubles_list": screen.doubles},
        "sources": sources,
        "source_noise": asdict(noise),
        "files": files,
    }
    write_text(out_dir / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    write_text(out_dir / README, readme_text(manifest))
    manifest["seconds"] = time.perf_counter() - started  # not written: files must not depend on timing
    return manifest


def readme_text(m: dict) -> str:
    """A short human-readable description of a simulated bundle."""
    ps, nw, so, kn = m["perturbseq"], m["network"], m["sources"], m["knobs"]
    if kn["systematic"] > 0:
        systematic = (f"Systematic response: every perturbed condition also gets {kn['systematic']} x a_p x v, "
                      f"one random unit-variance gene vector v per cell line and a_p ~ U(0.5, 1.5) per single "
                      f"(doubles: the sum), targets excluded: `{m['files']['truth_systematic']}`.")
    else:
        systematic = "No systematic response shared by all perturbations (`--systematic 0`)."
    return f"""# Simulated TxPert example (seed {m['seed']})

Written by `txpert simulate` (txpert-kg {m['tool_version']}). Nothing here is biology: genes are named
`G0001`... and every file is drawn from a known ground-truth network, so pipelines and graph ablations can
be tested against the truth. The same command with the same seed writes byte-identical files.

## Ground truth
- {nw['genes']} genes in {nw['modules']} modules, {nw['edges']} signed directed edges
  ({nw['positive_edges']} activating): `{m['files']['truth_network']}`, `{m['files']['truth_modules']}`.
- Effects (`{m['files']['truth_effects']}`): knock-down of the target (log-fold -{ps['knockdown_min']}..-{ps['knockdown_max']})
  propagated for {ps['steps']} steps with damping {ps['beta']} and gain {ps['gain']} x effect size {ps['effect_size']}
  over the signed network; doubles are the sum of the two singles plus an interaction of strength {ps['interaction']}.
- {systematic}

## Knobs
| option | value | meaning |
| --- | --- | --- |
| `--systematic` | {kn['systematic']} | strength of the systematic response shared by all perturbations (0 = none) |
| `--spread` | {kn['spread']} | diffusion steps over the network (how far effects travel) |
| `--beta` | {kn['beta']} | damping per diffusion step |
| `--graph-noise` | {kn['graph_noise']} | noise of the example source files (0 = clean views, 1 = default, 2 = much noisier) |
| `--effect-size` | {kn['effect_size']} | multiplies the downstream gain (1 = default) |

## Example source files (noisy, partial views of the truth)
| file | layout | content |
| --- | --- | --- |
| `{so['string']['links']}` + `{so['string']['info']}` | STRING protein.links / protein.info, gzip | {so['string']['proteins']} proteins, {so['string']['pairs']} pairs ({so['string']['true_pairs']} true, {so['string']['false_pairs']} false), both orientations |
| `{so['go']['obo']}` + `{so['go']['gaf']}` | OBO 1.2 + GAF 2.2 (gzip) | {so['go']['terms']} terms, {so['go']['annotated_genes']} annotated genes, {so['go']['annotation_lines']} lines ({so['go']['not_lines']} NOT) |
| `{so['reactome']['gmt']}` | Reactome GMT | {so['reactome']['pathways']} pathways over {so['reactome']['genes']} genes |
| `{so['screen']['parquet']}` | parquet, `gene` + `z_1..z_{so['screen']['dim']}` | {so['screen']['genes']} genes |

## Perturb-seq (`{m['files']['perturbseq']}`)
{ps['cells']} cells x {ps['genes']} genes, raw integer UMI counts (median {ps['umi_per_cell_median']:.0f} per cell,
{100 * ps['nonzero_fraction']:.0f}% non-zero), negative binomial with dispersion {ps['dispersion']}.
{ps['singles']} single and {ps['doubles']} double perturbations with {ps['cells_per_perturbation']} cells each,
{ps['control_cells']} control cells (`ctrl`); batches {', '.join(ps['batches'])} (per-gene scaling sd {ps['batch_sd']});
cell lines {', '.join(ps['cell_lines'])}. obs columns: `perturbation`, `batch`, `cell_line`.

## Build the graphs
Each source file is the input of one kgbuild builder (`kgbuild <builder> --help` lists the options):

| builder | inputs |
| --- | --- |
| `kgbuild string` | `{so['string']['links']}`, `{so['string']['info']}` |
| `kgbuild go` | `{so['go']['obo']}`, `{so['go']['gaf']}` |
| `kgbuild reactome` | `{so['reactome']['gmt']}` |
| `kgbuild screen` | `{so['screen']['parquet']}` (e.g. `--top-pct 1`), or `{m['files']['perturbseq']}` itself |

then `kgbuild merge` the layers, and `kgbuild perturb --rewire 1.0` for an ablated copy.

All parameters, seeds and counts: `simulation.json`.
"""
