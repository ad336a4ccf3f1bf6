"""The txpert train / evaluate / predict / baseline commands end to end on small data."""

from __future__ import annotations

import json
import subprocess
import sys

import anndata
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from txpert_head.cli.main import main
from txpert_files import write_cli_inputs


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    write_cli_inputs(root, epochs=2)
    return root


def _invoke(args):
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    return res


def test_train_evaluate_predict_baseline(files, tmp_path):
    run = tmp_path / "run"
    common = ["--data", str(files / "d.h5ad"), "--perturbation-col", "gene", "--batch-col", "rep"]
    res = _invoke(["train", *common, "--graph", str(files / "g.kg.npz"), "--config", str(files / "train.toml"),
                   "--set", "target_term=true", "-o", str(run)])
    assert res.exit_code == 0, res.output
    assert "TxPert" in res.output and "general" in res.output
    for name in ("config.json", "split.json", "metrics.json", "per_perturbation.csv", "plots/learning_curves.png",
                 "plots/pearson_vs_general.png", "plots/predicted_vs_true.png", "checkpoints/best.pt"):
        assert (run / name).exists(), name
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["epochs"] == 2 and cfg["train"]["target_term"] is True
    metrics = json.loads((run / "metrics.json").read_text())
    table = pd.read_csv(run / "per_perturbation.csv")
    assert len(table) == metrics["model"]["n_perturbations"]
    assert np.isclose(table["pearson_delta"].mean(), metrics["model"]["pearson_delta"])
    # the run's graph gives the graph baselines; the measured perturbed genes the linear one
    assert {"graph_neighbours", "linear", "linear_graph"} <= set(metrics["baselines"])
    assert {"linear", "linear_graph"} <= set(metrics["paired"])
    assert "vs linear_graph" in res.output
    # TxPert minus each baseline, paired over the test conditions: printed and in metrics.json
    paired = metrics["paired"]["general"]
    assert paired["n"] == len(table)
    assert paired["difference"] == pytest.approx(
        metrics["model"]["pearson_delta"] - metrics["baselines"]["general"]["pearson_delta"])
    assert paired["wins"] == int((table["pearson_delta"] > table["general_pearson_delta"]).sum())
    assert "vs general" in res.output and "sign-flip p" in res.output

    res = _invoke(["evaluate", str(run)])
    assert res.exit_code == 0, res.output
    ev = json.loads((run / "evaluation_test.json").read_text())
    assert ev["pearson_delta"] == pytest.approx(metrics["model"]["pearson_delta"], abs=1e-9)
    assert ev["paired"]["general"] == pytest.approx(metrics["paired"]["general"], abs=1e-9)
    assert "vs general" in res.output

    out = tmp_path / "pred.h5ad"
    # G3 is a trained or held-out gene, G25 a graph gene never perturbed, NOVEL is unknown everywhere
    # (refused unless --allow-unknown, then marked known = False)
    res = _invoke(["predict", str(run), "-p", "G3", "-p", "G25+G3", "-p", "NOVEL", "--allow-unknown", "-o", str(out)])
    assert res.exit_code == 0, res.output
    pred = anndata.read_h5ad(out)
    assert pred.obs["perturbation"].tolist() == ["G3", "G25+G3", "NOVEL"]
    assert pred.obs["known"].tolist() == [True, True, False]
    assert pred.shape == (3, 30) and "delta" in pred.layers
    assert not np.allclose(pred.X[0], pred.X[1])

    res = _invoke(["baseline", *common, "-o", str(tmp_path / "base")])
    assert res.exit_code == 0, res.output
    assert "split_half" in json.loads((tmp_path / "base" / "baselines.json").read_text())["baselines"]


def test_bad_input_exits_nonzero_with_message(files, tmp_path):
    res = CliRunner().invoke(main, ["train", "--data", str(files / "d.h5ad"), "--perturbation-col", "target",
                                    "--graph", str(files / "g.kg.npz"), "-o", str(tmp_path / "r")])
    assert res.exit_code == 1
    assert "no obs column 'target'" in res.output and "columns present: gene, rep" in res.output
    assert not (tmp_path / "r").exists()


def test_module_entry_point():
    res = subprocess.run([sys.executable, "-m", "txpert_head.cli.main", "train", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--graph" in res.stdout


def test_set_values_are_json_or_strings_and_bad_items_name_the_option(files, tmp_path):
    from txpert_head.runs.folder import parse_overrides

    assert parse_overrides(["lr=3e-4", "target_term=true", "basal=none", "graph_hops=null"]) == {
        "lr": 3e-4, "target_term": True, "basal": "none", "graph_hops": None}
    res = CliRunner().invoke(main, ["train", "--data", str(files / "d.h5ad"), "--graph", str(files / "g.kg.npz"),
                                    "--set", "lr", "-o", str(tmp_path / "run")])
    assert res.exit_code == 2 and "--set" in res.output and "KEY=VALUE" in res.output
    assert not (tmp_path / "run").exists()


def test_piped_train_prints_one_plain_line_per_epoch(files, tmp_path):
    """Output piped (not a terminal): no progress bar, no carriage returns, one line per epoch with the
    validation Pearson Δ and the best so far (and the untrained prior as epoch 0)."""
    import subprocess
    import sys

    run = tmp_path / "run"
    toml = tmp_path / "train.toml"
    toml.write_text((files / "train.toml").read_text().replace("progress = false", "progress = true"))
    res = subprocess.run([sys.executable, "-m", "txpert_head.cli.main", "train", "--data", str(files / "d.h5ad"),
                          "--perturbation-col", "gene", "--batch-col", "rep", "--graph", str(files / "g.kg.npz"),
                          "--config", str(toml), "--epochs", "3", "--no-vcc", "-o", str(run)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "\r" not in res.stdout + res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("epoch ")]
    assert lines[0].startswith("epoch 0 (untrained prior)  val Pearson Δ ")
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert len(lines) == 1 + len(history)
    for ln, rec in zip(lines[1:], history):
        assert ln.startswith(f"epoch {rec['epoch']}/3  train loss ") and "val Pearson Δ" in ln and "best " in ln
        assert f"val Pearson Δ {rec['val_pearson_delta']:.3f}" in ln
