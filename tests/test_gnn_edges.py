"""Expander and virtual-node edges: regular in-degree, seeded, only over the nodes given."""

from __future__ import annotations

import numpy as np
import pytest

from gnn.edges import EdgeSet, expander_edges, virtual_node_edges


@pytest.mark.parametrize("method,degree", [("regular", 3), ("regular", 4), ("cycles", 4), ("cycles", 6)])
def test_expander_is_regular_seeded_and_stays_on_its_nodes(method, degree):
    nodes = np.arange(5, 45)  # 40 graph nodes; ids 0..4 and 45.. are not in the graph
    src, dst = expander_edges(nodes, degree, seed=7, method=method)
    assert set(src) <= set(nodes) and set(dst) <= set(nodes)
    assert (src != dst).all()
    indeg = np.bincount(dst, minlength=45)[nodes]
    outdeg = np.bincount(src, minlength=45)[nodes]
    assert (indeg == degree).all() and (outdeg == degree).all()
    again = expander_edges(nodes, degree, seed=7, method=method)
    assert np.array_equal(src, again[0]) and np.array_equal(dst, again[1])
    other = expander_edges(nodes, degree, seed=8, method=method)
    assert not (np.array_equal(src, other[0]) and np.array_equal(dst, other[1]))


def test_regular_expander_falls_back_when_no_regular_graph_exists():
    src, dst = expander_edges(np.arange(5), 3, seed=0, method="regular")  # 5 * 3 odd
    assert (np.bincount(dst, minlength=5) == 4).all()


def test_expander_rejects_unknown_method():
    with pytest.raises(ValueError, match="expander method"):
        expander_edges(np.arange(10), 4, seed=0, method="ramanujan")


def test_virtual_node_edges_both_ways():
    src, dst = virtual_node_edges(np.array([0, 2, 3]), first_virtual=10, num_virtual=2)
    pairs = set(zip(src.tolist(), dst.tolist()))
    assert pairs == {(n, v) for n in (0, 2, 3) for v in (10, 11)} | {(v, n) for n in (0, 2, 3) for v in (10, 11)}


def test_edge_set_checks_range():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        EdgeSet(np.array([0, 3]), np.array([1, 1]), np.ones(2), np.zeros(2), num_nodes=3)
