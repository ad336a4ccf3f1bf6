"""Real-data evaluation of TxPert against baselines (not a test: prints a table, writes run folders).

1. Builds the multigraph with the kgbuild command line from the shared files (cached in --work):
   STRING (dmfind TSV, combined_score / 1000, symmetric, <= 20 incoming edges), GO (Jaccard > 0.1,
   <= 20 incoming), Reactome (same), DepMap VAE embeddings (screen, top 1 % |cosine|, <= 20 incoming);
   then ``kgbuild merge``.
2. Papalexi 2021 THP-1 (raw counts, batches = bio_rep) on unseen singles and Norman 2019 K562 on
   doubles: for each seed s (split seed = model seed = s), TxPert (plain) and TxPert + target-gene term,
   and the baselines on the same split (every baseline of :func:`txpert_head.evaluation.baselines.run_baselines` that
   applies: general, additive, graph_neighbours, linear and linear_graph on the multigraph, split-half).
   Reports mean ± sd over seeds.

Usage::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/real_data_eval.py --seeds 0 1 2 --work /tmp/txpert_real
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/real_data_eval.py --set unknown_token=true \
        --work /tmp/txpert_real --runs /tmp/txpert_real/runs_unk    # the opt-in unknown token
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from txpert_head.reporting.report import mean_sd  # noqa: E402
from txpert_head.runs.folder import DataOptions, parse_overrides, train_run  # noqa: E402
from txpert_head.training.trainer import TrainConfig  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data"
TRAIN = dict(epochs=30, patience=8, basal="none", control_mode="mean", graph_hops=2, batch_size=32,
             min_steps_per_epoch=10, lr=3e-4, encoder_kind="gat", encoder_dim=64, encoder_layers=2,
             encoder_heads=2, encoder_dropout=0.3, dropout=0.3, progress=False)
DATASETS = {
    "papalexi_unseen_single": dict(file="perturbseq/papalexi2021_thp1_subset.h5ad", perturbation_col="target",
                                   control=["non-targeting"], batch_col="bio_rep", task="unseen_single"),
    "norman_double": dict(file="perturbseq/norman2019_k562_subset.h5ad", perturbation_col="perturbation",
                          control=["control"], batch_col="batch", task="double"),
}


def read_options(name: str) -> dict:
    """How the benchmarks read the shared file of ``DATASETS[name]``: :class:`DataOptions` fields besides the path."""
    spec = DATASETS[name]
    return dict(perturbation_col=spec["perturbation_col"], control=list(spec["control"]), batch_col=spec["batch_col"])


def data_options(data: Path, name: str) -> DataOptions:
    """:class:`DataOptions` of ``DATASETS[name]`` under the shared data folder ``data``."""
    return DataOptions(str(data / DATASETS[name]["file"]), **read_options(name))


def kgbuild(*args: str) -> None:
    cmd = [sys.executable, "-m", "kgbuild.cli", *args]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def build_graph(data: Path, work: Path) -> Path:
    out = work / "multi.kg.npz"
    if out.exists():
        return out
    work.mkdir(parents=True, exist_ok=True)
    kgbuild("edges", "--edges", str(data / "string/string_v12_dmfind_edges.tsv.gz"), "--source-col", "symbol1",
            "--target-col", "symbol2", "--weight-col", "combined_score", "--weight-scale", "0.001", "--symmetric",
            "--max-in-degree", "20", "--layer-name", "string", "-o", str(work / "string.kg.npz"))
    kgbuild("go", "--obo", str(data / "go/go-basic.obo"), "--gaf", str(data / "go/goa_human.gaf.gz"), "--offline",
            "-o", str(work / "go.kg.npz"))
    kgbuild("reactome", "--gmt", str(data / "reactome/ReactomePathways.gmt"), "--offline",
            "-o", str(work / "reactome.kg.npz"))
    kgbuild("screen", "--embeddings", str(data / "depmap/depmap_vae_gene_embeddings.parquet"), "--top-pct", "1",
            "--max-in-degree", "20", "--layer-name", "depmap", "-o", str(work / "depmap.kg.npz"))
    kgbuild("merge", *(str(work / f"{n}.kg.npz") for n in ("string", "go", "reactome", "depmap")), "-o", str(out))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--work", type=Path, default=Path("/tmp/txpert_real"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="training option on top of TRAIN for every run, as in `txpert train --set` (repeatable)")
    ap.add_argument("--runs", type=Path, default=None, help="folder of the run folders (default: WORK/runs)")
    args = ap.parse_args(argv)
    train_options = {**TRAIN, **parse_overrides(args.overrides)}
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    graph = build_graph(args.data, args.work)
    print(f"graph {graph} built/reused in {time.perf_counter() - t0:.0f}s")
    rows: dict[str, dict[str, dict[str, list[float]]]] = {}
    for name in args.datasets:
        spec = DATASETS[name]
        opts = data_options(args.data, name)
        table = rows.setdefault(name, {})
        for seed in args.seeds:
            for variant, extra in (("TxPert", {}), ("TxPert + target term", {"target_term": True})):
                cfg = TrainConfig(**{**train_options, **extra, "seed": seed})
                out = (args.runs or args.work / "runs") / f"{name}_{'tt' if extra else 'plain'}_s{seed}"
                t = time.perf_counter()
                rep = train_run(opts, graph, spec["task"], cfg, out, split_seed=seed, resume=False,
                                baselines=not extra)
                print(f"{name} seed {seed} {variant}: {time.perf_counter() - t:.0f}s, best epoch {rep['best_epoch']}, "
                      f"pearson_delta {rep['model']['pearson_delta']:.3f}")
                entries = [(variant, rep["model"])] + [(f"{variant} {k}", v) for k, v in rep["subgroups"].items()]
                entries += [(f"baseline {k}", v) for k, v in rep.get("baselines", {}).items()]
                for label, s in entries:
                    for key in ("pearson_delta", "retrieval", "mse", "target_error", "n_perturbations"):
                        table.setdefault(label, {}).setdefault(key, []).append(s.get(key))
    print()
    print(f"seeds {args.seeds}; mean ± sd over seeds (split seed = model seed); training options: "
          f"{json.dumps(train_options)}")
    for name, table in rows.items():
        print(f"\n{name}")
        print(f"{'method':<34}{'Pearson Δ':>16}{'retrieval':>16}{'MSE':>16}{'target err':>16}{'n test':>8}")
        for label, vals in table.items():
            n = "/".join(str(int(x)) for x in vals["n_perturbations"])
            print(f"{label:<34}" + "".join(f"{mean_sd(vals[k]):>16}" for k in ("pearson_delta", "retrieval", "mse",
                                                                                 "target_error")) + f"{n:>8}")
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
