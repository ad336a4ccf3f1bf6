"""Normalisation of raw counts: the ``target_sum`` option (default 4,000; scanpy's 1e4 on request), logged at the default verbosity,
recorded in the run folder and in predictions; run folders of earlier versions load with 4,000."""

from __future__ import annotations

import json
import logging

import anndata
import numpy as np
import pytest
from click.testing import CliRunner

from txpert_head.cli.main import main
from txpert_head.data.perturb_data import LEGACY_TARGET_SUM, TARGET_SUM, DataError, load_h5ad
from txpert_head.runs.folder import DataOptions, load_run
from txpert_files import write_cli_inputs


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("norm")
    write_cli_inputs(root, epochs=1)
    return root


def _row_sums(data):
    return np.expm1(data.X.toarray().astype(np.float64)).sum(1)


def test_target_sum_is_applied_logged_and_noted(files, caplog):
    assert TARGET_SUM == 4000 and LEGACY_TARGET_SUM == 4000
    with caplog.at_level(logging.WARNING, logger="txpert_head.data.perturb_data"):
        d = load_h5ad(files / "d.h5ad", "gene", batch_col="rep", target_sum=1e4)  # scanpy's common choice
    np.testing.assert_allclose(_row_sums(d), 1e4, rtol=1e-4)
    assert any("normalised raw counts: 10,000 per cell + log1p" in r.getMessage() and "--target-sum" in r.getMessage()
               for r in caplog.records if r.levelno >= logging.WARNING)
    assert d.notes["normalization"] == {"normalized_here": True, "target_sum": 1e4, "log1p": True}
    d4 = load_h5ad(files / "d.h5ad", "gene", batch_col="rep")  # the default
    np.testing.assert_allclose(_row_sums(d4), 4000, rtol=1e-4)
    # subsets keep the record; values used as stored record no target
    assert d4.subset(np.arange(5)).notes["normalization"]["target_sum"] == 4000
    assert load_h5ad(files / "d.h5ad", "gene", batch_col="rep", normalize="none").notes["normalization"] == {
        "normalized_here": False, "target_sum": None, "log1p": False}
    for bad in (0, -5, float("nan"), "many"):
        with pytest.raises(DataError, match="target_sum"):
            load_h5ad(files / "d.h5ad", "gene", batch_col="rep", target_sum=bad)


def test_target_sum_recorded_in_run_and_predictions_and_old_runs_load_with_4000(files, tmp_path):
    run = tmp_path / "run"
    common = ["--data", str(files / "d.h5ad"), "--perturbation-col", "gene", "--batch-col", "rep"]
    res = CliRunner().invoke(main, ["train", *common, "--graph", str(files / "g.kg.npz"), "--config",
                                    str(files / "train.toml"), "--target-sum", "2500", "--no-baselines", "--no-vcc",
                                    "-o", str(run)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "normalised raw counts: 2,500 per cell + log1p" in res.output  # default verbosity (no -v)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["data"]["target_sum"] == 2500 and cfg["data"]["gene_info"] is None
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["normalization"] == {"normalized_here": True, "target_sum": 2500, "log1p": True}
    trainer, _ = load_run(run)
    np.testing.assert_allclose(_row_sums(trainer.data), 2500, rtol=1e-4)

    out = tmp_path / "pred.h5ad"
    res = CliRunner().invoke(main, ["predict", str(run), "-p", "G3", "-o", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    pred = anndata.read_h5ad(out)
    assert pred.uns["normalization"]["target_sum"] == 2500 and "log1p" in pred.uns
    assert pred.uns["normalization"]["method"] == "normalize_total + log1p"

    # a run folder of an earlier version: config.json without target_sum (nor gene_info) loads with 4,000
    del cfg["data"]["target_sum"], cfg["data"]["gene_info"]
    (run / "config.json").write_text(json.dumps(cfg))
    assert DataOptions.from_config(cfg["data"]).target_sum == 4000
    trainer, _ = load_run(run)
    np.testing.assert_allclose(_row_sums(trainer.data), 4000, rtol=1e-4)
    res = CliRunner().invoke(main, ["evaluate", str(run), "--no-baselines", "--no-vcc"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "normalised raw counts: 4,000 per cell" in res.output


def test_bad_target_sum_option_is_refused(files, tmp_path):
    res = CliRunner().invoke(main, ["baseline", "--data", str(files / "d.h5ad"), "--target-sum", "0",
                                    "-o", str(tmp_path / "b")])
    assert res.exit_code == 2 and "--target-sum" in res.output


def test_resuming_a_run_of_an_earlier_version_compares_with_4000(tmp_path):
    """config.json of an earlier version (no target_sum): resuming with 4,000 (the default) is the same run, with
    1e4 another."""
    import dataclasses

    from txpert_head.runs.folder import RunFolderError, check_resumable
    from txpert_head.training.checkpoints import CheckpointError
    from txpert_head.training.config import TrainConfig

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    cfg = TrainConfig()
    opts = DataOptions("d.h5ad")
    old = {"data": {k: v for k, v in dataclasses.asdict(opts).items() if k not in ("target_sum", "gene_info")},
           "graph": "g.kg.npz", "task": "unseen_single", "split_seed": 0, "holdout_line": None,
           "train": cfg.to_dict()}
    (tmp_path / "config.json").write_text(json.dumps(old))
    new = {**old, "data": dataclasses.asdict(dataclasses.replace(opts, target_sum=1e4))}
    with pytest.raises(RunFolderError, match="other data"):
        check_resumable(tmp_path, new, cfg)  # 1e4: not what the run was trained with
    same = {**old, "data": dataclasses.asdict(opts)}  # the default, 4,000
    with pytest.raises(CheckpointError):  # the options match: it goes on to read the (fake) checkpoint
        check_resumable(tmp_path, same, cfg)
