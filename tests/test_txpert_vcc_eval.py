"""VCC metrics wired into evaluation (txpert_head.evaluation.vcc, txpert train / evaluate / baseline)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from txpert_head.cli.main import main
from txpert_files import write_cli_inputs
from txpert_head.data.controls import ControlIndex
from txpert_head.data.perturb_data import PerturbData
from txpert_head.data.profiles import condition_name, rows_by_condition
from txpert_head.data.splits import make_split
from txpert_head.simulate.fixtures import synthetic_data, synthetic_graph
from txpert_head.training.config import TrainConfig
from txpert_head.training.trainer import Trainer
from txpert_head.evaluation.vcc import (CELL_MEAN, _Streamed, baselines_vcc, line_cell_mean, model_vcc,
                                        score_predictions)
from txpert_head.metrics.vcc import cell_mean_baseline, vcc_scores


def _cfg(**kw):
    base = dict(epochs=1, batch_size=64, progress=False, encoder_dim=8, encoder_heads=2, hidden=16,
                encoder_backend="pyg", eval_cells=40, min_steps_per_epoch=2, control_mode="batch")  # cell level
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def small():
    data = synthetic_data(n_cells=900, n_genes=30, n_perts=12, seed=5)
    graph = synthetic_graph(30, seed=5)
    split = make_split(data, "unseen_single", seed=0)
    torch.set_num_threads(1)
    trainer = Trainer(data, graph, split, _cfg())
    trainer.fit(resume=False)
    return data, split, trainer


def _dense(data, rows):
    return np.asarray(data.X[rows].toarray(), dtype=np.float64)


# ---------------------------------------------------------------------------- predict_cells
def test_predict_cells_share_the_loop_with_predict_means(small):
    data, split, trainer = small
    conds = split.test
    rows, cells = trainer.predict_cells(conds, return_rows=True)
    means = trainer.predict_means(conds)
    for k, c in enumerate(conds):
        assert cells[k].shape == (len(rows[k]), data.n_genes) and len(rows[k]) <= trainer.cfg.eval_cells
        assert set(rows[k]) <= set(trainer.rows[c])  # the condition's own cells
        # predict_means decodes the mean hidden state (TxPert.forward_means): float32 rounding apart
        np.testing.assert_allclose(cells[k].mean(0), means[k], rtol=1e-6, atol=1e-6)
    plain = trainer.predict_cells(conds)
    assert all(np.array_equal(a, b) for a, b in zip(plain, cells))
    mean_rows = [r for r, _ in trainer.iter_predicted_means(conds)]
    assert all(np.array_equal(a, b) for a, b in zip(mean_rows, rows))


@pytest.mark.parametrize("basal,mode", [("mlp", "batch"), ("mlp", "mean"), ("mlp", "random"), ("none", "mean")])
def test_predicted_means_are_the_means_of_the_predicted_cells(small, basal, mode):
    """predict_means runs the basal encoder once per distinct control input and takes the mean inputs from
    sparse rows; the predicted cells run every input through the whole model: the same draws, the same means."""
    data, split, _ = small
    trainer = Trainer(data, synthetic_graph(30, seed=5), split, _cfg(basal=basal, control_mode=mode, eval_cells=25))
    with torch.no_grad():
        for p in trainer.model.decoder[-1].parameters():   # the zero-initialised output layer, as if trained
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    conds = split.test + split.val
    rows, cells = trainer.predict_cells(conds, return_rows=True)
    means = trainer.predict_means(conds)
    sources = np.concatenate([s for _, s, _, _ in trainer._input_passes(conds, None, None)])
    assert len(np.unique(sources)) < len(sources)   # conditions share control inputs
    for k in range(len(conds)):
        np.testing.assert_allclose(means[k], cells[k].mean(0), rtol=1e-6, atol=1e-6)
    assert np.abs(means - means.mean(0)).max() > 1e-3   # the conditions differ (not a trivially flat model)


@pytest.mark.parametrize("basal", ["mlp", "none"])
def test_forward_means_is_the_mean_of_forward_exactly_in_float64(small, basal):
    """Every term after the decoder's hidden layer is affine in the hidden state and the input, so decoding the
    group means gives the mean of the decoded rows: to float64 rounding in a float64 model (prior path,
    target and neighbour terms all on, as txpert train runs)."""
    data, split, _ = small
    trainer = Trainer(data, synthetic_graph(30, seed=5), split, _cfg(basal=basal))
    model = trainer.model.double().eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():   # trained-looking weights: the zero-initialised output layers too
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        enc = model.encode()
    assert model.target_term and model.neighbour_term and enc.prior is not None
    genes = [trainer.pert_rows_for(c[1]) for c in (split.test + split.val)[:4]] + [torch.tensor([0, 3]), torch.tensor([-1])]
    sizes = [5, 1, 7, 3, 4, 2]
    assert len(genes) == len(sizes)
    perts = torch.cat([g.view(1, -1).expand(n, -1) if g.numel() == 2 else
                       torch.nn.functional.pad(g.view(1, -1), (0, 1), value=-1).expand(n, -1)
                       for g, n in zip(genes, sizes)])
    groups = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    x = torch.rand(len(groups), data.n_genes, generator=gen, dtype=torch.float64) * 3
    with torch.no_grad():
        y = model(x, perts, enc=enc)
        states = model.basal_state(x)
    assert (states is None) == (basal == "none")
    x_mean = torch.stack([x[groups == g].mean(0) for g in range(len(sizes))])
    means = model.forward_means(states, perts, groups, len(sizes), x_mean, enc=enc)
    expected = torch.stack([y[groups == g].mean(0) for g in range(len(sizes))])
    assert means.dtype == torch.float64
    np.testing.assert_allclose(means.numpy(), expected.numpy(), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="at least one row"):
        model.forward_means(states, perts, groups, len(sizes) + 1, torch.cat([x_mean, x_mean[:1]]), enc=enc)


def test_mean_control_mode_predicts_one_point_per_batch(small):
    data, split, cell_level = small
    trainer = Trainer(data, synthetic_graph(30, seed=5), split, _cfg(control_mode="mean"))
    trainer.fit(resume=False)
    rows, cells = trainer.predict_cells(split.test[:3], return_rows=True)
    _, spread = cell_level.predict_cells(split.test[:3], return_rows=True)
    for r, y, z in zip(rows, cells, spread):
        n_batches = len(np.unique(data.batch[r]))
        assert len(np.unique(np.round(y, 10), axis=0)) <= n_batches  # a point mass per batch
        assert len(np.unique(np.round(z, 10), axis=0)) > n_batches  # control_mode batch: one cell per input


# ---------------------------------------------------------------------------- end-to-end anchors
def _oracle_trainer(trainer, data):
    """The trainer, but its 'predicted' cells are the true cells of the rows it was matched to."""
    class Oracle:
        def __getattr__(self, name):
            return getattr(trainer, name)

        def iter_predicted_cells(self, conditions):
            for r, _ in trainer.iter_predicted_cells(conditions):
                yield r, _dense(data, r)
    return Oracle()


def test_true_cells_as_prediction_score_100(small):
    data, split, trainer = small
    block, table = model_vcc(_oracle_trainer(trainer, data), split.test)
    m = block["model"]
    assert m["des"] == 1.0 and m["pds"] == 1.0 and m["mae"] == 0.0
    assert m["scaled"] == {"des": 1.0, "pds": 1.0, "mae": 1.0} and m["score"] == pytest.approx(100.0)
    # a constant prediction ranks like chance: PDS about (N + 1) / 2N (cell-eval's 1 - rank/N; was 0.5 under the
    # old 1 - (closer + ties/2)/(N - 1) definition; not exact because each row leaves out its own target gene)
    n = len(split.test)
    assert block["cell_mean"]["score"] == 0.0 and block["cell_mean"]["pds"] == pytest.approx((n + 1) / (2 * n), abs=0.1)
    assert (table["vcc_des"] == 1.0).all() and (table["vcc_mae"] == 0.0).all()
    assert table["condition"].tolist() == [condition_name(c) for c in split.test]


def test_cell_mean_as_model_scores_0(small):
    data, split, trainer = small
    rows = rows_by_condition(data)
    mean = line_cell_mean(data, trainer.controls, split.train, rows, "all")
    # by hand: the mean over every perturbed training cell
    train_rows = np.concatenate([rows[c] for c in split.train])
    np.testing.assert_allclose(mean, _dense(data, train_rows).mean(0), rtol=1e-6)

    class CellMean:
        def __getattr__(self, name):
            return getattr(trainer, name)

        def iter_predicted_cells(self, conditions):
            for r, _ in trainer.iter_predicted_cells(conditions):
                yield r, np.tile(mean, (len(r), 1))

    block, _ = model_vcc(CellMean(), split.test)
    m, ref = block["model"], block["cell_mean"]
    assert (m["des"], m["pds"], m["mae"]) == (ref["des"], ref["pds"], ref["mae"])
    assert m["score"] == 0.0 and all(v == 0.0 for v in m["scaled"].values())


def test_the_model_cells_are_streamed_one_condition_at_a_time(small):
    """model_vcc holds one condition's predicted cells at a time (a genome-wide screen's cells never sit in memory
    together) and scores exactly what the in-memory path scores: every prediction and the true rows at once."""
    import weakref

    data, split, trainer = small
    conds = split.test
    alive, produced = [], []

    class Watched:
        def __getattr__(self, name):
            return getattr(trainer, name)

        def iter_predicted_cells(self, conditions):
            for r, cells in trainer.iter_predicted_cells(conditions):
                alive.append(sum(ref() is not None for ref in produced))  # earlier conditions' cells still held
                produced.append(weakref.ref(cells))
                yield r, cells

    block, table = model_vcc(Watched(), conds)
    assert len(produced) == len(conds) and max(alive) <= 1
    rows, cells = trainer.predict_cells(conds, return_rows=True)
    summary, direct = score_predictions(data, trainer.controls, conds, split.train, {"TxPert": dict(zip(conds, cells))},
                                        true_rows=dict(zip(conds, rows)))
    for k in ("des", "pds", "mae", "pearson_delta", "score"):
        assert block["model"][k] == summary["TxPert"][k]
        assert block["cell_mean"][k] == summary[CELL_MEAN][k]
    np.testing.assert_array_equal(table["vcc_pds"], direct["TxPert_vcc_pds"])
    with pytest.raises(RuntimeError, match="out of order"):
        score_predictions(data, trainer.controls, conds[::-1], split.train,
                          {"TxPert": _Streamed(conds, trainer.iter_predicted_cells(conds)).cells})


def test_one_line_equals_vcc_scores_with_the_cell_mean_baseline(small):
    data, split, trainer = small
    rows = rows_by_condition(data)
    conds = split.test
    rng = np.random.default_rng(1)
    preds = {c: _dense(data, rows[c]) + rng.normal(0, 0.3, (len(rows[c]), data.n_genes)) for c in conds}
    summary, _ = score_predictions(data, trainer.controls, conds, split.train, {"noisy": preds},
                                   true_rows=rows, max_control_cells=10_000)
    names = [condition_name(c) for c in conds]
    true = {n: _dense(data, rows[c]) for n, c in zip(names, conds)}
    control = _dense(data, trainer.controls.by_line["all"])
    base = cell_mean_baseline(_dense(data, np.concatenate([rows[c] for c in split.train])),
                              {n: len(v) for n, v in true.items()})
    exclude = {n: [data.gene_index[c[1]]] for n, c in zip(names, conds)}
    direct = vcc_scores({n: preds[c] for n, c in zip(names, conds)}, true, control, base, exclude_genes=exclude)
    for k in ("des", "pds", "mae"):
        assert summary["noisy"][k] == pytest.approx(direct[k], rel=1e-6)
        assert summary["noisy"]["scaled"][k] == pytest.approx(direct["scaled"][k], rel=1e-5, abs=1e-9)
    assert summary["noisy"]["score"] == pytest.approx(direct["score"], rel=1e-5)
    assert 0 < summary["noisy"]["score"] < 100


# ---------------------------------------------------------------------------- several cell lines
def _two_lines():
    a = synthetic_data(n_cells=500, n_genes=20, n_perts=6, seed=7)
    b = synthetic_data(n_cells=500, n_genes=20, n_perts=6, seed=8)
    X = __import__("scipy.sparse", fromlist=["vstack"]).vstack([a.X, b.X]).tocsr()
    line = np.r_[np.full(a.n_obs, "A"), np.full(b.n_obs, "B")]
    return PerturbData(X, a.genes, np.r_[a.condition, b.condition], line, np.r_[a.batch, b.batch])


def test_each_line_is_scored_against_its_own_controls_and_cell_mean():
    data = _two_lines()
    controls = ControlIndex(data)
    rows = rows_by_condition(data)
    test = [("A", "G0"), ("A", "G1"), ("B", "G0"), ("B", "G1")]
    train = [c for c in rows if c[1] != "ctrl" and c not in test]
    oracle = {c: _dense(data, rows[c]) for c in test}
    summary, table = score_predictions(data, controls, test, train, {"oracle": oracle}, true_rows=rows)
    assert summary["cell_lines"] == ["A", "B"]
    assert summary["control_cells"] == {l: len(controls.by_line[l]) for l in ("A", "B")}
    assert summary["oracle"]["score"] == pytest.approx(100.0) and summary[CELL_MEAN]["score"] == 0.0
    assert table["condition"].tolist() == ["A|G0", "A|G1", "B|G0", "B|G1"]
    # a line without perturbed training cells (cross_cell_line): its control mean + the other lines' change
    only_a = [c for c in train if c[0] == "A"]
    got = line_cell_mean(data, controls, only_a, rows, "B")
    idx = np.concatenate([rows[c] for c in only_a])
    change = _dense(data, idx).mean(0) - controls.means[controls.group_of_row[idx]].astype(np.float64).mean(0)
    np.testing.assert_allclose(got, _dense(data, controls.by_line["B"]).mean(0) + change, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- errors
def test_errors_are_clear(small):
    data, split, trainer = small
    rows = rows_by_condition(data)
    conds = split.test[:3]
    good = {c: _dense(data, rows[c]) for c in conds}
    with pytest.raises(ValueError, match=r"prediction 'p' lacks condition\(s\) " + conds[2][1]):
        score_predictions(data, trainer.controls, conds, split.train, {"p": {c: good[c] for c in conds[:2]}})
    bad = dict(good)
    bad[conds[1]] = np.zeros(data.n_genes + 1)
    with pytest.raises(ValueError, match=f"perturbation '{conds[1][1]}' has shape"):
        score_predictions(data, trainer.controls, conds, split.train, {"p": bad})
    with pytest.raises(KeyError, match="no cells for condition"):
        score_predictions(data, trainer.controls, [("all", "NOPE")], split.train, {"p": {("all", "NOPE"): 0}})
    with pytest.raises(ValueError, match="needs perturbed training cells"):
        score_predictions(data, trainer.controls, conds, [], {"p": good})
    with pytest.raises(ValueError, match="reference baseline"):
        score_predictions(data, trainer.controls, conds, split.train, {CELL_MEAN: good})
    pb = PerturbData(data.X[:50], data.genes, data.condition[:50], data.cell_line[:50], data.batch[:50],
                     source="pb.h5ad", pseudobulk=True)
    with pytest.raises(ValueError, match="pb.h5ad: VCC metrics need single cells"):
        baselines_vcc(pb, ControlIndex(pb), conds, split.train, {})


# ---------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("vcc_cli")
    write_cli_inputs(root, n_doubles=10, epochs=1, eval_cells=40, control_mode="batch")  # cell-level predictions
    return root


def _invoke(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _check_block(block, baselines):
    assert set(block["baselines"]) == set(baselines)
    for entry in [block["model"], block["cell_mean"], *block["baselines"].values()]:
        assert {"des", "pds", "mae", "scaled", "score", "n_perturbations"} <= set(entry)
        assert set(entry["scaled"]) == {"des", "pds", "mae"}
    assert block["cell_mean"]["score"] == 0.0


def test_train_and_evaluate_print_and_write_the_vcc_block(files, tmp_path):
    run = tmp_path / "run"
    common = ["--data", str(files / "d.h5ad"), "--perturbation-col", "gene", "--batch-col", "rep"]
    res = _invoke(["train", *common, "--graph", str(files / "g.kg.npz"), "--config", str(files / "train.toml"),
                   "--task", "double", "--no-resume", "-o", str(run)])
    assert res.exit_code == 0, res.output
    assert "Virtual Cell Challenge metrics" in res.output and "TxPert prediction scored as: cells" in res.output
    metrics = json.loads((run / "metrics.json").read_text())
    _check_block(metrics["vcc"], ["general", "additive", "graph_neighbours", "linear", "linear_graph"])
    table = pd.read_csv(run / "per_perturbation.csv")
    for col in ("vcc_des", "vcc_pds", "vcc_mae", "general_vcc_des", "additive_vcc_pds", "cell_mean_vcc_mae"):
        assert col in table.columns, col
    assert table["vcc_des"].mean() == pytest.approx(metrics["vcc"]["model"]["des"])
    assert table["additive_vcc_mae"].mean() == pytest.approx(metrics["vcc"]["baselines"]["additive"]["mae"])

    res = _invoke(["evaluate", str(run)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    for name in ("TxPert", "general", "additive", "cell_mean (reference)"):
        assert any(line.startswith(name) and len(line.split()) >= 8 for line in lines), name
    assert "DES" in res.output and "PDS" in res.output and "sMAE" in res.output
    ev = json.loads((run / "evaluation_test.json").read_text())
    _check_block(ev["vcc"], ["general", "additive", "graph_neighbours", "linear", "linear_graph"])
    # the same weights and cells give the same block as at the end of training
    for k in ("des", "pds", "mae", "score"):
        assert ev["vcc"]["model"][k] == pytest.approx(metrics["vcc"]["model"][k], abs=1e-9)
    assert ev["pearson_delta"] == pytest.approx(metrics["model"]["pearson_delta"], abs=1e-9)
    assert ev["baselines"]["general"]["pearson_delta"] == pytest.approx(
        metrics["baselines"]["general"]["pearson_delta"], abs=1e-9)
    assert "vcc_pds" in pd.read_csv(run / "evaluation_test.csv").columns
    # the split-half ceiling, as at the end of training (same seeds, same conditions)
    assert any(line.startswith("split_half") for line in lines)
    assert ev["baselines"]["split_half"]["pearson_delta"] == pytest.approx(
        metrics["baselines"]["split_half"]["pearson_delta"], abs=1e-9)
    assert "split_half_pearson_delta" in pd.read_csv(run / "evaluation_test.csv").columns

    res = _invoke(["evaluate", str(run), "--part", "val", "--no-vcc", "--split-half-seeds", "0"])
    assert res.exit_code == 0 and "Virtual Cell Challenge" not in res.output
    assert "split_half" not in res.output
    ev_val = json.loads((run / "evaluation_val.json").read_text())
    assert "vcc" not in ev_val and "split_half" not in ev_val["baselines"]


def test_evaluate_works_on_a_run_folder_written_before_vcc(files, tmp_path):
    run = tmp_path / "old"
    common = ["--data", str(files / "d.h5ad"), "--perturbation-col", "gene", "--batch-col", "rep"]
    res = _invoke(["train", *common, "--graph", str(files / "g.kg.npz"), "--config", str(files / "train.toml"),
                   "--set", "control_mode=\"mean\"", "--no-vcc", "--no-baselines", "-o", str(run)])
    assert res.exit_code == 0, res.output
    assert "vcc" not in json.loads((run / "metrics.json").read_text())
    # an older config.json lacks the training options added since
    cfg = json.loads((run / "config.json").read_text())
    for key in ("loss", "cells_per_group"):
        cfg["train"].pop(key, None)
    (run / "config.json").write_text(json.dumps(cfg))
    res = _invoke(["evaluate", str(run)])
    assert res.exit_code == 0, res.output
    assert "TxPert prediction scored as: point mass per batch" in res.output
    _check_block(json.loads((run / "evaluation_test.json").read_text())["vcc"],
                 ["general", "graph_neighbours", "linear", "linear_graph"])


def test_baseline_command_prints_the_vcc_block(files, tmp_path):
    res = _invoke(["baseline", "--data", str(files / "d.h5ad"), "--perturbation-col", "gene", "--batch-col", "rep",
                   "--task", "double", "--split-half-seeds", "2", "-o", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert "Virtual Cell Challenge metrics" in res.output and "scored as" not in res.output
    report = json.loads((tmp_path / "b" / "baselines.json").read_text())
    assert set(report["vcc"]["baselines"]) == {"general", "additive", "linear"} and "model" not in report["vcc"]
    assert report["vcc"]["cell_mean"]["score"] == 0.0
    # with a graph: the graph baselines too (graph neighbours, linear with the graph embedding), in both blocks
    res = _invoke(["baseline", "--data", str(files / "d.h5ad"), "--perturbation-col", "gene", "--batch-col", "rep",
                   "--task", "double", "--split-half-seeds", "0", "--graph", str(files / "g.kg.npz"),
                   "-o", str(tmp_path / "bg")])
    assert res.exit_code == 0, res.output
    report_g = json.loads((tmp_path / "bg" / "baselines.json").read_text())
    assert report_g["graph"] == str(files / "g.kg.npz")
    for name in ("graph_neighbours", "linear_graph"):
        assert name in report_g["baselines"] and name in report_g["vcc"]["baselines"]
    assert report_g["baselines"]["general"] == report["baselines"]["general"]
    assert "split_half" in report["baselines"] and "split_half" not in report_g["baselines"]  # 0 draws: skipped
    assert (tmp_path / "b" / "baselines_vcc_per_perturbation.csv").exists()


def test_vcc_block_is_skipped_with_a_reason_over_the_memory_budget(files, tmp_path):
    """A screen whose VCC scoring would not fit the memory budget (even streamed: pseudobulks and control cells)
    gets a VCC block that says so (how much, and what to change) instead of exhausting the machine; the rest of the
    run is unchanged."""
    common = ["--data", str(files / "d.h5ad"), "--perturbation-col", "gene", "--batch-col", "rep",
              "--memory-budget", "1KB"]
    run = tmp_path / "run"
    res = _invoke(["train", *common, "--graph", str(files / "g.kg.npz"), "--config", str(files / "train.toml"),
                   "--task", "double", "--no-resume", "-o", str(run)])
    assert res.exit_code == 0, res.output
    metrics = json.loads((run / "metrics.json").read_text())
    reason = metrics["vcc"]["skipped"]
    assert "over the memory budget of 0.0 GB" in reason and "--memory-budget" in reason and "fewer conditions" in reason
    assert "pearson_delta" in metrics["model"] and "general" in metrics["baselines"]
    res = _invoke(["baseline", *common, "--task", "double", "--split-half-seeds", "0", "-o", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert "memory budget" in json.loads((tmp_path / "b" / "baselines.json").read_text())["vcc"]["skipped"]
