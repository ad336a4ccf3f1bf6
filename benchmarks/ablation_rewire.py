"""Graph ablation on the simulated data: TxPert trained on the original graph and on rewired / downsampled
copies (``kgbuild perturb``), several seeds; prints test Pearson Δ mean ± sd per graph, the training-free
graph baselines (graph_neighbours, linear_graph) per graph, and the general and linear baselines.

The pipeline is the demo's (:mod:`txpert_head.cli.demo`): ``txpert simulate`` (the demo's example size),
``kgbuild string | go | reactome | screen``, ``kgbuild merge``, then ``kgbuild perturb --rewire P`` /
``--downsample P`` (seed 0) and :func:`txpert_head.runs.folder.train_run` on unseen singles with the demo's
training options, split seed = model seed = each of ``--seeds``.

Expected on the simulated data (where unseen perturbations' effects propagate over the true network and
the example sources are noisy views of it): original > rewired 0.5 > ... and original > general baseline.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ablation_rewire.py --seeds 0 1 2 --work /tmp/txpert_ablation
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ablation_rewire.py --set unknown_token=true --work /tmp/abl_unk
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from txpert_head.cli.demo import (  # noqa: E402
    QUICK_SIMULATE_ARGS, QUICK_TRAIN_OPTIONS, SIMULATE_ARGS, TRAIN_OPTIONS, Dataset, Recorder,
    build_simulated_graphs, graph_ablation, slug)
from txpert_head.reporting.report import mean_sd  # noqa: E402
from txpert_head.runs.folder import parse_overrides  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/txpert_ablation"), help="working folder")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rewire", nargs="+", default=["0.5", "1.0"], help="rewire fractions")
    ap.add_argument("--downsample", nargs="*", default=["0.5"], help="edge-drop fractions")
    ap.add_argument("--quick", action="store_true", help="the demo's --quick sizes")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="training option on top of the demo's, as in `txpert train --set` (repeatable)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rec = Recorder(args.work)
    sim, graphs = args.work / "sim", args.work / "graphs"
    rec.tool("simulate", "txpert", ["simulate", "-o", sim, *(QUICK_SIMULATE_ARGS if args.quick else SIMULATE_ARGS)])
    merged = graphs / "multi.kg.npz"
    rec.tool("merge", "kgbuild", ["merge", *build_simulated_graphs(rec, sim, graphs), "-o", merged])
    variants = {"original": merged}
    for flag, fractions in (("--rewire", args.rewire), ("--downsample", args.downsample)):
        for p in fractions:
            name = f"{flag.strip('-')} {p}"
            path = graphs / f"multi.{slug(name)}.kg.npz"
            rec.tool(name, "kgbuild", ["perturb", flag, p, "--seed", "0", merged, "-o", path])
            variants[name] = path
    ds = Dataset("simulated screen", sim / "perturbseq.h5ad", "perturbation", ["ctrl"], "batch", "cell_line",
                 "unseen_single")
    options = {**(QUICK_TRAIN_OPTIONS if args.quick else TRAIN_OPTIONS), **parse_overrides(args.overrides)}
    ab = graph_ablation(rec, ds, variants, "unseen_single", options, args.seeds, args.work / "runs")
    print(f"\nunseen singles, seeds {args.seeds} (split seed = model seed); test Pearson Δ")
    print(f"{'graph':<26}{'TxPert mean ± sd':>18}{'neighbours ± sd':>18}{'lin. graph ± sd':>18}   TxPert per seed")
    rows = [(g["name"], g["pearson_delta"], g["graph_neighbours"], g["linear_graph"]) for g in ab["graphs"]]
    rows.append(("general baseline", ab["general"], [], []))
    if ab["linear"]:
        rows.append(("linear baseline", ab["linear"], [], []))
    for name, vals, nb, lg in rows:
        print(f"{name:<26}{mean_sd(vals):>18}{mean_sd(nb):>18}{mean_sd(lg):>18}   {' '.join(f'{x:.3f}' for x in vals)}")
    print("(neighbours / lin. graph: the training-free graph_neighbours / linear_graph baselines on the same split "
          "and graph)")
    orig = float(np.mean(ab["graphs"][0]["pearson_delta"]))
    print("\noriginal - variant (mean over seeds; > 0: the graph's structure helps):")
    for g in ab["graphs"][1:]:
        print(f"  {g['name']:<24}{orig - float(np.mean(g['pearson_delta'])):+.3f}")
    print(f"original - general baseline: {orig - float(np.mean(ab['general'])):+.3f}")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; training options: {options}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
