"""Validation sweep: TxPert option variants compared on validation splits only (how defaults are chosen).

Rows (``--rows``; any of):

* ``sim <setting>``: fresh ``txpert simulate`` screens at the leaderboard's size and knobs (the settings of
  ``leaderboard.SIM_SETTINGS``) but other simulation seeds (``--sim-seeds``, default 10 and 11; the leaderboard
  uses 0), unseen singles, on the merged example graph and on its fully rewired copy;
* ``papalexi``, ``norman``, ``perturbench``: the leaderboard's real rows (Papalexi unseen singles, Norman
  doubles, PerturBench cross-cell-line), on the merged kgbuild graph of the shared files.

Every variant (``--variant NAME key=value ...``, values parsed as JSON, as ``txpert train --set``; the
variant ``default`` is always run) trains with split seed = model seed = each of ``--seeds``. The table
gives the validation Pearson Δ of the selected epoch (``best_val_pearson_delta``; the test split is never
read), mean over simulation seeds and split seeds, the untrained prior's (epoch 0), and for the simulated
rows the same on the rewired graph and the difference (rewire cost on validation).

Usage (about 1 min per 12 runs on 2 cores)::

    .venv/bin/python benchmarks/validation_sweep.py --variant nofit fit_prior=false
    .venv/bin/python benchmarks/validation_sweep.py --rows papalexi norman perturbench --seeds 0 1 2 3 4 5 \\
        --variant nofit fit_prior=false
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from leaderboard import DEFAULT_DATA, SIM_SETTINGS, Row, real_rows, sim_rows  # noqa: E402

REAL = {"papalexi": "papalexi unseen singles", "norman": "norman doubles", "perturbench": "perturbench cross-cell-line"}


def parse_variant(items: list[str]) -> tuple[str, dict]:
    """``NAME key=value ...`` -> (NAME, {key: JSON value}) (a bare word value is taken as a string)."""
    name, sets = items[0], {}
    for item in items[1:]:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--variant {name}: expected key=value, got {item!r}")
        try:
            sets[key] = json.loads(value)
        except json.JSONDecodeError:
            sets[key] = value
    return name, sets


def run_one(job: tuple) -> dict:
    """One training run (a worker process): the validation scores of its selected epoch and of epoch 0."""
    row, label, graph, rewired, seed, variant, sets, out = job
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import logging

    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.ERROR)
    from txpert_head.runs.folder import DataOptions, train_run
    from txpert_head.training.config import TrainConfig

    cfg = TrainConfig(seed=seed, progress=False, **sets)
    holdout = row.holdout[seed % len(row.holdout)] if row.holdout else None
    rep = train_run(DataOptions(str(row.h5ad), **row.data), graph, row.task, cfg, out, split_seed=seed,
                    holdout_line=holdout, resume=False, baselines=False, vcc=False)
    return {"row": label, "rewired": rewired, "seed": seed, "variant": variant,
            "val": rep["best_val_pearson_delta"], "val0": rep.get("untrained_val_pearson_delta"),
            "best_epoch": rep["best_epoch"]}


def table(results: list[dict], variants: list[str]) -> str:
    """Markdown: per row and variant, validation Pearson Δ (selected epoch, epoch 0), rewired, cost."""
    lines = ["| row | variant | val Pearson Δ | epoch 0 | rewired | rewire cost | runs |", "|---|---|---|---|---|---|---|"]
    for row in dict.fromkeys(r["row"] for r in results):
        for v in variants:
            on = {(r["seed"], r["sim"]): r for r in results if r["row"] == row and r["variant"] == v and not r["rewired"]}
            off = {(r["seed"], r["sim"]): r for r in results if r["row"] == row and r["variant"] == v and r["rewired"]}
            if not on:
                continue
            val = np.mean([r["val"] for r in on.values()])
            val0 = np.mean([np.nan if r["val0"] is None else r["val0"] for r in on.values()])
            paired = [on[k]["val"] - off[k]["val"] for k in on if k in off]
            rew = f"{np.mean([r['val'] for r in off.values()]):.3f}" if off else "–"
            cost = f"{np.mean(paired):+.3f}" if paired else "–"
            lines.append(f"| {row} | {v} | {val:.3f} | {val0:.3f} | {rew} | {cost} | {len(on)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--rows", nargs="+", default=["sim"] + list(REAL),
                    help="'sim' (every simulator setting), 'sim <setting>' names, papalexi, norman, perturbench")
    ap.add_argument("--variant", nargs="+", action="append", default=[], metavar="NAME key=value",
                    help="a variant of the default options (repeatable)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="split seeds (= model seeds)")
    ap.add_argument("--sim-seeds", type=int, nargs="+", default=[10, 11], help="txpert simulate seeds")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    ap.add_argument("--work", type=Path, default=Path("/tmp/txpert_validation"), help="working folder (cached data)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel training processes")
    args = ap.parse_args(argv)
    variants = dict([("default", {})] + [parse_variant(v) for v in args.variant])
    t0 = time.perf_counter()
    rows: list[tuple[Row, str, str]] = []  # (row, label, simulation seed)
    sims = [s for s in SIM_SETTINGS if "sim" in args.rows or f"sim {s}" in args.rows]
    for sim_seed in args.sim_seeds:
        for s in sims:
            extra = SIM_SETTINGS[s] + ["--seed", str(sim_seed)]
            rows += [(r, f"sim {s}", str(sim_seed)) for r in sim_rows(args.work / f"sim_seed{sim_seed}", {s: extra}, False)]
    wanted = [REAL[k] for k in REAL if k in args.rows]
    if wanted:
        rows += [(r, r.name, "real") for r in real_rows(args.data, args.work / "real") if r.name in wanted]
    jobs = []
    for row, label, sim in rows:
        graphs = [(row.graph, False)] + ([(row.rewired, True)] if row.rewired is not None else [])
        for graph, rewired in graphs:
            for v, sets in variants.items():
                for seed in args.seeds:
                    out = args.work / "runs" / f"{label.replace(' ', '_')}_{sim}_{v}_{'rewired_' if rewired else ''}{seed}"
                    jobs.append((row, label, graph, rewired, seed, v, sets, out))
    print(f"{len(jobs)} runs; data ready in {time.perf_counter() - t0:.0f} s", flush=True)
    results = []
    with ProcessPoolExecutor(args.jobs) as ex:
        for job, res in zip(jobs, ex.map(run_one, jobs)):
            res["sim"] = job[0].h5ad.as_posix() if job[0].rewired is not None else "real"
            results.append(res)
    print(table(results, list(variants)))
    print(f"\n{len(jobs)} runs in {time.perf_counter() - t0:.0f} s; variants: {json.dumps(variants)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
