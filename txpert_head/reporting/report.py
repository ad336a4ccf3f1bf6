"""The demo report: one list of blocks rendered twice, as Markdown (``report.md``) and HTML (``report.html``).

A report is built from a plain dictionary (what :mod:`txpert_head.cli.demo` collects, also written as
``summary.json``)::

    {"title", "mode", "data", "started", "wall_seconds",
     "commands": [{"step", "command", "seconds"}],
     "graph": {"summary_text", "degree_plot", "path"},
     "runs": [{"name", "dataset", "task", "run_dir", "model": {metric: value}, "baselines": {name: {...}},
               "subgroups": {...}, "paired": {baseline: paired comparison}, "best_epoch", "train_seconds",
               "prior_fit": {"kappa", "beta_<layer>", ...} (optional), "plots": {"learning_curves", ...}}],
     "ablation": {"task", "seeds", "graphs": [{"name", "path", "pearson_delta": [per seed],
                                                "graph_neighbours": [per seed], "linear_graph": [per seed]}],
                  "general": [per seed], "linear": [per seed]} | None,
     "checks": [{"name", "passed", "detail"}],
     "notes": [str]}

Image paths are relative to the report's folder; :func:`write_report` refuses to write a report that
points at a missing PNG. ``report.md`` links the PNGs by those relative paths; ``report.html`` embeds each
as a base64 data URI, so it can be shared as one file. Both files are written atomically (temporary file, then rename), the report last
of all the demo's outputs, so a report on disk always describes a finished run.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from gnn.effects import layer_trust_text
from kgbuild.atomic import atomic_write

METRICS = (("pearson_delta", "Pearson Δ", "higher is better"), ("retrieval", "retrieval", "higher is better"),
           ("mse", "MSE", "lower is better"),
           ("pearson_delta_pert", "Pearson Δ vs perturbed mean (Systema)", "higher is better"),
           ("centroid_accuracy", "centroid accuracy (Systema)", "higher is better"),
           ("perturbench_rank", "rank (PerturBench)", "lower is better"))
BASELINE_LABELS = {"general": "general baseline", "additive": "additive baseline",
                   "nearest_cell_line": "nearest cell line", "graph_neighbours": "graph neighbours (no training)",
                   "linear": "linear (Ahlmann-Eltze et al. 2025)",
                   "linear_graph": "linear, graph spectral embedding",
                   "split_half": "split-half (experimental ceiling)"}

CHECK_MARK = {True: "✓ pass", False: "✗ FAIL"}

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
SUBGROUP_LABELS = {"seen0": "neither gene trained", "seen1": "one gene trained", "seen2": "both genes trained"}
#: baselines that, for a double whose two genes were both trained as singles, all predict the sum of the two
#: measured single changes
SUM_OF_SINGLES = {"general", "additive", "graph_neighbours"}


def _numbers(vals: dict) -> tuple:
    """What a table row shows of a result: its formatted metrics and count."""
    return (*(fmt(vals.get(k)) for k, _, _ in METRICS), fmt(vals.get("n_perturbations")))


def whole_test_subgroups(run: dict) -> list[str]:
    """Subgroups holding every test perturbation: their row would repeat the model's row."""
    n = run["model"].get("n_perturbations")
    return [name for name, vals in run.get("subgroups", {}).items()
            if n is not None and vals.get("n_perturbations") == n]


def identical_baselines(run: dict) -> list[list[str]]:
    """Groups of two or more baselines whose rows show the same numbers (all metrics, to 3 decimals)."""
    groups: dict[tuple, list[str]] = {}
    for name, vals in run.get("baselines", {}).items():
        key = _numbers(vals)
        if any(v != "-" for v in key[:-1]):
            groups.setdefault(key, []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def metrics_notes(run: dict) -> list[str]:
    """One line per coincidence in :func:`metrics_table` that would otherwise look like a bug."""
    notes = []
    n = run["model"].get("n_perturbations")
    all_seen2 = "seen2" in whole_test_subgroups(run)
    for name in whole_test_subgroups(run):
        what = SUBGROUP_LABELS.get(name, name)
        notes.append(f"Subgroup `{name}` ({what}) is the whole test set ({fmt(n)} perturbations), so its row "
                     f"would repeat TxPert's and is left out.")
    for names in identical_baselines(run):
        labels = " = ".join(BASELINE_LABELS.get(x, x) for x in names)
        if set(names) <= SUM_OF_SINGLES and run.get("task") == "double":
            scope = ("every test double has both genes trained as singles" if all_seen2 else
                     "on the test doubles whose two genes were both trained as singles")
            notes.append(f"Identical rows ({labels}) are expected: {scope}, and for such a double each of these "
                         f"baselines predicts the sum of the two measured single changes (graph neighbours "
                         f"are only consulted for genes without a measured single; docs/metrics.md).")
        else:
            notes.append(f"Identical rows ({labels}): these baselines make the same predictions on this test "
                         f"set (same numbers to 3 decimals), not a copying error.")
    return notes


def metrics_table(run: dict) -> Block:
    """Model, its subgroups and every baseline on the run's test split (a subgroup that is the whole test set
    is left out: :func:`metrics_notes` says so)."""
    results = [run["model"], *run.get("subgroups", {}).values(), *run.get("baselines", {}).values()]
    # the first three always; the later ones (Systema, PerturBench) when a result has them (older runs do not)
    shown = [m for i, m in enumerate(METRICS) if i < 3 or any(r.get(m[0]) is not None for r in results)]
    rows = [["TxPert (this run)", *(fmt(run["model"].get(k)) for k, _, _ in shown),
             fmt(run["model"].get("n_perturbations"))]]
    whole = set(whole_test_subgroups(run))
    for name, vals in run.get("subgroups", {}).items():
        if name in whole:
            continue
        rows.append([f"TxPert, {name}", *(fmt(vals.get(k)) for k, _, _ in shown), fmt(vals.get("n_perturbations"))])
    for name, vals in run.get("baselines", {}).items():
        rows.append([BASELINE_LABELS.get(name, name), *(fmt(vals.get(k)) for k, _, _ in shown),
                     fmt(vals.get("n_perturbations"))])
    header = ["method", *(f"{label} ({hint})" for _, label, hint in shown), "test perturbations"]
    return ("table", header, rows)


def paired_table(paired: dict) -> Block:
    """TxPert minus each baseline in Pearson Δ, paired over the test perturbations (txpert_head.metrics.paired)."""
    def bound(v: Any) -> str:  # an infinite bound (too few perturbations) is null in metrics.json
        return "unbounded" if v is None or not np.isfinite(v) else f"{v:+.3f}"

    rows = [[BASELINE_LABELS.get(name, name), f"{c['difference']:+.3f}",
             f"[{bound(c['ci_low'])}, {bound(c['ci_high'])}]", f"{c['wins']}/{c['n']}",
             f"{c['p_value']:.3g}" + (f" (smallest possible {c['min_p']:.3g})"
                                      if c.get("min_p") is not None and c["min_p"] >= 0.05 else "")]
            for name, c in paired.items() if c["n"]]
    header = ["TxPert minus", "Pearson Δ difference", "95% interval (sign-flip test inverted)", "TxPert better on",
              "sign-flip p (no difference)"]
    return ("table", header, rows)


def ablation_notes(ab: dict) -> list[str]:
    """A line for each set of graphs whose TxPert scores are identical for every seed (to 3 decimals)."""
    groups: dict[tuple, list[dict]] = {}
    for g in ab["graphs"]:
        key = tuple(fmt(v) for v in g["pearson_delta"])
        if key and any(v != "-" for v in key):
            groups.setdefault(key, []).append(g)
    notes = []
    for same in (gs for gs in groups.values() if len(gs) > 1):
        names = " and ".join(g["name"] for g in same)
        nb = [mean_sd(g.get("graph_neighbours", [])) for g in same]
        differ = len(set(nb)) > 1 and "-" not in nb
        notes.append(f"Note: {names} give identical TxPert Pearson Δ for every seed (to 3 decimals). "
                     + ("The graphs themselves differ (their graph-neighbour baselines: " + " vs ".join(nb) + "), "
                        "so the rows are separate runs, not a copy: TxPert's test predictions did not depend on "
                        "which of these graphs it was given. "
                        if differ else "Their graph-neighbour baselines are identical too. ")
                     + "The checks above compare each graph with the original on its own, so both can pass.")
    return notes


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
    for note in ablation_notes(ab):
        blocks.append(("p", note))
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
        checks = result["checks"]
        passed = sum(bool(c["passed"]) for c in checks)
        b.append(("h", 2, "Results"))
        b.append(("p", f"{passed} of {len(checks)} checks passed."))
        b.append(("table", ["", "check", "detail"],
                  [[CHECK_MARK[bool(c["passed"])], c["name"], c["detail"]] for c in checks]))
    for note in result.get("notes", []):
        b.append(("p", note))

    b.append(("h", 2, "Commands run"))
    b.append(("p", "In order, from the folder the demo was started in (the demo runs the same command-line tools a user types; "
                   "training runs in-process through `txpert_head.runs.folder.train_run`, the function behind "
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
        fitted = run.get("prior_fit") or {}
        if "kappa" in fitted:
            b.append(("p", f"The graph-neighbour prior, fitted leave-one-out on the training perturbations "
                           f"(`fit_prior`): layer trust {layer_trust_text(fitted)}; shrinkage towards the mean change "
                           f"{fitted['kappa']:.2g} (0 = neighbours only, large = the mean change)."))
        b.append(metrics_table(run))
        for note in metrics_notes(run):
            b.append(("p", note))
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


def data_uri(path: Path) -> str:
    """A PNG file as a ``data:image/png;base64,...`` URI (the HTML report carries its figures inside)."""
    data = Path(path).read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError(f"{path}: not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.4;"
         "overflow-wrap:anywhere}"
         "table{border-collapse:collapse;margin:1em 0;max-width:100%}td,th{border:1px solid #bbb;padding:3px 8px;"
         "text-align:left;vertical-align:top}td code{word-break:break-all}"
         "pre{background:#f4f4f4;padding:8px;font-size:85%;white-space:pre-wrap;word-break:break-all}"
         "img{max-width:100%;height:auto}figure{margin:1em 0}figcaption{font-size:85%;color:#555}"
         "td.pass{color:#1a7f37;font-weight:bold;white-space:nowrap}"
         "td.fail{color:#cf222e;font-weight:bold;white-space:nowrap}")


def _cell(c: Any) -> str:
    text = str(c)
    cls = ' class="pass"' if text == CHECK_MARK[True] else ' class="fail"' if text == CHECK_MARK[False] else ""
    return f"<td{cls}>{inline_html(text)}</td>"


def to_html(blocks: Sequence[Block], title: str, image_root: str | Path = ".") -> str:
    """One self-contained HTML page: every figure is embedded as a base64 PNG (read from ``image_root`` /
    the block's relative path), no stylesheet or script is linked, so the file can be sent alone."""
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
            rows = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in block[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            alt = html.escape(block[1], quote=True)
            body.append(f'<figure><img src="{data_uri(Path(image_root) / block[2])}" alt="{alt}">'
                        f"<figcaption>{inline_html(block[1])}</figcaption></figure>")
        else:
            raise ValueError(f"unknown report block {kind!r}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")


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
        text = to_html(blocks, result.get("title", "TxPert demo report"), image_root=out_dir)
        written.append(atomic_write(out_dir / "report.html", lambda fh: fh.write(text.encode("utf-8"))))
    md = to_markdown(blocks)
    written.append(atomic_write(out_dir / "report.md", lambda fh: fh.write(md.encode("utf-8"))))
    return [Path(p) for p in written]
