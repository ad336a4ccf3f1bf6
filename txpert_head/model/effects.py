r"""Effect codes: the observed training change of each trained gene, in a low-rank basis of all of them.

With ``D \in R^{n \times G}`` the training changes of the ``n`` trained single-gene perturbations (one row
per gene: its pseudobulk change ``Δ_q = x̄_q − r_q`` of :mod:`txpert_head.data.profiles`, averaged over cell
lines when it was trained in several), take the thin SVD ``D = A S U^T`` (not centred: the shared mean change
stays in the span) and keep ``r = min(rank(D), max_rank)`` components:

.. math::

    c_q = U_r^T Δ_q / σ \in R^r, \qquad σ = \mathrm{RMS}(U_r^T D^T), \qquad Δ_q ≈ σ U_r c_q

(``≈`` is ``=`` whenever ``r = rank(D)``). ``σ`` keeps the codes near unit scale whatever the data's units.
The mean code ``c̄ = mean_q c_q`` decodes to the mean training change (the ``general`` baseline's ``Δ̄``).

These codes are the node inputs of the ``effects`` encoder (:mod:`gnn.effects`) and the basis ``σ U_r``
decodes the prior codes back to gene space (:class:`txpert_head.model.txpert.TxPert`).
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from txpert_head.data.perturb_data import constituents
from txpert_head.data.splits import Condition


@dataclass(frozen=True)
class EffectCodes:
    """``genes`` (n,), ``codes`` (n, r), ``mean_code`` (r,), ``basis`` (G, r) = ``σ U_r``."""

    genes: list[str]
    codes: np.ndarray
    mean_code: np.ndarray
    basis: np.ndarray

    @property
    def rank(self) -> int:
        return int(self.codes.shape[1])

    def gene_embedding(self) -> np.ndarray:
        """``√G · U_r`` (G, r): each measured gene's row of the orthonormal effect basis, near unit scale -- how
        the gene's expression moves across the training perturbations (the gene embedding of the linear
        baseline of Ahlmann-Eltze et al., without centring)."""
        norms = np.linalg.norm(self.basis, axis=0, keepdims=True)
        U = self.basis / np.where(norms > 0, norms, 1.0)
        return (U * np.sqrt(self.basis.shape[0])).astype(np.float32)


def effect_codes(deltas: dict[Condition, np.ndarray], n_genes: int, max_rank: int = 64, tol: float = 1e-6) -> EffectCodes:
    """Codes of the trained single-gene perturbations in ``deltas`` (``{(line, pert): Δ (G,)}``; combinations
    are ignored). With no trained single, one zero code of rank 1 is returned (every gene then looks unseen)."""
    by_gene: dict[str, list[np.ndarray]] = {}
    for (_, pert), d in deltas.items():
        genes = constituents(pert)
        if len(genes) == 1:
            by_gene.setdefault(genes[0], []).append(np.asarray(d, dtype=np.float64))
    genes = sorted(by_gene)
    if not genes:
        return EffectCodes([], np.zeros((0, 1)), np.zeros(1), np.zeros((n_genes, 1)))
    D = np.stack([np.mean(by_gene[g], axis=0) for g in genes])  # (n, G)
    _, s, vt = np.linalg.svd(D, full_matrices=False)
    rank = int(np.sum(s > tol * max(s[0], 1e-300))) if len(s) else 0
    r = max(1, min(rank, max_rank))
    U = vt[:r].T  # (G, r)
    raw = D @ U  # (n, r)
    sigma = float(np.sqrt(np.mean(raw ** 2))) or 1.0
    codes = raw / sigma
    return EffectCodes(genes, codes.astype(np.float32), codes.mean(0).astype(np.float32),
                       (U * sigma).astype(np.float32))

