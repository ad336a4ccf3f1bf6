"""Model-free rankings of candidate genes for target identification (compare with :mod:`txpert_head.identification.targets`).

All return scores (Q, C) over the same candidate list (higher = ranked earlier); candidates a baseline
cannot score get ``-inf`` and fall to the end, where :func:`txpert_head.identification.targets.ranking` orders them by a
fixed random key -- i.e. in a fixed random order after the scored ones.

* **PCA-kNN** (nearest training perturbation by Δ correlation): PCA (k components) fitted on the observed
  changes ``δ_t`` of the T training perturbations (centred on their mean); a query δ_q and every δ_t are
  projected, and each training perturbation is scored by the Pearson correlation of the projections.
  A gene's score is the best score of the training perturbations it belongs to. *What it can do*: find a
  combination's constituents that were perturbed in training, or a gene perturbed in training again.
  *What it cannot do*: name any gene that was never perturbed in training -- a held-out single target is
  never among the T scored genes, so it lands in the random tail after them (slightly worse than random).
* **own-gene** (a non-model heuristic): CRISPRi / knock-out lowers and CRISPRa raises the target's own mRNA,
  so measured candidates are ranked by ``direction · δ_q[c]`` (direction −1 for knock-down/-out, +1 for
  activation); candidates that are not measured genes cannot be scored.
* **random**: see :func:`txpert_head.metrics.identification.random_expectation` for the exact expected values.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from txpert_head.metrics.expression import row_pearson


def pca_knn_scores(train_delta: np.ndarray, train_genes: Sequence[Sequence[str]], query_delta: np.ndarray,
                   candidates: Sequence[str], n_components: int = 10) -> np.ndarray:
    """PCA-kNN scores (Q, C); ``train_delta`` (T, G), ``train_genes``: the T perturbations' genes."""
    train_delta = np.asarray(train_delta, dtype=np.float64)
    query_delta = np.atleast_2d(np.asarray(query_delta, dtype=np.float64))
    T = len(train_delta)
    if T < 3:
        raise ValueError(f"PCA-kNN needs at least 3 training perturbations, got {T}")
    center = train_delta.mean(0)
    _, _, vt = np.linalg.svd(train_delta - center, full_matrices=False)
    k = max(2, min(n_components, T - 1, vt.shape[0]))
    basis = vt[:k]  # (k, G)
    pt = (train_delta - center) @ basis.T  # (T, k)
    pq = (query_delta - center) @ basis.T  # (Q, k)
    sim = np.stack([row_pearson(np.repeat(pq[q:q + 1], T, 0), pt) for q in range(len(pq))])  # (Q, T)
    sim = np.nan_to_num(sim, nan=-1.0)
    col = {g: i for i, g in enumerate(candidates)}
    out = np.full((len(pq), len(candidates)), -np.inf)
    for t, genes in enumerate(train_genes):
        for g in genes:
            if g in col:
                out[:, col[g]] = np.maximum(out[:, col[g]], sim[:, t])
    return out


def own_gene_scores(query_delta: np.ndarray, measured: Sequence[str], candidates: Sequence[str],
                    direction: int) -> np.ndarray:
    """Own-gene heuristic scores (Q, C): ``direction · δ_q[gene]`` for measured candidates, else ``-inf``."""
    if direction not in (-1, 1):
        raise ValueError("direction must be -1 (knock-down / knock-out) or +1 (activation)")
    query_delta = np.atleast_2d(np.asarray(query_delta, dtype=np.float64))
    col = {g: i for i, g in enumerate(measured)}
    out = np.full((len(query_delta), len(candidates)), -np.inf)
    for c, g in enumerate(candidates):
        if g in col:
            out[:, c] = direction * query_delta[:, col[g]]
    return out
