"""The linear baselines of Ahlmann-Eltze, Huber & Anders (Nat Methods 2025): ``linear`` and ``linear_graph``
(txpert_head.evaluation.baselines), on hand-computed examples and against a direct NumPy version of the closed form."""

from __future__ import annotations

import numpy as np
import pytest

from kgbuild.graph import MultiGraph
from txpert_head.evaluation.baselines import (BASELINES, LINEAR_DIM, LINEAR_RIDGE, general, linear, linear_graph,
                                   pca_gene_embedding, run_baselines, solve_y_axb, spectral_embedding)
from txpert_head.data.controls import ControlIndex
from txpert_head.data.perturb_data import PerturbData
from txpert_head.data.profiles import rows_by_condition, true_profiles
from txpert_head.reporting.report import BASELINE_LABELS
from txpert_head.data.splits import make_split
from txpert_head.simulate.fixtures import synthetic_data, synthetic_graph
from txpert_head.evaluation.vcc import VCC_BASELINES


# ---------------------------------------------------------------------- a direct NumPy version of the paper
def reference_pca(X, k):
    """prcomp(X)$x[, 1:k] through the eigenvectors of the column covariance (not the SVD the code uses)."""
    Xc = X - X.mean(axis=0, keepdims=True)
    vals, vecs = np.linalg.eigh(Xc.T @ Xc)
    order = np.argsort(vals)[::-1][:k]
    return Xc @ vecs[:, order]


def reference_fit_predict(Y, A, B, targets, lam=LINEAR_RIDGE):
    """``A W t + b`` for each column t of ``targets`` with W = (AᵀA+λI)⁻¹ Aᵀ (Y − b) Bᵀ (BBᵀ+λI)⁻¹."""
    b = Y.mean(axis=1, keepdims=True)
    W = (np.linalg.inv(A.T @ A + lam * np.eye(A.shape[1])) @ A.T @ (Y - b) @ B.T
         @ np.linalg.inv(B @ B.T + lam * np.eye(B.shape[0])))
    return (A @ W @ targets + b).T


def reference_linear(singles, ctrl, genes, embed_lookup=None, embed=None, dim=LINEAR_DIM):
    """The paper's model for one line: ``singles`` {gene: Δ} (all training singles), ``ctrl`` the control mean;
    the perturbation embedding is A's rows (``embed`` None) or ``embed[embed_lookup[g]]``. Returns a function
    gene -> predicted Δ (or None when the gene has no embedding)."""
    names = sorted(singles)
    Y_all = np.stack([singles[g] for g in names], axis=1)
    X = ctrl[:, None] + np.c_[Y_all, np.zeros(len(ctrl))]
    A = reference_pca(X, min(dim, X.shape[1]))
    if embed is None:
        embed_lookup, embed = {g: i for i, g in enumerate(genes)}, A
    used = [k for k, g in enumerate(names) if g in embed_lookup]
    Y = np.c_[Y_all[:, used], np.zeros(len(ctrl))]
    B = np.c_[embed[[embed_lookup[names[k]] for k in used]].T, np.zeros(embed.shape[1])]

    def predict(gene):
        if gene not in embed_lookup:
            return None
        return reference_fit_predict(Y, A, B, embed[embed_lookup[gene]][:, None])[0]

    return predict


def reference_spectral(graph, dim=LINEAR_DIM):
    """Dense normalized Laplacian of the largest component; its ``dim`` smallest nontrivial eigenvectors."""
    n = graph.num_nodes
    adj = np.zeros((n, n))
    src, dst = graph.edge_index
    for s, d, w in zip(src, dst, graph.edge_weight):
        if s != d:
            adj[s, d] += max(float(w), 0.0)
            adj[d, s] += max(float(w), 0.0)
    # largest connected component by breadth-first search
    seen, comps = set(), []
    for start in range(n):
        if start in seen or not adj[start].any():
            continue
        comp, todo = [], [start]
        seen.add(start)
        while todo:
            v = todo.pop()
            comp.append(v)
            for u in np.flatnonzero(adj[v]):
                if u not in seen:
                    seen.add(int(u))
                    todo.append(int(u))
        comps.append(sorted(comp))
    nodes = max(comps, key=len)
    sub = adj[np.ix_(nodes, nodes)]
    d = sub.sum(1)
    lap = np.eye(len(nodes)) - sub / np.sqrt(np.outer(d, d))
    vals, vecs = np.linalg.eigh(lap)
    E = vecs[:, 1:dim + 1] * np.sqrt(len(nodes))
    return {str(graph.nodes[i]): r for r, i in enumerate(nodes)}, E


# ---------------------------------------------------------------------- the closed form
def test_solve_y_axb_recovers_a_bilinear_model_and_is_the_closed_form():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(40, 3))
    B = rng.normal(size=(4, 12))
    B -= B.mean(axis=1, keepdims=True)  # centred perturbation embedding: b = rowmeans(Y) is exactly b0
    W0 = rng.normal(size=(3, 4))
    b0 = rng.normal(size=40)
    Y = A @ W0 @ B + b0[:, None]
    W, b = solve_y_axb(Y, A, B, ridge=1e-12)
    np.testing.assert_allclose(W, W0, atol=1e-8)
    np.testing.assert_allclose(b, b0, atol=1e-12)
    W, b = solve_y_axb(Y, A, B, ridge=0.1)
    lam = 0.1
    expect = (np.linalg.inv(A.T @ A + lam * np.eye(3)) @ A.T @ (Y - Y.mean(1, keepdims=True)) @ B.T
              @ np.linalg.inv(B @ B.T + lam * np.eye(4)))
    np.testing.assert_allclose(W, expect, rtol=1e-10)
    assert not np.allclose(W, W0, atol=1e-4)  # the ridge shrinks


def test_pca_gene_embedding_is_prcomp_scores():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 7)) + 5.0
    A = pca_gene_embedding(X, 4)
    ref = reference_pca(X, 4)
    np.testing.assert_allclose(np.abs(A), np.abs(ref), atol=1e-10)  # equal up to the sign of each component
    np.testing.assert_allclose(A.mean(axis=0), 0.0, atol=1e-10)  # scores of column-centred data
    assert pca_gene_embedding(X, 10).shape == (30, 7)  # at most as many components as columns


# ---------------------------------------------------------------------- linear: hand-computed
def rank_one_example():
    """Six measured genes g0..g5; every training single q changes the genes along one direction u, by the
    size of its own entry u_q: Δ_q = u_q u. u and the centred control c̃ are orthogonal and sum to 0, and the
    trained genes' u sums to 0 and is orthogonal to c̃ (so the mean change b is 0 and the PCA embedding's u
    column is |s| u exactly, s the training coefficients)."""
    genes = [f"g{i}" for i in range(6)]
    u = np.array([1.0, -1.0, 2.0, -2.0, 0.5, -0.5])
    ctrl = 5.0 + np.array([1.0, 1.0, -1.0, -1.0, 0.0, 0.0])
    deltas = {("all", f"g{q}"): u[q] * u for q in range(4)}
    return genes, u, ctrl, deltas


def test_linear_recovers_an_unseen_gene_of_a_rank_one_response_up_to_the_ridge_shrinkage():
    genes, u, ctrl, deltas = rank_one_example()
    conds = [("all", "g4"), ("all", "g5"), ("all", "g1"), ("all", "g0+g4"), ("all", "Z"), ("all", "g4+Z")]
    ref = np.zeros((len(conds), 6))
    got = linear(deltas, conds, ref, genes, {"all": ctrl})
    # by hand: A's u column is α u with α² = |s|² = Σ_q u_q² = 10 over the trained q; |u|² = 10.5, so
    # Δ̂_g = u_g u · [α²|u|² / (α²|u|² + λ)] · [α²|u_tr|² / (α²|u_tr|² + λ)] with |u_tr|² = 10, λ = 0.1
    shrink = (105.0 / 105.1) * (100.0 / 100.1)
    glob = np.mean([d for d in deltas.values()], axis=0)  # Δ̄ of the general baseline (0 here)
    expect = [0.5 * u * shrink, -0.5 * u * shrink, deltas[("all", "g1")],
              deltas[("all", "g0")] + 0.5 * u * shrink, glob, 0.5 * u * shrink + glob]
    np.testing.assert_allclose(got, expect, atol=1e-10)
    # without the ridge the model is exact: Δ_g4 = u_4 u
    exact = linear(deltas, conds[:2], ref[:2], genes, {"all": ctrl}, ridge=1e-12)
    np.testing.assert_allclose(exact, [0.5 * u, -0.5 * u], atol=1e-8)


def test_linear_matches_the_numpy_reference_and_falls_back_for_unmeasured_genes():
    rng = np.random.default_rng(3)
    genes = [f"g{i}" for i in range(12)]
    ctrl = {"L1": rng.normal(2.0, 1.0, 12), "L2": rng.normal(2.0, 1.0, 12), "L3": rng.normal(2.0, 1.0, 12)}
    # L1: five measured trained singles and one unmeasured one (U: in the PCA, not in the fit); L2: three
    deltas = {("L1", g): rng.normal(size=12) for g in ("g0", "g1", "g2", "g3", "g4", "U")}
    deltas.update({("L2", g): rng.normal(size=12) for g in ("g0", "g5", "g6")})
    deltas[("L1", "g1+g2")] = rng.normal(size=12)  # combinations are not columns of the model
    conds = [("L1", "g7"), ("L1", "Z"), ("L1", "g0"), ("L1", "g0+g7"), ("L1", "g7+g8"), ("L1", "g1+g2"),
             ("L2", "g7"), ("L3", "g7"), ("L2", "g1")]
    ref = rng.normal(size=(len(conds), 12))
    got = linear(deltas, conds, ref, genes, ctrl)

    def singles_of(line):
        return {p: d for (l, p), d in deltas.items() if l == line and "+" not in p}

    f1 = reference_linear(singles_of("L1"), ctrl["L1"], genes)
    f2 = reference_linear(singles_of("L2"), ctrl["L2"], genes)
    # L3 has no training singles: the per-gene mean over lines, with L3's controls
    pooled = {}
    for (_, p), d in deltas.items():
        if "+" not in p:
            pooled.setdefault(p, []).append(d)
    f3 = reference_linear({p: np.mean(v, axis=0) for p, v in pooled.items()}, ctrl["L3"], genes)
    glob1 = np.mean(list(singles_of("L1").values()), axis=0)
    expect = [f1("g7"), glob1, deltas[("L1", "g0")], deltas[("L1", "g0")] + f1("g7"), f1("g7") + f1("g8"),
              deltas[("L1", "g1+g2")], f2("g7"), f3("g7"),
              deltas[("L1", "g1")]]  # g1 trained only in L1: its change there, as general does
    np.testing.assert_allclose(got - ref, expect, atol=1e-9)
    assert f1("Z") is None  # unmeasured and never trained: general's Δ̄
    # seen conditions and unmeasured genes are exactly the general baseline
    base = general(deltas, conds, ref)
    for k in (1, 2, 5, 8):
        np.testing.assert_allclose(got[k], base[k])


def test_linear_needs_two_measured_training_singles():
    genes = ["g0", "g1", "g2"]
    deltas = {("all", "g0"): np.array([1.0, 0.0, 0.0]), ("all", "U"): np.array([0.0, 2.0, 0.0])}
    ref = np.zeros((1, 3))
    got = linear(deltas, [("all", "g1")], ref, genes, {"all": np.ones(3)})
    np.testing.assert_allclose(got, general(deltas, [("all", "g1")], ref))  # one measured single: Δ̄


# ---------------------------------------------------------------------- linear_graph
def small_graph():
    """A 24-node connected two-layer graph (with a self-loop and a zero-weight edge, both ignored), plus a
    separate two-node component P–Q."""
    g = synthetic_graph(24, seed=4)
    src, dst = g.nodes[g.edge_index[0]].tolist(), g.nodes[g.edge_index[1]].tolist()
    other = MultiGraph.from_edges("other", ["G0", "G3", "G5", "G7", "P"], ["G9", "G3", "G11", "G2", "Q"],
                                  [0.7, 1.0, 0.3, 0.0, 1.0])
    return MultiGraph.merge([MultiGraph.from_edges("synthetic", src, dst, g.edge_weight), other])


def test_spectral_embedding_is_the_normalized_laplacian_of_the_largest_component():
    g = small_graph()
    lookup, E = spectral_embedding(g)
    ref_lookup, ref = reference_spectral(g)
    assert lookup == ref_lookup and "P" not in lookup and len(lookup) == 24
    assert E.shape == (24, LINEAR_DIM)
    # the same subspace, eigenvector by eigenvector (up to sign): non-degenerate spectrum here
    np.testing.assert_allclose(np.abs(E.T @ ref) / 24, np.eye(LINEAR_DIM), atol=1e-8)
    np.testing.assert_allclose((E ** 2).mean(axis=0), 1.0)  # unit root mean square
    # eigsh (large graphs) and dense eigh (small ones) agree, and both are deterministic
    lookup2, E2 = spectral_embedding(g, dense_max=0)
    assert lookup2 == lookup
    np.testing.assert_allclose(np.abs(E2.T @ E) / 24, np.eye(LINEAR_DIM), atol=1e-6)
    np.testing.assert_array_equal(spectral_embedding(g, dense_max=0)[1], E2)
    assert spectral_embedding(MultiGraph.from_edges("x", ["A"], ["B"], [1.0]))[1].shape == (0, 0)


def test_linear_graph_matches_the_numpy_reference_for_measured_and_unmeasured_genes():
    rng = np.random.default_rng(5)
    g = small_graph()
    genes = [f"G{i}" for i in range(0, 30, 2)] + ["M1", "M2"]  # measured: even graph genes + two outside
    G = len(genes)
    ctrl = {"all": rng.normal(2.0, 1.0, G)}
    trained = ["G0", "G1", "G2", "G3", "G4", "G5", "G6", "P", "M1"]  # P: other component, M1: not in the graph
    deltas = {("all", p): rng.normal(size=G) for p in trained}
    conds = [("all", "G7"), ("all", "G8"), ("all", "Q"), ("all", "NOPE"), ("all", "G2"), ("all", "G7+G9"),
             ("all", "G7+NOPE")]
    ref = np.zeros((len(conds), G))
    got = linear_graph(deltas, conds, ref, ctrl, g)
    f = reference_linear({p: deltas[("all", p)] for p in trained}, ctrl["all"], genes, *reference_spectral(g))
    glob = np.mean([deltas[("all", p)] for p in trained], axis=0)
    expect = [f("G7"), f("G8"), glob, glob, deltas[("all", "G2")], f("G7") + f("G9"), f("G7") + glob]
    np.testing.assert_allclose(got, expect, atol=1e-8)
    assert not np.allclose(f("G7"), glob)  # G7 is not measured, yet gets a model prediction
    # a precomputed embedding gives the same
    np.testing.assert_array_equal(linear_graph(deltas, conds, ref, ctrl, g, embedding=spectral_embedding(g)), got)


# ---------------------------------------------------------------------- wiring
def test_run_baselines_includes_the_linear_baselines_where_they_apply():
    data = synthetic_data(n_cells=900, n_genes=30, n_perts=12, seed=5)
    graph = synthetic_graph(30, seed=5)
    split = make_split(data, "unseen_single", seed=0)
    assert BASELINES.index("linear") < BASELINES.index("split_half")
    res = run_baselines(data, split, graph=graph, split_half_seeds=0)
    assert {"general", "graph_neighbours", "linear", "linear_graph"} == set(res)
    controls = ControlIndex(data)
    rows = rows_by_condition(data)
    _, ref = true_profiles(data, controls, split.test, rows)
    mean, tref = true_profiles(data, controls, split.train, rows)
    deltas = {c: mean[k] - tref[k] for k, c in enumerate(split.train)}
    ctrl = {"all": np.asarray(data.X[controls.by_line["all"]].mean(axis=0)).ravel()}
    np.testing.assert_allclose(res["linear"]["pred"], linear(deltas, split.test, ref, data.genes, ctrl))
    np.testing.assert_allclose(res["linear_graph"]["pred"], linear_graph(deltas, split.test, ref, ctrl, graph))
    for name in ("linear", "linear_graph"):
        assert np.isfinite(res[name]["summary"]["pearson_delta"])
        assert len(res[name]["table"]) == len(split.test)
        assert name in VCC_BASELINES and name in BASELINE_LABELS
    # no graph: no linear_graph; no measured perturbed gene: no linear
    assert "linear_graph" not in run_baselines(data, split, split_half_seeds=0)
    renamed = PerturbData(data.X, [f"H{i}" for i in range(data.n_genes)], data.condition, data.cell_line, data.batch)
    res = run_baselines(renamed, split, which=("general", "linear", "linear_graph"), graph=graph, split_half_seeds=0)
    assert set(res) == {"general", "linear_graph"}


@pytest.mark.parametrize("task", ["double"])
def test_linear_on_combinations_of_seen_singles_is_the_general_baseline(task):
    data = synthetic_data(n_cells=900, n_genes=30, n_perts=12, n_doubles=6, seed=2)
    split = make_split(data, task, seed=0)
    res = run_baselines(data, split, which=("general", "linear"), split_half_seeds=0)
    # every constituent was trained as a single: nothing is left for the linear model to predict
    np.testing.assert_allclose(res["linear"]["pred"], res["general"]["pred"])
