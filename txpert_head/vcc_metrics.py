"""Virtual Cell Challenge (VCC) metrics: DES, PDS, top-gene MAE and the baseline-scaled overall score.

The Arc Institute's Virtual Cell Challenge scores a perturbation-response model with three numbers,
each computed per perturbation and averaged over perturbations, and combines them, after scaling
each against a *cell-mean baseline*, into one overall score ``S`` in [0, 100]:

* **DES** (differential expression score, higher is better, perfect 1): overlap of the genes called
  differentially expressed (DE) in the predicted cells and in the true cells, each versus the
  control cells (Wilcoxon rank-sum + Benjamini-Hochberg FDR). See :func:`des_from_calls`.
* **PDS** (perturbation discrimination score, higher is better, perfect 1, random 0.5): how well
  each predicted pseudobulk picks out its own true pseudobulk among all true ones by L1 distance.
  See :func:`pds_scores`.
* **MAE** (lower is better, perfect 0): mean absolute error of the pseudobulk over the 2,000 genes
  that change most in the truth. See :func:`top_change_mae`.
* **S** = 100 · (scaled DES + scaled PDS + scaled MAE) / 3 with every scaled value 0 for the
  cell-mean baseline and 1 for a perfect prediction. See :func:`scale_against_baseline`.

Data conventions (all numpy): expression is on the log1p-normalised scale the rest of txpert_head
uses; a cell set is a float array of shape ``(n_cells, G)`` over the same G genes in the same order
everywhere; predictions and truths are dicts ``{perturbation: array}``; the control cells are one
array ``(n_control, G)`` (the matched controls of the evaluated context). The pseudobulk of a set is
its mean over cells, shape ``(G,)``.

Cell-level versus pseudobulk predictions: the VCC requires cell-level predictions, and DES needs
cells (it is a test on cell distributions). A model that predicts only a mean profile may pass a
1-D array ``(G,)`` for a perturbation; PDS and MAE use it as the pseudobulk, and for DES it is
replicated to as many identical cells as the true set has -- exactly how the VCC's own cell-mean
baseline is submitted (every cell equal to the mean). A replicated mean is a point mass, so its
Wilcoxon test against the controls calls nearly every expressed gene DE; DES then rests on the
fold-change truncation described in :func:`des_from_calls`.

This module depends only on numpy and scipy (no other txpert_head module), so evaluation code can
import it freely.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import mannwhitneyu

__all__ = [
    "DECall",
    "benjamini_hochberg",
    "call_de_genes",
    "cell_mean_baseline",
    "des_from_calls",
    "pds_scores",
    "overall_score",
    "scale_against_baseline",
    "target_indices_from_names",
    "top_change_mae",
    "vcc_scores",
    "wilcoxon_pvalues",
]

DEFAULT_ALPHA = 0.05
DEFAULT_TOP_K = 2000


# ----------------------------------------------------------------------------------------------
# multiple testing and the DE call
# ----------------------------------------------------------------------------------------------
def benjamini_hochberg(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values), same shape and order as ``pvalues``.

    With m p-values sorted ascending ``p_(1) <= ... <= p_(m)``::

        q_(i) = min_{j >= i} min(1, p_(j) · m / j)

    and a gene is called at FDR level α when ``q <= α`` (equivalent to the BH step-up rule: reject
    the k smallest, k the largest i with ``p_(i) <= α · i / m``). NaN p-values (untestable genes)
    are treated as 1. An empty input gives an empty output.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    shape = p.shape
    p = np.where(np.isnan(p), 1.0, p).ravel()
    m = p.size
    if m == 0:
        return p.reshape(shape)
    if (p < 0).any() or (p > 1).any():
        raise ValueError("p-values must lie in [0, 1]")
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]  # running min from the largest p down
    q = np.empty(m)
    q[order] = np.minimum(ranked, 1.0)
    return q.reshape(shape)


def wilcoxon_pvalues(cells: np.ndarray, control: np.ndarray, chunk_genes: int = 2048) -> np.ndarray:
    """Two-sided Wilcoxon rank-sum (Mann-Whitney U) p-value per gene, cells versus controls.

    ``cells``: (n1, G); ``control``: (n2, G); returns (G,). Uses the normal approximation with tie
    correction and continuity correction (``scipy.stats.mannwhitneyu(method="asymptotic")``), the
    usual choice for single-cell data full of ties at zero. Genes are processed in chunks of
    ``chunk_genes`` columns to bound memory; a gene constant over both groups gets p = 1.
    """
    cells = np.asarray(cells, dtype=np.float64)
    control = np.asarray(control, dtype=np.float64)
    if cells.ndim != 2 or control.ndim != 2 or cells.shape[1] != control.shape[1]:
        raise ValueError(f"cells {cells.shape} and control {control.shape} must be (n, G) with the same G")
    if cells.shape[0] == 0 or control.shape[0] == 0:
        raise ValueError("the Wilcoxon test needs at least one cell in each group")
    n_genes = cells.shape[1]
    out = np.ones(n_genes)
    for start in range(0, n_genes, chunk_genes):
        stop = min(start + chunk_genes, n_genes)
        res = mannwhitneyu(cells[:, start:stop], control[:, start:stop], axis=0,
                           alternative="two-sided", method="asymptotic")
        out[start:stop] = res.pvalue
    return np.where(np.isnan(out), 1.0, out)


@dataclass(frozen=True)
class DECall:
    """The DE call of one cell set against the controls.

    ``qvalues`` (G,): BH-adjusted Wilcoxon p-values; ``log_fold_change`` (G,): mean(cells) −
    mean(control) on the log1p scale (a log fold change of the (pseudo-count 1) expression);
    ``genes``: indices of the genes with ``q <= alpha``, sorted by *decreasing* |log fold change|
    (ties by increasing q, then by index), i.e. most strongly changed first.
    """

    qvalues: np.ndarray
    log_fold_change: np.ndarray
    genes: np.ndarray


def call_de_genes(cells: np.ndarray, control: np.ndarray, alpha: float = DEFAULT_ALPHA) -> DECall:
    """Call DE genes of ``cells`` (n1, G) versus ``control`` (n2, G): Wilcoxon rank-sum + BH at ``alpha``."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    q = benjamini_hochberg(wilcoxon_pvalues(cells, control))
    lfc = np.asarray(cells, dtype=np.float64).mean(axis=0) - np.asarray(control, dtype=np.float64).mean(axis=0)
    hit = np.flatnonzero(q <= alpha)
    # lexsort: last key is primary -> by -|lfc|, then q, then index
    genes = hit[np.lexsort((hit, q[hit], -np.abs(lfc[hit])))]
    return DECall(qvalues=q, log_fold_change=lfc, genes=genes)


def des_from_calls(pred: DECall, true: DECall) -> float:
    """Differential expression score of one perturbation from the predicted and the true DE calls.

    With ``G_true`` the genes DE in the truth and ``G_pred`` those DE in the prediction (both versus
    the same controls)::

        G̃_pred = G_pred                                  if |G_pred| <= |G_true|
               = the |G_true| genes of G_pred with the largest |predicted log fold change|
                                                         otherwise (VCC truncation; ties by q)
        DES    = |G̃_pred ∩ G_true| / |G_true|

    The truncation stops a prediction from scoring 1 by calling every gene DE. When the truth has
    no DE gene the fraction is 0/0; we define DES = 1 if the prediction has no DE gene either
    (correctly predicted "no effect") and 0 otherwise (a hallucinated effect), so every
    perturbation counts in the average and a perfect prediction always scores 1.
    """
    n_true = true.genes.size
    if n_true == 0:
        return 1.0 if pred.genes.size == 0 else 0.0
    kept = pred.genes[:n_true]  # pred.genes is ordered by decreasing |lfc|
    return float(np.intersect1d(kept, true.genes).size / n_true)


# ----------------------------------------------------------------------------------------------
# PDS and MAE on pseudobulks
# ----------------------------------------------------------------------------------------------
def pds_scores(pred_pseudobulk: np.ndarray, true_pseudobulk: np.ndarray,
               exclude: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Perturbation discrimination score of each perturbation, shape (N,), in [0, 1], 1 = perfect.

    ``pred_pseudobulk``, ``true_pseudobulk``: (N, G), row p of each is perturbation p. With the L1
    (Manhattan) distance ``d(p, q) = Σ_g |δ̂_p,g − δ_q,g|`` between the predicted change
    ``δ̂_p = mean(pred_p) − mean(control)`` and the true change ``δ_q`` (subtracting the control
    mean cancels inside the difference, so pseudobulks can be passed directly)::

        PDS_p = 1 − ( #{q ≠ p : d(p, q) < d(p, p)} + ½ · #{q ≠ p : d(p, q) = d(p, p)} ) / (N − 1)

    i.e. 1 when the own truth is strictly the nearest, 0 when it is the farthest, 0.5 expected for
    an uninformative prediction (ties count half). For a prediction that is the same for every
    perturbation (the cell-mean baseline) the mean of PDS_p over p is exactly 0.5 (without
    exclusions): every pair (p, q) is counted once in one direction. The VCC reports the rank
    fraction r_p / N (lower is better) and normalises it as 1 − 2·r_p/N; ours is the same rank
    statistic on a [0, 1] scale with perfect = 1, and scaling against the baseline (which sits at
    0.5) maps both to the same 0..1 range.

    ``exclude``: optional per-row gene indices left out of row p's distances (the VCC leaves out the
    perturbed target gene itself, whose knock-down is trivially predictable and would dominate the
    distance); ``None`` keeps all genes. Needs N >= 2; with N = 1 the score is undefined and NaN.
    """
    pred = np.asarray(pred_pseudobulk, dtype=np.float64)
    true = np.asarray(true_pseudobulk, dtype=np.float64)
    if pred.ndim != 2 or pred.shape != true.shape:
        raise ValueError(f"pseudobulks must both be (N, G); got {pred.shape} and {true.shape}")
    n, n_genes = pred.shape
    if exclude is not None and len(exclude) != n:
        raise ValueError(f"exclude has {len(exclude)} entries for {n} perturbations")
    if n < 2:
        return np.full(n, np.nan)
    scores = np.empty(n)
    for p in range(n):
        keep = np.ones(n_genes, dtype=bool)
        if exclude is not None and len(exclude[p]):
            keep[np.asarray(exclude[p], dtype=np.int64)] = False
        dist = np.abs(true[:, keep] - pred[p, keep]).sum(axis=1)  # (N,)
        own = dist[p]
        others = np.delete(dist, p)
        # exact ties only: distances computed the same way from the same numbers
        closer = np.count_nonzero(others < own) + 0.5 * np.count_nonzero(others == own)
        scores[p] = 1.0 - closer / (n - 1)
    return scores


def top_change_mae(pred_pseudobulk: np.ndarray, true_pseudobulk: np.ndarray, control_mean: np.ndarray,
                   top_k: int = DEFAULT_TOP_K) -> float:
    """Mean absolute error of one perturbation's pseudobulk over its most-changed genes.

    With ``T`` the ``min(top_k, G)`` genes of largest ``|true_g − control_g|`` (the true change;
    ties broken by gene order)::

        MAE = (1/|T|) Σ_{g ∈ T} |pred_g − true_g|

    All arguments are (G,) vectors. The VCC's own MAE runs over all genes; the txpert-kg issue asks
    for the top 2,000 most-changed genes so that the thousands of unchanged genes do not dilute it.
    """
    pred = np.asarray(pred_pseudobulk, dtype=np.float64)
    true = np.asarray(true_pseudobulk, dtype=np.float64)
    ctrl = np.asarray(control_mean, dtype=np.float64)
    if not pred.shape == true.shape == ctrl.shape or pred.ndim != 1:
        raise ValueError(f"pseudobulks must all be (G,); got {pred.shape}, {true.shape}, {ctrl.shape}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    k = min(top_k, pred.size)
    top = np.argsort(-np.abs(true - ctrl), kind="stable")[:k]
    return float(np.abs(pred[top] - true[top]).mean())


# ----------------------------------------------------------------------------------------------
# scaling, baseline and the whole block
# ----------------------------------------------------------------------------------------------
def scale_against_baseline(value: float, baseline: float, perfect: float) -> float:
    """Scale a metric so the baseline scores 0 and a perfect prediction 1, clipped below at 0.

    ``scaled = max(0, (value − baseline) / (perfect − baseline))``. This one formula covers both
    directions: for DES and PDS (higher is better, perfect = 1) it is ``(X − X_base)/(1 − X_base)``;
    for MAE (lower is better, perfect = 0) it is ``(MAE_base − MAE)/MAE_base``. Worse than the
    baseline is clipped to 0, as the VCC does, so one bad metric cannot drive S negative. When the
    baseline is already perfect (denominator 0) the scaled value is undefined and returned as NaN.
    """
    if not np.isfinite(value) or not np.isfinite(baseline) or perfect == baseline:
        return float("nan")
    return float(max(0.0, (value - baseline) / (perfect - baseline)))


PERFECT = {"des": 1.0, "pds": 1.0, "mae": 0.0}


def overall_score(model: Mapping[str, float], baseline: Mapping[str, float]) -> tuple[dict[str, float], float]:
    """``(scaled, S)``: each of DES / PDS / MAE scaled against the baseline (:func:`scale_against_baseline`,
    perfect values :data:`PERFECT`) and ``S = 100 · mean(scaled)`` (NaN when a scaled value is undefined)."""
    scaled = {m: scale_against_baseline(model[m], baseline[m], perfect) for m, perfect in PERFECT.items()}
    return scaled, float(100.0 * np.mean(list(scaled.values())))


def cell_mean_baseline(train_perturbed_cells: np.ndarray, n_cells: Mapping[str, int]) -> dict[str, np.ndarray]:
    """The VCC cell-mean baseline: every cell of every perturbation is the mean perturbed training cell.

    ``train_perturbed_cells``: (n, G), all perturbed (non-control) cells of the training set;
    ``n_cells``: ``{perturbation: how many cells to emit}`` (usually the true set sizes). Returns
    ``{perturbation: (n_cells[p], G)}`` with every row equal to ``mean(train_perturbed_cells, axis=0)``.
    """
    cells = np.asarray(train_perturbed_cells, dtype=np.float64)
    if cells.ndim != 2 or cells.shape[0] == 0:
        raise ValueError(f"train_perturbed_cells must be a non-empty (n, G) array, got shape {cells.shape}")
    mean = cells.mean(axis=0)
    out = {}
    for pert, n in n_cells.items():
        if n < 1:
            raise ValueError(f"perturbation {pert!r}: need at least 1 cell, got {n}")
        out[pert] = np.broadcast_to(mean, (int(n), mean.size)).copy()
    return out


def target_indices_from_names(perturbations: Sequence[str], gene_names: Sequence[str],
                              sep: str = "+") -> list[list[int]]:
    """Gene indices of each perturbation's target(s), for ``pds_scores(exclude=...)``.

    A perturbation name is gene symbols joined by ``sep`` (``"KLF1+MAP2K6"``); symbols not among
    ``gene_names`` (e.g. a target filtered out of the HVGs) are skipped.
    """
    lookup = {g: i for i, g in enumerate(gene_names)}
    return [[lookup[g] for g in str(p).split(sep) if g in lookup] for p in perturbations]


def _as_cells(pert: str, values: np.ndarray, n_genes: int, n_true: int, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:  # a pseudobulk-only prediction: replicate (see module docstring)
        arr = np.broadcast_to(arr, (n_true, arr.size))
    if arr.ndim != 2 or arr.shape[1] != n_genes or arr.shape[0] == 0:
        raise ValueError(f"{what} for perturbation {pert!r} has shape {np.shape(values)}; "
                         f"expected (n_cells, {n_genes}) or ({n_genes},)")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} for perturbation {pert!r} contains NaN or infinite values")
    return arr


def _raw_block(pred: Mapping[str, np.ndarray], perts: list[str], true_calls: dict[str, DECall],
               true_sizes: dict[str, int], true_mean: np.ndarray, control: np.ndarray,
               control_mean: np.ndarray, exclude: Sequence[Sequence[int]] | None, alpha: float,
               top_k: int, what: str) -> dict:
    """DES, PDS and MAE (means and per perturbation) of one set of predictions."""
    n_genes = control.shape[1]
    per: dict[str, dict] = {}
    pred_mean = np.empty_like(true_mean)
    for i, p in enumerate(perts):
        cells = _as_cells(p, pred[p], n_genes, true_sizes[p], what)
        pred_mean[i] = cells.mean(axis=0)
        call = call_de_genes(cells, control, alpha)
        per[p] = {"des": des_from_calls(call, true_calls[p]),
                  "mae": top_change_mae(pred_mean[i], true_mean[i], control_mean, top_k),
                  "n_de_pred": int(call.genes.size), "n_de_true": int(true_calls[p].genes.size)}
    pds = pds_scores(pred_mean, true_mean, exclude)
    for i, p in enumerate(perts):
        per[p]["pds"] = float(pds[i])
    return {"des": float(np.mean([v["des"] for v in per.values()])),
            "pds": float(np.mean(pds)),
            "mae": float(np.mean([v["mae"] for v in per.values()])),
            "per_perturbation": per}


def vcc_scores(pred_cells: Mapping[str, np.ndarray], true_cells: Mapping[str, np.ndarray],
               control_cells: np.ndarray, baseline_cells: Mapping[str, np.ndarray] | None = None, *,
               alpha: float = DEFAULT_ALPHA, top_k: int = DEFAULT_TOP_K,
               exclude_genes: Mapping[str, Sequence[int]] | None = None) -> dict:
    """The VCC block for one model: DES, PDS, MAE, their scaled values and the overall score S.

    ``pred_cells``, ``true_cells``, ``baseline_cells``: ``{perturbation: (n_cells, G)}`` (a
    prediction may also be a ``(G,)`` mean; see the module docstring); the evaluated perturbations
    are the keys of ``true_cells`` and both prediction dicts must cover exactly them.
    ``control_cells``: (n_control, G). ``exclude_genes``: optional ``{perturbation: gene indices}``
    left out of that perturbation's PDS distances (its targets; see :func:`target_indices_from_names`).

    Each raw metric is the mean over perturbations of the per-perturbation values (DES:
    :func:`des_from_calls`, PDS: :func:`pds_scores`, MAE: :func:`top_change_mae`). With
    ``baseline_cells`` (normally :func:`cell_mean_baseline` of the training set) the same metrics
    are computed for the baseline, and::

        scaled_DES = max(0, (DES − DES_base) / (1 − DES_base))
        scaled_PDS = max(0, (PDS − PDS_base) / (1 − PDS_base))
        scaled_MAE = max(0, (MAE_base − MAE) / MAE_base)
        S          = 100 · (scaled_DES + scaled_PDS + scaled_MAE) / 3

    so the baseline scores S = 0 and a perfect prediction S = 100. Without a baseline the scaled
    values and S are ``None``.

    Returns ``{"n_perturbations", "des", "pds", "mae", "per_perturbation": {p: {"des", "pds",
    "mae", "n_de_pred", "n_de_true"}}, "baseline": {"des", "pds", "mae"} | None,
    "scaled": {"des", "pds", "mae"} | None, "score": S | None}``.
    """
    control = np.asarray(control_cells, dtype=np.float64)
    if control.ndim != 2 or control.shape[0] == 0:
        raise ValueError(f"control_cells must be a non-empty (n, G) array, got shape {control.shape}")
    if not np.isfinite(control).all():
        raise ValueError("control_cells contains NaN or infinite values")
    perts = list(true_cells)
    if not perts:
        raise ValueError("true_cells is empty: nothing to evaluate")
    for name, d in (("pred_cells", pred_cells), ("baseline_cells", baseline_cells)):
        if d is None:
            continue
        missing = [p for p in perts if p not in d]
        extra = [p for p in d if p not in true_cells]
        if missing or extra:
            raise ValueError(f"{name} must cover exactly the perturbations of true_cells; "
                             f"missing {missing[:5]}, unexpected {extra[:5]}")
    if exclude_genes is not None:
        unknown = [p for p in exclude_genes if p not in true_cells]
        if unknown:
            raise ValueError(f"exclude_genes names perturbations not in true_cells: {unknown[:5]}")
    n_genes = control.shape[1]
    control_mean = control.mean(axis=0)
    true_calls: dict[str, DECall] = {}
    true_sizes: dict[str, int] = {}
    true_mean = np.empty((len(perts), n_genes))
    for i, p in enumerate(perts):
        t = np.asarray(true_cells[p], dtype=np.float64)
        if t.ndim != 2:
            raise ValueError(f"true cells of perturbation {p!r} must be (n_cells, {n_genes}), got {t.shape}")
        t = _as_cells(p, t, n_genes, 0, "true cells")
        true_sizes[p] = t.shape[0]
        true_mean[i] = t.mean(axis=0)
        true_calls[p] = call_de_genes(t, control, alpha)
    exclude = None if exclude_genes is None else [list(exclude_genes.get(p, ())) for p in perts]

    model = _raw_block(pred_cells, perts, true_calls, true_sizes, true_mean, control, control_mean,
                       exclude, alpha, top_k, "predicted cells")
    out = {"n_perturbations": len(perts), **model, "baseline": None, "scaled": None, "score": None}
    if baseline_cells is not None:
        base = _raw_block(baseline_cells, perts, true_calls, true_sizes, true_mean, control, control_mean,
                          exclude, alpha, top_k, "baseline cells")
        scaled, score = overall_score(model, base)
        out["baseline"] = {k: base[k] for k in ("des", "pds", "mae")}
        out["scaled"] = scaled
        out["score"] = score
    return out
