"""TxPert on a screen simulated over the real STRING topology, with a simulation model that is not the
project's own (a check that the model's gains do not come from fitting ``txpert simulate``).

The screen (written once into ``--work``): ``--genes`` measured genes, a connected neighbourhood of the
dmfind STRING network (``../shared/data/string/string_v12_dmfind_edges.tsv.gz``, edges with combined score
>= 700), grown breadth-first from its best-connected gene; ``--perts`` of them perturbed (singles),
``--cells`` cells each spread over ``--batches`` batches, plus ``--controls`` control cells. For a
perturbation of gene p::

    A        the (G, G) adjacency of the measured genes, weight = score / 1000, a random sign per pair
             (+ with probability ``--positive``), scaled by the spectral radius of |A|
    P        = Σ_{k=1..3} (β A)^k,  β = 0.8                         effects spread over the STRING topology
    δ_p      = -kd_p · (1.5 e_p + gain · P e_p) + ε_p               kd_p ~ U(0.5, 1), ε_p ~ N(0, 0.03²)^G
    counts   ~ Poisson(L_i · π_g · s_bg · exp(δ_pg))                π = softmax(N(0, 1.5²)), L_i ~ 5000·LogN(0, 0.2²),
                                                                     s_bg = exp(N(0, 0.1²)) per batch

``gain`` makes the median |effect| of a target's direct STRING neighbours ``--neighbour-effect``. No shared (systematic)
response, no network noise beyond the sign draw: the graph TxPert gets is the same STRING network (all
17k genes) through ``kgbuild edges --min-weight 0.7`` (in-degree capped at 20, kgbuild's default), and the
same graph fully rewired (``kgbuild perturb --rewire 1.0``).

The leaderboard (``benchmarks/leaderboard.py``) runs two of these screens as rows. Alone, this script runs one:
default TxPert (no option changed) on unseen singles, split seeds ``--seeds`` (= model seeds), on the
real and the rewired graph, with the baselines; the table is the leaderboard's.

Usage::

    .venv/bin/python benchmarks/string_topology.py --work /tmp/txpert_string_topology
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

DEFAULT_EDGES = REPO.parent / "shared" / "data" / "string" / "string_v12_dmfind_edges.tsv.gz"
MIN_SCORE = 700


def string_neighbourhood(edges: Path, n_genes: int) -> tuple[list[str], np.ndarray]:
    """``(genes, A)``: ``n_genes`` genes grown breadth-first from the best-connected gene of the network at
    score >= ``MIN_SCORE`` (neighbours by descending score), and their (G, G) weight matrix (score / 1000)."""
    import pandas as pd

    table = pd.read_csv(edges, sep="\t", usecols=["symbol1", "symbol2", "combined_score"])
    table = table[(table.combined_score >= MIN_SCORE) & (table.symbol1 != table.symbol2)]
    both = pd.concat([table.rename(columns={"symbol1": "a", "symbol2": "b"}),
                      table.rename(columns={"symbol1": "b", "symbol2": "a"})])
    both = both.sort_values(["a", "combined_score", "b"], ascending=[True, False, True])
    nbrs = {a: grp.b.tolist() for a, grp in both.groupby("a", sort=False)}
    start = max(nbrs, key=lambda g: (len(nbrs[g]), g))
    chosen, seen, queue = [], {start}, [start]
    while queue and len(chosen) < n_genes:
        g = queue.pop(0)
        chosen.append(g)
        for h in nbrs[g]:
            if h not in seen:
                seen.add(h)
                queue.append(h)
    index = {g: i for i, g in enumerate(chosen)}
    inside = both[both.a.isin(index) & both.b.isin(index)]
    A = np.zeros((len(chosen), len(chosen)))
    A[inside.a.map(index).to_numpy(), inside.b.map(index).to_numpy()] = inside.combined_score.to_numpy() / 1000
    return chosen, A


def simulate(edges: Path, out: Path, n_genes: int, n_perts: int, cells: int, batches: int, controls: int,
             seed: int, positive: float = 0.8, neighbour_effect: float = 0.8) -> Path:
    """Write the screen (raw counts) to ``out``; returns it. See the module docstring for the model."""
    import anndata
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    genes, A = string_neighbourhood(edges, n_genes)
    G = len(genes)
    upper = np.triu(rng.random((G, G)) < positive, 1)
    sign = np.where(upper | upper.T, 1.0, -1.0)
    M = A * sign / np.max(np.abs(np.linalg.eigvalsh(A)))
    P, term = np.zeros((G, G)), np.eye(G)
    for _ in range(3):
        term = 0.8 * M @ term
        P += term
    degree = (A > 0).sum(1)
    targets = rng.choice(np.flatnonzero(degree > 0), n_perts, replace=False)
    direct = np.concatenate([np.abs(P[A[:, t] > 0, t]) for t in targets])
    gain = neighbour_effect / np.median(direct)
    kd = rng.uniform(0.5, 1.0, n_perts)
    delta = np.zeros((n_perts, G))
    for k, t in enumerate(targets):
        e = np.zeros(G)
        e[t] = 1.0
        delta[k] = -kd[k] * (1.5 * e + gain * P[:, t]) + rng.normal(0, 0.03, G)
    base = np.exp(rng.normal(0, 1.5, G))
    pi = base / base.sum()
    scale = np.exp(rng.normal(0, 0.1, (batches, G)))
    labels = np.r_[np.full(controls, "ctrl", dtype=object), np.repeat(np.asarray(genes, dtype=object)[targets], cells)]
    cond = np.r_[np.full(controls, -1), np.repeat(np.arange(n_perts), cells)]
    batch = rng.integers(0, batches, len(labels))
    lib = 5000 * np.exp(rng.normal(0, 0.2, len(labels)))
    eff = np.where(cond[:, None] >= 0, delta[np.maximum(cond, 0)], 0.0)
    mu = lib[:, None] * pi[None, :] * scale[batch] * np.exp(eff)
    X = sp.csr_matrix(rng.poisson(mu).astype(np.float32))
    obs = pd.DataFrame({"perturbation": labels.astype(str), "batch": np.char.add("b", batch.astype(str))},
                       index=[f"c{i}" for i in range(len(labels))])
    adata = anndata.AnnData(X, obs=obs, var=pd.DataFrame(index=genes))
    adata.uns["simulation"] = {"model": "string_topology", "seed": seed, "gain": float(gain), "positive": positive,
                               "neighbour_effect": neighbour_effect,
                               "edges": str(edges), "min_score": MIN_SCORE}
    out.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(out)
    return out


def string_graphs(edges: Path, work: Path) -> tuple[Path, Path]:
    """The dmfind STRING graph as ``kgbuild edges --min-weight 0.7`` writes it, and its fully rewired copy
    (``kgbuild perturb --rewire 1.0 --seed 0``), built once into ``work``."""
    graph, rewired = work / "string.kg.npz", work / "string.rewire1.kg.npz"
    kg = [str(Path(sys.executable).with_name("kgbuild"))]
    if not graph.exists():
        subprocess.run(kg + ["edges", "--edges", str(edges), "--source-col", "symbol1", "--target-col", "symbol2",
                             "--weight-col", "combined_score", "--weight-scale", "0.001", "--min-weight", "0.7",
                             "--symmetric", "--layer-name", "string", "-o", str(graph)], check=True)
    if not rewired.exists():
        subprocess.run(kg + ["perturb", "--rewire", "1.0", "--seed", "0", str(graph), "-o", str(rewired)], check=True)
    return graph, rewired


def main(argv: list[str] | None = None) -> int:
    from leaderboard import SIMULATED_DATA, Row, build_table, criteria_table, run_jobs, systema_table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edges", type=Path, default=DEFAULT_EDGES, help="the dmfind STRING edge table")
    ap.add_argument("--work", type=Path, default=Path("/tmp/txpert_string_topology"))
    ap.add_argument("--genes", type=int, default=1000)
    ap.add_argument("--perts", type=int, default=300)
    ap.add_argument("--cells", type=int, default=50, help="cells per perturbation")
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--controls", type=int, default=1000)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--positive", type=float, default=0.8, help="share of STRING pairs with a positive sign")
    ap.add_argument("--neighbour-effect", type=float, default=0.8,
                    help="median |log-fold change| of a target's direct STRING neighbours")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    name = f"s{args.data_seed}_pos{args.positive:g}_eff{args.neighbour_effect:g}_c{args.cells}"
    h5ad = args.work / f"screen_{name}.h5ad"
    if not h5ad.exists():
        simulate(args.edges, h5ad, args.genes, args.perts, args.cells, args.batches, args.controls, args.data_seed,
                 args.positive, args.neighbour_effect)
    graph, rewired = string_graphs(args.edges, args.work)
    row = Row(f"string topology {name}", h5ad, "unseen_single", graph,
              dict(SIMULATED_DATA), rewired=rewired)
    results = run_jobs([row], args.seeds, ["gat"], args.work, args.jobs, False, t0)
    table, summary = build_table([row], results, args.seeds, ["gat"])
    print("\n" + table + "\n\n" + systema_table([row], results) + "\n\n" + criteria_table(summary))
    print(f"\n{(time.perf_counter() - t0) / 60:.0f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
