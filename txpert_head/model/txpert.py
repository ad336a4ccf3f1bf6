"""The TxPert model: basal state + sum of perturbation embeddings, decoded to expression.

Shapes: B cells, G measured genes, K perturbation slots per cell (padded with -1), d = encoder width.

* ``basal="mlp"``: ``s = f(x) ∈ R^d`` (MLP G -> hidden -> d) and ``ŷ = g(s + Σ_p z_p)``.
* ``basal="none"`` (delta variant): ``ŷ = x + g(Σ_p z_p)``.

``g`` is an MLP d -> hidden -> G; ``z_p`` is row p of ``Z = encoder()`` (a :class:`gnn.PerturbationEncoder`).
Loss: MSE between ŷ and the perturbed cell's expression.

Prior path (encoders with ``node_inputs="effects"``, the default of ``txpert train``): the encoder also returns
each gene's prior code ``π_p`` (its own observed training effect when visible, else the weighted mean of its
trained graph neighbours' effects, else the mean effect; :mod:`gnn.effects`), and the model adds its decoding
``B Σ_p π_p`` (``B`` (G, r) the effect basis of :mod:`txpert_head.model.effects`) to ``ŷ``::

    ŷ = x + B Σ_p π_p + g(Σ_p z_p)          (basal="none")
    ŷ = g(s + Σ_p z_p) + B Σ_p π_p          (basal="mlp")

With ``g``'s output layer at zero, the untrained model is the training-free ``graph_neighbours`` baseline for
an unseen single and the ``additive`` baseline for a combination of trained genes; training learns the
correction ``g(Σ_p z_p)`` from the GNN embeddings (the attention over neighbours, the other layers, the
neighbours' own neighbourhoods).

Target-gene term (``target_term=True``, beyond TxPert): TxPert's decoder cannot tell which output column
is the perturbed gene, so it cannot learn a knock-down's own drop. For each perturbed gene p measured in
column j_p the term adds ``t_p = w·z_p + b + γ·x_{j_p}`` to ``ŷ_{j_p}`` (w, b, γ learned, zero-initialised),
so the change can depend on the gene's embedding and on its basal level. With the prior path the term
is only added for genes whose own effect is not visible (``t_p · (1 − m_p)``): a visible gene's prior already
holds its own change.
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
        encoder: module with ``encode(hide) -> EncoderOutput`` (``Z`` (V, d), prior codes, visibility) and ``dim``.
        n_genes: G.
        row_to_col: (V,) long: the measured-gene column of each encoder row, -1 if not measured
            (only used by the target-gene term).
        basal: ``mlp`` or ``none``.
        hidden: MLP hidden width.
        dropout: dropout in the MLPs.
        target_term: add the target-gene term.
        prior_rank: ``r`` of the prior path (encoders with ``node_inputs="effects"``); its basis ``B`` (G, r)
            starts at zero and is set with :meth:`set_prior_basis`.
    """

    def __init__(self, encoder: nn.Module, n_genes: int, row_to_col: Tensor | None = None, basal: str = "mlp",
                 hidden: int = 256, dropout: float = 0.0, target_term: bool = False, prior_rank: int | None = None):
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
        self.register_buffer("prior_basis", torch.zeros(n_genes, prior_rank) if prior_rank else None)

    @torch.no_grad()
    def set_prior_basis(self, basis: Tensor) -> None:
        """``B`` (G, r): decodes prior codes to changes in gene space."""
        if self.prior_basis is None or tuple(basis.shape) != tuple(self.prior_basis.shape):
            raise ValueError(f"prior basis of shape {tuple(basis.shape)} does not fit this model "
                             f"({None if self.prior_basis is None else tuple(self.prior_basis.shape)})")
        self.prior_basis.copy_(torch.as_tensor(basis).to(self.prior_basis))

    def encode(self, hide: Tensor | None = None):
        """One encoder pass (:meth:`gnn.PerturbationEncoder.encode`), to reuse over many ``forward`` calls."""
        return self.encoder.encode(hide)

    def forward(self, x: Tensor, pert_rows: Tensor, enc=None, hide: Tensor | None = None) -> Tensor:
        """ŷ (B, G) from control input ``x`` (B, G) and perturbation rows ``pert_rows`` (B, K), -1 = none.

        ``enc`` (the output of :meth:`encode`) may be passed to reuse one encoder pass (e.g. at evaluation);
        ``hide`` (V,) bool is passed to the encoder (training-time self-masking, see
        :class:`gnn.PerturbationEncoder`).
        """
        enc = self.encoder.encode(hide) if enc is None else enc
        Z = enc.Z
        mask = pert_rows >= 0
        z = Z[pert_rows.clamp(min=0)] * mask.unsqueeze(-1).to(Z.dtype)  # (B, K, d)
        shift = z.sum(1)
        if self.basal is None:
            y = x + self.decoder(shift)
        else:
            y = self.decoder(self.basal(x) + shift)
        use_prior = self.prior_basis is not None and enc.prior is not None
        if use_prior:
            codes = (enc.prior[pert_rows.clamp(min=0)] * mask.unsqueeze(-1).to(enc.prior.dtype)).sum(1)  # (B, r)
            y = y + codes @ self.prior_basis.t()
        if self.target_term:
            cols = torch.where(mask, self.row_to_col[pert_rows.clamp(min=0)], torch.full_like(pert_rows, -1))
            valid = cols >= 0
            if bool(valid.any()):
                b_idx, k_idx = valid.nonzero(as_tuple=True)
                c = cols[b_idx, k_idx]
                t = self.target_head(z[b_idx, k_idx]).squeeze(-1) + self.target_gain * x[b_idx, c]
                if use_prior and enc.visible is not None:  # a visible gene's prior holds its own change
                    t = t * (~enc.visible[pert_rows[b_idx, k_idx]]).to(t.dtype)
                y = y.index_put((b_idx, c), t, accumulate=True)
        return y
