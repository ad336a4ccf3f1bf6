"""The fused Exphormer attention kernels against the row gathers no implementation of them can skip.

One attention layer (the first block's) of an ``exphormer`` / ``exphormer-mg`` encoder on a graph, PyG backend,
CPU, float32, everything in one process with the calls alternated (load from other processes hits every row
alike); medians of ``--repeats`` rounds after one warm-up round:

* ``layer, fused`` / ``layer, composed``: the whole :class:`~gnn.layers.attention_convs.ExphormerAttention`
  module (projections included), forward + backward, with the fused kernels and with
  ``TXPERT_FUSED_ATTENTION=0`` (the composed sparse primitives);
* ``fused forward`` / ``fused backward``: the kernels alone (:meth:`GraphOps.typed_dot_attention` and its
  backward, both passes);
* ``gather-sum yardstick``: torch's CSR sparse x dense product (MKL) over the same edges, on rows of
  ``2 H C`` floats: one gather of two ``H C``-wide rows per edge and their sum into the target row. Every
  kernel pass reads two gathered rows per edge -- forward ``k_j, v_j``; backward by target ``k_j, v_j``; by
  source ``q_i, g_i`` -- so the forward's floor is about one yardstick and the backward's about two.

The ratios are what the table is for: fused forward / yardstick and fused backward / (2 x yardstick) near 1
mean the kernels run at the speed of their gathers. The merged real graph (``kgbuild merge`` of the four
layers, as ``tests/test_gnn_real.py`` builds it)::

    .venv/bin/python benchmarks/bench_attention.py --graph multi.kg.npz
    .venv/bin/python benchmarks/bench_attention.py --nodes 21000 --edges 850000 --graph-layers 4   # synthetic
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--graph", default="", help="a *.kg.npz multigraph file (default: the synthetic graph)")
    p.add_argument("--nodes", type=int, default=21_000)
    p.add_argument("--edges", type=int, default=850_000)
    p.add_argument("--graph-layers", type=int, default=4, help="edge layers of the synthetic multigraph")
    p.add_argument("--kind", choices=["exphormer", "exphormer-mg"], default="exphormer-mg")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 2))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from bench_gnn import synthetic_graph
    from gnn import PerturbationEncoder
    from gnn.backends import get_backend
    from gnn.backends import fused_attention as fa
    from kgbuild.graph import load_graph

    torch.set_num_threads(args.threads)
    graph = load_graph(args.graph) if args.graph else synthetic_graph(args.nodes, args.edges, args.graph_layers,
                                                                        args.seed)
    torch.manual_seed(args.seed)
    model = PerturbationEncoder(graph, kind=args.kind, dim=args.dim, layers=1, heads=args.heads, backend="pyg")
    edges, backend = model.body.edges, get_backend("pyg")
    ops, feats = edges.ops(backend), model.body.edge_features.typed(edges, backend)
    attn = model.body.blocks[0].attn
    if fa.library() is None:
        print("the fused kernels could not be built here (see the warning); nothing to compare")
        return 1
    n, H, C = edges.num_nodes, attn.heads, attn.head_dim
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(n, args.dim, generator=gen, requires_grad=True)
    q, k, v = (torch.randn(n, H, C, generator=gen, requires_grad=True) for _ in range(3))
    grad_out = torch.randn(n, H, C, generator=gen)
    u, per_type = (t.detach() for t in attn._edge_projection(feats))

    index = fa.TypedAttentionIndex(ops.src, ops.dst, n, None, None)
    with warnings.catch_warnings():   # torch's "sparse CSR is in beta" notice
        warnings.simplefilter("ignore", UserWarning)
        adjacency = torch.sparse_csr_tensor(torch.from_numpy(index.indptr), torch.from_numpy(index.col.astype(np.int64)),
                                            torch.ones(index.num_edges), (n, n))
    rows = torch.randn(n, 2 * H * C, generator=gen)

    def layer(fused: bool) -> float:
        old = os.environ.get(fa.ENV_SWITCH)
        os.environ[fa.ENV_SWITCH] = "1" if fused else "0"
        try:
            t0 = time.perf_counter()
            attn(x, ops, feats).sum().backward()
            return time.perf_counter() - t0
        finally:
            if old is None:
                del os.environ[fa.ENV_SWITCH]
            else:
                os.environ[fa.ENV_SWITCH] = old

    def kernels() -> tuple[float, float]:
        t0 = time.perf_counter()
        out = ops.typed_dot_attention(q, k, v, u, per_type, feats.weight, feats.etype, attn.clamp)[0]
        t1 = time.perf_counter()
        out.backward(grad_out)
        return t1 - t0, time.perf_counter() - t1

    def gather() -> float:
        t0 = time.perf_counter()
        adjacency @ rows
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {key: [] for key in ("layer, fused", "layer, composed", "fused forward",
                                                         "fused backward", "gather-sum yardstick")}
    for step in range(args.repeats + 1):
        sample = {"layer, fused": layer(True), "layer, composed": layer(False)}
        sample["fused forward"], sample["fused backward"] = kernels()
        sample["gather-sum yardstick"] = gather()
        if step:
            for key, value in sample.items():
                times[key].append(value)
    ms = {key: statistics.median(value) * 1e3 for key, value in times.items()}
    where = args.graph or f"synthetic graph ({args.nodes:,} nodes, {args.edges:,} edges)"
    print(f"{where}: {args.kind}, attention over {index.num_edges:,} edges (incl. expander and self loops), "
          f"{n:,} nodes, {H} heads x {C}; {args.threads} thread(s); median of {args.repeats} alternated rounds")
    yard = ms["gather-sum yardstick"]
    notes = {"layer, fused": f"composed / fused = {ms['layer, composed'] / ms['layer, fused']:.2f}",
             "fused forward": f"/ yardstick = {ms['fused forward'] / yard:.2f}",
             "fused backward": f"/ (2 x yardstick) = {ms['fused backward'] / (2 * yard):.2f}",
             "gather-sum yardstick": f"CSR SpMM over {2 * H * C}-wide rows, "
                                     f"{index.num_edges * 2 * H * C * 4 / (yard / 1e3) / 1e9:.0f} GB/s of gathered rows"}
    print(f"{'':<22}{'ms':>8}")
    for key, value in ms.items():
        print(f"{key:<22}{value:8.1f}   {notes.get(key, '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
