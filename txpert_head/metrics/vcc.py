"""Virtual Cell Challenge (VCC) metrics: DES, PDS, MAE, the VCC's Pearson Δ and the baseline-scaled score S.

The Arc Institute's Virtual Cell Challenge scores a perturbation-response model with three numbers,
each computed per perturbation and averaged over perturbations, and combines them, after scaling
each against a *cell-mean baseline*, into one overall score ``S``. The reference implementation is
Arc's ``cell-eval`` (``cell-eval run --profile vcc`` then ``cell-eval score``; its DE comes from the
``pdex`` package). This module computes the same numbers itself, with numpy and scipy only, and
``tests/test_cell_eval_agreement.py`` checks them against cell-eval 0.8.2 / pdex 0.3.0 to 1e-6:

* **DES** (differential expression score, cell-eval ``overlap_at_N``; higher is better, perfect 1):
  overlap of the genes called differentially expressed (DE) in the predicted cells and in the true
  cells, each versus the control cells (Wilcoxon rank-sum + Benjamini-Hochberg), the predicted list
  cut to the size of the true one by |log2 fold change|. See :func:`call_de_genes`, :func:`des_from_calls`.
* **PDS** (perturbation discrimination score, cell-eval ``discrimination_score_l1``; higher is
  better, perfect 1): one minus the normalised rank of the own truth among all true changes, by L1
  distance to the predicted change. See :func:`pds_scores`.
* **MAE** (cell-eval ``mae``; lower is better, perfect 0): mean absolute error of the pseudobulk over
  all genes. See :func:`pseudobulk_mae`.
* **S** = 100 · mean(scaled DES, scaled PDS, scaled MAE), each scaled against the baseline as
  ``cell-eval score`` does (0 for the baseline, 1 for a perfect prediction, clipped below at 0); S is
  cell-eval's ``avg_score`` times 100. See :func:`scale_against_baseline`, :func:`overall_score`.
* **Pearson Δ (VCC)** (cell-eval ``pearson_delta``, reported, not part of S): correlation over genes
  of the predicted and true pseudobulk changes against the *pooled* control mean (all control cells
  of the cell line). TxPert's own Pearson Δ (``txpert_head.metrics.expression``) uses batch-matched control
  means instead; the two are different metrics. See :func:`vcc_pearson_delta`.

Data conventions (all numpy): expression is on the log1p-normalised scale (``log(1 + x)`` of
normalised counts) the rest of txpert_head uses; a cell set is a float array of shape
``(n_cells, G)`` over the same G genes in the same order everywhere; predictions and truths are dicts
``{perturbation: array}``; the control cells are one array ``(n_control, G)`` (the controls of the
evaluated cell line, shared by truth and prediction, as in a cell-eval submission whose control
cells are the real ones). The pseudobulk of a set is its mean over cells, shape ``(G,)``.

Predictions are clipped at 0 before scoring (:func:`vcc_scores`): log-expression cannot be negative,
cell-eval refuses negative values, and ``txpert predict --cells`` writes the same clipped values.

Cell-level versus pseudobulk predictions: the VCC requires cell-level predictions, and DES needs
cells (it is a test on cell distributions). A model that predicts only a mean profile may pass a
1-D array ``(G,)`` for a perturbation; PDS, MAE and Pearson Δ use it as the pseudobulk, and for DES
it is replicated to as many identical cells as the true set has -- exactly how the VCC's own
cell-mean baseline is submitted (every cell equal to the mean). A replicated mean is a point mass,
so its Wilcoxon test against the controls calls nearly every expressed gene DE; DES then rests on
the fold-change truncation described in :func:`des_from_calls`.

This module depends only on numpy and scipy (no other txpert_head module), so evaluation code can
import it freely.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ControlCells",
    "DECall",
    "TrueSet",
    "benjamini_hochberg",
    "call_de_genes",
    "cell_mean_baseline",
    "close_block",
    "des_from_calls",
    "label_gene_indices",
    "log2_fold_change",
    "overall_score",
    "pds_scores",
    "pseudobulk_mae",
    "scale_against_baseline",
    "score_perturbation",
    "summarise_true",
    "target_indices_from_names",
    "top_change_mae",
    "vcc_pearson_delta",
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

    (``scipy.stats.false_discovery_control``, which pdex uses, gives the same numbers). NaN p-values
    (untestable genes) are treated as 1. An empty input gives an empty output.
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


class ControlCells:
    """The control cells every Wilcoxon test of a cell line compares against, prepared once: ``mean`` (G,),
    ``sorted`` (G, n), each gene's values in ascending order, and ``n_cells``. Built from an ``(n, G)`` array;
    the functions here that take control cells accept either."""

    def __init__(self, cells: np.ndarray):
        cells = np.asarray(cells, dtype=np.float64)
        if cells.ndim != 2 or cells.shape[0] == 0:
            raise ValueError(f"control cells must be a non-empty (n, G) array, got shape {cells.shape}")
        self.n_cells, self.n_genes = cells.shape
        self.mean = cells.mean(axis=0)
        self.sorted = np.ascontiguousarray(cells.T)
        self.sorted.sort(axis=1)

    @classmethod
    def of(cls, control: "np.ndarray | ControlCells") -> "ControlCells":
        return control if isinstance(control, ControlCells) else cls(control)


def _tie_groups(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The runs of equal values of a row-sorted ``(g, n)`` array, in row-major order: per run its row, its first
    position in the row, its length and its value."""
    n = rows.shape[1]
    flat = rows.ravel()
    new = np.empty(flat.size, dtype=bool)
    new[0] = True
    np.not_equal(flat[1:], flat[:-1], out=new[1:])
    new[::n] = True  # every row starts a run
    first = np.flatnonzero(new)
    size = np.diff(np.append(first, flat.size))
    row = first // n
    return row, first - row * n, size, flat[first]


def _row_value_keys(row: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Complex keys ``row + i value`` that numpy sorts and searches lexicographically by (row, value); set part by
    part, as ``1j * value`` would turn an infinite or NaN value into a NaN real part. NaN values (the last of their
    row; their genes get p = 1) become +inf, which keeps the keys in numpy's order."""
    keys = np.empty(row.size, dtype=np.complex128)
    keys.real, keys.imag = row, np.where(np.isnan(value), np.inf, value)
    return keys


def _rank_sums(cells_sorted: np.ndarray, control_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of the row-sorted ``(g, n1)`` cells and ``(g, n2)`` controls: the rank sum of the cells in the pooled
    sample (average ranks for ties) and the tie term ``sum_t (t^3 - t)`` over its runs of equal values.

    The pooled rows are the two sorted runs merged (a stable sort of the two runs). A run of ``t`` equal values
    starting at position ``a`` (0-based) has the average rank ``a + (t + 1) / 2``; each run of the cells lies
    inside one pooled run, found by a lexicographic search on (row, value) (complex keys sort so). Every
    quantity is a sum of half-integers, exact in float64."""
    g = cells_sorted.shape[0]
    pooled = np.concatenate([cells_sorted, control_sorted], axis=1)
    pooled.sort(axis=1, kind="stable")
    row, first, size, value = _tie_groups(pooled)
    size = size.astype(np.float64)
    average = first + (size + 1.0) / 2.0
    tie_term = np.bincount(row, weights=size ** 3 - size, minlength=g)
    c_row, _, c_size, c_value = _tie_groups(cells_sorted)
    at = np.searchsorted(_row_value_keys(row, value), _row_value_keys(c_row, c_value))
    return np.bincount(c_row, weights=c_size * average[at], minlength=g), tie_term


def wilcoxon_pvalues(cells: np.ndarray, control: "np.ndarray | ControlCells", chunk_genes: int = 2048) -> np.ndarray:
    """Two-sided Wilcoxon rank-sum (Mann-Whitney U) p-value per gene, cells versus controls.

    ``cells``: (n1, G); ``control``: (n2, G) or :class:`ControlCells`; returns (G,). The normal approximation
    with tie and continuity correction, as ``scipy.stats.mannwhitneyu(method="asymptotic")`` computes it (and
    pdex's numba kernel); the tests check the p-values are scipy's to the last bit. With ``R1`` the cells' rank
    sum in the pooled sample, ``n = n1 + n2`` and ``T = sum_t (t^3 - t)`` over runs of ``t`` tied values::

        U1 = R1 - n1 (n1 + 1) / 2,   U = max(U1, n1 n2 - U1)
        z  = (U - n1 n2 / 2 - 1/2) / sqrt(n1 n2 / 12 · (n + 1 - T / (n (n - 1)))),   p = min(1, 2 Φ(-z))

    The ranks come from sorted values: the controls are sorted once (:class:`ControlCells`), the cells per
    call, and the two merged (:func:`_rank_sums`); ``benchmarks/bench_vcc.py`` times it against scipy.
    Genes are processed in chunks of ``chunk_genes``; a gene constant over both groups, or with a NaN value,
    gets p = 1.
    """
    from scipy.special import ndtr

    control = ControlCells.of(control)
    cells = np.asarray(cells, dtype=np.float64)
    if cells.ndim != 2 or cells.shape[1] != control.n_genes:
        raise ValueError(f"cells {cells.shape} and control {(control.n_cells, control.n_genes)} must be (n, G) "
                         "with the same G")
    if cells.shape[0] == 0:
        raise ValueError("the Wilcoxon test needs at least one cell in each group")
    n1, n2 = cells.shape[0], control.n_cells
    n = n1 + n2
    n_genes = cells.shape[1]
    out = np.ones(n_genes)
    for start in range(0, n_genes, chunk_genes):
        stop = min(start + chunk_genes, n_genes)
        x = np.ascontiguousarray(cells[:, start:stop].T)
        x.sort(axis=1)
        r1, tie_term = _rank_sums(x, control.sorted[start:stop])
        u1 = r1 - n1 * (n1 + 1) / 2
        u = np.maximum(u1, n1 * n2 - u1)
        sd = np.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))))
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (u - n1 * n2 / 2 - 0.5) / sd
        p = ndtr(-z) * 2
        nan = np.isnan(x[:, -1]) | np.isnan(control.sorted[start:stop, -1])  # NaN sorts last
        out[start:stop] = np.where(nan, np.nan, p)
    return np.clip(np.where(np.isnan(out), 1.0, out), 0.0, 1.0)


def log2_fold_change(cells_mean: np.ndarray, control_mean: np.ndarray) -> np.ndarray:
    """pdex's log2 fold change of two log1p pseudobulks (``is_log1p=True``, geometric mean, epsilon 0).

    With ``m_g`` and ``c_g`` the means over cells of the log1p expression::

        lfc_g = log2( expm1(m_g) / expm1(c_g) )

    i.e. the log2 ratio of the geometric means (pseudo-count 1) back on the count scale. A gene
    unexpressed in both groups (0 / 0) gets 0; one expressed in only one group gets ±inf (kept, as
    cell-eval keeps it: such genes rank first by |lfc|). NaN (only possible with negative input) is 0.
    """
    num = np.expm1(np.asarray(cells_mean, dtype=np.float64))
    den = np.expm1(np.asarray(control_mean, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        lfc = np.log2(num / den)
    return np.where(np.isnan(lfc), 0.0, lfc)


@dataclass(frozen=True)
class DECall:
    """The DE call of one cell set against the controls.

    ``qvalues`` (G,): BH-adjusted Wilcoxon p-values; ``log_fold_change`` (G,): :func:`log2_fold_change`
    of the set's and the controls' pseudobulks; ``genes``: indices of the DE genes (``q < alpha``),
    sorted by *decreasing* |log2 fold change|, ties by gene index (most strongly changed first).
    """

    qvalues: np.ndarray
    log_fold_change: np.ndarray
    genes: np.ndarray


def call_de_genes(cells: np.ndarray, control: "np.ndarray | ControlCells", alpha: float = DEFAULT_ALPHA) -> DECall:
    """Call DE genes of ``cells`` (n1, G) versus ``control`` (n2, G, or :class:`ControlCells`) as cell-eval does
    (pdex, ``mode="ref"``).

    ``q_g`` = :func:`benjamini_hochberg` of the :func:`wilcoxon_pvalues` over all G genes. Gene g is DE when
    ``float32(q_g) < float32(alpha)`` (strictly; cell-eval stores q in single precision before the
    comparison). The DE genes are ordered by decreasing ``float32(|lfc_g|)`` (:func:`log2_fold_change`;
    single precision as cell-eval ranks them), ties by increasing gene index.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    cells = np.asarray(cells, dtype=np.float64)
    control = ControlCells.of(control)
    q = benjamini_hochberg(wilcoxon_pvalues(cells, control))
    lfc = log2_fold_change(cells.mean(axis=0), control.mean)
    hit = np.flatnonzero(q.astype(np.float32) < np.float32(alpha))
    size = np.abs(lfc[hit]).astype(np.float32)
    genes = hit[np.argsort(-size, kind="stable")]  # hit is ascending, so ties keep the gene order
    return DECall(qvalues=q, log_fold_change=lfc, genes=genes)


def des_from_calls(pred: DECall, true: DECall) -> float:
    """Differential expression score of one perturbation from the predicted and the true DE calls.

    With ``G_true`` the genes DE in the truth and ``G_pred`` those DE in the prediction (both versus
    the same controls, each list ordered by decreasing |log2 fold change|, see :func:`call_de_genes`)::

        k     = |G_true|
        DES   = |G_pred[:k] ∩ G_true| / k          (G_pred[:k]: the first k genes of G_pred)
        DES   = 0                                  when k = 0

    (cell-eval's ``overlap_at_N``). Cutting the predicted list to the size of the true one stops a
    prediction from scoring 1 by calling every gene DE. A truth without any DE gene scores 0 whatever
    the prediction, as in cell-eval.
    """
    n_true = true.genes.size
    if n_true == 0:
        return 0.0
    kept = pred.genes[:n_true]
    return float(np.intersect1d(kept, true.genes).size / n_true)


# ----------------------------------------------------------------------------------------------
# PDS, MAE and Pearson Δ on pseudobulks
# ----------------------------------------------------------------------------------------------
def pds_scores(pred_change: np.ndarray, true_change: np.ndarray,
               exclude: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Perturbation discrimination score of each perturbation, shape (N,), in [1/N, 1], 1 = perfect.

    ``pred_change``, ``true_change``: (N, G), row p of each is perturbation p's change
    ``δ̂_p = mean(pred_p) − mean(pred control)`` and ``δ_q = mean(true_q) − mean(true control)`` (with
    shared control cells the control mean cancels inside the distance, so pseudobulks give the same
    ranks). With the L1 distance over the genes kept for p, ``d_p(q) = Σ_{g ∉ E_p} |δ_q,g − δ̂_p,g|``::

        rank_p = position of q = p when q = 1..N are sorted by increasing d_p(q)   (0 = nearest)
        PDS_p  = 1 − rank_p / N

    (cell-eval's ``discrimination_score_l1``; the sort is numpy's default ``argsort``, so exact ties
    are ordered as numpy orders them, as in cell-eval). 1 when the own truth is the nearest, 1/N when
    it is the farthest; an uninformative prediction averages (N + 1) / (2N). A single perturbation
    scores 1.

    ``exclude``: per-row gene indices ``E_p`` left out of row p's distances. The VCC (cell-eval) leaves
    out the gene whose name equals the perturbation label (:func:`label_gene_indices`): the knocked-down
    target of a single perturbation, nothing for a combination ``A+B``. ``None`` keeps all genes.
    """
    from scipy.spatial.distance import cdist  # imported on use: scipy.stats / spatial are slow to import

    pred = np.asarray(pred_change, dtype=np.float64)
    true = np.asarray(true_change, dtype=np.float64)
    if pred.ndim != 2 or pred.shape != true.shape:
        raise ValueError(f"pseudobulk changes must both be (N, G); got {pred.shape} and {true.shape}")
    n, n_genes = pred.shape
    if exclude is not None and len(exclude) != n:
        raise ValueError(f"exclude has {len(exclude)} entries for {n} perturbations")
    scores = np.empty(n)
    for p in range(n):
        keep = np.ones(n_genes, dtype=bool)
        if exclude is not None and len(exclude[p]):
            keep[np.asarray(exclude[p], dtype=np.int64)] = False
        dist = cdist(true[:, keep], pred[p, keep][None, :], metric="cityblock").ravel()  # (N,)
        rank = int(np.flatnonzero(np.argsort(dist) == p)[0])
        scores[p] = 1.0 - rank / n
    return scores


def pseudobulk_mae(pred_pseudobulk: np.ndarray, true_pseudobulk: np.ndarray) -> float:
    """Mean absolute error of one perturbation's pseudobulk over all genes (cell-eval's ``mae``)::

        MAE = (1/G) Σ_g |mean(pred)_g − mean(true)_g|
    """
    pred = np.asarray(pred_pseudobulk, dtype=np.float64)
    true = np.asarray(true_pseudobulk, dtype=np.float64)
    if pred.shape != true.shape or pred.ndim != 1:
        raise ValueError(f"pseudobulks must both be (G,); got {pred.shape} and {true.shape}")
    return float(np.abs(pred - true).mean())


def top_change_mae(pred_pseudobulk: np.ndarray, true_pseudobulk: np.ndarray, control_mean: np.ndarray,
                   top_k: int = DEFAULT_TOP_K) -> float:
    """Mean absolute error over the ``top_k`` most-changed genes (not part of the VCC block).

    With ``T`` the ``min(top_k, G)`` genes of largest ``|true_g − control_g|`` (ties by gene order)::

        MAE_top = (1/|T|) Σ_{g ∈ T} |pred_g − true_g|

    The VCC's MAE (:func:`pseudobulk_mae`) runs over all genes; this variant is kept for analyses that
    do not want thousands of unchanged genes to dilute the error.
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


def vcc_pearson_delta(pred_pseudobulk: np.ndarray, true_pseudobulk: np.ndarray,
                      control_mean: np.ndarray) -> float:
    """The VCC's Pearson Δ of one perturbation (cell-eval's ``pearson_delta``), against the pooled controls.

    With ``c̄`` the mean of *all* control cells of the cell line (pooled over batches)::

        PearsonΔ_VCC = corr_g( mean(pred)_g − c̄_g , mean(true)_g − c̄_g )

    NaN when either change is constant over genes. TxPert's own Pearson Δ subtracts batch-matched
    control means instead (see docs/metrics.md); the two differ whenever batches differ.
    """
    pred = np.asarray(pred_pseudobulk, dtype=np.float64) - np.asarray(control_mean, dtype=np.float64)
    true = np.asarray(true_pseudobulk, dtype=np.float64) - np.asarray(control_mean, dtype=np.float64)
    pc, tc = pred - pred.mean(), true - true.mean()
    denom = np.sqrt((pc * pc).sum() * (tc * tc).sum())
    if not denom > 0:
        return float("nan")
    return float(np.clip((pc * tc).sum() / denom, -1.0, 1.0))


# ----------------------------------------------------------------------------------------------
# scaling, baseline and the whole block
# ----------------------------------------------------------------------------------------------
def scale_against_baseline(value: float, baseline: float, perfect: float) -> float:
    """Scale a metric so the baseline scores 0 and a perfect prediction 1, as ``cell-eval score`` does.

    For a higher-is-better metric (DES, PDS; ``perfect = 1``) and a lower-is-better one (MAE;
    ``perfect = 0``)::

        scaled = (X − X_base) / (1 − X_base)        perfect = 1
        scaled = 1 − X / X_base                     perfect = 0
        scaled = max(0, scaled), and 0 when it is NaN

    Worse than the baseline is clipped to 0 (there is no upper clip: better than perfect cannot
    happen). An undefined value (a baseline that is already perfect, or a NaN metric) counts as 0, as in
    cell-eval (which also maps the −inf of ``x / 0`` to 0 through the clip).
    """
    if perfect not in (0.0, 1.0):
        raise ValueError(f"perfect must be 0 (lower is better) or 1 (higher is better), got {perfect}")
    v, b = np.float64(value), np.float64(baseline)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = (v - b) / (1.0 - b) if perfect == 1.0 else 1.0 - v / b
    if np.isnan(scaled):
        return 0.0
    return float(max(0.0, scaled))


PERFECT = {"des": 1.0, "pds": 1.0, "mae": 0.0}


def overall_score(model: Mapping[str, float], baseline: Mapping[str, float]) -> tuple[dict[str, float], float]:
    """``(scaled, S)``: each of DES / PDS / MAE scaled against the baseline (:func:`scale_against_baseline`,
    perfect values :data:`PERFECT`) and ``S = 100 · mean(scaled)`` (cell-eval's ``avg_score`` × 100)."""
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
    """Gene indices of each perturbation's target(s) (every constituent of ``A+B``).

    A perturbation name is gene symbols joined by ``sep`` (``"KLF1+MAP2K6"``); symbols not among
    ``gene_names`` (e.g. a target filtered out of the HVGs) are skipped. Not what the VCC excludes from
    PDS (that is :func:`label_gene_indices`).
    """
    lookup = {g: i for i, g in enumerate(gene_names)}
    return [[lookup[g] for g in str(p).split(sep) if g in lookup] for p in perturbations]


def label_gene_indices(perturbations: Sequence[str], gene_names: Sequence[str]) -> list[list[int]]:
    """The genes the VCC leaves out of each perturbation's PDS distances: those named exactly like its label.

    ``[[i]]`` when ``gene_names[i] == label`` (a single perturbation of a measured gene), ``[]`` otherwise
    -- in particular for a combination ``A+B``, whose label names no gene (cell-eval compares the gene
    names with the whole label).
    """
    lookup: dict[str, list[int]] = {}
    for i, g in enumerate(gene_names):
        lookup.setdefault(str(g), []).append(i)
    return [list(lookup.get(str(p), [])) for p in perturbations]


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


@dataclass(frozen=True)
class TrueSet:
    """What scoring needs of one perturbation's true cells, so the cells themselves can be dropped:
    ``call`` (:func:`call_de_genes` against the controls), ``mean`` (the pseudobulk, (G,)) and ``n_cells``
    (how many cells a (G,) prediction is replicated to)."""

    call: DECall
    mean: np.ndarray
    n_cells: int


def summarise_true(pert: str, cells: np.ndarray, control: ControlCells, alpha: float = DEFAULT_ALPHA) -> TrueSet:
    """The :class:`TrueSet` of perturbation ``pert``'s true cells ``(n, G)`` against the line's controls."""
    t = np.asarray(cells, dtype=np.float64)
    if t.ndim != 2:
        raise ValueError(f"true cells of perturbation {pert!r} must be (n_cells, {control.n_genes}), got {t.shape}")
    t = _as_cells(pert, t, control.n_genes, 0, "true cells")
    return TrueSet(call=call_de_genes(t, control, alpha), mean=t.mean(axis=0), n_cells=t.shape[0])


def score_perturbation(pert: str, pred: np.ndarray, truth: TrueSet, control: ControlCells,
                       alpha: float = DEFAULT_ALPHA, what: str = "predicted cells") -> tuple[dict, np.ndarray]:
    """DES, MAE and the VCC Pearson Δ of one perturbation's prediction (cells ``(n, G)`` or a mean ``(G,)``,
    clipped at 0), and its pseudobulk ``(G,)``. PDS needs every perturbation's pseudobulk: :func:`close_block`.

    Returns ``({"des", "mae", "pearson_delta", "n_de_pred", "n_de_true"}, pseudobulk)``."""
    cells = np.maximum(_as_cells(pert, pred, control.n_genes, truth.n_cells, what), 0.0)  # clip at 0
    mean = cells.mean(axis=0)
    call = call_de_genes(cells, control, alpha)
    return {"des": des_from_calls(call, truth.call),
            "mae": pseudobulk_mae(mean, truth.mean),
            "pearson_delta": vcc_pearson_delta(mean, truth.mean, control.mean),
            "n_de_pred": int(call.genes.size), "n_de_true": int(truth.call.genes.size)}, mean


def close_block(per: Mapping[str, dict], pred_mean: np.ndarray, true_mean: np.ndarray, control_mean: np.ndarray,
                exclude: Sequence[Sequence[int]] | None = None) -> dict:
    """The block of one prediction set over the perturbations of ``per`` (the :func:`score_perturbation`
    values, in the row order of ``pred_mean`` and ``true_mean``, both ``(P, G)``): adds each perturbation's
    PDS (:func:`pds_scores` among these P) to ``per`` and returns the means ``{"des", "pds", "mae",
    "pearson_delta", "per_perturbation": per}`` (NaN Pearson Δ values left out)."""
    pds = pds_scores(pred_mean - control_mean, true_mean - control_mean, exclude)
    for i, p in enumerate(per):
        per[p]["pds"] = float(pds[i])
    pdelta = np.array([v["pearson_delta"] for v in per.values()])
    return {"des": float(np.mean([v["des"] for v in per.values()])),
            "pds": float(np.mean(pds)),
            "mae": float(np.mean([v["mae"] for v in per.values()])),
            "pearson_delta": float(np.nanmean(pdelta)) if np.isfinite(pdelta).any() else float("nan"),
            "per_perturbation": per}


def _raw_block(pred: Mapping[str, np.ndarray], perts: list[str], truths: dict[str, TrueSet], control: ControlCells,
               exclude: Sequence[Sequence[int]] | None, alpha: float, what: str) -> dict:
    """DES, PDS, MAE and the VCC Pearson Δ (means and per perturbation) of one set of predictions."""
    per: dict[str, dict] = {}
    pred_mean = np.empty((len(perts), control.n_genes))
    for i, p in enumerate(perts):
        per[p], pred_mean[i] = score_perturbation(p, pred[p], truths[p], control, alpha, what)
    return close_block(per, pred_mean, np.stack([truths[p].mean for p in perts]), control.mean, exclude)


def vcc_scores(pred_cells: Mapping[str, np.ndarray], true_cells: Mapping[str, np.ndarray],
               control_cells: np.ndarray, baseline_cells: Mapping[str, np.ndarray] | None = None, *,
               alpha: float = DEFAULT_ALPHA,
               exclude_genes: Mapping[str, Sequence[int]] | None = None) -> dict:
    """The VCC block for one model and one cell line: DES, PDS, MAE, scaled values, S and the VCC Pearson Δ.

    ``pred_cells``, ``true_cells``, ``baseline_cells``: ``{perturbation: (n_cells, G)}`` (a
    prediction may also be a ``(G,)`` mean; see the module docstring); the evaluated perturbations
    are the keys of ``true_cells`` and both prediction dicts must cover exactly them. Predicted and
    baseline cells are clipped at 0 before scoring. ``control_cells``: (n_control, G), the controls of
    truth and prediction alike. ``exclude_genes``: optional ``{perturbation: gene indices}`` left out
    of that perturbation's PDS distances (the VCC's: :func:`label_gene_indices`).

    Each raw metric is the mean over perturbations of the per-perturbation values (DES:
    :func:`des_from_calls`, PDS: :func:`pds_scores` among the perturbations given, MAE:
    :func:`pseudobulk_mae`, Pearson Δ: :func:`vcc_pearson_delta`, NaN values left out). With
    ``baseline_cells`` (normally :func:`cell_mean_baseline` of the training set) the same metrics
    are computed for the baseline, and (:func:`scale_against_baseline`)::

        scaled_DES = max(0, (DES − DES_base) / (1 − DES_base))
        scaled_PDS = max(0, (PDS − PDS_base) / (1 − PDS_base))
        scaled_MAE = max(0, 1 − MAE / MAE_base)
        S          = 100 · (scaled_DES + scaled_PDS + scaled_MAE) / 3

    (an undefined scaled value counts 0), so the baseline scores S = 0 and a perfect prediction
    S = 100. Without a baseline the scaled values and S are ``None``.

    Returns ``{"n_perturbations", "des", "pds", "mae", "pearson_delta", "per_perturbation": {p: {"des",
    "pds", "mae", "pearson_delta", "n_de_pred", "n_de_true"}}, "baseline": {"des", "pds", "mae",
    "pearson_delta"} | None, "scaled": {"des", "pds", "mae"} | None, "score": S | None}``.
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
    control = ControlCells(control)
    truths = {p: summarise_true(p, true_cells[p], control, alpha) for p in perts}
    exclude = None if exclude_genes is None else [list(exclude_genes.get(p, ())) for p in perts]

    model = _raw_block(pred_cells, perts, truths, control, exclude, alpha, "predicted cells")
    out = {"n_perturbations": len(perts), **model, "baseline": None, "scaled": None, "score": None}
    if baseline_cells is not None:
        base = _raw_block(baseline_cells, perts, truths, control, exclude, alpha, "baseline cells")
        scaled, score = overall_score(model, base)
        out["baseline"] = {k: base[k] for k in ("des", "pds", "mae", "pearson_delta")}
        out["scaled"] = scaled
        out["score"] = score
    return out
