"""Baselines that any model must beat, and the experimental ceiling, on the same split and metrics.

With training changes ``Δ_q = x̄_q − r_q`` (see :mod:`txpert_head.profiles`) every baseline predicts
``ŷ_p = r_p + Δ̃_p`` for a test condition p in cell line L:

* ``general``: ``Δ̃_p = Δ_p`` if p was trained on (same line preferred, else mean over lines); an unseen
  combination sums its constituents' terms; an unseen single gets the global mean training change
  ``Δ̄`` (mean over the training singles of line L, else of all lines).
* ``additive`` (combinations): ``Δ̃_{a+b} = Δ_a + Δ_b`` over constituents seen as training singles
  (unseen constituents add 0).
* ``nearest_cell_line``: ``Δ̃_p`` is p's change in the training line whose control mean is nearest
  (Euclidean) to line L's; ``general`` when p was not trained on in any other line.
* ``graph_neighbours`` (needs the graph; no training): ``general``, except that an unseen single gene g
  gets the weighted mean change of its trained graph neighbours instead of the global mean,
  ``Δ̃_g = Σ_{q∈N(g)} w_qg Δ_q / Σ_{q∈N(g)} w_qg`` over the sources q of g's incoming edges (all layers;
  ``w_qg`` the sum of the edge weights q→g over layers, clipped at 0) that were trained as singles (same
  line preferred, else the mean over lines); ``Δ̄`` when g has no such neighbour. It asks what the
  graph's one-hop neighbourhoods alone predict: a map graph that carries signal lifts it above
  ``general``, a rewired one does not.
* ``split_half`` (experimental reproducibility): the rows of each test condition are split in two halves
  within each batch; one half's change predicts the other's, over several seeds.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

from kgbuild.graph import MultiGraph
from txpert_head import metrics
from txpert_head.controls import ControlIndex
from txpert_head.data import PerturbData, constituents
from txpert_head.profiles import condition_name, retrieval_candidates, rows_by_condition, true_profiles
from txpert_head.splits import Condition, Split

BASELINES = ("general", "additive", "nearest_cell_line", "graph_neighbours", "split_half")


def _nan_stat(fn, values) -> float:
    """``fn`` over the finite values; NaN when there are none (e.g. no measured target genes)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(fn(v)) if len(v) else float("nan")


def training_changes(data: PerturbData, controls: ControlIndex, train: Sequence[Condition],
                     rows: dict[Condition, np.ndarray]) -> dict[Condition, np.ndarray]:
    """``Δ_q`` (G,) for every training condition."""
    mean, ref = true_profiles(data, controls, list(train), rows)
    return {c: mean[k] - ref[k] for k, c in enumerate(train)}


def _seen_change(deltas: dict[Condition, np.ndarray], line: str, pert: str) -> np.ndarray | None:
    if (line, pert) in deltas:
        return deltas[(line, pert)]
    other = [d for (l, p), d in deltas.items() if p == pert]
    return np.mean(other, axis=0) if other else None


def _global_mean(deltas: dict[Condition, np.ndarray], line: str) -> np.ndarray:
    singles = {c: d for c, d in deltas.items() if len(constituents(c[1])) == 1} or deltas
    same = [d for (l, _), d in singles.items() if l == line]
    return np.mean(same if same else list(singles.values()), axis=0)


def general(deltas: dict[Condition, np.ndarray], conditions: Sequence[Condition], reference: np.ndarray,
            unseen_gene: Callable[[str, str], np.ndarray | None] | None = None) -> np.ndarray:
    """General baseline predicted means (P, G).

    ``unseen_gene(line, gene)``: the change of a gene never trained as a single, or None for the global
    mean ``Δ̄`` (the general baseline itself; :func:`graph_neighbours` passes its neighbour estimate)."""
    out = np.array(reference, dtype=np.float64, copy=True)
    for k, (line, pert) in enumerate(conditions):
        seen = _seen_change(deltas, line, pert)
        if seen is None:
            glob = _global_mean(deltas, line)

            def term(gene: str) -> np.ndarray:
                t = _seen_change(deltas, line, gene)
                if t is None and unseen_gene is not None:
                    t = unseen_gene(line, gene)
                return glob if t is None else t

            seen = sum(term(g) for g in constituents(pert))
        out[k] += seen
    return out


def graph_neighbours(deltas: dict[Condition, np.ndarray], conditions: Sequence[Condition], reference: np.ndarray,
                     graph: MultiGraph) -> np.ndarray:
    """Graph-neighbour baseline predicted means (P, G): ``general`` with an unseen gene's change estimated
    as the weighted mean of its trained in-neighbours' changes (module docstring)."""
    lookup = graph.node_lookup
    src, dst = graph.edge_index
    weight = np.clip(np.asarray(graph.edge_weight, dtype=np.float64), 0.0, None)
    order = np.argsort(dst, kind="stable")
    starts = np.searchsorted(dst[order], np.arange(graph.num_nodes + 1))
    trained = {p for _, p in deltas}

    def estimate(line: str, gene: str) -> np.ndarray | None:
        if gene not in lookup:
            return None
        node = lookup[gene]
        edges = order[starts[node]:starts[node + 1]]
        w: dict[str, float] = {}
        for q, wq in zip(graph.nodes[src[edges]].tolist(), weight[edges].tolist()):
            if q in trained and q != gene:
                w[q] = w.get(q, 0.0) + wq
        total = sum(w.values())
        if total <= 0:
            return None
        return sum(wq * _seen_change(deltas, line, q) for q, wq in w.items()) / total

    return general(deltas, conditions, reference, unseen_gene=estimate)


def additive(deltas: dict[Condition, np.ndarray], conditions: Sequence[Condition], reference: np.ndarray) -> np.ndarray:
    """Additive baseline predicted means (P, G): sum of the constituents' training single changes."""
    out = np.array(reference, dtype=np.float64, copy=True)
    for k, (line, pert) in enumerate(conditions):
        for g in constituents(pert):
            d = _seen_change(deltas, line, g)
            if d is not None:
                out[k] += d
    return out


def nearest_cell_line(deltas: dict[Condition, np.ndarray], controls: ControlIndex, conditions: Sequence[Condition],
                      reference: np.ndarray) -> np.ndarray:
    """Nearest-cell-line baseline predicted means (P, G)."""
    lines = sorted(set(controls.line_of_group.tolist()))
    line_mean = {l: controls.means[controls.line_of_group == l].mean(0) for l in lines}
    fallback = general(deltas, conditions, reference)
    out = fallback.copy()
    for k, (line, pert) in enumerate(conditions):
        others = [l for (l, p) in deltas if p == pert and l != line]
        if others:
            best = min(others, key=lambda l: float(np.sum((line_mean[l] - line_mean[line]) ** 2)))
            out[k] = reference[k] + deltas[(best, pert)]
    return out


def split_half(data: PerturbData, controls: ControlIndex, conditions: Sequence[Condition],
               rows: dict[Condition, np.ndarray], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One split-half draw: ``(pred_mean, true_mean, reference)`` (P, G) with ``pred = δ_A + r_B``."""
    rng = np.random.default_rng(seed)
    P, G = len(conditions), data.n_genes
    pred, true, ref = np.zeros((P, G)), np.zeros((P, G)), np.zeros((P, G))
    for k, cond in enumerate(conditions):
        idx = rows[cond]
        if len(idx) < 2:
            raise ValueError(f"condition {condition_name(cond)} has {len(idx)} row(s); split-half needs at least 2 "
                             f"(not available for pseudobulk input)")
        groups = controls.group_of_row[idx]
        half = np.zeros(len(idx), dtype=bool)
        offset = int(rng.integers(0, 2))
        for g in np.unique(groups):
            sel = np.flatnonzero(groups == g)
            perm = sel[rng.permutation(len(sel))]
            half[perm[(np.arange(len(perm)) + offset) % 2 == 0]] = True
            offset += len(perm) % 2
        a, b = idx[half], idx[~half]
        if len(a) == 0 or len(b) == 0:
            a, b = idx[: len(idx) // 2], idx[len(idx) // 2:]
        ra = controls.means[controls.group_of_row[a]].astype(np.float64).mean(0)
        rb = controls.means[controls.group_of_row[b]].astype(np.float64).mean(0)
        xa = np.asarray(data.X[a].mean(axis=0)).ravel()
        true[k] = np.asarray(data.X[b].mean(axis=0)).ravel()
        ref[k] = rb
        pred[k] = xa - ra + rb
    return pred, true, ref


def run_baselines(data: PerturbData, split: Split, which: Sequence[str] = BASELINES, split_half_seeds: int = 5,
                  controls: ControlIndex | None = None, seed: int = 0,
                  graph: MultiGraph | None = None) -> dict[str, dict]:
    """Evaluate baselines on ``split.test``; returns ``{name: {"summary", "table", ["summary_sd"], ["pred"]}}``.

    ``pred`` (P, G): the predicted mean expression of each test condition (in ``split.test`` order), for
    every baseline but ``split_half`` (whose prediction is a different half of the data per seed).

    ``additive`` is only run for splits with combinations, ``nearest_cell_line`` only with several cell
    lines, ``graph_neighbours`` only with a ``graph``, ``split_half`` only when conditions have at least two
    rows and ``split_half_seeds`` > 0.
    """
    controls = controls or ControlIndex(data)
    rows = rows_by_condition(data)
    test = list(split.test)
    names = [condition_name(c) for c in test]
    true_mean, ref = true_profiles(data, controls, test, rows)
    deltas = training_changes(data, controls, split.train, rows)
    gene_index = data.gene_index
    cand, self_index = retrieval_candidates(data, controls, test, rows)
    out: dict[str, dict] = {}
    has_doubles = any(len(constituents(p)) > 1 for _, p in test)
    n_lines = len(set(data.cell_line.tolist()))
    for name in which:
        if name == "general":
            pred = general(deltas, test, ref)
        elif name == "additive" and has_doubles:
            pred = additive(deltas, test, ref)
        elif name == "nearest_cell_line" and n_lines > 1:
            pred = nearest_cell_line(deltas, controls, test, ref)
        elif name == "graph_neighbours" and graph is not None:
            pred = graph_neighbours(deltas, test, ref, graph)
        elif name == "split_half" and not data.pseudobulk and split_half_seeds > 0:
            draws = []
            for s in range(split_half_seeds):
                p, t, r = split_half(data, controls, test, rows, seed=seed * 1000 + s)
                draws.append(metrics.evaluate(names, p, t, r, gene_index, cand, self_index, seed=seed))
            table = pd.concat([d[0] for d in draws]).groupby("condition", sort=False).mean().reset_index()
            keys = [k for k in draws[0][1] if k != "n_perturbations"]
            summary = {k: _nan_stat(np.mean, [d[1][k] for d in draws]) for k in keys}
            sd = {k: _nan_stat(lambda v: np.std(v, ddof=1) if len(v) > 1 else 0.0, [d[1][k] for d in draws])
                  for k in keys}
            summary["n_perturbations"] = len(test)
            out[name] = {"summary": summary, "summary_sd": sd, "table": table, "seeds": split_half_seeds}
            continue
        else:
            continue
        table, summary = metrics.evaluate(names, pred, true_mean, ref, gene_index, cand, self_index, seed=seed)
        out[name] = {"summary": summary, "table": table, "pred": pred}
    return out
