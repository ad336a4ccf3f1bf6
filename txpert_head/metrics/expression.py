"""Metrics per perturbation, then averaged over perturbations.

Notation: for a condition p with rows I_p, the true mean is ``x̄_p = mean_{i∈I_p} x_i`` and its
batch-matched reference is ``r_p = mean_{i∈I_p} c_{b(i)}`` where ``c_b`` is the control mean of batch b;
the true change is ``δ_p = x̄_p − r_p`` and the predicted change ``δ̂_p = ŷ_p − r_p``. All are (G,).

* Pearson Δ: ``corr(δ̂_p, δ_p)``.
* MSE: ``mean_g (ŷ_pg − x̄_pg)²`` (equal to the MSE of the changes; the reference cancels).
* Retrieval: with candidates ``δ_q`` (by default every test perturbation; callers may pass more),
  ``R_p = |{q ≠ p : corr(δ̂_p, δ_p) ≥ corr(δ̂_p, δ_q)}| / |{q ≠ p}|`` — 1 when the prediction is closest
  to its own truth, about 0.5 for an unrelated prediction, 0 when it is farthest (e.g. negated).
  "normalized" uses every candidate, "fast" a seeded random reference set of 100 candidates per p.
* Target-gene signed error: ``mean_{g ∈ p, g measured} (δ̂_pg − δ_pg)``; for a knock-down (δ < 0) a
  positive value means the predicted drop of the perturbed gene itself is too small.

Systematic variation (Systema, Viñas Torné et al., Nat Biotechnol 2025; github.com/mlbio-epfl/systema,
``evaluation/pearson_delta_reference_metrics.py`` and ``centroid_accuracy.py``). ``C_l`` is the candidate set
restricted to p's cell line l (by default every non-control condition of the dataset in that line: training,
validation and test), ``δ̄_l = mean_{q ∈ C_l} δ_q`` the mean true change of the perturbed conditions:

* Pearson Δ against the perturbed mean: ``corr(δ̂_p − δ̄_l, δ_p − δ̄_l)``. This is Systema's
  ``corr(ŷ_p − μ_pert, x̄_p − μ_pert)`` with ``μ_pert = r_p + δ̄_l``: the mean of the perturbed conditions'
  true means, batch-matched to p (with one batch, ``μ_pert = mean_{q ∈ C_l} x̄_q`` exactly). Systema takes
  ``μ_pert`` over the training perturbations only.
* Centroid accuracy: ``|{q ∈ C_l, q ≠ p : ‖δ̂_p − δ_q‖ > ‖δ̂_p − δ_p‖}| / (|C_l| − 1)`` -- Systema's score
  (Euclidean distances to every true centroid; the fraction of other centroids strictly farther than p's
  own): 1 when the prediction is nearest its own centroid, 0 when farthest. Differences of changes equal
  differences of the profiles themselves (the reference cancels when there is one batch).

PerturBench rank (Wu et al. 2024; github.com/altoslabs/perturbench, ``analysis/benchmarks/metrics.py``
``rank_helper`` over ``pairwise_metric_helper(pred, ref)``, as ``Evaluation.evaluate_rank``): for the true
change of p, rank every test prediction q of the same cell line (T_l, the test conditions) by cosine
similarity to it; ``rank_p = (|{q ≠ p : cos(δ̂_q, δ_p) > cos(δ̂_p, δ_p)}| + ½ |{q ≠ p : equal}|) / |T_l|`` --
the 0-based position of p's own prediction divided by the number of predictions, 0 best, about 0.5 at
chance. PerturBench breaks ties by a random shuffle (½ is its expectation) and compares log-fold-changes
of mean expression; here the changes are the batch-matched ``δ``.

A constant predicted change ("no change") carries no information and scores the chance values: Pearson Δ
(both) 0, retrieval and centroid accuracy 0.5, rank 0.5. So does predicting the perturbed mean itself for
the Pearson Δ against it (a constant centred prediction): 0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

FAST_REFERENCE = 100


def row_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching rows of ``a`` and ``b`` (P, G) -> (P,); NaN for a constant row."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(1) / np.where(den > 0, den, 1.0), np.nan)


def _unit_rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    a = a - a.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(norm > 0, norm, 1.0)


def pearson_delta(pred_delta: np.ndarray, true_delta: np.ndarray) -> np.ndarray:
    """Per-perturbation Pearson Δ (P,)."""
    return row_pearson(pred_delta, true_delta)


def mse(pred_mean: np.ndarray, true_mean: np.ndarray) -> np.ndarray:
    """Per-perturbation mean squared error over genes (P,)."""
    d = np.asarray(pred_mean, dtype=np.float64) - np.asarray(true_mean, dtype=np.float64)
    return (d * d).mean(axis=1)


def retrieval(
    pred_delta: np.ndarray,
    true_delta: np.ndarray,
    candidates: np.ndarray | None = None,
    self_index: Sequence[int] | None = None,
    n_reference: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Per-perturbation retrieval score (P,), see the module docstring.

    ``candidates`` (R, G) true changes to compare against (default ``true_delta``); ``self_index`` (P,)
    the row of each perturbation's own truth in ``candidates`` (default ``0..P-1``). ``n_reference``:
    ``None`` uses every other candidate ("normalized"); an int samples that many per perturbation with
    ``seed`` ("fast", :data:`FAST_REFERENCE` = 100 in the paper).
    """
    own, corr, idx = _retrieval_correlations(pred_delta, true_delta, candidates, self_index)
    return _retrieval_from(own, corr, idx, n_reference, seed)


def _retrieval_correlations(pred_delta: np.ndarray, true_delta: np.ndarray, candidates: np.ndarray | None,
                            self_index: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(own (P,), corr (P, R), idx (P,))``: ``corr(δ̂_p, δ_p)``, ``corr(δ̂_p, δ_q)`` for every candidate q and
    p's own row among the candidates -- what both retrieval variants compare (one product for the two)."""
    pred = _unit_rows(pred_delta)
    own = row_pearson(pred_delta, true_delta)
    cand = _unit_rows(true_delta if candidates is None else candidates)
    idx = np.arange(len(pred)) if self_index is None else np.asarray(self_index, dtype=np.int64)
    return own, pred @ cand.T, idx


def _retrieval_from(own: np.ndarray, corr: np.ndarray, idx: np.ndarray, n_reference: int | None,
                    seed: int) -> np.ndarray:
    """The retrieval scores (P,) from :func:`_retrieval_correlations`: the share of p's reference candidates
    (every other candidate, or ``n_reference`` of them drawn with ``seed``) no closer to the prediction than
    p's own truth."""
    P, R = corr.shape
    hits = own[:, None] + 1e-12 >= corr  # (P, R); NaN compares False
    out = np.full(P, np.nan)
    if n_reference is None:   # every candidate but p's own
        valid = ~np.isnan(own) & (R > 1)
        count = hits.sum(axis=1) - hits[np.arange(P), idx]
        out[valid] = count[valid] / (R - 1)
        return out
    rng = np.random.default_rng(seed)
    for p in range(P):
        others = np.delete(np.arange(R), idx[p])
        if len(others) > n_reference:
            others = np.sort(rng.choice(others, n_reference, replace=False))
        if len(others) == 0 or np.isnan(own[p]):
            continue
        out[p] = float(np.mean(hits[p, others]))
    return out


def target_gene_error(pred_delta: np.ndarray, true_delta: np.ndarray, conditions: Sequence[str],
                      gene_index: dict[str, int]) -> np.ndarray:
    """Signed error of the perturbed genes' own change (P,); NaN when no constituent is measured."""
    out = np.full(len(conditions), np.nan)
    for p, cond in enumerate(conditions):
        cols = [gene_index[g] for g in cond.split("+") if g in gene_index]
        if cols:
            out[p] = float(np.mean(pred_delta[p, cols] - true_delta[p, cols]))
    return out


def _line(name: str) -> str:
    return name.split("|", 1)[0] if "|" in name else ""


def pearson_delta_pert(pred_delta: np.ndarray, true_delta: np.ndarray, candidates: np.ndarray,
                       candidate_lines: Sequence[str], lines: Sequence[str]) -> np.ndarray:
    """Systema's Pearson Δ against the perturbed mean (P,): ``corr(δ̂_p − δ̄_l, δ_p − δ̄_l)`` with ``δ̄_l`` the
    mean of the ``candidates`` rows (true changes) whose line (``candidate_lines``) is p's (``lines``); 0 when
    the centred prediction is constant (e.g. the prediction is the perturbed mean)."""
    candidates = np.asarray(candidates, np.float64)
    cl = np.asarray(candidate_lines, dtype=object)
    lines = np.asarray(lines, dtype=object)
    centre = np.zeros_like(np.asarray(pred_delta, np.float64))
    for line in np.unique(lines):
        centre[lines == line] = candidates[cl == line].mean(axis=0)
    pred = np.asarray(pred_delta, np.float64) - centre
    out = row_pearson(pred, np.asarray(true_delta, np.float64) - centre)
    # predicting the perturbed mean itself (a constant centred prediction) carries no specific information: 0
    return np.where(np.ptp(pred, axis=1) == 0, 0.0, out)


def centroid_accuracy(pred_delta: np.ndarray, candidates: np.ndarray, self_index: Sequence[int],
                      candidate_lines: Sequence[str] | None = None) -> np.ndarray:
    """Systema's centroid accuracy (P,): the share of the other true centroids of p's line (rows of
    ``candidates``; p's own is row ``self_index[p]``) strictly farther, in Euclidean distance, from the
    prediction than p's own; NaN when p's line has no other candidate."""
    pred = np.asarray(pred_delta, np.float64)
    candidates = np.asarray(candidates, np.float64)
    idx = np.asarray(self_index, dtype=np.int64)
    cl = np.asarray([""] * len(candidates) if candidate_lines is None else candidate_lines, dtype=object)
    out = np.full(len(pred), np.nan)
    own_line = cl[idx]
    for line in np.unique(own_line):  # one distance matrix per line, in blocks of predictions (bounded memory)
        members = np.flatnonzero(cl == line)
        if len(members) < 2:
            continue
        ps = np.flatnonzero(own_line == line)
        cand = candidates[members]
        cand_sq = np.einsum("ij,ij->i", cand, cand)
        for start in range(0, len(ps), 256):
            block = ps[start:start + 256]
            farther = _strictly_farther(pred[block], cand, cand_sq, np.searchsorted(members, idx[block]))
            out[block] = farther.sum(axis=1) / (len(members) - 1)  # the own centroid is never strictly farther
    return out


def _pair_sq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``|a_k - b_k|^2`` for paired rows ``a, b (K, G)``: ``(K,)``, summed directly."""
    diff = a - b
    return np.einsum("ij,ij->i", diff, diff)


def _strictly_farther(pred: np.ndarray, cand: np.ndarray, cand_sq: np.ndarray, own: np.ndarray) -> np.ndarray:
    """``(b, m)`` booleans: candidate ``j`` strictly farther (Euclidean) from prediction ``i`` than candidate
    ``own[i]``. Squared distances by the Gram identity ``|a|^2 + |c|^2 - 2 a.c`` (one matrix product instead of
    a pairwise loop), whose float64 error is below ``(G + 4) 2^-52 (|a|^2 + |c|^2)`` for ``G`` columns; the
    pairs within that bound of the own distance are decided again on directly summed squares, as is the own
    distance itself, so ties (identical centroids, equidistant ones) stay ties."""
    pred_sq = np.einsum("ij,ij->i", pred, pred)
    d2 = pred_sq[:, None] + cand_sq[None, :] - 2.0 * (pred @ cand.T)
    own_sq = _pair_sq(pred, cand[own])
    bound = (pred.shape[1] + 4) * 2.0 ** -52 * (pred_sq[:, None] + cand_sq[None, :])
    farther = d2 > own_sq[:, None] + bound
    rows, cols = np.nonzero(np.abs(d2 - own_sq[:, None]) <= bound)
    if len(rows):
        farther[rows, cols] = _pair_sq(pred[rows], cand[cols]) > own_sq[rows]
    return farther


def perturbench_rank(pred_delta: np.ndarray, true_delta: np.ndarray, lines: Sequence[str] | None = None) -> np.ndarray:
    """PerturBench's rank (P,), see the module docstring: for each true change, the normalised position of
    p's own prediction among the predictions of p's line sorted by cosine similarity to it (0 best)."""
    pred = np.asarray(pred_delta, np.float64)
    true = np.asarray(true_delta, np.float64)
    lines = np.asarray([""] * len(pred) if lines is None else lines, dtype=object)

    def unit(a):
        norm = np.linalg.norm(a, axis=1, keepdims=True)
        return np.where(norm > 0, a / np.where(norm > 0, norm, 1.0), np.nan)

    cos = unit(pred) @ unit(true).T  # cos[q, p] = cos(δ̂_q, δ_p)
    out = np.full(len(pred), np.nan)
    for p in range(len(pred)):
        group = np.flatnonzero(lines == lines[p])
        others = group[group != p]
        own, col = cos[p, p], cos[others, p]
        if np.isnan(own):
            continue
        tie = np.isclose(col, own, rtol=0, atol=1e-12) | np.isnan(col)  # an undefined similarity: a coin toss
        out[p] = float((np.sum((col > own) & ~tie) + 0.5 * np.sum(tie)) / len(group))
    return out


def evaluate(
    names: Sequence[str],
    pred_mean: np.ndarray,
    true_mean: np.ndarray,
    reference: np.ndarray,
    gene_index: dict[str, int] | None = None,
    candidates: np.ndarray | None = None,
    self_index: Sequence[int] | None = None,
    seed: int = 0,
    candidate_lines: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """All metrics for P perturbations; returns the per-perturbation table and the means.

    ``pred_mean``, ``true_mean``, ``reference`` (P, G): predicted and true mean expression and the
    batch-matched control reference ``r_p``. ``names``: the P condition names (``line|perturbation`` or
    plain perturbations; the part after ``|`` is used for the target-gene error). ``candidate_lines``: the
    cell line of each candidate row (default ``candidates.lines`` when given by
    :func:`txpert_head.data.profiles.retrieval_candidates`, else the ``line|`` prefix of ``names`` when the
    candidates are the test conditions themselves, else one line for all), used by the Systema metrics;
    a test condition's line is that of its own candidate row.
    """
    pred_delta = np.asarray(pred_mean, np.float64) - reference
    true_delta = np.asarray(true_mean, np.float64) - reference
    table = pd.DataFrame({"condition": list(names)})
    # a prediction of "no change" (constant δ̂) carries no information: Pearson 0 and retrieval 0.5 (chance),
    # so that baselines which abstain (e.g. additive with unseen constituents) are not averaged over fewer cases
    flat = np.ptp(pred_delta, axis=1) == 0
    table["pearson_delta"] = np.where(flat, 0.0, pearson_delta(pred_delta, true_delta))
    table["mse"] = mse(pred_mean, true_mean)
    own, corr, own_row = _retrieval_correlations(pred_delta, true_delta, candidates, self_index)
    table["retrieval"] = _retrieval_from(own, corr, own_row, None, seed)
    table["retrieval_fast"] = _retrieval_from(own, corr, own_row, FAST_REFERENCE, seed)
    table.loc[flat, ["retrieval", "retrieval_fast"]] = 0.5
    cand = true_delta if candidates is None else np.asarray(candidates, np.float64)
    idx = np.arange(len(names)) if self_index is None else np.asarray(self_index, dtype=np.int64)
    if candidate_lines is None:
        candidate_lines = getattr(candidates, "lines", None)
    if candidate_lines is None or len(candidate_lines) != len(cand):
        # no lines given: the test names' ``line|`` prefix when candidates are the test conditions, else one line
        candidate_lines = [_line(n) for n in names] if candidates is None else [""] * len(cand)
    cand_lines = np.asarray(candidate_lines, dtype=object)
    lines = cand_lines[idx]
    table["pearson_delta_pert"] = pearson_delta_pert(pred_delta, true_delta, cand, cand_lines, lines)
    table["centroid_accuracy"] = centroid_accuracy(pred_delta, cand, idx, cand_lines)
    table["perturbench_rank"] = perturbench_rank(pred_delta, true_delta, lines)
    table.loc[flat, "pearson_delta_pert"] = 0.0
    table.loc[flat, ["centroid_accuracy", "perturbench_rank"]] = 0.5
    if gene_index is not None:
        perts = [n.split("|", 1)[-1] for n in names]
        table["target_error"] = target_gene_error(pred_delta, true_delta, perts, gene_index)
    summary = {c: float(np.nanmean(table[c])) if table[c].notna().any() else float("nan")
               for c in table.columns if c != "condition"}
    summary["n_perturbations"] = int(len(table))
    return table, summary
