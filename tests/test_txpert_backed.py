"""Out-of-core reading: an .h5ad read backed (rows from disk, txpert_head.data.backed) gives the numbers of the
same file read into memory, bit for bit: rows, normalisation, control means, aggregated examples, training."""

from __future__ import annotations

import anndata
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from txpert_head.data.backed import BackedCSR, backed_mode, group_means, group_sums, parse_bytes, read_rows
from txpert_head.data.controls import ControlIndex
from txpert_head.data.perturb_data import DataError, load_h5ad
from txpert_head.data.splits import make_split
from txpert_head.runs.folder import LEGACY_DATA_OPTIONS, DataOptions
from txpert_head.simulate.fixtures import synthetic_data, synthetic_graph
from txpert_head.training.config import TrainConfig
from txpert_head.training.trainer import Trainer

from txpert_files import write_h5ad


@pytest.fixture(scope="module")
def counts_file(tmp_path_factory):
    """Raw counts (load_h5ad normalises them) in anndata's on-disk CSR layout."""
    root = tmp_path_factory.mktemp("backed")
    data = synthetic_data(n_cells=900, n_genes=30, n_perts=12, seed=3, normalize=False)
    return write_h5ad(data, root / "d.h5ad"), data


def _load(path, backed, budget=None):
    return load_h5ad(path, "gene", batch_col="rep", backed=backed, memory_budget=budget)


def _same_csr(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    return (a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.indptr, b.indptr)
            and np.array_equal(a.indices, b.indices) and np.array_equal(a.data, b.data))


@pytest.mark.parametrize("normalise", [True, False])
def test_backed_rows_equal_in_memory_rows(counts_file, normalise):
    path, _ = counts_file
    normalize = "auto" if normalise else "none"
    mem = load_h5ad(path, "gene", batch_col="rep", normalize=normalize, backed="no")
    disk = load_h5ad(path, "gene", batch_col="rep", normalize=normalize, backed="yes")
    assert isinstance(disk.X, BackedCSR) and not isinstance(mem.X, BackedCSR)
    assert disk.normalized_here == mem.normalized_here == normalise
    assert disk.notes == mem.notes and disk.genes == mem.genes
    assert np.array_equal(disk.condition, mem.condition) and np.array_equal(disk.batch, mem.batch)
    assert disk.X.shape == mem.X.shape and disk.X.nnz == mem.X.nnz and disk.X.dtype == np.float32
    rng = np.random.default_rng(0)
    n = mem.n_obs
    for rows in (rng.permutation(n)[:200], rng.integers(0, n, 300), np.array([5, 5, 5, 0, 899, 5]),
                 np.zeros(0, np.int64), np.arange(n), np.arange(100, 400)):
        assert _same_csr(disk.X[rows], mem.X[rows]), rows[:5]
    assert _same_csr(disk.X[10:20], mem.X[10:20])
    mask = rng.random(n) < 0.3
    assert _same_csr(disk.X[mask], mem.X[mask])
    assert np.array_equal(disk.X[[3, 1], [0, 2]].toarray(), mem.X[[3, 1]][:, [0, 2]].toarray())


def test_many_scattered_rows_are_read_in_several_selections(counts_file, monkeypatch):
    """Rows far apart become many ranges; they are read a few hundred ranges per HDF5 read (one selection of
    all of them takes quadratic time) and come back the same whatever the chunking."""
    from txpert_head.data import backed

    path, _ = counts_file
    mem, disk = _load(path, "no"), _load(path, "yes")
    monkeypatch.setattr(backed, "_GAP", 0)  # every row its own range
    rows = np.random.default_rng(1).permutation(mem.n_obs)[:400]
    for per_read in (1, 7, 512):
        monkeypatch.setattr(backed, "_RANGES_PER_READ", per_read)
        assert _same_csr(disk.X[rows], mem.X[rows]), per_read


def test_block_passes_do_not_depend_on_block_size(counts_file):
    """group_sums / group_means: the same numbers for any budget, and the old whole-matrix scipy expressions."""
    path, _ = counts_file
    mem = _load(path, "no")
    rows = [np.flatnonzero(mem.cond_id == c) for c in range(len(mem.conditions))]
    old = np.stack([np.asarray(mem.X[r].mean(axis=0), dtype=np.float32).ravel() for r in rows])
    for X in (mem.X, _load(path, "yes").X):
        for budget in (1, 1 << 12, None):  # one row per block ... everything at once
            assert np.array_equal(group_means(X, rows, budget), old)
    all_rows = np.arange(mem.n_obs)
    M = sp.csr_matrix((np.ones(mem.n_obs, np.float32), (mem.cond_id, all_rows)),
                      shape=(len(mem.conditions), mem.n_obs))
    assert np.array_equal(group_sums(_load(path, "yes").X, all_rows, mem.cond_id, len(mem.conditions), budget=1),
                          np.asarray((M @ mem.X).todense()))


def test_read_rows_in_blocks_is_the_whole_read(counts_file):
    """read_rows (the predictor bundle's control cells): the matrix X[rows] gives, for any block size, in memory
    or backed, rows in any order and repeated."""
    path, _ = counts_file
    mem = _load(path, "no")
    rng = np.random.default_rng(0)
    for rows in (np.flatnonzero(mem.is_control), rng.integers(0, mem.n_obs, 200), np.zeros(0, np.int64)):
        expected = sp.csr_matrix(mem.X[rows], dtype=np.float32)
        for X in (mem.X, _load(path, "yes").X):
            for budget in (1, 1 << 12, None):  # one row per block ... everything at once
                got = read_rows(X, rows, budget)
                assert got.shape == expected.shape and got.indices.dtype == np.int32
                assert np.array_equal(got.indptr, expected.indptr) and np.array_equal(got.indices, expected.indices)
                assert np.array_equal(got.data, expected.data)


def test_backed_auto_follows_memory_budget(counts_file):
    path, _ = counts_file
    assert isinstance(_load(path, "auto", "1KB").X, BackedCSR)
    assert not isinstance(_load(path, "auto").X, BackedCSR)  # a small file stays in memory under the default
    small = _load(path, "auto", 1)
    assert small.memory_budget == 1
    mem, disk = ControlIndex(_load(path, "no")), ControlIndex(small)
    assert np.array_equal(mem.means, disk.means)


def test_dense_or_csc_x_cannot_be_read_backed(tmp_path):
    data = synthetic_data(n_cells=200, n_genes=10, n_perts=3, seed=1, normalize=False)
    obs = pd.DataFrame({"gene": data.condition, "rep": data.batch}, index=[f"c{i}" for i in range(data.n_obs)])
    for name, X in (("dense", data.X.toarray()), ("csc", sp.csc_matrix(data.X))):
        path = tmp_path / f"{name}.h5ad"
        anndata.AnnData(X, obs=obs, var=pd.DataFrame(index=data.genes)).write_h5ad(path)
        with pytest.raises(DataError, match="needs the expression matrix 'X' stored as CSR.*scipy.sparse.csr_matrix"):
            _load(path, "yes")
        assert not isinstance(_load(path, "auto", 1).X, BackedCSR)  # auto: read in memory, as before
        assert _load(path, "no").n_obs == 200


def test_backed_reads_a_layer_and_names_missing_ones(tmp_path):
    data = synthetic_data(n_cells=300, n_genes=12, n_perts=4, seed=2, normalize=False)
    obs = pd.DataFrame({"gene": data.condition, "rep": data.batch}, index=[f"c{i}" for i in range(data.n_obs)])
    ad = anndata.AnnData(sp.csr_matrix(data.X.shape, dtype=np.float32), obs=obs, var=pd.DataFrame(index=data.genes),
                         layers={"counts": data.X})
    ad.write_h5ad(tmp_path / "l.h5ad")
    mem = load_h5ad(tmp_path / "l.h5ad", "gene", batch_col="rep", layer="counts", backed="no")
    disk = load_h5ad(tmp_path / "l.h5ad", "gene", batch_col="rep", layer="counts", backed="yes")
    assert _same_csr(disk.X[np.arange(300)], mem.X)
    with pytest.raises(DataError, match="no layer 'raw'; layers present: counts"):
        load_h5ad(tmp_path / "l.h5ad", "gene", batch_col="rep", layer="raw", backed="yes")


def test_options_parse_and_old_configs_load():
    assert parse_bytes("8GB") == 8 << 30 and parse_bytes("500mb") == 500 << 20 and parse_bytes(4096) == 4096
    for bad in ("eight", "0", "-1GB", "3 parsecs"):
        with pytest.raises(ValueError, match="memory budget"):
            parse_bytes(bad)
    assert [backed_mode(v) for v in (True, False, "auto", "YES", "no")] == ["yes", "no", "auto", "yes", "no"]
    with pytest.raises(ValueError, match="backed must be one of auto, yes, no"):
        backed_mode("sometimes")
    old = DataOptions.from_config({"path": "d.h5ad", "perturbation_col": "gene", "control": ["ctrl"],
                                   "cell_line_col": None, "batch_col": "rep", "normalize": "auto",
                                   "pseudobulk": None})
    assert (old.backed, old.memory_budget) == (LEGACY_DATA_OPTIONS["backed"], LEGACY_DATA_OPTIONS["memory_budget"])
    assert DataOptions("d.h5ad", backed=True, memory_budget="1GB").memory_budget == 1 << 30


def _fit(path, backed, tmp, **kw):
    torch.manual_seed(0)
    data = _load(path, backed, 1 << 12)  # tiny budget: many blocks in every pass
    graph, split = synthetic_graph(30, seed=3), make_split(data, "unseen_single", seed=0)
    cfg = TrainConfig(epochs=2, batch_size=64, progress=False, encoder_dim=8, encoder_heads=2, hidden=16,
                      checkpoint_every=0, encoder_backend="pyg", eval_cells=64, patience=10, **kw)
    trainer = Trainer(data, graph, split, cfg, tmp)
    return trainer, trainer.fit(resume=False)


@pytest.mark.parametrize("setting", [dict(), dict(control_mode="batch", basal="mlp", aggregate=False)],
                         ids=["aggregated", "cells"])
def test_training_in_memory_and_backed_is_identical(counts_file, tmp_path, setting):
    path, _ = counts_file
    torch.set_num_threads(1)
    mem_trainer, mem = _fit(path, "no", tmp_path / "mem", **setting)
    disk_trainer, disk = _fit(path, "yes", tmp_path / "disk", **setting)
    assert isinstance(disk_trainer.data.X, BackedCSR)
    assert mem_trainer.aggregated == disk_trainer.aggregated == (not setting)
    if mem_trainer.aggregated:
        assert np.array_equal(mem_trainer.ex_y, disk_trainer.ex_y)
        # the means made in place, block by block (tiny budget: many blocks), are exactly the one-shot formula's
        t = mem_trainer
        key = t.data.cond_id[t.train_rows] * len(t.controls.groups) + t.controls.group_of_row[t.train_rows]
        _, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
        sums = group_sums(t.data.X, t.train_rows, inv, len(counts))
        assert len(counts) > 1 << 12 // (8 * t.data.n_genes)  # more examples than one block holds
        assert np.array_equal(t.ex_y, (sums / counts[:, None]).astype(np.float32))
    assert len(mem.history) == 2 and mem.test_summary
    assert [h["train_loss"] for h in disk.history] == [h["train_loss"] for h in mem.history]
    assert disk.test_summary == mem.test_summary
    a, b = mem_trainer.model.state_dict(), disk_trainer.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_backed_file_closes_and_pickles(counts_file):
    import pickle

    path, _ = counts_file
    X = _load(path, "yes").X
    again = pickle.loads(pickle.dumps(X))
    assert _same_csr(again[np.arange(50)], X[np.arange(50)])
    X.close()
    again.close()
    with h5py.File(path, "r") as f:  # the file is still a valid h5ad
        assert f["X"].attrs["encoding-type"] == "csr_matrix"


def test_compressed_file_reads_the_same(tmp_path):
    """gzip-compressed chunks (anndata's compression option) are read through a chunk cache: same rows."""
    data = synthetic_data(n_cells=400, n_genes=20, n_perts=5, seed=4, normalize=False)
    obs = pd.DataFrame({"gene": data.condition, "rep": data.batch}, index=[f"c{i}" for i in range(data.n_obs)])
    anndata.AnnData(data.X, obs=obs, var=pd.DataFrame(index=data.genes)).write_h5ad(tmp_path / "z.h5ad",
                                                                                    compression="gzip")
    mem, disk = _load(tmp_path / "z.h5ad", "no"), _load(tmp_path / "z.h5ad", "yes")
    rows = np.random.default_rng(1).integers(0, 400, 500)
    assert _same_csr(disk.X[rows], mem.X[rows])


def test_a_run_resumes_when_only_the_reading_options_change(counts_file, tmp_path):
    """``backed`` and ``memory_budget`` choose how the file is read, not what: resuming with other values is
    allowed, while other data options still refuse (the run folder's same-data check)."""
    from txpert_head.runs.folder import RunFolderError, train_run

    path, _ = counts_file
    graph = tmp_path / "g.kg.npz"
    synthetic_graph(30, seed=3).save(graph)
    cfg = TrainConfig(epochs=1, batch_size=64, progress=False, encoder_dim=8, encoder_heads=2, hidden=16,
                      encoder_backend="pyg", eval_cells=64)
    out = tmp_path / "run"

    def run(**data):
        return train_run(DataOptions(str(path), perturbation_col="gene", batch_col="rep", **data), graph,
                         "unseen_single", cfg, out, baselines=False, vcc=False)

    first = run(backed="no")
    again = run(backed="yes", memory_budget=1 << 14)  # resumes the finished run: same numbers
    assert again["model"] == first["model"]
    with pytest.raises(RunFolderError, match="other data"):
        run(backed="yes", normalize="none")
