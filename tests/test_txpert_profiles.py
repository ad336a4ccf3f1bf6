"""Per-condition profiles: every condition's mean read in one pass (ConditionMeans) and the batch-matched
references as one sparse product give the numbers of the per-condition computation, bit for bit, in memory
and backed; a caller holding the means reads no data again."""

from __future__ import annotations

import numpy as np
import pytest

from txpert_head.data import profiles
from txpert_head.data.controls import ControlIndex
from txpert_head.data.perturb_data import load_h5ad
from txpert_head.data.profiles import (ConditionMeans, batch_matched_references, retrieval_candidates,
                                      rows_by_condition, true_profiles)
from txpert_head.simulate.fixtures import synthetic_data

from txpert_files import write_h5ad


@pytest.fixture(scope="module")
def data():
    return synthetic_data(n_cells=1500, n_genes=40, n_perts=14, n_batches=3, n_doubles=4, seed=5)


def _loop_references(controls: ControlIndex, row_sets) -> np.ndarray:
    """The references summed condition by condition, group by group (what the sparse product replaces)."""
    ref = np.zeros((len(row_sets), controls.means.shape[1]))
    for k, idx in enumerate(row_sets):
        groups, counts = np.unique(controls.group_of_row[idx], return_counts=True)
        ref[k] = (controls.means[groups].astype(np.float64) * counts[:, None]).sum(0) / counts.sum()
    return ref


@pytest.mark.parametrize("n_batches", [3, 24])   # 24: more groups than numpy's pairwise-summation block
def test_references_are_the_per_condition_sums_bit_for_bit(data, n_batches):
    many = data if n_batches == 3 else synthetic_data(n_cells=4000, n_genes=40, n_perts=6, n_batches=24, seed=6)
    controls = ControlIndex(many)
    rows = rows_by_condition(many)
    row_sets = [rows[c] for c in rows]
    rng = np.random.default_rng(0)
    row_sets += [np.sort(rng.choice(many.n_obs, size, replace=False)) for size in (1, 2, 7, 300)]
    row_sets.append(np.arange(many.n_obs))
    assert len(set(controls.group_of_row.tolist())) == n_batches
    assert np.array_equal(batch_matched_references(controls, row_sets), _loop_references(controls, row_sets))
    # by hand: two rows of group 0 and one of group 2 weigh the control means 2 : 1
    g0, g2 = np.flatnonzero(controls.group_of_row == 0)[:2], np.flatnonzero(controls.group_of_row == 2)[:1]
    want = (2 * controls.means[0].astype(np.float64) + controls.means[2]) / 3
    np.testing.assert_allclose(batch_matched_references(controls, [np.sort(np.r_[g0, g2])])[0], want, rtol=1e-12)
    assert batch_matched_references(controls, []).shape == (0, data.n_genes)


def test_condition_means_equal_each_conditions_own_mean(data):
    rows = rows_by_condition(data)
    means = ConditionMeans(data, rows)
    assert means.conditions == [c for c in rows if c[1] != "ctrl"] and means.values.dtype == np.float32
    for c in means.conditions:
        want = np.asarray(data.X[rows[c]].mean(axis=0), dtype=np.float32).ravel()
        assert np.array_equal(means.values[means.conditions.index(c)], want), c
    some = means.conditions[3:7][::-1]
    assert means.covers(some) and not means.covers(some + [("all", "ctrl")])
    assert means.of(some).dtype == np.float64
    with pytest.raises(KeyError, match="ctrl"):
        means.of([("all", "ctrl")])


def test_profiles_from_the_means_read_no_data_and_equal_a_fresh_pass(data, monkeypatch):
    controls = ControlIndex(data)
    rows = rows_by_condition(data)
    conds = [c for c in rows if c[1] != "ctrl"][2:9]
    fresh = true_profiles(data, controls, conds, rows)
    fresh_cand, fresh_index = retrieval_candidates(data, controls, conds, rows)
    means, partial = ConditionMeans(data, rows), ConditionMeans(data, rows, conds[:2])
    monkeypatch.setattr(profiles, "group_means", lambda *a, **k: pytest.fail("read the data again"))
    for got, want in zip(true_profiles(data, controls, conds, rows, means), fresh):
        assert np.array_equal(got, want)
    cand, index = retrieval_candidates(data, controls, conds, rows, means)
    assert np.array_equal(cand, fresh_cand) and np.array_equal(index, fresh_index)
    assert cand.conditions == fresh_cand.conditions and cand.lines == fresh_cand.lines
    # conditions the means do not hold are read from the data, as without them
    with pytest.raises(pytest.fail.Exception, match="read the data again"):
        true_profiles(data, controls, conds, rows, partial)


def test_condition_means_read_backed_equal_in_memory(tmp_path):
    raw = synthetic_data(n_cells=700, n_genes=25, n_perts=9, seed=2, normalize=False)
    path = write_h5ad(raw, tmp_path / "d.h5ad")
    mem, disk = (load_h5ad(path, "gene", batch_col="rep", backed=b, memory_budget="64KB") for b in ("no", "yes"))
    a, b = ConditionMeans(mem, rows_by_condition(mem)), ConditionMeans(disk, rows_by_condition(disk))
    assert a.conditions == b.conditions and np.array_equal(a.values, b.values)
