"""kgbuild go: propagation (is_a + part_of, not regulates), NOT rows, aspects, evidence codes, roots left out,
Jaccard weights against brute-force Python sets (hand-made ontology, and a sample of the real GO data)."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kgbuild.cli import main as kgbuild_cli
from kgbuild.errors import KgbuildInputError
from kgbuild.graph import MultiGraph
from kgbuild.sources import go as go_source

OBO = """format-version: 1.2
data-version: releases/test-1

[Term]
id: GO:0008150
name: biological_process
namespace: biological_process

[Term]
id: GO:0003674
name: molecular_function
namespace: molecular_function

[Term]
id: GO:0005575
name: cellular_component
namespace: cellular_component

[Term]
id: GO:0000001
name: p1
namespace: biological_process
is_a: GO:0008150

[Term]
id: GO:0000002
name: p2, a kind of p1
namespace: biological_process
is_a: GO:0000001

[Term]
id: GO:0000003
name: p3, part of p1
namespace: biological_process
is_a: GO:0008150
relationship: part_of GO:0000001

[Term]
id: GO:0000004
name: p4, regulates p3 (not propagated)
namespace: biological_process
is_a: GO:0008150
relationship: regulates GO:0000003

[Term]
id: GO:0000005
name: p5
namespace: biological_process
alt_id: GO:0000050
is_a: GO:0008150

[Term]
id: GO:0000010
name: f10
namespace: molecular_function
is_a: GO:0003674

[Typedef]
id: part_of
name: part of

[Typedef]
id: regulates
name: regulates
"""


def gaf_line(symbol: str, go_id: str, evidence: str = "IDA", aspect: str = "P", qualifier: str = "involved_in") -> str:
    fields = ["UniProtKB", f"ID_{symbol}", symbol, qualifier, go_id, "PMID:1", evidence, "", aspect, "", "",
              "protein", "taxon:9606", "20220101", "TEST", "", ""]
    return "\t".join(fields)


GAF_ROWS = [
    gaf_line("G1", "GO:0000002"),
    gaf_line("G2", "GO:0000003"),
    gaf_line("G3", "GO:0000004"),
    gaf_line("G4", "GO:0000001", evidence="IEA"),
    gaf_line("G5", "GO:0000002", qualifier="NOT|involved_in"),
    gaf_line("G5", "GO:0000050"),                       # alt id of GO:0000005
    gaf_line("G6", "GO:0000010", aspect="F", qualifier="enables"),
    gaf_line("G6", "GO:0000002"),
    gaf_line("G7", "GO:9999999"),                       # not in the ontology
    gaf_line("G8", "GO:0008150", evidence="ND"),         # root only: empty set
]


@pytest.fixture()
def small_go(tmp_path: Path) -> tuple[Path, Path]:
    obo = tmp_path / "mini.obo"
    obo.write_text(OBO)
    gaf = tmp_path / "mini.gaf.gz"
    with gzip.open(gaf, "wt") as fh:
        fh.write("!gaf-version: 2.2\n!comment\n" + "\n".join(GAF_ROWS) + "\n")
    return obo, gaf


def edges_of(table) -> dict[tuple[str, str], float]:
    return dict(zip(zip(table.sources.tolist(), table.targets.tolist()), table.weights.tolist()))


def both(pairs: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    return {**pairs, **{(b, a): w for (a, b), w in pairs.items()}}


def test_small_ontology_sets_and_weights(small_go: tuple[Path, Path]) -> None:
    # sets: G1 {1,2}  G2 {1,3} (part_of)  G3 {4} (regulates does not propagate)  G4 {1}  G5 {5} (NOT row
    # dropped, alt id resolved)  G6 {1,2,10}  G8 {} (root removed)
    table, meta = go_source.build(*small_go, min_jaccard=0.1, max_in_degree=None)
    expected = both({("G1", "G2"): 1 / 3, ("G1", "G4"): 1 / 2, ("G2", "G4"): 1 / 2, ("G1", "G6"): 2 / 3,
                     ("G2", "G6"): 1 / 4, ("G4", "G6"): 1 / 3})
    got = edges_of(table)
    assert got.keys() == expected.keys()
    for k, w in expected.items():
        assert got[k] == pytest.approx(w, abs=0)
    ann = meta["annotations"]
    assert ann["not_rows_dropped"] == 1 and ann["unknown_go_id_rows_dropped"] == 1
    assert meta["unknown_go_ids"] == {"count": 1, "examples": ["GO:9999999"]}
    assert meta["version"] == "releases/test-1"
    assert meta["excluded_terms"] == ["GO:0008150", "GO:0003674", "GO:0005575"]
    assert meta["propagation"] == ["is_a", "part_of"]


def test_aspects_evidence_threshold_and_cap(small_go: tuple[Path, Path]) -> None:
    table, meta = go_source.build(*small_go, aspects=["P"], exclude_evidence=["IEA"], max_in_degree=None)
    # G4 (IEA) gone; G6 loses its F term: G6 {1,2} = G1
    expected = both({("G1", "G2"): 1 / 3, ("G1", "G6"): 1.0, ("G2", "G6"): 1 / 3})
    assert edges_of(table) == pytest.approx(expected)
    assert meta["annotations"]["other_aspect_rows_dropped"] == 1
    assert meta["annotations"]["excluded_evidence_rows_dropped"] == 1
    # strict threshold: J = 1/3 is not > 1/3
    table, _ = go_source.build(*small_go, min_jaccard=1 / 3, max_in_degree=None)
    assert set(edges_of(table)) == set(both({("G1", "G4"): 0, ("G2", "G4"): 0, ("G1", "G6"): 0}))
    # cap: G1's incoming G6 (2/3) and then G4 (1/2) -- G2 (1/3) dropped
    table, meta = go_source.build(*small_go, max_in_degree=2)
    assert sorted(s for s, t in edges_of(table) if t == "G1") == ["G4", "G6"]
    assert meta["filters"]["max_in_degree"] == 2 and meta["filters"]["pairs_above_threshold"] == 12


def test_cli_writes_the_layer_and_empty_result_is_an_error(small_go: tuple[Path, Path], tmp_path: Path) -> None:
    obo, gaf = small_go
    out = tmp_path / "go.kg.npz"
    res = CliRunner().invoke(kgbuild_cli, ["go", "--obo", str(obo), "--gaf", str(gaf), "--aspects", "P,F",
                                           "--layer-name", "gobp", "-o", str(out)])
    assert res.exit_code == 0, res.output
    g = MultiGraph.load(out)
    assert g.layer_names == ["gobp"] and g.num_edges == 12
    assert g.meta["layers"]["gobp"]["aspects"] == ["F", "P"]
    out2 = tmp_path / "none.kg.npz"
    res = CliRunner().invoke(kgbuild_cli, ["go", "--obo", str(obo), "--gaf", str(gaf), "--min-jaccard", "0.9",
                                           "-o", str(out2)])
    assert res.exit_code == 1 and "no edges left" in res.output and not out2.exists()


@pytest.mark.parametrize(
    "bad, message",
    [
        ("\t".join(gaf_line("G9", "GO:0000001").split("\t")[:10]), "expected 15-17 tab-separated GAF columns, got 10"),
        (gaf_line("G9", "0000001"), "GO_ID (column 5) '0000001' is not of the form GO:0000000"),
        (gaf_line("G9", "GO:0000001", aspect="X"), "Aspect (column 9) 'X'"),
        (gaf_line("", "GO:0000001"), "empty DB_Object_Symbol"),
        (gaf_line("G9", "GO:0000001") + "\textra\tfields", "expected 15-17 tab-separated GAF columns, got 19"),
    ],
)
def test_malformed_gaf_line_is_named(small_go: tuple[Path, Path], tmp_path: Path, bad: str, message: str) -> None:
    obo, _ = small_go
    gaf = tmp_path / "bad.gaf"
    gaf.write_text("!gaf-version: 2.2\n" + "\n".join([GAF_ROWS[0], GAF_ROWS[1], bad, GAF_ROWS[2]]) + "\n")
    with pytest.raises(KgbuildInputError) as err:
        go_source.build(obo, gaf)
    assert f"{gaf}, line 4: {message}" in str(err.value)


def test_bad_ontology_and_options(small_go: tuple[Path, Path], tmp_path: Path) -> None:
    obo, gaf = small_go
    not_obo = tmp_path / "x.obo"
    not_obo.write_text("hello\n")
    with pytest.raises(KgbuildInputError, match="not an OBO ontology file"):
        go_source.build(not_obo, gaf)
    with pytest.raises(KgbuildInputError, match="`aspects` must be among P, F, C"):
        go_source.build(obo, gaf, aspects=["Q"])


# ---------------------------------------------------------------------- the real GO files
def reference_sets(obo: Path, gaf: Path) -> dict[str, frozenset[str]]:
    """Propagated GO sets per gene, computed independently: plain-Python GAF reading, own ancestor walk
    over goatools terms (is_a parents + part_of targets), roots removed."""
    from goatools.obo_parser import GODag

    dag = GODag(str(obo), optional_attrs={"relationship"}, prt=None)
    memo: dict[str, frozenset[str]] = {}

    def up(term) -> frozenset[str]:
        if term.id not in memo:
            out = {term.id}
            for parent in list(term.parents) + list(term.relationship.get("part_of", ())):
                out |= up(parent)
            memo[term.id] = frozenset(out)
        return memo[term.id]

    roots = {"GO:0008150", "GO:0003674", "GO:0005575"}
    sets: dict[str, set[str]] = {}
    with gzip.open(gaf, "rt") as fh:
        for line in fh:
            if line.startswith("!"):
                continue
            f = line.rstrip("\n").split("\t")
            if "NOT" in f[3].split("|") or f[4] not in dag:
                continue
            sets.setdefault(f[2], set()).update(up(dag[f[4]]) - roots)
    return {g: frozenset(s) for g, s in sets.items() if s}


@pytest.fixture(scope="module")
def real_go(shared_data: Path, tmp_path_factory) -> tuple[MultiGraph, dict[str, frozenset[str]]]:
    out = tmp_path_factory.mktemp("go") / "go.kg.npz"
    res = CliRunner().invoke(kgbuild_cli, ["go", "--obo", str(shared_data / "go/go-basic.obo"), "--gaf",
                                           str(shared_data / "go/goa_human.gaf.gz"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    return MultiGraph.load(out), reference_sets(shared_data / "go/go-basic.obo", shared_data / "go/goa_human.gaf.gz")


@pytest.mark.slow
def test_real_go_matches_brute_force_on_sampled_genes(real_go) -> None:
    g, sets = real_go
    names = g.nodes.tolist()
    assert g.in_degree().max() <= 20
    genes = sorted(sets)
    rng = random.Random(7)
    for target in rng.sample(names, 25):
        a = sets[target]
        cands = []
        for other in genes:
            if other == target:
                continue
            b = sets[other]
            inter = len(a & b)
            j = inter / (len(a) + len(b) - inter)
            if j > 0.1:
                cands.append((-j, other))
        cands.sort()
        expected = [(src, np.float32(-nj)) for nj, src in cands[:20]]
        tid = g.node_lookup[target]
        mask = g.edge_index[1] == tid
        got = sorted(zip([names[i] for i in g.edge_index[0, mask]], g.edge_weight[mask].tolist()),
                     key=lambda x: (-x[1], x[0]))
        assert [(s, np.float32(w)) for s, w in got] == expected, target


@pytest.mark.slow
def test_real_go_weights_of_random_edges(real_go) -> None:
    g, sets = real_go
    names = g.nodes.tolist()
    idx = np.random.default_rng(3).choice(g.num_edges, 2000, replace=False)
    for i in idx.tolist():
        a, b = sets[names[g.edge_index[0, i]]], sets[names[g.edge_index[1, i]]]
        j = len(a & b) / len(a | b)
        assert g.edge_weight[i] == np.float32(j) and j > 0.1
    meta = g.meta["layers"]["go"]
    assert meta["source"] == "Gene Ontology" and meta["version"] == "releases/2022-07-01"
    assert meta["filters"]["genes_with_sets"] == len(sets)
