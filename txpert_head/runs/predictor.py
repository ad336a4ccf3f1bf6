"""Predict with a trained run without its training data: :class:`Predictor`.

A run folder written by ``txpert train`` holds, beside ``config.json`` and ``checkpoints/best.pt``, what
prediction needs (the *predictor bundle*, written at the end of training by :func:`write_bundle`)::

    <run>/predictor/manifest.json        genes (columns), encoder vocabulary and genes, trained genes, cell lines,
                                         (cell line, batch) groups, normalisation note, the whole graph's
                                         absolute path, sha256 and size, format version
    <run>/predictor/arrays.npz           control means per (cell line, batch) (G x groups, float32), the
                                         control cells (CSR, float32) and their group, the effect codes, the
                                         whole graph's node names
    <run>/predictor/encoder_graph.kg.npz the graph part the encoder was built on (what it reads for the data's
                                         perturbed genes, or the whole graph with ``graph_hops = null``)
    <run>/predictor/symbols.json         (runs trained with ``gene_info``) the previous symbols / aliases that map
                                         to the model's genes, so requests are mapped without the gene_info table

Graph: the encoder's part of the graph is *copied* (it is what every prediction of the data's perturbed genes
reads; small), the whole graph is *referenced* by its absolute path and sha256 (``config.json``:
``graph_resolved``, ``graph_sha256``). Only a request for another graph gene needs the whole
graph (the model is then rebuilt on it, :meth:`txpert_head.training.trainer.Trainer.whole_graph_model`): the file at the
recorded path is read, and refused with :class:`RunFolderError` when it is missing or its sha256 differs. The
run folder can move and be used from any working directory.

Predictions equal those of the old path (rebuilding the :class:`~txpert_head.training.trainer.Trainer` from the training
data, ``Trainer.predict_means``) to float precision: the same model, the same control inputs and the same
seeded draws (the prediction loop *is* the trainer's, run on this object). Run folders without a bundle (older
versions) are loaded through that old path (slow: it reads the training data).

Deltas are against **batch-matched** controls, as training and the metrics measure them
(:mod:`txpert_head.data.profiles`): for a perturbation p of cell line l the inputs are control cells of l (at most
``eval_cells``, a seeded draw) and each predicted cell is the model's output for one of them; the predicted mean
is their mean and its reference is the mean of the same inputs' batch control means -- the weighting
``true_profiles`` gives a condition's cells. ``per_batch=True`` gives one row per (perturbation, batch)
instead: the inputs are the batch's control cells and the reference its control mean.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from txpert_head.data.backed import read_rows
from txpert_head.data.controls import ControlIndex
from txpert_head.data.perturb_data import CONTROL, DataError, canonical_conditions, constituents
from txpert_head.training.prediction import ModelPredictions

log = logging.getLogger(__name__)

__all__ = ["BUNDLE", "Prediction", "Predictor", "RunFolderError", "file_sha256", "write_bundle"]

#: folder of a run that holds the predictor bundle
BUNDLE = "predictor"
FORMAT_VERSION = 1
#: files of the bundle (relative to the run folder)
BUNDLE_FILES = (f"{BUNDLE}/manifest.json", f"{BUNDLE}/arrays.npz", f"{BUNDLE}/encoder_graph.kg.npz",
                f"{BUNDLE}/symbols.json")


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class RunFolderError(ValueError):
    """A run folder that cannot be used: another ``txpert train`` holds it, it holds another run, it cannot be
    written, or it is incomplete or damaged (the message says which, and what was left). Also
    ``txpert_head.runs.folder.RunFolderError``."""


def _run_error(message: str) -> RunFolderError:
    return RunFolderError(message)


def _read_json(path: Path) -> Any:
    """A JSON file of a run folder; a missing or damaged one is a :class:`RunFolderError` naming it."""
    if not path.exists():
        raise RunFolderError(f"{path}: missing; the run folder is incomplete (train it again)")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunFolderError(f"{path}: cannot be read ({err}); the run folder is damaged") from None


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """A run folder's ``config.json``: FileNotFoundError when ``run_dir`` is not a run folder,
    :class:`RunFolderError` when the file is damaged or holds no data and training options."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        what = "no such folder" if not run_dir.exists() else "no config.json"
        raise FileNotFoundError(f"{run_dir}: not a run folder ({what}); train one with txpert_head.training.trainer or "
                                "`txpert train`")
    config = _read_json(cfg_path)
    if not isinstance(config, dict) or "train" not in config or not isinstance(config.get("data"), dict):
        raise RunFolderError(f"{cfg_path}: not a txpert run configuration (no data or train options)")
    return config


def best_weights(run_dir: str | Path) -> Path:
    """``<run_dir>/checkpoints/best.pt``; FileNotFoundError when the run did not finish an epoch."""
    best = Path(run_dir) / "checkpoints" / "best.pt"
    if not best.exists():
        raise FileNotFoundError(f"{best}: no trained weights; the run did not finish an epoch")
    return best


def check_graph_file(path: str | Path, sha256: str | None, run_dir: str | Path) -> Path:
    """The whole graph of a run at its recorded absolute ``path``; :class:`RunFolderError` when it is missing or
    (``sha256`` recorded) its content differs from the file the run was trained on."""
    path = Path(path)
    if not path.exists():
        raise _run_error(f"{run_dir}: the run's graph file {path} is missing (moved or deleted); it is needed to "
                         "build the encoder on the whole graph. Put the file back at that path")
    if sha256 is not None:
        now = file_sha256(path)
        if now != sha256:
            raise _run_error(f"{run_dir}: the graph file {path} has changed since training (sha256 {now[:12]}..., "
                             f"the run was trained on {sha256[:12]}...); restore the original file")
    return path


# ---------------------------------------------------------------------------------------------- writing
def _reduced_symbols(gene_info: str | Path, vocabulary: Sequence[str]) -> dict[str, Any]:
    """The part of a gene_info symbol map that can map a name into ``vocabulary`` (and the ambiguous synonyms,
    to report them): :func:`kgbuild.symbols.match_names` gives the same mapping with it as with the whole map."""
    from kgbuild.symbols import SymbolMap, resolve_gene_info

    smap = SymbolMap.from_gene_info(resolve_gene_info(gene_info))
    vocab = set(vocabulary)
    by_current: dict[str, set[str]] = {}
    for v in vocab:
        cur = smap.lookup(v)
        if cur is not None:
            by_current.setdefault(cur, set()).add(v)
    targets = {c for c, owners in by_current.items() if c in vocab or len(owners) == 1} | (vocab & smap.current)
    return {"source": str(gene_info), "current": sorted(smap.current & targets),
            "alias": {a: c for a, c in sorted(smap.alias.items()) if c in targets},
            "ambiguous": {a: s for a, s in sorted(smap.ambiguous.items()) if a not in smap.current}}


def _encoding_arrays(model) -> dict[str, np.ndarray]:
    """The trained encoder's output (``model.encode()`` in eval mode): ``encoding_Z`` and, with effect inputs,
    ``encoding_prior`` / ``encoding_visible``. Prediction reuses it instead of running the GNN again."""
    import torch

    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            enc = model.encode()
    finally:
        model.train(training)
    out = {"encoding_Z": enc.Z.detach().cpu().numpy()}
    if enc.prior is not None:
        out["encoding_prior"] = enc.prior.detach().cpu().numpy()
    if enc.visible is not None:
        out["encoding_visible"] = enc.visible.detach().cpu().numpy()
    return out


def _use_cached_encoding(model, arrays: dict[str, np.ndarray]) -> None:
    """Make ``model.encode()`` (without ``hide``) return the stored encoder output instead of running the GNN."""
    import torch
    from gnn.encoder import EncoderOutput

    device = next(model.parameters()).device
    get = lambda k: None if k not in arrays else torch.from_numpy(arrays[k]).to(device)  # noqa: E731
    cached = EncoderOutput(get("encoding_Z"), get("encoding_prior"), get("encoding_visible"))
    compute = model.encode

    def encode(hide=None):
        return cached if hide is None else compute(hide)

    model.encode = encode


def write_bundle(trainer, config: dict[str, Any], run_dir: str | Path) -> Path:
    """Write ``<run_dir>/predictor/`` (see the module docstring) from a trainer holding the run's best weights
    (only the weights' file, ``checkpoints/best.pt``, is read back by :meth:`Predictor.load`). Returns the folder."""
    from kgbuild.atomic import atomic_write
    from txpert_head.runs.folder import write_json

    run_dir = Path(run_dir)
    folder = run_dir / BUNDLE
    folder.mkdir(parents=True, exist_ok=True)
    data, controls = trainer.data, trainer.controls
    enc_graph = trainer.encoder_graph
    enc_graph.save(folder / "encoder_graph.kg.npz")
    ctrl_rows = np.flatnonzero(data.is_control)
    Xc = read_rows(data.X, ctrl_rows, data.memory_budget)  # in row blocks: a genome-wide screen's controls are 200k cells
    arrays: dict[str, np.ndarray] = {
        "control_means": np.asarray(controls.means, dtype=np.float32),
        "control_group": controls.group_of_row[ctrl_rows].astype(np.int64),
        # no copies when the dtypes already fit: on a genome-wide screen the control cells are a gigabyte
        "control_data": Xc.data.astype(np.float32, copy=False),
        "control_indices": Xc.indices.astype(np.int32 if Xc.shape[1] < 2**31 else np.int64, copy=False),
        "control_indptr": Xc.indptr.astype(np.int64), "control_shape": np.asarray(Xc.shape, dtype=np.int64),
        "graph_nodes": np.asarray(trainer.graph.nodes, dtype=str),
    }
    arrays.update(_encoding_arrays(trainer.model))
    if trainer.effects is not None:
        e = trainer.effects
        arrays.update(effect_genes=np.asarray(e.genes, dtype=str), effect_codes=e.codes,
                      effect_mean_code=e.mean_code, effect_basis=e.basis)

    def _save(fh):
        np.savez_compressed(fh, **arrays)

    atomic_write(folder / "arrays.npz", _save)
    vocab = [str(g) for g in trainer.model.encoder.vocab]
    gene_info = config.get("data", {}).get("gene_info")
    if gene_info is not None:
        write_json(_reduced_symbols(gene_info, sorted(set(vocab) | set(trainer.graph.nodes.tolist()))),
                   folder / "symbols.json")
    norm = data.notes.get("normalization", {})
    manifest = {
        "format": "txpert-predictor", "format_version": FORMAT_VERSION,
        "genes": list(data.genes), "encoder_genes": list(trainer.encoder_genes), "encoder_vocab": vocab,
        "known_genes": list(trainer.known_genes),
        "groups": [list(g) for g in controls.groups], "cell_lines": sorted(controls.by_line),
        "control_cells": {line: int(len(rows)) for line, rows in controls.by_line.items()},
        "pseudobulk": bool(data.pseudobulk),
        "normalization": dict(norm),
        "graph": {"encoder_graph": "encoder_graph.kg.npz", "encoder_nodes": int(enc_graph.num_nodes),
                  "encoder_edges": int(enc_graph.num_edges), "typed": config.get("graph"),
                  "resolved": config.get("graph_resolved"), "sha256": config.get("graph_sha256"),
                  "nodes": int(trainer.graph.num_nodes), "edges": int(trainer.graph.num_edges)},
        "gene_info": gene_info, "symbols": "symbols.json" if gene_info is not None else None,
        "weights": "checkpoints/best.pt",
    }
    write_json(manifest, folder / "manifest.json")  # last: a bundle without its manifest is not used
    return folder


# ---------------------------------------------------------------------------------------------- reading
@dataclass
class DataInfo:
    """What prediction needs of the training data: the genes (columns), normalisation notes."""

    genes: list[str]
    notes: dict = field(default_factory=dict)
    pseudobulk: bool = False

    @property
    def n_genes(self) -> int:
        return len(self.genes)

    @property
    def gene_index(self) -> dict[str, int]:
        return {g: i for i, g in enumerate(self.genes)}


@dataclass
class Prediction:
    """Predicted mean expression of perturbations and their changes against batch-matched controls.

    ``obs``: one row per perturbation (``per_batch``: per perturbation and batch) with ``perturbation`` (the
    model's label), ``requested`` (as asked), ``cell_line``, ``batch`` (``per_batch`` only) and ``known``;
    ``mean`` (P, G) predicted mean log-expression; ``reference`` (P, G) the batch-matched control mean of the
    inputs; ``delta = mean - reference``; ``genes`` the columns."""

    obs: pd.DataFrame
    mean: np.ndarray
    reference: np.ndarray
    genes: list[str]
    uns: dict[str, Any] = field(default_factory=dict)

    @property
    def delta(self) -> np.ndarray:
        return self.mean - self.reference

    def to_anndata(self):
        """AnnData: X = ``mean`` (float32), ``layers['delta']``, ``layers['control_mean']`` (the reference), obs,
        uns (``normalization``, ``log1p`` when the run normalised counts, ``unknown_genes``, ...)."""
        import anndata

        adata = anndata.AnnData(self.mean.astype(np.float32), obs=self.obs.copy(),
                                var=pd.DataFrame(index=pd.Index(self.genes)))
        adata.layers["delta"] = self.delta.astype(np.float32)
        adata.layers["control_mean"] = self.reference.astype(np.float32)
        for k, v in self.uns.items():
            adata.uns[k] = v
        return adata

    def write(self, path: str | Path) -> Path:
        """Write :meth:`to_anndata` as ``.h5ad`` (atomically)."""
        from kgbuild.atomic import atomic_path
        from kgbuild.outputs import output_errors

        path = Path(path)
        adata = self.to_anndata()
        with output_errors(path), atomic_path(path) as tmp:
            adata.write_h5ad(tmp)
        return path

    def to_frame(self, which: str = "delta") -> pd.DataFrame:
        """``mean``, ``delta`` or ``reference`` as a DataFrame (rows: obs index, columns: genes)."""
        values = {"mean": self.mean, "delta": self.delta, "reference": self.reference}[which]
        return pd.DataFrame(values, index=self.obs.index, columns=self.genes)


class Predictor(ModelPredictions):
    """A trained run, ready to predict (see the module docstring). Use :meth:`load`.

    Attributes read by the trainer's prediction loop (:class:`~txpert_head.training.trainer.Trainer` methods run on this
    object): ``cfg``, ``model`` (built on first use), ``device``, ``controls``, ``rows`` (empty), ``data``
    (:class:`DataInfo`), ``encoder_index``, ``encoder_genes``, ``effects``, ``known_genes``, ``graph`` (the
    whole graph, read on first use)."""

    def __init__(self, run_dir: Path, config: dict[str, Any]):
        self.run_dir = Path(run_dir)
        self.config = config
        self.rows: dict = {}
        self._model = None
        self._graph = None
        self._symbols_map = None
        self._cfg = None
        self._trainer = None
        self._device_name = None
        self.manifest = None

    # -------------------------------------------------------------------------------- loading
    @classmethod
    def load(cls, run_dir: str | Path, device: str | None = None, cached_encoding: bool = True) -> "Predictor":
        """Load a finished run (its ``predictor/`` bundle; no training data is read). The model is built, and
        the weights read, on the first prediction. ``device``: default the run's (``auto``: CUDA if available).
        ``cached_encoding``: reuse the encoder output stored at the end of training (the GNN is not run again
        for genes of the encoder's graph; False recomputes it -- the same values).

        A run folder of an earlier version (no bundle) is loaded through :func:`txpert_head.runs.folder.load_run`,
        which reads the training data (slow) -- predictions are the same."""
        run_dir = Path(run_dir)
        self = cls(run_dir, read_run_config(run_dir))
        self.cached_encoding = cached_encoding
        self._device_name = device
        best_weights(run_dir)
        manifest_path = run_dir / BUNDLE / "manifest.json"
        if not manifest_path.exists():
            log.warning("%s: no predictor bundle (a run folder of an earlier version): loading the run with its "
                        "training data", run_dir)
            return self._from_trainer()
        manifest = _read_json(manifest_path)
        if manifest.get("format") != "txpert-predictor" or int(manifest.get("format_version", 0)) > FORMAT_VERSION:
            raise RunFolderError(f"{manifest_path}: not a predictor bundle this version can read")
        self.manifest = manifest
        try:
            with np.load(run_dir / BUNDLE / "arrays.npz", allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as err:
            raise RunFolderError(f"{run_dir / BUNDLE / 'arrays.npz'}: cannot be read ({err}); the run folder is "
                                 "damaged") from None
        import scipy.sparse as sp

        Xc = sp.csr_matrix((arrays["control_data"], arrays["control_indices"], arrays["control_indptr"]),
                           shape=tuple(int(s) for s in arrays["control_shape"]))
        # the control rows only, renumbered in order: every seeded draw of the trainer picks the same cells
        self.controls = ControlIndex.from_groups([tuple(g) for g in manifest["groups"]], arrays["control_group"],
                                                 np.ones(Xc.shape[0], dtype=bool), arrays["control_means"], Xc)
        self.data = DataInfo(list(manifest["genes"]), {"normalization": manifest.get("normalization", {})},
                             bool(manifest.get("pseudobulk", False)))
        self.encoder_genes = list(manifest["encoder_genes"])
        self.known_genes = list(manifest["known_genes"])
        self.encoder_index = {g: i for i, g in enumerate(manifest["encoder_vocab"])}
        self.graph_nodes = arrays["graph_nodes"].tolist()
        self._arrays = {k: v for k, v in arrays.items() if k.startswith("encoding_")}
        self.effects = None
        if "effect_codes" in arrays:
            from txpert_head.model.effects import EffectCodes

            self.effects = EffectCodes(arrays["effect_genes"].tolist(), arrays["effect_codes"],
                                       arrays["effect_mean_code"], arrays["effect_basis"])
        return self

    def _from_trainer(self) -> "Predictor":
        """The old path: rebuild the trainer from the training data (run folders without a bundle)."""
        from txpert_head.runs.folder import load_run

        trainer, _ = load_run(self.run_dir)
        if self._device_name is not None:
            from txpert_head.training.trainer import resolve_device

            trainer.cfg.device = self._device_name
            trainer.device = resolve_device(self._device_name)
            trainer.model.to(trainer.device)
        self._cfg = trainer.cfg
        self._device = trainer.device
        self._trainer = trainer  # the old path's trainer (run folders without a bundle)
        self.manifest = None
        self.controls, self.data = trainer.controls, trainer.data
        self.encoder_genes, self.known_genes = trainer.encoder_genes, trainer.known_genes
        self.encoder_index = dict(trainer.encoder_index)
        self.graph_nodes = trainer.graph.nodes.tolist()
        self.effects = trainer.effects
        self._graph = trainer.graph
        self._model = trainer.model
        return self

    @property
    def cfg(self):
        """The run's training options (:class:`~txpert_head.training.config.TrainConfig`; imports torch on first use)."""
        if self._cfg is None:
            from txpert_head.training.config import LEGACY_OPTIONS, TrainConfig

            self._cfg = TrainConfig.from_dict({**LEGACY_OPTIONS, **self.config["train"]})
            if self._device_name is not None:
                self._cfg.device = self._device_name
        return self._cfg

    def _resolve_device(self):
        from txpert_head.training.trainer import resolve_device

        return resolve_device(self.cfg.device)

    @property
    def device(self):
        if not hasattr(self, "_device"):
            self._device = self._resolve_device()
        return self._device

    @property
    def model(self):
        """The trained model (built on the encoder's graph, best weights), built on first use."""
        if self._model is None:
            from kgbuild.graph import MultiGraph
            from txpert_head.training.prediction import build_model
            from txpert_head.training.checkpoints import load_checkpoint, load_weights

            graph = MultiGraph.load(self.run_dir / BUNDLE / self.manifest["graph"]["encoder_graph"])
            model = build_model(graph, self.data.genes, self.encoder_genes, self.cfg, self.effects).to(self.device)
            if self.cfg.unknown_token:
                model.encoder.set_known(self.known_genes)
            best = best_weights(self.run_dir)
            load_weights(model, load_checkpoint(best, self.device)["model"], best)
            model.eval()
            if self.cached_encoding and "encoding_Z" in self._arrays:
                _use_cached_encoding(model, self._arrays)
            if [str(g) for g in model.encoder.vocab] != list(self.encoder_index):
                raise _run_error(f"{self.run_dir}: the encoder rebuilt from the predictor bundle does not match the "
                                 "trained one; the run folder is damaged")
            self._model = model
        return self._model

    @model.setter
    def model(self, value) -> None:
        self._model = value
        self.encoder_index = {g: i for i, g in enumerate(value.encoder.vocab)}

    @property
    def graph(self):
        """The whole graph the run was trained with (read on first use from its recorded absolute path, after
        checking its sha256)."""
        if self._graph is None:
            from kgbuild.graph import MultiGraph

            g = self.manifest["graph"]
            if not g.get("resolved"):
                raise _run_error(f"{self.run_dir}: the run recorded no absolute path of its graph")
            self._graph = MultiGraph.load(check_graph_file(g["resolved"], g.get("sha256"), self.run_dir))
        return self._graph

    # -------------------------------------------------------------------------------- what it knows
    @property
    def genes(self) -> list[str]:
        """The measured genes (columns of every prediction)."""
        return list(self.data.genes)

    @property
    def perturbed_genes(self) -> list[str]:
        """Genes perturbed in the run's data (training, validation and test), sorted."""
        return list(self.encoder_genes)

    @property
    def trained_genes(self) -> list[str]:
        """Genes perturbed in the training split (their changes were seen in training), sorted."""
        return list(self.known_genes)

    @property
    def cell_lines(self) -> list[str]:
        return sorted(self.controls.by_line)

    @property
    def batches(self) -> dict[str, list[str]]:
        """``{cell line: [batch, ...]}``: the (cell line, batch) groups with control means."""
        out: dict[str, list[str]] = {}
        for line, batch in self.controls.groups:
            out.setdefault(line, []).append(batch)
        return out

    @property
    def control_means(self) -> pd.DataFrame:
        """Control mean log-expression per (cell line, batch) (rows) and gene (columns)."""
        index = pd.MultiIndex.from_tuples([tuple(g) for g in self.controls.groups], names=["cell_line", "batch"])
        return pd.DataFrame(self.controls.means, index=index, columns=self.data.genes)

    def knows(self, gene: str) -> bool:
        """True when ``gene`` has an encoder row: a node of the run's graph or a perturbed gene of its data."""
        return gene in self.encoder_index or gene in self.graph_node_set

    @property
    def graph_node_set(self) -> set[str]:
        if not hasattr(self, "_node_set"):
            self._node_set = set(self.graph_nodes)
        return self._node_set

    @property
    def normalization(self) -> dict[str, Any]:
        """How the expression was normalised (``uns['normalization']`` of written predictions)."""
        from txpert_head.runs.cell_output import normalization_note

        return normalization_note(self.data)

    # -------------------------------------------------------------------------------- prediction
    def check_cell_line(self, cell_line: str | None) -> str:
        """The cell line to predict in (the only one when ``cell_line`` is None); ValueError otherwise."""
        lines = self.cell_lines
        if cell_line is None:
            if len(lines) > 1:
                raise ValueError(f"the run's data has several cell lines ({', '.join(lines)}); choose one with the "
                                 "cell_line parameter")
            return lines[0]
        if cell_line not in lines:
            raise ValueError(f"unknown cell line {cell_line!r}; the run's data has {', '.join(lines)}")
        return cell_line

    def _symbols(self, gene_info: str | Path | None):
        """The symbol map for requests: the run's stored one by default, or the gene_info table given."""
        from kgbuild.symbols import SymbolError, SymbolMap, resolve_gene_info

        if gene_info is None and self.manifest is not None and self.manifest.get("symbols"):
            if self._symbols_map is None:
                s = json.loads((self.run_dir / BUNDLE / self.manifest["symbols"]).read_text())
                self._symbols_map = SymbolMap(set(s["current"]), dict(s["alias"]), dict(s["ambiguous"]), s["source"])
            return self._symbols_map, self.manifest.get("gene_info")
        source = gene_info if gene_info is not None else self.config["data"].get("gene_info")
        if source is None:
            return None, None
        try:
            return SymbolMap.from_gene_info(resolve_gene_info(source)), source
        except SymbolError as err:
            raise DataError(str(err)) from None

    def resolve(self, perturbations: Sequence[str], control: Sequence[str] = (CONTROL,),
                gene_info: str | Path | None = None, allow_unknown: bool = False):
        """Check and canonicalise requested labels before anything heavy is read: ``(canonical, requested,
        unknown genes, symbols report or None)``. Labels are genes or ``A+B`` combinations (``A+ctrl`` is A);
        with a symbol map (``gene_info``, default the run's) previous symbols / aliases are mapped to the model's
        genes. Genes that are neither graph nodes nor perturbed genes of the run raise :class:`DataError` unless
        ``allow_unknown``."""
        from kgbuild.symbols import match_names

        if isinstance(perturbations, str):
            perturbations = [perturbations]
        if not len(perturbations):
            raise ValueError("no perturbations to predict (perturbations is empty)")
        canon = [str(p) for p in canonical_conditions(list(perturbations), list(control), where="perturbations: ")]
        requested = list(canon)
        smap, source = self._symbols(gene_info)
        report = None
        if smap is not None:
            vocab = set(self.encoder_index) | self.graph_node_set
            match = match_names([g for p in canon for g in constituents(p)], vocab, smap)
            log.warning("gene symbols (requested genes vs the run's model, %s): %s", Path(str(source)).name,
                        match.describe())
            canon = ["+".join(sorted(match.mapping.get(g, g) for g in constituents(p))) if p != CONTROL else p
                     for p in canon]
            report = {**match.as_dict(), "gene_info": str(source)}
        unknown = sorted({g for p in canon for g in constituents(p) if not self.knows(g)})
        if unknown:
            what = (f"gene(s) {', '.join(unknown)} are neither nodes of the run's graph "
                    f"({self.config.get('graph')}) nor perturbed in its data: the model knows nothing about them "
                    "and would predict the change of a perturbation without them")
            if not allow_unknown:
                raise DataError(f"{what}. Check the symbols, or pass allow_unknown=True to predict them anyway "
                                "(their rows are marked known = False)")
            log.warning("%s; predicted anyway (allow_unknown), marked known = False", what)
        return canon, requested, unknown, report

    def predict(self, perturbations: Sequence[str] | str, cell_line: str | None = None, *, per_batch: bool = False,
                allow_unknown: bool = False, gene_info: str | Path | None = None,
                control: Sequence[str] = (CONTROL,), seed: int | None = None) -> Prediction:
        """Predicted mean expression and change of each perturbation (any genes of the graph or the run's data,
        seen in training or not; ``A+B`` for combinations) in ``cell_line`` (default: the data's only line).

        Default: one row per perturbation, predicted from the line's control cells (at most ``eval_cells``, a
        draw seeded by ``seed``, default the run's), its reference the mean of those inputs' batch control means
        (batch-matched, weighted by the inputs per batch, as evaluation weights a condition's cells). With
        ``per_batch``: one row per perturbation and batch (inputs and reference of that batch only).

        Identical to ``Trainer.predict_means(conditions, rows_for={})`` of the old path for the default rows.
        Labels, cell line and genes are checked before the model is built (:meth:`resolve`)."""
        cell_line = self.check_cell_line(cell_line)
        canon, requested, unknown, symbols = self.resolve(perturbations, control, gene_info, allow_unknown)
        self.cover_genes([g for p in canon for g in constituents(p)])
        known = [all(g in self.encoder_index for g in constituents(p)) for p in canon]
        if per_batch:
            batches = [(g, b) for g, (l, b) in enumerate(self.controls.groups) if l == cell_line
                       and len(self.controls.by_group[g])]
            means, refs, rows = [], [], []
            for g, batch in batches:
                conds = [(cell_line, p) for p in canon]
                m, r = self._predict(conds, {c: self.controls.by_group[g] for c in conds}, seed)
                means.append(m)
                refs.append(r)
                rows += [(p, q, batch, k) for p, q, k in zip(canon, requested, known)]
            # batch-major as computed; reorder perturbation-major (all batches of the first perturbation first)
            perm = np.arange(len(rows)).reshape(len(batches), len(canon)).T.ravel()
            mean, ref = np.vstack(means)[perm], np.vstack(refs)[perm]
            rows = [rows[i] for i in perm]
            obs = pd.DataFrame({"perturbation": [r[0] for r in rows], "requested": [r[1] for r in rows],
                                "cell_line": cell_line, "batch": [r[2] for r in rows], "known": [r[3] for r in rows]})
        else:
            mean, ref = self._predict([(cell_line, p) for p in canon], {}, seed)
            obs = pd.DataFrame({"perturbation": canon, "requested": requested, "cell_line": cell_line,
                                "known": known})
        obs.index = [f"p{i}" for i in range(len(obs))]
        uns: dict[str, Any] = {"txpert_run": str(self.run_dir.resolve()), "unknown_genes": list(unknown),
                               "normalization": self.normalization,
                               "reference": "per_batch" if per_batch else "batch-matched control mean of the inputs"}
        if self.normalization["normalized_here"]:
            uns["log1p"] = {}  # scanpy's marker of log1p data (no "base": natural log)
        if symbols is not None:
            uns["gene_symbols"] = {"mapped": symbols["mapped"], "ambiguous": sorted(symbols["ambiguous"]),
                                   "unknown": symbols["unknown"], "gene_info": symbols["gene_info"]}
        return Prediction(obs, mean, ref, list(self.data.genes), uns)

    def _predict(self, conds, rows_for, seed) -> tuple[np.ndarray, np.ndarray]:
        """Predicted means (as ``Trainer.predict_means``) and the batch-matched references of their inputs."""
        mean = np.zeros((len(conds), self.data.n_genes), dtype=np.float64)
        ref = np.zeros_like(mean)
        for k, (idx, m) in enumerate(self.iter_predicted_means(conds, rows_for, seed)):
            mean[k] = m
            ref[k] = self.controls.means[self.controls.group_of_row[np.asarray(idx)]].astype(np.float64).mean(0)
        return mean, ref

    def sample_cells(self, perturbations: Sequence[str] | str, n_cells: int, cell_line: str | None = None, *,
                     allow_unknown: bool = False, control: Sequence[str] = (CONTROL,), seed: int = 0):
        """``n_cells`` predicted cells per perturbation (see :func:`txpert_head.runs.cell_output.predict_cells_run`):
        ``(labels, cells, known)`` with ``cells`` a list of (n_cells, G) float64 arrays; the inputs are
        ``n_cells`` control cells of the line drawn with ``seed`` (:meth:`ModelPredictions.predict_cells`)."""
        if n_cells < 1:
            raise ValueError(f"n_cells must be at least 1, got {n_cells}")
        cell_line = self.check_cell_line(cell_line)
        canon = [str(p) for p in canonical_conditions(list([perturbations] if isinstance(perturbations, str)
                                                             else perturbations), list(control),
                                                        where="perturbations: ")]
        if CONTROL in canon:
            raise ValueError("predicted cells come with the control cells; do not request the control as a "
                             "perturbation")
        canon = list(dict.fromkeys(canon))  # a repeated request would merge two groups under one label
        unknown = sorted({g for p in canon for g in constituents(p) if not self.knows(g)})
        if unknown and not allow_unknown:
            raise DataError(f"gene(s) {', '.join(unknown)} are neither nodes of the run's graph "
                            f"({self.config.get('graph')}) nor perturbed in its data. Check the symbols, or pass "
                            "allow_unknown=True")
        self.cover_genes([g for p in canon for g in constituents(p)])
        pool = self.controls.by_line[cell_line]
        rng = np.random.default_rng([seed, 104_729])
        inputs = np.sort(rng.choice(pool, n_cells, replace=len(pool) < n_cells))
        conds = [(cell_line, p) for p in canon]
        eval_cells = self.cfg.eval_cells
        self.cfg.eval_cells = max(eval_cells, n_cells)  # no subsampling of the inputs
        try:
            cells = self.predict_cells(conds, rows_for={c: inputs for c in conds}, seed=seed)
        finally:
            self.cfg.eval_cells = eval_cells
        known = [all(g in self.encoder_index for g in constituents(p)) for p in canon]
        return canon, cells, known

    def control_cells(self, cell_line: str | None = None, max_cells: int | None = None, seed: int = 0) -> np.ndarray:
        """Real control cells of ``cell_line`` (dense (n, G)), at most ``max_cells`` by the VCC block's seeded
        draw (:func:`txpert_head.runs.cell_output.control_rows`)."""
        from txpert_head.runs.cell_output import control_rows
        from txpert_head.evaluation.vcc import DEFAULT_MAX_CONTROL_CELLS

        cell_line = self.check_cell_line(cell_line)
        rows = control_rows(self.controls, cell_line, DEFAULT_MAX_CONTROL_CELLS if max_cells is None else max_cells,
                            seed)
        return np.asarray(self.controls.X[rows].toarray())

    def __repr__(self) -> str:
        kind = "bundle" if self.manifest is not None else "rebuilt from the training data"
        return (f"Predictor({str(self.run_dir)!r}: {len(self.data.genes)} genes, cell lines "
                f"{', '.join(self.cell_lines)}, {len(self.encoder_index)} encoder genes; {kind})")
