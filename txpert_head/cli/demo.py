"""``make demo``: the toolkit end to end: source files -> kgbuild graphs -> TxPert -> baselines -> report.

Without ``--data`` (the embedded default) the demo

1. writes the simulated example with ``txpert simulate`` (a ground-truth gene network, STRING / GO /
   Reactome / embedding files that are noisy views of it, and a raw-count Perturb-seq screen whose
   effects propagate over it),
2. builds one graph per source with ``kgbuild string | go | reactome | screen`` and merges them
   (``kgbuild merge``), then makes rewired copies (``kgbuild perturb --rewire``),
3. trains TxPert on unseen single perturbations (and on doubles) with
   :func:`txpert_head.runs.folder.train_run` and evaluates it against the baselines on the same split,
4. trains on the rewired graphs with several seeds (the graph ablation),
5. writes ``OUT/report.md`` and ``OUT/report.html`` (last, atomically) with the figures.

``--data DIR`` runs the same pipeline on real files laid out as the shared data folder (see
:data:`LAYOUT`); every ``.h5ad`` under ``DIR/perturbseq/`` (or the ``--dataset`` files) is trained on,
unseen singles for single-gene screens and doubles for combinatorial ones.

Examples::

    python -m txpert_head.cli.demo                         # simulated, writes demo_out/
    python -m txpert_head.cli.demo --quick --out /tmp/d    # smaller and faster (tests)
    python -m txpert_head.cli.demo --data ../shared/data   # real STRING / GO / Reactome / DepMap + Perturb-seq
    python -m txpert_head.cli.demo --data ../shared/data --dataset perturbseq/norman2019_k562_subset.h5ad
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from kgbuild.labels import BATCH_COLUMNS, CELL_LINE_COLUMNS, CONTROL_LABELS, PERTURBATION_COLUMNS

# The settings of the embedded example: 300 genes, 150 single and 30 double perturbations, 100 cells each.
SIMULATE_ARGS = ["--seed", "0", "--genes", "300", "--singles", "150", "--doubles", "30",
                 "--cells-per-perturbation", "100", "--batches", "3"]
QUICK_SIMULATE_ARGS = ["--seed", "0", "--genes", "200", "--singles", "80", "--doubles", "10",
                       "--cells-per-perturbation", "40", "--batches", "2"]

# TxPert options of the demo: the defaults of `txpert train` (no --set), without progress bars.
TRAIN_OPTIONS: dict[str, Any] = dict(progress=False)
QUICK_TRAIN_OPTIONS = {**TRAIN_OPTIONS, "epochs": 12, "patience": 4}
REWIRE = ("0.5", "1.0")

# --data DIR: where each input is looked for (globs relative to DIR, first match wins; see find_inputs).
LAYOUT: dict[str, tuple[str, ...]] = {
    "string_edges": ("string/*edges*.tsv.gz", "string/*edges*.tsv"),
    "string_links": ("string/*protein.links*.txt.gz", "string/*protein.links*.txt"),
    "string_info": ("string/*protein.info*.txt.gz", "string/*protein.info*.txt"),
    "go_obo": ("go/go-basic.obo", "go/*.obo"),
    "go_gaf": ("go/*.gaf.gz", "go/*.gaf"),
    "reactome_gmt": ("reactome/*.gmt",),
    "screen": ("depmap/*vae*.parquet", "depmap/*.parquet", "screen/*.parquet"),
    "datasets": ("perturbseq/*.h5ad",),
}


def slug(text: str) -> str:
    """``text`` as a file-name part: letters, digits, dots and dashes; everything else becomes ``_``."""
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in text)


class DemoError(RuntimeError):
    """A demo step that cannot run (missing input file, failed command): the message says which and why."""


# ---------------------------------------------------------------------- running and recording steps
@dataclass
class Recorder:
    """Runs the demo's steps, prints progress, logs each command's output and times it."""

    out: Path
    root: Path = field(default_factory=Path.cwd)
    commands: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def show(self, path: str | Path) -> str:
        """A path as the user would type it: relative to the working folder when inside it."""
        p = Path(path)
        try:
            return str(p.resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(p)

    def say(self, text: str) -> None:
        print(f"[demo {time.perf_counter() - self.started:6.1f}s] {text}", flush=True)

    def tool(self, step: str, tool: str, args: Sequence[str | Path]) -> None:
        """Run ``tool args`` (``kgbuild`` or ``txpert``) through its click command, in this process (no
        second start-up of Python and its imports); its output goes to ``OUT/logs/``."""
        import contextlib
        import io

        import click

        from kgbuild.cli_common import setup_logging

        shown = " ".join([tool] + [shlex.quote(self.show(a) if isinstance(a, Path) else str(a)) for a in args])
        self.say(f"{step}: {shown}")
        log = self.out / "logs" / f"{len(self.commands) + 1:02d}_{slug(step)}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        if tool == "kgbuild":
            from kgbuild.cli import main as command
        else:
            from txpert_head.cli.main import main as command
        buf = io.StringIO()
        t = time.perf_counter()
        code, problem = 0, ""
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            try:
                command.main(args=[str(a) for a in args], prog_name=tool, standalone_mode=False)
            except click.ClickException as err:
                code, problem = err.exit_code, err.format_message()
            except SystemExit as err:  # click's own exits (e.g. --help) and sys.exit in commands
                code = err.code if isinstance(err.code, int) else 1
        setup_logging(0)  # the command's log handler wrote into the buffer: back to the real stderr
        log.write_text(f"$ {shown}\n{buf.getvalue()}{problem}\n")
        if code:
            tail = "\n".join(f"{buf.getvalue()}{problem}".strip().splitlines()[-8:])
            raise DemoError(f"step '{step}' failed (exit {code}): {shown}\n{tail}\n(full log: {log})")
        self.commands.append({"step": step, "command": shown, "seconds": time.perf_counter() - t})

    def python(self, step: str, shown: str, fn: Callable[[], Any]) -> Any:
        """Run an in-process step (training); ``shown`` is the equivalent command line for the report."""
        self.say(f"{step}: {shown}")
        t = time.perf_counter()
        value = fn()
        self.commands.append({"step": step, "command": shown, "seconds": time.perf_counter() - t})
        return value


# ---------------------------------------------------------------------- inputs
@dataclass
class Dataset:
    """A Perturb-seq file and how to read it."""

    name: str
    path: Path
    perturbation_col: str
    control: list[str]
    batch_col: str | None
    cell_line_col: str | None
    task: str

    def options(self):
        """The :class:`txpert_head.runs.folder.DataOptions` that read this file (what ``txpert train --data ...`` gets)."""
        from txpert_head.runs.folder import DataOptions

        return DataOptions(str(self.path), self.perturbation_col, list(self.control), self.cell_line_col,
                           self.batch_col)


def find_inputs(data: Path) -> dict[str, Path | list[Path] | None]:
    """The real input files under ``data`` by :data:`LAYOUT`; ``DemoError`` naming what is missing.

    STRING: a symbol edge table (``string/*edges*.tsv.gz``: ``symbol1 symbol2 combined_score``) is used
    when present, else the official ``protein.links`` + ``protein.info`` pair. The screen embedding table
    is optional. At least one ``perturbseq/*.h5ad`` is required.
    """
    if not data.is_dir():
        raise DemoError(f"--data {data}: not a folder")

    def first(key: str) -> Path | None:
        for pattern in LAYOUT[key]:
            hits = sorted(data.glob(pattern))
            if hits:
                return hits[0]
        return None

    found: dict[str, Any] = {k: first(k) for k in LAYOUT if k != "datasets"}
    found["datasets"] = sorted(data.glob(LAYOUT["datasets"][0]))
    missing = []
    if found["string_edges"] is None and (found["string_links"] is None or found["string_info"] is None):
        missing.append("STRING: " + " or ".join(LAYOUT["string_edges"])
                       + ", or both " + LAYOUT["string_links"][0] + " and " + LAYOUT["string_info"][0])
    for key, what in (("go_obo", "GO ontology"), ("go_gaf", "GO annotations"), ("reactome_gmt", "Reactome GMT")):
        if found[key] is None:
            missing.append(f"{what}: {' or '.join(LAYOUT[key])}")
    if not found["datasets"]:
        missing.append(f"Perturb-seq data: {LAYOUT['datasets'][0]}")
    if missing:
        raise DemoError(f"--data {data}: missing input file(s) (paths relative to {data}):\n  "
                        + "\n  ".join(missing))
    return found


def describe_dataset(path: Path, task: str | None = None, perturbation_col: str | None = None,
                     control: Sequence[str] | None = None, batch_col: str | None = None) -> Dataset:
    """Find the perturbation / control / batch / cell-line columns of an ``.h5ad`` (first known name wins)."""
    import anndata

    adata = anndata.read_h5ad(path, backed="r")
    try:
        obs = adata.obs
        cols = list(obs.columns)
        pcol = perturbation_col or next((c for c in PERTURBATION_COLUMNS if c in cols), None)
        if pcol is None or pcol not in cols:
            raise DemoError(f"{path}: no perturbation column (looked for {', '.join(PERTURBATION_COLUMNS)}; "
                            f"obs has {', '.join(cols)}); pass --perturbation-col")
        labels = set(obs[pcol].astype(str).unique())
        ctrl = list(control) if control else [c for c in CONTROL_LABELS if c in labels][:1]
        if not ctrl or not set(ctrl) & labels:
            raise DemoError(f"{path}: no control label in obs['{pcol}'] (looked for {', '.join(control or CONTROL_LABELS)});"
                            f" pass --control")
        bcol = batch_col or next((c for c in BATCH_COLUMNS if c in cols and obs[c].nunique() > 1), None)
        lcol = next((c for c in CELL_LINE_COLUMNS if c in cols and obs[c].nunique() > 1), None)
        combos = any("+" in lab for lab in labels - set(ctrl))
    finally:
        if getattr(adata, "file", None) is not None:
            adata.file.close()
    return Dataset(path.stem, path, pcol, ctrl, bcol, lcol, task or ("double" if combos else "unseen_single"))


# ---------------------------------------------------------------------- graphs
def build_simulated_graphs(rec: Recorder, sim: Path, graphs: Path) -> list[Path]:
    """``kgbuild`` on the four simulated source files; returns the per-layer graph files."""
    from txpert_head.simulate import example_sources as src

    steps = [
        ("string graph", ["string", "--offline", "--links", sim / src.STRING_LINKS, "--info", sim / src.STRING_INFO,
                          "--min-score", "400"]),
        ("go graph", ["go", "--offline", "--obo", sim / src.GO_OBO, "--gaf", sim / src.GO_GAF]),
        ("reactome graph", ["reactome", "--offline", "--gmt", sim / src.REACTOME_GMT]),
        ("screen graph", ["screen", "--embeddings", sim / src.SCREEN_PARQUET, "--top-pct", "1", "--layer-name",
                          "screen"]),
    ]
    return run_kgbuild_steps(rec, steps, graphs)


def run_kgbuild_steps(rec: Recorder, steps: list[tuple[str, list]], graphs: Path) -> list[Path]:
    """Run each ``(step name, kgbuild arguments)``, writing ``graphs/<first word of the name>.kg.npz``."""
    out = []
    for step, args in steps:
        path = graphs / f"{step.split()[0]}.kg.npz"
        rec.tool(step, "kgbuild", [*args, "-o", path])
        out.append(path)
    return out


def build_real_graphs(rec: Recorder, inputs: dict, graphs: Path) -> list[Path]:
    """``kgbuild`` on the real files (the settings of the paper: <= 20 incoming edges, screens top 1 %)."""
    steps = []
    if inputs["string_edges"] is not None:
        steps.append(("string graph", ["edges", "--edges", inputs["string_edges"], "--source-col", "symbol1",
                                       "--target-col", "symbol2", "--weight-col", "combined_score",
                                       "--weight-scale", "0.001", "--symmetric", "--max-in-degree", "20",
                                       "--layer-name", "string"]))
    else:
        steps.append(("string graph", ["string", "--offline", "--links", inputs["string_links"], "--info",
                                       inputs["string_info"]]))
    steps.append(("go graph", ["go", "--offline", "--obo", inputs["go_obo"], "--gaf", inputs["go_gaf"]]))
    steps.append(("reactome graph", ["reactome", "--offline", "--gmt", inputs["reactome_gmt"]]))
    if inputs["screen"] is not None:
        steps.append(("screen graph", ["screen", "--embeddings", inputs["screen"], "--top-pct", "1",
                                       "--max-in-degree", "20", "--layer-name", "depmap"]))
    return run_kgbuild_steps(rec, steps, graphs)


# ---------------------------------------------------------------------- training
def train_one(rec: Recorder, ds: Dataset, graph: Path, task: str, options: dict, seed: int, out: Path,
              step: str, baselines: bool = True) -> dict:
    """:func:`txpert_head.runs.folder.train_run` (what ``txpert train`` calls); returns its metrics dict."""
    from txpert_head.runs.folder import train_run, write_json
    from txpert_head.training.config import TrainConfig

    cfg_file = rec.out / "train_options.json"
    if not cfg_file.exists():
        write_json(options, cfg_file)
    opts = ds.options()
    cfg = TrainConfig.from_dict({**options, "seed": seed})
    shown = (f"txpert train --data {rec.show(ds.path)} --perturbation-col {ds.perturbation_col} "
             + " ".join(f"--control {shlex.quote(c)}" for c in ds.control)
             + (f" --batch-col {ds.batch_col}" if ds.batch_col else "")
             + (f" --cell-line-col {ds.cell_line_col}" if ds.cell_line_col else "")
             + f" --graph {rec.show(graph)} --task {task} --split-seed {seed} --seed {seed}"
             + f" --config {rec.show(cfg_file)} --no-resume" + ("" if baselines else " --no-baselines")
             + f" -o {rec.show(out)}")
    from txpert_head.reporting import plots

    def run() -> dict:
        with plots.context(ds.name):  # the run's figures are titled "<dataset> · <run folder>"
            return train_run(opts, graph, task, cfg, out, split_seed=seed, resume=False, baselines=baselines)

    report = rec.python(step, shown, run)
    pd_model = report["model"]["pearson_delta"]
    general = report.get("baselines", {}).get("general", {}).get("pearson_delta")
    rec.say(f"  -> Pearson Δ {pd_model:.3f}" + (f" (general baseline {general:.3f})" if general is not None else "")
            + f", best epoch {report['best_epoch']}")
    return report


def run_summary(rec: Recorder, name: str, ds: Dataset, task: str, report: dict, run_dir: Path) -> dict:
    plots = {k: rec_rel(rec, run_dir / "plots" / f"{k}.png")
             for k in ("learning_curves", "pearson_vs_general", "predicted_vs_true")
             if (run_dir / "plots" / f"{k}.png").exists()}
    return {"name": name, "dataset": ds.name, "task": task, "run_dir": rec_rel(rec, run_dir),
            "model": report["model"], "baselines": report.get("baselines", {}), "subgroups": report.get("subgroups", {}),
            "paired": report.get("paired", {}),
            "best_epoch": report["best_epoch"], "train_seconds": report["train_seconds"],
            "prior_fit": report.get("prior_fit", {}), "plots": plots}


def paired_detail(report: dict) -> str:
    """How sure the model-versus-general comparison is: ``better on 7/10, sign-flip p 0.02``."""
    c = report.get("paired", {}).get("general")
    if not c or not c["n"]:
        return "no paired comparison"
    return f"better on {c['wins']}/{c['n']} perturbations, sign-flip p {c['p_value']:.3g}"


def rec_rel(rec: Recorder, path: Path) -> str:
    """``path`` relative to the output folder (how the report links it)."""
    return os.path.relpath(path, rec.out)


def graph_ablation(rec: Recorder, ds: Dataset, graphs: dict[str, Path], task: str, options: dict,
                   seeds: Sequence[int], runs: Path, reuse: dict[tuple[str, int], dict] | None = None) -> dict:
    """Train on each graph with each seed (split seed = model seed); Pearson Δ per graph and seed, the
    training-free graph baselines per graph and seed (``graph_neighbours`` and ``linear_graph``: what
    ``txpert baseline --graph`` gives), and the general and linear baselines of each seed's split.
    ``reuse[(graph name, seed)]`` skips runs already done."""
    from kgbuild.graph import MultiGraph
    from txpert_head.evaluation.baselines import run_baselines
    from txpert_head.data.controls import ControlIndex
    from txpert_head.data.splits import make_split

    reuse = dict(reuse or {})
    table: dict[str, list[float]] = {name: [] for name in graphs}
    neighbours: dict[str, list[float]] = {name: [] for name in graphs}
    lin_graph: dict[str, list[float]] = {name: [] for name in graphs}
    general: list[float] = []
    lin: list[float] = []
    data = ds.options().load()  # for the graph baselines: the data, its controls and each graph, read once
    controls = ControlIndex(data)
    loaded = {name: MultiGraph.load(path) for name, path in graphs.items()}
    for seed in seeds:
        split = make_split(data, task, seed=seed)
        for k, (name, path) in enumerate(graphs.items()):
            rep = reuse.get((name, seed))
            if rep is None:
                rep = train_one(rec, ds, path, task, options, seed, runs / f"ablation_{slug(name)}_s{seed}",
                                f"ablation {name} seed {seed}", baselines=(k == 0))
            table[name].append(float(rep["model"]["pearson_delta"]))
            res = run_baselines(data, split, which=("graph_neighbours", "linear_graph"), controls=controls,
                                seed=seed, graph=loaded[name])
            neighbours[name].append(float(res["graph_neighbours"]["summary"]["pearson_delta"]))
            lin_graph[name].append(float(res["linear_graph"]["summary"]["pearson_delta"]))
            if k == 0:
                general.append(float(rep["baselines"]["general"]["pearson_delta"]))
                if "linear" in rep["baselines"]:
                    lin.append(float(rep["baselines"]["linear"]["pearson_delta"]))
    return {"task": task, "seeds": list(seeds), "general": general, "linear": lin,
            "graphs": [{"name": name, "path": rec_rel(rec, graphs[name]), "pearson_delta": table[name],
                        "graph_neighbours": neighbours[name], "linear_graph": lin_graph[name]}
                       for name in graphs]}


def ablation_plot(ab: dict, path: Path, dataset: str | None = None) -> Path:
    """Pearson Δ per graph (points: seeds; bar: mean) with the general baseline as a dashed line."""
    from txpert_head.reporting.plots import _save

    return _save(ablation_figure(ab, dataset), path)


def ablation_figure(ab: dict, dataset: str | None = None):
    """The figure of :func:`ablation_plot` (titled with the dataset)."""
    import numpy as np

    from txpert_head.reporting.plots import plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    names = [g["name"] for g in ab["graphs"]]
    for i, g in enumerate(ab["graphs"]):
        v = np.asarray(g["pearson_delta"], dtype=float)
        ax.bar(i, v.mean(), color=f"C{i}", alpha=0.5)
        ax.scatter(np.full(len(v), i), v, color=f"C{i}", zorder=3, s=16)
    ax.axhline(float(np.mean(ab["general"])), color="k", ls="--", lw=1, label="general baseline (mean)")
    ax.set_xticks(range(len(names)), names)
    ax.set(ylabel="test Pearson Δ", title=f"{ab['task']}, {len(ab['seeds'])} seed(s); points: seeds, bars: mean")
    ax.title.set_fontsize(10)
    ax.legend(fontsize=8, loc="lower left")
    fig.suptitle("Graph ablation" + (f" — {dataset}" if dataset else ""))
    return fig


#: a fully rewired graph must cost TxPert at least this much Pearson Δ (the model uses the graph)
REWIRE_COST = 0.05


def ablation_checks(ab: dict) -> list[dict]:
    """Honest pass/fail lines for the report: the original graph above the general baseline and at least the
    training-free graph-neighbour baseline; a partly rewired graph below the original, a fully rewired one at
    least :data:`REWIRE_COST` below."""
    import numpy as np

    means = {g["name"]: float(np.mean(g["pearson_delta"])) for g in ab["graphs"]}
    gen = float(np.mean(ab["general"]))
    orig = means["original"]
    n = f"mean over {len(ab['seeds'])} seed(s)"
    checks = [{"name": "TxPert on the original graph above the general baseline", "passed": orig > gen,
               "detail": f"{orig:.3f} vs {gen:.3f}, {n}"}]
    neighbours = ab["graphs"][0].get("graph_neighbours")
    if neighbours:
        nb = float(np.mean(neighbours))
        checks.append({"name": "TxPert on the original graph at least the graph-neighbour baseline",
                       "passed": orig >= nb, "detail": f"{orig:.3f} vs {nb:.3f}, {n}"})
    for name, v in means.items():
        if name == "original":
            continue
        if name.startswith("rewire") and float(name.split()[-1]) >= 1.0:
            checks.append({"name": f"{name} graph at least {REWIRE_COST} below the original",
                           "passed": orig - v >= REWIRE_COST, "detail": f"{v:.3f} vs {orig:.3f} ({v - orig:+.3f})"})
        else:
            checks.append({"name": f"{name} graph below the original", "passed": v < orig,
                           "detail": f"{v:.3f} vs {orig:.3f}"})
    return checks


# ---------------------------------------------------------------------- the pipeline
def prepare_out(out: Path) -> None:
    """Create ``out``; remove a previous report first so a failed run never leaves a stale one behind."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("report.md", "report.html", "summary.json"):
        (out / name).unlink(missing_ok=True)
    (out / "train_options.json").unlink(missing_ok=True)


def run_simulated(rec: Recorder, quick: bool, seeds: Sequence[int], doubles: bool) -> dict:
    from kgbuild.graph import MultiGraph
    from txpert_head.reporting import plots

    out = rec.out
    sim, graphs, runs = out / "sim", out / "graphs", out / "runs"
    rec.tool("simulate", "txpert", ["simulate", "-o", sim, *(QUICK_SIMULATE_ARGS if quick else SIMULATE_ARGS)])
    layers = build_simulated_graphs(rec, sim, graphs)
    merged = graphs / "multi.kg.npz"
    rec.tool("merge", "kgbuild", ["merge", *layers, "-o", merged])
    ablated = {"original": merged}
    for p in REWIRE:
        path = graphs / f"multi.rewire{p}.kg.npz"
        rec.tool(f"rewire {p}", "kgbuild", ["perturb", "--rewire", p, "--seed", "0", merged, "-o", path])
        ablated[f"rewire {p}"] = path
    graph = MultiGraph.load(merged)
    degree_png = plots.degree_distribution(graph, out / "figures" / "degree_distribution.png",
                                           title=f"simulated example, {merged.name}")
    ds = Dataset("simulated screen", sim / "perturbseq.h5ad", "perturbation", ["ctrl"], "batch", "cell_line",
                 "unseen_single")
    options = QUICK_TRAIN_OPTIONS if quick else TRAIN_OPTIONS
    run_list, reuse = [], {}
    first = seeds[0]
    main_dir = runs / "unseen_single"
    rep = train_one(rec, ds, merged, "unseen_single", options, first, main_dir, "train unseen singles")
    run_list.append(run_summary(rec, "unseen_single", ds, "unseen_single", rep, main_dir))
    reuse[("original", first)] = rep
    if doubles:
        d_dir = runs / "double"
        rep_d = train_one(rec, ds, merged, "double", options, first, d_dir, "train doubles")
        run_list.append(run_summary(rec, "double", ds, "double", rep_d, d_dir))
    rec.say(f"graph ablation: {len(ablated)} graphs x {len(seeds)} seed(s)")
    ab = graph_ablation(rec, ds, ablated, "unseen_single", options, seeds, runs, reuse)
    ab["plot"] = rec_rel(rec, ablation_plot(ab, out / "figures" / "ablation.png", ds.name))
    main_general = rep["baselines"]["general"]["pearson_delta"]
    checks = [{"name": "TxPert above the general baseline (unseen singles, seed %d)" % first,
               "passed": rep["model"]["pearson_delta"] > main_general,
               "detail": f"Pearson Δ {rep['model']['pearson_delta']:.3f} vs {main_general:.3f}; "
                         f"{paired_detail(rep)}"}]
    checks += ablation_checks(ab)
    notes = ["The simulated screen: knock-downs propagate over a ground-truth network of dense gene modules "
             "(`sim/truth/`); the STRING, GO, Reactome and embedding files are noisy, partial views of it "
             "(`sim/README.md`). Unseen single perturbations can only be predicted from the graph neighbours "
             "that were seen in training."]
    neighbours = rep.get("baselines", {}).get("graph_neighbours", {}).get("pearson_delta")
    if neighbours is not None:
        notes.append(f"The graph-neighbour baseline (no training: an unseen gene's change is the weighted mean of its "
                     f"trained graph neighbours' changes) scores {neighbours:.3f} on the unseen singles, TxPert "
                     f"{rep['model']['pearson_delta']:.3f}. "
                     + ("TxPert starts from this estimate (its untrained prior, epoch 0) but scores below it on this "
                        "split: the training that validation chose did not carry over to the test perturbations."
                        if neighbours > rep["model"]["pearson_delta"] else
                        "TxPert starts from this estimate (its untrained prior, epoch 0; docs/training-and-evaluation.md) "
                        "and gets more out of the graph than neighbour averaging."))
    linear = {k: rep.get("baselines", {}).get(k, {}).get("pearson_delta") for k in ("linear", "linear_graph")}
    if any(v is not None for v in linear.values()):
        notes.append("The linear baselines of Ahlmann-Eltze et al. 2025 (no training beyond a closed-form ridge fit: "
                     "a PCA embedding of the training data, or the graph's spectral embedding for the perturbed "
                     "genes; docs/metrics.md) score "
                     + " and ".join(f"{v:.3f} (`{k}`)" for k, v in linear.items() if v is not None)
                     + f" on the unseen singles, TxPert {rep['model']['pearson_delta']:.3f}.")
    if doubles:
        notes.append("Doubles: the simulated combinations are the sum of their singles plus a small interaction, so "
                     "for a double whose two singles were both trained on, the general/additive baseline (the sum "
                     "of the two measured single changes) is close to the experimental ceiling; TxPert starts from "
                     "that sum (its prior for trained genes) and can only add a correction.")
    return {"mode": "simulated", "data": f"`txpert simulate` example in `{rec_rel(rec, sim)}`", "notes": notes,
            "graph": {"path": rec.show(merged), "summary_text": graph.format_summary(),
                      "degree_plot": rec_rel(rec, degree_png)},
            "runs": run_list, "ablation": ab, "checks": checks}


def run_real(rec: Recorder, data: Path, quick: bool, seed: int, datasets: Sequence[Path], task: str | None,
             perturbation_col: str | None, control: Sequence[str] | None, batch_col: str | None) -> dict:
    from kgbuild.graph import MultiGraph
    from txpert_head.reporting import plots

    inputs = find_inputs(data)
    files = [p if p.is_absolute() or p.exists() else data / p for p in datasets] or inputs["datasets"]
    for f in files:
        if not f.is_file():
            raise DemoError(f"--dataset {f}: no such file")
    described = [describe_dataset(f, task, perturbation_col, control, batch_col) for f in files]
    graphs, runs = rec.out / "graphs", rec.out / "runs"
    layers = build_real_graphs(rec, inputs, graphs)
    merged = graphs / "multi.kg.npz"
    rec.tool("merge", "kgbuild", ["merge", *layers, "-o", merged])
    graph = MultiGraph.load(merged)
    degree_png = plots.degree_distribution(graph, rec.out / "figures" / "degree_distribution.png",
                                           title=f"{rec.show(data)}, {merged.name}")
    # real graphs are large: restrict each run to the perturbed genes' 2-hop receptive field (exact for the
    # 2 message-passing layers, much faster)
    options = QUICK_TRAIN_OPTIONS if quick else TRAIN_OPTIONS
    run_list, checks, notes = [], [], []
    for ds in described:
        run_dir = runs / f"{slug(ds.name)}_{ds.task}"
        try:
            rep = train_one(rec, ds, merged, ds.task, options, seed, run_dir, f"train {ds.name}")
        except (ValueError, KeyError) as err:  # data / split problems of one file: report them, go on
            rec.say(f"  -> {ds.name}: could not train ({err})")
            notes.append(f"`{rec.show(ds.path)}` ({ds.task}): not trained: {err}")
            checks.append({"name": f"{ds.name}: trained", "passed": False, "detail": str(err).splitlines()[0]})
            continue
        run_list.append(run_summary(rec, ds.task, ds, ds.task, rep, run_dir))
        gen = rep["baselines"]["general"]["pearson_delta"]
        checks.append({"name": f"{ds.name}: TxPert above the general baseline", "passed": rep["model"]["pearson_delta"] > gen,
                       "detail": f"Pearson Δ {rep['model']['pearson_delta']:.3f} vs {gen:.3f} (one seed); "
                                 f"{paired_detail(rep)}"})
    return {"mode": "real data", "data": f"`{rec.show(data)}`",
            "graph": {"path": rec.show(merged), "summary_text": graph.format_summary(),
                      "degree_plot": rec_rel(rec, degree_png)},
            "runs": run_list, "ablation": None, "checks": checks,
            "notes": notes + ["Real data: one seed per dataset; no graph ablation (run benchmarks/ablation_rewire.py "
                      "for the simulated one). Input files found by the layout convention: "
                      + ", ".join(f"{k} = `{rec.show(v)}`" for k, v in inputs.items()
                                  if isinstance(v, Path))]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m txpert_head.cli.demo", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[0],
        epilog="Layout of --data DIR (globs relative to DIR, first match wins):\n" + "\n".join(
            f"  {k:<14} {' | '.join(v)}" for k, v in LAYOUT.items())
        + "\n\nExamples:\n  python -m txpert_head.cli.demo\n  python -m txpert_head.cli.demo --quick --out /tmp/demo\n"
          "  python -m txpert_head.cli.demo --data ../shared/data")
    parser.add_argument("--data", type=Path, default=None,
                        help="folder of real source files and .h5ad data (default: simulate the example)")
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    parser.add_argument("--quick", action="store_true", help="smaller example and shorter training (tests)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="seeds of the graph ablation (default: 0 1 2; --quick: 0); the first is the main run's")
    parser.add_argument("--no-doubles", action="store_true", help="simulated mode: skip the doubles run")
    parser.add_argument("--dataset", type=Path, action="append", default=[],
                        help="--data mode: .h5ad to use (repeatable; relative to --data; default: all perturbseq/*.h5ad)")
    parser.add_argument("--task", default=None, choices=["unseen_single", "double"],
                        help="--data mode: the task of every dataset (default: double when it has combinations)")
    parser.add_argument("--perturbation-col", default=None, help="--data mode: obs column of perturbations")
    parser.add_argument("--control", action="append", default=None, help="--data mode: control label (repeatable)")
    parser.add_argument("--batch-col", default=None, help="--data mode: obs column of batches")
    args = parser.parse_args(argv)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    out = args.out
    from kgbuild.cli_common import setup_logging

    setup_logging(0)
    if "OMP_NUM_THREADS" not in os.environ:
        # the demo's models are small (hundreds of genes, width 32): one thread per process is as fast as two
        # and far faster than two competing with other work on a shared 2-core machine
        import torch

        torch.set_num_threads(1)
    prepare_out(out)
    rec = Recorder(out)
    rec.say(f"writing into {out.resolve()}")
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    try:
        if args.data is None:
            result = run_simulated(rec, args.quick, seeds, doubles=not args.no_doubles)
        else:
            result = run_real(rec, args.data, args.quick, seeds[0], args.dataset, args.task, args.perturbation_col,
                              args.control, args.batch_col)
    except DemoError as err:
        print(f"demo: error: {err}", file=sys.stderr)
        return 1
    from txpert_head.reporting.report import write_report
    from txpert_head.runs.folder import write_json

    result.update({"title": "TxPert demo report", "started": started, "commands": rec.commands,
                   "wall_seconds": time.perf_counter() - rec.started})
    write_json(result, out / "summary.json")
    paths = write_report(result, out)
    for c in result["checks"]:
        rec.say(f"{'PASS' if c['passed'] else 'FAIL'}: {c['name']} ({c['detail']})")
    rec.say(f"report: {' and '.join(str(p) for p in paths)} (wall time {result['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
