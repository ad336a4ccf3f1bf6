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
    pred = _unit_rows(pred_delta)
    own = row_pearson(pred_delta, true_delta)
    cand = _unit_rows(true_delta if candidates is None else candidates)
    idx = np.arange(len(pred)) if self_index is None else np.asarray(self_index, dtype=np.int64)
    corr = pred @ cand.T  # (P, R)
    rng = np.random.default_rng(seed)
    out = np.full(len(pred), np.nan)
    for p in range(len(pred)):
        others = np.delete(np.arange(cand.shape[0]), idx[p])
        if n_reference is not None and len(others) > n_reference:
            others = np.sort(rng.choice(others, n_reference, replace=False))
        if len(others) == 0 or np.isnan(own[p]):
            continue
        out[p] = float(np.mean(own[p] + 1e-12 >= corr[p, others]))
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


def evaluate(
    names: Sequence[str],
    pred_mean: np.ndarray,
    true_mean: np.ndarray,
    reference: np.ndarray,
    gene_index: dict[str, int] | None = None,
    candidates: np.ndarray | None = None,
    self_index: Sequence[int] | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """All metrics for P perturbations; returns the per-perturbation table and the means.

    ``pred_mean``, ``true_mean``, ``reference`` (P, G): predicted and true mean expression and the
    batch-matched control reference ``r_p``. ``names``: the P condition names (``line|perturbation`` or
    plain perturbations; the part after ``|`` is used for the target-gene error).
    """
    pred_delta = np.asarray(pred_mean, np.float64) - reference
    true_delta = np.asarray(true_mean, np.float64) - reference
    table = pd.DataFrame({"condition": list(names)})
    # a prediction of "no change" (constant δ̂) carries no information: Pearson 0 and retrieval 0.5 (chance),
    # so that baselines which abstain (e.g. additive with unseen constituents) are not averaged over fewer cases
    flat = np.ptp(pred_delta, axis=1) == 0
    table["pearson_delta"] = np.where(flat, 0.0, pearson_delta(pred_delta, true_delta))
    table["mse"] = mse(pred_mean, true_mean)
    table["retrieval"] = retrieval(pred_delta, true_delta, candidates, self_index)
    table["retrieval_fast"] = retrieval(pred_delta, true_delta, candidates, self_index,
                                        n_reference=FAST_REFERENCE, seed=seed)
    table.loc[flat, ["retrieval", "retrieval_fast"]] = 0.5
    if gene_index is not None:
        perts = [n.split("|", 1)[-1] for n in names]
        table["target_error"] = target_gene_error(pred_delta, true_delta, perts, gene_index)
    summary = {c: float(np.nanmean(table[c])) if table[c].notna().any() else float("nan")
               for c in table.columns if c != "condition"}
    summary["n_perturbations"] = int(len(table))
    return table, summary
