"""kgbuild string: the STRING parser on the shared real subset, checked against a plain-Python reading of
the same files, plus bad input (malformed lines, missing columns, unknown ids, empty results)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kgbuild.cli import main as kgbuild_cli
from kgbuild.errors import KgbuildInputError
from kgbuild.graph import MultiGraph
from kgbuild.sources import string as string_source

LINKS = "string/9606.protein.links.v12.0.subset.txt.gz"
INFO = "string/9606.protein.info.v12.0.subset.txt.gz"


def read_lines(path: Path) -> list[str]:
    with gzip.open(path, "rt") as fh:
        return fh.read().splitlines()


def python_reference(links: Path, info: Path) -> tuple[dict[str, str], dict[tuple[str, str], int]]:
    """Symbols and the max score per symbol pair, read with plain Python."""
    symbol = {}
    for line in read_lines(info)[1:]:
        fields = line.split("\t")
        symbol[fields[0]] = fields[1]
    scores: dict[tuple[str, str], int] = {}
    for line in read_lines(links)[1:]:
        a, b, s = line.split(" ")
        key = (symbol[a], symbol[b])
        scores[key] = max(scores.get(key, -1), int(s))
    return symbol, scores


def run(args: list[str]):
    return CliRunner().invoke(kgbuild_cli, args, catch_exceptions=False)


def write_gz(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------- the real subset
def test_min_score_700_against_plain_python(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "string.kg.npz"
    res = run(["string", "--links", str(shared_data / LINKS), "--info", str(shared_data / INFO),
               "--min-score", "700", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "31,176 links" in res.output and "string" in res.output
    g = MultiGraph.load(out)
    symbol, scores = python_reference(shared_data / LINKS, shared_data / INFO)
    names = g.nodes.tolist()
    edges = {(names[s], names[t]): w for (s, t), w in zip(g.edge_index.T.tolist(), g.edge_weight.tolist())}

    # every kept edge is a real pair with score >= 700, weight = score / 1000 (as float32)
    for (a, b), w in edges.items():
        assert scores[(a, b)] >= 700
        assert w == np.float32(scores[(a, b)] / 1000)
    # in-degree <= 20, and the cap keeps exactly the heaviest (ties by source name)
    assert g.in_degree().max() <= 20
    incoming: dict[str, list[tuple[int, str]]] = {}
    for (a, b), s in scores.items():
        if s >= 700 and a != b:
            incoming.setdefault(b, []).append((-s, a))
    expected = {(a, b) for b, lst in incoming.items() for _, a in sorted(lst)[:20]}
    assert set(edges) == expected
    # symbols come from protein.info: a few known rows of the links file
    assert edges[("M6PR", "PLIN3")] == np.float32(0.764)  # 9606.ENSP00000000412 9606.ENSP00000221957 764
    assert edges[("PLIN3", "M6PR")] == np.float32(0.764)
    assert ("FKBP4", "AHSA1") in edges  # 9606.ENSP00000001008 9606.ENSP00000216479 755
    assert not any(n.startswith("9606.") for n in names)

    meta = g.meta["layers"]["string"]
    assert meta["source"] == "STRING" and meta["version"] == "12.0"
    assert meta["filters"]["min_score"] == 700 and meta["filters"]["max_in_degree"] == 20
    assert meta["unknown_ids"]["ids"] == 0
    assert {i["role"] for i in meta["inputs"]} == {"links", "info"}
    assert all(len(i["sha256"]) == 64 for i in meta["inputs"])


def test_min_score_is_inclusive(shared_data: Path) -> None:
    table, meta = string_source.build(shared_data / LINKS, shared_data / INFO, min_score=764, max_in_degree=None)
    pairs = set(zip(table.sources.tolist(), table.targets.tolist()))
    assert ("M6PR", "PLIN3") in pairs  # score exactly 764
    assert table.weights.min() >= 0.764
    assert meta["rows_below_min_score"] == sum(
        int(line.split(" ")[2]) < 764 for line in read_lines(shared_data / LINKS)[1:]
    )


def test_channel_from_a_detailed_file(shared_data: Path, tmp_path: Path) -> None:
    # a protein.links.detailed-style file made from the subset: 'experimental' = score - 100
    lines = read_lines(shared_data / LINKS)
    detailed = ["protein1 protein2 neighborhood experimental combined_score"]
    for line in lines[1:]:
        a, b, s = line.split(" ")
        detailed.append(f"{a} {b} 0 {int(s) - 100} {s}")
    path = write_gz(tmp_path / "9606.protein.links.detailed.v12.0.txt.gz", detailed)
    table, meta = string_source.build(path, shared_data / INFO, min_score=700, channel="experimental",
                                      max_in_degree=None)
    combined, _ = string_source.build(shared_data / LINKS, shared_data / INFO, min_score=800, max_in_degree=None)
    assert meta["channel"] == "experimental"
    got = dict(zip(zip(table.sources.tolist(), table.targets.tolist()), table.weights.tolist()))
    ref = dict(zip(zip(combined.sources.tolist(), combined.targets.tolist()), combined.weights.tolist()))
    assert got.keys() == ref.keys()
    for k, w in got.items():
        assert w == pytest.approx(ref[k] - 0.1)


def test_unknown_channel_lists_the_columns(shared_data: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(kgbuild_cli, ["string", "--links", str(shared_data / LINKS), "--info",
                                           str(shared_data / INFO), "--channel", "experimental",
                                           "-o", str(tmp_path / "x.kg.npz")])
    assert res.exit_code == 1
    assert "no column 'experimental'" in res.output and "combined_score" in res.output
    assert "protein.links.detailed" in res.output
    assert not (tmp_path / "x.kg.npz").exists()


# ---------------------------------------------------------------------- unknown ids, duplicates
def small_files(tmp_path: Path, links: list[str], info: list[str]) -> tuple[Path, Path]:
    lp = write_gz(tmp_path / "links.txt.gz", ["protein1 protein2 combined_score", *links])
    ip = write_gz(tmp_path / "info.txt.gz", ["#string_protein_id\tpreferred_name\tprotein_size\tannotation", *info])
    return lp, ip


INFO_ROWS = ["9606.P1\tAAA\t0\ta", "9606.P2\tBBB\t0\tb", "9606.P3\tCCC\t0\tc"]


def test_unknown_ids_are_counted_and_reported(tmp_path: Path) -> None:
    lp, ip = small_files(tmp_path, ["9606.P1 9606.P2 900", "9606.P2 9606.P1 900", "9606.P1 9606.X9 950",
                                    "9606.X9 9606.P1 950", "9606.X8 9606.P3 990"], INFO_ROWS)
    out = tmp_path / "s.kg.npz"
    res = CliRunner().invoke(kgbuild_cli, ["string", "--links", str(lp), "--info", str(ip), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "2 unknown protein id(s) in 3 row(s) dropped" in res.output
    assert "9606.X8" in res.output and "9606.X9" in res.output  # named on stderr (mixed into output)
    meta = MultiGraph.load(out).meta["layers"]["string"]
    assert meta["unknown_ids"] == {"ids": 2, "rows": 3, "examples": ["9606.X8", "9606.X9"]}
    assert MultiGraph.load(out).num_edges == 2

    res = CliRunner().invoke(kgbuild_cli, ["string", "--links", str(lp), "--info", str(ip), "--unknown-ids",
                                           "error", "-o", str(tmp_path / "e.kg.npz")])
    assert res.exit_code == 1 and "2 protein id(s)" in res.output
    assert not (tmp_path / "e.kg.npz").exists()


def test_two_proteins_of_one_gene_are_merged_with_max_weight(tmp_path: Path) -> None:
    info = INFO_ROWS + ["9606.P4\tAAA\t0\tsecond protein of AAA"]
    lp, ip = small_files(tmp_path, ["9606.P1 9606.P2 750", "9606.P4 9606.P2 980", "9606.P1 9606.P4 999",
                                    "9606.P2 9606.P1 750", "9606.P2 9606.P4 980", "9606.P4 9606.P1 999"], info)
    table, meta = string_source.build(lp, ip, min_score=700)
    assert sorted(zip(table.sources.tolist(), table.targets.tolist(), table.weights.tolist())) == [
        ("AAA", "BBB", 0.98), ("BBB", "AAA", 0.98)]
    assert meta["filters"]["self_loops_removed"] == 2  # P1 <-> P4 is AAA -> AAA
    assert meta["filters"]["duplicates_removed"] == 2
    assert meta["symbols_with_several_proteins"] == 1


def test_one_orientation_is_symmetrized(tmp_path: Path) -> None:
    lp, ip = small_files(tmp_path, ["9606.P1 9606.P2 800"], INFO_ROWS)
    table, _ = string_source.build(lp, ip)
    assert sorted(zip(table.sources.tolist(), table.targets.tolist())) == [("AAA", "BBB"), ("BBB", "AAA")]


# ---------------------------------------------------------------------- malformed input
@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("9606.P1 9606.P2 800 17", "expected 3 space-separated fields, got 4"),
        ("9606.P1 9606.P2 high", "'high' is not an integer"),
        ("9606.P1 9606.P2 1200", "outside 0-1000"),
        ("9606.P1  9606.P2 800", "expected 3 space-separated fields, got 4"),
        ("9606.P1 9606.P2", "expected 3 space-separated fields, got 2"),
    ],
)
def test_malformed_links_line_is_named(tmp_path: Path, bad_line: str, message: str) -> None:
    lp, ip = small_files(tmp_path, ["9606.P1 9606.P2 800", "9606.P2 9606.P1 800", "9606.P1 9606.P3 700",
                                    bad_line, "9606.P3 9606.P1 700"], INFO_ROWS)
    with pytest.raises(KgbuildInputError) as err:
        string_source.build(lp, ip)
    assert str(lp) in str(err.value) and "line 5" in str(err.value) and message in str(err.value)
    out = tmp_path / "o.kg.npz"
    res = CliRunner().invoke(kgbuild_cli, ["string", "--links", str(lp), "--info", str(ip), "-o", str(out)])
    assert res.exit_code == 1 and "line 5" in res.output and not out.exists()


def test_wrong_headers_and_bad_info(tmp_path: Path) -> None:
    lp, ip = small_files(tmp_path, ["9606.P1 9606.P2 800"], INFO_ROWS)
    bad_links = write_gz(tmp_path / "bad.txt.gz", ["a,b,c", "1,2,3"])
    with pytest.raises(KgbuildInputError, match="not a STRING protein.links file"):
        string_source.build(bad_links, ip)
    dup = write_gz(tmp_path / "dup.txt.gz", ["#string_protein_id\tpreferred_name", "9606.P1\tAAA", "9606.P2\tBBB",
                                             "9606.P1\tCCC"])
    with pytest.raises(KgbuildInputError, match=r"line 4: protein id '9606.P1' is listed more than once"):
        string_source.build(lp, dup)
    empty_name = write_gz(tmp_path / "empty.txt.gz", ["#string_protein_id\tpreferred_name", "9606.P1\t"])
    with pytest.raises(KgbuildInputError, match="line 2: empty"):
        string_source.build(lp, empty_name)
    no_name = write_gz(tmp_path / "noname.txt.gz", ["#string_protein_id\tsize", "9606.P1\t3"])
    with pytest.raises(KgbuildInputError, match="preferred_name"):
        string_source.build(lp, no_name)


def test_empty_graph_after_filtering_is_an_error(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.kg.npz"
    res = CliRunner().invoke(kgbuild_cli, ["string", "--links", str(shared_data / LINKS), "--info",
                                           str(shared_data / INFO), "--min-score", "1000", "-o", str(out)])
    assert res.exit_code == 1
    assert "no edges left after filtering" in res.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_without_paths_the_builder_fetches(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    import kgbuild.fetch

    calls = []

    def fake_fetch(source, files=None, cache_dir=None, offline=False, **kw):
        calls.append((source, list(files), offline))
        return {"links": shared_data / LINKS, "info": shared_data / INFO}

    monkeypatch.setattr(kgbuild.fetch, "fetch", fake_fetch)
    out = tmp_path / "s.kg.npz"
    res = CliRunner().invoke(kgbuild_cli, ["string", "--offline", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert calls == [("string", ["links", "info"], True)]
    assert MultiGraph.load(out).meta["layers"]["string"]["downloaded"].keys() == {"links", "info"}
