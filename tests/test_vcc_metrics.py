"""Virtual Cell Challenge metrics on hand-computed examples (txpert_head.metrics.vcc)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import false_discovery_control

from txpert_head.metrics.vcc import (
    DECall,
    benjamini_hochberg,
    call_de_genes,
    cell_mean_baseline,
    des_from_calls,
    label_gene_indices,
    log2_fold_change,
    pds_scores,
    pseudobulk_mae,
    scale_against_baseline,
    target_indices_from_names,
    top_change_mae,
    vcc_pearson_delta,
    vcc_scores,
    wilcoxon_pvalues,
)


# ---------------------------------------------------------------------------- BH
def test_bh_hand_computed():
    # sorted p: .01 .03 .04 .2 ; p*m/i: .04 .06 .0533 .2 ; running min from the top: .04 .0533 .0533 .2
    q = benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.2]))
    np.testing.assert_allclose(q, [0.04, 0.16 / 3, 0.16 / 3, 0.2])


def test_bh_caps_at_one_and_nan_is_one():
    # p*m/i = 1.5, 1.35, 1.0 -> running min 1.0 everywhere; NaN counts as p = 1
    np.testing.assert_allclose(benjamini_hochberg(np.array([0.5, 0.9, np.nan])), [1.0, 1.0, 1.0])
    assert benjamini_hochberg(np.array([])).size == 0


def test_bh_matches_scipy():
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(size=200), rng.uniform(0, 1e-3, size=20)])
    np.testing.assert_allclose(benjamini_hochberg(p), false_discovery_control(p), rtol=1e-12)


def test_bh_rejects_out_of_range():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        benjamini_hochberg(np.array([0.1, 1.5]))


# ---------------------------------------------------------------------------- Wilcoxon / DE call
def _control(n: int = 40, g: int = 6, seed: int = 1) -> np.ndarray:
    """log1p of Poisson counts: non-negative log-expression, as the VCC (cell-eval) requires."""
    return np.log1p(np.random.default_rng(seed).poisson(4.0, size=(n, g))).astype(float)


def test_wilcoxon_identical_sample_p_is_one_and_shift_is_significant():
    ctrl = _control()
    cells = ctrl.copy()
    cells[:, 2] += 10.0
    p = wilcoxon_pvalues(cells, ctrl, chunk_genes=4)  # chunking crosses gene 3/4 boundary
    np.testing.assert_allclose(np.delete(p, 2), 1.0)
    assert p[2] < 1e-10


@pytest.mark.parametrize("seed", range(6))
def test_wilcoxon_is_scipys_mannwhitneyu_to_the_last_bit(seed):
    """The sorted-value kernel gives scipy's asymptotic two-sided p-values exactly: ties (rounded values, the
    zeros of single cells), point masses, one cell, negative values, a constant gene, ControlCells reused."""
    from scipy.stats import mannwhitneyu

    from txpert_head.metrics.vcc import ControlCells

    rng = np.random.default_rng(seed)
    for _ in range(40):
        n1, n2, g = (int(v) for v in rng.integers(1, 40, size=3))
        x = np.round(rng.normal(size=(n1, g)), int(rng.integers(0, 3)))
        y = np.round(rng.normal(size=(n2, g)), int(rng.integers(0, 3)))
        if rng.random() < 0.3:
            x[:] = x[0]  # a point mass (a replicated mean)
        if rng.random() < 0.3:
            x[:, 0], y[:, 0] = 1.5, 1.5  # constant over both groups: p = 1
        expected = mannwhitneyu(x, y, axis=0, alternative="two-sided", method="asymptotic").pvalue
        expected = np.clip(np.where(np.isnan(expected), 1.0, expected), 0.0, 1.0)
        control = ControlCells(y)
        for got in (wilcoxon_pvalues(x, y), wilcoxon_pvalues(x, control, chunk_genes=3)):
            assert np.array_equal(got, expected)
    cells = np.log1p(rng.poisson(0.3, size=(256, 500))).astype(np.float32).astype(float)  # single-cell-like
    ctrl = np.log1p(rng.poisson(0.25, size=(600, 500))).astype(np.float32).astype(float)
    expected = mannwhitneyu(cells, ctrl, axis=0, method="asymptotic").pvalue
    assert np.array_equal(wilcoxon_pvalues(cells, ctrl), np.where(np.isnan(expected), 1.0, expected))
    cells[4, 3], ctrl[5, 2] = np.inf, -np.inf
    expected = mannwhitneyu(cells[:, :4], ctrl[:50, :4], axis=0, method="asymptotic").pvalue
    assert np.array_equal(wilcoxon_pvalues(cells[:, :4], ctrl[:50, :4]), expected)
    y = ctrl[:50, :4].copy()
    y[3, 1] = np.nan
    p = wilcoxon_pvalues(cells[:, :4], y)
    assert p[1] == 1.0 and np.array_equal(np.delete(p, 1), np.delete(wilcoxon_pvalues(cells[:, :4], ctrl[:50, :4]), 1))


def test_log2_fold_change_is_pdex_s():
    # log2(expm1(m) / expm1(c)); 0/0 -> 0; one-sided zero -> +-inf
    lfc = log2_fold_change(np.array([np.log(5.0), 0.0, 1.0, 0.0]), np.array([np.log(2.0), 0.0, 0.0, 1.0]))
    np.testing.assert_allclose(lfc[:2], [np.log2(4.0 / 1.0), 0.0])
    assert lfc[2] == np.inf and lfc[3] == -np.inf


def test_call_de_genes_orders_by_abs_log2_fold_change_of_expm1_means():
    ctrl = _control()
    cells = ctrl.copy()
    cells[:, 0] += 0.5
    cells[:, 3] = 0.0                      # knocked out: lfc = -inf, the largest |lfc|
    cells[:, 5] += 1.0
    call = call_de_genes(cells, ctrl)
    assert call.genes.tolist() == [3, 5, 0]
    m, c = cells.mean(0), ctrl.mean(0)
    np.testing.assert_allclose(call.log_fold_change[[0, 5]], np.log2(np.expm1(m[[0, 5]]) / np.expm1(c[[0, 5]])))
    assert call.log_fold_change[3] == -np.inf


def test_call_de_genes_ties_by_gene_index_and_strict_alpha():
    ctrl = _control(g=4)
    cells = ctrl.copy()
    cells[:, 1] += 1.0
    cells[:, 2] = cells[:, 1]              # genes 1 and 2 ... same change only if the controls agree:
    ctrl2 = ctrl.copy()
    ctrl2[:, 2] = ctrl2[:, 1]              # ... make them agree: equal |lfc|, order by index
    call = call_de_genes(cells, ctrl2)
    assert call.genes.tolist() == [1, 2]
    # a gene with q exactly at alpha is not DE (cell-eval: fdr < alpha)
    q = call.qvalues[1]
    assert call_de_genes(cells, ctrl2, alpha=float(q)).genes.size == 0


# ---------------------------------------------------------------------------- DES
def _call(genes: list[int], g: int = 10) -> DECall:
    return DECall(qvalues=np.ones(g), log_fold_change=np.zeros(g), genes=np.array(genes, dtype=np.int64))


def test_des_hand_cases():
    assert des_from_calls(_call([1, 2]), _call([1, 2, 3])) == pytest.approx(2 / 3)
    # predicted set larger than the truth: keep its first |true| = 3 genes (largest |lfc|): 5, 1, 2
    assert des_from_calls(_call([5, 1, 2, 7]), _call([1, 2, 3])) == pytest.approx(2 / 3)
    assert des_from_calls(_call([1, 2, 3, 5]), _call([1, 2, 3])) == 1.0
    # empty truth: 0 whatever the prediction (cell-eval's overlap_at_N; the old definition gave 1 to [] vs [])
    assert des_from_calls(_call([]), _call([])) == 0.0
    assert des_from_calls(_call([4]), _call([])) == 0.0
    assert des_from_calls(_call([]), _call([4])) == 0.0


def test_des_truncation_by_fold_change_through_the_test():
    ctrl = _control()
    true = ctrl.copy()
    true[:, 0] += 3.0                      # truth: only gene 0 is DE
    weak_right = ctrl.copy()
    weak_right[:, 0] += 1.0
    weak_right[:, 3] += 5.0                # predicted DE {0, 3}; 3 changes most -> truncated to {3}
    strong_right = ctrl.copy()
    strong_right[:, 0] += 5.0
    strong_right[:, 3] += 1.0              # truncated to {0}
    t = call_de_genes(true, ctrl)
    assert t.genes.tolist() == [0]
    assert des_from_calls(call_de_genes(weak_right, ctrl), t) == 0.0
    assert des_from_calls(call_de_genes(strong_right, ctrl), t) == 1.0


# ---------------------------------------------------------------------------- PDS
TRUE_PB = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])


def test_pds_hand_computed():
    # cell-eval's discrimination_score_l1: PDS_p = 1 - rank_p / N, rank 0 = own truth nearest
    # (the old definition was 1 - (closer + ties/2) / (N - 1))
    pred = np.array([[0.1, 0.0], [0.0, 0.0], [0.0, 2.0]])
    # row 0: d = .1, .9, 2.1 -> rank 0 -> 1
    # row 1: d = 0, 1, 2 -> rank 1 -> 1 - 1/3
    # row 2: d = 2, 3, 0 -> rank 0 -> 1
    np.testing.assert_allclose(pds_scores(pred, TRUE_PB), [1.0, 2 / 3, 1.0])


def test_pds_ties_follow_argsort_and_exclusion():
    pred = np.array([[0.0, 0.0], [0.5, 0.0], [0.0, 2.0]])
    # row 1: d = .5, .5, 2.5 -> numpy's argsort puts q = 0 first -> rank 1 -> 1 - 1/3
    np.testing.assert_allclose(pds_scores(pred, TRUE_PB)[1], 2 / 3)
    pred = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 2.0]])
    # row 1 without gene 0: d = 0, 0, 2 -> rank 1 ; row 0 keeps all genes: d = 0, 1, 2 -> rank 0
    np.testing.assert_allclose(pds_scores(pred, TRUE_PB, exclude=[[], [0], []]), [1.0, 2 / 3, 1.0])


def test_pds_constant_prediction_and_single():
    true = np.random.default_rng(3).normal(size=(7, 20))
    pred = np.tile(true.mean(axis=0), (7, 1))
    # the ranks of a constant prediction are a permutation of 0..N-1: mean PDS = (N + 1) / (2N)
    assert pds_scores(pred, true).mean() == pytest.approx(8 / 14, abs=1e-12)
    assert pds_scores(true[:1], true[:1]).tolist() == [1.0]


# ---------------------------------------------------------------------------- MAE, scaling
def test_top_change_mae_hand_computed():
    true = np.array([0.0, 1.0, -3.0, 0.5])
    pred = np.array([1.0, 1.0, -1.0, 0.5])
    ctrl = np.zeros(4)
    assert top_change_mae(pred, true, ctrl, top_k=2) == pytest.approx(1.0)   # genes 2, 1: (2 + 0)/2
    assert top_change_mae(pred, true, ctrl, top_k=10) == pytest.approx(0.75)  # all: (1+0+2+0)/4


def test_scale_against_baseline():
    assert scale_against_baseline(0.6, 0.2, 1.0) == pytest.approx(0.5)
    assert scale_against_baseline(1.5, 2.0, 0.0) == pytest.approx(0.25)
    assert scale_against_baseline(0.1, 0.2, 1.0) == 0.0  # worse than baseline: clipped
    assert scale_against_baseline(3.0, 2.0, 0.0) == 0.0
    # undefined (baseline already perfect) or NaN counts 0, as in cell-eval score
    assert scale_against_baseline(1.0, 1.0, 1.0) == 0.0
    assert scale_against_baseline(0.0, 0.0, 0.0) == 0.0
    assert scale_against_baseline(float("nan"), 0.5, 1.0) == 0.0


def test_mae_and_vcc_pearson_delta():
    assert pseudobulk_mae(np.array([1.0, 1.0, -1.0, 0.5]), np.array([0.0, 1.0, -3.0, 0.5])) == pytest.approx(0.75)
    ctrl = np.array([1.0, 1.0, 1.0])
    assert vcc_pearson_delta(np.array([2.0, 1.0, 0.0]), np.array([3.0, 1.0, -1.0]), ctrl) == pytest.approx(1.0)
    assert np.isnan(vcc_pearson_delta(ctrl, np.array([3.0, 1.0, -1.0]), ctrl))  # no predicted change


def test_target_indices_from_names():
    assert target_indices_from_names(["A", "B+C", "Z"], ["C", "A", "B"]) == [[1], [2, 0], []]


def test_label_gene_indices_excludes_only_a_gene_named_like_the_label():
    assert label_gene_indices(["A", "B+C", "Z", "C"], ["C", "A", "B"]) == [[1], [], [], [0]]


# ---------------------------------------------------------------------------- the whole block
def _dataset(seed: int = 0, g: int = 30, n_pert: int = 4, n_cells: int = 25):
    rng = np.random.default_rng(seed)
    control = np.log1p(rng.poisson(3.0, size=(60, g))).astype(float)
    true = {}
    for k in range(n_pert):
        cells = np.log1p(rng.poisson(3.0, size=(n_cells, g))).astype(float)
        cells[:, 3 * k: 3 * k + 3] += 1.5 + k          # each perturbation moves its own genes
        cells[:, 3 * k + 3] = 0.0                        # and knocks one gene down
        true[f"G{k}"] = cells
    return control, true


def test_vcc_perfect_scores_maximum_and_baseline_scores_zero():
    control, true = _dataset()
    base = cell_mean_baseline(np.vstack(list(true.values())), {p: len(c) for p, c in true.items()})
    perfect = vcc_scores({p: c.copy() for p, c in true.items()}, true, control, base)
    assert perfect["des"] == 1.0 and perfect["pds"] == 1.0 and perfect["mae"] == 0.0
    assert perfect["score"] == pytest.approx(100.0)
    assert perfect["scaled"] == {"des": 1.0, "pds": 1.0, "mae": 1.0}
    assert set(perfect["per_perturbation"]) == set(true)
    assert all(v["n_de_true"] > 0 for v in perfect["per_perturbation"].values())
    # the baseline itself: PDS exactly (N + 1) / 2N (constant prediction), scaled all 0, S = 0
    baseline = vcc_scores(base, true, control, base)
    assert baseline["pds"] == pytest.approx(5 / 8)
    assert baseline["score"] == 0.0
    assert perfect["baseline"] == pytest.approx(baseline["baseline"])
    assert baseline["baseline"]["mae"] > 0 and baseline["baseline"]["des"] < 1


def test_vcc_partial_model_between_and_scaling_consistent():
    control, true = _dataset()
    base = cell_mean_baseline(np.vstack(list(true.values())), {p: len(c) for p, c in true.items()})
    rng = np.random.default_rng(5)
    noisy = {p: c + rng.normal(0, 0.4, size=c.shape) for p, c in true.items()}
    out = vcc_scores(noisy, true, control, base)
    assert 0.0 < out["score"] < 100.0
    s = out["scaled"]
    assert s["mae"] == pytest.approx(1 - out["mae"] / out["baseline"]["mae"])
    assert out["score"] == pytest.approx(100 * (s["des"] + s["pds"] + s["mae"]) / 3)
    assert out["des"] == pytest.approx(np.mean([v["des"] for v in out["per_perturbation"].values()]))


def test_vcc_without_baseline_and_mean_only_predictions():
    control, true = _dataset()
    out = vcc_scores({p: c.mean(axis=0) for p, c in true.items()}, true, control)
    assert out["score"] is None and out["scaled"] is None and out["baseline"] is None
    assert out["pds"] == 1.0 and out["mae"] == pytest.approx(0.0)
    # a (G,) mean is treated exactly like that mean replicated to the true set size
    rep = vcc_scores({p: np.tile(c.mean(axis=0), (len(c), 1)) for p, c in true.items()}, true, control)
    assert out["per_perturbation"] == rep["per_perturbation"]


def test_vcc_target_exclusion_passes_through():
    control, true = _dataset(n_pert=3)
    true["B"] = true["G0"].copy()
    true["B"][:, 0] += 4.0                               # B differs from G0 only on gene 0
    pred = {p: c.copy() for p, c in true.items()}
    pred["G0"] = true["B"].copy()                        # G0 predicted wrong only on gene 0 ...
    full = vcc_scores(pred, true, control)
    excl = vcc_scores(pred, true, control, exclude_genes={"G0": [0]})  # ... which is then ignored
    # with gene 0: d(G0) > d(B) = 0 -> rank 1 of N = 4 -> 0.75; without: tie with B, which argsort puts
    # after G0 (index order) -> rank 0 -> 1
    assert full["per_perturbation"]["G0"]["pds"] == pytest.approx(0.75)
    assert excl["per_perturbation"]["G0"]["pds"] == 1.0
    assert excl["per_perturbation"]["B"]["pds"] == 1.0


def test_vcc_bad_input_messages():
    control, true = _dataset()
    pred = {p: c for p, c in true.items() if p != "G2"}
    with pytest.raises(ValueError, match=r"missing \['G2'\]"):
        vcc_scores(pred, true, control)
    bad = dict(true)
    bad["G0"] = true["G0"][:, :5]
    with pytest.raises(ValueError, match="G0"):
        vcc_scores(bad, true, control)
    nan = {p: c.copy() for p, c in true.items()}
    nan["G3"][0, 0] = np.nan
    with pytest.raises(ValueError, match="G3.*NaN"):
        vcc_scores(nan, true, control)
    with pytest.raises(ValueError, match="exclude_genes"):
        vcc_scores(true, true, control, exclude_genes={"nope": [0]})


# ---------------------------------------------------------------------------- real data
def test_vcc_on_norman_subset(shared_data):
    """On the real Norman 2019 subset: truth scores 100, the cell-mean baseline 0, and one random half
    of each perturbation's cells predicting the other half lands in between with high PDS."""
    anndata = pytest.importorskip("anndata")
    adata = anndata.read_h5ad(shared_data / "perturbseq" / "norman2019_k562_subset.h5ad")
    x = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X, dtype=float)
    cond = adata.obs["condition"].astype(str).to_numpy()
    control = x[cond == "control"]
    perts = sorted(set(cond) - {"control"})
    exclude = dict(zip(perts, label_gene_indices(perts, adata.var_names.tolist())))
    rng = np.random.default_rng(0)
    half_pred, half_true = {}, {}
    for p in perts:
        idx = rng.permutation(np.flatnonzero(cond == p))
        half_pred[p], half_true[p] = x[idx[: len(idx) // 2]], x[idx[len(idx) // 2:]]
    base = cell_mean_baseline(x[cond != "control"], {p: len(c) for p, c in half_true.items()})
    perfect = vcc_scores(half_true, half_true, control, base, exclude_genes=exclude)
    # a truth without DE genes scores DES 0 even for a perfect prediction (cell-eval), so perfect S is 100 only
    # when every perturbation has DE genes; PDS and MAE are perfect regardless
    share = np.mean([v["n_de_true"] > 0 for v in perfect["per_perturbation"].values()])
    assert perfect["des"] == pytest.approx(share) and perfect["pds"] == 1.0 and perfect["mae"] == 0.0
    assert perfect["scaled"]["pds"] == 1.0 and perfect["scaled"]["mae"] == 1.0
    assert perfect["score"] == pytest.approx(100 * (perfect["scaled"]["des"] + 2) / 3)
    assert perfect["score"] > 80.0
    assert vcc_scores(base, half_true, control, base, exclude_genes=exclude)["score"] == 0.0
    half = vcc_scores(half_pred, half_true, control, base, exclude_genes=exclude)
    assert 20.0 < half["score"] < 100.0
    n = len(perts)
    # a constant prediction ranks like chance, (N + 1) / 2N (not exact: the excluded gene differs per row)
    assert half["pds"] > 0.8 and half["baseline"]["pds"] == pytest.approx((n + 1) / (2 * n), abs=0.05)
