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

Neighbour-response term (``neighbour_edges`` given; ``neighbour_term=True`` in training): a perturbed gene's
graph partners respond. For every edge ``j -> p`` of layer ``ℓ`` into a perturbed gene p whose source j is a
measured gene (column ``c_j``), with weight ``w_{jp}``, the term adds ``(a_ℓ + v_ℓ·z_p) · w_{jp}`` to
``ŷ_{c_j}`` (``a`` (L,), ``v`` (L, d) learned, zero-initialised; times ``1 − m_p`` with the prior path, as the
target term). Edges into p are p's strongest partners (kgbuild caps the in-degree), so for an unseen
perturbation the term says "these measured genes move", with a sign and size learned per layer and from the
gene's embedding -- what a decoder of ``Σ z_p`` alone cannot express for a gene it never saw.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from gnn.layers.linear import Linear

BASAL_KINDS = ("mlp", "none")


def mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers with GELU (and dropout) between them, none after the last."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(a, b))
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
        neighbour_edges: ``(target_rows, source_cols, weights, layers, n_layers)`` of the edges into encoder rows
            from measured genes (:func:`neighbour_edges`); adds the neighbour-response term.
        prior_rank: ``r`` of the prior path (encoders with ``node_inputs="effects"``); its basis ``B`` (G, r)
            starts at zero and is set with :meth:`set_prior_basis`.
    """

    def __init__(self, encoder: nn.Module, n_genes: int, row_to_col: Tensor | None = None, basal: str = "mlp",
                 hidden: int = 256, dropout: float = 0.0, target_term: bool = False, prior_rank: int | None = None,
                 neighbour_edges: tuple[Tensor, Tensor, Tensor, Tensor, int] | None = None):
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
            self.target_head = Linear(d, 1)
            nn.init.zeros_(self.target_head.weight)
            nn.init.zeros_(self.target_head.bias)
            self.target_gain = nn.Parameter(torch.zeros(()))
        self.register_buffer("prior_basis", torch.zeros(n_genes, prior_rank) if prior_rank else None)
        self.neighbour_term = neighbour_edges is not None
        if self.neighbour_term:
            rows, cols, weights, layers, n_layers = neighbour_edges
            order = torch.argsort(rows.long(), stable=True)
            counts = torch.bincount(rows.long(), minlength=int(encoder.num_nodes))
            rowptr = torch.zeros(len(counts) + 1, dtype=torch.long)
            rowptr[1:] = torch.cumsum(counts, 0)
            # CSR over encoder rows (targets p), rebuilt from the graph at every build: not saved in checkpoints
            self.register_buffer("nbr_rowptr", rowptr, persistent=False)
            self.register_buffer("nbr_cols", cols.long()[order].clone(), persistent=False)
            self.register_buffer("nbr_weights", weights.float()[order].clone(), persistent=False)
            self.register_buffer("nbr_layers", layers.long()[order].clone(), persistent=False)
            self.nbr_gain = nn.Parameter(torch.zeros(n_layers))
            self.nbr_head = Linear(d, n_layers, bias=False)
            nn.init.zeros_(self.nbr_head.weight)

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
        return self._output(self.decoder[-1](self._hidden(self.basal_state(x), pert_rows, enc)), x, pert_rows, enc)

    def basal_state(self, x: Tensor) -> Tensor | None:
        """``s = f(x)`` (B, d) of the MLP basal encoder; None without one (``basal="none"``)."""
        return None if self.basal is None else self.basal(x)

    @torch.no_grad()
    def forward_means(self, states: Tensor | None, pert_rows: Tensor, groups: Tensor, n_groups: int,
                      x_mean: Tensor, enc=None) -> Tensor:
        """The mean of :meth:`forward`'s rows per group, (n_groups, G) float64, where the rows of a group share
        their perturbation: ``states`` (B, d) the rows' :meth:`basal_state` (None without a basal encoder),
        ``pert_rows`` (B, K), ``groups`` (B,) long in ``[0, n_groups)`` (every group non-empty, its rows with
        equal ``pert_rows``) and ``x_mean`` (n_groups, G) the mean input of each group.

        Everything after the decoder's hidden layer is affine in the hidden state ``h`` and the input ``x``
        for a fixed perturbation (the output layer ``W_2 h + b_2``, the prior decoding, the target term
        ``w·z + b + γ x_{j_p}``, the neighbour term, the input itself without a basal encoder), so the mean of
        the outputs is that part applied to ``h̄`` and ``x̄``, the group means: ``mean_c ŷ_c = W_2 h̄ + b_2 + ...``.
        The ``(hidden, G)`` output layer runs once per group instead of once per row (half of the head's
        arithmetic when predicting means), in float64; the caller computes a basal state once per distinct
        input and ``x̄`` from sparse rows. Equal to ``forward(...).double()`` averaged per group up to float32
        rounding (to float64 rounding for a float64 model).
        """
        enc = self.encoder.encode() if enc is None else enc
        h = self._hidden(states, pert_rows, enc)
        counts = torch.bincount(groups, minlength=n_groups).to(torch.float64).unsqueeze(1)
        if len(counts) != n_groups or bool((counts == 0).any()):
            raise ValueError(f"forward_means: every one of the {n_groups} groups needs at least one row")
        h_mean = h.new_zeros((n_groups, h.shape[1]), dtype=torch.float64).index_add_(0, groups, h.double()) / counts
        first = torch.full((n_groups,), len(groups), dtype=torch.long, device=groups.device)
        first = first.scatter_reduce(0, groups, torch.arange(len(groups), device=groups.device), reduce="amin")
        out = self.decoder[-1]
        y = torch.nn.functional.linear(h_mean, out.weight.double(), out.bias.double() if out.bias is not None else None)
        return self._output(y, x_mean.to(y), pert_rows[first], enc)

    def _hidden(self, states: Tensor | None, pert_rows: Tensor, enc) -> Tensor:
        """The decoder's last hidden layer (B, hidden): ``g``'s layers before its output layer, on
        ``s + Σ_p z_p`` (``states`` = s, (B, d)), or on ``Σ_p z_p`` without a basal encoder (``states`` None)."""
        Z = enc.Z
        mask = pert_rows >= 0
        shift = (Z[pert_rows.clamp(min=0)] * mask.unsqueeze(-1).to(Z.dtype)).sum(1)  # (B, d)
        h = shift if states is None else states + shift
        for layer in list(self.decoder)[:-1]:   # (slicing the Sequential would build a new module every step)
            h = layer(h)
        return h

    def _output(self, y: Tensor, x: Tensor, pert_rows: Tensor, enc) -> Tensor:
        """ŷ from the decoder's output ``y`` (B, G): the input (no basal encoder) and the prior, target and
        neighbour terms added, in ``y``'s dtype (all affine in ``y`` and ``x`` for given ``pert_rows``)."""
        Z = enc.Z
        mask = pert_rows >= 0
        if self.basal is None:
            y = x.to(y.dtype) + y
        use_prior = self.prior_basis is not None and enc.prior is not None
        if use_prior:
            codes = (enc.prior[pert_rows.clamp(min=0)] * mask.unsqueeze(-1).to(enc.prior.dtype)).sum(1)  # (B, r)
            y = y + (codes @ self.prior_basis.t()).to(y.dtype)
        if self.target_term:
            cols = torch.where(mask, self.row_to_col[pert_rows.clamp(min=0)], torch.full_like(pert_rows, -1))
            valid = cols >= 0
            if bool(valid.any()):
                b_idx, k_idx = valid.nonzero(as_tuple=True)
                c = cols[b_idx, k_idx]
                t = self.target_head(Z[pert_rows[b_idx, k_idx]]).squeeze(-1) + self.target_gain * x[b_idx, c]
                if use_prior and enc.visible is not None:  # a visible gene's prior holds its own change
                    t = t * (~enc.visible[pert_rows[b_idx, k_idx]]).to(t.dtype)
                y = y.index_put((b_idx, c), t.to(y.dtype), accumulate=True)
        if self.neighbour_term:
            gate = None
            if use_prior and enc.visible is not None:  # a visible gene's prior holds its partners' changes too
                gate = (~enc.visible).to(Z.dtype)
            y = y + self._neighbour_shift(pert_rows, mask, Z, gate, y.shape[1]).to(y.dtype)
        return y

    def _neighbour_shift(self, pert_rows: Tensor, mask: Tensor, Z: Tensor, gate: Tensor | None, n_genes: int
                         ) -> Tensor:
        """(B, G): the neighbour-response term of every cell (module docstring), over the batch's distinct
        perturbed rows U: ``T[u, c_j] = Σ_{edges j->u} (a_ℓ + v_ℓ·z_u) w_{ju}`` (|U|, G), summed over each cell's
        slots."""
        uniq, inverse = torch.unique(pert_rows.clamp(min=0), return_inverse=True)
        start, end = self.nbr_rowptr[uniq], self.nbr_rowptr[uniq + 1]
        counts = end - start
        u_of_edge = torch.repeat_interleave(torch.arange(len(uniq), device=uniq.device), counts)
        offsets = torch.arange(int(counts.sum()), device=uniq.device) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts)
        edges = torch.repeat_interleave(start, counts) + offsets
        layer = self.nbr_layers[edges]
        scale = self.nbr_gain[layer] + self.nbr_head(Z[uniq])[u_of_edge, layer]
        if gate is not None:
            scale = scale * gate[uniq][u_of_edge]
        table = torch.zeros(len(uniq), n_genes, dtype=Z.dtype, device=Z.device)
        table = table.index_put((u_of_edge, self.nbr_cols[edges]), scale * self.nbr_weights[edges], accumulate=True)
        per_slot = table[inverse] * mask.unsqueeze(-1).to(table.dtype)  # (B, K, G)
        return per_slot.sum(1)


def neighbour_edges(graph, vocab_size: int, col_of_node: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """The edges ``j -> p`` of ``graph`` (a :class:`kgbuild.graph.MultiGraph` whose node i is encoder row i)
    whose source j is a measured gene: ``(target_rows, source_cols, weights, layers, n_layers)`` for
    :class:`TxPert`'s neighbour-response term. ``col_of_node`` (N,) long: the measured column of each graph
    node, -1 if not measured. Negative weights are clipped to 0 (as the effect inputs do)."""
    src = torch.from_numpy(np.array(graph.edge_index[0], dtype=np.int64))
    dst = torch.from_numpy(np.array(graph.edge_index[1], dtype=np.int64))
    cols = col_of_node[src]
    keep = (cols >= 0) & (src != dst)
    weights = torch.from_numpy(np.array(graph.edge_weight, dtype=np.float32)).clamp(min=0)
    layers = torch.from_numpy(np.array(graph.edge_layer, dtype=np.int64))
    if len(dst) and int(dst.max()) >= vocab_size:
        raise ValueError(f"graph node {int(dst.max())} lies beyond the encoder vocabulary ({vocab_size} rows)")
    return dst[keep], cols[keep], weights[keep], layers[keep], max(1, len(graph.layers))
