"""The multigraph file: construction, validation, round trip, operations, conversions, damaged files."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kgbuild.cli import main as kgbuild_cli
from kgbuild.graph import ARRAYS, GraphError, GraphFileError, MultiGraph


def three_layer_graph() -> MultiGraph:
    string = MultiGraph.from_edges("string", ["A", "B", "C", "A"], ["B", "A", "A", "C"], [0.9, 0.9, 0.75, 0.75],
                                   {"source": "STRING", "version": "12.0", "filters": {"min_score": 700}})
    go = MultiGraph.from_edges("go", ["B", "D"], ["D", "B"], [0.25, 0.25], {"source": "GO"}, nodes=["E"])
    screen = MultiGraph.from_edges("depmap", ["E", "A"], ["A", "E"], [0.5, 0.125], {"source": "screen"})
    return MultiGraph.merge([string, go, screen])


def test_round_trip_keeps_every_array(tmp_path: Path) -> None:
    g = three_layer_graph()
    path = g.save(tmp_path / "multi.kg.npz")
    back = MultiGraph.load(path)
    assert back.equals(g, check_meta=True)
    raw = np.load(path, allow_pickle=False)
    for name, arr in g.to_arrays().items():
        assert np.array_equal(raw[name], arr), name
        assert raw[name].dtype == arr.dtype, name
    assert raw["edge_index"].dtype == np.int64 and raw["edge_weight"].dtype == np.float32
    assert raw["edge_layer"].dtype == np.int16 and raw["nodes"].dtype.kind == "U"
    assert back.layer_names == ["string", "go", "depmap"]
    assert back.meta["layers"]["string"]["filters"] == {"min_score": 700}
    assert [p.name for p in tmp_path.iterdir()] == ["multi.kg.npz"]


def test_same_inputs_give_identical_arrays(tmp_path: Path) -> None:
    a, b = three_layer_graph(), three_layer_graph()
    for name in ARRAYS[:-1]:
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes()


def test_edges_are_canonically_ordered_by_layer_target_source() -> None:
    g = three_layer_graph()
    keys = list(zip(g.edge_layer.tolist(), g.edge_index[1].tolist(), g.edge_index[0].tolist()))
    assert keys == sorted(keys)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(edge_index=np.array([[0], [5]])), "refers to node 5"),
        (dict(edge_weight=np.array([-1.0])), "non-negative"),
        (dict(edge_weight=np.array([np.nan])), "NaN"),
        (dict(edge_layer=np.array([3])), "refers to layer 3"),
        (dict(nodes=np.array(["A", "A"])), "'A' appears more than once"),
        (dict(edge_index=np.array([[0, 0], [1, 1]]), edge_weight=np.ones(2), edge_layer=np.zeros(2, dtype=int)), "more than once"),
        (dict(edge_index=np.array([0, 1])), "shape (2, E)"),
    ],
)
def test_invalid_arrays_are_rejected_with_a_reason(kwargs: dict, message: str) -> None:
    base = dict(nodes=np.array(["A", "B"]), edge_index=np.array([[0], [1]]), edge_weight=np.array([1.0]),
                edge_layer=np.array([0]), layers=np.array(["x"]))
    base.update(kwargs)
    with pytest.raises(GraphError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MultiGraph(**base)


def test_merge_unions_vocabularies_and_keeps_layers() -> None:
    g = three_layer_graph()
    assert g.nodes.tolist() == ["A", "B", "C", "D", "E"]
    assert g.summary()["layers"]["go"]["edges"] == 2
    with pytest.raises(GraphError, match="'go' is in more than one input"):
        MultiGraph.merge([g.layer("go"), g.layer("go")])


def test_restrict_orders_nodes_as_given_and_can_keep_missing_genes() -> None:
    g = three_layer_graph()
    sub = g.restrict(["C", "A", "ZZZ"])
    assert sub.nodes.tolist() == ["C", "A"]
    assert sub.layer_names == g.layer_names
    edges = {(sub.nodes[s], sub.nodes[t], sub.layer_names[l]) for (s, t), l in zip(sub.edge_index.T, sub.edge_layer)}
    assert edges == {("C", "A", "string"), ("A", "C", "string")}
    kept = g.restrict(["C", "A", "ZZZ"], keep_missing=True)
    assert kept.nodes.tolist() == ["C", "A", "ZZZ"] and kept.in_degree()[2] == 0


def test_layer_keeps_vocabulary_and_provenance() -> None:
    g = three_layer_graph()
    go = g.layer("go")
    assert go.layer_names == ["go"] and go.num_nodes == g.num_nodes and go.num_edges == 2
    assert go.meta["layers"] == {"go": {"source": "GO"}}
    with pytest.raises(KeyError, match="no layer 'nope'"):
        g.layer("nope")


def test_conversions_agree_with_arrays() -> None:
    g = three_layer_graph()
    nxg = g.to_networkx()
    assert nxg.number_of_nodes() == 5 and nxg.number_of_edges() == g.num_edges
    assert nxg["A"]["B"]["string"]["weight"] == pytest.approx(0.9)
    data = g.to_pyg()
    assert data.num_nodes == 5 and data.edge_index.shape == (2, g.num_edges)
    assert data.edge_type.tolist() == g.edge_layer.tolist()
    assert np.allclose(data.edge_weight.numpy(), g.edge_weight)


def test_to_dgl_explains_how_to_install_when_missing() -> None:
    pytest.importorskip("torch")
    try:
        import dgl  # noqa: F401
    except Exception:
        with pytest.raises(ImportError, match="torch==2.2.1"):
            three_layer_graph().to_dgl()
    else:
        d = three_layer_graph().to_dgl()
        assert d.num_edges() == three_layer_graph().num_edges


def test_summary_reports_in_degree_per_layer() -> None:
    s = three_layer_graph().summary()
    assert s["nodes"] == 5 and s["edges"] == 8
    assert s["layers"]["string"]["in_degree"]["max"] == 2  # A <- B, A <- C
    assert "string" in three_layer_graph().format_summary()


# ---------------------------------------------------------------------- damaged and foreign files
def _good_bytes() -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **three_layer_graph().to_arrays())
    return buf.getvalue()


GOOD = _good_bytes()


def _assert_clean_error(path: Path) -> None:
    try:
        MultiGraph.load(path)
    except GraphFileError as err:
        assert str(path) in str(err)
    # a mutation may leave a still-valid file (e.g. a flipped byte in zip padding): then it must load fine


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=len(GOOD) - 1))
def test_truncated_files_raise_a_clean_error(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "cut.kg.npz"
    path.write_bytes(GOOD[:cut])
    with pytest.raises(GraphFileError, match="cut.kg.npz"):
        MultiGraph.load(path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(1, 255)), min_size=1, max_size=8))
def test_corrupted_files_raise_a_clean_error_or_load(tmp_path: Path, flips: list[tuple[int, int]]) -> None:
    data = bytearray(GOOD)
    for pos, xor in flips:
        data[pos] ^= xor
    path = tmp_path / "bad.kg.npz"
    path.write_bytes(bytes(data))
    _assert_clean_error(path)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=2048))
def test_random_bytes_raise_a_clean_error(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "noise.kg.npz"
    path.write_bytes(blob)
    with pytest.raises(GraphFileError):
        MultiGraph.load(path)


foreign_arrays = st.dictionaries(
    keys=st.sampled_from(list(ARRAYS) + ["x", "arr_0"]),
    values=st.one_of(
        st.just(np.array([1, 2, 3])),
        st.just(np.array(["a", "b"])),
        st.just(np.zeros((2, 3), dtype=np.int64)),
        st.just(np.array(['{"format": "txpert-kg multigraph", "format_version": 1, "layers": {}}'])),
        st.just(np.array(["not json"])),
        st.just(np.array([0.5], dtype=np.float32)),
        st.just(np.array([], dtype=np.int16)),
    ),
    max_size=7,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrays=foreign_arrays)
def test_foreign_npz_files_raise_a_clean_error_or_load(tmp_path: Path, arrays: dict) -> None:
    path = tmp_path / "foreign.kg.npz"
    np.savez(path, **arrays)
    _assert_clean_error(path)


def test_pickled_object_arrays_are_refused(tmp_path: Path) -> None:
    arrays = three_layer_graph().to_arrays()
    arrays["nodes"] = arrays["nodes"].astype(object)
    path = tmp_path / "pickled.kg.npz"
    np.savez(path, **arrays)
    with pytest.raises(GraphFileError, match="pickled.kg.npz"):
        MultiGraph.load(path)


def test_foreign_zip_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(GraphFileError, match="missing array"):
        MultiGraph.load(path)
    with pytest.raises(GraphFileError, match="no such file"):
        MultiGraph.load(tmp_path / "nope.kg.npz")


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    arrays = three_layer_graph().to_arrays()
    meta = json.loads(arrays["meta"][0])
    meta["format_version"] = 99
    arrays["meta"] = np.array([json.dumps(meta)])
    path = tmp_path / "future.kg.npz"
    np.savez(path, **arrays)
    with pytest.raises(GraphFileError, match="newer"):
        MultiGraph.load(path)


def test_failed_save_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g = three_layer_graph()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(OSError, match="disk full"):
        g.save(tmp_path / "out.kg.npz")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- command line
def test_cli_merge_and_info(tmp_path: Path) -> None:
    g = three_layer_graph()
    g.layer("string").save(tmp_path / "s.kg.npz")
    g.layer("go").save(tmp_path / "g.kg.npz")
    runner = CliRunner()
    out = tmp_path / "m.kg.npz"
    res = runner.invoke(kgbuild_cli, ["merge", str(tmp_path / "s.kg.npz"), str(tmp_path / "g.kg.npz"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert MultiGraph.load(out).layer_names == ["string", "go"]
    res = runner.invoke(kgbuild_cli, ["info", str(out)])
    assert res.exit_code == 0 and "string" in res.output and "go" in res.output


def test_cli_merge_with_a_damaged_input_writes_nothing(tmp_path: Path) -> None:
    three_layer_graph().layer("string").save(tmp_path / "s.kg.npz")
    (tmp_path / "bad.kg.npz").write_bytes(GOOD[: len(GOOD) // 2])
    out = tmp_path / "m.kg.npz"
    res = CliRunner().invoke(kgbuild_cli, ["merge", str(tmp_path / "s.kg.npz"), str(tmp_path / "bad.kg.npz"), "-o", str(out)])
    assert res.exit_code == 1
    assert "bad.kg.npz" in res.output and "Traceback" not in res.output
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.kg.npz", "s.kg.npz"]


def test_cli_help_and_version() -> None:
    runner = CliRunner()
    res = runner.invoke(kgbuild_cli, ["--help"])
    assert res.exit_code == 0 and "merge" in res.output and "info" in res.output
    res = runner.invoke(kgbuild_cli, ["--version"])
    assert res.exit_code == 0 and "kgbuild" in res.output


def test_format_summary_aligns_long_layer_names():
    """Columns stay aligned when a layer name is longer than the default column width."""
    g = MultiGraph.merge([
        MultiGraph.from_edges("a_rather_long_layer_name_x", ["A", "B"], ["B", "A"], [1.0, 0.5], {}),
        MultiGraph.from_edges("s", ["A"], ["C"], [0.2], {}),
    ])
    lines = g.format_summary().splitlines()[1:]
    header_end = lines[0].index("edges") + len("edges")
    for line in lines[1:]:
        name, rest = line.split(maxsplit=1)
        # the edge count is right-aligned under the header's "edges"
        count = rest.split()[0]
        assert line.index(count, len(name)) + len(count) == header_end, line


def test_layer_in_degree_counts_only_nodes_touched_by_the_layer():
    g = MultiGraph.merge([
        MultiGraph.from_edges("a", ["A", "B", "C"], ["B", "C", "B"], [1.0, 1.0, 1.0], {}),
        MultiGraph.from_edges("b", ["D"], ["E"], [1.0], {}),
    ])
    nodes = g.nodes.tolist()
    touched_a = sorted(["A", "B", "C"], key=nodes.index)
    assert g.layer_in_degree("a").tolist() == [{"A": 0, "B": 2, "C": 1}[n] for n in touched_a]
    assert g.layer_in_degree("b").tolist() == [{"D": 0, "E": 1}[n] for n in sorted(["D", "E"], key=nodes.index)]
    assert g.summary()["layers"]["a"]["nodes_with_edges"] == 3
    with pytest.raises(KeyError, match="no layer"):
        g.layer_in_degree("c")
