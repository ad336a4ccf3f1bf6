"""The Python API of txpert_head: train, predict, evaluate, score, baselines, identify (re-exported by the package).

Every function works on files and run folders, like the ``txpert`` commands, and raises exceptions (``ValueError``
subclasses such as :class:`~txpert_head.data.perturb_data.DataError`, ``FileNotFoundError``) whose messages name the
parameters. ``import txpert_head as tx``; ``tx.train(...)``, ``tx.predict(...)``, ... See
``docs/python-api.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from txpert_head.data.perturb_data import CONTROL, TARGET_SUM

__all__ = ["baselines", "evaluate", "identify", "predict", "score", "train"]


def _work() -> None:
    """What every work function does first, as the ``txpert`` command does: keep freed memory in the process
    (:func:`txpert_head.training.allocator.keep_freed_memory`; ``TXPERT_KEEP_FREED_MEMORY=0`` leaves malloc's defaults)."""
    from txpert_head.training.allocator import keep_freed_memory

    keep_freed_memory()


def _data_options(data: str | Path, perturbation_col: str | None, control: str | Sequence[str] | None,
                  cell_line_col: str | None, batch_col: str | None, normalize: str, target_sum: float,
                  gene_info: str | Path | None, backed: bool | str = "auto", memory_budget: int | str | None = None):
    from txpert_head.data.backed import DEFAULT_MEMORY_BUDGET, backed_mode, parse_bytes
    from txpert_head.data.perturb_data import NORMALIZE_MODES, check_target_sum
    from txpert_head.runs.folder import DataOptions

    if isinstance(control, str):
        control = [control]
    if normalize not in NORMALIZE_MODES:  # checked here too so that nothing is read before the error
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}, got {normalize!r}")
    return DataOptions(str(data), perturbation_col, list(control) if control else None, cell_line_col, batch_col,
                       normalize, target_sum=check_target_sum(target_sum),
                       gene_info=None if gene_info is None else str(gene_info), backed=backed_mode(backed),
                       memory_budget=DEFAULT_MEMORY_BUDGET if memory_budget is None else parse_bytes(memory_budget))


def train(data: str | Path, graph: str | Path, out: str | Path, *, task: str = "unseen_single",
          split_seed: int = 0, holdout_line: str | None = None, perturbation_col: str | None = None,
          control: str | Sequence[str] | None = None, cell_line_col: str | None = None,
          batch_col: str | None = None, normalize: str = "auto", target_sum: float = TARGET_SUM,
          gene_info: str | Path | None = None, backed: bool | str = "auto", memory_budget: int | str | None = None,
          resume: bool = True, baselines: bool = True, vcc: bool = True,
          config: dict[str, Any] | str | Path | None = None, **options: Any):
    """Train TxPert on ``data`` (a Perturb-seq ``.h5ad``) with ``graph`` (a ``.kg.npz`` multigraph) into the run
    folder ``out`` -- ``txpert train`` -- and return its :class:`~txpert_head.runs.predictor.Predictor` (its
    ``metrics`` attribute holds the report written to ``out/metrics.json``).

    Training options (:class:`~txpert_head.training.config.TrainConfig`: ``epochs``, ``encoder_kind``, ``hidden``,
    ``loss``, ``device``, ...) are keyword arguments, or ``config``: a dict or a TOML / JSON file of them
    (keyword arguments win). The data options (``perturbation_col``, ``control``, ``cell_line_col``,
    ``batch_col``, ``normalize``, ``target_sum``, ``gene_info``, ``backed``, ``memory_budget``) are detected or
    defaulted as for ``txpert train`` (``backed``: ``"auto"``, ``True`` / ``"yes"`` or ``False`` / ``"no"``: keep the
    expression matrix on disk and read rows as needed -- auto: when it takes more than ``memory_budget``, bytes or
    ``"8GB"``, default 4 GB; the numbers are the same either way); ``task`` is ``unseen_single``, ``double`` or ``cross_cell_line`` (with ``holdout_line``).
    ``baselines`` / ``vcc``: also compare with the baselines / compute the VCC metrics (slower)."""
    _work()
    from txpert_head.runs.predictor import Predictor
    from txpert_head.runs.folder import read_config_file, train_run
    from txpert_head.data.splits import TASKS
    from txpert_head.training.config import TrainConfig

    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if task == "cross_cell_line" and holdout_line is None:
        raise ValueError("task 'cross_cell_line' needs holdout_line (the cell line held out)")
    values: dict[str, Any] = {}
    if isinstance(config, (str, Path)):
        values.update(read_config_file(config))
    elif config is not None:
        values.update(dict(config))
    values.update(options)
    cfg = TrainConfig.from_dict(values)
    opts = _data_options(data, perturbation_col, control, cell_line_col, batch_col, normalize, target_sum,
                         gene_info, backed, memory_budget)
    report = train_run(opts, graph, task, cfg, out, split_seed=split_seed, holdout_line=holdout_line,
                       resume=resume, baselines=baselines, vcc=vcc)
    pred = Predictor.load(out)
    pred.metrics = report
    return pred


def predict(run: str | Path, perturbations: Sequence[str] | str, cell_line: str | None = None, *,
            per_batch: bool = False, allow_unknown: bool = False, gene_info: str | Path | None = None,
            control: Sequence[str] = (CONTROL,), out: str | Path | None = None):
    """Predictions of a run folder (or a :class:`~txpert_head.runs.predictor.Predictor`) for ``perturbations`` (genes,
    ``A+B`` combinations) in ``cell_line``: a :class:`~txpert_head.runs.predictor.Prediction` (``mean``, ``delta``
    against batch-matched controls, ``obs``; ``.to_anndata()``). With ``out`` it is also written as ``.h5ad``.
    See :meth:`Predictor.predict <txpert_head.runs.predictor.Predictor.predict>`."""
    _work()
    from txpert_head.runs.predictor import Predictor

    pred = run if isinstance(run, Predictor) else Predictor.load(run)
    result = pred.predict(perturbations, cell_line, per_batch=per_batch, allow_unknown=allow_unknown,
                          gene_info=gene_info, control=control)
    if out is not None:
        result.write(out)
    return result


def evaluate(run: str | Path, part: str = "test", *, baselines: bool = True, vcc: bool = True,
             split_half_seeds: int = 5, data_path: str | Path | None = None):
    """Metrics of a run's best weights on its ``test`` (or ``val``) split beside the baselines -- ``txpert
    evaluate`` without writing files: ``(table, summary)`` (one row per condition; mean metrics, ``baselines``,
    ``paired``, ``vcc``). Reads the training data (``data_path`` when it moved since training)."""
    _work()
    from txpert_head.runs.folder import evaluate_run

    return evaluate_run(run, part, baselines=baselines, vcc=vcc, split_half_seeds=split_half_seeds,
                        data_path=data_path)


def baselines(data: str | Path, out: str | Path, *, task: str = "unseen_single", split_seed: int = 0,
              holdout_line: str | None = None, graph: str | Path | None = None, split_half_seeds: int = 5,
              vcc: bool = True, perturbation_col: str | None = None, control: str | Sequence[str] | None = None,
              cell_line_col: str | None = None, batch_col: str | None = None, normalize: str = "auto",
              target_sum: float = TARGET_SUM, gene_info: str | Path | None = None, backed: bool | str = "auto",
              memory_budget: int | str | None = None) -> dict[str, Any]:
    """The baselines on a split of ``data`` (no training) -- ``txpert baseline``: writes ``out/baselines.json``
    and ``out/baselines_per_perturbation.csv`` and returns the report (``report["baselines"]``: mean metrics
    per baseline). ``graph`` adds the graph baselines (``graph_neighbours``, ``linear_graph``)."""
    _work()
    from txpert_head.runs.folder import baseline_run
    from txpert_head.data.splits import TASKS

    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    opts = _data_options(data, perturbation_col, control, cell_line_col, batch_col, normalize, target_sum,
                         gene_info, backed, memory_budget)
    return baseline_run(opts, task, out, split_seed, holdout_line, split_half_seeds, vcc=vcc, graph_path=graph)


def identify(run: str | Path, data: str | Path, out: str | Path, *, groups: Sequence[str] | None = None,
             candidates: str | Path | None = None, score: str = "pearson", scope: str = "graph",
             center: bool = False, top: int | None = None, control_cells: int = 16, evaluate: bool = False,
             perturbation_col: str | None = None, control: str | Sequence[str] | None = None,
             cell_line_col: str | None = None, batch_col: str | None = None, normalize: str = "auto",
             target_sum: float = TARGET_SUM, backed: bool | str = "auto", memory_budget: int | str | None = None,
             progress: bool = False) -> dict[str, Any]:
    """Which gene was perturbed? -- ``txpert identify``: rank candidate genes (``candidates``: a file of genes,
    default every gene of the run's graph) for each group of cells of ``data`` by how well the run's predicted
    change matches the group's observed change. Writes the ranked table ``out`` and ``<out>.summary.json``;
    returns the summary (``evaluate``: the group labels are the true targets, also MRR / hit@k)."""
    _work()
    from txpert_head.identification.targets import SCOPES
    from txpert_head.runs.identify import identify_run

    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    if score not in ("pearson", "cosine", "neg_l2"):
        raise ValueError(f"score must be 'pearson', 'cosine' or 'neg_l2', got {score!r}")
    opts = _data_options(data, perturbation_col, control, cell_line_col, batch_col, normalize, target_sum, None,
                         backed, memory_budget)
    return identify_run(run, opts, out, list(groups) if groups else None, candidates, score, scope, top,
                        control_cells, evaluate, progress=progress, center=center)


def score(predictions: str | Path, data: str | Path, split: str | Path | None = None, *, part: str = "test",
          graph: str | Path | None = None, baselines: bool = True, split_half_seeds: int = 5,
          seed: int | None = None, pred_perturbation_col: str | None = None, pred_cell_line_col: str | None = None,
          perturbation_col: str | None = None, control: str | Sequence[str] | None = None,
          cell_line_col: str | None = None, batch_col: str | None = None, normalize: str | None = None,
          target_sum: float | None = None, gene_info: str | Path | None = None, backed: bool | str | None = None,
          memory_budget: int | str | None = None):
    """Score any model's predictions (a ``.h5ad`` of mean profiles or cells) against ``data`` with TxPert's
    metrics, baselines and paired comparison -- ``txpert score``; returns ``(table, summary, paired)`` (see
    :func:`txpert_head.runs.scoring.score_predictions`). ``split``: a run's ``split.json`` or run folder (its ``part``
    is scored, and the data options, graph and seed it recorded fill the ones not given here); without it every
    predicted perturbation with truth in ``data`` is scored. ``pred_*_col``: columns of the predictions file;
    the other data options describe ``data`` as for :func:`train`."""
    _work()
    from txpert_head.runs.scoring import score_files

    if isinstance(control, str):
        control = [control]
    given = dict(perturbation_col=perturbation_col, control=list(control) if control else None,
                 cell_line_col=cell_line_col, batch_col=batch_col, normalize=normalize, target_sum=target_sum,
                 gene_info=None if gene_info is None else str(gene_info), backed=backed, memory_budget=memory_budget)
    table, summary, paired, _ = score_files(predictions, data, split, part, graph=graph, baselines=baselines,
                                            split_half_seeds=split_half_seeds, seed=seed,
                                            perturbation_col=pred_perturbation_col,
                                            cell_line_col=pred_cell_line_col, data_options=given)
    return table, summary, paired
