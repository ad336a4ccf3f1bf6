"""kgbuild reactome: the real GMT against brute-force Python sets, the NCBI2Reactome layout (species filter,
gene map or Entrez ids), and bad input."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kgbuild.cli import main as kgbuild_cli
from kgbuild.errors import KgbuildInputError
from kgbuild.graph import MultiGraph
from kgbuild.sources import reactome as reactome_source

GMT = "reactome/ReactomePathways.gmt"


def edges_of(table) -> dict[tuple[str, str], float]:
    return dict(zip(zip(table.sources.tolist(), table.targets.tolist()), table.weights.tolist()))


def test_real_gmt_matches_brute_force(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "reactome.kg.npz"
    res = CliRunner().invoke(kgbuild_cli, ["reactome", "--gmt", str(shared_data / GMT), "-o", str(out)])
    assert res.exit_code == 0, res.output
    g = MultiGraph.load(out)
    sets: dict[str, set[str]] = {}
    for line in (shared_data / GMT).read_text().splitlines():
        f = line.split("\t")
        for gene in f[2:]:
            if gene:
                sets.setdefault(gene, set()).add(f[1])
    names = g.nodes.tolist()
    assert set(names) <= set(sets)
    assert g.in_degree().max() <= 20
    genes = sorted(sets)
    for target in random.Random(11).sample(genes, 40):
        a = sets[target]
        cands = sorted(
            (-(len(a & sets[o]) / len(a | sets[o])), o) for o in genes
            if o != target and len(a & sets[o]) / len(a | sets[o]) > 0.1
        )
        expected = [(o, np.float32(-nj)) for nj, o in cands[:20]]
        if not expected:
            assert target not in g.node_lookup or g.in_degree()[g.node_lookup[target]] == 0
            continue
        mask = g.edge_index[1] == g.node_lookup[target]
        got = sorted(zip([names[i] for i in g.edge_index[0, mask]], g.edge_weight[mask].tolist()),
                     key=lambda x: (-x[1], x[0]))
        assert [(s, np.float32(w)) for s, w in got] == expected, target
    meta = g.meta["layers"]["reactome"]
    assert meta["layout"] == "gmt" and meta["filters"]["sets"] == 2504
    assert meta["filters"]["min_jaccard"] == 0.1 and meta["filters"]["min_jaccard_strict"] is True


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


N2R = [
    "101\tR-HSA-1\thttps://reactome.org/PathwayBrowser/#/R-HSA-1\tP one\tTAS\tHomo sapiens",
    "102\tR-HSA-1\thttps://reactome.org/PathwayBrowser/#/R-HSA-1\tP one\tTAS\tHomo sapiens",
    "103\tR-HSA-1\thttps://reactome.org/PathwayBrowser/#/R-HSA-1\tP one\tIEA\tHomo sapiens",
    "101\tR-HSA-2\thttps://reactome.org/PathwayBrowser/#/R-HSA-2\tP two\tTAS\tHomo sapiens",
    "101\tR-HSA-2\thttps://reactome.org/PathwayBrowser/#/R-HSA-2\tP two\tIEA\tHomo sapiens",  # duplicate pair
    "102\tR-HSA-2\thttps://reactome.org/PathwayBrowser/#/R-HSA-2\tP two\tTAS\tHomo sapiens",
    "104\tR-MMU-1\thttps://reactome.org/PathwayBrowser/#/R-MMU-1\tP one\tIEA\tMus musculus",
    "103\tR-MMU-1\thttps://reactome.org/PathwayBrowser/#/R-MMU-1\tP one\tIEA\tMus musculus",
]


def test_ncbi2reactome_with_and_without_gene_map(tmp_path: Path) -> None:
    table_path = write(tmp_path / "NCBI2Reactome.txt", N2R)
    # 101 {1,2}  102 {1,2}  103 {1}  (mouse rows ignored)
    table, meta = reactome_source.build(ncbi2reactome=table_path, max_in_degree=None)
    assert edges_of(table) == pytest.approx({("101", "102"): 1.0, ("102", "101"): 1.0, ("101", "103"): 0.5,
                                             ("103", "101"): 0.5, ("102", "103"): 0.5, ("103", "102"): 0.5})
    assert meta["node_ids"] == "entrez" and meta["memberships"]["rows_for_species"] == 6
    gene_map = write(tmp_path / "gene_info.tsv", ["#tax_id\tGeneID\tSymbol\tdescription",
                                                  "9606\t101\tAAA\tx", "9606\t102\tBBB\ty"])
    table, meta = reactome_source.build(ncbi2reactome=table_path, gene_map=gene_map, max_in_degree=None)
    assert edges_of(table) == {("AAA", "BBB"): 1.0, ("BBB", "AAA"): 1.0}
    assert meta["memberships"]["unmapped_ids"] == 1 and meta["unmapped_examples"] == ["103"]
    out = tmp_path / "r.kg.npz"
    res = CliRunner().invoke(kgbuild_cli, ["reactome", "--ncbi2reactome", str(table_path), "--gene-map",
                                           str(gene_map), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert MultiGraph.load(out).nodes.tolist() == ["AAA", "BBB"]


def test_gmt_duplicates_policy_and_bad_lines(tmp_path: Path) -> None:
    ok = write(tmp_path / "ok.gmt", ["A\tR-1\tG1\tG2\tG2", "B\tR-2\tG1\tG2\tG3", "C\tR-3"])
    table, meta = reactome_source.build(gmt=ok, max_in_degree=None)
    # G2 listed twice in R-1 counts once; R-3 has no genes (skipped)
    assert edges_of(table)[("G1", "G2")] == 1.0 and edges_of(table)[("G1", "G3")] == 0.5
    assert meta["memberships"] == {"pathways": 2, "empty_pathways_skipped": 1, "repeated_genes_in_a_pathway": 1}
    dup = write(tmp_path / "dup.gmt", ["A\tR-1\tG1\tG2", "B\tR-2\tG1", "A again\tR-1\tG3"])
    with pytest.raises(KgbuildInputError, match=r"line 3: pathway id 'R-1' is also on line 1"):
        reactome_source.build(gmt=dup)
    bad = write(tmp_path / "bad.gmt", ["A\tR-1\tG1\tG2", "just-a-name"])
    with pytest.raises(KgbuildInputError, match=rf"{bad}, line 2: expected 'name<TAB>pathway id"):
        reactome_source.build(gmt=bad)
    bad_n2r = write(tmp_path / "bad_n2r.txt", N2R[:3] + ["105\tR-HSA-9\tonly four"])
    with pytest.raises(KgbuildInputError, match=r"line 4: expected 6 tab-separated fields"):
        reactome_source.build(ncbi2reactome=bad_n2r)
    no_cols = write(tmp_path / "map.tsv", ["id\tname", "101\tAAA"])
    with pytest.raises(KgbuildInputError, match=r"missing column\(s\) \['GeneID', 'Symbol'\]; the columns are \['id', 'name'\]"):
        reactome_source.build(ncbi2reactome=write(tmp_path / "n.txt", N2R), gene_map=no_cols)


def test_empty_graph_is_an_error(tmp_path: Path) -> None:
    gmt = write(tmp_path / "tiny.gmt", ["A\tR-1\tG1", "B\tR-2\tG2"])  # no shared pathway: every J = 0
    out = tmp_path / "r.kg.npz"
    res = CliRunner().invoke(kgbuild_cli, ["reactome", "--gmt", str(gmt), "-o", str(out)])
    assert res.exit_code == 1 and "no edges left after filtering" in res.output and not out.exists()
    res = CliRunner().invoke(kgbuild_cli, ["reactome", "--gmt", str(gmt), "--ncbi2reactome", str(gmt), "-o", str(out)])
    assert res.exit_code != 0 and "not both" in res.output
