"""Virtual Cell Challenge metrics on hand-computed examples (txpert_head.vcc_metrics)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import false_discovery_control

from txpert_head.vcc_metrics import (
    DECall,
    benjamini_hochberg,
    call_de_genes,
    cell_mean_baseline,
    des_from_calls,
    pds_scores,
    scale_against_baseline,
    target_indices_from_names,
    top_change_mae,
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
    return np.random.default_rng(seed).normal(size=(n, g))


def test_wilcoxon_identical_sample_p_is_one_and_shift_is_significant():
    ctrl = _control()
    cells = ctrl.copy()
    cells[:, 2] += 10.0
    p = wilcoxon_pvalues(cells, ctrl, chunk_genes=4)  # chunking crosses gene 3/4 boundary
    np.testing.assert_allclose(np.delete(p, 2), 1.0)
    assert p[2] < 1e-10


def test_call_de_genes_orders_by_abs_fold_change():
    ctrl = _control()
    cells = ctrl.copy()
    cells[:, 0] += 2.0
    cells[:, 3] -= 7.0
    cells[:, 5] += 4.0
    call = call_de_genes(cells, ctrl)
    assert call.genes.tolist() == [3, 5, 0]
    np.testing.assert_allclose(call.log_fold_change[[0, 3, 5]], [2.0, -7.0, 4.0])


# ---------------------------------------------------------------------------- DES
def _call(genes: list[int], g: int = 10) -> DECall:
    return DECall(qvalues=np.ones(g), log_fold_change=np.zeros(g), genes=np.array(genes, dtype=np.int64))


def test_des_hand_cases():
    assert des_from_calls(_call([1, 2]), _call([1, 2, 3])) == pytest.approx(2 / 3)
    # predicted set larger than the truth: keep its first |true| = 3 genes (largest |lfc|): 5, 1, 2
    assert des_from_calls(_call([5, 1, 2, 7]), _call([1, 2, 3])) == pytest.approx(2 / 3)
    assert des_from_calls(_call([1, 2, 3, 5]), _call([1, 2, 3])) == 1.0
    # empty truth: 1 if nothing predicted, else 0
    assert des_from_calls(_call([]), _call([])) == 1.0
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
    pred = np.array([[0.1, 0.0], [0.0, 0.0], [0.0, 2.0]])
    # row 0: d = .1, .9, 2.1 -> own nearest -> 1
    # row 1: d = 0, 1, 2 -> one closer -> 1 - 1/2
    # row 2: d = 2, 3, 0 -> 1
    np.testing.assert_allclose(pds_scores(pred, TRUE_PB), [1.0, 0.5, 1.0])


def test_pds_ties_count_half_and_exclusion():
    pred = np.array([[0.0, 0.0], [0.5, 0.0], [0.0, 2.0]])
    # row 1: d = .5, .5, 2.5 -> one tie -> 1 - 0.5/2
    np.testing.assert_allclose(pds_scores(pred, TRUE_PB)[1], 0.75)
    pred = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 2.0]])
    # row 1 without gene 0: d = 0, 0, 2 -> tie with row 0 -> .75 ; row 0 keeps all genes: d = 0,1,2 -> 1
    np.testing.assert_allclose(pds_scores(pred, TRUE_PB, exclude=[[], [0], []]), [1.0, 0.75, 1.0])


def test_pds_constant_prediction_is_exactly_half_and_single_is_nan():
    true = np.random.default_rng(3).normal(size=(7, 20))
    pred = np.tile(true.mean(axis=0), (7, 1))
    assert pds_scores(pred, true).mean() == pytest.approx(0.5, abs=1e-12)
    assert np.isnan(pds_scores(true[:1], true[:1])).all()


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
    assert np.isnan(scale_against_baseline(1.0, 1.0, 1.0))


def test_target_indices_from_names():
    assert target_indices_from_names(["A", "B+C", "Z"], ["C", "A", "B"]) == [[1], [2, 0], []]


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
    # the baseline itself: PDS exactly 0.5 (constant prediction), scaled all 0, S = 0
    baseline = vcc_scores(base, true, control, base)
    assert baseline["pds"] == pytest.approx(0.5)
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
    assert s["mae"] == pytest.approx((out["baseline"]["mae"] - out["mae"]) / out["baseline"]["mae"])
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
    # with gene 0: d(G0) = 4 > d(B) = 0, one of 3 others closer -> 1 - 1/3; without: tie -> 1 - 0.5/3
    assert full["per_perturbation"]["G0"]["pds"] == pytest.approx(2 / 3)
    assert excl["per_perturbation"]["G0"]["pds"] == pytest.approx(1 - 0.5 / 3)
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
    exclude = dict(zip(perts, target_indices_from_names(perts, adata.var_names.tolist())))
    rng = np.random.default_rng(0)
    half_pred, half_true = {}, {}
    for p in perts:
        idx = rng.permutation(np.flatnonzero(cond == p))
        half_pred[p], half_true[p] = x[idx[: len(idx) // 2]], x[idx[len(idx) // 2:]]
    base = cell_mean_baseline(x[cond != "control"], {p: len(c) for p, c in half_true.items()})
    perfect = vcc_scores(half_true, half_true, control, base, exclude_genes=exclude)
    assert perfect["score"] == pytest.approx(100.0)
    assert vcc_scores(base, half_true, control, base, exclude_genes=exclude)["score"] == 0.0
    half = vcc_scores(half_pred, half_true, control, base, exclude_genes=exclude)
    assert 20.0 < half["score"] < 100.0
    assert half["pds"] > 0.8 and half["baseline"]["pds"] == pytest.approx(0.5, abs=0.05)
