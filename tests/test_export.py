"""kgbuild export: TSV and GraphML hold every edge, weight and layer; writes are atomic."""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from click.testing import CliRunner

from kgbuild import export as export_mod
from kgbuild.cli import main as kgbuild_cli
from kgbuild.graph import MultiGraph


def two_layer_graph() -> MultiGraph:
    a = MultiGraph.from_edges("string", ["A", "B", "C"], ["B", "A", "A"], [0.9, 0.9, 1 / 3], {"source": "STRING"})
    b = MultiGraph.from_edges("go", ["B", "D"], ["D", "B"], [0.25, 0.125], {"source": "GO"}, nodes=["E"])
    return MultiGraph.merge([a, b])


def test_tsv_round_trip(tmp_path: Path) -> None:
    g = two_layer_graph()
    path = g.save(tmp_path / "g.kg.npz")
    out = tmp_path / "g.tsv"
    res = CliRunner().invoke(kgbuild_cli, ["export", str(path), "--format", "tsv", "-o", str(out)])
    assert res.exit_code == 0, res.output
    lines = out.read_text().splitlines()
    assert lines[0] == "source\ttarget\tweight\tlayer"
    rows = [line.split("\t") for line in lines[1:]]
    assert len(rows) == g.num_edges
    names, layers = g.nodes.tolist(), g.layer_names
    expected = [(names[s], names[t], w, layers[l]) for (s, t), w, l in
                zip(g.edge_index.T.tolist(), g.edge_weight.tolist(), g.edge_layer.tolist())]
    got = [(s, t, float(np.float32(w)), l) for s, t, w, l in rows]
    assert got == expected  # float32 weights read back exactly
    assert ["C", "A", "0.33333334", "string"] in rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.kg.npz", "g.tsv"]


def test_graphml_round_trip_and_layer_selection(tmp_path: Path) -> None:
    g = two_layer_graph()
    path = g.save(tmp_path / "g.kg.npz")
    out = tmp_path / "go.graphml"
    res = CliRunner().invoke(kgbuild_cli, ["export", str(path), "--format", "graphml", "--layer", "go",
                                           "-o", str(out)])
    assert res.exit_code == 0, res.output
    back = nx.read_graphml(out, force_multigraph=True)
    assert back.is_directed() and back.is_multigraph()
    assert sorted((u, v, d["layer"], d["weight"]) for u, v, d in back.edges(data=True)) == [
        ("B", "D", "go", 0.25), ("D", "B", "go", 0.125)]
    assert set(back.nodes) == set(g.nodes.tolist())  # isolated nodes kept
    meta = json.loads(back.graph["meta"])
    assert list(meta["layers"]) == ["go"] and meta["layers"]["go"]["source"] == "GO"


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    g = two_layer_graph()
    out = tmp_path / "g.graphml"

    def boom(graph, fh):
        fh.write(b"<partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(nx, "write_graphml", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        export_mod.export_graph(g, out, "graphml")
    assert list(tmp_path.iterdir()) == []


def test_bad_input_file_and_unknown_layer(tmp_path: Path) -> None:
    bad = tmp_path / "bad.kg.npz"
    bad.write_text("not a graph")
    out = tmp_path / "o.tsv"
    res = CliRunner().invoke(kgbuild_cli, ["export", str(bad), "-o", str(out)])
    assert res.exit_code == 1 and "not a multigraph file" in res.output and not out.exists()
    path = two_layer_graph().save(tmp_path / "g.kg.npz")
    res = CliRunner().invoke(kgbuild_cli, ["export", str(path), "--layer", "nope", "-o", str(out)])
    assert res.exit_code == 1 and "no layer 'nope'" in res.output and not out.exists()
