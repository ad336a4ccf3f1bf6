"""The simulated example files go through kgbuild's real parsers, and the graphs they give carry the
ground truth (and lose it when rewired with ``kgbuild perturb``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from kgbuild.graph import MultiGraph
from kgbuild.perturb import perturb_graph
from txpert_head.simulate import PerturbSeqConfig, write_example_bundle
from txpert_head.simulate import example_sources as src
from txpert_head.simulate.bundle import TRUTH_NETWORK


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    write_example_bundle(out, seed=5, n_genes=200,
                         config=PerturbSeqConfig(n_singles=10, n_doubles=2, cells_per_perturbation=5))
    return out


def true_pairs(bundle: Path) -> set[frozenset[str]]:
    net = pd.read_csv(bundle / TRUTH_NETWORK, sep="\t")
    return {frozenset(p) for p in zip(net["source"], net["target"])}


def precision(graph: MultiGraph, truth: set[frozenset[str]]) -> float:
    names = graph.nodes
    hits = [frozenset((names[a], names[b])) in truth for a, b in graph.edge_index.T.tolist()]
    return sum(hits) / len(hits)


@pytest.fixture(scope="module")
def string_graph(bundle) -> MultiGraph:
    from kgbuild.sources import string

    table, meta = string.build(bundle / src.STRING_LINKS, bundle / src.STRING_INFO, min_score=400, max_in_degree=None)
    return table.to_graph("string", meta)


def test_string_parser_reads_the_simulated_files(bundle, string_graph):
    info = pd.read_csv(bundle / src.STRING_INFO, sep="\t", compression="gzip")
    layer = string_graph.meta["layers"]["string"]
    assert layer["unknown_ids"]["ids"] == 0
    assert set(string_graph.nodes) <= set(info["preferred_name"])
    assert string_graph.num_edges > 500
    assert layer["rows_read"] == sum(1 for _ in pd.read_csv(bundle / src.STRING_LINKS, sep=" ").itertuples())


def test_string_graph_recovers_the_truth_and_rewiring_destroys_it(bundle, string_graph):
    truth = true_pairs(bundle)
    original = precision(string_graph, truth)
    rewired = precision(perturb_graph(string_graph, rewire=1.0, seed=0), truth)
    assert original > 0.8
    assert rewired < 0.3


def test_kgbuild_screen_cli_reads_the_simulated_embeddings(bundle, tmp_path):
    from click.testing import CliRunner

    from kgbuild.cli import main as kgbuild_main

    out = tmp_path / "screen.kg.npz"
    res = CliRunner().invoke(kgbuild_main, ["screen", "--embeddings", str(bundle / src.SCREEN_PARQUET),
                                            "--top-pct", "1", "-o", str(out)])
    assert res.exit_code == 0, res.output
    g = MultiGraph.load(out)
    assert len(g.nodes) == len(pd.read_parquet(bundle / src.SCREEN_PARQUET))
    modules = pd.read_csv(bundle / "truth/modules.tsv", sep="\t").set_index("gene")["module"]
    same = [modules[g.nodes[a]] == modules[g.nodes[b]] for a, b in g.edge_index.T.tolist()]
    assert 0.5 < sum(same) / len(same) < 1.0, "a real but imperfect view of the modules"
    assert precision(g, true_pairs(bundle)) > 0.3


def test_every_example_source_builds_through_the_kgbuild_cli_and_merges(bundle, tmp_path):
    """string / go / reactome / screen commands on the simulated files, then merge and perturb: each
    layer links genes of one true module far more often than chance (1 / number of modules)."""
    from click.testing import CliRunner

    from kgbuild.cli import main as kgbuild_main

    commands = {
        "string": ["string", "--offline", "--links", str(bundle / src.STRING_LINKS), "--info",
                   str(bundle / src.STRING_INFO), "--min-score", "400"],
        "go": ["go", "--offline", "--obo", str(bundle / src.GO_OBO), "--gaf", str(bundle / src.GO_GAF)],
        "reactome": ["reactome", "--offline", "--gmt", str(bundle / src.REACTOME_GMT)],
        "screen": ["screen", "--embeddings", str(bundle / src.SCREEN_PARQUET), "--top-pct", "1",
                   "--layer-name", "screen"],
    }
    runner = CliRunner()
    paths = []
    for name, args in commands.items():
        out = tmp_path / f"{name}.kg.npz"
        res = runner.invoke(kgbuild_main, [*args, "-o", str(out)])
        assert res.exit_code == 0, (name, res.output)
        paths.append(str(out))
    merged = tmp_path / "multi.kg.npz"
    res = runner.invoke(kgbuild_main, ["merge", *paths, "-o", str(merged)])
    assert res.exit_code == 0, res.output
    g = MultiGraph.load(merged)
    assert sorted(g.layer_names) == ["go", "reactome", "screen", "string"]
    modules = pd.read_csv(bundle / "truth/modules.tsv", sep="\t").set_index("gene")["module"]
    assert set(g.nodes) <= set(modules.index)
    chance = 1.0 / modules.nunique()
    for layer in g.layer_names:
        sub = g.layer(layer)
        same = [modules[g.nodes[a]] == modules[g.nodes[b]] for a, b in sub.edge_index.T.tolist()]
        assert sub.num_edges > 50, layer
        assert sum(same) / len(same) > 4 * chance, layer
    ablated = tmp_path / "multi.rewired.kg.npz"
    res = runner.invoke(kgbuild_main, ["perturb", "--rewire", "1.0", "--seed", "3", str(merged), "-o", str(ablated)])
    assert res.exit_code == 0, res.output
    h = MultiGraph.load(ablated)
    for layer in g.layer_names:
        assert h.layer(layer).num_edges == g.layer(layer).num_edges
        assert precision(h.layer(layer), true_pairs(bundle)) < precision(g.layer(layer), true_pairs(bundle))
