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

The graph: a ``*.kg.npz`` multigraph file (``--graph``, loaded with :func:`kgbuild.graph.load_graph`), or
the synthetic graph: ``--graph-layers`` layers of uniformly random distinct directed edges (``--edges`` in
all), weights U(0.1, 1), seeded. Times are the median of ``--repeats`` steps after ``--warmup`` steps.

Memory-traffic floor, printed beside every measured time with the ratio measured / floor. A message-passing
layer moves at least one ``dim``-wide float32 message per edge from its source row to its target row, forward
and backward. Counted per layer and per edge set the encoder passes messages over (``E_s`` edges incl. self
loops / expander / coupling edges, ``N_s`` nodes; every :class:`gnn.edges.EdgeSet` is used once per layer):

* edges: ``4 * (4 * E_s * dim)`` bytes -- forward the gather writes the ``(E_s, dim)`` messages and the
  scatter reads them; backward the gradient messages are written and read again;
* nodes: ``4 * (4 * N_s * dim)`` bytes -- forward read ``h`` and write the output, backward read the output
  gradient and write the input gradient.

``floor_bytes = layers * sum_s (16 * E_s * dim + 16 * N_s * dim)`` and ``floor_s = floor_bytes / B``, where
``B`` is the streaming memory bandwidth measured in the same process (after the timed steps): the median
over 5 copies of a float32 tensor of ``max_s E_s * dim`` elements (at least 2**24: 64 MiB, beyond the caches)
into another (``B = 2 * bytes / seconds``, read + write), with the same thread count. On the 2-core AMD Zen 5
VMs here ``B`` reads about 36-45 GB/s in most processes and 66-72 GB/s in some, so a ratio can move by up to 2x
with it; on a 2-core AMD Zen 3 VM (AVX2 only) it read 16-25 GB/s in most processes and 28-37 GB/s in some, and
the same passes took 2-3x as long as on Zen 5 (the kernels' arithmetic and the dense products run at AVX2's
width there, so their time does not fall with the floor's: on Zen 3 ``gat-hybrid`` took 0.26-0.28 s in three
runs whose ratios read 2.8x, 3.1x and 4.5x). The table prints ``B`` beside every floor.

The single reading of ``B`` is taken once, after the steps. Every main-environment cell therefore also runs
``--repeats`` more rounds of one step followed by one timed copy of the same buffers (:func:`side_by_side`) and
prints ``median(step) * median(B_round) / floor_bytes`` with the rounds' own quartiles, and the "best" ratio
``min(step) * max(B_round) / floor_bytes`` (each side at its least disturbed; the fastest copy makes it the
strictest of the three). None of the three is steady on a noisy 2-core VM: on an AMD Zen 4 VM (AVX-512), three
runs of the merged real graph read ``B`` at 25-51 GB/s and the same passes up to 1.6x apart (``gat`` 0.079-0.126
s, ``gat-hybrid`` 0.25-0.32 s); ``gat-hybrid`` read 4.1-5.0x separately, 3.7-6.0x side by side and 5.5x best,
``gat`` 1.4-1.9x, 1.5-2.9x and 2.6x. Two runs on that machine after the GATv2 kernels' record layout and
``gat-mlg``'s factored first block read ``gat-mlg`` at 0.285 and 0.316 s (2.8x and 3.8x separately, 3.3x and
4.7x side by side, 3.8x and 5.0x best; it had read 0.31-0.41 s and up to 6.2x), while the same runs put the
PyG GATv2Conv stack, whose code did not change, at 5.5 and 5.6 s against 3.7 s the day before. Compare runs,
not single cells. The floor ignores
attention scores, edge weights, the ``(E, H, C)`` tensors of GATv2 and all arithmetic -- e.g. the dense
projections and feed-forward layers of Exphormer, ``O(N dim^2)`` flops that are compute-bound on a CPU --
so ``measured / floor`` is how far a pass is from only moving its messages. That arithmetic is measured
beside it: every dense matrix product one step runs (``mm`` / ``addmm`` on strided tensors, forward and
backward: the linear layers), replayed alone on inputs of the same shapes in the same process, printed as
"dense matrix products alone" with its rate and its ratio to the floor -- the part of a pass no sparse kernel
can remove (on AMD processors MKL's default rate is about half its best: docs/training-and-evaluation.md,
"Speed on the CPU"). ``benchmarks/bench_attention.py`` does the same for the other large part, the fused
Exphormer attention, against the row gathers it cannot avoid. The fused attention kernels' own time is
printed too (:func:`kernel_seconds`: every call into :mod:`gnn.backends.fused_attention`'s C kernels timed
around it, forward and both backward passes, median over ``--repeats`` steps), with the sum "with the dense
products": what a pass costs before any elementwise work, Python or autograd. On the Zen 4 VM, one run of the
merged real graph read that sum at 3.0x the floor for ``exphormer``, 4.7x for ``exphormer-mg`` (a process
whose ``B`` read 45.8 GB/s), 4.3x for ``gat-hybrid`` and 2.4x for ``gat-mlg`` (0.7x ``gat``, 1.7x ``gatv2``,
1.5x ``hybrid-bmp``): for the first three, the kernels and products alone already reach the 3x that the
issue on genome-scale training asks of a whole pass, at the floor this benchmark measures.

The merged real graph (STRING + GO + Reactome + DepMap: about 21,000 nodes and 850,000 edges in 4 layers), the size
the issue on genome-scale training measures at (``gat`` / ``exphormer-mg``, dim 64, 2 layers, PyG; the file
is ``kgbuild merge`` of the four layer files, as ``tests/test_gnn_real.py`` builds them)::

    .venv/bin/python benchmarks/bench_gnn.py --graph multi.kg.npz --dim 64 --layers 2 --kinds gat,exphormer-mg --dgl-python '' \
        --repeats 15 --warmup 3   # the median of 3 steps (the default) moves by 30 % from run to run here
    .venv/bin/python benchmarks/bench_gnn.py --nodes 21541 --edges 834892 --graph-layers 4 --dim 64 --layers 2 \
        --kinds gat,exphormer-mg --dgl-python ''     # synthetic graph of the same size
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


def load_or_make_graph(args):
    """The ``--graph`` file when given, else the seeded synthetic graph."""
    if args.graph:
        from kgbuild.graph import load_graph

        return load_graph(args.graph)
    return synthetic_graph(args.nodes, args.edges, args.graph_layers, args.seed)


def edge_sets(model) -> list[tuple[int, int]]:
    """``(E_s, N_s)`` of every edge set the model passes messages over (each used once per layer)."""
    from gnn.edges import EdgeSet

    return [(m.num_edges, m.num_nodes) for m in model.modules() if isinstance(m, EdgeSet)]


def copy_buffers(numel: int):
    """Two float32 tensors of ``max(numel, 2**24)`` elements (64 MiB at least: beyond the caches), both touched."""
    import torch

    a = torch.rand(max(numel, 1 << 24))
    b = torch.empty_like(a)
    b.copy_(a)  # first touch
    return a, b


def copy_bandwidth(a, b) -> float:
    """Bytes per second of one copy of ``a`` into ``b`` (read + write counted)."""
    t0 = time.perf_counter()
    b.copy_(a)
    return 2 * a.numel() * a.element_size() / (time.perf_counter() - t0)


def stream_bandwidth(numel: int, repeats: int = 5) -> float:
    """Bytes per second of a float32 copy of ``numel`` elements (read + write counted), median of ``repeats``."""
    a, b = copy_buffers(numel)
    return statistics.median(copy_bandwidth(a, b) for _ in range(repeats))


def traffic_floor(model, layers: int, dim: int) -> dict:
    """The memory-traffic floor of one forward+backward pass (module docstring): bytes, bandwidth, seconds."""
    sets = edge_sets(model)
    floor_bytes = layers * sum(16 * e * dim + 16 * n * dim for e, n in sets)
    bandwidth = stream_bandwidth(copy_numel(model, dim))
    return {"floor_bytes": floor_bytes, "bandwidth": bandwidth, "floor_s": floor_bytes / bandwidth,
            "mp_edges": sum(e for e, _ in sets)}


def copy_numel(model, dim: int) -> int:
    """Elements of the bandwidth copy: the largest edge set's ``(E_s, dim)`` messages (:func:`copy_buffers`
    makes it at least 2**24)."""
    return max((e for e, _ in edge_sets(model)), default=0) * dim


def side_by_side(model, target, floor_bytes: int, dim: int, rounds: int) -> dict:
    """The ratio pass / floor measured side by side: ``rounds`` rounds of one forward+backward step followed by
    one timed copy (:func:`copy_buffers`, allocated once), so the host's load over the run hits
    steps and copies alike. ``ratio = median(step_s) * median(B_round) / floor_bytes`` with
    ``B_round = 2 * bytes / copy_s``; ``ratio_q1``, ``ratio_q3``: the quartiles of the rounds' own ratios
    ``step_s * B_round / floor_bytes`` (one copy is short, so a round's ratio is noisier than the medians');
    ``ratio_best = min(step_s) * max(B_round) / floor_bytes``: each side at its least disturbed (load from other
    processes only slows both, so the fastest step and the fastest copy are the nearest to a quiet machine's)."""
    a, b = copy_buffers(copy_numel(model, dim))
    steps, bandwidths = [], []
    for _ in range(rounds):
        steps.append(step_seconds(model, target))
        bandwidths.append(copy_bandwidth(a, b))
    per_round = [s * bw / floor_bytes for s, bw in zip(steps, bandwidths)]
    q1, _, q3 = statistics.quantiles(per_round, n=4) if rounds > 1 else per_round * 3
    step, bandwidth = statistics.median(steps), statistics.median(bandwidths)
    best_step, best_bandwidth = min(steps), max(bandwidths)
    return {"ratio": step * bandwidth / floor_bytes, "ratio_q1": q1, "ratio_q3": q3, "round_seconds": step,
            "round_bandwidth": bandwidth, "ratio_best": best_step * best_bandwidth / floor_bytes,
            "best_seconds": best_step, "best_bandwidth": best_bandwidth}


def reference_model(graph, dim: int, layers: int, heads: int):
    """Our ``gatv2`` body with PyG's own ``GATv2Conv`` in every block (same edges, features, blocks)."""
    import torch
    from torch import nn
    from torch_geometric.nn import GATv2Conv

    from gnn.edges import TypedEdgeFeatures
    from gnn.kinds.single import GATBody
    from gnn.kinds.spec import EncoderSpec
    from gnn.layers.blocks import ConvBlock

    class PyGConv(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = GATv2Conv(dim, dim // heads, heads=heads, edge_dim=1, add_self_loops=False)

        def forward(self, x, ops, edge_attr):   # the body passes the features unassembled; PyG takes (E, F_e)
            dense = edge_attr.dense() if isinstance(edge_attr, TypedEdgeFeatures) else edge_attr
            return self.conv(x, torch.stack([ops.src, ops.dst]), edge_attr=dense)

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


def dense_seconds(model, target, repeats: int) -> tuple[float, float]:
    """The dense part of one step alone: every dense 2-D matrix product the step runs (``aten::mm``,
    ``aten::addmm`` and oneDNN's ``mkldnn::_linear_pointwise`` on strided tensors, forward and backward -- the
    linear layers, however a layer calls them; recorded with a dispatch mode), replayed on random inputs of the
    same shapes; median wall seconds of the replay and its GFLOP (``2 m k n`` summed)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    aten = torch.ops.aten
    from gnn.layers import linear

    onednn = getattr(linear._ROUTINE, "default", None)   # the routine the linear layer calls, when it has one
    calls = []

    def flop(func, shapes) -> int:
        if func is onednn:          # x (m, k) times w (n, k) transposed
            (m, k), (n, _) = shapes[0], shapes[1]
        else:                       # [bias,] a (m, k) @ b (k, n)
            (m, k), (_, n) = shapes[-2], shapes[-1]
        return 2 * m * k * n

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            if func in (aten.mm.default, aten.addmm.default, onednn) and all(t.layout == torch.strided for t in tensors):
                shapes = [tuple(t.shape) for t in tensors]
                template = [("tensor", tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else ("value", a)
                            for a in args]
                calls.append((func, template, flop(func, shapes)))
            return func(*args, **(kwargs or {}))

    with Record():
        step_seconds(model, target)
    gen = torch.Generator().manual_seed(2)
    replay = [(func, [torch.randn(a[1], generator=gen, dtype=a[2]) if a[0] == "tensor" else a[1] for a in template])
              for func, template, _ in calls]

    def run() -> float:
        t0 = time.perf_counter()
        for func, args in replay:
            func(*args)
        return time.perf_counter() - t0

    run()
    return statistics.median(run() for _ in range(repeats)), sum(f for _, _, f in calls) / 1e9


def kernel_seconds(model, target, repeats: int) -> float:
    """The fused attention kernels alone: wall seconds per step spent inside the C kernels of
    :mod:`gnn.backends.fused_attention` (each call of its ``_call`` timed around it: forward, and both backward
    passes), median over ``repeats`` steps; 0 when none runs (the DGL backend, no C compiler)."""
    from gnn.backends import fused_attention

    inner, spent = fused_attention._call, [0.0]

    def timed(*call_args) -> None:
        t0 = time.perf_counter()
        inner(*call_args)
        spent[0] += time.perf_counter() - t0

    fused_attention._call = timed
    try:
        per_step = []
        for _ in range(repeats):
            spent[0] = 0.0
            step_seconds(model, target)
            per_step.append(spent[0])
    finally:
        fused_attention._call = inner
    return statistics.median(per_step)


def pair_worker(args) -> None:
    """Two models in one process, steps alternated, so machine load hits both alike: median time of each."""
    import torch

    set_allocator(args)
    torch.set_num_threads(args.threads)
    graph = load_or_make_graph(args)
    specs = [tuple(part.split(":")) for part in args.pair.split(",")]
    models = [build_model(graph, kind, backend, args) for kind, backend in specs]
    target = torch.randn(graph.num_nodes, args.dim, generator=torch.Generator().manual_seed(1))
    times: list[list[float]] = [[] for _ in models]
    for step in range(args.warmup + args.repeats):
        for k, model in enumerate(models):
            dt = step_seconds(model, target)
            if step >= args.warmup:
                times[k].append(dt)
    floors = [traffic_floor(model, args.layers, args.dim)["floor_s"] for model in models]
    print(json.dumps({"pair": args.pair, "seconds": [statistics.median(t) for t in times], "floor_s": floors}))


def set_allocator(args) -> None:
    """``--allocator keep``: freed memory kept in the process, as every ``txpert`` entry point sets it
    (:mod:`txpert_head.training.allocator`); ``default``: malloc's defaults."""
    if args.allocator == "keep":
        from txpert_head.training.allocator import keep_freed_memory

        keep_freed_memory()


def worker(args) -> None:
    import torch

    set_allocator(args)
    torch.set_num_threads(args.threads)
    graph = load_or_make_graph(args)
    model = build_model(graph, args.kind, args.backend, args)
    target = torch.randn(graph.num_nodes, args.dim, generator=torch.Generator().manual_seed(1))
    base_mb = vm_rss_mb()
    times = []
    for step in range(args.warmup + args.repeats):
        dt = step_seconds(model, target)
        if step >= args.warmup:
            times.append(dt)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    floor = traffic_floor(model, args.layers, args.dim)  # after the peak is read: its copy buffers are not the model's
    paired = side_by_side(model, target, floor["floor_bytes"], args.dim, args.repeats)
    dense_s, dense_gflop = dense_seconds(model, target, args.repeats)
    kernel_s = kernel_seconds(model, target, args.repeats)
    print(json.dumps({"kind": args.kind, "backend": args.backend, "torch": torch.__version__,
                      "seconds": statistics.median(times), "peak_mb": peak_mb, "step_mb": peak_mb - base_mb,
                      "edges": int(graph.num_edges), "dense_s": dense_s, "dense_gflop": dense_gflop,
                      "kernel_s": kernel_s, **floor, **paired}))


def run_cell(python: str, kind: str, backend: str, args, pair: str | None = None) -> dict | None:
    what = ["--pair", pair] if pair else ["--kind", kind, "--backend", backend]
    cmd = [python, str(Path(__file__).resolve()), "--worker", *what,
           "--nodes", str(args.nodes), "--edges", str(args.edges), "--layers", str(args.layers),
           "--dim", str(args.dim), "--heads", str(args.heads), "--graph-layers", str(args.graph_layers),
           "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--threads", str(args.threads),
           "--seed", str(args.seed), "--allocator", args.allocator] + (["--graph", str(args.graph)] if args.graph else [])
    env = dict(os.environ, DGLBACKEND="pytorch", PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print(f"  {pair or kind + '/' + backend} with {python} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--graph", default="", help="a *.kg.npz multigraph file to run on instead of the synthetic graph")
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
    p.add_argument("--allocator", choices=["keep", "default"], default="keep",
                   help="keep: freed memory kept in the process, as the txpert command and API set it (default); "
                        "default: malloc's defaults (every step faults its large tensors in again)")
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
    if args.graph:
        from kgbuild.graph import load_graph

        g = load_graph(args.graph)
        where = f"{args.graph}: {g.num_nodes:,} nodes, {g.num_edges:,} edges in {len(g.layer_names)} layers"
    else:
        where = f"synthetic graph: {args.nodes:,} nodes, {args.edges:,} edges in {args.graph_layers} layers"
    print(f"{where}; {args.layers} layers, "
          f"hidden {args.dim}, {args.heads} heads; {args.threads} thread(s); median of {args.repeats} forward+backward steps; "
          f"allocator: {'freed memory kept, as txpert runs' if args.allocator == 'keep' else 'malloc defaults'}")
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
        if not r:
            return f"{'-':>28}"
        return f"{r['seconds']:8.3f} s {r['peak_mb']:7.0f} MB {r['seconds'] / r['floor_s']:5.1f}x"

    heads = [f"{b} ({e}, torch {next((r['torch'] for (k, e2, b2), r in results.items() if r and e2 == e), '?')})"
             for e, _, b in columns]
    print()
    w = max(32, *(len(h) + 2 for h in heads))

    def floor(kind):  # the floor measured in the main environment's process of this encoder
        r = results.get((kind, "main", "pyg")) or next((r for (k, _, _), r in results.items() if r and k == kind), None)
        return f"{r['floor_s']:7.3f} s {r['floor_bytes'] / 1e9:5.2f} GB {r['bandwidth'] / 1e9:5.1f} GB/s" if r else f"{'-':>30}"

    print("cells: median forward+backward seconds, peak RSS, measured / memory-traffic floor (see --help)")
    print(f"{'encoder':<15}" + "".join(f"{h:>{w}}" for h in heads) + f"{'floor (bytes / bandwidth)':>32}"
          + "   ratios (separate processes)")
    for kind in rows:
        line = f"{kind:<15}" + "".join(f"{cell(kind, e, b):>{w}}" for e, _, b in columns) + f"{floor(kind):>32}"
        notes = []
        ref = results.get((REFERENCE, "main", "pyg"))
        mine = results.get((kind, "main", "pyg"))
        if mine and "ratio" in mine:
            notes.append(f"side by side {mine['round_seconds']:.3f} s at B {mine['round_bandwidth'] / 1e9:.1f} GB/s = "
                         f"{mine['ratio']:.1f}x the floor (rounds' quartiles {mine['ratio_q1']:.1f}-{mine['ratio_q3']:.1f}x; "
                         f"best {mine['best_seconds']:.3f} s at {mine['best_bandwidth'] / 1e9:.1f} GB/s = "
                         f"{mine['ratio_best']:.1f}x)")
        if mine and mine.get("dense_gflop"):
            notes.append(f"dense matrix products alone {mine['dense_s']:.3f} s ({mine['dense_gflop']:.1f} GFLOP, "
                         f"{mine['dense_gflop'] / mine['dense_s']:.0f} GFLOP/s) = {mine['dense_s'] / mine['floor_s']:.1f}x the floor")
        if mine and mine.get("kernel_s"):
            kernels, floor_s = mine["kernel_s"], mine["floor_s"]
            notes.append(f"fused attention kernels alone {kernels:.3f} s = {kernels / floor_s:.1f}x the floor, "
                         f"with the dense products {(kernels + mine['dense_s']) / floor_s:.1f}x")
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
            fa, fb = r["floor_s"]
            print(f"  ({pair}: {a / fa:.1f}x and {b / fb:.1f}x their floors)")
            print(f"  {label}: {b:.3f} s / {a:.3f} s = {b / a:.2f}" if "speed-up" not in label
                  else f"  {label}: {a:.3f} s / {b:.3f} s = {a / b:.2f}x")
    failed = [k for k, r in results.items() if r is None]
    if failed:
        print(f"failed cells: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
