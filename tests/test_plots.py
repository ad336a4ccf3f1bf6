"""Figures (txpert_head.reporting.plots and the demo's ablation plot): titles naming dataset and run, integer epoch
ticks, readable perturbation names, Pearson r in every panel, scatter labels that do not overlap."""

from __future__ import annotations

import numpy as np
import pandas as pd

from txpert_head.reporting import plots


def test_learning_curves_integer_epoch_ticks_and_titles(tmp_path):
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_pearson_delta": 0.1 * e} for e in (1, 2, 3)]
    path = tmp_path / "myrun" / "plots" / "learning_curves.png"
    with plots.context("norman2019"):
        fig = plots.learning_curves_figure(history, path)
    assert fig._suptitle.get_text() == "Learning curves — norman2019 · myrun"
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel() and ax.get_title()
    assert "best 0.300, epoch 3" in fig.axes[1].get_title()
    # the right panel's y label stays clear of the left panel
    renderer = fig.canvas.get_renderer()
    left = fig.axes[0].get_tightbbox(renderer)
    assert fig.axes[1].yaxis.label.get_window_extent(renderer).x0 > left.x1
    # saved: default title is the run folder
    assert plots.learning_curves(history, path).is_file()
    assert plots.learning_curves_figure(history, path)._suptitle.get_text() == "Learning curves — myrun"


def test_predicted_vs_true_names_without_line_prefix_and_r_per_panel(tmp_path):
    rng = np.random.default_rng(0)
    true = rng.normal(size=(2, 50))
    pred = true + 0.1 * rng.normal(size=(2, 50))
    fig = plots.predicted_vs_true_figure(["CL1|G0008", "CL1|G0010"], pred, true, path=tmp_path / "r" / "plots" / "x.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("G0008 (r = 0.") and "|" not in "".join(titles)
    assert fig._suptitle.get_text().endswith("— r")
    assert plots.display_names(["CL1|G1", "CL2|G2"]) == ["G1 (CL1)", "G2 (CL2)"]
    assert plots.display_names(["G1", "G1+G2"]) == ["G1", "G1+G2"]


def test_model_vs_baseline_labels_few_points_without_overlap(tmp_path):
    rng = np.random.default_rng(1)
    conds = [f"CL1|G{i:04d}" for i in range(40)]
    base = pd.DataFrame({"condition": conds, "pearson_delta": rng.uniform(0, 0.6, 40)})
    model = pd.DataFrame({"condition": conds, "pearson_delta": base["pearson_delta"] + rng.normal(0.1, 0.05, 40)})
    model.loc[:5, "pearson_delta"] = base.loc[:5, "pearson_delta"] + 0.3  # clustered big winners
    fig = plots.model_vs_baseline_figure(model, base, "general", path=tmp_path / "run1" / "plots" / "p.png",
                                         title="sim · run1")
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = [t for t in ax.texts if t.get_text().startswith("G")]
    assert 1 <= len(labels) <= plots.MAX_LABELS
    assert all("|" not in t.get_text() for t in labels)
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert "r = " in ax.get_title()
    assert fig._suptitle.get_text() == "TxPert versus the general baseline — sim · run1"


def test_degree_and_ablation_figures_have_titles(tmp_path):
    from kgbuild.graph import MultiGraph
    from txpert_head.cli import demo

    g = MultiGraph.from_edges("x", ["G1", "G2", "G3"], ["G2", "G3", "G1"], [1.0, 1.0, 1.0])
    fig = plots.degree_distribution_figure(g, title="sim, multi.kg.npz")
    assert fig._suptitle.get_text() == "In-degree per graph layer — sim, multi.kg.npz"
    ab = {"task": "unseen_single", "seeds": [0], "general": [0.1],
          "graphs": [{"name": "original", "pearson_delta": [0.5]}, {"name": "rewire 1.0", "pearson_delta": [0.3]}]}
    fig = demo.ablation_figure(ab, "simulated screen")
    assert fig._suptitle.get_text() == "Graph ablation — simulated screen"


def test_learning_curves_mark_epoch_zero_when_the_untrained_prior_is_best():
    history = [{"epoch": 0, "val_pearson_delta": 0.62},
               {"epoch": 1, "train_loss": 0.03, "val_pearson_delta": 0.60},
               {"epoch": 2, "train_loss": 0.02, "val_pearson_delta": 0.58}]
    fig = plots.learning_curves_figure(history)
    assert "best 0.620, epoch 0" in fig.axes[1].get_title()
    fig.clear()


def test_learning_curves_with_only_the_untrained_epoch():
    fig = plots.learning_curves_figure([{"epoch": 0, "val_pearson_delta": 0.5}])  # patience = 0: no training epoch
    assert "best 0.500, epoch 0" in fig.axes[1].get_title()
    fig.clear()
