"""PNG figures for a run folder (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def learning_curves(history: Sequence[dict], path: Path) -> Path:
    """Training loss and validation Pearson Δ per epoch."""
    frame = pd.DataFrame(history)
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    if "epoch" not in frame:  # no training epoch (epochs = 0, patience = 0): empty panels
        frame = pd.DataFrame({"epoch": [], "train_loss": []})
        for a in ax:
            a.text(0.5, 0.5, "no training epochs", ha="center", va="center", transform=a.transAxes)
    ax[0].plot(frame["epoch"], frame["train_loss"], marker="o")
    ax[0].set(xlabel="epoch", ylabel="training MSE", title="training loss")
    if "val_pearson_delta" in frame:
        ax[1].plot(frame["epoch"], frame["val_pearson_delta"], marker="o", color="C1")
    ax[1].set(xlabel="epoch", ylabel="Pearson Δ", title="validation Pearson Δ")
    return _save(fig, path)


def model_vs_baseline(table: pd.DataFrame, baseline: pd.DataFrame, path: Path, name: str = "general") -> Path:
    """Per-perturbation Pearson Δ of the model (y) against a baseline (x); points above the line: model wins."""
    merged = table[["condition", "pearson_delta"]].merge(baseline[["condition", "pearson_delta"]], on="condition",
                                                          suffixes=("_model", "_baseline"))
    fig, ax = plt.subplots(figsize=(4.4, 4.2))
    x, y = merged["pearson_delta_baseline"], merged["pearson_delta_model"]
    ax.scatter(x, y, s=18)
    for _, r in merged.iterrows():
        ax.annotate(r["condition"], (r["pearson_delta_baseline"], r["pearson_delta_model"]), fontsize=6)
    lo = float(np.nanmin([x.min(), y.min(), 0.0])) - 0.05
    ax.plot([lo, 1], [lo, 1], "k--", lw=0.8)
    ax.set(xlabel=f"{name} baseline Pearson Δ", ylabel="TxPert Pearson Δ", title="per perturbation")
    return _save(fig, path)


def predicted_vs_true(names: Sequence[str], pred_delta: np.ndarray, true_delta: np.ndarray, path: Path,
                      n: int = 4) -> Path:
    """Scatter of predicted vs true Δ over genes for the first ``n`` perturbations."""
    n = min(n, len(names))
    fig, axes = plt.subplots(1, max(n, 1), figsize=(3.2 * max(n, 1), 3.2), squeeze=False)
    for k in range(n):
        ax = axes[0, k]
        ax.scatter(true_delta[k], pred_delta[k], s=6, alpha=0.6)
        lim = float(np.nanmax(np.abs(np.r_[true_delta[k], pred_delta[k]]))) or 1.0
        ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.8)
        ax.set(title=names[k], xlabel="true Δ", ylabel="predicted Δ" if k == 0 else None)
    return _save(fig, path)


def degree_distribution(graph, path: Path, max_panels: int = 8) -> Path:
    """In-degree histogram of each layer of a :class:`kgbuild.graph.MultiGraph`, one panel per layer.

    Counts nodes with at least one edge in the layer (in either direction) by their number of incoming
    edges ``deg_l(v) = |{(u, v) in E_l}|``; the title gives the layer's edge count and median in-degree.
    """
    names = list(graph.layer_names)[:max_panels]
    n = max(len(names), 1)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
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
        ax.title.set_fontsize(9)
    return _save(fig, path)
