"""A run folder: what ``txpert train / evaluate / predict / baseline`` read and write.

::

    <run>/config.json              resolved options: data, graph, task, split seed, training config
    <run>/split.json               the conditions of each part
    <run>/metrics.json             test metrics of the model (+ subgroups), baselines, history, best epoch,
                                   and the VCC block ("vcc": DES / PDS / MAE / S, model and baselines)
    <run>/per_perturbation.csv     one row per test condition: model and baseline metrics (+ VCC columns)
    <run>/plots/*.png              learning curves, model vs general baseline, predicted vs true Δ
    <run>/checkpoints/{last,best}.pt
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from kgbuild.atomic import atomic_path, atomic_write
from kgbuild.graph import MultiGraph
from txpert_head import distributed, plots
from txpert_head.baselines import run_baselines
from txpert_head.controls import ControlIndex
from txpert_head.data import CONTROL, PerturbData, canonical_conditions, graph_overlap, load_h5ad
from txpert_head.paired import paired_comparison
from txpert_head.profiles import condition_name, true_profiles
from txpert_head.splits import Split, make_split
from txpert_head.train import TrainConfig, Trainer, load_checkpoint
from txpert_head.vcc_eval import PSEUDOBULK_SKIPPED, baselines_vcc, model_vcc

log = logging.getLogger(__name__)


@dataclass
class DataOptions:
    """How to read the ``.h5ad`` (see :func:`txpert_head.data.load_h5ad`)."""

    path: str
    perturbation_col: str = "perturbation"
    control: list[str] = field(default_factory=lambda: [CONTROL])
    cell_line_col: str | None = None
    batch_col: str | None = None
    normalize: str = "auto"
    pseudobulk: bool | None = None

    def load(self) -> PerturbData:
        return load_h5ad(self.path, self.perturbation_col, self.control, self.cell_line_col, self.batch_col,
                         self.normalize, self.pseudobulk)


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


def load_graph_for(data: PerturbData, graph_path: str | Path) -> MultiGraph:
    graph = MultiGraph.load(graph_path)
    graph_overlap(data, graph.nodes.tolist(), str(graph_path))
    return graph


def train_run(data_opts: DataOptions, graph_path: str | Path, task: str, cfg: TrainConfig, out: str | Path,
              split_seed: int = 0, holdout_line: str | None = None, resume: bool = True,
              baselines: bool = True, vcc: bool = True) -> dict[str, Any]:
    """Train, evaluate on the test split, compare with baselines and write the run folder; returns metrics.

    Under torchrun every rank trains its shard (see :mod:`txpert_head.distributed`); only rank 0 writes files,
    and every rank returns rank 0's report."""
    out = Path(out)
    ctx = distributed.setup(cfg.device)
    data = data_opts.load()
    graph = load_graph_for(data, graph_path)
    split = make_split(data, task, seed=split_seed, holdout_line=holdout_line)
    config = {"data": dataclasses.asdict(data_opts), "graph": str(graph_path), "task": task,
              "split_seed": split_seed, "holdout_line": holdout_line, "train": cfg.to_dict()}
    previous = out / "config.json"
    if resume and previous.exists() and (out / "checkpoints" / "last.pt").exists():
        old = json.loads(previous.read_text())
        if {k: v for k, v in old.items() if k != "train"} != json.loads(json.dumps({k: v for k, v in config.items() if k != "train"})):
            raise ValueError(f"{out} holds a run on other data, graph or task; choose a new output folder")
    if ctx.is_main:
        write_json(config, out / "config.json")
        write_json(split.to_json(), out / "split.json")
    trainer = Trainer(data, graph, split, cfg, out, dist=ctx)
    result = trainer.fit(resume=resume)
    if not ctx.is_main:  # torchrun: rank 0 writes the run folder below and sends its report
        return distributed.finish(ctx, None)
    table = result.test_table.copy()
    report: dict[str, Any] = {"model": result.test_summary, "subgroups": result.subgroup_summary,
                              "best_epoch": result.best_epoch, "best_val_pearson_delta": result.best_val,
                              "train_seconds": result.seconds, "history": result.history}
    if baselines:
        base = run_baselines(data, split, controls=trainer.controls, seed=split_seed, graph=graph)
        table = _baseline_section(report, table, base, split_seed)
        plots.model_vs_baseline(result.test_table, base["general"]["table"], out / "plots" / "pearson_vs_general.png")
    if vcc:  # Virtual Cell Challenge metrics of the model and the baselines (txpert_head.vcc_eval)
        report["vcc"], table = _vcc_section(trainer, split.test, base if baselines else None, table, split_seed)
    write_csv(table, out / "per_perturbation.csv")
    write_json(report, out / "metrics.json")
    plots.learning_curves(result.history, out / "plots" / "learning_curves.png")
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
    over the same conditions (mean difference, bootstrap interval, sign-flip p, wins:
    :func:`txpert_head.paired.paired_comparison`); returns ``table`` with ``<baseline>_<metric>`` columns
    (Pearson Δ, retrieval, MSE) beside the model's, matched by condition."""
    report["baselines"], sd = _baseline_summaries(base)
    if sd:
        report["baselines_sd"] = sd
    table = table.copy()
    for name, res in base.items():
        t = res["table"].set_index("condition")
        for col in ("pearson_delta", "retrieval", "mse"):
            table[f"{name}_{col}"] = table["condition"].map(t[col])
    report["paired"] = {name: paired_comparison(table["pearson_delta"], table[f"{name}_pearson_delta"], seed=seed)
                        for name in base}
    return table


def _vcc_section(trainer: Trainer, conditions: Sequence, base: dict[str, dict] | None, table: pd.DataFrame,
                 seed: int) -> tuple[dict[str, Any], pd.DataFrame]:
    """The VCC block of the model and the baselines (:func:`txpert_head.vcc_eval.model_vcc`) and ``table``
    with its per-condition columns (``vcc_des``, ``vcc_pds``, ``vcc_mae``, ``<baseline>_vcc_*``,
    ``cell_mean_vcc_*``). Pseudobulk data has no cells to test: the block is ``{"skipped": reason}``."""
    if trainer.data.pseudobulk:
        return dict(PSEUDOBULK_SKIPPED), table
    block, vcc_table = model_vcc(trainer, list(conditions), base, seed=seed)
    return block, table.merge(vcc_table, on="condition", how="left")


def load_run(run_dir: str | Path, data_path: str | None = None) -> tuple[Trainer, dict[str, Any]]:
    """Rebuild the trainer of a finished run with its best weights."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{run_dir}: not a run folder (no config.json); train one with `txpert train`")
    config = json.loads(cfg_path.read_text())
    opts = DataOptions(**config["data"])
    if data_path:
        opts.path = data_path
    data = opts.load()
    graph = load_graph_for(data, config["graph"])
    split = Split.from_json(json.loads((run_dir / "split.json").read_text()))
    cfg = TrainConfig.from_dict(config["train"])
    trainer = Trainer(data, graph, split, cfg, None)
    best = run_dir / "checkpoints" / "best.pt"
    if not best.exists():
        raise FileNotFoundError(f"{best}: no trained weights; the run did not finish an epoch")
    trainer.model.load_state_dict(load_checkpoint(best, trainer.device)["model"])
    return trainer, config


def evaluate_run(run_dir: str | Path, part: str = "test", baselines: bool = True,
                 vcc: bool = True, split_half_seeds: int = 5) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Metrics of a run's best weights on one split part (``test`` or ``val``), recomputed from the checkpoint
    (so run folders written before the VCC metrics existed are evaluated the same way).

    Returns ``(table, summary)``: ``table`` has one row per condition (the model's metrics, the baselines'
    ``<baseline>_<metric>`` and the VCC columns); ``summary`` holds the model's mean metrics at the top level,
    plus ``"baselines"`` ``{name: means}`` (general, and additive / nearest_cell_line where they apply, and the
    split-half ceiling over ``split_half_seeds`` draws unless 0, all on the same part; ``"baselines_sd"`` holds
    the split-half spread) and ``"vcc"`` (see :func:`txpert_head.vcc_eval.model_vcc`).
    """
    trainer, config = load_run(run_dir)
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
                control: Sequence[str] = (CONTROL,)) -> Path:
    """Predicted mean expression of each perturbation (any genes, seen or not) written as ``.h5ad``.

    obs: ``perturbation``, ``cell_line``; X: predicted mean log-expression (P, G); ``layers['delta']``:
    prediction minus the cell line's control mean.
    """
    import anndata

    trainer, _ = load_run(run_dir)
    lines = sorted(trainer.controls.by_line)
    if cell_line is None:
        if len(lines) > 1:
            raise ValueError(f"the data has several cell lines ({', '.join(lines)}); choose one with --cell-line")
        cell_line = lines[0]
    if cell_line not in lines:
        raise ValueError(f"unknown cell line {cell_line!r}; the data has {', '.join(lines)}")
    canon = canonical_conditions(list(perturbations), list(control), where="--perturbation: ")
    conds = [(cell_line, str(p)) for p in canon]
    pred = trainer.predict_means(conds, rows_for={})
    ctrl = trainer.controls.means[trainer.controls.line_of_group == cell_line].astype(np.float64).mean(0)
    obs = pd.DataFrame({"perturbation": list(canon), "cell_line": cell_line}, index=[f"p{i}" for i in range(len(conds))])
    adata = anndata.AnnData(pred.astype(np.float32), obs=obs, var=pd.DataFrame(index=trainer.data.genes))
    adata.layers["delta"] = (pred - ctrl).astype(np.float32)
    adata.uns["txpert_run"] = str(run_dir)
    out = Path(out)
    with atomic_path(out) as tmp:
        adata.write_h5ad(tmp)
    return out


def baseline_run(data_opts: DataOptions, task: str, out: str | Path, split_seed: int = 0,
                 holdout_line: str | None = None, split_half_seeds: int = 5, vcc: bool = True,
                 graph_path: str | Path | None = None) -> dict[str, Any]:
    """Baselines only: writes ``baselines.json`` and ``baselines_per_perturbation.csv`` into ``out``.

    ``graph_path``: a multigraph file; adds the ``graph_neighbours`` baseline (what the graph's neighbourhoods
    predict without training).

    ``vcc``: also the VCC block of the baselines (``report["vcc"]``, :func:`txpert_head.vcc_eval.baselines_vcc`,
    true cells capped at 256 per condition) and its per-condition table ``baselines_vcc_per_perturbation.csv``."""
    out = Path(out)
    data = data_opts.load()
    graph = load_graph_for(data, graph_path) if graph_path is not None else None
    split = make_split(data, task, seed=split_seed, holdout_line=holdout_line)
    res = run_baselines(data, split, split_half_seeds=split_half_seeds, seed=split_seed, graph=graph)
    means, sds = _baseline_summaries(res)
    report = {"task": task, "split_seed": split_seed, "data": dataclasses.asdict(data_opts),
              "graph": None if graph_path is None else str(graph_path), "baselines": means, "baselines_sd": sds}
    frames = [v["table"].assign(baseline=k) for k, v in res.items()]
    out.mkdir(parents=True, exist_ok=True)
    write_csv(pd.concat(frames), out / "baselines_per_perturbation.csv")
    if vcc and data.pseudobulk:
        report["vcc"] = dict(PSEUDOBULK_SKIPPED)
    elif vcc:
        report["vcc"], vcc_table = baselines_vcc(data, ControlIndex(data), split.test, split.train, res, seed=split_seed)
        write_csv(vcc_table, out / "baselines_vcc_per_perturbation.csv")
    write_json(report, out / "baselines.json")
    return report
