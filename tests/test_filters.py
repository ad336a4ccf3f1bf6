"""Edge table and the shared filters, on small hand-made tables (ties, caps, percentages, duplicates)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kgbuild import filters as F
from kgbuild.edge_table import EdgeTable
from kgbuild.errors import KgbuildInputError
from kgbuild.graph import GraphError


def triples(t: EdgeTable) -> list[tuple[str, str, float]]:
    return list(zip(t.sources.tolist(), t.targets.tolist(), t.weights.tolist()))


def as_set(t: EdgeTable) -> set[tuple[str, str, float]]:
    return set(triples(t))


# ---------------------------------------------------------------------- EdgeTable
def test_edge_table_validates_and_round_trips_codes() -> None:
    t = EdgeTable.from_pairs([("B", "A", 0.5), ("C", "B", 1.0)])
    vocab, s, d = t.codes()
    assert vocab.tolist() == ["A", "B", "C"]
    assert s.tolist() == [1, 2] and d.tolist() == [0, 1]
    back = EdgeTable.from_codes(vocab, s, d, t.weights)
    assert triples(back) == triples(t)
    assert t.weights.dtype == np.float64
    with pytest.raises(GraphError, match="one length"):
        EdgeTable(np.array(["A"]), np.array(["B", "C"]), np.array([1.0]))
    with pytest.raises(GraphError, match="strings"):
        EdgeTable(np.array([1, 2]), np.array([3, 4]), np.array([1.0, 1.0]))


def test_to_graph_keeps_isolated_nodes_and_meta() -> None:
    t = EdgeTable.from_pairs([("B", "A", 0.5)])
    g = t.to_graph("x", {"source": "test"}, nodes=["Z"])
    assert g.nodes.tolist() == ["A", "B", "Z"]
    assert g.layer_names == ["x"] and g.meta["layers"]["x"]["source"] == "test"
    with pytest.raises(GraphError, match="more than once"):
        EdgeTable.from_pairs([("B", "A", 0.5), ("B", "A", 0.7)]).to_graph("x")
    assert len(EdgeTable.empty()) == 0


# ---------------------------------------------------------------------- single filters
def test_drop_self_loops_and_min_weight() -> None:
    t = EdgeTable.from_pairs([("A", "A", 1.0), ("A", "B", 0.5), ("B", "A", 0.4), ("C", "A", 0.45)])
    assert triples(F.drop_self_loops(t)) == [("A", "B", 0.5), ("B", "A", 0.4), ("C", "A", 0.45)]
    assert as_set(F.min_weight(t, 0.5)) == {("A", "A", 1.0), ("A", "B", 0.5)}
    assert as_set(F.min_weight(t, 0.5, strict=True)) == {("A", "A", 1.0)}


def test_symmetrize_adds_reverse_and_keeps_max_of_conflicts() -> None:
    t = EdgeTable.from_pairs([("A", "B", 0.5), ("B", "A", 0.9), ("C", "A", 0.2)])
    assert as_set(F.symmetrize(t)) == {
        ("A", "B", 0.9), ("B", "A", 0.9), ("C", "A", 0.2), ("A", "C", 0.2),
    }


@pytest.mark.parametrize(
    "how, expected",
    [("max", 0.7), ("min", 0.2), ("sum", 1.4), ("mean", 1.4 / 3), ("first", 0.5)],
)
def test_dedupe_modes(how: str, expected: float) -> None:
    t = EdgeTable.from_pairs([("A", "B", 0.5), ("C", "B", 0.1), ("A", "B", 0.7), ("A", "B", 0.2)])
    out = dict(((s, d), w) for s, d, w in triples(F.dedupe(t, how)))
    assert out[("C", "B")] == 0.1
    assert out[("A", "B")] == pytest.approx(expected)
    assert len(out) == 2


def test_dedupe_error_names_the_pair() -> None:
    t = EdgeTable.from_pairs([("A", "B", 0.5), ("A", "B", 0.7)])
    with pytest.raises(KgbuildInputError, match="edge A -> B appears more than once"):
        F.dedupe(t, "error")


def test_top_pct_counts_by_ceiling_uses_abs_weight_and_breaks_ties_by_name() -> None:
    # 10 edges: top 25% = ceil(2.5) = 3 edges; |-0.9| ranks first; three ties at 0.5
    rows = [("A", "B", -0.9), ("D", "C", 0.5), ("B", "C", 0.5), ("A", "C", 0.5)] + [
        (f"X{i}", "Y", 0.1) for i in range(6)
    ]
    t = EdgeTable.from_pairs(rows)
    kept = triples(F.top_pct(t, 25))
    assert sorted(kept) == sorted([("A", "B", -0.9), ("A", "C", 0.5), ("B", "C", 0.5)])
    # the same ranking whatever the row order
    perm = np.random.default_rng(0).permutation(len(rows))
    assert sorted(triples(F.top_pct(t.select(perm), 25))) == sorted(kept)
    assert len(F.top_pct(t, 100)) == 10 and len(F.top_pct(t, 0)) == 0
    assert F.top_pct_count(200, 1) == 2 and F.top_pct_count(201, 1) == 3


def test_top_pct_keeps_an_edge_and_its_reverse_together() -> None:
    t = F.symmetrize(EdgeTable.from_pairs([("A", "B", 0.5), ("C", "D", 0.5), ("E", "F", 0.9)]))
    kept = as_set(F.top_pct(t, 4 / 6 * 100))
    assert kept == {("E", "F", 0.9), ("F", "E", 0.9), ("A", "B", 0.5), ("B", "A", 0.5)}


def test_max_in_degree_caps_each_target_with_name_ties() -> None:
    rows = [("D", "T", 0.5), ("B", "T", 0.5), ("C", "T", 0.9), ("A", "T", 0.1), ("E", "T", 0.5),
            ("A", "U", 0.3), ("B", "U", 0.2)]
    t = EdgeTable.from_pairs(rows)
    out = F.max_in_degree(t, 3)
    assert as_set(out) == {("C", "T", 0.9), ("B", "T", 0.5), ("D", "T", 0.5), ("A", "U", 0.3), ("B", "U", 0.2)}
    for seed in range(5):  # row order never matters
        perm = np.random.default_rng(seed).permutation(len(rows))
        assert as_set(F.max_in_degree(t.select(perm), 3)) == as_set(out)
    assert len(F.max_in_degree(t, 0)) == len(rows)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 7), st.integers(0, 7), st.sampled_from([0.1, 0.2, 0.5, 0.9])),
        min_size=0, max_size=40, unique_by=lambda r: (r[0], r[1]),
    ),
    st.integers(1, 4),
)
def test_max_in_degree_matches_brute_force(rows: list[tuple[int, int, float]], k: int) -> None:
    t = EdgeTable.from_pairs([(f"g{s}", f"g{d}", w) for s, d, w in rows])
    expected = set()
    for target in {f"g{d}" for _, d, _ in rows}:
        incoming = sorted((-w, f"g{s}") for s, d, w in rows if f"g{d}" == target)
        expected |= {(src, target, -nw) for nw, src in incoming[:k]}
    assert as_set(F.max_in_degree(t, k)) == expected


# ---------------------------------------------------------------------- the pipeline
def test_apply_filters_runs_in_order_and_records_everything() -> None:
    t = EdgeTable.from_pairs([
        ("A", "A", 1.0),                      # self-loop
        ("A", "B", 0.05),                     # below min weight
        ("A", "C", 0.6), ("A", "C", 0.8),     # duplicate -> 0.8
        ("B", "C", 0.7), ("D", "C", 0.7),     # with the symmetric expansion C gets A, B, D, and ...
        ("E", "C", 0.3),
    ])
    out, rec = F.apply_filters(t, min_weight=0.1, symmetric=True, max_in_degree=2)
    got = as_set(out)
    assert ("A", "A", 1.0) not in got and ("A", "B", 0.05) not in got
    assert {(s, w) for s, d, w in got if d == "C"} == {("A", 0.8), ("B", 0.7)}
    assert ("C", "E", 0.3) in got  # the reverse edges were added before the cap
    assert rec["self_loops_removed"] == 1
    assert rec["below_min_weight_removed"] == 1
    assert rec["duplicates_removed"] == 1
    assert rec["symmetrize_added"] == 4
    assert rec["max_in_degree_removed"] == 2
    assert rec["edges_in"] == 7 and rec["edges_out"] == len(out)
    assert rec["min_weight"] == 0.1 and rec["max_in_degree"] == 2 and rec["symmetrize"] is True
    assert math.isclose(sum(out.weights), sum(w for _, _, w in got))


def test_apply_filters_on_an_empty_table() -> None:
    out, rec = F.apply_filters(EdgeTable.empty(), min_weight=0.5, top_pct=1, max_in_degree=3)
    assert len(out) == 0 and rec["edges_out"] == 0
