"""Target identification on held-out perturbations of the real datasets (not a test: prints a table).

For each dataset and seed s (split seed = model seed = s):

1. train TxPert on the ``unseen_single`` split (the training settings and the merged kgbuild graph of
   ``real_data_eval.py``; plain and with the target-gene term), so the test singles are never seen in training;
2. identify every test single -- and, for Norman, every combination (``unseen_single`` trains on no
   combination, so all of them are held out) -- among all genes of the graph (``txpert identify``'s default
   candidates, scope ``graph``);
   (plain Pearson, and "centred": the candidates' mean prediction removed from both sides first);
3. rank the same candidates with the baselines of :mod:`txpert_head.identification.baselines`: PCA-kNN (nearest
   training perturbation by Δ correlation in PCA space; can only name genes perturbed in training, every
   other gene follows in a fixed random order -- so it cannot find a held-out single), the own-gene
   heuristic (not a model: the target's own measured change, down for Papalexi's knock-outs, up for
   Norman's CRISPRa; unmeasured genes follow in a fixed random order) and random ranking (exact expected
   values).
   Every method is scored twice: among all genes of the graph (~21.5k), and among the screen's library (the
   genes the dataset perturbs anywhere: 25 for Papalexi, 31 for Norman), the question a user with a known
   guide library asks.

Metrics per query (:mod:`txpert_head.metrics.identification`): reciprocal rank of the first true gene (MRR),
exact hit@k (every true gene in the top k), recall@k (fraction of true genes in the top k), k = 10, 20, 40.
The table shows, per method, the mean over seeds of the per-seed means (± sd over seeds) and the number of
queries pooled over seeds.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/identify_eval.py --seeds 0 1 2 3 4 --work /tmp/txpert_real --runs /tmp/txpert_identify
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from real_data_eval import DEFAULT_DATA, TRAIN, build_graph  # noqa: E402
from txpert_head.data.perturb_data import constituents  # noqa: E402
from txpert_head.identification.targets import candidate_model, identify, ranking, tiebreak_key  # noqa: E402
from txpert_head.identification.baselines import own_gene_scores, pca_knn_scores  # noqa: E402
from txpert_head.metrics.identification import KS, mean_metrics, query_metrics, random_expectation, target_ranks  # noqa: E402
from txpert_head.data.profiles import true_profiles  # noqa: E402
from txpert_head.reporting.report import mean_sd  # noqa: E402
from txpert_head.runs.folder import DataOptions, load_run, train_run  # noqa: E402
from txpert_head.training.trainer import TrainConfig  # noqa: E402

DATASETS = {
    "papalexi": dict(file="perturbseq/papalexi2021_thp1_subset.h5ad", perturbation_col="target",
                     control=["non-targeting"], batch_col="bio_rep", direction=-1, doubles=False),
    "norman": dict(file="perturbseq/norman2019_k562_subset.h5ad", perturbation_col="perturbation",
                   control=["control"], batch_col="batch", direction=+1, doubles=True),
}
VARIANTS = {"TxPert": {}, "TxPert + target term": {"target_term": True}}
METRICS = ["mrr"] + [f"{m}@{k}" for k in KS for m in ("hit", "recall")]


def _record(out: dict, qtype: str, method: str, scores: np.ndarray, genes: list[str], truth: list[list[str]],
            library: list[str], seed: int) -> None:
    """Rank with ``scores`` (Q, C) over each candidate set; store per-query metrics and ranks."""
    sets = {"all graph genes": np.arange(len(genes)),
            "screen library genes": np.asarray([i for i, g in enumerate(genes) if g in set(library)])}
    for label, idx in sets.items():
        sub = [genes[i] for i in idx]
        block = out.setdefault(f"{qtype} | {label}", {"_n_candidates": len(idx)})
        if method == "random (expected)":
            block[method] = [random_expectation(len(idx), len(t), sum(g in set(sub) for g in t)) for t in truth]
            continue
        order = ranking(scores[:, idx], tiebreak_key(len(idx), seed))
        sub_genes = np.asarray(sub, dtype=object)
        ranks = [target_ranks(sub_genes[order[q]], t) for q, t in enumerate(truth)]
        block[method] = [query_metrics(r) for r in ranks]
        block.setdefault("_ranks", {})[method] = [r.tolist() for r in ranks]


def evaluate_seed(name: str, spec: dict, seed: int, data_root: Path, graph: Path, runs: Path) -> dict:
    """'query type | candidate set' -> method -> list of per-query metric dicts (and ranks)."""
    opts = DataOptions(str(data_root / spec["file"]), spec["perturbation_col"], spec["control"], None,
                       spec["batch_col"])
    out: dict = {}
    baselines_done = False
    for variant, extra in VARIANTS.items():
        cfg = TrainConfig(**{**TRAIN, **extra, "seed": seed})
        run = runs / f"{name}_{'tt' if extra else 'plain'}_s{seed}"
        t0 = time.perf_counter()
        if not (run / "metrics.json").exists():
            train_run(opts, graph, "unseen_single", cfg, run, split_seed=seed, resume=True, baselines=False)
        t1 = time.perf_counter()
        trainer, _ = load_run(run)
        data, split = trainer.data, trainer.split
        library = data.perturbed_genes()  # every gene the screen targets (singles and combinations)
        model = candidate_model(trainer, "graph")
        types = {"held-out singles": [p for _, p in split.test]}
        if spec["doubles"]:
            train_genes = set(trainer.known_genes)
            doubles = [p for p in data.perturbations() if len(constituents(p)) > 1]
            types["doubles, both genes trained"] = [p for p in doubles if all(g in train_genes for g in constituents(p))]
            types["doubles, >=1 gene not trained"] = [p for p in doubles
                                                     if not all(g in train_genes for g in constituents(p))]
        for qtype, labels in types.items():
            if not labels:
                continue
            for suffix, center in (("", False), (" (centred)", True)):
                res = identify(trainer, data, groups=labels, model=model, seed=seed, progress=False, center=center)
                truth = [list(constituents(p)) for _, p in res.queries.conditions]
                _record(out, qtype, variant + suffix, res.scores, res.genes, truth, library, seed)
            if baselines_done:
                continue
            genes = res.genes
            train_mean, train_ref = true_profiles(data, trainer.controls, split.train, trainer.rows)
            pca = pca_knn_scores(train_mean - train_ref, [constituents(p) for _, p in split.train],
                                 res.queries.observed, genes)
            _record(out, qtype, "PCA-kNN", pca, genes, truth, library, seed)
            own = own_gene_scores(res.queries.observed, data.genes, genes, spec["direction"])
            _record(out, qtype, "own-gene heuristic", own, genes, truth, library, seed)
            _record(out, qtype, "random (expected)", pca, genes, truth, library, seed)
        baselines_done = True
        print(f"{name} seed {seed} {variant}: train {t1 - t0:.0f}s, identify {time.perf_counter() - t1:.0f}s",
              flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--work", type=Path, default=Path("/tmp/txpert_real"))
    ap.add_argument("--runs", type=Path, default=Path("/tmp/txpert_identify"), help="Run folders (reused if finished).")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--json", type=Path, default=None, help="Also write all per-query results here.")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    graph = build_graph(args.data, args.work)
    results: dict = {}
    for name in args.datasets:
        for seed in args.seeds:
            results.setdefault(name, {})[seed] = evaluate_seed(name, DATASETS[name], seed, args.data, graph, args.runs)
    print(f"\nseeds {args.seeds} (split seed = model seed); task unseen_single; graph {graph}; "
          f"score = Pearson of predicted vs observed Δ; training options: {json.dumps(TRAIN)}")
    print("values: mean over seeds of the per-seed mean ± sd over seeds; n = queries pooled over seeds")
    methods = [v + s for v in VARIANTS for s in ("", " (centred)")] + ["PCA-kNN", "own-gene heuristic", "random (expected)"]
    for name, by_seed in results.items():
        qtypes = list(dict.fromkeys(q for s in by_seed.values() for q in s))
        for qtype in qtypes:
            n_cand = sorted({by_seed[s][qtype]["_n_candidates"] for s in by_seed if qtype in by_seed[s]})
            print(f"\n{name}: {qtype} ({'/'.join(map(str, n_cand))} candidates)")
            print(f"{'method':<32}" + "".join(f"{m:>15}" for m in METRICS) + f"{'n':>5}")
            for method in methods:
                per_seed = [mean_metrics(by_seed[s][qtype][method]) for s in by_seed if qtype in by_seed[s]]
                n = sum(p["n"] for p in per_seed)
                print(f"{method:<32}" + "".join(f"{mean_sd([p[m] for p in per_seed]):>15}" for m in METRICS) + f"{n:>5}")
            median = {m: float(np.median([min(r) for s in by_seed if qtype in by_seed[s]
                                          for r in by_seed[s][qtype]["_ranks"][m]]))
                      for m in methods if m != "random (expected)"}
            print("median rank of the first true gene: " + ", ".join(f"{m} {v:g}" for m, v in median.items()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
