"""Metrics and baselines on hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from txpert_head import metrics
from kgbuild.graph import MultiGraph
from txpert_head.baselines import additive, general, graph_neighbours
from txpert_head.controls import ControlIndex
from txpert_head.data import PerturbData
from txpert_head.profiles import true_profiles


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
