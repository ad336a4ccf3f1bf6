r"""Node inputs built from observed perturbation effects: what a gene's own training effect and its graph
neighbours' training effects say about it.

Every gene ``i`` of the encoder vocabulary may carry an *effect code* ``c_i \in R^r`` (the low-rank code of
its observed training change, see :func:`txpert_head.model.effects.effect_codes`) and a visibility flag
``m_i \in \{0, 1\}`` (1: the code may be used in this pass). Genes never trained as a perturbation have
``m_i = 0``; during training a random part of the trained genes is hidden as well (``hide``), so the model
learns to embed a gene from its neighbourhood alone -- the situation of an unseen perturbation.

With ``w_{ji} \ge 0`` the weight of edge ``j \to i`` (negative weights clipped at 0, self loops dropped),
summed over the graph's layers for the union, or within one layer ``\ell``:

.. math::

    s_i = \sum_j w_{ji} m_j, \qquad
    n_i = \frac{\sum_j w_{ji} m_j c_j}{s_i} \;(0 \text{ if } s_i = 0)

optionally a fixed table of per-gene features ``f_i \in R^K`` (zeros for genes without a row, with a flag
``u_i``; e.g. a measured gene's row of the training-effect basis, or a user's gene embeddings), and the
*prior code*, a learned version of the training-free ``graph_neighbours`` baseline in code space:

.. math::

    \pi_i = m_i c_i + (1 - m_i)\,
        \frac{\sum_\ell \beta_\ell \sum_j w^\ell_{ji} m_j c_j + \kappa \bar c}{\sum_\ell \beta_\ell s^\ell_i + \kappa}

with ``\bar c`` the mean code of the trained genes (the ``general`` baseline's mean change), ``\beta_\ell > 0``
a learned trust per edge layer (initially 1) and ``\kappa > 0`` a learned shrinkage towards the mean
(initially ``kappa_init``, small; :meth:`EffectInputs.fit_prior` fits both to the trained genes, leave-one-out,
before training). Untrained, ``\pi_i`` is close to the ``graph_neighbours`` estimate of gene
``i`` (exactly ``\bar c`` for a gene without trained neighbours); training moves it between the layers and
towards the ``general`` baseline as far as the data support. The node
features are ``[m_i c_i, m_i, \pi_i, n_i, \log(1 + s_i)]`` for the union, then ``[n^\ell_i, \log(1 + s^\ell_i)]``
for each layer when the graph has more than one, then ``[f_i, u_i]`` when ``K > 0``: ``(V, F)`` with
``F = 2r + 1 + L'(r + 1) + (K + 1 if K else 0)``, ``L' = L + 1`` for ``L > 1`` layers and 1 otherwise.

The weighted sums run on the backend's ``u_mul_e_sum`` primitive, so DGL and PyG give the same numbers.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from gnn.backends.base import Backend
from gnn.edges import EdgeSet
from kgbuild.graph import MultiGraph


class EffectFeatures(NamedTuple):
    """``features`` (V, F), ``prior`` (V, r) prior codes, ``visible`` (V,) bool: own code used."""

    features: Tensor
    prior: Tensor
    visible: Tensor


def feature_dim(code_dim: int, num_layers: int, gene_dim: int = 0) -> int:
    """``F`` for codes of width ``r = code_dim`` over a graph of ``num_layers`` layers, with ``K = gene_dim``
    per-gene features."""
    per = num_layers + 1 if num_layers > 1 else 1
    return 2 * code_dim + 1 + per * (code_dim + 1) + (gene_dim + 1 if gene_dim else 0)


class EffectInputs(nn.Module):
    """Effect-derived node features over the graph's in-edges (module docstring).

    Args:
        graph: the multigraph; its nodes are rows ``0..N-1`` of the vocabulary.
        num_nodes: ``V``, the vocabulary size (rows ``N..V-1`` are genes absent from the graph: no neighbours).
        code_dim: ``r``.
        gene_dim: ``K``, the width of the per-gene feature table (0: none).
        kappa_init: initial shrinkage ``kappa`` of the prior towards the mean code.

    The codes and gene features are data, not parameters: :meth:`set_codes` and :meth:`set_gene_features`
    fill them (buffers, saved with the model).
    """

    def __init__(self, graph: MultiGraph, num_nodes: int, code_dim: int, gene_dim: int = 0, kappa_init: float = 0.1):
        super().__init__()
        if code_dim < 1:
            raise ValueError(f"code_dim must be >= 1, got {code_dim}")
        src, dst = graph.edge_index[0].astype(np.int64), graph.edge_index[1].astype(np.int64)
        weight = np.clip(np.asarray(graph.edge_weight, dtype=np.float32), 0.0, None)
        layer = np.asarray(graph.edge_layer, dtype=np.int64)
        keep = (src != dst) & (weight > 0)
        src, dst, weight, layer = src[keep], dst[keep], weight[keep], layer[keep]
        self.num_nodes = int(num_nodes)
        self.code_dim = int(code_dim)
        n_layers = len(graph.layers)
        sets = [EdgeSet(src, dst, weight, np.zeros_like(layer), num_nodes)]
        if n_layers > 1:
            sets += [EdgeSet(src[layer == l], dst[layer == l], weight[layer == l], np.zeros(int((layer == l).sum()), np.int64),
                             num_nodes) for l in range(n_layers)]
        self.edge_sets = nn.ModuleList(sets)
        # the forward pass runs all sets at once on `stacked`, set k's targets shifted to rows k*V .. (k+1)*V - 1
        # (derived, so not saved); `edge_sets` stay the saved form, so run folders of earlier versions load
        self.stacked = EdgeSet(np.concatenate([es.src.numpy() for es in sets]),
                               np.concatenate([es.dst.numpy() + k * num_nodes for k, es in enumerate(sets)]),
                               np.concatenate([es.weight.numpy() for es in sets]),
                               np.zeros(sum(es.num_edges for es in sets), np.int64), len(sets) * num_nodes,
                               persistent=False)
        self.n_layers = n_layers
        self.layer_names = [str(name) for name in graph.layers]
        # softplus^-1 of the initial values: beta_l = 1, kappa = kappa_init
        self.layer_trust = nn.Parameter(torch.full((n_layers,), float(np.log(np.expm1(1.0)))))
        self.shrink = nn.Parameter(torch.tensor(float(np.log(np.expm1(kappa_init)))))
        self.dim = feature_dim(code_dim, n_layers, gene_dim)
        self.gene_dim = int(gene_dim)
        self.register_buffer("gene_features", torch.zeros(num_nodes, gene_dim + 1) if gene_dim else None)
        self.register_buffer("codes", torch.zeros(num_nodes, code_dim))
        self.register_buffer("has_code", torch.zeros(num_nodes, dtype=torch.bool))
        self.register_buffer("mean_code", torch.zeros(code_dim))

    @torch.no_grad()
    def set_codes(self, codes: Tensor, has_code: Tensor, mean_code: Tensor) -> None:
        """``codes`` (V, r), ``has_code`` (V,) bool, ``mean_code`` (r,): the observed effects (rows without a
        code are ignored)."""
        if tuple(codes.shape) != (self.num_nodes, self.code_dim) or tuple(has_code.shape) != (self.num_nodes,):
            raise ValueError(f"codes must be ({self.num_nodes}, {self.code_dim}) and has_code ({self.num_nodes},); got "
                             f"{tuple(codes.shape)} and {tuple(has_code.shape)}")
        self.codes.copy_(codes.to(self.codes) * has_code.to(self.codes).unsqueeze(1))
        self.has_code.copy_(has_code.bool())
        self.mean_code.copy_(mean_code.to(self.mean_code))

    @torch.no_grad()
    def set_gene_features(self, features: Tensor, present: Tensor) -> None:
        """``features`` (V, K) and ``present`` (V,) bool: the per-gene feature table (absent rows are zeroed)."""
        if self.gene_features is None or tuple(features.shape) != (self.num_nodes, self.gene_dim):
            raise ValueError(f"gene features must be ({self.num_nodes}, {self.gene_dim}); got {tuple(features.shape)}")
        flag = present.to(self.gene_features).unsqueeze(1)
        self.gene_features.copy_(torch.cat([features.to(self.gene_features) * flag, flag], dim=1))

    def forward(self, backend: Backend, hide: Tensor | None = None) -> EffectFeatures:
        """Features, prior codes and visibility for this pass; ``hide`` (V,) bool hides own codes."""
        visible = self.has_code if hide is None else self.has_code & ~hide.to(self.has_code.device)
        m = visible.to(self.codes.dtype)
        c = self.codes * m.unsqueeze(1)
        feats = [c, m.unsqueeze(1)]
        V = self.num_nodes
        total, summed = self._edge_sums(backend, m, c)
        mean = torch.where((total > 0).unsqueeze(-1), summed / total.clamp(min=1e-12).unsqueeze(-1),
                           torch.zeros_like(summed))
        prior = torch.where(visible.unsqueeze(1), c, self._neighbour_prior(summed, total))
        feats.append(prior.detach())
        # [n_i, log(1 + s_i)] per edge set, sets side by side: (V, K (r + 1))
        feats.append(torch.cat([mean, torch.log1p(total).unsqueeze(-1)], dim=-1).transpose(0, 1).reshape(V, -1))
        if self.gene_features is not None:
            feats.append(self.gene_features.to(c.dtype))
        return EffectFeatures(torch.cat(feats, dim=1), prior, visible)

    def _edge_sums(self, backend: Backend, m: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """``s_i`` ``(K, V)`` and ``Σ_j w_ji m_j c_j`` ``(K, V, r)`` for every edge set (the union, then each
        layer), from the visibility ``m`` (V,) and the visible codes ``c`` (V, r), in one pass."""
        V, K = self.num_nodes, len(self.edge_sets)
        mc = torch.cat([m.unsqueeze(1), c], dim=1)  # (V, 1 + r)
        x = torch.cat([mc, mc.new_zeros((K - 1) * V, mc.shape[1])]).unsqueeze(1)  # sources live in rows 0..V-1
        w = self.stacked.weight.to(c.dtype).unsqueeze(1)  # (E_all, 1)
        both = self.stacked.ops(backend).u_mul_e_sum(x, w).view(K, V, -1)  # (K, V, 1 + r)
        return both[..., 0], both[..., 1:]

    def _neighbour_prior(self, summed: Tensor, total: Tensor) -> Tensor:
        """``(Σ_ℓ β_ℓ Σ_j w^ℓ_ji m_j c_j + κ c̄) / (Σ_ℓ β_ℓ s^ℓ_i + κ)`` from the per-edge-set sums ``summed``
        ``(K, V', r)`` and weights ``total`` ``(K, V')`` (edge set 0 is the union when there are several layers)."""
        layers = slice(1, None) if self.n_layers > 1 else slice(0, 1)
        beta = nn.functional.softplus(self.layer_trust).to(summed.dtype)
        kappa = nn.functional.softplus(self.shrink).to(summed.dtype)
        num = (beta.view(-1, 1, 1) * summed[layers]).sum(0) + kappa * self.mean_code.to(summed.dtype)
        den = (beta.view(-1, 1) * total[layers]).sum(0) + kappa
        return num / den.unsqueeze(1)

    def fit_prior(self, backend: Backend, steps: int = 100) -> dict[str, float]:
        r"""Fit the layer trusts ``β`` and the shrinkage ``κ`` of the prior to the trained genes' own codes,
        leave-one-out: a gene's neighbour prior never reads its own code (self loops are dropped), so with every
        trained gene visible the neighbour prior of gene ``i`` is the prediction of ``c_i`` from the others, and

        .. math::  \min_{β, κ} \frac{1}{n} \sum_{i \text{ trained}} \lVert π^{nbr}_i(β, κ) - c_i \rVert^2

        (L-BFGS on ``L + 1`` scalars; the edge sums do not depend on them and are computed once). This is the
        empirical-Bayes step of the prior: how far to trust each layer and how much to shrink towards the mean
        are read off the training perturbations before the network trains (``fit_prior``, on by default).
        Returns the loss before and after (mean squared code error) and the fitted ``kappa`` and
        ``beta_<layer>``; a search that ends worse than it started is undone. With fewer than two trained genes
        nothing changes (and an empty dict is returned)."""
        idx = torch.nonzero(self.has_code).squeeze(1)
        if idx.numel() < 2:
            return {}
        with torch.no_grad():
            m = self.has_code.to(self.codes.dtype)
            total, summed = self._edge_sums(backend, m, self.codes)  # rows without a code are zero (set_codes)
            total, summed = total.index_select(1, idx), summed.index_select(1, idx)
            target = self.codes.index_select(0, idx)

        def loss() -> Tensor:
            return ((self._neighbour_prior(summed, total) - target) ** 2).sum(1).mean()

        params = [self.layer_trust, self.shrink]
        start = [p.detach().clone() for p in params]
        with torch.no_grad():
            before = float(loss())
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            opt.zero_grad()
            value = loss()
            value.backward()
            return value

        opt.step(closure)
        for p in params:
            p.grad = None
        with torch.no_grad():
            after = float(loss())
            if not math.isfinite(after) or after > before:  # a failed search (e.g. kappa underflowing to 0): undo
                for p, p0 in zip(params, start):
                    p.copy_(p0)
                after = before
            beta = nn.functional.softplus(self.layer_trust).tolist()
            kappa = float(nn.functional.softplus(self.shrink))
        return {"loss_before": before, "loss_after": after, "kappa": kappa,
                **{f"beta_{name}": b for name, b in zip(self.layer_names, beta)}}

    def extra_repr(self) -> str:
        return f"num_nodes={self.num_nodes}, code_dim={self.code_dim}, features={self.dim}"


def layer_trust_text(fitted: dict[str, float]) -> str:
    """The layer trusts of a :meth:`EffectInputs.fit_prior` result as text: ``"string 1, go 0.47"``."""
    return ", ".join(f"{key.removeprefix('beta_')} {value:.2g}" for key, value in fitted.items()
                     if key.startswith("beta_"))
