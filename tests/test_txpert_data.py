"""Reading Perturb-seq .h5ad files: normalisation, label parsing, pseudobulk and clear errors."""

from __future__ import annotations

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from kgbuild.graph import MultiGraph
from txpert_head.data.perturb_data import DataError, graph_overlap, load_h5ad, parse_label
from txpert_head.data.splits import SplitError, make_split


def _write(path, labels, batches, X=None, extra=None):
    n = len(labels)
    X = np.random.default_rng(0).poisson(3, (n, 6)).astype(np.float32) if X is None else X
    obs = pd.DataFrame({"guide": labels, "rep": batches, **(extra or {})}, index=[f"c{i}" for i in range(n)])
    ad = anndata.AnnData(sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(X.shape[1])]))
    ad.write_h5ad(path)
    return path


def test_counts_are_normalised_and_labels_canonical(tmp_path):
    labels = ["non-targeting", "B+A", "A", "A+ctrl", "non-targeting", "A"]
    p = _write(tmp_path / "d.h5ad", labels, ["r1"] * 6)
    d = load_h5ad(p, "guide", ["non-targeting", "ctrl"], batch_col="rep")
    assert d.normalized_here
    assert d.condition.tolist() == ["ctrl", "A+B", "A", "A", "ctrl", "A"]
    totals = np.expm1(d.X.toarray()).sum(1)
    np.testing.assert_allclose(totals, 4000, rtol=1e-4)  # the default target_sum
    # normalised input is used as is (detected), and the choice can be forced
    d2 = load_h5ad(p, "guide", ["non-targeting", "ctrl"], batch_col="rep", normalize="none")
    assert not d2.normalized_here and d2.X.max() > 1


def test_log_normalised_input_used_as_is(tmp_path):
    X = np.log1p(np.random.default_rng(1).poisson(3, (4, 5)).astype(np.float32) * 1.37)
    p = _write(tmp_path / "d.h5ad", ["ctrl", "A", "ctrl", "A"], ["1", "1", "2", "2"], X=X)
    d = load_h5ad(p, "guide", batch_col="rep")
    assert not d.normalized_here
    np.testing.assert_allclose(d.X.toarray(), X, rtol=1e-6)
    assert d.pseudobulk  # one row per condition x batch


def test_missing_obs_column_lists_columns(tmp_path):
    p = _write(tmp_path / "d.h5ad", ["ctrl", "A"], ["1", "1"])
    with pytest.raises(DataError, match=r"no obs column 'perturbation'.*columns present: guide, rep"):
        load_h5ad(p, "perturbation")  # given: used as is (None would detect 'guide')
    with pytest.raises(DataError, match=r"no obs column 'bio_rep' for the batch"):
        load_h5ad(p, "guide", batch_col="bio_rep")


def test_no_controls_in_a_batch_names_the_batch(tmp_path):
    p = _write(tmp_path / "d.h5ad", ["ctrl", "A", "A", "B"], ["rep_1", "rep_1", "rep_2", "rep_2"])
    with pytest.raises(DataError, match=r"no control cells in batch 'rep_2'"):
        load_h5ad(p, "guide", batch_col="rep")


def test_no_control_label_at_all(tmp_path):
    p = _write(tmp_path / "d.h5ad", ["NT", "A"], ["1", "1"])
    with pytest.raises(DataError, match=r"no control rows.*'ctrl'.*most common labels"):
        load_h5ad(p, "guide", control="ctrl")  # given: used as is
    assert load_h5ad(p, "guide").notes["columns"]["control"] == ["NT"]  # not given: detected
    p = _write(tmp_path / "e.h5ad", ["X1", "A"], ["1", "1"])
    with pytest.raises(DataError, match=r"no control label in column 'guide'.*most common labels"):
        load_h5ad(p, "guide")


@pytest.mark.parametrize("label", ["A+", "A B", "A+A", "A;B", "+"])
def test_unknown_label_syntax_names_the_label(tmp_path, label):
    p = _write(tmp_path / "d.h5ad", ["ctrl", label], ["1", "1"])
    with pytest.raises(DataError, match="unknown syntax") as err:
        load_h5ad(p, "guide")
    assert repr(label.strip()) in str(err.value) or label == "+"


def test_parse_label():
    assert parse_label("ctrl+KLF1", ["ctrl"]) == "KLF1"
    assert parse_label("SET+KLF1", ["ctrl"]) == "KLF1+SET"
    assert parse_label("control", ["control"]) == "ctrl"


def test_empty_test_split(tmp_path):
    p = _write(tmp_path / "d.h5ad", ["ctrl", "A", "ctrl", "A"], ["1", "1", "1", "1"])
    d = load_h5ad(p, "guide")
    with pytest.raises(SplitError, match=r"empty test split: task 'unseen_single'.*1 single"):
        make_split(d, "unseen_single")
    with pytest.raises(SplitError, match="empty test split: task 'double'"):
        make_split(d, "double")


def test_graph_without_overlap(tmp_path):
    p = _write(tmp_path / "d.h5ad", ["ctrl", "A", "B"], ["1", "1", "1"])
    d = load_h5ad(p, "guide")
    g = MultiGraph.from_edges("ppi", ["X1"], ["X2"], [1.0])
    with pytest.raises(DataError, match=r"no overlap with the data's perturbed genes.*A, B"):
        graph_overlap(d, g.nodes.tolist(), "ppi.kg.npz")
    g2 = MultiGraph.from_edges("ppi", ["A"], ["X2"], [1.0])
    assert graph_overlap(d, g2.nodes.tolist())["perturbed_missing"] == 1


def test_split_sizes_and_seed():
    from txpert_head.simulate.fixtures import synthetic_data

    d = synthetic_data(n_cells=1500, n_genes=10, n_perts=16, n_doubles=12, seed=0)
    s = make_split(d, "unseen_single", seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (9, 3, 4)
    assert make_split(d, "unseen_single", seed=0).test == s.test
    assert make_split(d, "unseen_single", seed=1).test != s.test
    dbl = make_split(d, "double", seed=0)
    assert all("+" in p for _, p in dbl.test)
    assert sum(len(v) for v in dbl.subgroups.values()) == len(dbl.test)
    assert set(dbl.subgroups) <= {"seen0", "seen1", "seen2"}


def test_average_rows_takes_each_groups_mean_of_repeated_sparse_or_dense_rows():
    from txpert_head.data.controls import average_rows

    rng = np.random.default_rng(3)
    dense = rng.random((6, 5)).astype(np.float32) * (rng.random((6, 5)) < 0.5)
    members = np.array([[0, 1], [0, 1], [0, 4], [1, 0], [2, 5], [2, 2], [2, 5]])   # row 1 twice in group 0
    d64 = dense.astype(np.float64)
    expected = np.stack([d64[[1, 1, 4]].mean(0), d64[[0]].mean(0), d64[[5, 2, 5]].mean(0)])
    for rows in (dense, sp.csr_matrix(dense)):
        out = average_rows(rows, members, 3)
        assert out.dtype == np.float64 and out.shape == (3, 5)
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
