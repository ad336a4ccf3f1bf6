"""GEARS side by side with TxPert and the baselines on the shared real data (a benchmark, not a test; not in CI).

For each dataset and split seed s:

1. TxPert, default training options (``TrainConfig(seed=s)``; split seed = model seed = s), trained with
   :func:`txpert_head.runs.folder.train_run` on the multigraph of ``benchmarks/real_data_eval.py:build_graph`` (STRING,
   GO, Reactome, DepMap), with the data options of ``benchmarks/leaderboard.py:real_rows``; its test predictions
   are written as an ``.h5ad``.
2. GEARS (cell-gears 0.1.2) in its own environment (``bash benchmarks/gears_env.sh`` builds ``.venv-gears``), run
   as a subprocess of this script (``--gears-worker``), on the same split (our ``split.json`` through
   ``PertData.prepare_split('custom')``; ``ctrl`` in training, as GEARS's own splits have it) and the same
   expression (the data as ``txpert`` reads it: Papalexi's counts normalised to 4,000 per cell + log1p).
   Offline: ``gene2go_all.pkl`` (symbol -> GO-term set) is built from the shared GAF (every aspect; a previous
   symbol such as MARCH8 gets its current symbol's terms through the shared gene_info), ``default_pert_graph=False``
   and GEARS's ``go_essential_<name>.csv`` is precomputed exactly as its ``make_GO`` would (Jaccard of GO-term
   sets > 0.1, self-edges included). Defaults otherwise: hidden 64, batch 32, 20 epochs, lr 1e-3, model kept at
   the best validation top-20-DE MSE; predictions from ``GEARS.predict`` (300 random control cells each).
   ``pandas.Series.nonzero`` (gone from pandas 2, still called by scipy when GEARS indexes a sparse matrix with a
   boolean Series) is restored by a shim in the worker. Perturbations of genes without GO terms (Norman's IER5L,
   a training single) cannot be predicted by GEARS: they leave its training set, and were one in the test set it
   would be predicted as the control mean ("no change") and counted in the table's note.
3. Both prediction files are scored with :func:`txpert_head.runs.scoring.score_predictions` (``txpert score``) against the
   run's ``split.json``: the same truth, metrics, baselines and paired comparisons as ``txpert evaluate``.

Prints per dataset and seed: Pearson Δ, Systema's Pearson Δ against the perturbed mean, retrieval and MSE of
GEARS, TxPert and every baseline, and paired comparisons (GEARS minus TxPert and each baseline; TxPert minus
GEARS is the negative) over the test perturbations; then, with several seeds, the mean over seeds and the
paired comparison pooled over the seeds' test perturbations. Writes ``WORK/peers.json``.

Usage::

    bash benchmarks/gears_env.sh                                     # once: the GEARS venv (.venv-gears)
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/peers.py --work /tmp/txpert_peers
    .venv/bin/python benchmarks/peers.py --datasets norman_double --seeds 0 1 2 --gears-epochs 20
    .venv/bin/python benchmarks/peers.py --gears-epochs 1 --datasets norman_double   # time one GEARS epoch

Time on this project's 2-core machine (shared with other jobs, ``nice``): GEARS 12-20 s per epoch on Norman (2.6k
training cells), 55 s on Papalexi (12k); TxPert default 15-40 s per run. One seed of both datasets takes about
25 min (GEARS's 20 epochs dominate); ``--seeds 0 1 2`` about 75 min, less when seeds run as parallel invocations
on the same WORK (one per seed; a last invocation with every seed reuses them and prints the whole table).

Run folders, GEARS inputs and predictions go to WORK (reused when present: delete WORK/<dataset>_s<seed> to
redo one). GEARS and TxPert train at the same time (one thread each) unless ``--sequential``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_GEARS_PYTHON = REPO / ".venv-gears" / "bin" / "python"
GEARS_EPOCHS = 20


# --------------------------------------------------------------------------------------------------------------
# the GEARS worker: runs in the GEARS venv (imports nothing of the project)
# --------------------------------------------------------------------------------------------------------------

def go_edges(gene2go: dict, genes: list) -> list:
    """GEARS's ``make_GO`` edge list over ``genes``: (source, target, Jaccard) for every ordered pair (self
    included) whose GO-term sets have Jaccard > 0.1 (``gears.utils.get_GO_edge_list``), vectorised."""
    import numpy as np
    import scipy.sparse as sp

    terms = sorted({t for g in genes for t in gene2go[g]})
    col = {t: i for i, t in enumerate(terms)}
    rows = [i for i, g in enumerate(genes) for _ in gene2go[g]]
    cols = [col[t] for g in genes for t in gene2go[g]]
    M = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(genes), len(terms)))
    inter = (M @ M.T).toarray()
    size = np.asarray(M.sum(1)).ravel()
    jac = inter / (size[:, None] + size[None, :] - inter)
    out = []
    for i, j in zip(*np.nonzero(jac > 0.1)):
        out.append((genes[i], genes[j], float(jac[i, j])))  # get_GO_edge_list(g1): (g1, g2, score)
    return out


def gears_worker(spec_path: str) -> int:
    """Train GEARS on ``spec["input"]`` with the custom split and write mean predictions of the test perturbations."""
    spec = json.loads(Path(spec_path).read_text())
    import pickle
    import random

    import anndata
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    import torch

    # GEARS 0.1.2 indexes sparse matrices with boolean pandas Series; scipy calls .nonzero() on the index, which
    # pandas 2 removed from Series: give it back (numpy's nonzero of the values)
    if not hasattr(pd.Series, "nonzero"):
        pd.Series.nonzero = lambda self: self.to_numpy().nonzero()
    torch.set_num_threads(int(spec.get("threads", 1)))
    seed = int(spec["seed"])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    folder = Path(spec["folder"])
    os.chdir(folder)  # gears.utils.make_GO reads ./data/go_essential_<name>.csv
    name = spec["name"].lower()
    adata = anndata.read_h5ad(spec["input"])
    gene2go = pickle.loads((folder / "gene2go_all.pkl").read_bytes())
    conds = adata.obs["condition"].astype(str)
    pert_genes = sorted({g for c in conds.unique() for g in c.split("+") if g != "ctrl"})
    essential = list(adata.var["gene_name"]) + pert_genes  # PertData.set_pert_genes, default_pert_graph=False
    pert_names = sorted({g for g in essential if g in gene2go})
    ok = {c for c in conds.unique() if all(g == "ctrl" or g in pert_names for g in c.split("+"))}
    dropped = sorted(set(conds.unique()) - ok)
    adata = adata[conds.isin(ok).to_numpy()].copy()
    adata.X = sp.csr_matrix(adata.X)
    (folder / "data").mkdir(exist_ok=True)
    edges = go_edges(gene2go, pert_names)
    pd.DataFrame(edges, columns=["source", "target", "importance"]).to_csv(
        folder / "data" / f"go_essential_{name}.csv", index=False)
    split = pickle.loads(Path(spec["split"]).read_bytes())
    split = {k: [c for c in v if c in ok] for k, v in split.items()}
    (folder / "split_gears.pkl").write_bytes(pickle.dumps(split))

    from gears import GEARS, PertData

    t0 = time.perf_counter()
    pert_data = PertData(str(folder), default_pert_graph=False)  # reads folder/gene2go_all.pkl (no download)
    pert_data.new_data_process(dataset_name=name, adata=adata)
    pert_data.prepare_split(split="custom", seed=seed, split_dict_path=str(folder / "split_gears.pkl"))
    pert_data.get_dataloader(batch_size=32, test_batch_size=128)
    prep = time.perf_counter() - t0
    model = GEARS(pert_data, device="cpu")
    model.model_initialize(hidden_size=64)
    t1 = time.perf_counter()
    model.train(epochs=int(spec["epochs"]), lr=1e-3)
    train_s = time.perf_counter() - t1
    test = [c for c in spec["test"] if c in ok]
    lists = [[g for g in c.split("+") if g != "ctrl"] for c in test]
    np.random.seed(seed)
    pred = model.predict(lists)
    X = np.stack([pred["_".join(genes)] for genes in lists]) if lists else np.zeros((0, adata.n_vars))
    obs = pd.DataFrame({"condition": test}, index=[f"p{i}" for i in range(len(test))])
    out = anndata.AnnData(X.astype(np.float32), obs=obs, var=pd.DataFrame(index=adata.var_names.astype(str)))
    out.uns["model"] = f"GEARS (cell-gears 0.1.2), {spec['epochs']} epochs, seed {seed}"
    out.write_h5ad(spec["out"])
    info = {"prepare_seconds": prep, "train_seconds": train_s, "epochs": int(spec["epochs"]),
            "seconds_per_epoch": train_s / max(1, int(spec["epochs"])), "dropped_conditions": dropped,
            "unpredicted_test": [c for c in spec["test"] if c not in ok], "go_genes": len(pert_names),
            "go_edges": len(edges), "train_cells": int(sum(len(pert_data.dataset_processed[c])
                                                           for c in split["train"]))}
    Path(spec["info"]).write_text(json.dumps(info, indent=2))
    return 0


# --------------------------------------------------------------------------------------------------------------
# the main process (project venv)
# --------------------------------------------------------------------------------------------------------------

def gears_label(pert: str) -> str:
    """Our canonical condition -> GEARS's: ``A`` -> ``A+ctrl``, ``A+B`` as is, control -> ``ctrl``."""
    if pert == "ctrl":
        return "ctrl"
    return pert if "+" in pert else f"{pert}+ctrl"


def build_gene2go(data_dir: Path, genes: list[str], path: Path) -> dict:
    """``gene2go_all.pkl`` for GEARS from the shared GAF: symbol -> set of GO ids (every aspect); a gene of
    ``genes`` missing from the GAF gets its current symbol's terms (shared gene_info) when it has one."""
    import pickle

    import pandas as pd

    from kgbuild.symbols import SymbolMap, match_names

    gaf = pd.read_csv(data_dir / "go/goa_human.gaf.gz", sep="\t", comment="!", header=None, usecols=[2, 4],
                      dtype=str)
    gene2go = {g: set(t) for g, t in gaf.groupby(2)[4]}
    missing = [g for g in genes if g not in gene2go]
    mapped = {}
    info = data_dir / "genes/Homo_sapiens.gene_info.gz"
    if missing and info.exists():
        match = match_names(missing, list(gene2go), SymbolMap.from_gene_info(info))
        for old, new in match.mapping.items():
            gene2go[old] = gene2go[new]
        mapped = dict(match.mapping)
    path.write_bytes(pickle.dumps(gene2go))
    return {"genes": len(gene2go), "mapped": mapped, "without_go": [g for g in missing if g not in mapped]}


def write_gears_inputs(data, split, folder: Path, data_dir: Path, cell_type: str) -> dict:
    """GEARS's input h5ad (the expression as txpert reads it; obs condition / cell_type, var gene_name), the custom
    split pickle and gene2go_all.pkl in ``folder``."""
    import pickle

    import anndata
    import numpy as np
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    obs = pd.DataFrame({"condition": [gears_label(c) for c in data.condition],
                        "cell_type": np.where(data.cell_line == "all", cell_type, data.cell_line)},
                       index=[f"c{i}" for i in range(data.n_obs)])
    var = pd.DataFrame({"gene_name": data.genes}, index=data.genes)
    anndata.AnnData(data.X.astype(np.float32), obs=obs, var=var).write_h5ad(folder / "input.h5ad")
    parts = {k: sorted({gears_label(p) for _, p in getattr(split, k)}) for k in ("train", "val", "test")}
    parts["train"] = ["ctrl"] + parts["train"]
    (folder / "split.pkl").write_bytes(pickle.dumps(parts))
    genes = sorted(set(data.genes) | set(data.perturbed_genes()))
    return {**build_gene2go(data_dir, genes, folder / "gene2go_all.pkl"), "test": parts["test"]}


def start_gears(args, name: str, seed: int, folder: Path, test: list[str]) -> tuple[subprocess.Popen | None, Path]:
    """Start the GEARS worker (None when its predictions are already there)."""
    out, info = folder / "gears_predictions.h5ad", folder / "gears_info.json"
    if out.exists() and info.exists() and json.loads(info.read_text()).get("epochs") == args.gears_epochs:
        return None, out
    spec = {"folder": str(folder), "name": name, "input": str(folder / "input.h5ad"),
            "split": str(folder / "split.pkl"), "test": test, "seed": seed, "epochs": args.gears_epochs,
            "threads": 1, "out": str(out), "info": str(info)}
    (folder / "gears_spec.json").write_text(json.dumps(spec, indent=2))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log = open(folder / "gears.log", "w")
    proc = subprocess.Popen([str(args.gears_python), str(Path(__file__).resolve()), "--gears-worker",
                             str(folder / "gears_spec.json")], stdout=log, stderr=subprocess.STDOUT, env=env)
    return proc, out


def train_txpert(args, spec: dict, opts, graph: Path, seed: int, run: Path) -> dict:
    from txpert_head.runs.folder import parse_overrides, train_run
    from txpert_head.training.config import TrainConfig

    if (run / "metrics.json").exists():
        return {"reused": True, **json.loads((run / "metrics.json").read_text())}
    cfg = TrainConfig(**{"seed": seed, "progress": False, **parse_overrides(args.txpert_set)})
    t = time.perf_counter()
    rep = train_run(opts, graph, spec["task"], cfg, run, split_seed=seed, resume=False, baselines=False, vcc=False)
    return {"seconds": time.perf_counter() - t, **rep}


def txpert_predictions(run: Path, out: Path) -> Path:
    """The run's best weights' test predictions (mean expression per test condition) as an h5ad."""
    import anndata
    import numpy as np
    import pandas as pd

    from txpert_head.data.profiles import condition_name
    from txpert_head.runs.folder import load_run

    trainer, _ = load_run(run)
    conds = list(trainer.split.test)
    pred = trainer.predict_means(conds)
    obs = pd.DataFrame({"perturbation": [condition_name(c) for c in conds]}, index=[f"p{i}" for i in range(len(conds))])
    anndata.AnnData(pred.astype(np.float32), obs=obs, var=pd.DataFrame(index=trainer.data.genes)).write_h5ad(out)
    return out


def fill_unpredicted(path: Path, data, test: list[str]) -> list[str]:
    """Give the test perturbations GEARS cannot predict (genes without GO terms) the control mean ("no change")."""
    import anndata
    import numpy as np
    import pandas as pd

    pred = anndata.read_h5ad(path)
    have = set(pred.obs["condition"].astype(str))
    missing = [c for c in test if c not in have]
    if missing:
        ctrl = np.asarray(data.X[data.is_control].mean(axis=0)).ravel()
        add = anndata.AnnData(np.tile(ctrl, (len(missing), 1)).astype(np.float32),
                              obs=pd.DataFrame({"condition": missing}, index=[f"m{i}" for i in range(len(missing))]),
                              var=pd.DataFrame(index=list(data.genes)))
        anndata.concat([pred, add]).write_h5ad(path.with_name("gears_predictions_filled.h5ad"))
    return missing


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder (default: %(default)s)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/txpert_peers"), help="work folder (default: %(default)s)")
    ap.add_argument("--datasets", nargs="+", default=None, metavar="NAME",
                    help="keys of real_data_eval.DATASETS (default: all: norman_double papalexi_unseen_single)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="split seeds (= TxPert and GEARS seeds)")
    ap.add_argument("--gears-epochs", type=int, default=GEARS_EPOCHS, help="GEARS epochs (default: its 20)")
    ap.add_argument("--gears-python", type=Path, default=DEFAULT_GEARS_PYTHON,
                    help="python of the GEARS venv (bash benchmarks/gears_env.sh builds it; default: %(default)s)")
    ap.add_argument("--txpert-set", action="append", default=[], metavar="KEY=VALUE",
                    help="TxPert training option on top of the defaults, as `txpert train --set` (repeatable)")
    ap.add_argument("--sequential", action="store_true", help="train GEARS and TxPert one after the other")
    ap.add_argument("--gears-worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.gears_worker:
        return gears_worker(args.gears_worker)

    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "benchmarks"))
    import logging

    import torch

    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(1)
    check = subprocess.run([str(args.gears_python), "-c", "import gears"], capture_output=True, text=True) \
        if args.gears_python.exists() else None
    if check is None or check.returncode:
        sys.exit(f"peers: GEARS does not import with {args.gears_python}; build its venv with "
                 f"`bash benchmarks/gears_env.sh` (or pass --gears-python)")
    from real_data_eval import DATASETS, build_graph, data_options

    from txpert_head.runs.folder import load_graph_for

    args.datasets = args.datasets or list(DATASETS)
    unknown = [d for d in args.datasets if d not in DATASETS]
    if unknown:
        ap.error(f"--datasets: unknown {', '.join(unknown)} (known: {', '.join(DATASETS)})")

    t0 = time.perf_counter()
    graph = build_graph(args.data, args.work / "real_graph")
    print(f"graph {graph} ready in {time.perf_counter() - t0:.0f}s", flush=True)
    results = []
    for name in args.datasets:
        spec = DATASETS[name]
        opts = data_options(args.data, name)
        data = opts.load()
        for seed in args.seeds:
            folder = args.work / f"{name}_s{seed}"
            run = folder / "txpert_run"
            from txpert_head.data.splits import make_split

            split = make_split(data, spec["task"], seed=seed)
            gi = write_gears_inputs(data, split, folder / "gears", args.data, cell_type=name.split("_")[0])
            t = time.perf_counter()
            proc, gears_out = start_gears(args, name, seed, folder / "gears", gi["test"])
            if proc is not None and args.sequential:
                proc.wait()
            rep = train_txpert(args, spec, opts, graph, seed, run)
            tx_seconds = rep.get("seconds", rep.get("train_seconds"))
            if proc is not None and proc.wait() != 0:
                sys.exit(f"peers: GEARS failed ({name}, seed {seed}); see {folder / 'gears' / 'gears.log'}")
            gears_info = json.loads((folder / "gears" / "gears_info.json").read_text())
            print(f"{name} seed {seed}: TxPert {'reused' if rep.get('reused') else f'{tx_seconds:.0f}s'} "
                  f"(best epoch {rep.get('best_epoch')}), GEARS {gears_info['train_seconds']:.0f}s for "
                  f"{gears_info['epochs']} epochs ({gears_info['seconds_per_epoch']:.1f}s/epoch, "
                  f"{gears_info['train_cells']} training cells); wall {time.perf_counter() - t:.0f}s", flush=True)
            unpredicted = fill_unpredicted(gears_out, data, gi["test"])
            if unpredicted:
                gears_out = gears_out.with_name("gears_predictions_filled.h5ad")
            results.append(score_pair(name, seed, data, run, graph, gears_out, txpert_predictions(
                run, folder / "txpert_predictions.h5ad"), gears_info, gi, unpredicted, rep, load_graph_for))
    report(results, args)
    return 0


def score_pair(name, seed, data, run, graph_path, gears_pred, txpert_pred, gears_info, gi, unpredicted, rep,
               load_graph_for) -> dict:
    """Score GEARS's and TxPert's predictions with txpert score's API on the run's split."""
    from txpert_head.metrics.paired import paired_comparison
    from txpert_head.runs.scoring import score_predictions

    graph = load_graph_for(data, graph_path)
    split = run / "split.json"
    g_table, g_sum, g_paired = score_predictions(gears_pred, data, split, graph=graph, seed=seed, metric_seed=seed)
    t_table, t_sum, t_paired = score_predictions(txpert_pred, data, split, graph=graph, seed=seed, metric_seed=seed)
    assert g_table["condition"].tolist() == t_table["condition"].tolist()
    vs_txpert = paired_comparison(g_table["pearson_delta"], t_table["pearson_delta"], seed=seed)
    vs_txpert_pert = paired_comparison(g_table["pearson_delta_pert"], t_table["pearson_delta_pert"], seed=seed)
    cols = ["condition", "pearson_delta", "pearson_delta_pert"]
    return {"dataset": name, "seed": seed, "gears": g_sum, "txpert": t_sum, "gears_vs_txpert": vs_txpert,
            "gears_vs_txpert_pert": vs_txpert_pert, "gears_info": gears_info,
            "gene2go": {k: gi[k] for k in ("genes", "mapped", "without_go")}, "gears_unpredicted_test": unpredicted,
            "txpert_best_epoch": rep.get("best_epoch"),
            "txpert_seconds": rep.get("seconds", rep.get("train_seconds")),
            "per_perturbation": {"gears": g_table[cols + [c for c in g_table.columns if c.endswith("_pearson_delta")
                                                          or c.endswith("_pearson_delta_pert")]].to_dict("list"),
                                 "txpert": t_table[cols].to_dict("list")}}


def report(results: list[dict], args) -> None:
    import numpy as np

    from txpert_head.metrics.paired import describe_comparison, paired_comparison
    from txpert_head.runs.folder import write_json

    def row(label, s):
        print(f"  {label:<20}{s['pearson_delta']:>10.4f}{s['pearson_delta_pert']:>12.4f}{s['retrieval']:>11.4f}"
              f"{s['mse']:>10.4f}{s.get('n_perturbations', 0):>4}")

    for r in results:
        print(f"\n{r['dataset']}, split seed {r['seed']}: GEARS {r['gears_info']['epochs']} epochs "
              f"({r['gears_info']['train_seconds']:.0f}s), TxPert default options "
              f"(best epoch {r['txpert_best_epoch']})")
        print(f"  {'method':<20}{'Pearson Δ':>10}{'Δ vs pert':>12}{'retrieval':>11}{'MSE':>10}{'n':>4}")
        row("GEARS", r["gears"])
        row("TxPert", r["txpert"])
        for k, s in r["gears"].get("baselines", {}).items():
            row(k, s)
        print("  GEARS minus, paired over the test perturbations:")
        print(f"    vs TxPert            {describe_comparison(r['gears_vs_txpert'])}")
        print(f"    vs TxPert            {describe_comparison(r['gears_vs_txpert_pert'], 'Systema Pearson Δ pert')}")
        for k, c in r["gears"].get("paired", {}).items():
            print(f"    vs {k:<18}{describe_comparison(c)}")
        print("  TxPert minus, paired:")
        for k, c in r["txpert"].get("paired", {}).items():
            print(f"    vs {k:<18}{describe_comparison(c)}")
        notes = []
        if r["gears_unpredicted_test"]:
            notes.append(f"GEARS could not predict {', '.join(r['gears_unpredicted_test'])} (no GO terms): "
                         "given the control mean")
        if r["gears_info"]["dropped_conditions"]:
            notes.append(f"left out of GEARS's data (no GO terms): {', '.join(r['gears_info']['dropped_conditions'])}")
        if r["gene2go"]["mapped"]:
            notes.append("GO terms through current symbols: " + ", ".join(f"{a} -> {b}" for a, b in
                                                                          r["gene2go"]["mapped"].items()))
        for n in notes:
            print(f"  note: {n}")
    by_ds: dict[str, list[dict]] = {}
    for r in results:
        by_ds.setdefault(r["dataset"], []).append(r)
    for name, rs in by_ds.items():
        if len(rs) < 2:
            continue
        print(f"\n{name}: mean over seeds {[r['seed'] for r in rs]}, paired comparisons pooled over their test "
              "perturbations")
        for key, label in (("pearson_delta", "Pearson Δ"), ("pearson_delta_pert", "Δ vs pert")):
            g = [r["gears"][key] for r in rs]
            t = [r["txpert"][key] for r in rs]
            print(f"  {label}: GEARS {np.mean(g):.4f} ± {np.std(g, ddof=1):.4f}, TxPert {np.mean(t):.4f} ± "
                  f"{np.std(t, ddof=1):.4f}")
        g = np.concatenate([r["per_perturbation"]["gears"]["pearson_delta"] for r in rs])
        t = np.concatenate([r["per_perturbation"]["txpert"]["pearson_delta"] for r in rs])
        print(f"  GEARS minus TxPert: {describe_comparison(paired_comparison(g, t))}")
        for base in rs[0]["gears"].get("baselines", {}):
            col = f"{base}_pearson_delta"
            if all(col in r["per_perturbation"]["gears"] for r in rs):
                b = np.concatenate([r["per_perturbation"]["gears"][col] for r in rs])
                print(f"  GEARS minus {base}: {describe_comparison(paired_comparison(g, b))}")
    args.work.mkdir(parents=True, exist_ok=True)
    write_json({"gears_epochs": args.gears_epochs, "results": results}, args.work / "peers.json")
    print(f"\nwrote {args.work / 'peers.json'}")


if __name__ == "__main__":
    raise SystemExit(main())
