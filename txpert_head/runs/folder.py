"""A run folder: what ``txpert train / evaluate / predict / baseline`` read and write.

::

    <run>/config.json              resolved options: data, graph, task, split seed, training config
    <run>/split.json               the conditions of each part
    <run>/metrics.json             test metrics of the model (+ subgroups), baselines, history, best epoch,
                                   and the VCC block ("vcc": DES / PDS / MAE / S, model and baselines)
    <run>/per_perturbation.csv     one row per test condition: model and baseline metrics (+ VCC columns)
    <run>/plots/*.png              learning curves, model vs general baseline, predicted vs true Δ
    <run>/checkpoints/{last,best}.pt
    <run>/predictor/...            what prediction needs without the training data (:mod:`txpert_head.runs.predictor`):
                                   control means and cells, genes, effect codes, the encoder's part of the graph
    <run>/.lock                    while ``txpert train`` runs in the folder (removed at the end)

config.json records the graph and data paths as given (``graph``, ``data.path``) and resolved to absolute paths
(``graph_resolved``, ``data_resolved``) with the graph file's ``graph_sha256``: a run folder is used the same
way from any working directory and after it moves; a graph file changed since training is refused.

A run folder changes only once a run is accepted: the data, options and output folder are checked, and
(when resuming) the checkpoint is read and its options compared, before anything is written. One
``txpert train`` at a time may use a folder (an exclusive ``flock`` of ``<run>/.lock``). A run that fails
before its first checkpoint removes what it wrote (a new folder disappears again).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no run-folder lock
    fcntl = None

import numpy as np
import pandas as pd

from kgbuild.atomic import atomic_path, atomic_write
from kgbuild.graph import MultiGraph
from kgbuild.outputs import output_errors
from txpert_head.training import distributed
from txpert_head.reporting import plots
from txpert_head.evaluation.baselines import run_baselines
from txpert_head.data.backed import DEFAULT_MEMORY_BUDGET, backed_mode, parse_bytes
from txpert_head.data.controls import ControlIndex
from txpert_head.data.perturb_data import (CONTROL, LEGACY_TARGET_SUM, TARGET_SUM, DataError, PerturbData, graph_overlap,
                              load_h5ad)
from txpert_head.metrics.paired import paired_comparison
from txpert_head.data.profiles import condition_name, true_profiles
from txpert_head.data.splits import Split, make_split
from txpert_head.training.config import LEGACY_OPTIONS, TrainConfig
from txpert_head.training.checkpoints import CheckpointError, load_checkpoint, load_weights
from txpert_head.training.trainer import Trainer
from txpert_head.evaluation.vcc import PSEUDOBULK_SKIPPED, VCC_BASELINES, baselines_vcc, memory_skip, model_vcc

log = logging.getLogger(__name__)


@dataclass
class DataOptions:
    """How to read the ``.h5ad`` (see :func:`txpert_head.data.perturb_data.load_h5ad`)."""

    path: str
    #: None: detected (:func:`txpert_head.data.perturb_data.detect_columns`); :meth:`load` records what was used, so the
    #: config.json of a run folder reloads the data the same way
    perturbation_col: str | None = None
    control: list[str] | None = None
    cell_line_col: str | None = None
    batch_col: str | None = None
    normalize: str = "auto"
    pseudobulk: bool | None = None
    #: counts per cell raw counts are scaled to before log1p (run folders without it used 4,000)
    target_sum: float = TARGET_SUM
    #: NCBI gene_info table mapping previous symbols / aliases of perturbed genes to the graph's symbols
    #: (``"fetch"``: the ``kgbuild fetch gene_info`` cache); None: names are matched as they are
    gene_info: str | None = None
    #: ``auto`` / ``yes`` / ``no``: keep the expression matrix on disk and read rows as needed (auto: when its
    #: in-memory size exceeds ``memory_budget``); the numbers are the same either way
    backed: str = "auto"
    #: bytes (or ``"8GB"``): the threshold of ``backed="auto"`` and the size of the row blocks of passes over the data
    memory_budget: int = DEFAULT_MEMORY_BUDGET

    def __post_init__(self) -> None:
        self.backed = backed_mode(self.backed)
        self.memory_budget = parse_bytes(self.memory_budget)

    def load(self) -> PerturbData:
        data = load_h5ad(self.path, self.perturbation_col, self.control or None, self.cell_line_col,
                         self.batch_col, self.normalize, self.pseudobulk, target_sum=self.target_sum,
                         backed=self.backed, memory_budget=self.memory_budget)
        used = data.notes.get("columns", {})  # detected values replace None / "auto"
        self.perturbation_col = used.get("perturbation_col", self.perturbation_col)
        self.control = list(used.get("control", self.control or []))
        self.cell_line_col = used.get("cell_line_col", self.cell_line_col)
        self.batch_col = used.get("batch_col", self.batch_col)
        return data

    @classmethod
    def from_config(cls, values: dict[str, Any]) -> "DataOptions":
        """The options recorded in a run's config.json; keys of earlier versions get their old values
        (no ``target_sum``: 4,000, what such runs were trained with)."""
        return cls(**{**LEGACY_DATA_OPTIONS, **values})


#: values of data options that config.json files of earlier versions lack (see :meth:`DataOptions.from_config`)
#: (earlier versions read the matrix whole; backed reading gives the same numbers, so they get today's defaults)
#: data options that choose how the file is read, not what is read: a run may resume with other values
READING_OPTIONS = ("backed", "memory_budget")
LEGACY_DATA_OPTIONS = {"target_sum": LEGACY_TARGET_SUM, "gene_info": None, "backed": "auto",
                       "memory_budget": DEFAULT_MEMORY_BUDGET}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Training options from a TOML or JSON file (flat keys of :class:`TrainConfig`, or a ``[train]`` table)."""
    path = Path(path)
    text = path.read_text()
    try:
        values = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'} ({err})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a table of options")
    return dict(values.get("train", values))


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (``--set``) as a dict of training options; each value is parsed as JSON when it
    can be (``true``, ``3e-4``, ``null``), else kept as the string. Raises ValueError for an item without ``=``."""
    values: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            values[k] = json.loads(v)
        except json.JSONDecodeError:
            values[k] = v
    return values


def write_json(obj: Any, path: Path) -> None:
    """Atomic JSON write (NaN written as null)."""
    text = json.dumps(_clean(obj), indent=2, sort_keys=False)
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def load_graph_for(data: PerturbData, graph_path: str | Path, gene_info: str | Path | None = None) -> MultiGraph:
    """The graph file; with ``gene_info`` the data's perturbed genes are first renamed to the graph's symbols
    where a previous symbol or alias names a graph node (:func:`map_gene_symbols`)."""
    graph = MultiGraph.load(graph_path)
    if gene_info is not None:
        map_gene_symbols(data, graph.nodes.tolist(), gene_info, f"perturbed genes vs {graph_path}")
    graph_overlap(data, graph.nodes.tolist(), str(graph_path))
    return graph


def map_gene_symbols(data: PerturbData, vocabulary: Sequence[str], gene_info: str | Path,
                     where: str = "perturbed genes vs graph") -> dict[str, Any]:
    """Rename the data's perturbed genes that are previous symbols or aliases of vocabulary genes (MARCH8 ->
    MARCHF8, from NCBI's gene_info; :mod:`kgbuild.symbols`), in place. Ambiguous aliases (shared by several
    genes) are not mapped; a name whose mapped symbol is perturbed in the data too is kept. Logs one line at the
    default verbosity ("gene symbols (...): 24 matched, 1 mapped (MARCH8 -> MARCHF8), 0 ambiguous, 0 unknown")
    and returns the counts (also in ``data.notes["symbols"]``)."""
    from kgbuild.symbols import SymbolError, SymbolMap, match_names, resolve_gene_info

    try:
        symbols = SymbolMap.from_gene_info(resolve_gene_info(gene_info))
    except SymbolError as err:
        raise DataError(str(err)) from None
    genes = data.perturbed_genes()
    match = match_names(genes, vocabulary, symbols)
    clash = {a: b for a, b in match.mapping.items() if b in set(genes)}
    for a, b in clash.items():
        log.warning("%s: %s is a previous symbol or alias of %s, but %s is perturbed in the data too: %s is kept "
                    "as it is", where, a, b, b, a)
        del match.mapping[a]
        match.unknown.append(a)
    data.rename_perturbed_genes(match.mapping)
    log.warning("gene symbols (%s, %s): %s", where, Path(str(gene_info)).name, match.describe())
    report = {**match.as_dict(), "gene_info": str(gene_info), "kept_as_is": sorted(clash)}
    data.notes["symbols"] = report
    return report


# RunFolderError: a run folder that cannot be used (busy, another run's, unwritable, damaged); defined in the light
# txpert_head.runs.predictor (prediction raises it without importing this module) and the same class here
from txpert_head.runs.predictor import RunFolderError, _read_json, best_weights, read_run_config  # noqa: E402


#: errno values of a write that failed for a reason outside the program (full disk, permissions, ...)
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO,
                 errno.ENOTDIR, errno.EISDIR}


class RunFolder:
    """The output folder of one ``txpert train`` (rank 0 only): created when missing, locked, and on a failure
    before the run's first checkpoint emptied of what this run wrote (and removed when this run created it).

    The lock is an exclusive, non-blocking ``fcntl.flock`` of ``<run>/.lock`` (it holds the owner's pid); the
    file is removed, while still locked, when the run ends. A process that locked a lock file removed meanwhile
    sees that the path no longer names its file and tries again, so two processes never both hold the folder.
    A process killed with ``kill -9`` leaves the file unlocked: the next run takes it over."""

    LOCK = ".lock"
    #: files a run writes (removed again when the run fails before its first checkpoint)
    WRITES = ("config.json", "split.json", "checkpoints/best.pt", "checkpoints/last.pt", "metrics.json",
              "per_perturbation.csv", "plots/learning_curves.png", "plots/pearson_vs_general.png",
              "plots/predicted_vs_true.png", "predictor/manifest.json", "predictor/arrays.npz",
              "predictor/encoder_graph.kg.npz", "predictor/symbols.json")

    def __init__(self, out: Path):
        self.out = out
        self.created: list[Path] = []  # folders this run made (deepest last)
        self.existed: set[str] = set()  # of WRITES, the files present before this run
        self._fd: int | None = None

    def acquire(self) -> None:
        """Create the folder, lock it; :class:`RunFolderError` when it cannot be written or is in use."""
        missing = []
        for p in [self.out.absolute(), *self.out.absolute().parents]:
            if p.exists():
                break
            missing.append(p)
        with output_errors(self.out):
            self.out.mkdir(parents=True, exist_ok=True)
            if not self.out.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(self.out))
        self.created = [p for p in reversed(missing) if p.is_dir()]
        try:
            self._lock()
        except BaseException:
            self._remove_created()
            raise
        self.existed = {name for name in self.WRITES if (self.out / name).exists()}

    def _lock(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        path = self.out / self.LOCK
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise RunFolderError(f"cannot write {self.out}: {err.strerror}; nothing was written") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise RunFolderError(f"cannot lock {path}: {err.strerror}") from None
                holder = os.read(fd, 64).decode("utf-8", "replace").strip()
                os.close(fd)
                who = f"pid {holder}" if holder.isdigit() else "another process"
                raise RunFolderError(
                    f"{self.out} is in use by another `txpert train` ({who}); wait for it to finish or choose "
                    "another output folder (nothing was written)") from None
            try:
                here, mine = os.stat(path), os.fstat(fd)
                same = (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous holder removed the file we locked: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    @property
    def checkpointed(self) -> bool:
        return (self.out / "checkpoints" / "last.pt").exists()

    def release(self, failed: bool) -> bool:
        """Unlock; after a failure before the first checkpoint, remove what this run wrote (and the folders
        it created). Returns True when it removed the run's files."""
        cleaned = False
        if failed and not self.checkpointed and "config.json" not in self.existed:
            for name in self.WRITES:
                if name not in self.existed:
                    try:
                        (self.out / name).unlink()
                    except FileNotFoundError:
                        pass
                    except OSError:
                        continue
            for sub in ("checkpoints", "plots", "predictor"):
                try:
                    (self.out / sub).rmdir()  # only when empty
                except OSError:
                    pass
            cleaned = True
        if self._fd is not None:
            try:
                os.unlink(self.out / self.LOCK)  # still locked: nobody else is inside
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None
        if cleaned:
            self._remove_created()
        return cleaned

    def _remove_created(self) -> None:
        for p in reversed(self.created):
            try:
                p.rmdir()  # only when empty
            except OSError:
                break


def _option_changes(old: Any, cfg: TrainConfig) -> str:
    """``hidden 16 -> 64, lr ...``: training options of a run's config.json that differ from ``cfg``."""
    if not isinstance(old, dict):
        return ""
    new = cfg.to_dict()
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    skip = ("progress", "device", "checkpoint_every")
    changes = [f"{k} {json.dumps(old.get(k, LEGACY_OPTIONS.get(k, defaults.get(k))))} -> {json.dumps(v)}"
               for k, v in new.items() if k not in skip
               and json.dumps(old.get(k, LEGACY_OPTIONS.get(k, defaults.get(k)))) != json.dumps(v)]
    return ", ".join(changes)


#: keys of config.json that say where the run's files are (absolute paths, the graph's sha256)
RESOLVED_KEYS = ("graph_resolved", "graph_sha256", "data_resolved")


def resolved_paths(data_path: str | Path, graph_path: str | Path) -> dict[str, str]:
    """``graph_resolved``, ``graph_sha256`` and ``data_resolved`` of a run's config.json."""
    from txpert_head.runs.predictor import file_sha256

    return {"graph_resolved": str(Path(graph_path).resolve()), "graph_sha256": file_sha256(graph_path),
            "data_resolved": str(Path(data_path).resolve())}


def check_resumable(out: Path, config: dict[str, Any], cfg: TrainConfig) -> None:
    """Before anything is written: a run folder with a checkpoint may only be resumed by the same run -- the
    same data, graph and task (config.json) and the same training options (the checkpoint's fingerprint).
    Raises :class:`RunFolderError` (or :class:`CheckpointError` for an unreadable checkpoint) otherwise."""
    last = out / "checkpoints" / "last.pt"
    if not last.exists():
        return
    previous = out / "config.json"
    old: dict[str, Any] | None = None
    if previous.exists():
        try:
            old = json.loads(previous.read_text())
        except (OSError, ValueError) as err:
            raise RunFolderError(f"{previous} cannot be read ({err}); use a new output folder, or --no-resume to "
                                 "start over in this one (nothing was changed)") from None
        if not isinstance(old, dict):
            raise RunFolderError(f"{previous} is not a txpert run configuration; use a new output folder")
        if old.get("graph_sha256") and config.get("graph_sha256") and old["graph_sha256"] != config["graph_sha256"]:
            raise RunFolderError(f"{out} holds a run trained on another version of the graph file {config['graph']} "
                                 "(its sha256 differs); choose a new output folder (nothing was changed)")
        skip = ("train",) + RESOLVED_KEYS  # where the files are now may differ; their content is checked above
        now = json.loads(json.dumps(_clean({k: v for k, v in config.items() if k not in skip})))
        old = dict(old)
        if isinstance(old.get("data"), dict):
            old["data"] = {**LEGACY_DATA_OPTIONS, **old["data"]}
        for side in (old, now):  # how the file is read (in memory or from disk) does not change the numbers
            if isinstance(side.get("data"), dict):
                side["data"] = {k: v for k, v in side["data"].items() if k not in READING_OPTIONS}
        if {k: v for k, v in old.items() if k not in skip} != now:
            raise RunFolderError(f"{out} holds a run on other data, graph or task; choose a new output folder "
                                 "(nothing was changed)")
    try:
        ck = load_checkpoint(last)
    except CheckpointError as err:
        raise CheckpointError(f"{err}; use a new output folder, or --no-resume to start over in this one "
                              "(nothing was changed)") from None
    if ck.get("fingerprint") != cfg.fingerprint():
        changes = _option_changes(old.get("train") if old else None, cfg)
        raise RunFolderError(
            f"{last} was written with different training options{f' ({changes})' if changes else ''}; rerun with "
            "the run's options to resume it, use a new output folder, or --no-resume to start over in this one "
            "(nothing was changed)")


def train_run(data_opts: DataOptions, graph_path: str | Path, task: str, cfg: TrainConfig, out: str | Path,
              split_seed: int = 0, holdout_line: str | None = None, resume: bool = True,
              baselines: bool = True, vcc: bool = True) -> dict[str, Any]:
    """Train, evaluate on the test split, compare with baselines and write the run folder; returns metrics.

    Nothing is written until the run is accepted: the data, graph, split and model are built and (when
    resuming) the checkpoint checked first (:func:`check_resumable`); the folder is locked for the run
    (:class:`RunFolder`). Under torchrun every rank trains its shard (see :mod:`txpert_head.training.distributed`);
    only rank 0 writes files, and every rank returns rank 0's report."""
    out = Path(out)
    ctx = distributed.setup(cfg.device)
    data = data_opts.load()
    graph = load_graph_for(data, graph_path, data_opts.gene_info)
    split = make_split(data, task, seed=split_seed, holdout_line=holdout_line)
    config = {"data": dataclasses.asdict(data_opts), "graph": str(graph_path), "task": task,
              "split_seed": split_seed, "holdout_line": holdout_line, "train": cfg.to_dict(),
              **resolved_paths(data_opts.path, graph_path)}
    trainer = Trainer(data, graph, split, cfg, out, dist=ctx)  # may refuse the data or split: nothing written yet
    folder = RunFolder(out) if ctx.is_main else None
    refused: BaseException | None = None
    if folder is not None:
        try:
            folder.acquire()
        except ValueError as err:  # RunFolderError, OutputError: nothing was made
            refused = err
        else:
            try:
                if resume:
                    check_resumable(out, config, cfg)
            except BaseException as err:
                folder.release(failed=True)
                if not isinstance(err, ValueError):
                    raise
                refused = err
    message = ctx.broadcast(None if refused is None else str(refused))  # every rank stops together
    if refused is not None:
        raise refused
    if message is not None:
        raise RunFolderError(message)
    try:
        report = _train_and_report(trainer, data, graph, split, config, out, ctx, resume, baselines, vcc,
                                   split_seed)
    except OSError as err:
        if err.errno not in _WRITE_ERRNOS:
            if folder is not None:
                folder.release(failed=True)
            raise
        cleaned = folder.release(failed=True) if folder is not None else False
        where = f" ({err.filename})" if err.filename else ""
        kept = ("the run had not reached its first checkpoint, so nothing of it was kept" if cleaned else
                "the run folder keeps its last checkpoint: run the same command again to resume")
        raise RunFolderError(f"cannot write {out}: {err.strerror or err}{where}; {kept}") from err
    except BaseException:
        if folder is not None:
            folder.release(failed=True)
        raise
    if folder is not None:
        folder.release(failed=False)
    return report


def _train_and_report(trainer: Trainer, data: PerturbData, graph: MultiGraph, split: Split, config: dict[str, Any],
                      out: Path, ctx: Any, resume: bool, baselines: bool, vcc: bool, split_seed: int) -> dict[str, Any]:
    """The accepted run: write config.json and split.json, train, evaluate, write the report (rank 0)."""
    if ctx.is_main:
        write_json(config, out / "config.json")
        write_json(split.to_json(), out / "split.json")
    result = trainer.fit(resume=resume)
    if not ctx.is_main:  # torchrun: rank 0 writes the run folder below and sends its report
        return distributed.finish(ctx, None)
    from txpert_head.runs.predictor import write_bundle

    write_bundle(trainer, config, out)  # what prediction needs without the training data (txpert_head.runs.predictor)
    table = result.test_table.copy()
    report: dict[str, Any] = {"model": result.test_summary, "subgroups": result.subgroup_summary,
                              "best_epoch": result.best_epoch,
                              "best_val_pearson_delta": result.best_record.get("val_pearson_delta", result.best_val),
                              "best_val_selection": result.best_val,
                              "train_seconds": result.seconds, "history": result.history}
    if "normalization" in data.notes:
        report["normalization"] = data.notes["normalization"]
    if "symbols" in data.notes:
        report["gene_symbols"] = data.notes["symbols"]
    if result.prior_fit:  # the prior's layer trusts and shrinkage, fitted leave-one-out before training
        report["prior_fit"] = result.prior_fit
    if result.untrained_val:  # epoch 0: the untrained prior (best_epoch 0 when training did not beat it)
        report["untrained_val_pearson_delta"] = result.untrained_val.get("val_pearson_delta")
    if baselines:
        base = run_baselines(data, split, controls=trainer.controls, seed=split_seed, graph=graph)
        table = _baseline_section(report, table, base, split_seed)
        plots.model_vs_baseline(result.test_table, base["general"]["table"], out / "plots" / "pearson_vs_general.png")
    if vcc:  # Virtual Cell Challenge metrics of the model and the baselines (txpert_head.evaluation.vcc)
        report["vcc"], table = _vcc_section(trainer, split.test, base if baselines else None, table, split_seed)
    write_csv(table, out / "per_perturbation.csv")
    write_json(report, out / "metrics.json")
    curve = ([{"epoch": 0, "val_pearson_delta": result.untrained_val["val_pearson_delta"]}] if result.untrained_val
             else []) + list(result.history)  # epoch 0: the untrained prior (model selection may keep it)
    plots.learning_curves(curve, out / "plots" / "learning_curves.png")
    shown = list(split.test)[:4]
    true_mean, ref = true_profiles(data, trainer.controls, shown, trainer.rows)
    pred = trainer.predict_means(shown)
    plots.predicted_vs_true([condition_name(c) for c in shown], pred - ref, true_mean - ref,
                            out / "plots" / "predicted_vs_true.png")
    return distributed.finish(ctx, report)


def _baseline_summaries(base: dict[str, dict]) -> tuple[dict[str, dict], dict[str, dict]]:
    """``({name: mean metrics}, {name: their sd over draws})`` of :func:`run_baselines` output (sd: split-half)."""
    return ({k: v["summary"] for k, v in base.items()},
            {k: v["summary_sd"] for k, v in base.items() if "summary_sd" in v})


def _baseline_section(report: dict[str, Any], table: pd.DataFrame, base: dict[str, dict], seed: int) -> pd.DataFrame:
    """Put the baselines beside the model (``txpert train`` and ``evaluate``): ``report["baselines"]``,
    ``["baselines_sd"]`` (when a baseline has draws) and ``["paired"]`` -- TxPert minus each baseline in Pearson Δ
    over the same conditions (mean difference, inverted sign-flip interval, sign-flip p, wins:
    :func:`txpert_head.metrics.paired.paired_comparison`); returns ``table`` with ``<baseline>_<metric>`` columns
    (Pearson Δ, retrieval, MSE and the Systema / PerturBench metrics) beside the model's, matched by condition."""
    report["baselines"], sd = _baseline_summaries(base)
    if sd:
        report["baselines_sd"] = sd
    table = table.copy()
    for name, res in base.items():
        t = res["table"].set_index("condition")
        for col in ("pearson_delta", "retrieval", "mse", "pearson_delta_pert", "centroid_accuracy",
                    "perturbench_rank"):
            if col in t:
                table[f"{name}_{col}"] = table["condition"].map(t[col])
    report["paired"] = {name: paired_comparison(table["pearson_delta"], table[f"{name}_pearson_delta"], seed=seed)
                        for name in base}
    return table


def _vcc_section(trainer: Trainer, conditions: Sequence, base: dict[str, dict] | None, table: pd.DataFrame,
                 seed: int) -> tuple[dict[str, Any], pd.DataFrame]:
    """The VCC block of the model and the baselines (:func:`txpert_head.evaluation.vcc.model_vcc`) and ``table``
    with its per-condition columns (``vcc_des``, ``vcc_pds``, ``vcc_mae``, ``<baseline>_vcc_*``,
    ``cell_mean_vcc_*``). Pseudobulk data has no cells to test: the block is ``{"skipped": reason}``."""
    if trainer.data.pseudobulk:
        return dict(PSEUDOBULK_SKIPPED), table
    skipped = memory_skip(trainer.data, conditions, sets=1 + len(VCC_BASELINES), max_cells=trainer.cfg.eval_cells)
    if skipped is not None:
        return skipped, table
    block, vcc_table = model_vcc(trainer, list(conditions), base, seed=seed)
    return block, table.merge(vcc_table, on="condition", how="left")


def run_graph_path(config: dict[str, Any], run_dir: str | Path) -> Path:
    """The graph file of a run: its recorded absolute path, refused (:class:`RunFolderError`) when missing or
    when its sha256 differs from the one trained on; run folders of earlier versions (no ``graph_resolved``):
    the path as given at training, relative to the current folder."""
    from txpert_head.runs.predictor import check_graph_file

    if config.get("graph_resolved"):
        return check_graph_file(config["graph_resolved"], config.get("graph_sha256"), run_dir)
    path = Path(config["graph"])
    if not path.exists():
        raise RunFolderError(f"{run_dir}: the run's graph file {path} (recorded as given at training, relative "
                             f"to the folder training ran in) is not found from {Path.cwd()}; run from that folder")
    return path


def run_data_path(config: dict[str, Any], run_dir: str | Path, data_path: str | Path | None = None) -> str:
    """The training data of a run: ``data_path`` when given, else its recorded absolute path (run folders of
    earlier versions: the path as given at training, relative to the current folder)."""
    if data_path:
        return str(data_path)
    resolved = config.get("data_resolved")
    if resolved:
        if not Path(resolved).exists():
            raise FileNotFoundError(f"{run_dir}: the run's training data {resolved} is missing (moved or deleted); "
                                    "pass its new location as data_path")
        return str(resolved)
    return str(config["data"]["path"])


def load_run(run_dir: str | Path, data_path: str | None = None) -> tuple[Trainer, dict[str, Any]]:
    """Rebuild the trainer of a finished run with its best weights (reads the training data: for prediction
    alone, :class:`txpert_head.runs.predictor.Predictor` is faster). ``data_path``: the training data's location
    when it moved (default: the path recorded in config.json)."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    opts = DataOptions.from_config(config["data"])
    opts.path = run_data_path(config, run_dir, data_path)
    graph_path = run_graph_path(config, run_dir)
    data = opts.load()
    graph = load_graph_for(data, graph_path, opts.gene_info)
    split = Split.from_json(_read_json(run_dir / "split.json"))
    cfg = TrainConfig.from_dict({**LEGACY_OPTIONS, **config["train"]})
    trainer = Trainer(data, graph, split, cfg, None)
    best = best_weights(run_dir)
    load_weights(trainer.model, load_checkpoint(best, trainer.device)["model"], best)
    return trainer, config


def evaluate_run(run_dir: str | Path, part: str = "test", baselines: bool = True,
                 vcc: bool = True, split_half_seeds: int = 5,
                 data_path: str | Path | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Metrics of a run's best weights on one split part (``test`` or ``val``), recomputed from the checkpoint
    (so run folders written before the VCC metrics existed are evaluated the same way).

    Returns ``(table, summary)``: ``table`` has one row per condition (the model's metrics, the baselines'
    ``<baseline>_<metric>`` and the VCC columns); ``summary`` holds the model's mean metrics at the top level,
    plus ``"baselines"`` ``{name: means}`` (general, and additive / nearest_cell_line / graph_neighbours /
    linear / linear_graph where they apply, and the split-half ceiling over ``split_half_seeds`` draws unless
    0, all on the same part; ``"baselines_sd"`` holds the split-half spread) and ``"vcc"`` (see
    :func:`txpert_head.evaluation.vcc.model_vcc`). ``data_path``: the training data when it moved since training.
    """
    if part not in ("test", "val"):
        raise ValueError(f"part must be 'test' or 'val', got {part!r}")
    trainer, config = load_run(run_dir, data_path)
    conds = list(getattr(trainer.split, part))
    if not conds:
        raise ValueError(f"the {part} split of {run_dir} is empty")
    table, summary = trainer.evaluate(conds)
    summary = dict(summary)
    seed = int(config.get("split_seed", 0))
    base = None
    if baselines:
        part_split = dataclasses.replace(trainer.split, test=conds, subgroups={})
        base = run_baselines(trainer.data, part_split, split_half_seeds=split_half_seeds,
                             controls=trainer.controls, seed=seed, graph=trainer.graph)
        table = _baseline_section(summary, table, base, seed)
    if vcc:
        summary["vcc"], table = _vcc_section(trainer, conds, base, table, seed)
    return table, summary


def predict_run(run_dir: str | Path, perturbations: Sequence[str], out: str | Path, cell_line: str | None = None,
                control: Sequence[str] = (CONTROL,), allow_unknown: bool = False,
                gene_info: str | Path | None = None, per_batch: bool = False) -> Path:
    """Predicted mean expression of each perturbation (any genes of the graph or the data, seen or not)
    written as ``.h5ad`` (:meth:`txpert_head.runs.predictor.Predictor.predict`; no training data is read for run
    folders with a predictor bundle).

    obs: ``perturbation``, ``requested``, ``cell_line``, ``known`` (``batch`` with ``per_batch``); X: predicted
    mean log-expression (P, G); ``layers['delta']``: prediction minus the batch-matched control mean of its
    inputs (``layers['control_mean']``), as training and the metrics measure changes.

    A gene that is neither a node of the run's graph nor perturbed in its data has no encoder row: the model
    knows nothing about it, and its "prediction" is the change of a perturbation without that gene. Such
    perturbations raise :class:`DataError` naming the genes, unless ``allow_unknown``: then they are
    predicted, logged as a warning and marked ``known = False``.

    ``gene_info`` (default: the one the run was trained with, if any): requested genes that are previous symbols
    or aliases of the model's genes are mapped to them (MARCH8 -> MARCHF8); obs ``requested`` keeps the label as
    given. ``uns['normalization']`` (``target_sum``, ...) and ``uns['log1p']`` say how the expression was
    normalised.
    """
    from txpert_head.runs.predictor import Predictor

    pred = Predictor.load(run_dir)
    result = pred.predict(perturbations, cell_line, per_batch=per_batch, allow_unknown=allow_unknown,
                          gene_info=gene_info, control=control)
    result.uns["txpert_run"] = str(run_dir)
    return result.write(out)


def baseline_run(data_opts: DataOptions, task: str, out: str | Path, split_seed: int = 0,
                 holdout_line: str | None = None, split_half_seeds: int = 5, vcc: bool = True,
                 graph_path: str | Path | None = None) -> dict[str, Any]:
    """Baselines only: writes ``baselines.json`` and ``baselines_per_perturbation.csv`` into ``out``.

    ``graph_path``: a multigraph file; adds the ``graph_neighbours`` baseline (what the graph's neighbourhoods
    predict without training) and ``linear_graph`` (the linear baseline with the graph's spectral embedding;
    :mod:`txpert_head.evaluation.baselines`).

    ``vcc``: also the VCC block of the baselines (``report["vcc"]``, :func:`txpert_head.evaluation.vcc.baselines_vcc`,
    true cells capped at 256 per condition) and its per-condition table ``baselines_vcc_per_perturbation.csv``."""
    out = Path(out)
    data = data_opts.load()
    graph = load_graph_for(data, graph_path, data_opts.gene_info) if graph_path is not None else None
    split = make_split(data, task, seed=split_seed, holdout_line=holdout_line)
    res = run_baselines(data, split, split_half_seeds=split_half_seeds, seed=split_seed, graph=graph)
    means, sds = _baseline_summaries(res)
    report = {"task": task, "split_seed": split_seed, "data": dataclasses.asdict(data_opts),
              "graph": None if graph_path is None else str(graph_path), "baselines": means, "baselines_sd": sds}
    frames = [v["table"].assign(baseline=k) for k, v in res.items()]
    vcc_table = None
    if vcc and data.pseudobulk:
        report["vcc"] = dict(PSEUDOBULK_SKIPPED)
    elif vcc and (skipped := memory_skip(data, split.test, sets=len(VCC_BASELINES))) is not None:
        report["vcc"] = skipped
    elif vcc:
        report["vcc"], vcc_table = baselines_vcc(data, ControlIndex(data), split.test, split.train, res, seed=split_seed)
    with output_errors(out):  # computed first: nothing is written when a step fails
        out.mkdir(parents=True, exist_ok=True)
        write_csv(pd.concat(frames), out / "baselines_per_perturbation.csv")
        if vcc_table is not None:
            write_csv(vcc_table, out / "baselines_vcc_per_perturbation.csv")
        write_json(report, out / "baselines.json")
    return report
