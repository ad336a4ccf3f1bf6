"""kgbuild.perturb and ``kgbuild perturb``: rewiring keeps counts and degrees, downsampling drops the
asked fraction, both are deterministic per seed and recorded in the provenance."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from kgbuild.cli import main as kgbuild_main
from kgbuild.errors import KgbuildInputError
from kgbuild.graph import MultiGraph
from kgbuild.perturb import perturb_graph, rewire_edges


def random_graph(n_nodes: int = 200, n_edges: tuple[int, int] = (1500, 600), seed: int = 0) -> MultiGraph:
    """Two layers of random distinct directed edges without self-loops."""
    rng = np.random.default_rng(seed)
    names = [f"G{i:04d}" for i in range(n_nodes)]
    layers = []
    for lid, m in enumerate(n_edges):
        codes = rng.choice(n_nodes * n_nodes, size=3 * m, replace=False)
        s, t = np.divmod(codes, n_nodes)
        keep = s != t
        s, t = s[keep][:m], t[keep][:m]
        layers.append(MultiGraph.from_edges(f"layer{lid}", [names[i] for i in s], [names[i] for i in t],
                                            rng.uniform(0.1, 1.0, m), {"source": "test"}, nodes=names))
    return MultiGraph.merge(layers)


def edge_set(g: MultiGraph, layer: str) -> set[tuple[str, str]]:
    sub = g.layer(layer)
    return {(g.nodes[a], g.nodes[b]) for a, b in sub.edge_index.T.tolist()}


def degrees(g: MultiGraph, layer: str) -> tuple[np.ndarray, np.ndarray]:
    sub = g.layer(layer)
    return (np.bincount(sub.edge_index[0], minlength=g.num_nodes), np.bincount(sub.edge_index[1], minlength=g.num_nodes))


def test_rewire_keeps_edge_counts_degrees_and_weights():
    g = random_graph()
    out = perturb_graph(g, rewire=0.5, seed=3)
    for layer in g.layer_names:
        assert out.layer(layer).num_edges == g.layer(layer).num_edges
        for before, after in zip(degrees(g, layer), degrees(out, layer)):
            np.testing.assert_array_equal(before, after)
        np.testing.assert_allclose(np.sort(out.layer(layer).edge_weight), np.sort(g.layer(layer).edge_weight))
        changed = len(edge_set(out, layer) - edge_set(g, layer)) / g.layer(layer).num_edges
        assert 0.45 <= changed <= 0.6, (layer, changed)
        ab = out.meta["layers"][layer]["ablation"]
        assert ab["rewired_edges"] == len(edge_set(out, layer) - edge_set(g, layer))
        assert abs(ab["rewired_fraction"] - changed) < 1e-9
    src, dst = out.edge_index
    assert not np.any(src == dst), "rewiring must not create self-loops"


def test_full_rewire_changes_almost_every_edge():
    g = random_graph()
    out = perturb_graph(g, rewire=1.0, seed=1)
    for layer in g.layer_names:
        overlap = len(edge_set(out, layer) & edge_set(g, layer)) / g.layer(layer).num_edges
        assert overlap < 0.1, (layer, overlap)


def test_weights_travel_with_sources():
    g = random_graph(n_edges=(400, 10))
    out = perturb_graph(g, rewire=1.0, seed=2, layers=["layer0"])
    def per_source(graph: MultiGraph) -> dict[int, list[float]]:
        sub = graph.layer("layer0")
        d: dict[int, list[float]] = {}
        for s, w in zip(sub.edge_index[0].tolist(), sub.edge_weight.tolist()):
            d.setdefault(s, []).append(w)
        return {k: sorted(v) for k, v in d.items()}
    assert per_source(out) == per_source(g)


def test_downsample_drops_the_fraction_per_layer():
    g = random_graph()
    out = perturb_graph(g, downsample=0.3, seed=0)
    for layer in g.layer_names:
        n = g.layer(layer).num_edges
        assert out.layer(layer).num_edges == round(0.7 * n)
        assert edge_set(out, layer) <= edge_set(g, layer)
    assert out.num_nodes == g.num_nodes and list(out.nodes) == list(g.nodes)


def test_downsample_then_rewire_and_layer_selection():
    g = random_graph()
    out = perturb_graph(g, rewire=0.5, downsample=0.5, seed=0, layers=["layer1"])
    assert edge_set(out, "layer0") == edge_set(g, "layer0")
    assert "ablation" not in out.meta["layers"]["layer0"]
    assert out.layer("layer1").num_edges == 300
    assert len(edge_set(out, "layer1") - edge_set(g, "layer1")) >= 150


def test_deterministic_per_seed_and_different_across_seeds():
    g = random_graph()
    a = perturb_graph(g, rewire=0.5, downsample=0.2, seed=7)
    b = perturb_graph(g, rewire=0.5, downsample=0.2, seed=7)
    c = perturb_graph(g, rewire=0.5, downsample=0.2, seed=8)
    assert a.equals(b)
    assert not a.equals(c)


def test_zero_fractions_return_the_same_arrays():
    g = random_graph()
    assert perturb_graph(g, seed=5).equals(g)


def test_dense_layer_reports_what_was_achievable():
    # a complete directed graph on 4 nodes has no valid swap: nothing can move, and the record says so
    names = list("ABCD")
    s, t = zip(*[(a, b) for a in names for b in names if a != b])
    g = MultiGraph.from_edges("full", s, t, np.ones(len(s)), {"source": "test"})
    out = perturb_graph(g, rewire=1.0, seed=0)
    assert out.equals(g)
    assert out.meta["layers"]["full"]["ablation"]["rewired_edges"] == 0


def test_rewire_edges_is_a_target_permutation():
    rng = np.random.default_rng(0)
    src = rng.integers(0, 50, 300)
    dst = (src + rng.integers(1, 50, 300)) % 50
    codes, first = np.unique(src * 50 + dst, return_index=True)
    src, dst = src[first], dst[first]
    new, n = rewire_edges(src, dst, 50, 0.8, np.random.default_rng(1))
    assert sorted(new.tolist()) == sorted(dst.tolist())
    assert len(set(zip(src.tolist(), new.tolist()))) == len(src)
    assert n >= 0.7 * len(src)


def test_bad_inputs_raise_clear_errors():
    g = random_graph()
    with pytest.raises(KgbuildInputError, match="rewire"):
        perturb_graph(g, rewire=1.5)
    with pytest.raises(KgbuildInputError, match="no layer 'nope'"):
        perturb_graph(g, rewire=0.5, layers=["nope"])


def test_cli_perturb_writes_graph_with_provenance(tmp_path):
    g = random_graph()
    src = g.save(tmp_path / "in.kg.npz")
    out = tmp_path / "out.kg.npz"
    runner = CliRunner()
    res = runner.invoke(kgbuild_main, ["perturb", "--rewire", "0.5", "--downsample", "0.1", "--seed", "4",
                                       str(src), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "rewired" in res.output
    h = MultiGraph.load(out)
    assert h.num_edges == round(0.9 * 1500) + round(0.9 * 600)
    ab = h.meta["ablation"]
    assert ab["rewire"] == 0.5 and ab["downsample"] == 0.1 and ab["seed"] == 4
    assert ab["input"]["sha256"] and ab["input"]["path"] == str(src)
    assert json.loads(json.dumps(h.meta))  # provenance stays JSON
    again = tmp_path / "again.kg.npz"
    runner.invoke(kgbuild_main, ["perturb", "--rewire", "0.5", "--downsample", "0.1", "--seed", "4",
                                 str(src), "-o", str(again)])
    assert MultiGraph.load(again).equals(h)
    info = runner.invoke(kgbuild_main, ["info", str(out)])
    assert "ablation" in info.output


def test_cli_perturb_bad_layer_is_a_clean_error(tmp_path):
    src = random_graph().save(tmp_path / "in.kg.npz")
    out = tmp_path / "out.kg.npz"
    res = CliRunner().invoke(kgbuild_main, ["perturb", "--rewire", "0.5", "--layer", "nope", str(src), "-o", str(out)])
    assert res.exit_code == 1
    assert "no layer 'nope'" in res.output
    assert not out.exists()
    res = CliRunner().invoke(kgbuild_main, ["perturb", "--rewire", "2", str(src), "-o", str(out)])
    assert res.exit_code == 2 and not out.exists()
