"""Baselines that any model must beat, and the experimental ceiling, on the same split and metrics.

With training changes ``Δ_q = x̄_q − r_q`` (see :mod:`txpert_head.data.profiles`) every baseline predicts
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
* ``linear`` (Ahlmann-Eltze, Huber & Anders, Nat Methods 2025, the ``training_data`` embeddings of their
  ``run_linear_pretrained_model.R``; needs no training beyond a closed form): ``general``, except that an
  unseen single gene g that is a measured gene gets the bilinear model's prediction. For line L, with the n
  training singles of L (else the per-gene mean over lines), the m of them whose gene is measured, and the
  control as one more column (change 0, embedding 0), as the paper does:

  - ``X = c_L 1ᵀ + [Δ_1 … Δ_n, 0]`` (G × n+1): the training pseudobulk expression (``c_L`` the mean control
    row of L);
  - ``A`` (G × K): the gene embedding, the first K = 10 principal-component scores of X with genes as
    observations (``prcomp(X)``: each column centred over genes; ``A = U_K S_K`` of the centred X);
  - ``Y = [Δ_q1 … Δ_qm, 0]`` (G × m+1) over the measured q, ``b = rowmeans(Y)``, and ``B`` (K × m+1): the
    perturbation embedding, the rows ``a_q`` of A of the perturbed genes (0 for the control);
  - ``W = (AᵀA + λI)⁻¹ Aᵀ (Y − b 1ᵀ) Bᵀ (BBᵀ + λI)⁻¹`` with λ = 0.1 (ridge on both sides);
  - ``Δ̃_g = A W a_g + b`` with ``a_g`` the row of A for g.

  Genes that are not measured (or lines with fewer than 2 measured training singles) fall back to ``Δ̄``.
* ``linear_graph``: ``linear`` with the perturbation embedding taken from the graph, so that it reaches
  genes that are graph nodes but not measured: ``B``'s columns are the rows of
  :func:`spectral_embedding` (K = 10 eigenvectors of the normalized Laplacian of the union graph) for the
  training singles in the embedded graph, and ``Δ̃_g = A W e_g + b`` for an unseen gene g in it; A
  is still the PCA embedding of X. Genes outside the embedded graph fall back to ``Δ̄``.

  Both linear baselines keep a trained condition's own change, and a combination sums its constituents'
  terms, exactly as ``general`` (they replace only ``general``'s unseen-gene ``Δ̄``).
* ``split_half`` (experimental reproducibility): the rows of each test condition are split in two halves
  within each batch; one half's change predicts the other's, over several seeds.
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from kgbuild.graph import MultiGraph
from txpert_head.metrics import expression as metrics
from txpert_head.data.backed import group_means
from txpert_head.data.controls import ControlIndex
from txpert_head.data.perturb_data import PerturbData, constituents
from txpert_head.data.profiles import (ConditionMeans, condition_name, retrieval_candidates, rows_by_condition,
                                      true_profiles)
from txpert_head.data.splits import Condition, Split

log = logging.getLogger(__name__)

BASELINES = ("general", "additive", "nearest_cell_line", "graph_neighbours", "linear", "linear_graph", "split_half")
LINEAR_DIM = 10  # K: embedding dimensions of the linear baselines (the paper's default pca_dim)
LINEAR_RIDGE = 0.1  # λ: ridge penalty on both sides (the paper's default ridge_penalty)


def _nan_stat(fn, values) -> float:
    """``fn`` over the finite values; NaN when there are none (e.g. no measured target genes)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(fn(v)) if len(v) else float("nan")


def training_changes(data: PerturbData, controls: ControlIndex, train: Sequence[Condition],
                     rows: dict[Condition, np.ndarray],
                     means: ConditionMeans | None = None) -> dict[Condition, np.ndarray]:
    """``Δ_q`` (G,) for every training condition (the means from ``means`` when it has them)."""
    mean, ref = true_profiles(data, controls, list(train), rows, means)
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


def solve_y_axb(Y: np.ndarray, A: np.ndarray, B: np.ndarray,
                ridge: float = LINEAR_RIDGE) -> tuple[np.ndarray, np.ndarray]:
    """``(W, b)`` of ``Y ≈ A W B + b 1ᵀ``: ``b = rowmeans(Y)``,
    ``W = (AᵀA + λI)⁻¹ Aᵀ (Y − b 1ᵀ) Bᵀ (BBᵀ + λI)⁻¹``.

    ``Y`` (G, n), ``A`` (G, k), ``B`` (m, n); ``W`` (k, m). The closed form of ``solve_y_axb`` in
    Ahlmann-Eltze et al.'s ``run_linear_pretrained_model.R`` with ``A_ridge = B_ridge = λ``."""
    Y = np.asarray(Y, dtype=np.float64)
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    center = Y.mean(axis=1)
    left = np.linalg.solve(A.T @ A + ridge * np.eye(A.shape[1]), A.T @ (Y - center[:, None]) @ B.T)
    W = np.linalg.solve(B @ B.T + ridge * np.eye(B.shape[0]), left.T).T  # BBᵀ + λI is symmetric
    return W, center


def pca_gene_embedding(X: np.ndarray, dim: int = LINEAR_DIM) -> np.ndarray:
    """The first ``dim`` principal-component scores of the rows of ``X`` (G, n): genes are the observations,
    each column is centred over genes, scores ``U_k S_k`` (R's ``prcomp(X)$x[, 1:k]``); (G, k) with
    ``k = min(dim, G, n)``. Signs are fixed (largest |loading| positive); the linear baselines do not depend on
    them."""
    X = np.asarray(X, dtype=np.float64)
    Xc = X - X.mean(axis=0, keepdims=True)
    U, S, _ = np.linalg.svd(Xc, full_matrices=False)
    k = min(dim, len(S))
    scores = U[:, :k] * S[:k]
    flip = np.sign(scores[np.abs(scores).argmax(axis=0), np.arange(k)])
    return scores * np.where(flip == 0, 1.0, flip)


def spectral_embedding(graph: MultiGraph, dim: int = LINEAR_DIM,
                       dense_max: int = 1000) -> tuple[dict[str, int], np.ndarray]:
    """Spectral embedding of the graph's nodes: ``(lookup gene -> row, E (n, k))``.

    The union of the layers with edge weights clipped at 0 and summed over layers and directions,
    ``A = Σ_layers (W + Wᵀ)`` without self-loops, restricted to its largest connected component (other nodes
    get no row: in a disconnected graph the smallest Laplacian eigenvectors only say which component a node is
    in). With ``S = D^-1/2 A D^-1/2`` (the normalized Laplacian is ``I − S``), E holds the eigenvectors of the
    ``dim`` largest eigenvalues of S after the first (the trivial ``D^1/2 1``), i.e. the ``dim`` smallest
    nontrivial eigenvectors of the normalized Laplacian, each scaled to unit root mean square over the n
    nodes so that the ridge penalty λ weighs as it does against the PCA scores (``k = min(dim, n − 2)``;
    ``scipy.sparse.linalg.eigsh`` with a fixed start vector, dense ``eigh`` up to ``dense_max`` nodes, signs
    fixed (largest |entry| positive): deterministic)."""
    n_all = graph.num_nodes
    src, dst = (np.asarray(a, dtype=np.int64) for a in graph.edge_index)
    w = np.clip(np.asarray(graph.edge_weight, dtype=np.float64), 0.0, None)
    keep = (src != dst) & (w > 0)
    adj = sp.coo_matrix((w[keep], (src[keep], dst[keep])), shape=(n_all, n_all)).tocsr()
    adj = (adj + adj.T).tocsr()
    adj.eliminate_zeros()
    if adj.nnz == 0:
        return {}, np.zeros((0, 0))
    from scipy.sparse.csgraph import connected_components

    _, label = connected_components(adj, directed=False)
    sizes = np.bincount(label)
    nodes = np.flatnonzero(label == int(np.argmax(sizes)))  # the first largest component on ties
    n = len(nodes)
    k = min(dim, n - 2)
    if k < 1:
        return {}, np.zeros((0, 0))
    sub = adj[nodes][:, nodes]
    inv_sqrt = 1.0 / np.sqrt(np.asarray(sub.sum(axis=1)).ravel())
    S = sp.diags(inv_sqrt) @ sub @ sp.diags(inv_sqrt)
    if n <= dense_max:
        vals, vecs = np.linalg.eigh(S.toarray())
    else:
        from scipy.sparse.linalg import eigsh

        v0 = np.random.default_rng(0).uniform(0.5, 1.5, n)
        vals, vecs = eigsh(S.tocsr(), k=k + 1, which="LA", v0=v0, tol=1e-8)
    order = np.argsort(-vals, kind="stable")[1:k + 1]
    E = vecs[:, order] * np.sqrt(n)
    flip = np.sign(E[np.abs(E).argmax(axis=0), np.arange(E.shape[1])])
    E = E * np.where(flip == 0, 1.0, flip)
    return {str(graph.nodes[i]): r for r, i in enumerate(nodes.tolist())}, E


def _line_singles(deltas: dict[Condition, np.ndarray], line: str) -> dict[str, np.ndarray]:
    """Training single changes for line ``line``: its own when it has any, else the per-gene mean over lines."""
    singles = {c: d for c, d in deltas.items() if len(constituents(c[1])) == 1}
    own = {p: d for (l, p), d in singles.items() if l == line}
    if own:
        return own
    genes = sorted({p for _, p in singles})
    return {g: np.mean([d for (_, p), d in singles.items() if p == g], axis=0) for g in genes}


def linear_estimator(deltas: dict[Condition, np.ndarray], controls: Mapping[str, np.ndarray],
                     pert_embedding: Callable[[np.ndarray], tuple[dict[str, int], np.ndarray]],
                     dim: int = LINEAR_DIM, ridge: float = LINEAR_RIDGE) -> Callable[[str, str], np.ndarray | None]:
    """The ``unseen_gene(line, gene)`` callback of the linear baselines (module docstring).

    ``controls[line]``: the line's mean control expression ``c_L`` (G,). ``pert_embedding(A)`` gives the
    perturbation embedding from the gene embedding A (G, k): ``(lookup gene -> row, E (rows, k'))``; the
    model is fitted on the training singles in ``lookup`` (at least 2, else every gene falls back to the
    general baseline), once per line."""
    fits: dict[str, tuple | None] = {}

    def fit(line: str):
        singles = _line_singles(deltas, line)
        if not singles:
            return None
        names = sorted(singles)
        Y_all = np.stack([singles[g] for g in names], axis=1)  # (G, n)
        ctrl = np.asarray(controls[line], dtype=np.float64)
        X = ctrl[:, None] + np.concatenate([Y_all, np.zeros((len(ctrl), 1))], axis=1)  # with the control column
        A = pca_gene_embedding(X, dim)
        lookup, E = pert_embedding(A)
        used = [k for k, g in enumerate(names) if g in lookup]
        if len(used) < 2:
            return None
        Y = np.concatenate([Y_all[:, used], np.zeros((len(ctrl), 1))], axis=1)
        B = np.concatenate([E[[lookup[names[k]] for k in used]], np.zeros((1, E.shape[1]))], axis=0).T
        W, center = solve_y_axb(Y, A, B, ridge)
        return A @ W, center, lookup, E

    def estimate(line: str, gene: str) -> np.ndarray | None:
        if line not in fits:
            fits[line] = fit(line)
        model = fits[line]
        if model is None or gene not in model[2]:
            return None
        AW, center, lookup, E = model
        return AW @ E[lookup[gene]] + center

    return estimate


def linear(deltas: dict[Condition, np.ndarray], conditions: Sequence[Condition], reference: np.ndarray,
           genes: Sequence[str], controls: Mapping[str, np.ndarray], dim: int = LINEAR_DIM,
           ridge: float = LINEAR_RIDGE) -> np.ndarray:
    """Linear baseline of Ahlmann-Eltze et al. predicted means (P, G): ``general`` with an unseen measured
    gene's change from the bilinear PCA model (module docstring). ``genes``: the measured genes (the rows of
    the change vectors); ``controls``: line -> mean control expression (G,)."""
    lookup = {str(g): i for i, g in enumerate(genes)}
    estimate = linear_estimator(deltas, controls, lambda A: (lookup, A), dim, ridge)
    return general(deltas, conditions, reference, unseen_gene=estimate)


def linear_graph(deltas: dict[Condition, np.ndarray], conditions: Sequence[Condition], reference: np.ndarray,
                 controls: Mapping[str, np.ndarray], graph: MultiGraph, dim: int = LINEAR_DIM,
                 ridge: float = LINEAR_RIDGE,
                 embedding: tuple[dict[str, int], np.ndarray] | None = None) -> np.ndarray:
    """Linear baseline with the graph's spectral embedding as perturbation embedding, predicted means (P, G)
    (module docstring). ``embedding``: a precomputed :func:`spectral_embedding` of ``graph``."""
    lookup, E = embedding if embedding is not None else spectral_embedding(graph, dim)
    estimate = linear_estimator(deltas, controls, lambda A: (lookup, E), dim, ridge)
    return general(deltas, conditions, reference, unseen_gene=estimate)


def line_control_means(data: PerturbData, controls: ControlIndex) -> dict[str, np.ndarray]:
    """Cell line -> mean of its control rows (G,) float64 (all batches): the linear baselines' ``c_L``."""
    lines = [line for line, rows in controls.by_line.items() if len(rows)]
    means = group_means(data.X, [controls.by_line[line] for line in lines], data.memory_budget)  # row blocks
    return {line: means[k].astype(np.float64) for k, line in enumerate(lines)}


def linear_applies(data: PerturbData, train: Sequence[Condition]) -> bool:
    """``linear`` runs when at least 2 training singles are measured genes."""
    index = data.gene_index
    return len({p for _, p in train if len(constituents(p)) == 1 and p in index}) >= 2


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
                  graph: MultiGraph | None = None, means: ConditionMeans | None = None) -> dict[str, dict]:
    """Evaluate baselines on ``split.test``; returns ``{name: {"summary", "table", ["summary_sd"], ["pred"]}}``.

    ``pred`` (P, G): the predicted mean expression of each test condition (in ``split.test`` order), for
    every baseline but ``split_half`` (whose prediction is a different half of the data per seed).

    ``additive`` is only run for splits with combinations, ``nearest_cell_line`` only with several cell
    lines, ``graph_neighbours`` and ``linear_graph`` only with a ``graph``, ``linear`` only when at least two
    training singles are measured genes, ``split_half`` only when conditions have at least two rows and
    ``split_half_seeds`` > 0. ``means``: the data's :class:`~txpert_head.data.profiles.ConditionMeans`, when the
    caller has read them already.
    """
    controls = controls or ControlIndex(data)
    rows = rows_by_condition(data)
    # one pass over the data for the test truths, the training changes and the candidates (unless given)
    means = ConditionMeans(data, rows) if means is None else means
    test = list(split.test)
    names = [condition_name(c) for c in test]
    true_mean, ref = true_profiles(data, controls, test, rows, means)
    deltas = training_changes(data, controls, split.train, rows, means)
    gene_index = data.gene_index
    cand, self_index = retrieval_candidates(data, controls, test, rows, means)
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
        elif name == "linear" and linear_applies(data, split.train):
            pred = linear(deltas, test, ref, data.genes, line_control_means(data, controls))
        elif name == "linear_graph" and graph is not None:
            pred = linear_graph(deltas, test, ref, line_control_means(data, controls), graph)
        elif name == "split_half" and not data.pseudobulk and split_half_seeds > 0:
            few = [condition_name(c) for c in test if len(rows[c]) < 2]
            if few:  # (as documented: only when every condition can be split in two)
                log.warning("split-half baseline skipped: %d test condition(s) have a single row (%s)", len(few),
                            ", ".join(few[:5]) + (" ..." if len(few) > 5 else ""))
                continue
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
