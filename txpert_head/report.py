"""The demo report: one list of blocks rendered twice, as Markdown (``report.md``) and HTML (``report.html``).

A report is built from a plain dictionary (what :mod:`txpert_head.demo` collects, also written as
``summary.json``)::

    {"title", "mode", "data", "started", "wall_seconds",
     "commands": [{"step", "command", "seconds"}],
     "graph": {"summary_text", "degree_plot", "path"},
     "runs": [{"name", "dataset", "task", "run_dir", "model": {metric: value}, "baselines": {name: {...}},
               "subgroups": {...}, "paired": {baseline: paired comparison}, "best_epoch", "train_seconds",
               "plots": {"learning_curves", ...}}],
     "ablation": {"task", "seeds", "graphs": [{"name", "path", "pearson_delta": [per seed],
                                                "graph_neighbours": [per seed], "linear_graph": [per seed]}],
                  "general": [per seed], "linear": [per seed]} | None,
     "checks": [{"name", "passed", "detail"}],
     "notes": [str]}

Image paths are relative to the report's folder; :func:`write_report` refuses to write a report that
points at a missing PNG. Both files are written atomically (temporary file, then rename), the report last
of all the demo's outputs, so a report on disk always describes a finished run.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kgbuild.atomic import atomic_write

METRICS = (("pearson_delta", "Pearson Δ", "higher is better"), ("retrieval", "retrieval", "higher is better"),
           ("mse", "MSE", "lower is better"))
BASELINE_LABELS = {"general": "general baseline", "additive": "additive baseline",
                   "nearest_cell_line": "nearest cell line", "graph_neighbours": "graph neighbours (no training)",
                   "linear": "linear (Ahlmann-Eltze et al. 2025)",
                   "linear_graph": "linear, graph spectral embedding",
                   "split_half": "split-half (experimental ceiling)"}

Block = tuple  # ("h", level, text) | ("p", text) | ("list", items) | ("code", text) | ("table", header, rows)
#              | ("img", alt, path)


# ---------------------------------------------------------------------- formatting helpers
def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table cell: ``-`` for missing / NaN."""
    if value is None:
        return "-"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{int(value):,}"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "-" if not np.isfinite(v) else f"{v:.{digits}f}"


def mean_sd(values: Sequence[float], digits: int = 3) -> str:
    """``mean ± sd`` (sample sd) of the finite values; just the value for one; ``-`` for none."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return "-"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else f"{v.mean():.{digits}f}"


def seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


# ---------------------------------------------------------------------- content
def metrics_table(run: dict) -> Block:
    """Model, its subgroups and every baseline on the run's test split."""
    rows = [["TxPert (this run)", *(fmt(run["model"].get(k)) for k, _, _ in METRICS),
             fmt(run["model"].get("n_perturbations"))]]
    for name, vals in run.get("subgroups", {}).items():
        rows.append([f"TxPert, {name}", *(fmt(vals.get(k)) for k, _, _ in METRICS), fmt(vals.get("n_perturbations"))])
    for name, vals in run.get("baselines", {}).items():
        rows.append([BASELINE_LABELS.get(name, name), *(fmt(vals.get(k)) for k, _, _ in METRICS),
                     fmt(vals.get("n_perturbations"))])
    header = ["method", *(f"{label} ({hint})" for _, label, hint in METRICS), "test perturbations"]
    return ("table", header, rows)


def paired_table(paired: dict) -> Block:
    """TxPert minus each baseline in Pearson Δ, paired over the test perturbations (txpert_head.paired)."""
    rows = [[BASELINE_LABELS.get(name, name), f"{c['difference']:+.3f}",
             f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]", f"{c['wins']}/{c['n']}", f"{c['p_value']:.3g}"]
            for name, c in paired.items() if c["n"]]
    header = ["TxPert minus", "Pearson Δ difference", "95% bootstrap interval", "TxPert better on",
              "sign-flip p (no difference)"]
    return ("table", header, rows)


def ablation_blocks(ab: dict) -> list[Block]:
    seeds = ", ".join(str(s) for s in ab["seeds"])
    rows = [[g["name"], f"`{g['path']}`", mean_sd(g["pearson_delta"]), " / ".join(fmt(v) for v in g["pearson_delta"]),
             mean_sd(g.get("graph_neighbours", [])), mean_sd(g.get("linear_graph", []))] for g in ab["graphs"]]
    rows.append(["general baseline (no graph)", "-", mean_sd(ab["general"]), " / ".join(fmt(v) for v in ab["general"]),
                 "-", "-"])
    if ab.get("linear"):
        rows.append(["linear baseline (no graph)", "-", mean_sd(ab["linear"]),
                     " / ".join(fmt(v) for v in ab["linear"]), "-", "-"])
    blocks: list[Block] = [
        ("h", 2, "Graph ablation: original versus rewired graphs"),
        ("p", f"TxPert trained on the {ab['task']} task with the same settings on each graph; split seed = model "
              f"seed = {seeds}. Rewired graphs come from `kgbuild perturb --rewire P` (each layer keeps its "
              f"edge count and every node its in-degree; a fraction P of the edges get new sources), so only "
              f"*which* genes are linked changes. Test Pearson Δ, mean ± sd over seeds:"),
        ("table", ["graph", "file", "TxPert Pearson Δ (mean ± sd)", "per seed",
                   "graph-neighbour baseline (no training)", "linear graph baseline (no training)"], rows),
    ]
    if ab.get("plot"):
        blocks.append(("img", "Pearson Δ per graph and seed", ab["plot"]))
    blocks.append(("p", "Reading the table: the gap between the general baseline and the rewired graphs is what "
                        "TxPert learns without useful neighbourhoods (the knock-down of the perturbed gene itself, "
                        "through the target-gene term, and the shared change); the gap between the rewired graphs "
                        "and the original is what the graph's structure carries to unseen perturbations. With a "
                        "rewired graph the validation score typically peaks in the first epochs and falls as the "
                        "model fits the wrong neighbourhoods. The graph-neighbour column needs no training: each "
                        "unseen gene gets the weighted mean change of its trained graph neighbours (`graph_neighbours`, "
                        "docs/metrics.md), so it shows how much signal each graph's neighbourhoods carry. The "
                        "linear baselines need no training either: the linear model of Ahlmann-Eltze et al. 2025 "
                        "(`linear`, its own row: PCA embedding of the training data, ridge fit in closed form) and "
                        "the same with each graph's spectral embedding for the perturbed genes (`linear_graph`, "
                        "last column), the simple baselines deep models have so far failed to beat."))
    return blocks


def build_blocks(result: dict) -> list[Block]:
    """The report's content, in order (see the module docstring for ``result``)."""
    b: list[Block] = [("h", 1, result.get("title", "TxPert demo report"))]
    b.append(("p", f"Mode: **{result['mode']}** ({result['data']}). Started {result['started']}; "
                   f"wall time {seconds(result['wall_seconds'])}."))
    if result.get("checks"):
        b.append(("list", [f"{'PASS' if c['passed'] else 'FAIL'}: {c['name']} ({c['detail']})"
                           for c in result["checks"]]))
    for note in result.get("notes", []):
        b.append(("p", note))

    b.append(("h", 2, "Commands run"))
    b.append(("p", "In order, from the folder the demo was started in (the demo runs the same command-line tools a user types; "
                   "training runs in-process through `txpert_head.run.train_run`, the function behind "
                   "`txpert train`, with the options file shown):"))
    b.append(("code", "\n".join(f"{c['command']}    # {seconds(c['seconds'])}" for c in result["commands"])))

    g = result["graph"]
    b.append(("h", 2, "Graph"))
    b.append(("p", f"`{g['path']}` (`kgbuild info`):"))
    b.append(("code", g["summary_text"]))
    b.append(("img", "in-degree distribution per layer", g["degree_plot"]))

    for run in result["runs"]:
        b.append(("h", 2, f"TxPert on {run['dataset']}: {run['task']}"))
        b.append(("p", f"Run folder `{run['run_dir']}`; best epoch {run['best_epoch']}, training "
                       f"{seconds(run['train_seconds'])}. Metrics on the held-out test perturbations "
                       f"(means over perturbations):"))
        b.append(metrics_table(run))
        if run.get("paired"):
            b.append(paired_table(run["paired"]))
        plots = run.get("plots", {})
        for key, alt, text in (
                ("learning_curves", "learning curves", "Learning curves (training loss, validation Pearson Δ):"),
                ("pearson_vs_general", "per-perturbation Pearson Δ, model vs general baseline",
                 "Per test perturbation, Pearson Δ of TxPert (y) against the general baseline (x); points "
                 "above the diagonal are perturbations where the model wins:"),
                ("predicted_vs_true", "predicted vs true change",
                 "Predicted versus true change over all genes for example test perturbations:")):
            if plots.get(key):
                b.append(("p", text))
                b.append(("img", alt, plots[key]))

    if result.get("ablation"):
        b.extend(ablation_blocks(result["ablation"]))

    b.append(("h", 2, "Timings"))
    b.append(("table", ["step", "seconds"],
              [[c["step"], f"{c['seconds']:.1f}"] for c in result["commands"]]
              + [["total (wall)", f"{result['wall_seconds']:.1f}"]]))
    return b


# ---------------------------------------------------------------------- renderers
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<!\*)\*(?!\*)(.+?)(?<!\*)\*(?!\*)")
_CODE = re.compile(r"`([^`]+)`")


def inline_html(text: str) -> str:
    """Escape ``text`` and turn Markdown ```code```, ``**bold**`` and ``*italic*`` into tags."""
    parts = _CODE.split(text)
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"<code>{html.escape(part)}</code>")
        else:
            s = html.escape(part)
            s = _BOLD.sub(r"<strong>\1</strong>", s)
            out.append(_ITALIC.sub(r"<em>\1</em>", s))
    return "".join(out)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append(f"{'#' * block[1]} {block[2]}")
        elif kind == "p":
            out.append(block[1])
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in block[1]))
        elif kind == "code":
            out.append(f"```\n{block[1]}\n```")
        elif kind == "table":
            header, rows = block[1], block[2]
            lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
                     "|" + "|".join(" --- " for _ in header) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "img":
            out.append(f"![{block[1]}]({block[2]})")
        else:
            raise ValueError(f"unknown report block {kind!r}")
    return "\n\n".join(out) + "\n"


def to_html(blocks: Sequence[Block], title: str) -> str:
    body: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            body.append(f"<h{block[1]}>{inline_html(block[2])}</h{block[1]}>")
        elif kind == "p":
            body.append(f"<p>{inline_html(block[1])}</p>")
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{inline_html(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "code":
            body.append(f"<pre>{html.escape(block[1])}</pre>")
        elif kind == "table":
            head = "".join(f"<th>{inline_html(str(h))}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{inline_html(str(c))}</td>" for c in row) + "</tr>"
                           for row in block[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            src = html.escape(block[2], quote=True)
            body.append(f'<p><a href="{src}"><img src="{src}" alt="{html.escape(block[1], quote=True)}"></a></p>')
        else:
            raise ValueError(f"unknown report block {kind!r}")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.4}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
             "text-align:left}pre{background:#f4f4f4;padding:8px;overflow-x:auto;font-size:85%}"
             "img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def image_paths(blocks: Sequence[Block]) -> list[str]:
    return [b[2] for b in blocks if b[0] == "img"]


def write_report(result: dict, out_dir: str | Path, html_too: bool = True) -> list[Path]:
    """Write ``out_dir/report.md`` (and ``report.html``); returns the paths written.

    Raises ``FileNotFoundError`` naming the image when a referenced PNG does not exist (nothing written).
    """
    out_dir = Path(out_dir)
    blocks = build_blocks(result)
    missing = [p for p in image_paths(blocks) if not (out_dir / p).is_file()]
    if missing:
        raise FileNotFoundError(f"report images missing under {out_dir}: {', '.join(missing)}")
    written = []
    if html_too:
        text = to_html(blocks, result.get("title", "TxPert demo report"))
        written.append(atomic_write(out_dir / "report.html", lambda fh: fh.write(text.encode("utf-8"))))
    md = to_markdown(blocks)
    written.append(atomic_write(out_dir / "report.md", lambda fh: fh.write(md.encode("utf-8"))))
    return [Path(p) for p in written]
