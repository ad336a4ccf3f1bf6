"""Prediction with a trained TxPert: the model factory and the prediction loop shared by training (validation
and test scores, :class:`txpert_head.training.trainer.Trainer`) and a loaded run folder
(:class:`txpert_head.runs.predictor.Predictor`), so both predict with literally the same code.

:class:`ModelPredictions` is a mixin. Its host provides ``model`` (:class:`TxPert`), ``cfg`` (the run's
:class:`txpert_head.training.config.TrainConfig`), ``device``, ``controls`` (:class:`txpert_head.data.controls.ControlIndex`),
``data`` (``genes``, ``n_genes``), ``graph`` (the whole :class:`kgbuild.graph.MultiGraph`, read only by
:meth:`ModelPredictions.whole_graph_model`), ``graph_node_set`` (its node names, anything supporting ``in``),
``encoder_genes``, ``known_genes``, ``effects`` (:class:`txpert_head.model.effects.EffectCodes` or None),
``encoder_index`` (gene -> encoder row) and, for ``rows_for=None``, ``rows`` (condition -> data rows).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from txpert_head.data.perturb_data import constituents, dense_rows

#: input cells per forward pass when predicting: conditions are batched together up to this many
PREDICT_ROWS = 2048

if TYPE_CHECKING:  # torch and the model are imported on first use: a Predictor checks labels without them
    import torch

    from kgbuild.graph import MultiGraph
    from txpert_head.model.effects import EffectCodes
    from txpert_head.model.txpert import TxPert
    from txpert_head.data.splits import Condition
    from txpert_head.training.config import TrainConfig

log = logging.getLogger(__name__)

__all__ = ["ModelPredictions", "build_model"]


def build_model(graph: MultiGraph, genes: Sequence[str], encoder_genes: Sequence[str], cfg: TrainConfig,
                effects: EffectCodes | None = None) -> TxPert:
    """Encoder over ``graph`` (with rows for ``encoder_genes``) and the TxPert head for ``genes`` columns.

    ``effects``: the observed training effect codes (needed with ``node_inputs="effects"``); they are set in
    the encoder and the prior path of the model."""
    import torch

    from gnn import PerturbationEncoder
    from txpert_head.model.txpert import TxPert, neighbour_edges

    if cfg.node_inputs == "effects" and effects is None:
        raise ValueError("node_inputs='effects' needs the training effect codes")
    torch.manual_seed(cfg.seed)
    enc = PerturbationEncoder(graph, genes=list(encoder_genes), kind=cfg.encoder_kind, dim=cfg.encoder_dim,
                              layers=cfg.encoder_layers, heads=cfg.encoder_heads, dropout=cfg.encoder_dropout,
                              backend=cfg.encoder_backend, use_edge_weight=cfg.use_edge_weight,
                              unknown_token=cfg.unknown_token, node_inputs=cfg.node_inputs,
                              code_dim=effects.rank if cfg.node_inputs == "effects" else 16,
                              gene_dim=effects.rank if cfg.node_inputs == "effects" and cfg.expression_features else 0)
    col = {g: i for i, g in enumerate(genes)}
    row_to_col = torch.tensor([col.get(g, -1) for g in enc.vocab], dtype=torch.long)
    nbr = neighbour_edges(graph, len(enc.vocab), row_to_col[:graph.num_nodes]) if cfg.neighbour_term else None
    model = TxPert(enc, len(genes), row_to_col, basal=cfg.basal, hidden=cfg.hidden, dropout=cfg.dropout,
                   target_term=cfg.target_term, prior_rank=effects.rank if cfg.node_inputs == "effects" else None,
                   neighbour_edges=nbr)
    if cfg.node_inputs == "effects":
        enc.set_effects(effects.genes, torch.from_numpy(effects.codes), torch.from_numpy(effects.mean_code))
        model.set_prior_basis(torch.from_numpy(effects.basis))
        if cfg.expression_features:  # a measured gene's row of the effect basis (the linear baseline's G)
            enc.set_gene_features(list(genes), torch.from_numpy(effects.gene_embedding()))
    return model



class ModelPredictions:
    """Prediction methods of a host holding a trained model (see the module docstring for what it provides)."""

    def _input_passes(self, conditions: Sequence[Condition], rows_for: dict[Condition, np.ndarray] | None,
                      seed: int | None) -> Iterator[tuple[list[np.ndarray], np.ndarray, torch.Tensor, object]]:
        """The one input loop behind :meth:`predict_means` and :meth:`predict_cells`.

        Yields, per forward pass, ``(rows, sources, perts, enc)``: for each condition of the pass in order,
        ``rows`` holds the data rows whose matched control inputs are used (one predicted cell per input);
        ``sources`` (n,) what the inputs of all of them are, one after the other
        (:meth:`~txpert_head.data.controls.ControlIndex.input_sources`), ``perts`` (n, K) their perturbation
        rows (padded with -1, which adds nothing) and ``enc`` the encoder's output (one pass for all).
        Conditions are run through the model together, :data:`PREDICT_ROWS` input cells at a time (a
        condition has few cells; one product per condition ran the head at a fraction of its speed). For a
        condition with data rows, inputs are matched to those rows' cell line and batch (up to ``eval_cells``
        rows, deterministic given ``seed``); a condition without rows (``predict``) uses the control rows of
        its cell line (up to ``eval_cells``) as inputs.
        """
        import torch

        self.model.eval()
        with torch.no_grad():
            enc = self.model.encode()
        rng = np.random.default_rng([self.cfg.seed if seed is None else seed, 999_983])
        rows_for = self.rows if rows_for is None else rows_for
        pending: list[tuple[np.ndarray, np.ndarray, torch.Tensor]] = []   # (rows, input sources, perturbation rows)
        pending_rows = 0                                                     # their input cells

        def one_pass():
            width = max(p.shape[1] for _, _, p in pending)
            perts = torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1]), value=-1) for _, _, p in pending])
            out = ([idx for idx, _, _ in pending], np.concatenate([s for _, s, _ in pending]), perts.to(self.device),
                   enc)
            pending.clear()
            return out

        for line, pert in conditions:
            idx = rows_for.get((line, pert))
            if idx is None or not len(idx):
                idx = self.controls.by_line.get(line)
                if idx is None:
                    raise KeyError(f"no cell line {line!r} in the data; lines: {', '.join(self.controls.by_line)}")
            if len(idx) > self.cfg.eval_cells:
                idx = np.sort(rng.choice(idx, self.cfg.eval_cells, replace=False))
            sources = self.controls.input_sources(idx, self.cfg.control_mode, rng)
            pending.append((idx, sources, self.pert_rows_for(pert).unsqueeze(0).expand(len(idx), -1)))
            pending_rows += len(idx)
            if pending_rows >= PREDICT_ROWS:
                yield one_pass()
                pending_rows = 0
        if pending:
            yield one_pass()

    def iter_predicted_means(self, conditions: Sequence[Condition], rows_for: dict[Condition, np.ndarray] | None = None,
                             seed: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Per condition, in order, ``(rows, mean)``: the data rows whose matched controls were the inputs and
        the predicted mean expression (G,) float64, the mean of the condition's :meth:`iter_predicted_cells`
        (to float32 rounding), from :meth:`TxPert.forward_means`: the decoder's output layer runs once per
        condition, the basal encoder once per distinct control input (conditions draw from the same control
        cells; kept over the call, ``d`` floats each), and each condition's mean input comes from its sparse
        rows."""
        import torch

        import scipy.sparse as sp

        from txpert_head.data.controls import average_rows

        mode = self.cfg.control_mode
        known = np.zeros(0, dtype=np.int64)          # sources with a basal state, sorted
        states = None                                 # their states, in that order
        for rows, sources, perts, enc in self._input_passes(conditions, rows_for, seed):
            sizes = np.asarray([len(r) for r in rows])
            groups = np.repeat(np.arange(len(rows)), sizes)
            distinct, position = np.unique(sources, return_inverse=True)
            stored = self.controls.source_rows(distinct, mode)          # each input row read once
            x_mean = average_rows(stored, np.stack([groups, position], axis=1), len(rows))
            cell_states = None
            if self.model.basal is not None:
                fresh_rows = ~np.isin(distinct, known)
                if fresh_rows.any():
                    x = dense_rows(stored, np.flatnonzero(fresh_rows)) if sp.issparse(stored) else stored[fresh_rows]
                    with torch.no_grad():
                        fresh = self.model.basal_state(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
                    known = np.concatenate([known, distinct[fresh_rows]])
                    order = np.argsort(known, kind="stable")
                    known = known[order]
                    merged = fresh if states is None else torch.cat([states, fresh])
                    states = merged[torch.from_numpy(order).to(merged.device)]
                cell_states = states[torch.from_numpy(np.searchsorted(known, sources)).to(states.device)]
            means = self.model.forward_means(cell_states, perts, torch.from_numpy(groups).to(self.device), len(rows),
                                             torch.from_numpy(x_mean).to(self.device), enc=enc).cpu().numpy()
            for idx, mean in zip(rows, means):
                yield np.asarray(idx), mean

    def predict_means(self, conditions: Sequence[Condition], rows_for: dict[Condition, np.ndarray] | None = None,
                      seed: int | None = None) -> np.ndarray:
        """Predicted mean expression (P, G) of each condition (:meth:`iter_predicted_means`)."""
        out = np.zeros((len(conditions), self.data.n_genes), dtype=np.float64)
        for k, (_, mean) in enumerate(self.iter_predicted_means(conditions, rows_for, seed)):
            out[k] = mean
        return out

    def iter_predicted_cells(self, conditions: Sequence[Condition], rows_for: dict[Condition, np.ndarray] | None = None,
                             seed: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Per condition, in order, ``(rows, cells)``: the data rows whose matched controls were the inputs and
        the predicted cells, (n_k, G) float64, one row per input. Only the current condition's cells are held
        (with those of the other conditions in its forward pass, :data:`PREDICT_ROWS` cells: the VCC block
        streams a genome-wide screen through this). Inputs and draws are those of
        :meth:`predict_means`, so the mean of each ``cells`` is that method's row (to float32 rounding). With
        ``control_mode="mean"`` every input of a batch is the batch's control mean, so a condition's predicted
        cells are one point per batch (a point mass), not a cell distribution."""
        import torch

        for rows, sources, perts, enc in self._input_passes(conditions, rows_for, seed):
            x = torch.from_numpy(np.ascontiguousarray(self.controls.dense_inputs(sources, self.cfg.control_mode)))
            with torch.no_grad():
                y = self.model(x.to(self.device), perts, enc=enc)
            start = 0
            for idx in rows:
                yield np.asarray(idx), y[start:start + len(idx)].double().cpu().numpy()
                start += len(idx)

    def predict_cells(self, conditions: Sequence[Condition], rows_for: dict[Condition, np.ndarray] | None = None,
                      seed: int | None = None, return_rows: bool = False):
        """Predicted cells of each condition: the list of :meth:`iter_predicted_cells`' cells; with
        ``return_rows=True`` ``(rows, cells)``, also the data rows whose matched controls were the inputs (the
        true cells the predictions stand for)."""
        pairs = list(self.iter_predicted_cells(conditions, rows_for, seed))
        cells = [c for _, c in pairs]
        return ([r for r, _ in pairs], cells) if return_rows else cells

    def whole_graph_model(self) -> TxPert:
        """A copy of the model whose encoder covers all of :attr:`graph` (the model itself when it was built on
        the whole graph): trained weights copied, learned ID rows matched by gene, the effect codes set again.

        With ``graph_hops`` the encoder was built on the receptive field of the data's perturbed genes; the
        message-passing kinds give the same rows for those genes on the whole graph (the Exphormer kinds redraw
        their expander edges, so their rows differ), and every other graph gene gets a row too."""
        import torch

        if self.cfg.hops is None:
            return self.model
        src = self.model
        dst = build_model(self.graph, self.data.genes, self.encoder_genes, self.cfg, self.effects).to(self.device)
        if self.cfg.unknown_token:
            dst.encoder.set_known(self.known_genes)
        if self.cfg.encoder_kind.startswith("exphormer"):
            log.warning("encoder %s: expander edges are redrawn over the whole graph, so embeddings differ from the "
                        "trained receptive-field encoder", self.cfg.encoder_kind)
        src_params = dict(src.named_parameters())
        with torch.no_grad():
            for name, p in dst.named_parameters():
                if name == "encoder.embedding.weight":
                    old = {g: i for i, g in enumerate(src.encoder.vocab)}
                    pairs = [(j, old[g]) for j, g in enumerate(dst.encoder.vocab) if g in old]
                    new_idx = torch.tensor([a for a, _ in pairs], dtype=torch.long, device=p.device)
                    old_idx = torch.tensor([b for _, b in pairs], dtype=torch.long, device=p.device)
                    p[new_idx] = src_params[name].detach()[old_idx]
                else:
                    if src_params[name].shape != p.shape:
                        raise RuntimeError(f"parameter {name} has shape {tuple(src_params[name].shape)} in the trained "
                                           f"model and {tuple(p.shape)} on the whole graph")
                    p.copy_(src_params[name].detach())
        dst.eval()
        return dst

    def cover_genes(self, genes: Sequence[str]) -> None:
        """Make sure every graph gene of ``genes`` has an exact encoder row: on a model built on the part of the
        graph the data's perturbed genes need (``graph_hops``), only their rows are exact; for any other graph
        gene switch to :meth:`whole_graph_model` (prediction only)."""
        nodes = self.graph_node_set
        if self.model.encoder.num_graph_nodes >= len(nodes):  # built on the whole graph
            return
        exact = set(self.encoder_genes)
        if any(g in nodes and g not in exact for g in genes):
            self.model = self.whole_graph_model()
            self.encoder_index = {g: i for i, g in enumerate(self.model.encoder.vocab)}

    def pert_rows_for(self, pert: str) -> torch.Tensor:
        """Encoder rows of a perturbation's genes; genes unknown to the encoder contribute nothing (-1)."""
        import torch

        genes = constituents(pert)
        unknown = [g for g in genes if g not in self.encoder_index]
        if unknown:
            log.warning("gene(s) %s are neither graph nodes nor trained perturbations: they add no shift",
                        ", ".join(unknown))
        return torch.tensor([self.encoder_index.get(g, -1) for g in genes] or [-1], dtype=torch.long)
