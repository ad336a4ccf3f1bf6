"""Metrics and baselines on hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from txpert_head.metrics import expression as metrics
from kgbuild.graph import MultiGraph
from txpert_head.evaluation.baselines import additive, general, graph_neighbours
from txpert_head.data.controls import ControlIndex
from txpert_head.data.perturb_data import PerturbData
from txpert_head.data.profiles import true_profiles


def test_retrieval_perfect_shuffled_negated():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(200, 50))
    assert np.all(metrics.retrieval(true, true) == 1.0)
    assert np.all(metrics.retrieval(-true, true) == 0.0)
    shuffled = true[rng.permutation(200)]
    assert abs(np.nanmean(metrics.retrieval(shuffled, true)) - 0.5) < 0.05
    # fast variant: 100 references per perturbation, same extremes
    assert np.all(metrics.retrieval(true, true, n_reference=100, seed=1) == 1.0)
    assert abs(np.nanmean(metrics.retrieval(shuffled, true, n_reference=100, seed=1)) - 0.5) < 0.06


def test_retrieval_hand_computed():
    true = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    # prediction for p0 is closer to p1's truth than to its own: beats only p2 -> 1/2
    pred = np.array([[0.4, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert metrics.retrieval(pred, true).tolist() == [0.5, 1.0, 1.0]


def test_pearson_and_mse_hand_computed():
    pred = np.array([[1.0, 2.0, 3.0]])
    true = np.array([[2.0, 4.0, 6.0]])
    assert metrics.pearson_delta(pred, true)[0] == pytest.approx(1.0)
    assert metrics.mse(pred, true)[0] == pytest.approx((1 + 4 + 9) / 3)
    assert np.isnan(metrics.pearson_delta(np.ones((1, 3)), true)[0])


def _two_batch_data():
    """Two batches with different control levels; perturbation P raises gene 0 by +1 in both batches.

    Batch b1 controls: [0, 0, 0]; batch b2 controls: [4, 4, 0]. P has 1 cell in b1 ([1, 0, 0]) and 3 in
    b2 ([5, 4, 0]). Batch-matched reference r_P = (1*[0,0,0] + 3*[4,4,0]) / 4 = [3, 3, 0]; true mean
    x̄_P = ([1,0,0] + 3*[5,4,0]) / 4 = [4, 3, 0], so δ_P = [1, 0, 0]. A pooled control mean
    ([0,0,0]*2 + [4,4,0]*2)/4 = [2,2,0] would give δ = [2, 1, 0] instead.
    """
    X = np.array([[0, 0, 0], [0, 0, 0], [4, 4, 0], [4, 4, 0],
                  [1, 0, 0], [5, 4, 0], [5, 4, 0], [5, 4, 0]], dtype=np.float32)
    cond = ["ctrl"] * 4 + ["P"] * 4
    batch = ["b1", "b1", "b2", "b2", "b1", "b2", "b2", "b2"]
    return PerturbData(sp.csr_matrix(X), ["A", "B", "C"], cond, ["all"] * 8, batch)


def test_pearson_delta_uses_batch_matched_control_means():
    data = _two_batch_data()
    controls = ControlIndex(data)
    mean, ref = true_profiles(data, controls, [("all", "P")])
    np.testing.assert_allclose(ref[0], [3, 3, 0])
    np.testing.assert_allclose(mean[0] - ref[0], [1, 0, 0])
    # A prediction ŷ = [3, 2, 0] (the pooled control mean + [1, 0, 0]). Against the batch-matched reference
    # δ̂ = [0, -1, 0] vs δ = [1, 0, 0]: centred [1,-2,1]/3 and [2,-1,-1]/3 -> corr = 3 / 6 = 0.5.
    # Against the pooled control mean it would be corr([1,0,0], [2,1,0]) = 0.866.
    pred = np.array([[3.0, 2.0, 0.0]])
    table, summary = metrics.evaluate(["P"], pred, mean, ref)
    assert summary["pearson_delta"] == pytest.approx(0.5)
    pooled = np.asarray(data.X[:4].mean(axis=0))
    np.testing.assert_allclose(pooled[0], [2, 2, 0])
    assert metrics.pearson_delta(pred - pooled, mean - pooled)[0] == pytest.approx(np.sqrt(3) / 2)


def test_general_and_additive_baselines():
    ref = np.zeros((2, 3))
    deltas = {("all", "A"): np.array([1.0, 0, 0]), ("all", "B"): np.array([0, 2.0, 0]),
              ("all", "C"): np.array([0, 0, 3.0])}
    got = general(deltas, [("all", "A"), ("all", "Z")], ref)
    np.testing.assert_allclose(got, [[1, 0, 0], [1 / 3, 2 / 3, 1]])  # seen; unseen -> global mean
    got = additive(deltas, [("all", "A+B"), ("all", "A+Z")], ref)
    np.testing.assert_allclose(got, [[1, 2, 0], [1, 0, 0]])
    got = general(deltas, [("all", "A+Z")], ref[:1])
    np.testing.assert_allclose(got, [[1 + 1 / 3, 2 / 3, 1]])


def test_graph_neighbours_baseline():
    ref = np.zeros((4, 3))
    deltas = {("all", "A"): np.array([1.0, 0, 0]), ("all", "B"): np.array([0, 2.0, 0]),
              ("all", "C"): np.array([0, 0, 3.0])}
    # Z <- A (0.5 in two layers: 1.0 in all), Z <- B (2.0), Z <- U (untrained), Z -> C (outgoing: ignored);
    # Y <- U only; A <- B (A was trained: its own change wins)
    g = MultiGraph.merge([
        MultiGraph.from_edges("string", ["A", "B", "U", "Z", "B"], ["Z", "Z", "Z", "C", "A"], [0.5, 2.0, 0.9, 1, 1]),
        MultiGraph.from_edges("go", ["A", "U"], ["Z", "Y"], [0.5, 1.0]),
    ])
    got = graph_neighbours(deltas, [("all", "Z"), ("all", "Y"), ("all", "A"), ("all", "Z+C")], ref, g)
    z = (1.0 * deltas[("all", "A")] + 2.0 * deltas[("all", "B")]) / 3.0
    glob = np.array([1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(got, [z, glob, [1, 0, 0], z + [0, 0, 3]])
    # genes outside the graph fall back to the general baseline
    np.testing.assert_allclose(graph_neighbours(deltas, [("all", "Q")], ref[:1], g), [glob])


def test_constant_prediction_scores_as_uninformative():
    true = np.random.default_rng(0).normal(size=(3, 5))
    ref = np.zeros((3, 5))
    pred = true.copy()
    pred[1] = 0.0  # "no change" for the second perturbation
    table, summary = metrics.evaluate(["a", "b", "c"], pred, true, ref)
    assert table["pearson_delta"].tolist()[1] == 0.0 and table["retrieval"].tolist()[1] == 0.5
    assert summary["pearson_delta"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------------- systematic variation (Systema, PerturBench)
def test_pearson_delta_against_the_perturbed_mean_hand_computed():
    """δ_A = [3,1,0], δ_B = [1,3,0], δ_C = [2,2,3]: perturbed mean δ̄ = [2,2,1].

    Predicting δ̄ for every perturbation (Systema's "perturbed mean" baseline) looks good against the
    controls: for A, corr([2,2,1], [3,1,0]) = (4/3) / (√(6/9)·√(42/9)) = 4/√28 ≈ 0.756; against the
    perturbed mean it is a constant (zero) centred prediction: 0. The truth scores 1 on both.
    """
    true = np.array([[3.0, 1, 0], [1, 3, 0], [2, 2, 3]])
    mean_pred = np.tile([2.0, 2, 1], (3, 1))
    table, summary = metrics.evaluate(["A", "B", "C"], mean_pred, true, np.zeros((3, 3)))
    assert table["pearson_delta"][0] == pytest.approx(4 / np.sqrt(28))
    assert table["pearson_delta_pert"].tolist() == [0.0, 0.0, 0.0]
    perfect, s2 = metrics.evaluate(["A", "B", "C"], true, true, np.zeros((3, 3)))
    assert s2["pearson_delta_pert"] == pytest.approx(1.0) and s2["centroid_accuracy"] == 1.0
    assert s2["perturbench_rank"] == 0.0
    # a prediction with A's own pattern on top of the mean: centred [1,0,0] vs [1,-1,-1] -> corr 1
    got = metrics.pearson_delta_pert([[3.0, 2, 1]], true[:1], true, ["", "", ""], [""])
    assert got[0] == pytest.approx(1.0)
    # against the controls the same prediction scores corr([3,2,1], [3,1,0]) = 3 / (√2·√(42/9)) ≈ 0.982
    assert metrics.pearson_delta([[3.0, 2, 1]], true[:1])[0] == pytest.approx(3 / (np.sqrt(2) * np.sqrt(42 / 9)))


def test_perturbed_mean_is_taken_within_the_cell_line():
    # line L1: δ = [1,0,0], [0,1,0] -> δ̄ = [.5,.5,0]; line L2 holds a far-off condition that must not count
    cand = np.array([[1.0, 0, 0], [0, 1, 0], [0, 3, 6]])
    lines = ["L1", "L1", "L2"]
    pred = np.array([[0.2, 1.0, 0.1]])
    got = metrics.pearson_delta_pert(pred, cand[:1], cand, lines, ["L1"])
    want = metrics.row_pearson(pred - [0.5, 0.5, 0], cand[:1] - [0.5, 0.5, 0])
    assert got[0] == pytest.approx(want[0])
    mixed = metrics.row_pearson(pred - cand.mean(0), cand[:1] - cand.mean(0))
    assert abs(got[0] - mixed[0]) > 1e-3


def test_centroid_accuracy_hand_computed():
    """True centroids A = [0,0], B = [2,0], C = [0,2].

    Prediction for A at [1.2, 0]: distances A 1.2, B 0.8, C √5.44 ≈ 2.33 -> only C is farther: 1/2.
    Prediction for B at [2, 0]: its own centroid, both others farther: 1.
    Prediction for C at [1, 1]: √2 from all three -> ties are not "farther" (Systema uses >): 0.
    """
    cand = np.array([[0.0, 0], [2, 0], [0, 2]])
    pred = np.array([[1.2, 0], [2, 0], [1, 1]])
    assert metrics.centroid_accuracy(pred, cand, [0, 1, 2]).tolist() == [0.5, 1.0, 0.0]
    # a centroid of another cell line is not a candidate: D = [1.2, 0] in L2 does not beat A's own
    cand4 = np.vstack([cand, [1.2, 0]])
    got = metrics.centroid_accuracy(pred, cand4, [0, 1, 2], ["L1", "L1", "L1", "L2"])
    assert got.tolist() == [0.5, 1.0, 0.0]
    assert metrics.centroid_accuracy(pred, cand4, [0, 1, 2]).tolist() == [1 / 3, 1.0, 0.0]


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_centroid_accuracy_equals_pairwise_distances(scale):
    """The Gram-identity distances give what scipy's pairwise distances give, ties included: identical
    centroids (rows 0 and 1), a prediction equidistant from two centroids (row 2), predictions on their own
    centroid and very close to it."""
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(7)
    for n, genes, noise in [(60, 500, 0.3), (200, 2000, 1e-9), (9, 3, 0.0), (120, 50, 3.0)]:
        cand = scale * rng.normal(size=(n, genes))
        cand[1] = cand[0]
        pred = cand + scale * noise * rng.normal(size=cand.shape)
        pred[2] = (cand[3] + cand[4]) / 2
        dist = cdist(pred, cand)
        want = (dist > dist[np.arange(n), np.arange(n)][:, None]).sum(1) / (n - 1)
        np.testing.assert_array_equal(metrics.centroid_accuracy(pred, cand, np.arange(n)), want)


def test_perturbench_rank_hand_computed():
    """True A = [1,0], B = [0,1], C = [1,1]; predictions A -> [1, 0.1], B -> [1, 0] (wrong), C -> [1, 1].

    Column A: own cos = 1/√1.01 ≈ 0.995; pred_B has cos 1 (above), pred_C 0.707: rank 1/3.
    Column B: own cos 0; pred_A 0.1/√1.01 ≈ 0.0995 and pred_C 0.707 are above: rank 2/3.
    Column C: own cos 1, the others below: rank 0.
    """
    true = np.array([[1.0, 0], [0, 1], [1, 1]])
    pred = np.array([[1.0, 0.1], [1, 0], [1, 1]])
    got = metrics.perturbench_rank(pred, true)
    np.testing.assert_allclose(got, [1 / 3, 2 / 3, 0.0])
    # within cell lines: with C alone in its line it ranks 0 of 1, A and B compare only with each other
    np.testing.assert_allclose(metrics.perturbench_rank(pred, true, ["x", "x", "y"]), [1 / 2, 1 / 2, 0.0])
    # ties count half (PerturBench breaks them by a random shuffle)
    np.testing.assert_allclose(metrics.perturbench_rank(np.ones((2, 2)), np.array([[1.0, 1], [1, 2]])), [0.25, 0.25])


def test_systematic_metrics_in_evaluate_and_candidate_lines_from_profiles():
    data = _two_batch_data()
    controls = ControlIndex(data)
    from txpert_head.data.profiles import retrieval_candidates
    cand, self_index = retrieval_candidates(data, controls, [("all", "P")])
    assert cand.lines == ["all"] and self_index.tolist() == [0]
    mean, ref = true_profiles(data, controls, [("all", "P")])
    table, summary = metrics.evaluate(["P"], mean, mean, ref, candidates=cand, self_index=self_index)
    for key in ("pearson_delta_pert", "centroid_accuracy", "perturbench_rank"):
        assert key in table.columns and key in summary
    # a single perturbation: it is the perturbed mean (centred truth is 0) -> Pearson undefined; no other
    # centroid -> NaN; rank of 1 prediction -> 0
    assert np.isnan(summary["centroid_accuracy"]) and summary["perturbench_rank"] == 0.0


def test_constant_prediction_scores_chance_on_systematic_metrics():
    true = np.random.default_rng(0).normal(size=(4, 6))
    pred = true.copy()
    pred[1] = 0.0
    table, _ = metrics.evaluate(["a", "b", "c", "d"], pred, true, np.zeros((4, 6)))
    row = table.iloc[1]
    assert row["pearson_delta_pert"] == 0.0 and row["centroid_accuracy"] == 0.5 and row["perturbench_rank"] == 0.5
