"""The vectorised training data path gives the same numbers as the per-group loops it replaced.

``ControlIndex.sample`` must draw the same control rows *and* leave the generator in the same state as the
reference loop below (the loop of earlier versions), so seeded runs, resumed runs and the DDP shards keep
their batches; :func:`dense_rows` must equal ``X[rows].toarray()``.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from txpert_head.data.controls import ControlIndex
from txpert_head.data.perturb_data import PerturbData, dense_rows


def reference_sample(ci: ControlIndex, rows, mode: str, rng: np.random.Generator) -> np.ndarray:
    """The per-group loop of earlier versions of :meth:`ControlIndex.sample`."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty(len(rows), dtype=np.int64)
    groups = ci.group_of_row[rows]
    if mode == "batch":
        for g in np.unique(groups):
            pool, sel = ci.by_group[g], groups == g
            out[sel] = pool[rng.integers(0, len(pool), int(sel.sum()))]
    else:
        lines = ci.line_of_group[groups]
        for line in np.unique(lines):
            pool, sel = ci.by_line[line], lines == line
            out[sel] = pool[rng.integers(0, len(pool), int(sel.sum()))]
    return out


def random_data(rs: np.random.Generator) -> PerturbData:
    n, G = int(rs.integers(50, 1500)), int(rs.integers(3, 40))
    X = sp.random(n, G, density=rs.uniform(0.0, 0.5), format="csr", dtype=np.float32,
                  random_state=int(rs.integers(1 << 30)))
    batch = np.char.add("b", rs.integers(0, int(rs.integers(1, 12)), n).astype(str))
    line = np.char.add("L", rs.integers(0, int(rs.integers(1, 4)), n).astype(str))
    label = np.where(rs.random(n) < rs.uniform(0.01, 0.5), "ctrl", "G1")
    for key in np.unique(np.char.add(line, np.char.add("|", batch))):  # a control in every batch
        label[np.flatnonzero(np.char.add(line, np.char.add("|", batch)) == key)[0]] = "ctrl"
    return PerturbData(X, [f"g{i}" for i in range(G)], label, line, batch)


@pytest.mark.parametrize("mode", ["batch", "random"])
def test_sample_matches_reference_loop_and_generator_state(mode):
    rs = np.random.default_rng(11)
    for trial in range(12):
        ci = ControlIndex(random_data(rs))
        n = len(ci.group_of_row)
        for k in range(4):
            rows = rs.integers(0, n, int(rs.integers(0, 500)))
            new, ref = np.random.default_rng([trial, k]), np.random.default_rng([trial, k])
            got = ci.sample(rows, mode, new)
            want = reference_sample(ci, rows, mode, ref)
            assert got.dtype == want.dtype and np.array_equal(got, want)
            assert new.bit_generator.state == ref.bit_generator.state  # the next draws stay the same too


def test_inputs_are_the_densified_sampled_rows():
    data = random_data(np.random.default_rng(3))
    ci = ControlIndex(data)
    rows = np.random.default_rng(4).integers(0, data.n_obs, 200)
    got = ci.inputs(rows, "batch", np.random.default_rng(9))
    picked = reference_sample(ci, rows, "batch", np.random.default_rng(9))
    assert got.dtype == np.float32 and np.array_equal(got, data.X[picked].toarray())


def test_dense_rows_equals_toarray():
    rs = np.random.default_rng(7)
    for _ in range(10):
        data = random_data(rs)
        rows = rs.integers(0, data.n_obs, int(rs.integers(0, 300)))
        assert np.array_equal(dense_rows(data.X, rows), data.X[rows].toarray())
        out = np.full((len(rows), data.n_genes), 7.0, dtype=np.float32)  # a reused buffer is zeroed first
        assert dense_rows(data.X, rows, out=out) is out and np.array_equal(out, data.X[rows].toarray())
    # duplicate entries (non-canonical CSR) are summed, as by toarray()
    dup = sp.csr_matrix((np.array([1, 2, 3], np.float32), np.array([2, 2, 0]), np.array([0, 2, 3])), shape=(2, 4))
    dup.has_canonical_format = False
    assert np.array_equal(dense_rows(dup, [0, 1, 0]), dup[[0, 1, 0]].toarray())
    with pytest.raises(ValueError, match="C-contiguous"):
        dense_rows(dup, [0, 1], out=np.zeros((4, 2), np.float32).T)
