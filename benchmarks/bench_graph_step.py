"""What a knowledge graph costs per training step: TxPert's step on the merged real graph against the same step
with no graph edges.

Data: the shared Papalexi THP-1 subset (unseen singles, split seed 0), default training options. Graph: the
merged real graph of ``benchmarks/real_data_eval.py`` (STRING + GO + Reactome + DepMap screen, about 21.5k
nodes; built once into ``--work``). The comparison: the same nodes with no edges (the encoder then has nothing
to pass; the model is otherwise identical). Both trainers live in one process and their steps alternate, so
load from other processes hits both alike; times are medians over ``--steps`` steps after ``--warmup``.

Settings (each a row): the default encoder field (``graph_hops="auto"``: the edges the encoder reads for the
perturbed genes, :func:`txpert_head.model.receptive.encoder_field`), the plain 2-hop receptive field
(``graph_hops=2``, what ``"auto"`` meant before) and, with ``--whole-graph``, the whole graph
(``graph_hops=null``). Target (issue 16): a step with the graph at most 1.5x the step without.

Usage::

    .venv/bin/python benchmarks/bench_graph_step.py [--work /tmp/txpert_graph_step] [--whole-graph]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def edgeless(graph):
    """The same node vocabulary with no edges (one empty layer)."""
    from kgbuild.graph import MultiGraph

    return MultiGraph.from_edges("none", [], [], np.zeros(0), {"source": "bench"}, nodes=graph.nodes.tolist())


def step_times(trainers: dict, steps: int, warmup: int) -> dict[str, list[float]]:
    """Alternate one training step of each trainer; the seconds of each step after ``warmup``."""
    times: dict[str, list[float]] = {name: [] for name in trainers}
    orders = {name: tr.epoch_order(0) for name, tr in trainers.items()}
    for s in range(warmup + steps):
        for name, tr in trainers.items():
            items = tr.step_items(orders[name], s % tr.steps_per_epoch)
            rng = np.random.default_rng([0, s])
            t = time.perf_counter()
            tr.train_step(items, rng)
            if s >= warmup:
                times[name].append(time.perf_counter() - t)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="the shared data folder")
    ap.add_argument("--work", type=Path, default=Path("/tmp/txpert_graph_step"), help="graph build folder (reused)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--whole-graph", action="store_true", help="also time the whole graph (graph_hops=null)")
    args = ap.parse_args(argv)

    import torch

    from kgbuild.graph import MultiGraph
    from real_data_eval import build_graph, data_options
    from txpert_head.data.splits import make_split
    from txpert_head.training.config import TrainConfig
    from txpert_head.training.trainer import Trainer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    graph = MultiGraph.load(build_graph(args.data, args.work))
    data = data_options(args.data, "papalexi_unseen_single").load()
    split = make_split(data, "unseen_single", seed=0)
    print(f"graph: {graph.num_nodes:,} nodes, {graph.num_edges:,} edges; data: {data.n_obs:,} cells x "
          f"{data.n_genes:,} genes; {torch.get_num_threads()} thread(s); load average "
          + " ".join(f"{x:.1f}" for x in os.getloadavg()), flush=True)
    rows = []
    settings = [("encoder field (default)", "auto"), ("2-hop receptive field", 2)]
    for label, hops in settings + ([("whole graph", None)] if args.whole_graph else []):
        cfg = dict(progress=False, graph_hops=hops)
        trainers = {"graph": Trainer(data, graph, split, TrainConfig(**cfg)),
                    "no edges": Trainer(data, edgeless(graph), split, TrainConfig(**cfg))}
        times = step_times(trainers, args.steps, args.warmup)
        med = {k: statistics.median(v) for k, v in times.items()}
        nodes = len(trainers["graph"].model.encoder.vocab)
        rows.append((label, nodes, med["graph"], med["no edges"], med["graph"] / med["no edges"]))
    print(f"\n{'setting':<28}{'encoder nodes':>14}{'step, graph s':>15}{'step, no edges s':>18}{'ratio':>8}")
    for label, nodes, g, n, r in rows:
        print(f"{label:<28}{nodes:>14,}{g:>15.4f}{n:>18.4f}{r:>8.2f}")
    print("target (issue 16): ratio <= 1.5")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
