"""txpert_head.runs.predictor: self-contained run folders, predictions without the training data equal to the old
path (load_run + Trainer.predict_means), old run folders, moved folders, changed graphs, early label errors."""

from __future__ import annotations

import json
import shutil

import anndata
import numpy as np
import pytest
from click.testing import CliRunner

from txpert_head.cli.main import main
from txpert_head.data.perturb_data import DataError
from txpert_head.runs.predictor import BUNDLE, Predictor, RunFolderError, file_sha256
from txpert_head.runs.folder import RESOLVED_KEYS, evaluate_run, load_run
from txpert_files import write_cli_inputs


def _train(root, run, *extra):
    common = ["--data", str(root / "d.h5ad"), "--perturbation-col", "gene", "--batch-col", "rep"]
    res = CliRunner().invoke(main, ["train", *common, "--graph", str(root / "g.kg.npz"), "--config",
                                    str(root / "train.toml"), "--no-vcc", *extra, "-o", str(run)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return run


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("pred_inputs")
    write_cli_inputs(root, epochs=2, graph_genes=60, n_doubles=3)  # graph genes G30..G59: outside the field
    return root


@pytest.fixture(scope="module")
def run(files, tmp_path_factory):
    return _train(files, tmp_path_factory.mktemp("pred_run") / "run")


@pytest.fixture(scope="module")
def batch_run(files, tmp_path_factory):  # control cells (not means) as inputs: the bundle's control cells matter
    return _train(files, tmp_path_factory.mktemp("pred_run_batch") / "run", "--set", "control_mode=batch")


def _outside_field(pred: Predictor) -> str:
    gene = next(g for g in pred.graph_nodes if g not in pred.encoder_index)
    return gene


def _old_means(run, conds, cover=()):
    trainer, _ = load_run(run)
    trainer.cover_genes(list(cover))
    return trainer.predict_means(conds, rows_for={}), trainer


def test_run_folder_holds_what_prediction_needs(run, files):
    for name in ("manifest.json", "arrays.npz", "encoder_graph.kg.npz"):
        assert (run / BUNDLE / name).exists(), name
    config = json.loads((run / "config.json").read_text())
    assert config["graph_resolved"] == str((files / "g.kg.npz").resolve())
    assert config["graph_sha256"] == file_sha256(files / "g.kg.npz")
    assert config["data_resolved"] == str((files / "d.h5ad").resolve())
    manifest = json.loads((run / BUNDLE / "manifest.json").read_text())
    assert manifest["graph"]["sha256"] == config["graph_sha256"]
    assert manifest["graph"]["encoder_nodes"] < manifest["graph"]["nodes"]  # the receptive field only


@pytest.mark.parametrize("which", ["run", "batch_run"])
def test_predictions_equal_the_old_path(which, request, tmp_path, monkeypatch):
    run = request.getfixturevalue(which)
    monkeypatch.chdir(tmp_path)  # any working folder
    pred = Predictor.load(run)
    perts = ["G3", "G1+G3", "G25", "G10"]  # trained or held out, a double, a graph gene never perturbed
    res = pred.predict(perts)
    assert res.obs["perturbation"].tolist() == ["G3", "G1+G3", "G25", "G10"] and res.obs["known"].all()
    old, trainer = _old_means(run, [("all", p) for p in perts], cover=["G3", "G1", "G25", "G10"])
    np.testing.assert_allclose(res.mean, old, atol=1e-6, rtol=0)
    # the delta is against the batch-matched controls of the inputs (as profiles.true_profiles weights rows)
    rng = np.random.default_rng([trainer.cfg.seed, 999_983])
    idx = trainer.controls.by_line["all"]
    if len(idx) > trainer.cfg.eval_cells:
        idx = np.sort(rng.choice(idx, trainer.cfg.eval_cells, replace=False))
    groups, counts = np.unique(trainer.controls.group_of_row[idx], return_counts=True)
    ref = (trainer.controls.means[groups].astype(np.float64) * counts[:, None]).sum(0) / counts.sum()
    np.testing.assert_allclose(res.reference[0], ref, atol=1e-6)
    np.testing.assert_allclose(res.delta, res.mean - res.reference)
    # without the stored encoder output (the GNN run again): the same
    again = Predictor.load(run, cached_encoding=False).predict(perts)
    np.testing.assert_allclose(again.mean, res.mean, atol=1e-6, rtol=0)


def test_conditions_predicted_together_equal_one_at_a_time(batch_run, monkeypatch):
    """Prediction runs several conditions through the model in one pass (perturbation rows padded with -1):
    the same cells and means as one pass per condition, singles and doubles mixed, with and without data
    rows (control cells as inputs, so the inputs' draws matter)."""
    from txpert_head.training import prediction

    trainer, _ = load_run(batch_run)
    conds = [("all", p) for p in ["G3", "G1+G3", "G10", "G2+G5", "G7"]]
    runs = {}
    for rows_per_pass in (1, prediction.PREDICT_ROWS):
        monkeypatch.setattr(prediction, "PREDICT_ROWS", rows_per_pass)
        cells = list(trainer.iter_predicted_cells(conds, rows_for={}))
        runs[rows_per_pass] = (trainer.predict_means(conds), trainer.predict_means(conds, rows_for={}), cells)
    (m1, e1, c1), (m2, e2, c2) = runs[1], runs[prediction.PREDICT_ROWS]
    assert sum(len(c) for _, c in c2) < prediction.PREDICT_ROWS, "one pass holds every condition here"
    np.testing.assert_allclose(m2, m1, atol=1e-5, rtol=0)
    np.testing.assert_allclose(e2, e1, atol=1e-5, rtol=0)
    for (rows_a, cells_a), (rows_b, cells_b) in zip(c1, c2):
        np.testing.assert_array_equal(rows_a, rows_b)
        np.testing.assert_allclose(cells_b, cells_a, atol=1e-5, rtol=0)


def test_gene_outside_the_receptive_field_uses_the_whole_graph(run):
    pred = Predictor.load(run)
    gene = _outside_field(pred)
    res = pred.predict(["G3", gene])
    old, _ = _old_means(run, [("all", "G3"), ("all", gene)], cover=[gene])
    np.testing.assert_allclose(res.mean, old, atol=1e-6, rtol=0)
    assert gene in pred.encoder_index  # rebuilt on the whole graph


def test_per_batch_rows(run):
    pred = Predictor.load(run)
    res = pred.predict(["G3", "G25"], per_batch=True)
    batches = pred.batches["all"]
    assert len(res.obs) == 2 * len(batches)
    assert res.obs["batch"].tolist() == batches * 2 and res.obs["perturbation"].tolist()[:len(batches)] == ["G3"] * len(batches)
    means = pred.control_means
    for k, (p, b) in enumerate(zip(res.obs["perturbation"], res.obs["batch"])):
        np.testing.assert_allclose(res.reference[k], means.loc[("all", b)].to_numpy(), atol=1e-6)


def test_wrong_label_is_reported_before_the_model_is_built(run):
    pred = Predictor.load(run)
    with pytest.raises(DataError, match="NOPE.*allow_unknown=True"):
        pred.predict(["G3", "NOPE"])
    with pytest.raises(ValueError, match="unknown cell line 'K562'"):
        pred.predict(["G3"], cell_line="K562")
    assert pred._model is None and pred._cfg is None  # neither the model nor torch options were touched
    res = pred.predict(["NOPE"], allow_unknown=True)
    assert res.obs["known"].tolist() == [False]


def _strip_to_old_format(run, dest):
    """A copy of ``run`` as an earlier version wrote it: no predictor bundle, no resolved paths."""
    shutil.copytree(run, dest)
    shutil.rmtree(dest / BUNDLE)
    config = json.loads((dest / "config.json").read_text())
    for key in RESOLVED_KEYS:
        config.pop(key)
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def test_old_run_folder_loads_through_the_slow_path(run, tmp_path, monkeypatch):
    old = _strip_to_old_format(run, tmp_path / "old")
    new = Predictor.load(run).predict(["G3", "G1+G3", "G25"])
    pred = Predictor.load(old)
    assert pred.manifest is None and pred._trainer is not None
    res = pred.predict(["G3", "G1+G3", "G25"])
    np.testing.assert_allclose(res.mean, new.mean, atol=1e-6, rtol=0)
    np.testing.assert_allclose(res.delta, new.delta, atol=1e-6, rtol=0)
    # the CLI (means and cells) on the old folder and the new one
    for args in (["-o"], ["--cells", "5", "-o"]):
        outs = []
        for folder in (run, old):
            out = tmp_path / f"{folder.name}_{len(args)}.h5ad"
            r = CliRunner().invoke(main, ["predict", str(folder), "-p", "G3", "-p", "G25", *args, str(out)],
                                   catch_exceptions=False)
            assert r.exit_code == 0, r.output
            outs.append(anndata.read_h5ad(out))
        np.testing.assert_allclose(outs[0].X, outs[1].X, atol=1e-6)
        assert outs[0].obs["perturbation"].tolist() == outs[1].obs["perturbation"].tolist()


def test_cells_from_the_bundle_equal_the_old_path(batch_run, tmp_path):
    from txpert_head.runs.cell_output import control_rows

    pred = Predictor.load(batch_run)
    labels, cells, known = pred.sample_cells(["G3", "G25"], 7, seed=1)
    trainer, _ = load_run(batch_run)
    trainer.cover_genes(["G3", "G25"])
    pool = trainer.controls.by_line["all"]
    inputs = np.sort(np.random.default_rng([1, 104_729]).choice(pool, 7, replace=len(pool) < 7))
    conds = [("all", p) for p in labels]
    trainer.cfg.eval_cells = max(trainer.cfg.eval_cells, 7)
    old = trainer.predict_cells(conds, rows_for={c: inputs for c in conds}, seed=1)
    for a, b in zip(cells, old):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    ctrl = trainer.data.X[control_rows(trainer.controls, "all", 50, 1)].toarray()
    np.testing.assert_allclose(pred.control_cells("all", 50, seed=1), ctrl, atol=0)


def test_moved_run_folder_works_from_anywhere(run, files, tmp_path, monkeypatch):
    moved = tmp_path / "elsewhere" / "moved_run"
    shutil.copytree(run, moved)
    monkeypatch.chdir(tmp_path)
    pred = Predictor.load(moved)
    gene = _outside_field(pred)
    res = pred.predict(["G3", gene])
    np.testing.assert_allclose(res.mean, Predictor.load(run).predict(["G3", gene]).mean, atol=1e-6, rtol=0)
    table, summary = evaluate_run(moved, baselines=False, vcc=False)  # the training data from its recorded path
    metrics = json.loads((run / "metrics.json").read_text())
    assert summary["pearson_delta"] == pytest.approx(metrics["model"]["pearson_delta"], abs=1e-9)
    r = CliRunner().invoke(main, ["predict", str(moved), "-p", "G3", "-o", "p.h5ad"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    adata = anndata.read_h5ad(tmp_path / "p.h5ad")
    np.testing.assert_allclose(adata.layers["delta"], adata.X - adata.layers["control_mean"], atol=1e-5)


def test_changed_graph_file_is_refused(run, files, tmp_path):
    from kgbuild.graph import MultiGraph
    from txpert_head.simulate.fixtures import synthetic_graph

    moved = tmp_path / "run"
    shutil.copytree(run, moved)
    other = tmp_path / "g.kg.npz"
    shutil.copy(files / "g.kg.npz", other)
    config = json.loads((moved / "config.json").read_text())
    config["graph_resolved"] = str(other)
    (moved / "config.json").write_text(json.dumps(config))
    manifest = json.loads((moved / BUNDLE / "manifest.json").read_text())
    manifest["graph"]["resolved"] = str(other)
    (moved / BUNDLE / "manifest.json").write_text(json.dumps(manifest))
    gene = _outside_field(Predictor.load(moved))
    Predictor.load(moved).predict([gene])  # same content: accepted
    synthetic_graph(60, seed=5).save(other)  # same name and nodes, other edges
    assert isinstance(MultiGraph.load(other), MultiGraph)
    pred = Predictor.load(moved)
    pred.predict(["G3"])  # genes of the stored encoder graph need no whole graph
    with pytest.raises(RunFolderError, match="has changed since training"):
        pred.predict([gene])
    with pytest.raises(RunFolderError, match="has changed since training"):
        load_run(moved)
    other.unlink()
    with pytest.raises(RunFolderError, match="is missing"):
        Predictor.load(moved).predict([gene])


def test_api_wrappers(run, files, tmp_path):
    import txpert_head as tx

    res = tx.predict(run, "G3", out=tmp_path / "a.h5ad")
    assert (tmp_path / "a.h5ad").exists() and res.mean.shape == (1, 30)
    import txpert_head.api as api

    assert tx.train is api.train and tx.identify is api.identify and tx.baselines is api.baselines
    assert tx.training.__name__ == "txpert_head.training"  # the stages load on first use, like the verbs
    with pytest.raises(ValueError, match="task must be one of"):
        tx.train(files / "d.h5ad", files / "g.kg.npz", tmp_path / "r", task="nope")


def test_stored_symbol_map_maps_like_the_whole_gene_info_table(shared_data):
    """The run keeps only the part of gene_info that can map into its vocabulary; requests map the same."""
    from kgbuild.symbols import SymbolMap, match_names
    from txpert_head.runs.predictor import _reduced_symbols

    table = shared_data / "genes" / "Homo_sapiens.gene_info.gz"
    full = SymbolMap.from_gene_info(table)
    vocab = ["MARCHF8", "TP53", "STAT1", "JAK2", "KLF1", "CEBPA", "IFNGR1", "A1BG", "SEPTIN7", "MYC"]
    kept = _reduced_symbols(table, vocab)
    reduced = SymbolMap(set(kept["current"]), kept["alias"], kept["ambiguous"])
    names = ["MARCH8", "SEPT7", "P53", "TP53", "A1B", "ISGF-3", "JAK-2", "c-Myc", "NOPE", "KLF1", "STAT91",
             "BRCA1", "A1BG", "EKLF"] + sorted(full.alias)[:300] + sorted(full.ambiguous)[:100]
    a, b = match_names(names, vocab, full), match_names(names, vocab, reduced)
    assert a.mapping == b.mapping and a.matched == b.matched and sorted(a.unknown) == sorted(b.unknown)
    assert a.ambiguous == b.ambiguous and a.mapping.get("MARCH8") == "MARCHF8"
    assert len(kept["alias"]) < len(full.alias) / 10
