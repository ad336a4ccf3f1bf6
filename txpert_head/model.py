"""The TxPert model: basal state + sum of perturbation embeddings, decoded to expression.

Shapes: B cells, G measured genes, K perturbation slots per cell (padded with -1), d = encoder width.

* ``basal="mlp"``: ``s = f(x) ∈ R^d`` (MLP G -> hidden -> d) and ``ŷ = g(s + Σ_p z_p)``.
* ``basal="none"`` (delta variant): ``ŷ = x + g(Σ_p z_p)``.

``g`` is an MLP d -> hidden -> G; ``z_p`` is row p of ``Z = encoder()`` (a :class:`gnn.PerturbationEncoder`).
Loss: MSE between ŷ and the perturbed cell's expression.

Target-gene term (``target_term=True``, beyond TxPert): TxPert's decoder cannot tell which output column
is the perturbed gene, so it cannot learn a knock-down's own drop. For each perturbed gene p measured in
column j_p the term adds ``t_p = w·z_p + b + γ·x_{j_p}`` to ``ŷ_{j_p}`` (w, b, γ learned, zero-initialised),
so the change can depend on the gene's embedding and on its basal level.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

BASAL_KINDS = ("mlp", "none")


def mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers with GELU (and dropout) between them, none after the last."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.GELU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class TxPert(nn.Module):
    """Basal encoder, GNN perturbation encoder and decoder.

    Args:
        encoder: module with ``encoder() -> Z (V, d)`` and attribute ``dim``.
        n_genes: G.
        row_to_col: (V,) long: the measured-gene column of each encoder row, -1 if not measured
            (only used by the target-gene term).
        basal: ``mlp`` or ``none``.
        hidden: MLP hidden width.
        dropout: dropout in the MLPs.
        target_term: add the target-gene term.
    """

    def __init__(self, encoder: nn.Module, n_genes: int, row_to_col: Tensor | None = None, basal: str = "mlp",
                 hidden: int = 256, dropout: float = 0.0, target_term: bool = False):
        super().__init__()
        if basal not in BASAL_KINDS:
            raise ValueError(f"basal must be one of {BASAL_KINDS}, got {basal!r}")
        d = int(encoder.dim)
        self.encoder = encoder
        self.basal_kind = basal
        self.basal = mlp([n_genes, hidden, d], dropout) if basal == "mlp" else None
        self.decoder = mlp([d, hidden, n_genes], dropout)
        # zero-initialised output layer: training starts from "no change" (delta variant) and moves away only
        # as far as the data supports, which keeps predictions for unseen perturbations near the shared shift
        nn.init.zeros_(self.decoder[-1].weight)
        nn.init.zeros_(self.decoder[-1].bias)
        self.target_term = target_term
        if target_term:
            if row_to_col is None:
                raise ValueError("target_term needs row_to_col")
            self.register_buffer("row_to_col", row_to_col.long().clone())
            self.target_head = nn.Linear(d, 1)
            nn.init.zeros_(self.target_head.weight)
            nn.init.zeros_(self.target_head.bias)
            self.target_gain = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor, pert_rows: Tensor, Z: Tensor | None = None, hide: Tensor | None = None) -> Tensor:
        """ŷ (B, G) from control input ``x`` (B, G) and perturbation rows ``pert_rows`` (B, K), -1 = none.

        ``Z`` (V, d) may be passed to reuse one encoder pass (e.g. at evaluation); ``hide`` (V,) bool is passed
        to the encoder (training-time self-masking, see :class:`gnn.PerturbationEncoder`).
        """
        Z = self.encoder(hide) if Z is None else Z
        mask = pert_rows >= 0
        z = Z[pert_rows.clamp(min=0)] * mask.unsqueeze(-1).to(Z.dtype)  # (B, K, d)
        shift = z.sum(1)
        if self.basal is None:
            y = x + self.decoder(shift)
        else:
            y = self.decoder(self.basal(x) + shift)
        if self.target_term:
            cols = torch.where(mask, self.row_to_col[pert_rows.clamp(min=0)], torch.full_like(pert_rows, -1))
            valid = cols >= 0
            if bool(valid.any()):
                b_idx, k_idx = valid.nonzero(as_tuple=True)
                c = cols[b_idx, k_idx]
                t = self.target_head(z[b_idx, k_idx]).squeeze(-1) + self.target_gain * x[b_idx, c]
                y = y.index_put((b_idx, c), t, accumulate=True)
        return y
