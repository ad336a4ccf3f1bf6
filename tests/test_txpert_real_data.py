"""Slow smoke test: TxPert on the real Papalexi 2021 THP-1 subset with a kgbuild STRING graph."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from kgbuild.cli import main as kgbuild_main
from txpert_head.cli.main import main as txpert_main


@pytest.mark.slow
def test_papalexi_unseen_single_smoke(shared_data, tmp_path):
    graph = tmp_path / "string.kg.npz"
    res = CliRunner().invoke(kgbuild_main, [
        "edges", "--edges", str(shared_data / "string" / "string_v12_dmfind_edges.tsv.gz"),
        "--source-col", "symbol1", "--target-col", "symbol2", "--weight-col", "combined_score",
        "--weight-scale", "0.001", "--symmetric", "--layer-name", "string", "-o", str(graph)])
    assert res.exit_code == 0, res.output
    run = tmp_path / "run"
    res = CliRunner().invoke(txpert_main, [
        "train", "--data", str(shared_data / "perturbseq" / "papalexi2021_thp1_subset.h5ad"),
        "--perturbation-col", "target", "--control", "non-targeting", "--batch-col", "bio_rep",
        "--graph", str(graph), "--task", "unseen_single", "--epochs", "2",
        "--set", "max_steps_per_epoch=15", "--set", "progress=false", "--set", "batch_size=128",
        "--set", "encoder_dim=32", "-o", str(run)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model"]["n_perturbations"] == 6  # 25 targets * 0.25
    for key in ("pearson_delta", "retrieval", "mse"):
        assert np.isfinite(metrics["model"][key])
        assert np.isfinite(metrics["baselines"]["general"][key])
    assert metrics["baselines"]["split_half"]["pearson_delta"] > 0.3  # real replicate signal exists
    assert len(metrics["history"]) == 2
