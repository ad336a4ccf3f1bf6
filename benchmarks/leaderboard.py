"""Leaderboard: TxPert (default settings, every encoder kind) against the simple baselines, on real and
simulated screens, several seeds; prints a markdown table and writes it to docs/leaderboard.md.

Rows (data × task):

* ``papalexi unseen singles``: Papalexi 2021 THP-1 (raw counts, batches = ``bio_rep``);
* ``norman doubles``: Norman 2019 K562 subset, test combinations;
* ``perturbench cross-cell-line``: PerturBench's devel file, one glioma line held out per seed
  (seed 0: A172, 1: T98G, 2: U87MG);
  these three on the real merged graph of ``benchmarks/real_data_eval.py`` (STRING dmfind + GO + Reactome
  + DepMap screen layer);
* ``sim <setting>``: ``txpert simulate`` (the demo's size) at several settings of its knobs, unseen singles,
  on the graph merged from its example sources, and again on that graph fully rewired (``kgbuild perturb
  --rewire 1.0``): the rewire cost is TxPert(original) − TxPert(rewired).

Methods: TxPert with default options (no ``--set``: ``gat``), the other encoder kinds (only
``encoder_kind`` changed), and the baselines of :func:`txpert_head.evaluation.baselines.run_baselines` that apply
(general, additive, nearest cell line, graph neighbours, linear, linear on the graph, split-half ceiling).
Split seed = model seed = each of ``--seeds``. Per row: mean ± sd over seeds of the test Pearson Δ, and the
paired comparison (:func:`txpert_head.metrics.paired.paired_comparison`) of default TxPert against the best
baseline of that row (the highest mean; split-half is a ceiling, not a baseline), pooled over seeds: the
per-perturbation differences of all seeds together.

Usage::

    .venv/bin/python benchmarks/leaderboard.py --work /tmp/txpert_leaderboard            # about 30 min, 2 cores
    .venv/bin/python benchmarks/leaderboard.py --quick --kinds gat --no-write           # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

DEFAULT_DATA = REPO.parent / "shared" / "data"
KINDS = ("gat", "gatv2", "exphormer", "exphormer-mg", "gat-hybrid", "gat-mlg", "hybrid-bmp")
HOLDOUT = ("A172", "T98G", "U87MG")
#: simulator settings: name -> extra ``txpert simulate`` arguments (on top of the demo's size)
SIM_SETTINGS = {
    "default": [],
    "systematic 0.5": ["--systematic", "0.5"],
    "systematic 2": ["--systematic", "2"],
    "local spread 1": ["--spread", "1"],
    "noisy graph 2": ["--graph-noise", "2"],
    "weak effects 0.5": ["--effect-size", "0.5"],
}
#: screens simulated over the real STRING topology by a model that is not txpert simulate's
#: (benchmarks/string_topology.py): name -> (share of positive STRING pairs, median |effect| of a target's
#: direct partners); 1,000 genes, 300 singles x 50 cells, 3 batches, data seed 0
STRING_SETTINGS = {"string topology": (0.8, 0.8), "string topology mixed signs": (0.6, 0.8)}
#: how the simulated screens (txpert simulate, string_topology.py) are read (DataOptions fields besides the path)
SIMULATED_DATA = dict(perturbation_col="perturbation", control=["ctrl"], batch_col="batch")
BASELINE_ORDER = ("general", "additive", "nearest_cell_line", "graph_neighbours", "linear", "linear_graph")


@dataclass
class Row:
    """One leaderboard row: how to read its data, its task and graph(s)."""

    name: str
    h5ad: Path
    task: str
    graph: Path
    data: dict = field(default_factory=dict)  # DataOptions fields besides the path
    rewired: Path | None = None
    holdout: tuple[str, ...] | None = None


def real_rows(data: Path, work: Path) -> list[Row]:
    from real_data_eval import DATASETS, build_graph, read_options

    graph = build_graph(data, work / "real_graph")
    ps = data / "perturbseq"
    shared = [Row(label, data / DATASETS[key]["file"], DATASETS[key]["task"], graph, read_options(key))
              for label, key in (("papalexi unseen singles", "papalexi_unseen_single"),
                                 ("norman doubles", "norman_double"))]
    return shared + [Row("perturbench cross-cell-line", ps / "perturbench_devel.h5ad", "cross_cell_line", graph,
                         dict(perturbation_col="condition", control=["control"], cell_line_col="cell_type"),
                         holdout=HOLDOUT)]


def sim_rows(work: Path, settings: dict[str, list[str]], quick: bool) -> list[Row]:
    from txpert_head.cli.demo import QUICK_SIMULATE_ARGS, SIMULATE_ARGS, Recorder, build_simulated_graphs, slug

    rows = []
    for name, extra in settings.items():
        root = work / "sim" / slug(name)
        rec = Recorder(root)
        sim, graphs = root / "sim", root / "graphs"
        merged, rewired = graphs / "multi.kg.npz", graphs / "multi.rewire1.kg.npz"
        if not rewired.exists():
            rec.tool("simulate", "txpert", ["simulate", "-o", sim, *(QUICK_SIMULATE_ARGS if quick else SIMULATE_ARGS),
                                            *extra])
            rec.tool("merge", "kgbuild", ["merge", *build_simulated_graphs(rec, sim, graphs), "-o", merged])
            rec.tool("rewire", "kgbuild", ["perturb", "--rewire", "1.0", "--seed", "0", merged, "-o", rewired])
        rows.append(Row(f"sim {name}", sim / "perturbseq.h5ad", "unseen_single", merged,
                        dict(SIMULATED_DATA), rewired=rewired))
    return rows


def string_rows(data: Path, work: Path) -> list[Row]:
    """The screens of :data:`STRING_SETTINGS` on the dmfind STRING graph (min score 0.7) and its rewired copy."""
    from string_topology import string_graphs, simulate

    edges = data / "string" / "string_v12_dmfind_edges.tsv.gz"
    root = work / "string_topology"
    graph, rewired = string_graphs(edges, root)
    rows = []
    for name, (positive, effect) in STRING_SETTINGS.items():
        h5ad = root / f"screen_pos{positive:g}_eff{effect:g}.h5ad"
        if not h5ad.exists():
            simulate(edges, h5ad, 1000, 300, 50, 3, 1000, 0, positive, effect)
        rows.append(Row(name, h5ad, "unseen_single", graph,
                        dict(SIMULATED_DATA), rewired=rewired))
    return rows


def run_one(job: tuple) -> dict:
    """One training run (a worker process): returns per-perturbation scores of the model (and baselines)."""
    row, kind, seed, graph, out, baselines, quick = job
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import logging

    import pandas as pd
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.ERROR)
    from txpert_head.runs.folder import DataOptions, train_run
    from txpert_head.training.config import TrainConfig

    opts = DataOptions(str(row.h5ad), **row.data)
    extra = {"epochs": 8, "patience": 4} if quick else {}
    cfg = TrainConfig(seed=seed, encoder_kind=kind, progress=False, **extra)
    holdout = row.holdout[seed % len(row.holdout)] if row.holdout else None
    t = time.perf_counter()
    rep = train_run(opts, graph, row.task, cfg, out, split_seed=seed, holdout_line=holdout, resume=False,
                    baselines=baselines, vcc=False)
    table = pd.read_csv(Path(out) / "per_perturbation.csv")
    cols = ["condition", "pearson_delta", "pearson_delta_pert"] + [
        c for c in table.columns if c.endswith(("_pearson_delta", "_pearson_delta_pert"))
        and c not in ("pearson_delta", "pearson_delta_pert")]
    return {"row": row.name, "kind": kind, "seed": seed, "graph": str(graph), "seconds": time.perf_counter() - t,
            "best_epoch": rep["best_epoch"], "table": table[cols].to_dict("list"),
            "baselines": {k: v["pearson_delta"] for k, v in rep.get("baselines", {}).items()}}


def fmt(values) -> str:
    from txpert_head.reporting.report import mean_sd

    return mean_sd(values, digits=3) if len(values) else "–"


def _runs(results: list[dict], row: Row, kind: str, graph: Path) -> list[dict]:
    """The results of one row, encoder kind and graph, in seed order."""
    return sorted((r for r in results if r["row"] == row.name and r["kind"] == kind and r["graph"] == str(graph)),
                  key=lambda r: r["seed"])


def _pooled(runs: list[dict], column: str) -> np.ndarray:
    """One per-perturbation column over the runs' test perturbations, seeds together (paired comparisons)."""
    return np.concatenate([r["table"][column] for r in runs])


def _per_seed(runs: list[dict], column: str) -> list[float]:
    """The mean of a per-perturbation column in each run that has it (one value per seed)."""
    return [float(np.nanmean(r["table"][column])) for r in runs if column in r["table"]]


def build_table(rows: list[Row], results: list[dict], seeds: list[int], kinds: list[str]) -> tuple[str, dict]:
    """The markdown table and a summary dict (per row: means, best baseline, paired comparison, rewire cost)."""
    from txpert_head.metrics.paired import paired_comparison

    summary = {}
    base_names = [b for b in BASELINE_ORDER if any(b in r["baselines"] for r in results)]
    head = (["data", "TxPert (gat)"] + [k for k in kinds if k != "gat"] + base_names
            + ["split-half", "best baseline", "TxPert − best [95% CI]", "p", "wins", "TxPert − general (p)",
               "rewired TxPert", "rewire cost"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        main = _runs(results, row, "gat", row.graph)
        if not main:
            continue
        model = _per_seed(main, "pearson_delta")
        base = {b: [r["baselines"][b] for r in main if b in r["baselines"]] for b in base_names}
        base = {b: v for b, v in base.items() if v}
        best = max(base, key=lambda b: np.mean(base[b]))
        a = _pooled(main, "pearson_delta")
        pc = paired_comparison(a, _pooled(main, f"{best}_pearson_delta"), seed=0)
        entry = {"TxPert": model, "baselines": base, "best": best, "paired": pc,
                 "kinds": {k: _per_seed(_runs(results, row, k, row.graph), "pearson_delta")
                           for k in kinds if k != "gat"},
                 "split_half": [r["baselines"]["split_half"] for r in main if "split_half" in r["baselines"]]}
        cells = [row.name, f"**{fmt(model)}**"] + [fmt(entry["kinds"][k]) for k in kinds if k != "gat"]
        cells += [fmt(base.get(b, [])) for b in base_names] + [fmt(entry["split_half"]), best]
        vs_general = paired_comparison(a, _pooled(main, "general_pearson_delta"), seed=0)
        entry["vs_general"] = vs_general
        cells += [f"{pc['difference']:+.3f} [{pc['ci_low']:+.3f}, {pc['ci_high']:+.3f}]", f"{pc['p_value']:.3g}",
                  f"{pc['wins']}/{pc['n']}", f"{vs_general['difference']:+.3f} ({vs_general['p_value']:.2g})"]
        if "graph_neighbours" in base:  # does the graph carry signal a training-free method finds?
            entry["gn_vs_general"] = paired_comparison(_pooled(main, "graph_neighbours_pearson_delta"),
                                                       _pooled(main, "general_pearson_delta"), seed=0)
        if row.rewired is not None:
            rw = _runs(results, row, "gat", row.rewired)
            cost = paired_comparison(a, _pooled(rw, "pearson_delta"), seed=0)
            entry["rewired"] = _per_seed(rw, "pearson_delta")
            entry["rewire_cost"] = cost
            cells += [fmt(entry["rewired"]), f"{cost['difference']:+.3f} (p {cost['p_value']:.3g})"]
        else:
            cells += ["–", "–"]
        lines.append("| " + " | ".join(cells) + " |")
        summary[row.name] = entry
    return "\n".join(lines), summary


def criteria_table(summary: dict) -> str:
    """Issue 11's done criteria, row by row, from :func:`build_table`'s summary: (a) no baseline beats TxPert
    (paired p < 0.05); on simulated rows where ``graph_neighbours`` beats general (p < 0.05), (b) TxPert beats
    general (p < 0.05) and (c) a fully rewired graph costs at least 0.05. ``headroom``: split-half minus general,
    the most any graph can add over no graph on this metric (below 0.05, (c) cannot hold for a model that is
    no worse on a random graph than without one)."""
    head = ["data", "(a) no baseline better", "graph_neighbours − general (p)", "(b) TxPert > general",
            "headroom", "(c) rewire cost ≥ 0.05"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in summary.items():
        pc, gn = e["paired"], e.get("gn_vs_general")
        a = "yes" if not (pc["difference"] < 0 and pc["p_value"] < 0.05) else f"no ({e['best']})"
        applies = gn is not None and "rewire_cost" in e and gn["difference"] > 0 and gn["p_value"] < 0.05
        gn_txt = "–" if gn is None else f"{gn['difference']:+.3f} ({gn['p_value']:.2g})"
        headroom = float(np.mean(e["split_half"]) - np.mean(e["baselines"]["general"])) if e["split_half"] else float("nan")
        if applies:
            vg, cost = e["vs_general"], e["rewire_cost"]
            b = "yes" if vg["difference"] > 0 and vg["p_value"] < 0.05 else "no"
            c = "yes" if cost["difference"] >= 0.05 else "no"
            b, c = f"{b} ({vg['difference']:+.3f}, p {vg['p_value']:.2g})", f"{c} ({cost['difference']:+.3f})"
        else:
            b = c = "does not apply"
        lines.append("| " + " | ".join([name, a, gn_txt, b, f"{headroom:.3f}", c]) + " |")
    return "\n".join(lines)


def systema_table(rows: list[Row], results: list[dict]) -> str:
    """The same runs scored with Systema's Pearson Δ against the mean perturbed profile (``pearson_delta_pert``,
    docs/metrics.md): what is left of each method once the response shared by all perturbations is removed.
    Default TxPert against the best baseline on this metric, pooled over seeds, and the rewire cost on it."""
    from txpert_head.metrics.paired import paired_comparison

    head = ["data", "TxPert (gat)", *BASELINE_ORDER, "best baseline", "TxPert − best [95% CI]", "p",
            "rewired TxPert", "rewire cost (p)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        main = _runs(results, row, "gat", row.graph)
        if not main or "pearson_delta_pert" not in main[0]["table"]:
            continue
        base = {b: _per_seed(main, f"{b}_pearson_delta_pert") for b in BASELINE_ORDER}
        base = {b: v for b, v in base.items() if v}
        best = max(base, key=lambda b: np.mean(base[b]))
        a = _pooled(main, "pearson_delta_pert")
        pc = paired_comparison(a, _pooled(main, f"{best}_pearson_delta_pert"), seed=0)
        cells = [row.name, f"**{fmt(_per_seed(main, 'pearson_delta_pert'))}**"] + [fmt(base.get(b, [])) for b in BASELINE_ORDER]
        cells += [best, f"{pc['difference']:+.3f} [{pc['ci_low']:+.3f}, {pc['ci_high']:+.3f}]", f"{pc['p_value']:.3g}"]
        if row.rewired is not None:
            rw = _runs(results, row, "gat", row.rewired)
            cost = paired_comparison(a, _pooled(rw, "pearson_delta_pert"), seed=0)
            cells += [fmt(_per_seed(rw, "pearson_delta_pert")), f"{cost['difference']:+.3f} ({cost['p_value']:.3g})"]
        else:
            cells += ["–", "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_jobs(rows: list[Row], seeds: list[int], kinds: list[str], work: Path, n_jobs: int, quick: bool,
             t0: float) -> list[dict]:
    """Every (row, seed, encoder kind) training run, and TxPert on the rewired graph of rows that have one,
    in ``n_jobs`` worker processes; baselines come with the first kind's runs. Prints a line per run."""
    jobs = []
    for row in rows:
        for seed in seeds:
            for kind in kinds:
                out = work / "runs" / f"{row.name.replace(' ', '_')}_{kind}_s{seed}"
                jobs.append((row, kind, seed, row.graph, out, kind == "gat", quick))
            if row.rewired is not None:
                out = work / "runs" / f"{row.name.replace(' ', '_')}_rewired_s{seed}"
                jobs.append((row, "gat", seed, row.rewired, out, False, quick))
    results = []
    with ProcessPoolExecutor(max_workers=n_jobs) as pool:
        for k, res in enumerate(pool.map(run_one, jobs), 1):
            results.append(res)
            print(f"[{k}/{len(jobs)} {time.perf_counter() - t0:5.0f}s] {res['row']} {res['kind']} seed {res['seed']}"
                  f"{' rewired' if 'rewire' in res['graph'] else ''}: {np.nanmean(res['table']['pearson_delta']):.3f} "
                  f"(best epoch {res['best_epoch']}, {res['seconds']:.0f} s)", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    ap.add_argument("--work", type=Path, default=Path("/tmp/txpert_leaderboard"), help="working folder (cached)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS, help="encoder kinds ('gat' first)")
    ap.add_argument("--rows", nargs="*", default=None, help="only rows whose name contains one of these words")
    ap.add_argument("--no-real", action="store_true", help="simulated rows only")
    ap.add_argument("--quick", action="store_true", help="small simulations and 8 epochs (smoke run)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel training processes")
    ap.add_argument("--no-write", action="store_true", help="print only; do not write docs/leaderboard.md")
    args = ap.parse_args(argv)
    kinds = ["gat"] + [k for k in args.kinds if k != "gat"]
    t0 = time.perf_counter()
    rows = ([] if args.no_real else real_rows(args.data, args.work) + string_rows(args.data, args.work)) + sim_rows(
        args.work, SIM_SETTINGS, args.quick)
    if args.rows:
        rows = [r for r in rows if any(w in r.name for w in args.rows)]
    print(f"data and graphs ready in {time.perf_counter() - t0:.0f} s", flush=True)
    results = run_jobs(rows, args.seeds, kinds, args.work, args.jobs, args.quick, t0)
    table, summary = build_table(rows, results, args.seeds, kinds)
    minutes = (time.perf_counter() - t0) / 60
    text = "\n".join([
        "# Leaderboard",
        "",
        "Test Pearson Δ (mean ± sd over split seeds " + ", ".join(map(str, args.seeds)) + "; split seed = model "
        "seed). TxPert runs with its default options (no `--set`); the other encoder kinds change only "
        "`encoder_kind`. The paired comparison is default TxPert against the best baseline of the row (highest "
        "mean; split-half is the experimental ceiling, not a baseline), over the test perturbations of all seeds "
        "together: mean difference, 95% interval (the inverted sign-flip test), two-sided sign-flip p, wins; and "
        "the same against "
        "the general baseline. Rewire cost: TxPert on the simulated graph minus TxPert on the same graph fully "
        "rewired (paired, p).",
        "",
        f"Generated by `.venv/bin/python benchmarks/leaderboard.py{' --quick' if args.quick else ''}` in "
        f"{minutes:.0f} min on {os.cpu_count()} cores ({args.jobs} parallel runs; load average "
        f"{os.getloadavg()[1]:.1f} over the last 5 minutes of the run, {os.getloadavg()[2]:.1f} over 15). Data: the "
        "shared real files and "
        "`txpert simulate` at the demo's size with the knobs named in the row; the string topology rows simulate a "
        "screen over the real STRING network with another model (`benchmarks/string_topology.py`; 60 % or 80 % of "
        "the network's pairs act with a positive sign).",
        "",
        table,
        "",
        "## With the shared response removed (Systema)",
        "",
        "The same runs scored with Pearson Δ against the mean perturbed profile of the cell line instead of the "
        "control mean (`pearson_delta_pert`, [metrics](metrics.md)): a prediction of the average perturbation "
        "scores 0 here, so rows where every method looks alike above (a strong shared response) separate here. "
        "Intervals: the inverted sign-flip test.",
        "",
        systema_table(rows, results),
        "",
        "## Done criteria of issue 11",
        "",
        "Checked on the first table (Pearson Δ against batch-matched controls): (a) no baseline beats TxPert with "
        "paired p < 0.05; on simulated rows where `graph_neighbours` beats general (p < 0.05), (b) TxPert beats "
        "general with p < 0.05 and (c) a fully rewired graph costs TxPert at least 0.05. Headroom: split-half minus "
        "general, the most a graph can add over no graph on this metric; where it is below about 0.05, (c) can "
        "only hold for a model that does worse on a random graph than with no graph at all.",
        "",
        criteria_table(summary),
        "",
    ])
    print("\n" + text)
    if not args.no_write:
        (REPO / "docs" / "leaderboard.md").write_text(text)
        (args.work / "leaderboard.json").write_text(json.dumps({"summary": summary, "runs": [
            {k: v for k, v in r.items() if k != "table"} for r in results]}, indent=1, default=float))
        print(f"wrote {REPO / 'docs' / 'leaderboard.md'} and {args.work / 'leaderboard.json'}")
    print(f"total {minutes:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
