"""Training loop: AdamW, model selection on validation Pearson Δ, early stopping, resumable checkpoints.

Determinism: the epoch order comes from ``numpy.random.default_rng([seed, epoch])``, the control inputs of
step s from ``default_rng([seed, epoch, s])`` and the torch RNG (dropout) state is saved in every
checkpoint, so a run interrupted mid-epoch and resumed from its last checkpoint ends with the same weights
and metrics as an uninterrupted one (same machine, same thread count).

Losses (``TrainConfig.loss``, parsed by :func:`txpert_head.training.losses.build_loss`): ``mse`` (the TxPert loss,
the default) trains on batches of rows (cells, or (perturbation x batch) means in aggregated mode). A spec
with a distributional term (``mmd``, ``sw1``, e.g. ``mse+0.5*mmd``) compares the predicted cells of a
perturbation with its true cells, so batches are built *by perturbation*: each step takes
``k = max(1, batch_size // m)`` distinct training perturbations (each pass over them is a seeded
permutation, ``default_rng([seed, epoch])``, cut into ``ceil(n/k)`` steps) and up to ``m = cells_per_group``
of each one's cells (without replacement; all of them when it has fewer), drawn from
``default_rng([seed, epoch, s])``; the loss is the mean over the step's perturbations of ``loss(predicted cells, true cells)`` (:func:`txpert_head.training.losses.per_group_loss`, the
cells paired row by row, so ``mse`` terms stay paired). An epoch has as many steps as in row mode. Setting
``cells_per_group`` with ``mse`` builds the same perturbation batches for MSE (for like-for-like
comparisons). Distributional terms need cell-level inputs: ``control_mode="mean"`` (every cell of a
perturbation and batch gets the same input, so the predicted set is a point mass) is rejected with an error.

Data parallel (``torchrun``, see :mod:`txpert_head.training.distributed`): every rank builds the same batch and the
same random draws, keeps its block of rows (whole perturbations in perturbation batches) and scales its
loss so that DDP's averaged gradient equals the single-process one. Only rank 0 writes checkpoints and
evaluates; its early-stopping decision is broadcast. Dropout masks are drawn per rank, so with dropout > 0 a
distributed run matches a single-process run in distribution, not bit for bit.

Checkpoints (``<run>/checkpoints/last.pt``, ``best.pt``) hold only tensors and plain Python values, are
written atomically, and are read with ``torch.load(..., weights_only=True)``.

The per-step work (:meth:`Trainer.train_step`) takes the whole batch's items on every rank and keeps this
rank's shard (see "Data parallel" below).
"""

from __future__ import annotations

import functools
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from gnn.effects import layer_trust_text
from kgbuild.graph import MultiGraph
from txpert_head.data.backed import budget_bytes, group_sums, row_blocks
from txpert_head.data.controls import ControlIndex
from txpert_head.data.perturb_data import PerturbData, constituents, dense_rows
from txpert_head.data.profiles import (ConditionMeans, condition_name, retrieval_candidates, rows_by_condition,
                                      true_profiles)
from txpert_head.data.splits import Condition, Split
from txpert_head.metrics import expression as metrics
from txpert_head.model.effects import effect_codes
from txpert_head.model.receptive import encoder_field, receptive_field
from txpert_head.model.txpert import TxPert
from txpert_head.training.checkpoints import atomic_torch_save, load_checkpoint, load_weights
from txpert_head.training.config import TrainConfig
from txpert_head.training.distributed import DistContext, setup as setup_distributed
from txpert_head.training.losses import build_loss, per_group_loss
from txpert_head.training.prediction import ModelPredictions, build_model

log = logging.getLogger(__name__)


class Interrupted(RuntimeError):
    """Raised by callbacks (tests, signal handlers) to stop training mid-epoch."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: CUDA is not available here; use device = 'cpu' (--set device=cpu) or "
                         "'auto'")
    return device


#: learning-rate factor of the prior's few scalars (layer trust, shrinkage): they move in tens of steps
PRIOR_LR_FACTOR = 30.0


def make_optimizer(model: TxPert, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the model; the scalars of the effect prior (:mod:`gnn.effects`) get ``PRIOR_LR_FACTOR``
    times the learning rate and no weight decay."""
    prior = [p for n, p in model.named_parameters() if n.endswith(("effects.layer_trust", "effects.shrink"))]
    ids = {id(p) for p in prior}
    groups = [{"params": [p for p in model.parameters() if id(p) not in ids]}]
    if prior:
        groups.append({"params": prior, "lr": cfg.lr * PRIOR_LR_FACTOR, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


@dataclass
class FitResult:
    history: list[dict[str, float]]
    best_epoch: int
    best_val: float
    test_table: Any = None
    test_summary: dict[str, float] = field(default_factory=dict)
    subgroup_summary: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    untrained_val: dict[str, float] = field(default_factory=dict)  # validation metrics of the untrained prior
    prior_fit: dict[str, float] = field(default_factory=dict)  # the prior's fitted trust and shrinkage (fit_prior)

    @property
    def best_record(self) -> dict[str, float]:
        """The validation record of the selected epoch (epoch 0: the untrained prior; empty without one)."""
        if self.best_epoch == 0:
            return dict(self.untrained_val)
        return next((dict(r) for r in self.history if r.get("epoch") == self.best_epoch), {})


class Trainer(ModelPredictions):
    """Trains a :class:`TxPert` on ``data`` with ``split``; checkpoints go to ``run_dir/checkpoints``.

    ``dist``: the data-parallel context; by default :func:`txpert_head.training.distributed.setup` (a single process
    unless started by torchrun).
    """

    def __init__(self, data: PerturbData, graph: MultiGraph, split: Split, cfg: TrainConfig,
                 run_dir: str | Path | None = None, controls: ControlIndex | None = None,
                 dist: DistContext | None = None):
        self.data, self.split, self.cfg = data, split, cfg
        self.graph = graph  # the whole graph (the encoder may see only a receptive field of it, graph_hops)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.dist = dist if dist is not None else setup_distributed(cfg.device)
        self.device = self.dist.device(resolve_device(cfg.device))
        self.controls = controls or ControlIndex(data)
        self.rows = rows_by_condition(data)
        # every condition's mean in one pass: the training changes, the validation and test truths and the
        # retrieval candidates all take theirs from it
        self.condition_means = ConditionMeans(data, self.rows)
        self.encoder_genes = data.perturbed_genes()
        train = [c for c in split.train if c in self.rows]
        train_mean, train_ref = true_profiles(data, self.controls, train, self.rows, self.condition_means)
        self.train_deltas = {c: train_mean[k] - train_ref[k] for k, c in enumerate(train)}
        self.effects = effect_codes(self.train_deltas, data.n_genes, cfg.effect_rank) if cfg.node_inputs == "effects" else None
        self.encoder_graph = self._encoder_graph()
        self.model = build_model(self.encoder_graph, data.genes, self.encoder_genes, cfg, self.effects).to(self.device)
        # genes with training signal as perturbations; with unknown_token every other gene enters the GNN
        # through the shared unknown input row (as an unseen perturbation will at test time)
        self.known_genes = sorted({g for _, p in split.train for g in constituents(p)})
        if cfg.unknown_token:
            self.model.encoder.set_known(self.known_genes)
        self.encoder_index = {g: i for i, g in enumerate(self.model.encoder.vocab)}
        self.known_rows = np.array([self.encoder_index[g] for g in self.known_genes], dtype=np.int64)
        # condition id -> encoder rows (padded with -1)
        conds = data.conditions.tolist()
        K = max([len(constituents(c)) for c in conds] + [1])
        table = np.full((len(conds), K), -1, dtype=np.int64)
        for i, c in enumerate(conds):
            for k, g in enumerate(constituents(c)):
                table[i, k] = self.encoder_index[g]
        self.cond_rows = torch.from_numpy(table)
        train_set = set(split.train)
        keep = [self.rows[c] for c in split.train if c in self.rows]
        self.train_rows = np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
        if not len(self.train_rows) or not train_set:
            raise ValueError("no training rows")
        self.grouped = cfg.group_batches
        self.aggregated = cfg.aggregate and cfg.control_mode == "mean" and not self.grouped
        if self.aggregated:
            self._aggregate()
        self.loss_fn = build_loss(cfg.loss, seed=cfg.seed) if self.grouped else None
        if self.grouped:
            self.group_rows = keep  # rows of each training condition (split order)
            self.groups = np.arange(len(keep))
            self.groups_per_step = max(1, cfg.batch_size // cfg.group_cells)
        self._init_at_mean_change(train_mean, train_ref)
        # DistributedDataParallel under torchrun; the target-gene head can miss a rank's shard
        self.net = self.dist.wrap(self.model, self.device, find_unused=cfg.target_term)
        self.optimizer = make_optimizer(self.model, cfg)
        self.state: dict[str, Any] = {"epoch": 0, "step": 0, "best_val": -math.inf, "best_epoch": -1,
                                      "bad_epochs": 0, "history": [], "loss_sum": 0.0, "loss_n": 0}
        self._val_cache: dict[str, Any] = {}
        self._pinned: torch.Tensor | None = None  # CUDA: reused pinned staging buffer of training batches

    def _encoder_graph(self) -> MultiGraph:
        """The graph the encoder is built on (``graph_hops``): the edges it reads for the data's perturbed genes
        (``"auto"``, :func:`encoder_field`), the ``k``-hop receptive field (an integer) or the whole graph (null)."""
        cfg = self.cfg
        if cfg.graph_hops == "auto":
            coded = self.effects.genes if self.effects is not None else ()
            return encoder_field(self.graph, self.encoder_genes, cfg.encoder_layers, coded)
        if cfg.hops is not None:
            return receptive_field(self.graph, self.encoder_genes, cfg.hops)
        return self.graph

    @torch.no_grad()
    def _init_at_mean_change(self, mean: np.ndarray, ref: np.ndarray) -> None:
        """Start from a baseline: the decoder's output bias is the mean training change ``mean_q Δ_q`` (delta
        variant) or mean expression (MLP basal) -- the general baseline; with the prior path (effect inputs),
        which already adds the (neighbours' or mean) change, 0 or the mean control expression. The target-gene
        term's bias is the mean change of measured perturbed genes in their own perturbation. ``mean`` and
        ``ref`` (P, G): the training conditions' true means and references, in :attr:`train_deltas` order."""
        train = list(self.train_deltas)
        delta = mean - ref
        prior = self.model.prior_basis is not None
        last = self.model.decoder[-1]
        if self.model.basal is None:
            init = np.zeros(delta.shape[1]) if prior else delta.mean(0)
        else:
            init = ref.mean(0) if prior else mean.mean(0)
        last.bias.copy_(torch.as_tensor(init, dtype=last.bias.dtype))
        if self.model.target_term:
            col = self.data.gene_index
            own = [delta[k, col[g]] for k, (_, p) in enumerate(train) for g in constituents(p) if g in col]
            if own:
                cols = [col[g] for _, p in train for g in constituents(p) if g in col]
                self.model.target_head.bias.fill_(float(np.mean(own)) - float(delta.mean(0)[cols].mean()))

    # ------------------------------------------------------------------ batches
    def _aggregate(self) -> None:
        """With batch-averaged control input every cell of (condition, batch) has the same input, so the
        cell-level MSE equals, up to a constant, the count-weighted MSE of the (condition, batch) means:
        train on those means (one example per condition x batch, weight = cells)."""
        rows = self.train_rows
        groups = self.controls.group_of_row[rows]
        key = self.data.cond_id[rows] * len(self.controls.groups) + groups
        uniq, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
        # sums of each example's rows in one pass over the (sorted) training rows in row blocks sized by the
        # memory budget, in memory or on disk: bit-identical to M @ X[rows] (M the 0/1 membership matrix)
        sums = group_sums(self.data.X, rows, inv, len(uniq), budget=self.data.memory_budget)
        # the means in place, a block of examples at a time: each block's float64 quotient rounded to float32, the
        # numbers of (sums / counts).astype(float32) without its full-size float64 temporary and float32 copy
        # (on a 2M-cell screen those were 3.5 + 1.7 GB, the run's peak); a block's quotient is at most 256 MB
        block = max(1, min(1 << 25, budget_bytes(self.data.memory_budget) // 8) // max(1, sums.shape[1]))
        for part in row_blocks(len(sums), block):
            sums[part] = sums[part] / counts[part, None]
        self.ex_y = sums
        self.ex_cond = (uniq // len(self.controls.groups)).astype(np.int64)
        self.ex_group = (uniq % len(self.controls.groups)).astype(np.int64)
        self.ex_weight = counts.astype(np.float32)
        self.examples = np.arange(len(uniq))

    @property
    def n_examples(self) -> int:
        return len(self.examples) if self.aggregated else len(self.train_rows)

    @property
    def steps_per_epoch(self) -> int:
        n = max(int(math.ceil(self.n_examples / self.cfg.batch_size)), self.cfg.min_steps_per_epoch)
        return min(n, self.cfg.max_steps_per_epoch) if self.cfg.max_steps_per_epoch else n

    @property
    def items_per_step(self) -> int:
        """Items a step takes from the epoch order: rows/examples, or perturbations in perturbation batches."""
        return self.groups_per_step if self.grouped else self.cfg.batch_size

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Item order of an epoch: as many seeded permutations as the epoch's steps need.

        Rows or aggregated examples: a flat array, step s takes ``[s·B, (s+1)·B)``. Perturbation batches: an
        array (steps, k) padded with -1, one row per step; each pass over the n training perturbations is a
        permutation split into ``ceil(n / k)`` nearly equal steps (``np.array_split``), so a step holds
        distinct perturbations (k or a few fewer) and every perturbation comes once per pass.
        """
        rng = np.random.default_rng([self.cfg.seed, epoch])
        if self.grouped:
            n, k, need = len(self.groups), self.groups_per_step, self.steps_per_epoch
            steps: list[np.ndarray] = []
            while len(steps) < need:
                steps.extend(np.array_split(self.groups[rng.permutation(n)], int(math.ceil(n / k))))
            table = np.full((len(steps), k), -1, dtype=np.int64)
            for i, chunk in enumerate(steps):
                table[i, :len(chunk)] = chunk
            return table
        items = self.examples if self.aggregated else self.train_rows
        passes = int(math.ceil(self.steps_per_epoch * self.items_per_step / len(items)))
        return np.concatenate([items[rng.permutation(len(items))] for _ in range(max(passes, 1))])

    def step_items(self, order: np.ndarray, step: int) -> np.ndarray:
        """The items of step ``step`` of an epoch order (see :meth:`epoch_order`)."""
        if self.grouped:
            return order[step][order[step] >= 0]
        n = self.items_per_step
        return order[step * n:(step + 1) * n]

    def batch(self, rows: np.ndarray, rng: np.random.Generator, part: slice | None = None):
        """``(x_ctrl, pert_rows, y, weight)`` tensors on the device for ``rows[part]`` (all rows by default);
        sparse rows are densified per batch. Random control inputs are drawn for the whole of ``rows`` and
        then sliced, so a rank's shard gets the draws a single process would give those rows.

        Cell level: the matched control rows and the batch's rows are cut from the CSR matrix by index arrays
        and densified together, once, into one (2n, G) float32 block (:func:`txpert_head.data.perturb_data.dense_rows`);
        on CUDA that block is a reused pinned buffer copied with ``non_blocking=True``."""
        part = slice(None) if part is None else part
        if self.aggregated:
            rows = rows[part]
            x = self.controls.means[self.ex_group[rows]]
            y = self.ex_y[rows]
            p = self.cond_rows[torch.from_numpy(self.ex_cond[rows])]
            w = torch.from_numpy(self.ex_weight[rows])
            x, y = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
        else:
            if self.cfg.control_mode == "mean":
                picked = None
                x_mean = self.controls.inputs(rows[part], "mean", rng)
            else:
                picked = self.controls.sample(rows, self.cfg.control_mode, rng)[part]
            rows = rows[part]
            n = len(rows)
            if picked is None:
                block = self._host_block(n)
                dense_rows(self.data.X, rows, out=block)
                y = torch.from_numpy(block)
                x = torch.from_numpy(np.ascontiguousarray(x_mean))
            else:
                block = self._host_block(2 * n)
                if self.controls.X is self.data.X:  # one gather for inputs and targets
                    dense_rows(self.data.X, np.concatenate([picked, rows]), out=block)
                else:  # a control index over other data (passed to the constructor)
                    dense_rows(self.controls.X, picked, out=block[:n])
                    dense_rows(self.data.X, rows, out=block[n:])
                x, y = torch.from_numpy(block[:n]), torch.from_numpy(block[n:])
            p = self.cond_rows[torch.from_numpy(self.data.cond_id[rows])]
            w = torch.ones(len(rows))
        nb = self.device.type == "cuda"
        return (x.to(self.device, non_blocking=nb), p.to(self.device, non_blocking=nb),
                y.to(self.device, non_blocking=nb), w.to(self.device, non_blocking=nb))

    def _host_block(self, n: int) -> np.ndarray:
        """A float32 (n, G) host array for a batch's dense rows: a fresh one on CPU (the model may keep
        references to its inputs); on CUDA a view of one reused pinned buffer, safe because every step ends
        with a synchronising ``loss.item()`` before the next batch is written into it."""
        G = self.data.n_genes
        if self.device.type != "cuda":
            return np.empty((n, G), dtype=np.float32)
        if self._pinned is None or self._pinned.numel() < n * G:
            self._pinned = torch.empty(n * G, dtype=torch.float32).pin_memory()
        return self._pinned[:n * G].numpy().reshape(n, G)

    def train_step(self, items: np.ndarray, rng: np.random.Generator) -> float:
        """One optimizer step on the batch ``items`` (rows / examples, or perturbation indices in perturbation
        batches); returns the whole batch's loss (the same on every rank).

        Row batches: ``loss = Σ_i w_i·mean_g (ŷ_ig − y_ig)² / Σ_i w_i`` (w = 1 per cell, or the cell count of an
        aggregated example). Under DDP each rank computes the numerator over its shard with the whole batch's
        denominator, times the world size (DDP averages gradients), so the gradient is the single-process one.
        With ``self_mask`` the step's hidden genes are drawn first from ``rng`` (the same on every rank).
        """
        self.net.train()
        world = self.dist.world_size
        hide = self.self_mask(rng)
        if self.grouped:
            local = self._group_loss(items, rng, hide)
        else:
            total = float(self.ex_weight[items].sum()) if self.aggregated else float(len(items))
            x, p, y, w = self.batch(items, rng, self.dist.shard(len(items)) if self.dist.enabled else None)
            local = ((self.net(x, p, hide=hide) - y) ** 2).mean(1).mul(w).sum() / (w.sum() if world == 1 else total)
        self.optimizer.zero_grad(set_to_none=True)
        (local if world == 1 else local * world).backward()
        self.optimizer.step()
        return self.dist.sum(float(local.detach()))

    def self_mask(self, rng: np.random.Generator) -> torch.Tensor | None:
        """Training-time self-masking (``cfg.self_mask = p > 0``): a bool ``(V,)`` hiding each trained gene's
        row with probability p for this step, so known genes must also be embedded from their neighbourhood;
        ``None`` when off. Only the trained genes' own inputs can be hidden (no other row has one), so only they
        are drawn, in gene order: the masks do not depend on how much of the graph the encoder holds (whole
        graph or encoder field train alike). From the step's ``rng``: deterministic, resumable and identical
        on every rank."""
        if self.cfg.mask_rate <= 0:
            return None
        hide = np.zeros(self.model.encoder.num_nodes, dtype=bool)
        hide[self.known_rows[rng.random(len(self.known_rows)) < self.cfg.mask_rate]] = True
        return torch.from_numpy(hide).to(self.device)

    def draw_group_rows(self, groups: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """Up to ``cells_per_group`` rows of each training perturbation in ``groups`` (sorted; all of a
        perturbation's rows when it has fewer), drawn without replacement from ``rng``."""
        m, out = self.cfg.group_cells, []
        for g in groups:
            rows = self.group_rows[int(g)]
            out.append(rows if len(rows) <= m else np.sort(rng.choice(rows, m, replace=False)))
        return out

    def _group_loss(self, groups: np.ndarray, rng: np.random.Generator, hide: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """This rank's share of ``(1/k) Σ_{q in batch} loss(ŷ_q, y_q)`` over the k perturbations of the batch.

        The direction seed (sw1), the cells of every perturbation and their control inputs are drawn for the
        whole batch on every rank (same draws as one process); a rank keeps whole perturbations.
        """
        direction_seed = int(rng.integers(0, 2**62))
        cells = self.draw_group_rows(groups, rng)
        rows = np.concatenate(cells)
        label = np.repeat(np.arange(len(groups)), [len(c) for c in cells])
        offsets = np.r_[0, np.cumsum([len(c) for c in cells])]
        mine = self.dist.shard(len(groups))
        part = slice(int(offsets[mine.start]), int(offsets[mine.stop]))
        x, p, y, _ = self.batch(rows, rng, part)
        pred = self.net(x, p, hide=hide)
        n_local = mine.stop - mine.start
        if n_local == 0:  # more ranks than perturbations in this step: contribute a zero gradient
            return pred.sum() * 0.0
        self.loss_fn.fix_directions(self.data.n_genes, direction_seed)
        lab = torch.from_numpy(label[part]).to(self.device)
        loss = per_group_loss(self.loss_fn, pred, y, lab)
        return loss if n_local == len(groups) else loss * (n_local / len(groups))

    # ------------------------------------------------------------------ evaluation (prediction: ModelPredictions)
    @property
    def graph_node_set(self) -> dict[str, int]:
        """The whole graph's node names (``in`` tests; :meth:`ModelPredictions.cover_genes`)."""
        return self.graph.node_lookup

    def evaluate(self, conditions: Sequence[Condition], with_pred: bool = False):
        """``(table, summary)`` from :func:`metrics.evaluate` on the given conditions (which have rows); with
        ``with_pred`` also the predicted and true changes against the batch-matched references, (P, G) each."""
        conditions = list(conditions)
        key = "|".join(f"{l}/{p}" for l, p in conditions)
        if key not in self._val_cache:
            true_mean, ref = true_profiles(self.data, self.controls, conditions, self.rows, self.condition_means)
            self._val_cache[key] = (true_mean, ref, self._candidates.index_of(conditions))
        true_mean, ref, self_index = self._val_cache[key]
        cand = self._candidates
        pred = self.predict_means(conditions)
        names = [condition_name(c) for c in conditions]
        table, summary = metrics.evaluate(names, pred, true_mean, ref, self.data.gene_index, cand, self_index,
                                          seed=self.cfg.seed)
        return (table, summary, pred - ref, true_mean - ref) if with_pred else (table, summary)

    @functools.cached_property
    def _candidates(self):
        """The retrieval candidates (:func:`retrieval_candidates`: every condition's true change), computed once
        for the validation and test scores."""
        return retrieval_candidates(self.data, self.controls, [], self.rows, self.condition_means)[0]

    @functools.cached_property
    def _train_centres(self) -> tuple[list[str], np.ndarray]:
        """``(lines, centres)``: the mean training change of each cell line, (L, G) float64 (fixed for the run;
        the centre of ``val_pearson_delta_specific``)."""
        keys = list(self.train_deltas)
        changes = np.asarray(list(self.train_deltas.values()), dtype=np.float64)
        of_line = np.asarray([line for line, _ in keys], dtype=object)
        lines = sorted(set(of_line.tolist()))
        return lines, np.stack([changes[of_line == line].mean(axis=0) for line in lines])

    def validate(self) -> tuple[dict[str, float], float]:
        """The validation record (``val_<metric>`` for every metric of :func:`metrics.evaluate`, and
        ``val_pearson_delta_specific``) and the score model selection maximises (``select_on``):

        * ``pearson_delta``: the mean batch-matched Pearson Δ, ``corr(δ̂_p, δ_p)`` (TxPert's metric);
        * ``pearson_delta_pert``: ``val_pearson_delta_specific``, the mean of Systema's
          ``corr(δ̂_p − δ̄_l, δ_p − δ̄_l)`` with ``δ̄_l`` the mean change of the *training* conditions of p's
          cell line (no validation or test truth enters the centre): the part of the response specific to p,
          which a strong response shared by all perturbations hides from ``pearson_delta``;
        * ``both``: the mean of the two.
        """
        val = list(self.split.val)
        _, summary, pred_delta, true_delta = self.evaluate(val, with_pred=True)
        record = {f"val_{k}": v for k, v in summary.items() if k != "n_perturbations"}
        centre_lines, centres = self._train_centres
        lines = np.asarray([line for line, _ in val], dtype=object)
        known = np.isin(lines, np.asarray(centre_lines, dtype=object))
        record["val_pearson_delta_specific"] = float(np.mean(metrics.pearson_delta_pert(
            pred_delta[known], true_delta[known], centres, centre_lines, lines[known]))) if known.any() else float("nan")
        pd, sp = record["val_pearson_delta"], record["val_pearson_delta_specific"]
        if self.cfg.select_on == "pearson_delta" or not np.isfinite(sp):  # a held-out line has no training centre
            score = pd
        else:
            score = sp if self.cfg.select_on == "pearson_delta_pert" else 0.5 * (pd + sp)
        record["val_selection"] = float(score)
        return record, float(score)

    # ------------------------------------------------------------------ checkpoints
    def _ckpt(self, name: str) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "checkpoints" / name

    def save_checkpoint(self) -> None:
        """Write ``last.pt`` (rank 0; every rank must call it, as the torch RNG states of all ranks are gathered)."""
        path = self._ckpt("last.pt")
        if path is None:
            return
        rng_states = self.dist.all_gather(torch.get_rng_state())
        if not self.dist.is_main:
            return
        atomic_torch_save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                           "torch_rng": rng_states[0], "torch_rng_ranks": rng_states, "state": self.state,
                           "fingerprint": self.cfg.fingerprint()}, path)

    def try_resume(self) -> bool:
        path = self._ckpt("last.pt")
        if path is None or not path.exists():
            return False
        ck = load_checkpoint(path, self.device)
        if ck.get("fingerprint") != self.cfg.fingerprint():
            raise ValueError(f"{path} was written with different training options; use a new output folder "
                             f"or delete the checkpoint to start over")
        load_weights(self.model, ck["model"], path)
        self.optimizer.load_state_dict(ck["optimizer"])
        ranks = ck.get("torch_rng_ranks")
        same_world = isinstance(ranks, list) and len(ranks) == self.dist.world_size
        torch.set_rng_state((ranks[self.dist.rank] if same_world else ck["torch_rng"]).cpu())
        self.state = ck["state"]
        log.info("resumed from %s at epoch %d step %d", path, self.state["epoch"], self.state["step"])
        return True

    # ------------------------------------------------------------------ the loop
    def _progress_line(self, text: str) -> None:
        """One line per epoch on stderr (``progress``, rank 0): plain lines whether or not it is a terminal
        (the step bar is only drawn on a terminal, so piped output holds no carriage returns)."""
        if self.cfg.progress and self.dist.is_main:
            tqdm.write(text, file=sys.stderr)

    def _keep_best(self, epoch: int) -> dict[str, torch.Tensor]:
        """A copy of the current weights as the best so far, also written to ``best.pt`` (rank 0)."""
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        best_path = self._ckpt("best.pt")
        if best_path is not None and self.dist.is_main:
            atomic_torch_save({"model": state, "epoch": epoch}, best_path)
        return state

    def _epoch_zero(self) -> dict[str, torch.Tensor] | None:
        """Score the untrained model (the prior: ``graph_neighbours`` for unseen singles, ``additive`` for
        combinations) on the validation split as epoch 0, so model selection keeps it when training does not
        beat it on validation. Kept in the state as ``untrained`` (not in the per-epoch history, which holds
        training losses); returns the state to keep as best (None without a validation split)."""
        if not self.split.val:
            return None
        record: dict[str, float] = {}
        if self.dist.is_main:
            record, _ = self.validate()
        record = self.dist.broadcast(record)
        st = self.state
        st["untrained"] = record
        st["best_val"], st["best_epoch"] = float(record["val_selection"]), 0
        state = self._keep_best(0)
        log.info("epoch 0 (untrained prior): val_pearson_delta=%.4f", record["val_pearson_delta"])
        self._progress_line(f"epoch 0 (untrained prior)  val Pearson Δ {record['val_pearson_delta']:.3f}")
        return state

    def fit(self, resume: bool = True, on_step: Callable[[int, int], None] | None = None) -> FitResult:
        """Train until ``epochs`` or early stopping; then load the best weights and evaluate the test split."""
        cfg, main = self.cfg, self.dist.is_main
        if not (resume and self.try_resume()):
            torch.manual_seed(cfg.seed + 1 + 7919 * self.dist.rank)  # rank 0 (and one process): seed + 1
        st = self.state
        start = time.perf_counter()
        best_path = self._ckpt("best.pt")
        best_state = None
        if best_path is not None and best_path.exists() and st["best_epoch"] >= 0:
            best_state = load_checkpoint(best_path, self.device)["model"]
        if "untrained" not in st and not st["history"] and self.model.prior_basis is not None:
            if cfg.fit_prior and "prior_fit" not in st:  # before epoch 0, so model selection sees the fitted prior
                fitted = st["prior_fit"] = self.model.encoder.effects.fit_prior(self.model.encoder.backend)
                log.info("prior fitted leave-one-out on the trained genes: %s", fitted)
                if fitted:
                    self._progress_line(f"prior fitted on the training perturbations: layer trust "
                                        f"{layer_trust_text(fitted)}; shrinkage "
                                        f"{fitted['kappa']:.2g}; held-out code error {fitted['loss_before']:.3g} -> "
                                        f"{fitted['loss_after']:.3g}")
            if cfg.epochs > 0:
                best_state = self._epoch_zero()
        while st["epoch"] < cfg.epochs and st["bad_epochs"] < cfg.patience:
            epoch = st["epoch"]
            order = self.epoch_order(epoch)
            n_steps = self.steps_per_epoch
            epoch_start = time.perf_counter()
            bar = tqdm(total=n_steps, initial=st["step"], desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       disable=not (cfg.progress and main and sys.stderr.isatty()), leave=False)
            while st["step"] < n_steps:
                s = st["step"]
                if on_step is not None:
                    on_step(epoch, s)
                items = self.step_items(order, s)
                loss = self.train_step(items, np.random.default_rng([cfg.seed, epoch, s]))
                st["loss_sum"] += loss * len(items)
                st["loss_n"] += len(items)
                st["step"] = s + 1
                bar.update(1)
                bar.set_postfix(loss=f"{st['loss_sum'] / max(st['loss_n'], 1):.4f}")
                if cfg.checkpoint_every and st["step"] % cfg.checkpoint_every == 0 and st["step"] < n_steps:
                    self.save_checkpoint()
            bar.close()
            record = {"epoch": epoch + 1, "train_loss": st["loss_sum"] / max(st["loss_n"], 1)}
            score = None
            if main:  # rank 0 evaluates; its record and score decide for every rank (same step counts)
                if self.split.val:
                    val, score = self.validate()
                    record.update(val)
                else:
                    score = -record["train_loss"]
            record, score = self.dist.broadcast((record, score))
            st["history"].append(record)
            if score > st["best_val"] + 1e-6 or st["best_epoch"] < 0:  # (epoch 0 may already hold the best)
                st["best_val"], st["best_epoch"], st["bad_epochs"] = float(score), epoch + 1, 0
                best_state = self._keep_best(epoch + 1)
            else:
                st["bad_epochs"] += 1
            log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4f}" for k, v in record.items() if k != "epoch"))
            self._progress_line(f"epoch {epoch + 1}/{cfg.epochs}  train loss {record['train_loss']:.4f}"
                                + (f"  val Pearson Δ {record['val_pearson_delta']:.3f}" if "val_pearson_delta" in record
                                   else "") + f"  best {st['best_val']:.3f} (epoch {st['best_epoch']})"
                                + f"  {time.perf_counter() - epoch_start:.2f} s")
            st["epoch"], st["step"], st["loss_sum"], st["loss_n"] = epoch + 1, 0, 0.0, 0
            self.save_checkpoint()
        if best_state is not None:
            self.model.load_state_dict(best_state)
        result = FitResult(history=list(st["history"]), best_epoch=st["best_epoch"], best_val=st["best_val"],
                           seconds=time.perf_counter() - start, untrained_val=dict(st.get("untrained", {})),
                           prior_fit=dict(st.get("prior_fit", {})))
        if main:
            result.test_table, result.test_summary = self.evaluate(self.split.test)
            for name, conds in self.split.subgroups.items():
                result.subgroup_summary[name] = self.evaluate(conds)[1]
        result.test_table, result.test_summary, result.subgroup_summary = self.dist.broadcast(
            (result.test_table, result.test_summary, result.subgroup_summary))
        return result
