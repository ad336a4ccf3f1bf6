"""Training loop: AdamW, model selection on validation Pearson Δ, early stopping, resumable checkpoints.

Determinism: the epoch order comes from ``numpy.random.default_rng([seed, epoch])``, the control inputs of
step s from ``default_rng([seed, epoch, s])`` and the torch RNG (dropout) state is saved in every
checkpoint, so a run interrupted mid-epoch and resumed from its last checkpoint ends with the same weights
and metrics as an uninterrupted one (same machine, same thread count).

Checkpoints (``<run>/checkpoints/last.pt``, ``best.pt``) hold only tensors and plain Python values, are
written atomically, and are read with ``torch.load(..., weights_only=True)``.

The per-step work (:meth:`Trainer.train_step`) takes a batch of row indices, so a data-parallel wrapper
can shard the epoch order by rank; nothing here assumes one process except the file writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from kgbuild.atomic import atomic_path
from kgbuild.graph import MultiGraph
from txpert_head import metrics
from txpert_head.controls import CONTROL_MODES, ControlIndex
from txpert_head.data import PerturbData, constituents
from txpert_head.model import TxPert
from txpert_head.receptive import receptive_field
from txpert_head.profiles import condition_name, retrieval_candidates, rows_by_condition, true_profiles
from txpert_head.splits import Condition, Split

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Every knob of a run (written to the run folder as ``config.json``)."""

    seed: int = 0
    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 5
    encoder_kind: str = "gat"
    encoder_dim: int = 64
    encoder_layers: int = 2
    encoder_heads: int = 2
    encoder_dropout: float = 0.0
    encoder_backend: str = "auto"
    use_edge_weight: bool = True
    basal: str = "mlp"
    hidden: int = 256
    dropout: float = 0.1
    target_term: bool = False
    control_mode: str = "batch"
    checkpoint_every: int = 50
    eval_cells: int = 256
    device: str = "auto"
    progress: bool = True
    max_steps_per_epoch: int | None = None
    min_steps_per_epoch: int = 1
    aggregate: bool = True
    graph_hops: int | None = None

    def __post_init__(self) -> None:
        if self.control_mode not in CONTROL_MODES:
            raise ValueError(f"control_mode must be one of {CONTROL_MODES}, got {self.control_mode!r}")
        if self.batch_size < 1 or self.epochs < 0:
            raise ValueError("batch_size must be >= 1 and epochs >= 0")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of the options that change the result (not progress/device/checkpoint cadence)."""
        d = {k: v for k, v in self.to_dict().items() if k not in ("progress", "device", "checkpoint_every")}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


class Interrupted(RuntimeError):
    """Raised by callbacks (tests, signal handlers) to stop training mid-epoch."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Safe load (``weights_only=True``): tensors and plain Python values only."""
    return torch.load(path, map_location=device, weights_only=True)


def build_model(graph: MultiGraph, genes: Sequence[str], encoder_genes: Sequence[str], cfg: TrainConfig) -> TxPert:
    """Encoder over ``graph`` (with rows for ``encoder_genes``) and the TxPert head for ``genes`` columns."""
    from gnn import PerturbationEncoder

    torch.manual_seed(cfg.seed)
    enc = PerturbationEncoder(graph, genes=list(encoder_genes), kind=cfg.encoder_kind, dim=cfg.encoder_dim,
                              layers=cfg.encoder_layers, heads=cfg.encoder_heads, dropout=cfg.encoder_dropout,
                              backend=cfg.encoder_backend, use_edge_weight=cfg.use_edge_weight)
    col = {g: i for i, g in enumerate(genes)}
    row_to_col = torch.tensor([col.get(g, -1) for g in enc.vocab], dtype=torch.long)
    return TxPert(enc, len(genes), row_to_col, basal=cfg.basal, hidden=cfg.hidden, dropout=cfg.dropout,
                  target_term=cfg.target_term)


@dataclass
class FitResult:
    history: list[dict[str, float]]
    best_epoch: int
    best_val: float
    test_table: Any = None
    test_summary: dict[str, float] = field(default_factory=dict)
    subgroup_summary: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0


class Trainer:
    """Trains a :class:`TxPert` on ``data`` with ``split``; checkpoints go to ``run_dir/checkpoints``."""

    def __init__(self, data: PerturbData, graph: MultiGraph, split: Split, cfg: TrainConfig,
                 run_dir: str | Path | None = None, controls: ControlIndex | None = None):
        self.data, self.split, self.cfg = data, split, cfg
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.device = resolve_device(cfg.device)
        self.controls = controls or ControlIndex(data)
        self.rows = rows_by_condition(data)
        self.encoder_genes = data.perturbed_genes()
        if cfg.graph_hops is not None:
            graph = receptive_field(graph, self.encoder_genes, cfg.graph_hops)
        self.model = build_model(graph, data.genes, self.encoder_genes, cfg).to(self.device)
        self.encoder_index = {g: i for i, g in enumerate(self.model.encoder.vocab)}
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
        self.aggregated = cfg.aggregate and cfg.control_mode == "mean"
        if self.aggregated:
            self._aggregate()
        self._init_at_mean_change()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.state: dict[str, Any] = {"epoch": 0, "step": 0, "best_val": -math.inf, "best_epoch": -1,
                                      "bad_epochs": 0, "history": [], "loss_sum": 0.0, "loss_n": 0}
        self._val_cache: dict[str, Any] = {}

    @torch.no_grad()
    def _init_at_mean_change(self) -> None:
        """Start from the general baseline: the decoder's output bias is the mean training change
        ``mean_q Δ_q`` (delta variant) or mean expression (MLP basal), and the target-gene term's bias is the
        mean change of measured perturbed genes in their own perturbation."""
        train = [c for c in self.split.train if c in self.rows]
        mean, ref = true_profiles(self.data, self.controls, train, self.rows)
        delta = mean - ref
        last = self.model.decoder[-1]
        init = delta.mean(0) if self.model.basal is None else mean.mean(0)
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
        import scipy.sparse as sp

        M = sp.csr_matrix((np.ones(len(rows), np.float32), (inv, np.arange(len(rows)))), shape=(len(uniq), len(rows)))
        self.ex_y = (np.asarray((M @ self.data.X[rows]).todense()) / counts[:, None]).astype(np.float32)
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

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Example order of an epoch: as many seeded permutations as the epoch's steps need."""
        items = self.examples if self.aggregated else self.train_rows
        rng = np.random.default_rng([self.cfg.seed, epoch])
        passes = int(math.ceil(self.steps_per_epoch * self.cfg.batch_size / len(items)))
        return np.concatenate([items[rng.permutation(len(items))] for _ in range(max(passes, 1))])

    def batch(self, rows: np.ndarray, rng: np.random.Generator):
        """``(x_ctrl, pert_rows, y, weight)`` tensors on the device; sparse rows are densified per batch."""
        if self.aggregated:
            x = self.controls.means[self.ex_group[rows]]
            y = self.ex_y[rows]
            p = self.cond_rows[torch.from_numpy(self.ex_cond[rows])]
            w = torch.from_numpy(self.ex_weight[rows])
        else:
            x = self.controls.inputs(rows, self.cfg.control_mode, rng)
            y = self.data.X[rows].toarray()
            p = self.cond_rows[torch.from_numpy(self.data.cond_id[rows])]
            w = torch.ones(len(rows))
        return (torch.from_numpy(np.ascontiguousarray(x)).to(self.device), p.to(self.device),
                torch.from_numpy(np.ascontiguousarray(y)).to(self.device), w.to(self.device))

    def train_step(self, rows: np.ndarray, rng: np.random.Generator) -> float:
        self.model.train()
        x, p, y, w = self.batch(rows, rng)
        loss = ((self.model(x, p) - y) ** 2).mean(1).mul(w).sum() / w.sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    # ------------------------------------------------------------------ prediction & evaluation
    @torch.no_grad()
    def predict_means(self, conditions: Sequence[Condition], rows_for: dict[Condition, np.ndarray] | None = None,
                      seed: int | None = None) -> np.ndarray:
        """Predicted mean expression (P, G) of each condition, averaged over control inputs.

        For a condition with data rows, inputs are matched to those rows' cell line and batch (up to
        ``eval_cells`` rows, deterministic); a condition without rows (``predict``) uses the controls of its
        cell line, one input per batch (mode ``mean``) or ``eval_cells`` sampled control rows.
        """
        self.model.eval()
        Z = self.model.encoder()
        rng = np.random.default_rng([self.cfg.seed if seed is None else seed, 999_983])
        rows_for = self.rows if rows_for is None else rows_for
        out = np.zeros((len(conditions), self.data.n_genes), dtype=np.float64)
        for k, (line, pert) in enumerate(conditions):
            idx = rows_for.get((line, pert))
            if idx is None or not len(idx):
                idx = self.controls.by_line.get(line)
                if idx is None:
                    raise KeyError(f"no cell line {line!r} in the data; lines: {', '.join(self.controls.by_line)}")
            if len(idx) > self.cfg.eval_cells:
                idx = np.sort(rng.choice(idx, self.cfg.eval_cells, replace=False))
            x = torch.from_numpy(np.ascontiguousarray(self.controls.inputs(idx, self.cfg.control_mode, rng)))
            rows = self.pert_rows_for(pert).unsqueeze(0).expand(len(idx), -1)
            y = self.model(x.to(self.device), rows.to(self.device), Z=Z)
            out[k] = y.double().mean(0).cpu().numpy()
        return out

    def pert_rows_for(self, pert: str) -> torch.Tensor:
        """Encoder rows of a perturbation's genes; genes unknown to the encoder contribute nothing (-1)."""
        genes = constituents(pert)
        unknown = [g for g in genes if g not in self.encoder_index]
        if unknown:
            log.warning("gene(s) %s are neither graph nodes nor trained perturbations: they add no shift",
                        ", ".join(unknown))
        return torch.tensor([self.encoder_index.get(g, -1) for g in genes] or [-1], dtype=torch.long)

    def evaluate(self, conditions: Sequence[Condition]):
        """``(table, summary)`` from :func:`metrics.evaluate` on the given conditions (which have rows)."""
        conditions = list(conditions)
        key = "|".join(f"{l}/{p}" for l, p in conditions)
        if key not in self._val_cache:
            true_mean, ref = true_profiles(self.data, self.controls, conditions, self.rows)
            cand, self_index = retrieval_candidates(self.data, self.controls, conditions, self.rows)
            self._val_cache[key] = (true_mean, ref, cand, self_index)
        true_mean, ref, cand, self_index = self._val_cache[key]
        pred = self.predict_means(conditions)
        names = [condition_name(c) for c in conditions]
        return metrics.evaluate(names, pred, true_mean, ref, self.data.gene_index, cand, self_index, seed=self.cfg.seed)

    # ------------------------------------------------------------------ checkpoints
    def _ckpt(self, name: str) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "checkpoints" / name

    def save_checkpoint(self) -> None:
        path = self._ckpt("last.pt")
        if path is None:
            return
        atomic_torch_save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                           "torch_rng": torch.get_rng_state(), "state": self.state,
                           "fingerprint": self.cfg.fingerprint()}, path)

    def try_resume(self) -> bool:
        path = self._ckpt("last.pt")
        if path is None or not path.exists():
            return False
        ck = load_checkpoint(path, self.device)
        if ck.get("fingerprint") != self.cfg.fingerprint():
            raise ValueError(f"{path} was written with different training options; use a new output folder "
                             f"or delete the checkpoint to start over")
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        torch.set_rng_state(ck["torch_rng"])
        self.state = ck["state"]
        log.info("resumed from %s at epoch %d step %d", path, self.state["epoch"], self.state["step"])
        return True

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: bool = True, on_step: Callable[[int, int], None] | None = None) -> FitResult:
        """Train until ``epochs`` or early stopping; then load the best weights and evaluate the test split."""
        cfg = self.cfg
        if not (resume and self.try_resume()):
            torch.manual_seed(cfg.seed + 1)
        st = self.state
        start = time.perf_counter()
        best_path = self._ckpt("best.pt")
        best_state = None
        if best_path is not None and best_path.exists() and st["best_epoch"] >= 0:
            best_state = load_checkpoint(best_path, self.device)["model"]
        while st["epoch"] < cfg.epochs and st["bad_epochs"] < cfg.patience:
            epoch = st["epoch"]
            order = self.epoch_order(epoch)
            n_steps = self.steps_per_epoch
            bar = tqdm(total=n_steps, initial=st["step"], desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       disable=not cfg.progress, leave=False)
            while st["step"] < n_steps:
                s = st["step"]
                if on_step is not None:
                    on_step(epoch, s)
                rows = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
                loss = self.train_step(rows, np.random.default_rng([cfg.seed, epoch, s]))
                st["loss_sum"] += loss * len(rows)
                st["loss_n"] += len(rows)
                st["step"] = s + 1
                bar.update(1)
                bar.set_postfix(loss=f"{st['loss_sum'] / max(st['loss_n'], 1):.4f}")
                if cfg.checkpoint_every and st["step"] % cfg.checkpoint_every == 0 and st["step"] < n_steps:
                    self.save_checkpoint()
            bar.close()
            record = {"epoch": epoch + 1, "train_loss": st["loss_sum"] / max(st["loss_n"], 1)}
            if self.split.val:
                _, val = self.evaluate(self.split.val)
                record.update({f"val_{k}": v for k, v in val.items() if k != "n_perturbations"})
                score = val["pearson_delta"]
            else:
                score = -record["train_loss"]
            st["history"].append(record)
            if score > st["best_val"] + 1e-6 or st["best_epoch"] < 0:
                st["best_val"], st["best_epoch"], st["bad_epochs"] = float(score), epoch + 1, 0
                best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                if best_path is not None:
                    atomic_torch_save({"model": best_state, "epoch": epoch + 1}, best_path)
            else:
                st["bad_epochs"] += 1
            log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4f}" for k, v in record.items() if k != "epoch"))
            st["epoch"], st["step"], st["loss_sum"], st["loss_n"] = epoch + 1, 0, 0.0, 0
            self.save_checkpoint()
        if best_state is not None:
            self.model.load_state_dict(best_state)
        result = FitResult(history=list(st["history"]), best_epoch=st["best_epoch"], best_val=st["best_val"],
                           seconds=time.perf_counter() - start)
        result.test_table, result.test_summary = self.evaluate(self.split.test)
        for name, conds in self.split.subgroups.items():
            result.subgroup_summary[name] = self.evaluate(conds)[1]
        return result
