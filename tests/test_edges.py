"""kgbuild edges: user edge lists in csv/tsv/parquet/.gz, options, and errors naming file, line and column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from kgbuild.cli import main as kgbuild_cli
from kgbuild.errors import KgbuildInputError
from kgbuild.graph import MultiGraph
from kgbuild.sources import edges as edges_source


def edges_of(table) -> dict[tuple[str, str], float]:
    return dict(zip(zip(table.sources.tolist(), table.targets.tolist()), table.weights.tolist()))


ROWS = [("A", "B", 0.5), ("B", "C", 0.25), ("C", "A", 1.0)]


@pytest.mark.parametrize("name", ["e.csv", "e.tsv", "e.tsv.gz", "e.parquet", "e.txt"])
def test_formats_read_the_same(tmp_path: Path, name: str) -> None:
    df = pd.DataFrame(ROWS, columns=["gene_a", "gene_b", "score"])
    path = tmp_path / name
    if name.endswith(".parquet"):
        df.to_parquet(path)
    else:
        df.to_csv(path, sep="," if ".csv" in name else "\t", index=False)
    table, meta = edges_source.build(path, "gene_a", "gene_b", "score", max_in_degree=None)
    assert edges_of(table) == {(a, b): w for a, b, w in ROWS}
    assert meta["format"] == ("parquet" if name.endswith("parquet") else "text")
    assert meta["inputs"][0]["role"] == "edges"


def test_no_weight_column_symmetric_duplicates_and_filters(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("s,t\nA,B\nB,A\nA,C\nA,A\n")
    table, meta = edges_source.build(path, "s", "t", symmetric=True, max_in_degree=None)
    assert edges_of(table) == {("A", "B"): 1.0, ("B", "A"): 1.0, ("A", "C"): 1.0, ("C", "A"): 1.0}
    assert meta["filters"]["self_loops_removed"] == 1 and meta["weight"].startswith("1.0")

    dup = tmp_path / "dup.tsv"
    dup.write_text("s\tt\tw\nA\tB\t0.2\nA\tB\t0.9\nC\tB\t0.4\n")
    table, meta = edges_source.build(dup, "s", "t", "w", max_in_degree=None)
    assert edges_of(table) == {("A", "B"): 0.9, ("C", "B"): 0.4} and meta["filters"]["duplicates_removed"] == 1
    table, _ = edges_source.build(dup, "s", "t", "w", duplicates="mean", max_in_degree=None)
    assert edges_of(table)[("A", "B")] == pytest.approx(0.55)
    with pytest.raises(KgbuildInputError, match="edge A -> B appears more than once"):
        edges_source.build(dup, "s", "t", "w", duplicates="error")
    table, meta = edges_source.build(dup, "s", "t", "w", weight_scale=10, min_weight=3, max_in_degree=None)
    assert edges_of(table) == {("A", "B"): 9.0, ("C", "B"): 4.0}
    table, _ = edges_source.build(dup, "s", "t", "w", max_in_degree=1)
    assert edges_of(table) == {("A", "B"): 0.9}
    table, _ = edges_source.build(dup, "s", "t", "w", top_pct=50, max_in_degree=None)
    assert edges_of(table) == {("A", "B"): 0.9}


def test_missing_columns_are_listed(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("gene1,gene2,w\nA,B,1\n")
    with pytest.raises(KgbuildInputError) as err:
        edges_source.build(path, "source", "gene2", "weight")
    msg = str(err.value)
    assert str(path) in msg and "missing column(s) 'source', 'weight'" in msg and "['gene1', 'gene2', 'w']" in msg
    pq = tmp_path / "e.parquet"
    pd.DataFrame({"x": ["A"], "y": ["B"]}).to_parquet(pq)
    with pytest.raises(KgbuildInputError, match=r"missing column\(s\) 'source'.*\['x', 'y'\]"):
        edges_source.build(pq, "source", "y")


@pytest.mark.parametrize(
    "body, message",
    [
        ("A,B,0.5\nB,C,\nC,A,1\n", "line 3, column 'w': weight is missing, NaN or not a number (lines 3)"),
        ("A,B,0.5\nB,C,high\nC,A,nan\n", "weight is missing, NaN or not a number (lines 3, 4)"),
        ("A,B,0.5\nB,C,inf\n", "line 3, column 'w': weight is infinite"),
        ("A,B,0.5\nB,C,-0.1\n", "line 3, column 'w': weight is negative"),
        ("A,B,0.5\n,C,0.2\n", "line 3, column 's': empty gene name"),
        ("A,B,0.5\n\nB,C,0.2\n", "line 3, column 's': empty gene name"),
    ],
)
def test_bad_values_name_the_line(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "e.csv"
    path.write_text("s,t,w\n" + body)
    with pytest.raises(KgbuildInputError) as err:
        edges_source.build(path, "s", "t", "w")
    assert f"{path}, {message}" in str(err.value) or message in str(err.value)
    assert str(path) in str(err.value)


def test_parquet_errors_name_rows(tmp_path: Path) -> None:
    pq = tmp_path / "e.parquet"
    pd.DataFrame({"s": ["A", "B"], "t": ["B", "C"], "w": [0.5, np.nan]}).to_parquet(pq)
    with pytest.raises(KgbuildInputError, match=r"weight is missing, NaN or not a number \(rows 2\)"):
        edges_source.build(pq, "s", "t", "w")


def test_malformed_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("s,t,w\nA,B,1\nB,C,1,extra,fields\n")
    with pytest.raises(KgbuildInputError, match=r"line 3"):
        edges_source.build(path, "s", "t", "w")


def test_cli_on_the_real_dmfind_edges(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "dmfind.kg.npz"
    res = CliRunner().invoke(kgbuild_cli, [
        "edges", "--edges", str(shared_data / "string/string_v12_dmfind_edges.tsv.gz"), "--source-col", "symbol1",
        "--target-col", "symbol2", "--weight-col", "combined_score", "--weight-scale", "0.001", "--min-weight", "0.7",
        "--symmetric", "--layer-name", "string_dmfind", "-o", str(out)])
    assert res.exit_code == 0, res.output
    g = MultiGraph.load(out)
    assert g.layer_names == ["string_dmfind"]
    assert g.edge_weight.min() >= np.float32(0.7) and g.in_degree().max() <= 20
    # symmetric expansion before the cap: a pair above 0.7 is kept in at least one direction unless both
    # endpoints are capped; check a known row (CYP2E1 - CES1, combined_score 905)
    names = g.nodes.tolist()
    pairs = {(names[s], names[t]) for s, t in g.edge_index.T.tolist()}
    assert ("CYP2E1", "CES1") in pairs or ("CES1", "CYP2E1") in pairs
    meta = g.meta["layers"]["string_dmfind"]
    assert meta["filters"]["symmetrize"] is True and meta["weight_scale"] == 0.001 and meta["rows_read"] == 174962


def test_cli_empty_graph_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("s,t,w\nA,B,0.1\n")
    out = tmp_path / "o.kg.npz"
    res = CliRunner().invoke(kgbuild_cli, ["edges", "--edges", str(path), "--source-col", "s", "--target-col", "t",
                                           "--weight-col", "w", "--min-weight", "0.5", "-o", str(out)])
    assert res.exit_code == 1 and "no edges left after filtering" in res.output and not out.exists()
    res = CliRunner().invoke(kgbuild_cli, ["edges", "--edges", str(tmp_path / "nope.csv"), "-o", str(out)])
    assert res.exit_code == 1 and "no such file" in res.output
