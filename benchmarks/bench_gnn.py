"""Forward+backward time and peak memory of every gnn encoder, per backend, beside a stack of PyG's GATv2Conv.

One command prints the whole table::

    .venv/bin/python benchmarks/bench_gnn.py                      # STRING-sized: 10k nodes, 200k edges
    .venv/bin/python benchmarks/bench_gnn.py --nodes 2000 --edges 20000 --kinds gatv2,gat-mlg   # quick

Every (encoder, backend, environment) cell runs in a subprocess of its own, so its peak resident memory
(``ru_maxrss``) is its own. Cells:

* ``pyg`` in the main environment (this interpreter, torch 2.13) — and the reference ``PyG GATv2Conv``
  stack: the same blocks as our ``gatv2`` encoder (embedding, LayerNorm(h + ELU(conv(h))), same edges incl.
  self loops, edge weight as a 1-d edge feature) with ``torch_geometric.nn.GATv2Conv`` as the conv;
* ``pyg`` and ``dgl`` in the DGL environment (``--dgl-python``, default ``.venv-dgl/bin/python``; built by
  ``.ci/dgl_env.sh``; torch 2.2.1), so the DGL-vs-PyG ratio compares kernels under one torch version.

Then paired runs (two models in one process, steps alternated, so load from other processes hits both
alike) give the two target ratios: our gatv2 on the PyG backend / the PyG GATv2Conv stack, and the PyG
backend / the DGL backend for gatv2 (both in the DGL environment).

The synthetic graph: ``--graph-layers`` layers of uniformly random distinct directed edges (``--edges`` in
all), weights U(0.1, 1), seeded. Times are the median of ``--repeats`` steps after ``--warmup`` steps.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KINDS = ["gat", "gatv2", "exphormer", "exphormer-mg", "gat-hybrid", "gat-mlg", "hybrid-bmp"]
REFERENCE = "pyg-GATv2Conv"


def synthetic_graph(n_nodes: int, n_edges: int, n_layers: int, seed: int):
    """``n_layers`` layers of random distinct directed edges (no self loops), ``n_edges`` in all."""
    import numpy as np

    from kgbuild.graph import MultiGraph

    rng = np.random.default_rng(seed)
    names = np.asarray([f"G{i:05d}" for i in range(n_nodes)])
    graphs = []
    per = [n_edges // n_layers + (k < n_edges % n_layers) for k in range(n_layers)]
    for k, m in enumerate(per):
        codes = np.unique(rng.integers(0, n_nodes, size=(int(m * 1.1) + 10, 2)) @ np.array([n_nodes, 1]))
        src, dst = np.divmod(rng.permutation(codes), n_nodes)
        keep = src != dst
        src, dst = src[keep][:m], dst[keep][:m]
        graphs.append(MultiGraph.from_edges(f"layer{k}", names[src], names[dst], rng.uniform(0.1, 1.0, len(src)),
                                            nodes=names))
    return MultiGraph.merge(graphs)


def reference_model(graph, dim: int, layers: int, heads: int):
    """Our ``gatv2`` body with PyG's own ``GATv2Conv`` in every block (same edges, features, blocks)."""
    import torch
    from torch import nn
    from torch_geometric.nn import GATv2Conv

    from gnn.kinds.single import GATBody
    from gnn.kinds.spec import EncoderSpec
    from gnn.layers.blocks import ConvBlock

    class PyGConv(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = GATv2Conv(dim, dim // heads, heads=heads, edge_dim=1, add_self_loops=False)

        def forward(self, x, ops, edge_attr):
            return self.conv(x, torch.stack([ops.src, ops.dst]), edge_attr=edge_attr)

    spec = EncoderSpec(graph=graph, num_nodes=graph.num_nodes, dim=dim, layers=layers, heads=heads,
                       dropout=0.0, use_edge_weight=True)
    body = GATBody(spec, conv="gatv2")
    body.blocks = nn.ModuleList(ConvBlock(PyGConv(), dim, 0.0) for _ in range(layers))
    emb = nn.Embedding(graph.num_nodes, dim)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.body = emb, body

        def forward(self):
            from gnn.backends import get_backend

            return self.body(self.emb.weight, get_backend("pyg"))

    return Model()


def vm_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build_model(graph, kind: str, backend: str, args):
    import torch

    torch.manual_seed(0)
    if kind == REFERENCE:
        return reference_model(graph, args.dim, args.layers, args.heads)
    from gnn import PerturbationEncoder

    return PerturbationEncoder(graph, kind=kind, dim=args.dim, layers=args.layers, heads=args.heads, backend=backend)


def step_seconds(model, target) -> float:
    """One forward+backward step; wall seconds."""
    model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    loss = ((model() - target) ** 2).mean()
    loss.backward()
    return time.perf_counter() - t0


def pair_worker(args) -> None:
    """Two models in one process, steps alternated, so machine load hits both alike: median time of each."""
    import torch

    torch.set_num_threads(args.threads)
    graph = synthetic_graph(args.nodes, args.edges, args.graph_layers, args.seed)
    specs = [tuple(part.split(":")) for part in args.pair.split(",")]
    models = [build_model(graph, kind, backend, args) for kind, backend in specs]
    target = torch.randn(graph.num_nodes, args.dim, generator=torch.Generator().manual_seed(1))
    times: list[list[float]] = [[] for _ in models]
    for step in range(args.warmup + args.repeats):
        for k, model in enumerate(models):
            dt = step_seconds(model, target)
            if step >= args.warmup:
                times[k].append(dt)
    print(json.dumps({"pair": args.pair, "seconds": [statistics.median(t) for t in times]}))


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    graph = synthetic_graph(args.nodes, args.edges, args.graph_layers, args.seed)
    model = build_model(graph, args.kind, args.backend, args)
    target = torch.randn(graph.num_nodes, args.dim, generator=torch.Generator().manual_seed(1))
    base_mb = vm_rss_mb()
    times = []
    for step in range(args.warmup + args.repeats):
        dt = step_seconds(model, target)
        if step >= args.warmup:
            times.append(dt)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"kind": args.kind, "backend": args.backend, "torch": torch.__version__,
                      "seconds": statistics.median(times), "peak_mb": peak_mb, "step_mb": peak_mb - base_mb,
                      "edges": int(graph.num_edges)}))


def run_cell(python: str, kind: str, backend: str, args, pair: str | None = None) -> dict | None:
    what = ["--pair", pair] if pair else ["--kind", kind, "--backend", backend]
    cmd = [python, str(Path(__file__).resolve()), "--worker", *what,
           "--nodes", str(args.nodes), "--edges", str(args.edges), "--layers", str(args.layers),
           "--dim", str(args.dim), "--heads", str(args.heads), "--graph-layers", str(args.graph_layers),
           "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--threads", str(args.threads),
           "--seed", str(args.seed)]
    env = dict(os.environ, DGLBACKEND="pytorch", PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print(f"  {pair or kind + '/' + backend} with {python} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=10_000)
    p.add_argument("--edges", type=int, default=200_000)
    p.add_argument("--graph-layers", type=int, default=3, help="edge layers of the synthetic multigraph")
    p.add_argument("--layers", type=int, default=4, help="message-passing layers")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 2))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated encoder kinds")
    p.add_argument("--dgl-python", default=str(REPO / ".venv-dgl" / "bin" / "python"),
                   help="interpreter of the DGL environment ('' to skip the DGL columns)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--kind", help=argparse.SUPPRESS)
    p.add_argument("--backend", default="pyg", help=argparse.SUPPRESS)
    p.add_argument("--pair", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        pair_worker(args) if args.pair else worker(args)
        return 0

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        p.error(f"unknown kind(s) {unknown}; choose from {KINDS}")
    have_dgl = bool(args.dgl_python) and Path(args.dgl_python).exists()
    columns = [("main", sys.executable, "pyg")]
    if have_dgl:
        columns += [("dgl-env", args.dgl_python, "pyg"), ("dgl-env", args.dgl_python, "dgl")]
    else:
        print(f"note: no DGL environment at {args.dgl_python!r} (build it with .ci/dgl_env.sh); DGL columns skipped")
    print(f"graph: {args.nodes:,} nodes, {args.edges:,} edges in {args.graph_layers} layers; {args.layers} layers, "
          f"hidden {args.dim}, {args.heads} heads; {args.threads} thread(s); median of {args.repeats} forward+backward steps")
    rows = [REFERENCE] + kinds
    results: dict[tuple[str, str, str], dict | None] = {}
    for kind in rows:
        for env, python, backend in columns:
            if kind == REFERENCE and backend == "dgl":
                continue
            print(f"  running {kind:<14} {backend:<4} in {env} ...", file=sys.stderr, flush=True)
            results[(kind, env, backend)] = run_cell(python, kind, backend, args)

    def cell(kind, env, backend):
        r = results.get((kind, env, backend))
        return f"{r['seconds']:8.3f} s {r['peak_mb']:7.0f} MB" if r else f"{'-':>20}"

    heads = [f"{b} ({e}, torch {next((r['torch'] for (k, e2, b2), r in results.items() if r and e2 == e), '?')})"
             for e, _, b in columns]
    print()
    w = max(26, *(len(h) + 2 for h in heads))
    print(f"{'encoder':<15}" + "".join(f"{h:>{w}}" for h in heads) + "   ratios (separate processes)")
    for kind in rows:
        line = f"{kind:<15}" + "".join(f"{cell(kind, e, b):>{w}}" for e, _, b in columns)
        notes = []
        ref = results.get((REFERENCE, "main", "pyg"))
        mine = results.get((kind, "main", "pyg"))
        if kind == "gatv2" and ref and mine:
            notes.append(f"ours/PyG-GATv2Conv (main) = {mine['seconds'] / ref['seconds']:.2f}")
        ref2, mine2 = results.get((REFERENCE, "dgl-env", "pyg")), results.get((kind, "dgl-env", "pyg"))
        if kind == "gatv2" and ref2 and mine2:
            notes.append(f"(dgl-env) {mine2['seconds'] / ref2['seconds']:.2f}")
        pyg2, dgl2 = results.get((kind, "dgl-env", "pyg")), results.get((kind, "dgl-env", "dgl"))
        if pyg2 and dgl2:
            notes.append(f"pyg/dgl speed-up = {pyg2['seconds'] / dgl2['seconds']:.2f}x")
        print(line + "   " + "; ".join(notes))
    # paired runs: both models in one process, steps alternated (robust to load from other processes)
    pairs = [("main", sys.executable, f"{REFERENCE}:pyg,gatv2:pyg",
              "our gatv2 (pyg backend) / PyG GATv2Conv stack, main env")]
    if have_dgl:
        pairs += [("dgl-env", args.dgl_python, f"{REFERENCE}:pyg,gatv2:pyg",
                   "our gatv2 (pyg backend) / PyG GATv2Conv stack, dgl env"),
                  ("dgl-env", args.dgl_python, "gatv2:pyg,gatv2:dgl", "gatv2 pyg backend / dgl backend = DGL speed-up")]
    print()
    print("paired (alternating steps in one process):")
    for env, python, pair, label in pairs:
        print(f"  running pair {pair} in {env} ...", file=sys.stderr, flush=True)
        r = run_cell(python, "", "", args, pair=pair)
        results[("pair", env, pair)] = r
        if r:
            a, b = r["seconds"]
            print(f"  {label}: {b:.3f} s / {a:.3f} s = {b / a:.2f}" if "speed-up" not in label
                  else f"  {label}: {a:.3f} s / {b:.3f} s = {a / b:.2f}x")
    failed = [k for k, r in results.items() if r is None]
    if failed:
        print(f"failed cells: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
