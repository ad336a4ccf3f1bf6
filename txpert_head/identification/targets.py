"""Target identification (the reverse task): which gene was perturbed in a group of cells?

For a group q of cells after an unknown perturbation (rows ``I_q`` of a query ``.h5ad``, with matched
controls in the same file) the observed change is ``δ_q = x̄_q − r_q`` (group mean minus the batch-matched
control mean, as in :mod:`txpert_head.metrics.expression`). For every candidate gene c the trained model predicts the
change of the single perturbation c from the same control inputs, ``δ̂_qc``, and the candidates are ranked
by a score ``s(δ̂_qc, δ_q)`` (highest first):

* ``pearson`` (default): the Pearson correlation over measured genes, ``corr(δ̂_qc, δ_q)``;
* ``cosine``: ``<δ̂_qc, δ_q> / (‖δ̂_qc‖ ‖δ_q‖)`` (no centring);
* ``neg_l2``: ``−‖δ̂_qc − δ_q‖₂``.

Prediction (see :class:`txpert_head.model.txpert.TxPert`). Let ``b`` run over the control groups (cell line, batch)
of the query file, ``c_b`` their control means and ``w_qb`` the fraction of the group's rows in batch b, so
``r_q = Σ_b w_qb c_b``. The model's prediction for a group is the mean of ``f(x, c)`` over control inputs x
matched to the group's rows, where ``f(x, c) = model(x, rows(c))``. Written over a set of inputs ``x_i``
(i = 1..n_in) with reference ``ρ_i`` (the control mean of the input's batch) and weights ``W (Q, n_in)``
(rows summing to 1, ``Σ_i W_qi ρ_i = r_q``)::

    δ̂_qc = Σ_i W_qi D_ic,   D_ic = f(x_i, c) − ρ_i      (G,)

* ``control_mode="mean"`` (any basal): the input of a row is its batch's control mean, so ``x_b = c_b``,
  one input per control group, and the formula is exact.
* ``basal="none"`` (any mode): ``f(x, c) = x + g(z_c) + t_c(x)`` is affine in x, so the mean over random
  control inputs equals f at their expectation: ``x_b = c_b`` (mode ``batch``) or the cell line's control
  mean (mode ``random``). Exact.
* ``basal="mlp"`` with modes ``batch``/``random``: ``f`` is non-linear in x, so ``control_cells`` control
  cells are drawn per control group (from the batch, or the cell line for ``random``), seeded; each gets
  weight ``w_qb / n``. A Monte-Carlo estimate of the model's expected prediction.

Scoring never materialises the (Q, C, G) predictions: with ``D`` centred along genes for ``pearson``
(``D̃``, ``δ̃_q``), ``<δ̂_qc, δ_q> = Σ_i W_qi <D_ic, δ_q>`` and ``‖δ̂_qc‖² = W_q Gram_c W_qᵀ`` with
``Gram_c[i, j] = <D_ic, D_jc>``; ``D`` is computed per candidate batch with the model's own forward on
``n_in × batch`` rows (encoder output ``Z`` computed once).

Candidates. ``scope="graph"`` (default): every node of the run's graph file plus the data's perturbed genes
absent from it, whether perturbed in training or not. A run trained with ``graph_hops`` (the part of the graph
the encoder reads for the data's perturbed genes) only built exact encoder rows for them, so the encoder is rebuilt on
the whole graph with the trained weights: every GNN parameter is copied, input embeddings are copied by
gene, and genes outside the field keep their seeded initial embedding -- exactly what they would have in a
run trained on the whole graph, where they receive no gradient (for the message-passing kinds; the
Exphormer kinds draw expander edges over the whole graph, so their rows are not identical).
``scope="trained"``: only the data's perturbed genes (the trained encoder's exact rows; the encoder built on
part of the graph also holds rows for their neighbours, which miss edges).

Background removal (``center=True``, off by default). Over ~20k candidates most predicted changes share a
generic component (the decoder starts at, and stays near, the mean training change), so a plain match
rewards candidates whose prediction is *typical* rather than specific. With ``center`` the candidates' mean
prediction ``μ_q = mean_c δ̂_qc = Σ_i W_qi M_i`` (``M_i = mean_c D_ic``, one extra pass) is subtracted from
both sides: the score is ``s(δ̂_qc − μ_q, δ_q − μ_q)``, i.e. it compares what is specific to candidate c with
how the group departs from the model's generic response.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from kgbuild.atomic import atomic_path
from kgbuild.progress import progress as progress_report
from txpert_head.data.controls import ControlIndex
from txpert_head.data.perturb_data import CONTROL, DataError, PerturbData, parse_label
from txpert_head.model.txpert import TxPert
from txpert_head.data.profiles import condition_name, rows_by_condition, true_profiles
from txpert_head.data.splits import Condition

log = logging.getLogger(__name__)

SCORES = ("pearson", "cosine", "neg_l2")
SCOPES = ("graph", "trained")


class IdentifyError(ValueError):
    """Input that cannot be identified (no groups, unknown group, no candidate genes, ...)."""


# ---------------------------------------------------------------------------------------------- query groups
@dataclass
class Queries:
    """The groups to identify and the control inputs their predictions are made from.

    ``conditions``: Q (cell line, label); ``names``: Q output names; ``observed`` (Q, G) float64 ``δ_q``;
    ``inputs`` (n_in, G) float32 control inputs ``x_i``; ``input_ref`` (n_in, G) float64 ``ρ_i``;
    ``weights`` (Q, n_in) float64 ``W`` (rows sum to 1); ``n_rows`` (Q,) cells per group.
    """

    conditions: list[Condition]
    names: list[str]
    observed: np.ndarray
    inputs: np.ndarray
    input_ref: np.ndarray
    weights: np.ndarray
    n_rows: np.ndarray
    notes: dict = field(default_factory=dict)


def align_genes(query: PerturbData, genes: Sequence[str]) -> PerturbData:
    """``query`` with its columns in the model's gene order; :class:`DataError` names missing genes."""
    genes = list(genes)
    if query.genes == genes:
        return query
    index = query.gene_index
    missing = [g for g in genes if g not in index]
    if missing:
        shown = ", ".join(missing[:10]) + (f" (+{len(missing) - 10} more)" if len(missing) > 10 else "")
        raise DataError(f"{query.source}: {len(missing)} of the model's {len(genes)} measured genes are not columns "
                        f"of the file: {shown}")
    cols = np.asarray([index[g] for g in genes], dtype=np.int64)
    extra = query.n_genes - len(genes)
    if extra:
        log.info("%s: %d gene column(s) the model does not use are ignored", query.source, extra)
    return PerturbData(query.X[:, cols], genes, query.condition, query.cell_line, query.batch, source=query.source,
                       pseudobulk=query.pseudobulk, normalized_here=query.normalized_here, notes=dict(query.notes))


def select_groups(query: PerturbData, groups: Sequence[str] | None = None) -> list[Condition]:
    """The non-control (cell line, label) groups of ``query``, optionally only the labels in ``groups``
    (a label, or ``line|label`` for one cell line)."""
    everything = [c for c in rows_by_condition(query) if c[1] != CONTROL]
    if not everything:
        raise IdentifyError(f"{query.source}: no groups to identify: every row is a control")
    if not groups:
        return everything
    chosen: list[Condition] = []
    for want in groups:
        line, _, label = want.rpartition("|")
        try:  # labels are stored canonically: "SET+KLF1" is "KLF1+SET"
            label = parse_label(label, [])
        except DataError:
            pass
        hit = [c for c in everything if c[1] == label and line in ("", c[0])]
        if not hit:
            labels = sorted({c[1] for c in everything})
            raise IdentifyError(f"{query.source}: no group {want!r}; groups: {', '.join(labels[:20])}"
                                + (" ..." if len(labels) > 20 else ""))
        chosen += [c for c in hit if c not in chosen]
    return chosen


def build_queries(query: PerturbData, conditions: Sequence[Condition], control_mode: str, basal: str,
                  control_cells: int = 16, seed: int = 0) -> Queries:
    """Observed changes and the weighted control inputs of each group (see the module docstring)."""
    controls = ControlIndex(query)
    rows = rows_by_condition(query)
    conditions = list(conditions)
    mean, ref = true_profiles(query, controls, conditions, rows)
    n_groups = len(controls.groups)
    w = np.zeros((len(conditions), n_groups))
    for q, cond in enumerate(conditions):
        g, n = np.unique(controls.group_of_row[rows[cond]], return_counts=True)
        w[q, g] = n / n.sum()
    used = np.flatnonzero(w.sum(0) > 0)
    means = controls.means.astype(np.float64)
    inputs, input_ref, cols = [], [], []
    exact = control_mode == "mean" or basal == "none"
    rng = np.random.default_rng([seed, 4242])
    for b in used:
        if exact:
            if control_mode == "random":
                line_rows = controls.by_line[controls.groups[b][0]]
                x = np.asarray(query.X[line_rows].mean(axis=0), dtype=np.float64).ravel()
            else:
                x = means[b]
            inputs.append(x[None])
            input_ref.append(means[b][None])
            cols.append(np.full((1,), b))
        else:
            pool = controls.by_group[b] if control_mode == "batch" else controls.by_line[controls.groups[b][0]]
            pick = np.sort(rng.choice(pool, min(control_cells, len(pool)), replace=False))
            inputs.append(query.X[pick].toarray().astype(np.float64))
            input_ref.append(np.repeat(means[b][None], len(pick), 0))
            cols.append(np.full(len(pick), b))
    col_group = np.concatenate(cols)
    per_group = np.bincount(col_group, minlength=n_groups)
    weights = w[:, col_group] / per_group[col_group][None, :]
    return Queries(conditions, [condition_name(c) for c in conditions], mean - ref,
                   np.concatenate(inputs).astype(np.float32), np.concatenate(input_ref), weights,
                   np.asarray([len(rows[c]) for c in conditions]),
                   notes={"inputs": int(len(col_group)), "exact": bool(exact), "control_mode": control_mode,
                          "basal": basal})


# ---------------------------------------------------------------------------------------------- candidates
def candidate_model(trainer, scope: str = "graph") -> TxPert:
    """The model whose encoder vocabulary is the candidate set (``scope`` ``graph``: every node of the
    trainer's whole graph, ``trainer.graph``; or ``trained``)."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if scope == "trained" or trainer.cfg.hops is None:
        return trainer.model
    return trainer.whole_graph_model()


def read_candidates(path: str | Path) -> list[str]:
    """One gene per line (first tab/comma/space-separated field); blank lines and ``#`` comments ignored."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such candidate file")
    genes: list[str] = []
    for line in path.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            genes.append(text.replace(",", " ").split()[0])
    if not genes:
        raise IdentifyError(f"{path}: no candidate genes (one gene symbol per line)")
    return list(dict.fromkeys(genes))


def candidate_rows(vocab: Sequence[str], wanted: Sequence[str] | None = None,
                   source: str = "candidates") -> tuple[list[str], np.ndarray, list[str]]:
    """``(genes, rows, unknown)``: the candidates that have an encoder row, their rows, and those that don't."""
    index = {g: i for i, g in enumerate(vocab)}
    if wanted is None:
        return list(vocab), np.arange(len(vocab), dtype=np.int64), []
    known = [g for g in wanted if g in index]
    unknown = [g for g in wanted if g not in index]
    if not known:
        raise IdentifyError(f"{source}: none of {len(wanted)} candidate genes (e.g. {', '.join(wanted[:5])}) is in "
                            f"the model's gene vocabulary (graph nodes and trained perturbations)")
    if unknown:
        log.warning("%s: %d candidate gene(s) have no graph node or encoder row and are skipped: %s", source,
                    len(unknown), ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else ""))
    return known, np.asarray([index[g] for g in known], dtype=np.int64), unknown


# ---------------------------------------------------------------------------------------------- scoring
@torch.no_grad()
def _changes(model: TxPert, enc, X: torch.Tensor, ref: torch.Tensor, rows: np.ndarray,
             batch_rows: int, progress: bool, desc: str):
    """Yield ``(lo, D)`` per candidate batch: ``D`` (k, n_in, G) float64 = model(x_i, c) − ρ_i."""
    n_in = X.shape[0]
    m = max(1, batch_rows // n_in)
    # a bar on a terminal, plain periodic lines on stderr otherwise (kgbuild.progress)
    with progress_report(total=len(rows), desc=f"identify: scoring {desc}", unit="candidates",
                         enabled=None if progress else False, leave=False) as bar:
        for lo in range(0, len(rows), m):
            r = torch.as_tensor(rows[lo:lo + m], device=X.device)
            k = len(r)
            x = X.unsqueeze(0).expand(k, -1, -1).reshape(k * n_in, -1)
            p = r.view(k, 1, 1).expand(k, n_in, 1).reshape(k * n_in, 1)
            yield lo, model(x, p, enc=enc).view(k, n_in, -1).double() - ref.unsqueeze(0)
            bar.update(k)


@torch.no_grad()
def score_candidates(model: TxPert, rows: np.ndarray, queries: Queries, score: str = "pearson",
                     batch_rows: int = 8192, progress: bool = True, center: bool = False) -> np.ndarray:
    """Scores (Q, C) of candidate encoder ``rows`` (C,) for every query group (higher = more likely).

    One encoder pass; then for each batch of ``m`` candidates one forward of ``n_in * m`` rows gives
    ``D`` (n_in, m, G) and the scores follow from the quadratic forms in the module docstring.
    ``center``: subtract the candidates' mean prediction first (background removal, one extra pass).
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    model.eval()
    device = next(model.parameters()).device
    enc = model.encode()
    X = torch.from_numpy(queries.inputs).to(device)  # (n_in, G)
    ref = torch.from_numpy(queries.input_ref).to(device)  # (n_in, G) float64
    W = torch.from_numpy(queries.weights).to(device)  # (Q, n_in)
    obs = torch.from_numpy(queries.observed).to(device)  # (Q, G)
    M = None
    if center:
        M = torch.zeros_like(ref)
        for _, D in _changes(model, enc, X, ref, rows, batch_rows, progress, "background"):
            M += D.sum(0)
        M /= len(rows)
        obs = obs - W @ M
    if score == "pearson":
        obs = obs - obs.mean(1, keepdim=True)
    obs_sq = (obs * obs).sum(1)  # (Q,)
    out = np.empty((len(queries.names), len(rows)), dtype=np.float64)
    for lo, D in _changes(model, enc, X, ref, rows, batch_rows, progress, "candidates"):  # D: (k, n_in, G)
        k = D.shape[0]
        if M is not None:
            D = D - M.unsqueeze(0)
        if score == "pearson":
            D = D - D.mean(2, keepdim=True)
        inner = torch.einsum("kig,qg->qki", D, obs)  # (Q, k, n_in)
        num = (inner * W.unsqueeze(1)).sum(2)  # (Q, k): <δ̂_qc, δ_q>
        gram = torch.einsum("kig,kjg->kij", D, D)  # (k, n_in, n_in)
        sq = torch.einsum("qi,kij,qj->qk", W, gram, W).clamp(min=0)  # (Q, k): ‖δ̂_qc‖²
        if score == "neg_l2":
            s = -(sq - 2 * num + obs_sq.unsqueeze(1)).clamp(min=0).sqrt()
        else:
            den = (sq * obs_sq.unsqueeze(1)).sqrt()
            s = torch.where(den > 0, num / den.clamp(min=1e-300), torch.full_like(num, float("nan")))
        out[:, lo:lo + k] = s.cpu().numpy()
    return out


def ranking(scores: np.ndarray, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Candidate order per query (Q, C): highest score first, NaN last; ties broken by ``tiebreak`` (C,)
    (a fixed random key, so no candidate order is favoured), then by candidate index."""
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    C = scores.shape[1]
    key = np.zeros(C) if tiebreak is None else np.asarray(tiebreak, dtype=np.float64)
    out = np.empty(scores.shape, dtype=np.int64)
    for q in range(len(scores)):
        s = np.where(np.isnan(scores[q]), -np.inf, scores[q])
        nan_last = np.isnan(scores[q])
        out[q] = np.lexsort((np.arange(C), key, -s, nan_last))
    return out


def tiebreak_key(n: int, seed: int = 0) -> np.ndarray:
    """A fixed random permutation key of ``n`` candidates."""
    return np.random.default_rng([seed, 7]).permutation(n).astype(np.float64)


def rank_table(names: Sequence[str], genes: Sequence[str], scores: np.ndarray, order: np.ndarray,
               top: int | None = None) -> pd.DataFrame:
    """Long table ``group, rank, gene, score`` (rank 1 = best), the first ``top`` per group (all if None)."""
    genes = np.asarray(list(genes), dtype=object)
    n = order.shape[1] if top is None else min(int(top), order.shape[1])
    frames = []
    for q, name in enumerate(names):
        idx = order[q, :n]
        frames.append(pd.DataFrame({"group": name, "rank": np.arange(1, n + 1), "gene": genes[idx],
                                    "score": scores[q, idx]}))
    return pd.concat(frames, ignore_index=True)


def write_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Atomic write: tab-separated unless the name ends in ``.csv``."""
    path = Path(path)
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep=sep, index=False, float_format="%.6g")
    return path


# ---------------------------------------------------------------------------------------------- one call
@dataclass
class Identification:
    """Everything :func:`identify` computed: candidates (C,), scores (Q, C), order (Q, C)."""

    queries: Queries
    genes: list[str]
    scores: np.ndarray
    order: np.ndarray
    unknown_candidates: list[str]
    score: str
    scope: str
    center: bool = False

    def table(self, top: int | None = None) -> pd.DataFrame:
        return rank_table(self.queries.names, self.genes, self.scores, self.order, top)


def identify(trainer, query: PerturbData, groups: Sequence[str] | None = None, candidates: Sequence[str] | None = None,
             score: str = "pearson", scope: str = "graph", control_cells: int = 16, batch_rows: int = 8192, seed: int = 0, progress: bool = True,
             model: TxPert | None = None, center: bool = False) -> Identification:
    """Rank candidate genes for each group of ``query`` with the trained model of ``trainer``.

    ``model`` may pass a model from :func:`candidate_model` to reuse it across calls.
    """
    query = align_genes(query, trainer.data.genes)
    conds = select_groups(query, groups)
    cfg = trainer.cfg
    queries = build_queries(query, conds, cfg.control_mode, cfg.basal, control_cells, seed)
    model = candidate_model(trainer, scope) if model is None else model
    if scope == "trained":  # the data's perturbed genes: the rows the trained encoder computes exactly
        perturbed = set(trainer.encoder_genes)
        candidates = [g for g in (candidates if candidates is not None else trainer.encoder_genes) if g in perturbed]
    genes, rows, unknown = candidate_rows(model.encoder.vocab, candidates)
    scores = score_candidates(model, rows, queries, score, batch_rows, progress, center)
    order = ranking(scores, tiebreak_key(len(genes), seed))
    return Identification(queries, genes, scores, order, unknown, score, scope, center)


# ---------------------------------------------------------------------------------------------- run folder
def summary_path(out: str | Path) -> Path:
    """``ranked.tsv`` -> ``ranked.summary.json``."""
    out = Path(out)
    return out.with_name(out.stem + ".summary.json")


def evaluate_labels(result: Identification, ks: Sequence[int] | None = None) -> dict:
    """Treat each group's label as its true target(s) (genes joined by ``+``): per-group ranks and MRR /
    hit@k / recall@k of the model beside the exact random expectation on the same candidates."""
    from txpert_head.data.perturb_data import constituents
    from txpert_head.metrics.identification import KS, mean_metrics, query_metrics, random_expectation, target_ranks

    ks = KS if ks is None else ks
    genes = np.asarray(result.genes, dtype=object)
    rows, model, rand = [], [], []
    for q, (_, label) in enumerate(result.queries.conditions):
        truth = list(constituents(label))
        ranks = target_ranks(genes[result.order[q]], truth)
        model.append(query_metrics(ranks, ks))
        rand.append(random_expectation(len(genes), len(truth), int(np.isfinite(ranks).sum()), ks))
        rows.append({"group": result.queries.names[q], "true_genes": truth,
                     "ranks": [None if not np.isfinite(r) else int(r) for r in ranks]})
    return {"per_group": rows, "model": mean_metrics(model), "random": mean_metrics(rand)}
