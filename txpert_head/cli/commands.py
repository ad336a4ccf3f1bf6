"""``txpert train``, ``evaluate``, ``predict`` and ``baseline`` (registered on the ``txpert`` group)."""

from __future__ import annotations

import importlib
from pathlib import Path

import click

from kgbuild.cli_common import user_errors
from kgbuild.graph import GraphError, GraphFileError
from kgbuild.outputs import OutputError
from txpert_head.data.backed import DEFAULT_MEMORY_BUDGET, format_bytes
from txpert_head.data.perturb_data import TARGET_SUM, DataError
from txpert_head.data.splits import TASKS, SplitError

# CheckpointError (txpert_head.training.checkpoints; a damaged checkpoint or weights of another model, naming the file) and
# RunFolderError (txpert_head.runs.folder; a busy, foreign or unwritable run folder) are ValueErrors; imported lazily
ERRORS = (DataError, SplitError, GraphError, GraphFileError, OutputError, FileNotFoundError, KeyError, ValueError)


def _checked(check: str, error: type[Exception], prefix: str):
    """A click callback running ``txpert_head.data.<check>`` on the value (None passes): its error becomes the
    option's BadParameter, without the library's parameter name ``prefix``."""

    def callback(ctx, param, value):
        if value is None:
            return value
        module, name = check.rsplit(".", 1)
        try:
            return getattr(importlib.import_module(f"txpert_head.data.{module}"), name)(value)
        except error as err:
            raise click.BadParameter(str(err).removeprefix(prefix), ctx=ctx, param=param) from None

    return callback


_check_target_sum = _checked("perturb_data.check_target_sum", DataError, "target_sum ")
_check_memory_budget = _checked("backed.parse_bytes", ValueError, "memory budget ")


gene_info_option = click.option(
    "--gene-info", default=None, metavar="PATH",
    help="NCBI Homo_sapiens.gene_info(.gz): map previous symbols and aliases of perturbed genes (MARCH8) to "
         "the graph's current symbols (MARCHF8); 'fetch' uses the `kgbuild fetch gene_info` cache. Ambiguous "
         "aliases are not mapped; what was mapped is reported.")


def data_options(fn):
    """The options that say how to read the .h5ad."""
    opts = [
        click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False),
                     help="Perturb-seq AnnData file (.h5ad): cells or pseudobulk rows x genes."),
        click.option("--perturbation-col", default=None,
                     help="obs column with the perturbation (genes joined by '+'; GEARS's A+ctrl is A). Default: "
                          "detected (a column named perturbation, condition, target, gene, ... or else any text "
                          "column holding a control label and gene labels); the choice is printed."),
        click.option("--control", "control", multiple=True, default=(),
                     help="Label(s) of control rows, e.g. ctrl, control or non-targeting (repeatable). Default: "
                          "detected in the perturbation column (ctrl, control, non-targeting, NT, NTC, ...; "
                          "any case)."),
        click.option("--cell-line-col", default=None,
                     help="obs column with the cell line (default: one line); 'auto': detect cell_line, "
                          "cell_type or cell_line_name."),
        click.option("--batch-col", default=None,
                     help="obs column with the batch (default: one batch); 'auto': detect batch, gem_group, "
                          "bio_rep, replicate, rep or library."),
        click.option("--normalize", type=click.Choice(["auto", "counts", "none"]), default="auto", show_default=True,
                     help="auto: raw integer counts -> --target-sum per cell + log1p, anything else as is."),
        click.option("--target-sum", type=float, default=TARGET_SUM, show_default=True, callback=_check_target_sum,
                     help="Counts per cell that raw counts are scaled to before log1p (scanpy's normalize_total "
                          "target; earlier versions used 4000)."),
        click.option("--backed", type=click.Choice(["auto", "yes", "no"]), default="auto", show_default=True,
                     help="Keep the expression matrix on disk and read only the cells each step needs "
                          "(out-of-core, for screens larger than memory: a 2M-cell x 8k-gene screen is ~13 GB "
                          "in memory). auto: on disk when its in-memory size (8 bytes per non-zero value) exceeds "
                          "--memory-budget. Needs X stored as CSR, anndata's usual sparse format. "
                          "Results are identical either way; on disk is slower when the file is not cached."),
        click.option("--memory-budget", default=format_bytes(DEFAULT_MEMORY_BUDGET).replace(" ", ""),
                     show_default=True, callback=_check_memory_budget, metavar="SIZE",
                     help="Memory for the expression data, e.g. 8GB or 500MB (KB/MB/GB = 2^10/2^20/2^30 bytes): "
                          "above it --backed auto reads from disk, and passes over many cells (control and "
                          "perturbation means) read blocks of about 1/16 of it. Peak memory then grows with "
                          "the batch size and the number of perturbations, not the number of cells."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _data_opts(kw):
    from txpert_head.runs.folder import DataOptions

    return DataOptions(kw.pop("data_path"), kw.pop("perturbation_col"), list(kw.pop("control")) or None,
                       kw.pop("cell_line_col"), kw.pop("batch_col"), kw.pop("normalize"),
                       target_sum=kw.pop("target_sum"), gene_info=kw.pop("gene_info", None),
                       backed=kw.pop("backed"), memory_budget=kw.pop("memory_budget"))


def _check_loss(ctx, param, value):
    """Validate ``--loss`` before any data is read."""
    if value is None:
        return None
    from txpert_head.training.losses import LossSpecError, parse_loss_spec

    try:
        parse_loss_spec(value)
    except LossSpecError as err:
        raise click.BadParameter(str(err), ctx=ctx, param=param) from None
    return value


task_option = click.option("--task", type=click.Choice(TASKS), default="unseen_single", show_default=True,
                           help="unseen_single | double (combinations) | cross_cell_line (needs --holdout-line).")
split_seed_option = click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of the split.")
holdout_option = click.option("--holdout-line", default=None, help="Cell line held out (cross_cell_line).")


@click.command()
@data_options
@click.option("--graph", required=True, type=click.Path(dir_okay=False), help="Multigraph file from kgbuild (*.kg.npz).")
@gene_info_option
@task_option
@split_seed_option
@holdout_option
@click.option("--encoder", "encoder_kind", default=None, help="GNN kind: gat, gatv2, exphormer, exphormer-mg, gat-hybrid, gat-mlg, hybrid-bmp.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="TOML/JSON file of training options (keys of TrainConfig; flat or under [train]).")
@click.option("--seed", type=int, default=None, help="Model seed (overrides the config file).")
@click.option("--epochs", type=int, default=None, help="Maximum epochs (overrides the config file).")
@click.option("--loss", default=None, callback=_check_loss, metavar="SPEC",
              help="Training loss: mse (default), mmd, sw1 or a weighted sum such as mse+mmd or mse+0.5*sw1. "
                   "mmd/sw1 compare predicted and true cells of each perturbation: batches become "
                   "perturbations x cells_per_group cells (--set cells_per_group=32) and need "
                   "control_mode batch or random (overrides the config file).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Any training option, e.g. --set basal=none --set target_term=true (JSON values).")
@click.option("--no-resume", is_flag=True, help="Start over even if OUT holds a checkpoint.")
@click.option("--no-baselines", is_flag=True, help="Skip the baselines.")
@click.option("--no-vcc", is_flag=True, help="Skip the Virtual Cell Challenge metrics (DES, PDS, MAE, S).")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Run folder to write.")
@user_errors(*ERRORS)
def train(graph, task, split_seed, holdout_line, encoder_kind, config_file, seed, epochs, loss, overrides, no_resume,
          no_baselines, no_vcc, out, **kw):
    """Train TxPert on a Perturb-seq file with a kgbuild graph and evaluate it on the held-out split.

    Writes OUT/config.json, split.json, metrics.json, per_perturbation.csv, plots/*.png and checkpoints.
    Re-running the same command after an interruption resumes from the last checkpoint.

    \b
    Examples:
      txpert train --data papalexi.h5ad --batch-col bio_rep --graph multi.kg.npz \\
          --task unseen_single -o runs/papalexi    # column target, control non-targeting: detected
      txpert train --data norman.h5ad --perturbation-col condition --control control --batch-col batch \\
          --graph multi.kg.npz --task double --config train.toml --seed 1 -o runs/norman_s1
      txpert train ... --loss mse+0.5*mmd -o runs/norman_mmd        # distributional loss
      torchrun --standalone --nproc_per_node 2 -m txpert_head.cli.main train ... -o runs/ddp   # 2 processes (DDP)
    """
    from txpert_head.runs.folder import parse_overrides, read_config_file, train_run
    from txpert_head.training.config import TrainConfig

    values = read_config_file(config_file) if config_file else {}
    try:
        values.update(parse_overrides(overrides))
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--set") from None
    for k, v in (("encoder_kind", encoder_kind), ("seed", seed), ("epochs", epochs), ("loss", loss)):
        if v is not None:
            values[k] = v
    cfg = TrainConfig.from_dict(values)
    report = train_run(_data_opts(kw), graph, task, cfg, out, split_seed, holdout_line, resume=not no_resume,
                       baselines=not no_baselines, vcc=not no_vcc)
    from txpert_head.training.distributed import is_main_process

    if is_main_process():  # under torchrun, print once
        _print_table(report)
        _print_vcc(report.get('vcc'))
        click.echo(f"wrote {out}")


def _print_table(report: dict, model_name: str = "TxPert") -> None:
    rows = [(model_name, report["model"])] + [(k, v) for k, v in report.get("baselines", {}).items()]
    rows += [(f"{model_name} {k}", v) for k, v in report.get("subgroups", {}).items()]
    click.echo(f"{'model':<22}{'pearson_delta':>14}{'retrieval':>11}{'mse':>10}{'n':>5}")
    for name, s in rows:
        click.echo(f"{name:<22}{s['pearson_delta']:>14.4f}{s['retrieval']:>11.4f}{s['mse']:>10.4f}"
                   f"{s.get('n_perturbations', 0):>5}")
    if report.get("paired"):
        from txpert_head.metrics.paired import describe_comparison

        click.echo(f"{model_name} minus each baseline, paired over the same perturbations "
                   "(95% interval from the inverted sign-flip test; sign-flip test of no difference):")
        for name, c in report["paired"].items():
            click.echo(f"  vs {name:<18} {describe_comparison(c)}")


def _print_vcc(block: dict | None) -> None:
    """The VCC block (see txpert_head.evaluation.vcc): raw DES / PDS / MAE, their values scaled against the cell-mean
    baseline (0 = cell mean, 1 = perfect), S = 100 x mean(scaled) and the VCC's Pearson delta (pooled control
    mean; not part of S), for the model and each baseline."""
    if not block:
        return
    if "skipped" in block:
        click.echo(f"VCC metrics skipped: {block['skipped']}")
        return
    ctrl = ", ".join(f"{n}" for n in block["control_cells"].values())
    click.echo(f"\nVirtual Cell Challenge metrics ({block['test']} at alpha {block['alpha']}; "
               f"{ctrl} control cells; <= {block['max_cells_per_condition']} cells per condition; "
               "definitions as cell-eval's vcc profile; PDelta: VCC Pearson delta vs the pooled control mean)")
    if "model" in block:
        click.echo(f"TxPert prediction scored as: {block['prediction']}")
    click.echo("baselines: mean profiles, replicated to the true cell count; scaled values: 0 = cell-mean "
               "baseline, 1 = perfect; S = 100 x mean(scaled)")
    rows = ([("TxPert", block["model"])] if "model" in block else []) + list(block["baselines"].items())
    rows.append(("cell_mean (reference)", block["cell_mean"]))
    click.echo(f"{'model':<22}{'DES':>8}{'PDS':>8}{'MAE':>9}{'sDES':>7}{'sPDS':>7}{'sMAE':>7}{'S':>8}"
               f"{'PDelta':>8}{'n':>5}")
    fmt = lambda v, spec: format(v, spec) if v is not None and v == v else "nan"  # noqa: E731
    for name, s in rows:
        sc = s["scaled"]
        click.echo(f"{name:<22}{fmt(s['des'], '.4f'):>8}{fmt(s['pds'], '.4f'):>8}{fmt(s['mae'], '.5f'):>9}"
                   f"{fmt(sc['des'], '.3f'):>7}{fmt(sc['pds'], '.3f'):>7}{fmt(sc['mae'], '.3f'):>7}"
                   f"{fmt(s['score'], '.2f'):>8}{fmt(s.get('pearson_delta'), '.3f'):>8}{s['n_perturbations']:>5}")
    click.echo(f"VCC block computed in {block['seconds']:.1f}s")


class _option_words:
    """Library messages name parameters (``allow_unknown=True``); on the command line, say the option instead
    (``--allow-unknown``): re-raise a ValueError with the words replaced."""

    def __init__(self, words: dict[str, str]):
        self.words = words

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if err is None or not isinstance(err, ValueError) or len(err.args) != 1:
            return False
        text = str(err)
        for word, option in self.words.items():
            text = text.replace(word, option)
        if text == str(err):
            return False
        try:
            new = type(err)(text)
        except Exception:  # an exception type that is not built from one message: keep it
            return False
        raise new from None


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--part", type=click.Choice(["test", "val"]), default="test", show_default=True)
@click.option("--no-baselines", is_flag=True,
              help="Skip the baselines (general, additive, nearest cell line, graph neighbours, linear, "
                   "linear graph, split-half).")
@click.option("--no-vcc", is_flag=True, help="Skip the Virtual Cell Challenge metrics (DES, PDS, MAE, S).")
@click.option("--split-half-seeds", type=click.IntRange(min=0), default=5, show_default=True,
              help="Draws of the split-half reproducibility ceiling (0 skips it).")
@user_errors(*ERRORS)
def evaluate(run_dir, part, no_baselines, no_vcc, split_half_seeds):
    """Evaluate the best weights of RUN_DIR on its test (or validation) split, beside the baselines and the
    split-half ceiling on the same conditions; prints the TxPert block (Pearson Δ, retrieval, MSE) and the
    Virtual Cell Challenge block (DES, PDS, MAE, scaled values and S against the cell-mean baseline). Writes
    evaluation_<part>.json and evaluation_<part>.csv (one row per condition, VCC columns included).
    Works on run folders of older versions too (everything is recomputed from the checkpoint).

    \b
    Example:
      txpert evaluate runs/papalexi
      txpert evaluate runs/norman --part val --no-vcc
    """
    from kgbuild.outputs import output_errors
    from txpert_head.runs.folder import evaluate_run, write_csv, write_json

    table, summary = evaluate_run(run_dir, part, baselines=not no_baselines, vcc=not no_vcc,
                                  split_half_seeds=split_half_seeds)
    with output_errors(Path(run_dir) / f"evaluation_{part}.json"):
        write_json(summary, Path(run_dir) / f"evaluation_{part}.json")
        write_csv(table, Path(run_dir) / f"evaluation_{part}.csv")
    _print_table({"model": summary, "baselines": summary.get("baselines", {}), "paired": summary.get("paired")})
    _print_vcc(summary.get("vcc"))


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("-p", "--perturbation", "perturbations", multiple=True, required=True,
              help="Gene or combination (A+B); any gene of the graph, seen in training or not (repeatable).")
@click.option("--cell-line", default=None, help="Cell line whose controls are the input (if the data has several).")
@click.option("--allow-unknown", is_flag=True,
              help="Also predict perturbations of genes that are neither graph nodes nor perturbed in the data "
                   "(refused by default: the model knows nothing about them); their rows get obs 'known' False.")
@click.option("--gene-info", default=None, metavar="PATH",
              help="NCBI gene_info file: map previous symbols and aliases among the requested genes to the model's "
                   "(default: the file the run was trained with, if any; 'fetch': the kgbuild cache).")
@click.option("--cells", "n_cells", type=click.IntRange(min=1), default=None, metavar="N",
              help="Write cells instead of one mean row per perturbation: N predicted cells per perturbation "
                   "(one per control input) plus the cell line's control cells (at most 2048), log-expression "
                   "clipped at 0, obs 'perturbation' (A, A+B, ctrl); the layout cell-eval and scanpy read.")
@click.option("--per-batch", is_flag=True,
              help="One row per perturbation and batch (the batch's control cells as inputs, its control mean as "
                   "reference) instead of one row per perturbation.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Output .h5ad.")
@user_errors(*ERRORS)
def predict(run_dir, perturbations, cell_line, allow_unknown, gene_info, n_cells, per_batch, out):
    """Predict expression for perturbations with a trained run; writes an .h5ad.

    By default one row per perturbation: X the predicted mean log-expression, layers['delta'] the change
    versus the batch-matched control mean of the inputs (layers['control_mean']; as training and the metrics
    measure changes), obs 'known' (every gene is a graph node or was perturbed in the data). Reads only the
    run folder (its predictor/ bundle), not the training data.

    With --cells N: cell-level AnnData for external evaluators. N predicted cells per perturbation plus the
    cell line's real control cells (at most 2048, the VCC block's seeded draw); X is log1p expression clipped
    at 0 (a model's output can dip below 0 near zero; log-expression cannot, and cell-eval rejects negative
    values); obs 'perturbation' is categorical with plain labels (A, A+B; ctrl for the controls);
    uns['log1p'] and uns['normalization'] (target_sum) record the scale. Perturbation labels must be the
    model's gene symbols (--gene-info is not applied with --cells).

    \b
    Examples:
      txpert predict runs/norman -p KLF1 -p KLF1+TP53 -p CEBPA -o predictions.h5ad
      txpert predict runs/norman -p KLF1 -p CEBPA --cells 100 -o cells.h5ad
      cell-eval run -ap cells.h5ad -ar real.h5ad --pert-col perturbation --control-pert ctrl --profile vcc
    """
    with _option_words({"allow_unknown=True": "--allow-unknown", "the cell_line parameter": "--cell-line",
                        "n_cells": "--cells"}):
        _predict(run_dir, perturbations, cell_line, allow_unknown, gene_info, n_cells, per_batch, out)


def _predict(run_dir, perturbations, cell_line, allow_unknown, gene_info, n_cells, per_batch, out):
    if n_cells is not None:
        from txpert_head.runs.cell_output import predict_cells_run

        if gene_info is not None:
            raise click.UsageError("--gene-info is not applied with --cells; give the model's gene symbols")
        if per_batch:
            raise click.UsageError("--per-batch is for mean rows; --cells writes cells")
        path = predict_cells_run(run_dir, perturbations, out, n_cells, cell_line, allow_unknown=allow_unknown)
        click.echo(f"wrote {path} ({len(perturbations)} perturbation(s) x {n_cells} cells + control cells)")
        return
    from txpert_head.runs.predictor import Predictor  # (not txpert_head.runs.folder: its plotting and metrics imports are slow)

    result = Predictor.load(run_dir).predict(perturbations, cell_line, per_batch=per_batch,
                                             allow_unknown=allow_unknown, gene_info=gene_info)  # warns of unknown genes
    result.uns["txpert_run"] = str(run_dir)
    path = result.write(out)
    click.echo(f"wrote {path} ({len(perturbations)} perturbation(s){', per batch' if per_batch else ''})")


@click.command()
@data_options
@task_option
@split_seed_option
@holdout_option
@click.option("--split-half-seeds", type=click.IntRange(min=0), default=5, show_default=True,
              help="Draws of the split-half reproducibility ceiling (0 skips it).")
@click.option("--no-vcc", is_flag=True, help="Skip the Virtual Cell Challenge metrics (DES, PDS, MAE, S).")
@click.option("--graph", "graph_path", default=None, type=click.Path(dir_okay=False, exists=True),
              help="Multigraph file (.kg.npz): adds the graph_neighbours baseline, what the graph's one-hop "
                   "neighbourhoods predict for unseen genes without training, and linear_graph, the linear "
                   "baseline with the graph's spectral embedding as perturbation embedding.")
@gene_info_option
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Folder for baselines.json/csv.")
@user_errors(*ERRORS)
def baseline(task, split_seed, holdout_line, split_half_seeds, no_vcc, graph_path, out, **kw):
    """Baselines on a split: general, additive (combinations), nearest cell line (several lines), graph
    neighbours (with --graph), the linear model of Ahlmann-Eltze, Huber & Anders 2025 (linear: PCA
    embedding of the training data + ridge; linear_graph, with --graph: the graph's spectral embedding for
    the perturbed genes) and split-half experimental reproducibility.

    \b
    Example:
      txpert baseline --data norman.h5ad --batch-col batch --task double -o runs/base
      txpert baseline --data papalexi.h5ad --batch-col auto --graph graphs/multi.kg.npz \\
          -o runs/base_graph    # is my map graph informative?
    """
    from txpert_head.runs.folder import baseline_run

    report = baseline_run(_data_opts(kw), task, out, split_seed, holdout_line, split_half_seeds,
                          vcc=not no_vcc, graph_path=graph_path)
    click.echo(f"{'baseline':<22}{'pearson_delta':>14}{'retrieval':>11}{'mse':>10}")
    for name, s in report["baselines"].items():
        click.echo(f"{name:<22}{s['pearson_delta']:>14.4f}{s['retrieval']:>11.4f}{s['mse']:>10.4f}")
    _print_vcc(report.get("vcc"))
    click.echo(f"wrote {out}")


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@data_options
@click.option("--group", "groups", multiple=True,
              help="Only this group (a label of --perturbation-col, or LINE|label); repeatable. Default: all.")
@click.option("--candidates", "candidates_file", type=click.Path(dir_okay=False), default=None,
              help="File of candidate genes, one per line. Default: every gene of the run's graph.")
@click.option("--score", type=click.Choice(["pearson", "cosine", "neg_l2"]), default="pearson", show_default=True,
              help="Match of predicted and observed Δ: Pearson correlation, cosine, or minus the L2 distance.")
@click.option("--scope", type=click.Choice(["graph", "trained"]), default="graph", show_default=True,
              help="graph: all nodes of the run's graph file; trained: only the genes the run's data perturbs.")
@click.option("--center", is_flag=True,
              help="Subtract the candidates' mean predicted change from both sides first (background removal).")
@click.option("--top", type=int, default=None, help="Write only the best N genes per group (default: all).")
@click.option("--control-cells", type=int, default=16, show_default=True,
              help="Control cells drawn per batch (only for basal=mlp with control_mode batch/random).")
@click.option("--evaluate", "evaluate_labels", is_flag=True,
              help="The group labels are the true targets: also report MRR, hit@k and recall@k.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
              help="Ranked table (.tsv, or .csv); a summary goes to <name>.summary.json beside it.")
@user_errors(*ERRORS)
def identify(run_dir, groups, candidates_file, score, scope, center, top, control_cells, evaluate_labels, out, **kw):
    """Which gene was perturbed? Rank candidate genes for each group of cells of an .h5ad by how well
    the trained model's predicted change for that gene matches the group's observed change.

    The groups are the labels of --perturbation-col (any label; rows with a --control label are the
    matched controls, per --batch-col batch). For every candidate gene -- every gene of the run's graph,
    including genes never perturbed in training -- the model predicts the single-gene change from the
    group's own controls; candidates are ranked by the Pearson correlation (--score) of predicted and
    observed change (group mean minus batch-matched control mean); --center first removes the change
    the model predicts for a typical candidate, so specific matches count. Writes OUT with columns
    group, rank, gene, score and OUT's .summary.json (top genes per group).

    \b
    Examples:
      txpert identify runs/papalexi --data screen.h5ad --perturbation-col guide_group \\
          --control non-targeting --batch-col bio_rep -o ranked.tsv
      txpert identify runs/norman --data norman.h5ad --batch-col batch \\
          --group KLF1 --group CEBPE+RUNX1T1 --top 50 --evaluate -o ranked.csv
    """
    from txpert_head.runs.identify import identify_run

    summary = identify_run(run_dir, _data_opts(kw), out, list(groups) or None, candidates_file, score, scope, top,
                           control_cells, evaluate_labels, center=center)
    click.echo(f"{summary['n_candidates']} candidate genes, score {score}{' (centred)' if center else ''}")
    for g in summary["groups"]:
        best = ", ".join(f"{gene} ({s:.3f})" for gene, s in g["top"][:5])
        click.echo(f"{g['group']} ({g['cells']} cells): {best}")
    if "evaluation" in summary:
        ev = summary["evaluation"]
        click.echo(f"{'':<10}{'MRR':>8}" + "".join(f"{f'hit@{k}':>9}{f'recall@{k}':>11}" for k in (10, 20, 40)))
        for name in ("model", "random"):
            m = ev[name]
            click.echo(f"{name:<10}{m['mrr']:>8.4f}" + "".join(f"{m[f'hit@{k}']:>9.3f}{m[f'recall@{k}']:>11.3f}"
                                                               for k in (10, 20, 40)))
    click.echo(f"wrote {out}")


@click.command()
@click.option("--predictions", "predictions_path", required=True, type=click.Path(dir_okay=False),
              help="Predictions (.h5ad) of any model: one mean profile per perturbation or cells (averaged per "
                   "perturbation and cell line); log1p expression as in --data, all of its genes.")
@data_options
@click.option("--split", "split_path", default=None, type=click.Path(),
              help="A run's split.json (or run folder): score its --part conditions (all must be predicted). The "
                   "data options, graph and seeds the run recorded in config.json beside it are the defaults. "
                   "Default: every predicted perturbation with truth in --data.")
@click.option("--part", type=click.Choice(["test", "val"]), default="test", show_default=True,
              help="Part of --split to score.")
@click.option("--pred-perturbation-col", default=None,
              help="obs column of the predictions with the perturbation (A, A+B, A+ctrl, ctrl or LINE|A+B). "
                   "Default: detected (by name, then by content, then the obs names).")
@click.option("--pred-cell-line-col", default=None,
              help="obs column of the predictions with the cell line (default: LINE| of the labels, a column "
                   "named cell_line / cell_type, or the data's only line).")
@click.option("--graph", "graph_path", default=None, type=click.Path(dir_okay=False, exists=True),
              help="Multigraph file (.kg.npz) for the graph_neighbours and linear_graph baselines (default: the "
                   "run's graph with --split of a run folder).")
@click.option("--no-baselines", is_flag=True, help="Skip the baselines and the paired comparison.")
@click.option("--split-half-seeds", type=click.IntRange(min=0), default=5, show_default=True,
              help="Draws of the split-half reproducibility ceiling (0 skips it).")
@click.option("--seed", type=int, default=None,
              help="Seed of the baselines and the paired test (default: the split's, else 0).")
@click.option("--name", default="prediction", show_default=True, help="Name of the predictions in the table.")
@click.option("-o", "--out", default=None, type=click.Path(file_okay=False),
              help="Folder for metrics.json and per_perturbation.csv (default: print only).")
@user_errors(*ERRORS)
@click.pass_context
def score(ctx, predictions_path, split_path, part, pred_perturbation_col, pred_cell_line_col, graph_path,
          no_baselines, split_half_seeds, seed, name, out, **kw):
    """Score any model's predictions with TxPert's metrics, baselines and paired comparison: the truth is
    --data's batch-matched reference profiles exactly as `txpert train` / `evaluate` compute them, so a TxPert
    run's own predictions give `evaluate`'s figures. Prints the table and, with -o, writes OUT/metrics.json
    and OUT/per_perturbation.csv (one row per condition).

    \b
    Examples:
      txpert score --predictions gears_pred.h5ad --data norman.h5ad --split runs/norman/split.json -o scored
      txpert score --predictions cells.h5ad --data papalexi.h5ad --batch-col bio_rep --no-baselines
    """
    from click.core import ParameterSource

    from txpert_head.runs.folder import write_csv, write_json
    from txpert_head.runs.scoring import score_files

    data_path = kw.pop("data_path")
    given = {k: (list(v) if k == "control" else v) for k, v in kw.items()  # the run's config fills the rest
             if ctx.get_parameter_source(k) != ParameterSource.DEFAULT and v not in (None, ())}
    table, summary, paired, taken = score_files(predictions_path, data_path, split_path, part, graph=graph_path,
                                                baselines=not no_baselines, split_half_seeds=split_half_seeds,
                                                seed=seed, perturbation_col=pred_perturbation_col,
                                                cell_line_col=pred_cell_line_col, data_options=given)
    if taken:
        click.echo(f"from the run's config.json: {', '.join(taken)}", err=True)
    if out is not None:
        from kgbuild.outputs import output_errors

        with output_errors(Path(out)):
            Path(out).mkdir(parents=True, exist_ok=True)
            write_json(summary, Path(out) / "metrics.json")
            write_csv(table, Path(out) / "per_perturbation.csv")
    _print_table({"model": summary, "baselines": summary.get("baselines", {}), "paired": paired}, model_name=name)
    if "baselines_skipped" in summary:
        click.echo(f"baselines skipped: {summary['baselines_skipped']}")
    click.echo(f"Systema pearson_delta_pert: {name} {summary['pearson_delta_pert']:.4f}" + "".join(
        f", {k} {v['pearson_delta_pert']:.4f}" for k, v in summary.get("baselines", {}).items()))
    if out is not None:
        click.echo(f"wrote {out}")


COMMANDS = (train, evaluate, predict, baseline, identify, score)
