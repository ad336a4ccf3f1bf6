"""``txpert score``: any model's predictions scored with the project's metrics, baselines and paired comparison."""

from __future__ import annotations

import json

import anndata
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from txpert_files import BASE_TRAIN_OPTIONS, write_cli_inputs
from txpert_head.cli.main import main
from txpert_head.data.perturb_data import DataError
from txpert_head.data.profiles import condition_name
from txpert_head.runs.folder import DataOptions, evaluate_run, load_run, train_run
from txpert_head.runs.scoring import read_predictions, score_predictions
from txpert_head.training.config import TrainConfig

METRICS = ("pearson_delta", "pearson_delta_pert", "retrieval", "retrieval_fast", "mse", "centroid_accuracy",
           "perturbench_rank", "target_error")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-epoch TxPert run (unseen singles; model seed 3, split seed 1) and its test predictions."""
    root = tmp_path_factory.mktemp("score")
    write_cli_inputs(root)
    opts = DataOptions(str(root / "d.h5ad"), "gene", None, None, "rep")
    cfg = TrainConfig(**{**BASE_TRAIN_OPTIONS, "epochs": 2, "seed": 3})
    train_run(opts, root / "g.kg.npz", "unseen_single", cfg, root / "run", split_seed=1, resume=False, vcc=False)
    trainer, _ = load_run(root / "run")
    conds = list(trainer.split.test)
    pred = trainer.predict_means(conds)
    return {"root": root, "run": root / "run", "data": trainer.data, "conds": conds, "pred": pred,
            "genes": list(trainer.data.genes)}


def _write(path, X, labels, genes, column="perturbation", **obs):
    frame = pd.DataFrame({column: labels, **obs}, index=[f"r{i}" for i in range(len(labels))])
    anndata.AnnData(np.asarray(X, dtype=np.float32), obs=frame, var=pd.DataFrame(index=genes)).write_h5ad(path)
    return path


def _invoke(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_own_predictions_reproduce_evaluate(run, tmp_path):
    """A TxPert run's predictions through `txpert score --split RUN/split.json` give `txpert evaluate`'s figures:
    the model's metrics, every baseline and the paired comparison."""
    pred = _write(tmp_path / "p.h5ad", run["pred"], [condition_name(c) for c in run["conds"]], run["genes"])
    table_ev, summary_ev = evaluate_run(run["run"], vcc=False)
    res = _invoke(["score", "--predictions", str(pred), "--data", str(run["root"] / "d.h5ad"),
                   "--split", str(run["run"] / "split.json"), "--name", "mine", "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "mine minus each baseline" in res.output and "vs general" in res.output
    got = json.loads((tmp_path / "out" / "metrics.json").read_text())
    table = pd.read_csv(tmp_path / "out" / "per_perturbation.csv")
    for k in METRICS:
        assert got[k] == pytest.approx(summary_ev[k], abs=1e-6), k
    assert set(got["baselines"]) == set(summary_ev["baselines"])  # the run's graph gives the graph baselines
    for name, s in summary_ev["baselines"].items():
        assert got["baselines"][name]["pearson_delta"] == pytest.approx(s["pearson_delta"], abs=1e-9), name
    for name, c in summary_ev["paired"].items():
        for k in ("difference", "p_value", "wins", "n"):
            assert got["paired"][name][k] == pytest.approx(c[k], abs=1e-6), (name, k)
    assert table["condition"].tolist() == table_ev["condition"].tolist()
    assert np.allclose(table["pearson_delta"], table_ev["pearson_delta"], atol=1e-6)


def test_python_api_gives_the_cli_figures(run, tmp_path):
    """``txpert_head.score`` (the Python API) takes the run's recorded data options and graph like the CLI."""
    import txpert_head as tx

    pred = _write(tmp_path / "p.h5ad", run["pred"], [condition_name(c) for c in run["conds"]], run["genes"])
    table, summary, paired = tx.score(pred, run["root"] / "d.h5ad", run["run"])
    _, summary_ev = evaluate_run(run["run"], vcc=False)
    for k in METRICS:
        assert summary[k] == pytest.approx(summary_ev[k], abs=1e-6), k
    assert set(summary["baselines"]) == set(summary_ev["baselines"])
    assert paired["general"]["difference"] == pytest.approx(summary_ev["paired"]["general"]["difference"], abs=1e-6)
    assert len(table) == len(run["conds"])


def test_cells_gears_labels_and_order_are_one_profile(run, tmp_path):
    """Cells are averaged per perturbation; GEARS's A+ctrl, line|A names, control rows and a shuffled gene order
    score the same as the plain mean profiles."""
    data, conds, X, genes = run["data"], run["conds"], run["pred"], run["genes"]
    base, _, _ = score_predictions(_write(tmp_path / "m.h5ad", X, [p for _, p in conds], genes), data, run["run"],
                                   baselines=False)
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.05, X.shape)
    cells = np.concatenate([X + noise, X - noise, X[:1]])  # two cells per perturbation (mean X) + a control row
    labels = [f"{p}+ctrl" for _, p in conds] + [f"ctrl+{p}" for _, p in conds] + ["ctrl"]
    order = rng.permutation(len(genes))
    path = _write(tmp_path / "c.h5ad", cells[:, order], labels, [genes[i] for i in order], column="condition")
    table, summary, paired = score_predictions(path, data, run["run"], baselines=False)
    assert paired == {} and summary["scored"]["averaged"] and summary["scored"]["control_rows_skipped"] == 1
    assert np.allclose(table["pearson_delta"], base["pearson_delta"], atol=1e-5)
    # the project's line|pert names, with the obs names as the only labels (detected)
    names = [f"all|{p}" for _, p in conds]
    frame = anndata.AnnData(X.astype(np.float32), obs=pd.DataFrame(index=names), var=pd.DataFrame(index=genes))
    frame.write_h5ad(tmp_path / "n.h5ad")
    table, _, _ = score_predictions(tmp_path / "n.h5ad", data, run["run"], baselines=False)
    assert np.allclose(table["pearson_delta"], base["pearson_delta"], atol=1e-5)


def test_without_split_scores_what_has_truth(run, tmp_path):
    """No split: every predicted perturbation with truth is scored (unknown ones are listed), the baselines train
    on the data's other perturbations; a column of any name is detected by content."""
    conds, X = run["conds"], run["pred"]
    labels = [p for _, p in conds] + ["NOTAGENE"]
    path = _write(tmp_path / "p.h5ad", np.vstack([X, X[:1]]), labels, run["genes"], column="whatever")
    table, summary, paired = score_predictions(path, run["data"], split_half_seeds=0)
    assert sorted(table["condition"]) == sorted(p for _, p in conds)
    assert summary["scored"]["not_scored"] == ["NOTAGENE"] and summary["scored"]["perturbation_col"] == "whatever"
    assert {"general", "linear"} <= set(paired) and paired["general"]["n"] == len(conds)


def test_counts_cells_are_normalised_like_the_data(tmp_path):
    """Cells of raw counts (the data's own cells here) are normalised as the data was: the truth scores itself."""
    from txpert_head.simulate.fixtures import synthetic_data

    d = synthetic_data(n_cells=600, n_genes=20, n_perts=8, seed=1, normalize=False)
    _write(tmp_path / "d.h5ad", d.X.toarray(), d.condition, d.genes, column="gene")
    data = DataOptions(str(tmp_path / "d.h5ad"), "gene", None).load()
    keep = d.condition != "ctrl"
    path = _write(tmp_path / "p.h5ad", d.X.toarray()[keep], d.condition[keep], d.genes)
    table, summary, _ = score_predictions(path, data, baselines=False)
    assert "raw counts" in summary["scored"]["normalized"]
    assert np.allclose(table["pearson_delta"], 1.0) and np.allclose(table["mse"], 0.0, atol=1e-10)


@pytest.mark.parametrize("transform, message", [
    (np.expm1, r"raw \(not log1p\) scale"),
    (lambda x: x * 50, r"raw \(not log1p\) scale"),
    (lambda x: x - x.mean(0), "changes"),
    (lambda x: x / 10, "far below the data's scale"),
])
def test_other_scales_are_refused(run, tmp_path, transform, message):
    path = _write(tmp_path / "p.h5ad", transform(run["pred"]), [p for _, p in run["conds"]], run["genes"])
    with pytest.raises(DataError, match=message) as err:
        score_predictions(path, run["data"], run["run"], baselines=False)
    assert str(path) in str(err.value) and "predicted mean" in str(err.value)


def test_bad_input_errors(run, tmp_path):
    data, conds, X, genes = run["data"], run["conds"], run["pred"], run["genes"]
    labels = [p for _, p in conds]
    with pytest.raises(DataError, match="no such predictions file"):
        read_predictions(tmp_path / "missing.h5ad", data)
    (tmp_path / "junk.h5ad").write_text("not hdf5")
    with pytest.raises(DataError, match="cannot read as .h5ad"):
        read_predictions(tmp_path / "junk.h5ad", data)
    path = _write(tmp_path / "g.h5ad", X[:, 1:], labels, genes[1:])
    with pytest.raises(DataError, match=f"1 of the data's {len(genes)} genes are not predicted.*{genes[0]}"):
        read_predictions(path, data)
    path = _write(tmp_path / "p.h5ad", X, labels, genes)
    with pytest.raises(DataError, match="no obs column 'nope'"):
        read_predictions(path, data, perturbation_col="nope")
    path = _write(tmp_path / "b.h5ad", X, ["A B"] + labels[1:], genes)
    with pytest.raises(DataError, match="label 'A B' is not a perturbation"):
        read_predictions(path, data, perturbation_col="perturbation")
    path = _write(tmp_path / "u.h5ad", X, [f"X{i}" for i in range(len(labels))], genes)
    with pytest.raises(DataError, match="cannot find the perturbation labels"):
        read_predictions(path, data)
    path = _write(tmp_path / "s.h5ad", X[1:], labels[1:], genes)
    with pytest.raises(DataError, match=f"1 of the {len(labels)} test condition.*not predicted: {labels[0]}"):
        score_predictions(path, data, run["run"] / "split.json", baselines=False)
    with pytest.raises(DataError, match="no such split file"):
        score_predictions(path, data, tmp_path / "split.json", baselines=False)


def test_cli_errors_are_clean(run, tmp_path):
    path = _write(tmp_path / "p.h5ad", np.expm1(run["pred"]), [p for _, p in run["conds"]], run["genes"])
    res = _invoke(["score", "--predictions", str(path), "--data", str(run["root"] / "d.h5ad"),
                   "--perturbation-col", "gene", "--batch-col", "rep"])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "raw (not log1p) scale" in res.output and str(path) in res.output
