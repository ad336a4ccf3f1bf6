"""Detecting the perturbation column and control label (and, on request, the batch and cell-line columns)
of the field's AnnData layouts: scPerturb/PerturBench, Papalexi/Mixscape, GEARS."""

from __future__ import annotations

import json
import logging

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from click.testing import CliRunner

from kgbuild.graph import MultiGraph
from txpert_head.data.perturb_data import CONTROL, DataError, detect_columns, load_h5ad

SHARED = {  # file: (perturbation column, control label, task)
    "norman2019_k562_subset.h5ad": ("perturbation", "control", "double"),
    "perturbench_devel.h5ad": ("perturbation", "control", "unseen_single"),
    "papalexi2021_thp1_subset.h5ad": ("target", "non-targeting", "unseen_single"),
}


def _write(path, obs: dict, n_genes: int = 12, seed: int = 0):
    """A small raw-count AnnData with the given obs columns; genes G0..G(n-1) plus the perturbed ones."""
    obs = pd.DataFrame(obs)
    obs.index = [f"c{i}" for i in range(len(obs))]
    perturbed = sorted({g for col in obs.columns if obs[col].dtype == object
                        for lab in obs[col] for g in str(lab).split("+") if g.isupper() and g[0] != "C"})
    genes = [f"G{i}" for i in range(n_genes)] + perturbed
    rng = np.random.default_rng(seed)
    X = sp.csr_matrix(rng.poisson(3.0, size=(len(obs), len(genes))).astype(np.float32))
    adata = anndata.AnnData(X=X, obs=obs, var=pd.DataFrame(index=genes))
    adata.write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def shared_files(shared_data):
    folder = shared_data / "perturbseq"
    missing = [f for f in SHARED if not (folder / f).exists()]
    if missing:
        pytest.skip(f"missing shared Perturb-seq files: {', '.join(missing)}")
    return folder


@pytest.mark.parametrize("name", sorted(SHARED))
def test_shared_files_detect_column_and_control(shared_files, name):
    column, control, _ = SHARED[name]
    obs = anndata.read_h5ad(shared_files / name, backed="r").obs
    found = detect_columns(obs, path=name)
    assert found.perturbation_col == column
    assert found.control == (control,)
    assert found.detected == ("perturbation_col", "control")
    assert found.cell_line_col is None and found.batch_col is None  # only detected on request ("auto")


def test_shared_papalexi_load_logs_the_choice_and_records_it(shared_files, caplog):
    path = shared_files / "papalexi2021_thp1_subset.h5ad"
    with caplog.at_level(logging.WARNING, logger="txpert_head.data.perturb_data"):
        data = load_h5ad(path)
    assert ("perturbation column 'target' (26 labels), control label 'non-targeting' (2,386 cells): detected; "
            "--perturbation-col / --control to choose") in caplog.text
    assert data.notes["columns"]["perturbation_col"] == "target"
    assert data.notes["columns"]["control"] == ["non-targeting"]
    assert int(np.sum(data.condition == CONTROL)) == 2386
    assert len(data.perturbations()) == 25


def test_shared_batch_and_cell_line_auto(shared_files):
    obs = {n: anndata.read_h5ad(shared_files / n, backed="r").obs for n in SHARED}
    pap = detect_columns(obs["papalexi2021_thp1_subset.h5ad"], batch_col="auto", cell_line_col="auto")
    assert pap.batch_col == "bio_rep" and pap.cell_line_col is None
    norman = detect_columns(obs["norman2019_k562_subset.h5ad"], batch_col="auto", cell_line_col="auto")
    assert norman.batch_col == "batch" and norman.cell_line_col is None  # one cell type: no column
    bench = detect_columns(obs["perturbench_devel.h5ad"], batch_col="auto", cell_line_col="auto")
    assert bench.cell_line_col == "cell_type" and bench.batch_col is None


def test_explicit_options_are_used_as_given(shared_files):
    obs = anndata.read_h5ad(shared_files / "norman2019_k562_subset.h5ad", backed="r").obs
    found = detect_columns(obs, "condition", ["control"], batch_col="batch")
    assert (found.perturbation_col, found.control, found.batch_col, found.detected) == (
        "condition", ("control",), "batch", ())
    only_col = detect_columns(obs, "perturbation_raw")  # not a known name: given, so used; control detected
    assert only_col.perturbation_col == "perturbation_raw" and only_col.detected == ("control",)


def test_gears_style_condition_column(tmp_path):
    """GEARS: obs 'condition' with 'A+ctrl' (the single A), 'A+B' and 'ctrl'; other text columns beside it."""
    labels = ["ctrl"] * 30 + ["KLF1+ctrl"] * 10 + ["ctrl+SET"] * 10 + ["KLF1+SET"] * 10 + ["TP53+ctrl"] * 10
    path = _write(tmp_path / "gears.h5ad", {
        "condition": labels,
        "cell_type": ["K562"] * len(labels),
        "condition_name": [f"K562_{lab}_1+1" for lab in labels],
        "dose_val": ["1+1"] * len(labels),
    })
    found = detect_columns(anndata.read_h5ad(path).obs)
    assert found.perturbation_col == "condition" and found.control == ("ctrl",)
    assert found.n_control_cells == 30
    data = load_h5ad(path)
    assert data.perturbations() == ["KLF1", "KLF1+SET", "SET", "TP53"]
    assert int(np.sum(data.condition == CONTROL)) == 30


def test_content_detection_of_an_unusual_column_name(tmp_path):
    labels = ["NTC"] * 20 + ["GATA1"] * 10 + ["TAL1"] * 10
    path = _write(tmp_path / "odd.h5ad", {"sgRNA_group": labels, "lane": ["L1"] * 40})
    found = detect_columns(anndata.read_h5ad(path).obs)
    assert found.perturbation_col == "sgRNA_group" and found.control == ("NTC",)


def test_identical_columns_are_one_choice(tmp_path):
    labels = ["control"] * 20 + ["GATA1"] * 10 + ["GATA1+TAL1"] * 10
    path = _write(tmp_path / "same.h5ad", {"condition": labels, "perturbation": labels})
    assert detect_columns(anndata.read_h5ad(path).obs).perturbation_col == "perturbation"


def test_two_different_columns_are_ambiguous(tmp_path):
    path = _write(tmp_path / "two.h5ad", {
        "perturbation": ["ctrl"] * 20 + ["GATA1"] * 20,
        "target": ["non-targeting"] * 10 + ["TAL1"] * 30,
    })
    with pytest.raises(DataError, match="ambiguous perturbation column") as err:
        load_h5ad(path)
    msg = str(err.value)
    assert "'perturbation' (2 labels, control 'ctrl')" in msg and "'target' (2 labels, control 'non-targeting')" in msg
    assert "--perturbation-col" in msg
    assert load_h5ad(path, perturbation_col="target").notes["columns"]["control"] == ["non-targeting"]


def test_two_control_labels_are_ambiguous(tmp_path):
    path = _write(tmp_path / "ctrl2.h5ad", {"perturbation": ["ctrl"] * 10 + ["non-targeting"] * 5 + ["GATA1"] * 20})
    with pytest.raises(DataError, match="ambiguous control label") as err:
        load_h5ad(path)
    assert "'ctrl' (10 cells), 'non-targeting' (5 cells)" in str(err.value) and "--control" in str(err.value)
    data = load_h5ad(path, control=["ctrl", "non-targeting"])
    assert int(np.sum(data.condition == CONTROL)) == 15


def test_nothing_found_lists_what_was_looked_for(tmp_path):
    path = _write(tmp_path / "none.h5ad", {"perturbation": ["A1"] * 10 + ["GATA1"] * 10, "rep": ["r1"] * 20})
    with pytest.raises(DataError, match="cannot find the perturbation column") as err:
        load_h5ad(path)
    assert "obs has: perturbation, rep" in str(err.value) and "--perturbation-col" in str(err.value)
    with pytest.raises(DataError, match="no control label in column 'perturbation'") as err:
        load_h5ad(path, perturbation_col="perturbation")
    assert "'A1' (10)" in str(err.value) and "--control" in str(err.value)


def test_run_folder_records_the_detected_values(tmp_path):
    from txpert_head.runs.folder import DataOptions

    labels = ["non-targeting"] * 20 + ["GATA1"] * 10 + ["TAL1"] * 10
    path = _write(tmp_path / "d.h5ad", {"target": labels, "gem_group": ["1", "2"] * 20})
    opts = DataOptions(str(path), batch_col="auto")
    opts.load()
    assert (opts.perturbation_col, opts.control, opts.batch_col) == ("target", ["non-targeting"], "gem_group")
    again = DataOptions.from_config(json.loads(json.dumps(__import__("dataclasses").asdict(opts))))
    assert again.load().notes["columns"]["detected"] == []  # reloads as recorded, nothing detected


def _small_graph(path, out):
    """A ring over the genes perturbed in ``path`` (any perturbation column the detection picks)."""
    data = load_h5ad(path, normalize="none")
    genes = sorted({g for p in data.perturbations() for g in p.split("+")})
    src, dst = genes, genes[1:] + genes[:1]
    MultiGraph.from_edges("ring", src, dst, np.ones(len(genes)), nodes=genes).save(out)
    return out


@pytest.mark.parametrize("name", sorted(SHARED))  # ~7 s for the three on 2 cores: not marked slow
def test_train_on_shared_files_needs_no_column_or_control_flags(shared_files, tmp_path, name):
    """The issue's done-criterion: `txpert train` on each shared file without --perturbation-col / --control."""
    from txpert_head.cli.main import main

    column, control, task = SHARED[name]
    path = shared_files / name
    graph = _small_graph(path, tmp_path / "ring.kg.npz")
    run = tmp_path / "run"
    res = CliRunner().invoke(main, [
        "train", "--data", str(path), "--graph", str(graph), "--task", task, "--epochs", "1",
        "--set", "max_steps_per_epoch=3", "--set", "progress=false", "--set", "batch_size=64",
        "--set", "encoder_dim=16", "--no-baselines", "--no-vcc", "-o", str(run)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert f"perturbation column {column!r}" in res.output and f"control label {control!r}" in res.output
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["perturbation_col"] == column and config["data"]["control"] == [control]
    metrics = json.loads((run / "metrics.json").read_text())
    assert np.isfinite(metrics["model"]["pearson_delta"])
