"""Perturb-seq data for TxPert: read an AnnData ``.h5ad``, parse perturbation labels, normalise counts.

A dataset is ``n`` cells (or pseudobulk rows) by ``G`` measured genes. Each row has

* a *condition*: a perturbation, canonically the sorted constituent gene symbols joined by ``+``
  (``"KLF1+SET"``), or :data:`CONTROL` (``"ctrl"``) for control cells;
* a cell line and a batch (one of each when the file has no such column).

Expression is kept sparse (CSR, float32) and log-normalised: raw integer counts are scaled to
4,000 counts per cell and ``log1p``-ed, ``x' = log(1 + 4000 * x / sum(x))``; input that is already
normalised (non-integer values) is used as is. Both can be forced with ``normalize="counts"|"none"``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

log = logging.getLogger(__name__)

CONTROL = "ctrl"
TARGET_SUM = 4000.0
_GENE_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/:@]*$")
NORMALIZE_MODES = ("auto", "counts", "none")


class DataError(ValueError):
    """Input data that cannot be used: names the file, column, label or batch that is wrong."""


@dataclass
class PerturbData:
    """Log-normalised expression and per-row labels.

    ``X``: CSR (n, G) float32. ``condition``, ``cell_line``, ``batch``: str arrays (n,).
    ``conditions``: sorted unique conditions; ``cond_id`` (n,) int64 indexes into it.
    """

    X: sp.csr_matrix
    genes: list[str]
    condition: np.ndarray
    cell_line: np.ndarray
    batch: np.ndarray
    source: str = "<memory>"
    pseudobulk: bool = False
    normalized_here: bool = False
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.X = sp.csr_matrix(self.X, dtype=np.float32)
        n = self.X.shape[0]
        for name in ("condition", "cell_line", "batch"):
            arr = np.asarray(getattr(self, name)).astype(str)
            if arr.shape != (n,):
                raise DataError(f"{self.source}: {name} has {arr.shape[0]} entries for {n} rows")
            setattr(self, name, arr)
        self.genes = [str(g) for g in self.genes]
        if len(self.genes) != self.X.shape[1]:
            raise DataError(f"{self.source}: {len(self.genes)} gene names for {self.X.shape[1]} columns")
        self.conditions, self.cond_id = np.unique(self.condition, return_inverse=True)
        self.cond_id = self.cond_id.astype(np.int64)

    @property
    def n_obs(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_genes(self) -> int:
        return int(self.X.shape[1])

    @property
    def gene_index(self) -> dict[str, int]:
        return {g: i for i, g in enumerate(self.genes)}

    @property
    def is_control(self) -> np.ndarray:
        return self.condition == CONTROL

    def perturbations(self) -> list[str]:
        """Non-control conditions, sorted."""
        return [c for c in self.conditions.tolist() if c != CONTROL]

    def perturbed_genes(self) -> list[str]:
        """Every gene that is a constituent of some perturbation, sorted."""
        return sorted({g for c in self.perturbations() for g in constituents(c)})

    def subset(self, rows: np.ndarray) -> "PerturbData":
        """A new dataset of the given rows (indices or boolean mask)."""
        rows = np.asarray(rows)
        return PerturbData(self.X[rows], self.genes, self.condition[rows], self.cell_line[rows], self.batch[rows],
                           source=self.source, pseudobulk=self.pseudobulk, normalized_here=self.normalized_here,
                           notes=dict(self.notes))


def constituents(condition: str) -> tuple[str, ...]:
    """The genes of a canonical condition; ``()`` for control."""
    return () if condition == CONTROL else tuple(condition.split("+"))


def parse_label(label: object, control_labels: Sequence[str]) -> str:
    """Canonical condition of one obs label.

    ``"A+B"`` -> ``"A+B"`` (constituents sorted), a control label -> :data:`CONTROL`, and GEARS-style
    ``"A+ctrl"`` -> ``"A"``. Raises :class:`DataError` for anything else (empty parts, spaces, repeats).
    """
    if label is None or (isinstance(label, float) and np.isnan(label)):
        raise DataError("missing perturbation label (NaN)")
    text = str(label).strip()
    if text in control_labels:
        return CONTROL
    parts = text.split("+")
    genes = [p for p in parts if p not in control_labels]
    if not genes:
        return CONTROL
    bad = [p for p in genes if not _GENE_TOKEN.match(p)]
    if bad or len(set(genes)) != len(genes):
        why = f"part {bad[0]!r} is not a gene symbol" if bad else "a gene is repeated"
        raise DataError(
            f"perturbation label {text!r} has unknown syntax ({why}); expected gene symbols joined by '+' "
            f"(e.g. 'KLF1+SET') or a control label ({', '.join(map(repr, control_labels))})"
        )
    return "+".join(sorted(genes))


def canonical_conditions(labels: Iterable[object], control_labels: Sequence[str], where: str = "") -> np.ndarray:
    """Vectorised :func:`parse_label` over unique labels; errors say where the label came from."""
    values = pd.Series(list(labels), dtype=object)
    if values.isna().any():
        row = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise DataError(f"{where}missing perturbation label at row {row}")
    uniq, inv = np.unique(values.astype(str).to_numpy(), return_inverse=True)
    out = []
    for lab in uniq.tolist():
        try:
            out.append(parse_label(lab, control_labels))
        except DataError as err:
            n = int(np.sum(uniq[inv] == lab))
            raise DataError(f"{where}{err} ({n} row(s))") from None
    return np.asarray(out, dtype=object)[inv].astype(str)


def looks_like_counts(X: sp.spmatrix | np.ndarray, sample: int = 200_000) -> bool:
    """True when every sampled stored value is a non-negative integer (raw UMI counts)."""
    data = X.data if sp.issparse(X) else np.asarray(X).ravel()
    if data.size == 0:
        return False
    if data.size > sample:
        data = data[np.random.default_rng(0).choice(data.size, sample, replace=False)]
    return bool(np.all(data >= 0) and np.all(np.abs(data - np.round(data)) < 1e-6) and data.max() > 1)


def normalize_counts(X: sp.csr_matrix, target_sum: float = TARGET_SUM) -> sp.csr_matrix:
    """``log1p(target_sum * x / rowsum(x))`` per row; all-zero rows stay zero. CSR in, CSR float32 out."""
    X = sp.csr_matrix(X, dtype=np.float32, copy=True)
    totals = np.asarray(X.sum(axis=1)).ravel()
    empty = totals <= 0
    if empty.any():
        log.warning("%d row(s) have no counts; left as zeros", int(empty.sum()))
    scale = np.where(empty, 0.0, target_sum / np.where(empty, 1.0, totals)).astype(np.float32)
    X.data *= np.repeat(scale, np.diff(X.indptr))
    np.log1p(X.data, out=X.data)
    return X


def _column(obs: pd.DataFrame, name: str | None, role: str, path: str, default: str) -> np.ndarray:
    if name is None:
        return np.full(len(obs), default, dtype=object)
    if name not in obs.columns:
        raise DataError(
            f"{path}: no obs column {name!r} for the {role}; columns present: {', '.join(map(str, obs.columns))}"
        )
    col = obs[name]
    if col.isna().any():
        row = obs.index[int(np.flatnonzero(col.isna().to_numpy())[0])]
        raise DataError(f"{path}: obs column {name!r} ({role}) is empty for row {row!r}")
    return col.astype(str).to_numpy()


def load_h5ad(
    path: str | Path,
    perturbation_col: str = "perturbation",
    control: str | Sequence[str] = CONTROL,
    cell_line_col: str | None = None,
    batch_col: str | None = None,
    normalize: str = "auto",
    pseudobulk: bool | None = None,
    layer: str | None = None,
) -> PerturbData:
    """Read ``path`` into a :class:`PerturbData`.

    ``control``: one label or several marking control rows (``ctrl``, ``control``, ``non-targeting``).
    ``normalize``: ``auto`` (raw integer counts are normalised, anything else used as is), ``counts``
    (always normalise), ``none`` (never). ``pseudobulk``: ``None`` detects it (at most one row per
    condition x cell line x batch). ``layer``: read ``adata.layers[layer]`` instead of ``X``.
    """
    import anndata

    path = str(path)
    if not Path(path).exists():
        raise DataError(f"{path}: no such file")
    try:
        adata = anndata.read_h5ad(path)
    except Exception as err:  # h5py / anndata raise many types for damaged files
        raise DataError(f"{path}: cannot read as .h5ad ({type(err).__name__}: {err})") from None
    controls = (control,) if isinstance(control, str) else tuple(control)
    if normalize not in NORMALIZE_MODES:
        raise DataError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
    obs = adata.obs
    labels = _column(obs, perturbation_col, "perturbation", path, "")
    cell_line = _column(obs, cell_line_col, "cell line", path, "all")
    batch = _column(obs, batch_col, "batch", path, "all")
    condition = canonical_conditions(labels, controls, where=f"{path}: column {perturbation_col!r}: ")
    if not np.any(condition == CONTROL):
        top = pd.Series(labels).value_counts().head(5).index.tolist()
        raise DataError(
            f"{path}: no control rows: no label in column {perturbation_col!r} equals "
            f"{', '.join(map(repr, controls))}; most common labels: {', '.join(map(repr, top))} "
            f"(set the control label option)"
        )
    if layer is not None:
        if layer not in adata.layers:
            raise DataError(f"{path}: no layer {layer!r}; layers present: {', '.join(adata.layers.keys()) or 'none'}")
        X = adata.layers[layer]
    else:
        X = adata.X
    X = sp.csr_matrix(X, dtype=np.float32)
    if X.nnz and not np.all(np.isfinite(X.data)):
        raise DataError(f"{path}: expression holds NaN or infinite values")
    counts = looks_like_counts(X)
    do_norm = normalize == "counts" or (normalize == "auto" and counts)
    if do_norm:
        log.info("%s: raw counts detected; normalising to %g per cell and log1p", path, TARGET_SUM)
        X = normalize_counts(X)
    else:
        log.info("%s: using expression as is (%s)", path, "normalize=none" if normalize == "none" else "not integer counts")
    keys = pd.DataFrame({"c": condition, "l": cell_line, "b": batch})
    max_rows = int(keys.groupby(["c", "l", "b"], observed=True).size().max())
    detected = max_rows == 1
    if pseudobulk is None:
        pseudobulk = detected
    if pseudobulk:
        log.info("%s: pseudobulk input (one row per condition x cell line x batch)", path)
    data = PerturbData(X, adata.var_names.astype(str).tolist(), condition, cell_line, batch, source=path,
                       pseudobulk=bool(pseudobulk), normalized_here=do_norm)
    check_controls_per_batch(data)
    log.info("%s: %d rows x %d genes, %d perturbations, %d cell line(s), %d batch(es)", path, data.n_obs,
             data.n_genes, len(data.perturbations()), len(np.unique(cell_line)), len(np.unique(batch)))
    return data


def check_controls_per_batch(data: PerturbData) -> None:
    """Every (cell line, batch) with perturbed rows must have control rows (batch-matched references)."""
    frame = pd.DataFrame({"l": data.cell_line, "b": data.batch, "ctrl": data.is_control})
    has = frame.groupby(["l", "b"], observed=True)["ctrl"].any()
    missing = has[~has]
    if len(missing):
        line, batch = missing.index[0]
        where = f"batch {batch!r}" + (f" of cell line {line!r}" if line != "all" else "")
        raise DataError(
            f"{data.source}: no control cells in {where} ({len(missing)} batch(es) without controls); "
            f"batch-matched control means need controls in every batch"
        )


def graph_overlap(data: PerturbData, graph_nodes: Iterable[str], graph_name: str = "graph") -> dict[str, int]:
    """Count perturbed genes in / not in the graph; raise :class:`DataError` when none is.

    Genes missing from the graph still get an (isolated, learnable) encoder row; they are counted in the log.
    """
    nodes = set(graph_nodes)
    genes = data.perturbed_genes()
    present = [g for g in genes if g in nodes]
    missing = [g for g in genes if g not in nodes]
    if genes and not present:
        sample = sorted(nodes)[:5]
        raise DataError(
            f"{graph_name} has no overlap with the data's perturbed genes: none of {len(genes)} genes "
            f"(e.g. {', '.join(genes[:5])}) is a node; graph nodes look like {', '.join(sample) or '(no nodes)'}"
        )
    if missing:
        log.warning("%d of %d perturbed genes are not in %s (isolated encoder rows): %s", len(missing), len(genes),
                    graph_name, ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""))
    measured = len(set(data.genes) & nodes)
    log.info("%s: %d/%d perturbed genes and %d/%d measured genes are graph nodes", graph_name, len(present),
             len(genes), measured, data.n_genes)
    return {"perturbed_genes": len(genes), "perturbed_in_graph": len(present), "perturbed_missing": len(missing),
            "measured_in_graph": measured}
