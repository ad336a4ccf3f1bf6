"""PNG figures for a run folder (matplotlib, Agg backend: no display needed).

Every figure has a title naming the dataset and the run. The run is the run folder (``RUN/plots/x.png``
-> ``RUN``'s name) unless ``title`` is given; the dataset comes from :func:`context` (the demo sets it
around each training run), e.g.::

    with plots.context(dataset="norman2019"):
        train_run(...)              # its figures are titled "norman2019 · <run folder>"

Each ``name(..., path)`` function saves the figure built by ``name_figure(...)``, which returns the
:class:`matplotlib.figure.Figure` (what the tests inspect).
"""

from __future__ import annotations

import contextlib
import contextvars
from pathlib import Path
from typing import Iterator, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

_DATASET: contextvars.ContextVar[str | None] = contextvars.ContextVar("txpert_plot_dataset", default=None)

#: the per-perturbation scatter labels at most this many points (largest |model − baseline| first)
MAX_LABELS = 6


@contextlib.contextmanager
def context(dataset: str | None) -> Iterator[None]:
    """Name ``dataset`` in the titles of the figures made inside the ``with`` block."""
    token = _DATASET.set(dataset)
    try:
        yield
    finally:
        _DATASET.reset(token)


def run_name(path: Path | str | None) -> str | None:
    """The run a figure belongs to: ``RUN/plots/x.png`` -> ``RUN``; otherwise the figure's folder."""
    if path is None:
        return None
    p = Path(path)
    folder = p.parent.parent if p.parent.name == "plots" else p.parent
    return folder.name or None


def figure_title(what: str, path: Path | str | None = None, title: str | None = None) -> str:
    """``what — dataset · run`` (the parts that are known)."""
    if title:
        return f"{what} — {title}"
    parts = [x for x in (_DATASET.get(), run_name(path)) if x]
    return f"{what} — {' · '.join(parts)}" if parts else what


def display_names(names: Sequence[str]) -> list[str]:
    """Readable perturbation names from internal ``line|perturbation`` keys: the perturbation alone when
    every name has the same cell line, ``perturbation (line)`` when there are several lines."""
    names = [str(n) for n in names]
    split = [n.split("|", 1) if "|" in n else [None, n] for n in names]
    lines = {line for line, _ in split}
    if len(lines - {None}) <= 1:
        return [pert for _, pert in split]
    return [pert if line is None else f"{pert} ({line})" for line, pert in split]


def pearson_r(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2 or np.std(x[ok]) == 0 or np.std(y[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


def _r_text(r: float) -> str:
    return "r = n/a" if not np.isfinite(r) else f"r = {r:.2f}"


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------- learning curves
def learning_curves_figure(history: Sequence[dict], path: Path | str | None = None, title: str | None = None):
    """Training loss and validation Pearson Δ per epoch (integer epoch ticks; best epoch marked)."""
    frame = pd.DataFrame(history)
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    fig.get_layout_engine().set(wspace=0.08)
    if "epoch" not in frame:  # no training epoch (epochs = 0): empty panels
        frame = pd.DataFrame({"epoch": [], "train_loss": []})
        for a in ax:
            a.text(0.5, 0.5, "no training epochs", ha="center", va="center", transform=a.transAxes)
    if "train_loss" not in frame:  # only epoch 0, the untrained model (patience = 0): no training loss
        frame["train_loss"] = np.nan
    ax[0].plot(frame["epoch"], frame["train_loss"], marker="o")
    ax[0].set(xlabel="epoch", ylabel="training MSE", title="training loss")
    val_title = "validation Pearson Δ"
    if "val_pearson_delta" in frame and frame["val_pearson_delta"].notna().any():
        ax[1].plot(frame["epoch"], frame["val_pearson_delta"], marker="o", color="C1")
        best = frame.loc[frame["val_pearson_delta"].idxmax()]
        ax[1].axvline(best["epoch"], color="0.5", ls=":", lw=1)
        val_title = f"validation Pearson Δ (best {best['val_pearson_delta']:.3f}, epoch {int(best['epoch'])})"
    ax[1].set(xlabel="epoch", ylabel="Pearson Δ", title=val_title)
    for a in ax:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.title.set_fontsize(10)
    fig.suptitle(figure_title("Learning curves", path, title))
    return fig


def learning_curves(history: Sequence[dict], path: Path, title: str | None = None) -> Path:
    """Training loss and validation Pearson Δ per epoch."""
    return _save(learning_curves_figure(history, path, title), path)


# ---------------------------------------------------------------------- model versus a baseline
def _place_labels(ax, xs: np.ndarray, ys: np.ndarray, labels: Sequence[str]) -> list:
    """Annotate points with the first free offset among a few candidates (no label overlaps another label
    or leaves the axes); a label with no free spot is left out. Returns the annotations placed."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    offsets = [(5, 5, "left", "bottom"), (5, -5, "left", "top"), (-5, 5, "right", "bottom"),
               (-5, -5, "right", "top"), (8, 0, "left", "center"), (-8, 0, "right", "center"),
               (0, 9, "center", "bottom"), (0, -9, "center", "top")]
    axes_box = ax.get_window_extent(renderer)
    placed, boxes = [], []
    for x, y, label in zip(xs, ys, labels):
        for dx, dy, ha, va in offsets:
            ann = ax.annotate(label, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=7, ha=ha,
                              va=va, color="0.15")
            box = ann.get_window_extent(renderer).expanded(1.05, 1.1)
            inside = (box.x0 >= axes_box.x0 and box.x1 <= axes_box.x1 and box.y0 >= axes_box.y0
                      and box.y1 <= axes_box.y1)
            if inside and not any(box.overlaps(b) for b in boxes):
                placed.append(ann)
                boxes.append(box)
                break
            ann.remove()
    return placed


def model_vs_baseline_figure(table: pd.DataFrame, baseline: pd.DataFrame, name: str = "general",
                             path: Path | str | None = None, title: str | None = None, max_labels: int = MAX_LABELS):
    merged = table[["condition", "pearson_delta"]].merge(baseline[["condition", "pearson_delta"]], on="condition",
                                                          suffixes=("_model", "_baseline"))
    fig, ax = plt.subplots(figsize=(5.6, 5.2), layout="constrained")
    x = merged["pearson_delta_baseline"].to_numpy(dtype=float)
    y = merged["pearson_delta_model"].to_numpy(dtype=float)
    ax.scatter(x, y, s=18)
    finite = np.r_[x[np.isfinite(x)], y[np.isfinite(y)], 0.0]
    lo = float(finite.min()) - 0.05
    ax.plot([lo, 1], [lo, 1], "k--", lw=0.8)
    ax.set(xlim=(lo, 1.02), ylim=(lo, 1.02))
    ax.set(xlabel=f"{name} baseline Pearson Δ", ylabel="TxPert Pearson Δ",
           title=f"per test perturbation ({_r_text(pearson_r(x, y))})")
    ok = np.isfinite(x) & np.isfinite(y)
    wins = int((y[ok] > x[ok]).sum())
    ax.text(0.03, 0.97, f"TxPert better on {wins}/{int(ok.sum())}\nmean {np.nanmean(y) if ok.any() else np.nan:.3f} "
                        f"vs {np.nanmean(x) if ok.any() else np.nan:.3f}",
            transform=ax.transAxes, va="top", ha="left", fontsize=8,
            bbox=dict(boxstyle="round", facecolor="white", edgecolor="0.7", alpha=0.9))
    if max_labels and ok.any():
        fig.canvas.draw()  # final axes position (constrained layout) before measuring label boxes
        names = np.asarray(display_names(merged["condition"].astype(str).tolist()), dtype=object)
        order = np.argsort(-np.abs(np.where(ok, y - x, 0.0)), kind="stable")[:max_labels]
        order = order[ok[order]]
        _place_labels(ax, x[order], y[order], names[order].tolist())
    fig.suptitle(figure_title(f"TxPert versus the {name} baseline", path, title))
    return fig


def model_vs_baseline(table: pd.DataFrame, baseline: pd.DataFrame, path: Path, name: str = "general",
                      title: str | None = None) -> Path:
    """Per-perturbation Pearson Δ of the model (y) against a baseline (x); points above the line: model wins.
    Only the points farthest from the diagonal are labelled, where a label fits without overlap."""
    return _save(model_vs_baseline_figure(table, baseline, name, path, title), path)


# ---------------------------------------------------------------------- predicted versus true
def predicted_vs_true_figure(names: Sequence[str], pred_delta: np.ndarray, true_delta: np.ndarray, n: int = 4,
                             path: Path | str | None = None, title: str | None = None):
    n = min(n, len(names))
    shown = display_names(list(names)[:n])
    fig, axes = plt.subplots(1, max(n, 1), figsize=(3.4 * max(n, 1), 3.6), squeeze=False, layout="constrained")
    for k in range(n):
        ax = axes[0, k]
        ax.scatter(true_delta[k], pred_delta[k], s=6, alpha=0.6)
        lim = float(np.nanmax(np.abs(np.r_[true_delta[k], pred_delta[k]]))) or 1.0
        ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.8)
        ax.set(title=f"{shown[k]} ({_r_text(pearson_r(true_delta[k], pred_delta[k]))})", xlabel="true Δ",
               ylabel="predicted Δ" if k == 0 else None)
        ax.title.set_fontsize(10)
    fig.suptitle(figure_title("Predicted versus true change over genes", path, title))
    return fig


def predicted_vs_true(names: Sequence[str], pred_delta: np.ndarray, true_delta: np.ndarray, path: Path,
                      n: int = 4, title: str | None = None) -> Path:
    """Scatter of predicted vs true Δ over genes for the first ``n`` perturbations, Pearson r in each title."""
    return _save(predicted_vs_true_figure(names, pred_delta, true_delta, n, path, title), path)


# ---------------------------------------------------------------------- graphs
def degree_distribution_figure(graph, max_panels: int = 8, path: Path | str | None = None, title: str | None = None):
    names = list(graph.layer_names)[:max_panels]
    n = max(len(names), 1)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.0 * rows + 0.4), squeeze=False, layout="constrained")
    for k, ax in enumerate(axes.ravel()):
        if k >= len(names):
            ax.axis("off")
            continue
        name = names[k]
        deg = graph.layer_in_degree(name)
        top = int(deg.max()) if len(deg) else 0
        ax.hist(deg, bins=np.arange(-0.5, top + 1.5, max(1, (top + 1) // 30)), color=f"C{k % 10}")
        med = float(np.median(deg)) if len(deg) else 0.0
        ax.set(title=f"{name}: {int(np.sum(graph.edge_layer == k)):,} edges, median {med:g}", xlabel="in-degree",
               ylabel="nodes" if k % cols == 0 else None)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.title.set_fontsize(9)
    fig.suptitle(figure_title("In-degree per graph layer", path, title))
    return fig


def degree_distribution(graph, path: Path, max_panels: int = 8, title: str | None = None) -> Path:
    """In-degree histogram of each layer of a :class:`kgbuild.graph.MultiGraph`, one panel per layer.

    Counts nodes with at least one edge in the layer (in either direction) by their number of incoming
    edges ``deg_l(v) = |{(u, v) in E_l}|``; the title gives the layer's edge count and median in-degree.
    """
    return _save(degree_distribution_figure(graph, max_panels, path, title), path)
