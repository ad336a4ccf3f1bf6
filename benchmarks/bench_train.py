"""Training throughput and peak memory for one epoch on a K562-scale synthetic dataset.

Data: 160,000 cells x 5,000 genes, sparse CSR (about 8 % non-zero, integer counts normalised to 4,000 per
cell + log1p), 2,000 single-gene perturbations + 10 % control cells over 48 batches; graph: 10,000 genes,
about 10 incoming edges each. Expression stays sparse; every mini-batch is densified on its own.

Two settings, each in its own process (so peak memory is its own), side by side:

* ``cells``: cell-level training, a random batch-matched control cell as input, MLP basal encoder;
* ``aggregated``: batch-averaged control input, which trains on (perturbation x batch) means.

Targets (issue 5): one epoch < 10 minutes on 2 cores, peak memory < 8 GB. Issue 16: the cell-level epoch
within 3x the *bare-MLP floor*, measured in the same process right after the epoch: forward + backward of
copies of the model's own basal and decoder MLPs (same shapes, dropout, thread count) on random dense
batches of the epoch's batch sizes, as many steps as the epoch (no data path, no GNN encoder, no optimizer).
The table gives the training steps' time (``train s``) and the whole ``fit`` (``epoch s``: also the untrained
prior's validation, the epoch's validation and the test evaluation) against that floor, and the fit with the
trainer's setup before it (``setup s``: the split, the control means, every condition's mean -- one pass over
the data that the evaluations then reuse -- and the model; ``+setup/floor``), so work moved from the fit into
the setup still shows.

Out-of-core (issue: genome-wide screens): ``--backed`` writes the same synthetic counts once to an ``.h5ad``
(anndata's on-disk CSR, raw counts, written in blocks of 20,000 rows: the whole matrix is never in memory;
cached in ``--cache``, reused when present) and trains on it read backed (``load_h5ad(backed="yes")``: rows are
read from disk and normalised as each batch or pass needs them); ``--source file`` reads that file into memory
instead (same numbers). Targets: a 2M-cell x 8k-gene screen trains one epoch with peak RSS < 8 GB on 2 cores,
its time linear in the cells from 160k (within 20 %). The table adds the data source and the load time.

Usage::

    .venv/bin/python benchmarks/bench_train.py            # both settings, prints a table
    .venv/bin/python benchmarks/bench_train.py --cells 20000   # quicker look
    .venv/bin/python benchmarks/bench_train.py --cells 20000 --settings cells --profile /tmp/prof
        # also writes /tmp/prof/cells.pstats (cProfile of the child) and prints its top entries
    .venv/bin/python benchmarks/bench_train.py --cells 2000000 --genes 8000 --settings cells --backed
        # genome-wide scale from disk (the file, ~9 GB at 8.5 % density, is written on the first run)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SETTINGS = {
    "cells": dict(control_mode="batch", basal="mlp", aggregate=False),
    "aggregated": dict(control_mode="mean", basal="none", aggregate=True, min_steps_per_epoch=1),
}


def _draws(n_cells: int, n_genes: int, n_perts: int, seed: int = 0):
    """``(labels, batch, blocks)`` of the synthetic screen: per-cell labels (10 % ``ctrl``) and batches (48), and a
    generator of its raw counts as CSR blocks of 20,000 rows (``k = 8.5 %`` of the genes drawn per cell by a
    Dirichlet popularity, values Poisson(1.5) + 1, duplicates summed), all from one seeded stream."""
    rng = np.random.default_rng(seed)
    k = max(1, int(0.085 * n_genes))
    labels = np.where(rng.random(n_cells) < 0.1, "ctrl", np.char.add("G", rng.integers(0, n_perts, n_cells).astype(str)))
    batch = np.char.add("b", rng.integers(0, 48, n_cells).astype(str))
    popularity = rng.dirichlet(np.full(n_genes, 0.3))

    def blocks():
        for lo in range(0, n_cells, 20_000):
            m = min(20_000, n_cells - lo)
            cols = rng.choice(n_genes, size=(m, k), p=popularity)
            vals = (rng.poisson(1.5, size=(m, k)) + 1).astype(np.float32)
            X = sp.csr_matrix((vals.ravel(), cols.ravel(), np.arange(0, m * k + 1, k)), shape=(m, n_genes))
            X.sum_duplicates()
            yield X

    return labels, batch, blocks()


def make_data(n_cells: int, n_genes: int, n_perts: int, seed: int = 0):
    """Sparse synthetic counts built directly in CSR (no dense n x G matrix at any point)."""
    from txpert_head.data.perturb_data import PerturbData, normalize_counts

    labels, batch, blocks = _draws(n_cells, n_genes, n_perts, seed)
    chunks = list(blocks)
    X = normalize_counts(sp.vstack(chunks, format="csr"))
    return PerturbData(X, [f"G{i}" for i in range(n_genes)], labels, np.full(n_cells, "k562"), batch,
                       source="<bench>", normalized_here=True)


def bench_file(cache: Path, n_cells: int, n_genes: int, n_perts: int, seed: int = 0) -> Path:
    """The synthetic screen of :func:`make_data` (same draws, same cells) as raw counts in an ``.h5ad`` in
    ``cache``, written once in blocks of 20,000 rows (never the whole matrix in memory) and reused: obs columns
    ``perturbation`` / ``batch``, X in anndata's on-disk CSR layout (float32 data, int32 indices, int64 indptr)."""
    import anndata
    import h5py
    import pandas as pd

    from kgbuild.atomic import atomic_path

    path = Path(cache) / f"screen_{n_cells}x{n_genes}_p{n_perts}_s{seed}.h5ad"
    if path.exists():
        return path
    labels, batch, blocks = _draws(n_cells, n_genes, n_perts, seed)
    obs = pd.DataFrame({"perturbation": pd.Categorical(labels), "batch": pd.Categorical(batch)},
                       index=pd.Index([f"c{i}" for i in range(n_cells)]))
    del labels, batch
    with atomic_path(path) as tmp:
        anndata.AnnData(obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(n_genes)])).write_h5ad(tmp)
        with h5py.File(tmp, "a") as f:
            if "X" in f:
                del f["X"]
            g = f.create_group("X")
            g.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": (n_cells, n_genes)})
            chunk = 1 << 20
            data = g.create_dataset("data", (0,), dtype=np.float32, maxshape=(None,), chunks=(chunk,))
            indices = g.create_dataset("indices", (0,), dtype=np.int32, maxshape=(None,), chunks=(chunk,))
            indptr = np.zeros(n_cells + 1, dtype=np.int64)
            nnz = 0
            lo = 0
            for X in blocks:
                m = X.shape[0]
                data.resize((nnz + X.nnz,))
                indices.resize((nnz + X.nnz,))
                data[nnz:] = X.data
                indices[nnz:] = X.indices.astype(np.int32)
                indptr[lo + 1:lo + m + 1] = nnz + X.indptr[1:]
                nnz += X.nnz
                lo += m
            g.create_dataset("indptr", data=indptr)
    with h5py.File(path, "r") as f:  # anndata reads it (backed: the matrix stays on disk)
        ad = anndata.read_h5ad(path, backed="r")
        assert ad.shape == (n_cells, n_genes) and f["X"]["data"].shape[0] == nnz
        ad.file.close()
    return path


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def mlp_floor(model, sizes: list[int], n_genes: int, seed: int = 0) -> float:
    """Seconds for forward + backward of copies of ``model``'s basal and decoder MLPs on random dense
    batches of the given sizes (one step per size): the arithmetic floor of a training epoch."""
    import copy

    import torch

    basal = copy.deepcopy(model.basal) if model.basal is not None else None
    decoder = copy.deepcopy(model.decoder)
    for m in (basal, decoder):
        if m is not None:
            m.train()
            for p in m.parameters():
                p.requires_grad_(True)
    gen = torch.Generator().manual_seed(seed)
    d = decoder[0].in_features
    batches = [(torch.rand(b, n_genes, generator=gen), torch.rand(b, d, generator=gen),
                torch.rand(b, n_genes, generator=gen)) for b in sorted(set(sizes))]
    by_size = {len(x): (x, z, y) for x, z, y in batches}
    t0 = time.perf_counter()
    for b in sizes:
        x, z, y = by_size[b]
        pred = decoder(basal(x) + z) if basal is not None else x + decoder(z)
        loss = ((pred - y) ** 2).mean()
        for m in (basal, decoder):
            if m is not None:
                m.zero_grad(set_to_none=True)
        loss.backward()
    return time.perf_counter() - t0


def child(args) -> dict:
    import torch

    from txpert_head.data.splits import make_split
    from txpert_head.simulate.fixtures import synthetic_graph
    from txpert_head.training.config import TrainConfig
    from txpert_head.training.trainer import Trainer

    if args.allocator == "keep":   # as every txpert entry point does
        from txpert_head.training.allocator import keep_freed_memory

        keep_freed_memory()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.source == "memory":
        data = make_data(args.cells, args.genes, args.perts)
    else:
        from txpert_head.data.perturb_data import load_h5ad

        path = bench_file(Path(args.cache), args.cells, args.genes, args.perts)
        t0 = time.perf_counter()  # the file is written once and cached: time the read only
        data = load_h5ad(path, "perturbation", batch_col="batch", backed="yes" if args.source == "backed" else "no",
                         memory_budget=args.memory_budget)
    graph = synthetic_graph(args.graph_nodes, degree=10, seed=0)
    t_data = time.perf_counter() - t0
    mem_data = peak_rss_gb()
    t_setup = time.perf_counter()
    split = make_split(data, "unseen_single", seed=0)
    cfg = TrainConfig(epochs=1, batch_size=256, progress=args.progress, encoder_dim=64, hidden=256,
                      checkpoint_every=0, eval_cells=64, **SETTINGS[args.setting])
    trainer = Trainer(data, graph, split, cfg, None)
    t_setup = time.perf_counter() - t_setup
    stamps: list[float] = []
    # long runs: a progress line every 200 steps in the cache folder (the parent prints only at the end)
    progress_log = Path(args.cache) / f"progress_{args.setting}_{args.cells}x{args.genes}_{args.source}.log"
    progress_log.parent.mkdir(parents=True, exist_ok=True)
    progress_log.write_text(f"{args.cells} cells, {trainer.steps_per_epoch} steps; load {t_data:.1f} s, "
                            f"peak after load {mem_data:.2f} GB\n")

    def on_step(epoch: int, step: int) -> None:
        stamps.append(time.perf_counter())
        if len(stamps) % 200 == 0:
            with progress_log.open("a") as fh:
                fh.write(f"{len(stamps)} steps, {stamps[-1] - t1:.0f} s, peak RSS {peak_rss_gb():.2f} GB\n")

    t1 = time.perf_counter()
    trainer.fit(resume=False, on_step=on_step)
    t_epoch = time.perf_counter() - t1
    steps = len(stamps)
    train_s = (stamps[-1] - stamps[0]) * steps / max(steps - 1, 1) if steps > 1 else t_epoch
    peak = peak_rss_gb()
    order = trainer.epoch_order(0)
    sizes = [len(trainer.step_items(order, s)) for s in range(steps)]
    floor_s = mlp_floor(trainer.model, sizes, data.n_genes)
    return {"setting": args.setting, "source": args.source, "cells": int(len(trainer.train_rows)), "nnz": int(data.X.nnz),
            "steps": steps, "data_s": t_data, "setup_s": t_setup, "train_s": train_s, "epoch_s": t_epoch,
            "floor_s": floor_s, "cells_per_s": len(trainer.train_rows) / train_s, "peak_gb_data": mem_data, "peak_gb": peak}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=160_000)
    ap.add_argument("--genes", type=int, default=5_000)
    ap.add_argument("--perts", type=int, default=2_000)
    ap.add_argument("--graph-nodes", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS))
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    ap.add_argument("--profile", metavar="DIR", help="cProfile each child into DIR/<setting>.pstats and print "
                    "its top entries by cumulative time")
    ap.add_argument("--source", choices=["memory", "file", "backed"], default="memory",
                    help="memory: generated in the process (default); file: the cached .h5ad read into memory; "
                         "backed: the cached .h5ad read from disk by rows")
    ap.add_argument("--backed", dest="source", action="store_const", const="backed", help="same as --source backed")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "txpert-kg" / "bench"),
                    help="folder of the synthetic .h5ad files (written once, reused; default %(default)s)")
    ap.add_argument("--memory-budget", default=None, help="memory budget of load_h5ad (e.g. 4GB; default its default)")
    ap.add_argument("--allocator", choices=["keep", "default"], default="keep",
                    help="keep: freed memory kept in the process, as the txpert command and API set it (default); "
                         "default: malloc's defaults")
    ap.add_argument("--setting", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.setting:
        print(json.dumps(child(args)))
        return 0
    results = []
    if args.source != "memory":  # write the file once, outside the timed children
        t0 = time.perf_counter()
        path = bench_file(Path(args.cache), args.cells, args.genes, args.perts)
        print(f"data file {path} ({path.stat().st_size / 1024**3:.2f} GB; ready in {time.perf_counter() - t0:.0f} s)")
    for setting in args.settings:
        prof = []
        if args.profile:
            Path(args.profile).mkdir(parents=True, exist_ok=True)
            prof = ["-m", "cProfile", "-o", str(Path(args.profile) / f"{setting}.pstats")]
        cmd = [sys.executable, *prof, __file__, "--setting", setting, "--cells", str(args.cells), "--genes", str(args.genes),
               "--perts", str(args.perts), "--graph-nodes", str(args.graph_nodes), "--threads", str(args.threads),
               "--source", args.source, "--cache", args.cache, "--allocator", args.allocator]
        if args.memory_budget:
            cmd += ["--memory-budget", args.memory_budget]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    if args.profile:
        import pstats

        for setting in args.settings:
            print(f"--- cProfile of {setting} (top 25 by cumulative time)")
            pstats.Stats(str(Path(args.profile) / f"{setting}.pstats")).sort_stats("cumulative").print_stats(25)
    print(f"{args.cells:,} cells x {args.genes:,} genes (sparse, {results[0]['nnz']:,} non-zero), "
          f"{args.perts:,} perturbations, graph {args.graph_nodes:,} nodes, {args.threads} thread(s), "
          f"data: {args.source}, allocator: {'freed memory kept (as txpert runs)' if args.allocator == 'keep' else 'malloc defaults'}")
    print(f"{'setting':<12}{'train cells':>12}{'steps':>7}{'load s':>8}{'setup s':>9}{'train s':>9}"
          f"{'epoch s (+eval)':>17}{'floor s':>9}{'train/floor':>13}{'epoch/floor':>13}{'+setup/floor':>14}"
          f"{'cells/s':>10}{'peak GB':>9}{'  (data only)':>13}")
    for r in results:
        setup = r["setup_s"]
        print(f"{r['setting']:<12}{r['cells']:>12,}{r['steps']:>7}{r['data_s']:>8.1f}{setup:>9.1f}{r['train_s']:>9.1f}"
              f"{r['epoch_s']:>17.1f}{r['floor_s']:>9.1f}{r['train_s'] / r['floor_s']:>13.2f}"
              f"{r['epoch_s'] / r['floor_s']:>13.2f}{(setup + r['epoch_s']) / r['floor_s']:>14.2f}"
              f"{r['cells_per_s']:>10.0f}{r['peak_gb']:>9.2f}{r['peak_gb_data']:>13.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    if len(results) == 2:
        print(f"epoch time ratio cells / aggregated: {results[0]['epoch_s'] / results[1]['epoch_s']:.1f}x")
    print("targets: one epoch < 600 s, peak memory < 8 GB; cell level: epoch <= 3x the bare-MLP floor "
          "(floor: forward + backward of the basal/decoder MLP shapes on random dense batches, same steps)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
