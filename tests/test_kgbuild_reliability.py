"""kgbuild reliability (issue 14): no input destroyed, no graph written that cannot be read back, no stale
temporary file, and a clean ``Error:`` naming file and line for every bad input tried.

Each test reproduces one failure of the issue; the fetch/cache items (path traversal through a manifest,
damaged cache files) are in ``test_fetch.py`` beside the test HTTP server.
"""

from __future__ import annotations

import errno
import gzip
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kgbuild import atomic
from kgbuild.cli import main as kgbuild_cli
from kgbuild.errors import KgbuildInputError
from kgbuild.graph import GraphError, MultiGraph
from kgbuild.sources import edges as edges_source
from kgbuild.sources import go as go_source
from kgbuild.sources import reactome as reactome_source
from kgbuild.sources import screen as screen_source
from kgbuild.sources import string as string_source

REPO = Path(__file__).resolve().parents[1]


def run(args: list[str]):
    """``kgbuild ARGS`` in-process; exceptions other than clean errors propagate (tracebacks fail the test)."""
    return CliRunner().invoke(kgbuild_cli, [str(a) for a in args], catch_exceptions=False)


def small_graph(layer: str = "edges") -> MultiGraph:
    return MultiGraph.from_edges(layer, ["A", "B", "C"], ["B", "C", "A"], [0.5, 1.0, 0.25], {"source": "test"})


def write_edges(path: Path) -> Path:
    path.write_text("a\tb\tw\nA\tB\t1\nB\tC\t2\n")
    return path


# ====================================================================== 1. an input is destroyed
def test_edges_refuses_to_overwrite_its_input(tmp_path: Path) -> None:
    src = write_edges(tmp_path / "in.tsv")
    before = src.read_bytes()
    res = run(["edges", "--edges", src, "--source-col", "a", "--target-col", "b", "--weight-col", "w", "-o", src])
    assert res.exit_code == 1
    assert res.output.startswith("Error: ") and str(src) in res.output and "same file" in res.output
    assert src.read_bytes() == before


@pytest.mark.parametrize("how", ["same", "relative", "symlink", "hardlink"])
def test_merge_refuses_output_that_is_one_of_its_inputs(tmp_path: Path, monkeypatch, how: str) -> None:
    a, b = tmp_path / "a.kg.npz", tmp_path / "b.kg.npz"
    small_graph("x").save(a)
    small_graph("y").save(b)
    before = a.read_bytes()
    out: Path | str = a
    if how == "relative":
        (tmp_path / "sub").mkdir()
        monkeypatch.chdir(tmp_path / "sub")
        out = "../a.kg.npz"
    elif how == "symlink":
        out = tmp_path / "link.kg.npz"
        out.symlink_to(a)
    elif how == "hardlink":
        out = tmp_path / "hard.kg.npz"
        os.link(a, out)
    res = run(["merge", a, b, "-o", out])
    assert res.exit_code == 1, res.output
    assert res.output.startswith("Error: ") and str(out) in res.output and str(a) in res.output
    assert a.read_bytes() == before


def _command_inputs(tmp_path: Path) -> dict[str, tuple[list, Path]]:
    """Per command: its arguments with the input that ``-o`` will point at, and that input."""
    graph = tmp_path / "g.kg.npz"
    small_graph().save(graph)
    csv = tmp_path / "emb.csv"
    csv.write_text("gene,f1,f2\nA,1,0\nB,0,1\nC,1,1\n")
    gmt = tmp_path / "p.gmt"
    gmt.write_text("P1\tR-1\tA\tB\nP2\tR-2\tB\tC\n")
    n2r = tmp_path / "n2r.txt"
    n2r.write_text("1\tR-1\tu\tP1\tTAS\tHomo sapiens\n2\tR-1\tu\tP1\tTAS\tHomo sapiens\n")
    gmap = tmp_path / "gene_info.tsv"
    gmap.write_text("#tax_id\tGeneID\tSymbol\n9606\t1\tA\n9606\t2\tB\n")
    links = tmp_path / "links.txt"
    links.write_text("protein1 protein2 combined_score\n9606.P1 9606.P2 900\n")
    info = tmp_path / "info.txt"
    info.write_text("#string_protein_id\tpreferred_name\n9606.P1\tA\n9606.P2\tB\n")
    obo = tmp_path / "go.obo"
    obo.write_text("format-version: 1.2\n\n[Term]\nid: GO:0008150\nname: bp\nnamespace: biological_process\n")
    gaf = tmp_path / "a.gaf"
    gaf.write_text("!gaf-version: 2.2\n")
    edges = write_edges(tmp_path / "e.tsv")
    return {
        "perturb": (["perturb", graph, "--rewire", "0.5"], graph),
        "export": (["export", graph], graph),
        "screen": (["screen", "--embeddings", csv], csv),
        "edges": (["edges", "--edges", edges, "--source-col", "a", "--target-col", "b"], edges),
        "reactome-gmt": (["reactome", "--gmt", gmt], gmt),
        "reactome-n2r": (["reactome", "--ncbi2reactome", n2r], n2r),
        "reactome-map": (["reactome", "--ncbi2reactome", n2r, "--gene-map", gmap], gmap),
        "string-links": (["string", "--links", links, "--info", info], links),
        "string-info": (["string", "--links", links, "--info", info], info),
        "go-obo": (["go", "--obo", obo, "--gaf", gaf], obo),
        "go-gaf": (["go", "--obo", obo, "--gaf", gaf], gaf),
    }


@pytest.mark.parametrize("command", ["perturb", "export", "screen", "edges", "reactome-gmt", "reactome-n2r",
                                     "reactome-map", "string-links", "string-info", "go-obo", "go-gaf"])
def test_every_command_refuses_output_equal_to_an_input(tmp_path: Path, command: str) -> None:
    args, victim = _command_inputs(tmp_path)[command]
    before = victim.read_bytes()
    link = tmp_path / "alias"
    link.symlink_to(victim)
    res = run([*args, "-o", link])
    assert res.exit_code == 1, res.output
    assert res.output.startswith("Error: ") and "same file" in res.output and str(victim) in res.output
    assert victim.read_bytes() == before


def test_builder_refuses_output_that_is_a_cached_download(tmp_path: Path, monkeypatch) -> None:
    """Inputs taken from the download cache are protected too (here: -o pointing at the cached GMT)."""
    cached = tmp_path / "cache" / "reactome" / "current" / "ReactomePathways.gmt"
    cached.parent.mkdir(parents=True)
    cached.write_text("P1\tR-1\tA\tB\n")
    import kgbuild.fetch

    monkeypatch.setattr(kgbuild.fetch, "fetch", lambda source, keys, cache_dir, offline: {"gmt": cached})
    res = run(["reactome", "--offline", "-o", cached])
    assert res.exit_code == 1 and "same file" in res.output and str(cached) in res.output
    assert cached.read_text() == "P1\tR-1\tA\tB\n"


# ====================================================================== 4. weights that overflow float32
def test_edge_weight_overflowing_float32_is_refused_with_its_line(tmp_path: Path) -> None:
    src = tmp_path / "big.tsv"
    src.write_text("a\tb\tw\nA\tB\t1\nB\tC\t1e40\n")
    out = tmp_path / "big.kg.npz"
    res = run(["edges", "--edges", src, "--source-col", "a", "--target-col", "b", "--weight-col", "w", "-o", out])
    assert res.exit_code == 1, res.output
    assert f"{src}, line 3" in res.output and "1e+40" in res.output and "float32" in res.output
    assert not out.exists()


def test_weight_scale_overflowing_float32_is_refused(tmp_path: Path) -> None:
    src = write_edges(tmp_path / "in.tsv")
    out = tmp_path / "o.kg.npz"
    res = run(["edges", "--edges", src, "--source-col", "a", "--target-col", "b", "--weight-col", "w",
               "--weight-scale", "1e300", "-o", out])
    assert res.exit_code == 1, res.output
    assert "--weight-scale" in res.output and "float32" in res.output and f"{src}, line 2" in res.output
    assert not out.exists()


def test_multigraph_refuses_weights_that_overflow_float32() -> None:
    with pytest.raises(GraphError, match=r"A -> B.*1e\+40.*float32"):
        MultiGraph.from_edges("l", ["A", "B"], ["B", "C"], np.array([1e40, 1.0]))
    with pytest.raises(GraphError, match=r"B -> C.*inf"):
        MultiGraph.from_edges("l", ["A", "B"], ["B", "C"], np.array([1.0, np.inf]))
    g = MultiGraph.from_edges("l", ["A"], ["B"], np.array([3.0e38]))  # fits: written and read back
    assert np.isfinite(g.edge_weight).all()


# ====================================================================== ENOSPC / unwritable output
def _enospc(fh, **arrays):
    fh.write(b"PK\x03\x04 partial bytes")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_during_graph_write_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(np, "savez_compressed", _enospc)
    out = tmp_path / "g.kg.npz"
    with pytest.raises(OSError) as err:
        small_graph().save(out)
    assert err.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_full_disk_during_cli_write_is_a_clean_error(tmp_path: Path, monkeypatch) -> None:
    src = write_edges(tmp_path / "in.tsv")
    monkeypatch.setattr(np, "savez_compressed", _enospc)
    out = tmp_path / "g.kg.npz"
    res = run(["edges", "--edges", src, "--source-col", "a", "--target-col", "b", "-o", out])
    assert res.exit_code == 1
    error = res.output.splitlines()[-1]
    assert error.startswith("Error: ") and str(out) in error and "No space left on device" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tsv"]


def test_output_folder_that_cannot_be_created_is_a_clean_error(tmp_path: Path) -> None:
    src = write_edges(tmp_path / "in.tsv")
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    res = run(["edges", "--edges", src, "--source-col", "a", "--target-col", "b", "-o", blocker / "g.kg.npz"])
    error = res.output.splitlines()[-1]
    assert res.exit_code == 1 and error.startswith("Error: ") and "cannot write" in error
    assert str(blocker / "g.kg.npz") in error and f"{blocker} is a file, not a folder" in error


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_output_folder_is_a_clean_error(tmp_path: Path) -> None:
    src = write_edges(tmp_path / "in.tsv")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        res = run(["edges", "--edges", src, "--source-col", "a", "--target-col", "b", "-o", ro / "g.kg.npz"])
        assert res.exit_code == 1 and res.output.splitlines()[-1].startswith("Error: ")
        assert "Permission denied" in res.output
        res = run(["edges", "--edges", src, "--source-col", "a", "--target-col", "b", "-o", ro / "sub" / "g.kg.npz"])
        assert res.exit_code == 1 and res.output.splitlines()[-1].startswith("Error: ")
        assert "Permission denied" in res.output
    finally:
        ro.chmod(0o755)


# ====================================================================== 10. stale *.part files after kill -9
KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from kgbuild.atomic import atomic_write

    def write(fh):
        fh.write(b"half a graph")
        fh.flush()
        print("writing", flush=True)
        time.sleep(600)

    atomic_write(sys.argv[1], write)
""")


def test_part_file_left_by_kill_9_is_removed_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "g.kg.npz"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE,
                            cwd=REPO, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.kill()  # SIGKILL: no cleanup handler runs
        proc.wait()
    stale = [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    assert len(stale) == 1 and stale[0].name.startswith(".g.kg.npz.")
    other = tmp_path / ".other.kg.npz.12345.part"  # another target's file is left alone
    other.write_bytes(b"x")

    small_graph().save(target)

    assert MultiGraph.load(target).num_edges == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.kg.npz.12345.part", "g.kg.npz"]


def test_part_file_of_a_live_writer_is_kept(tmp_path: Path) -> None:
    """A temporary file whose writer is still running (here: this process) is not someone else's leftover."""
    target = tmp_path / "g.kg.npz"
    with atomic.atomic_path(target) as tmp:
        tmp.write_bytes(b"in progress")
        atomic.remove_stale_parts(target)
        assert tmp.exists()
    assert target.read_bytes() == b"in progress"


def test_old_style_part_files_are_removed_once_old(tmp_path: Path) -> None:
    target = tmp_path / "g.kg.npz"
    old = tmp_path / ".g.kg.npz.k3j_x9ab.part"  # the name mkstemp gave before pids were recorded
    young = tmp_path / ".g.kg.npz.zz81qq0w.part"
    old.write_bytes(b"x")
    young.write_bytes(b"x")
    week = time.time() - 7 * 86400
    os.utime(old, (week, week))
    small_graph().save(target)
    assert not old.exists() and young.exists()


# ====================================================================== 10. non-UTF-8 bytes, with line numbers
def test_non_utf8_gmt_is_refused_with_its_line(tmp_path: Path) -> None:
    gmt = tmp_path / "bad.gmt"
    gmt.write_bytes(b"P1\tR-1\tA\tB\tC\nP2\tR-2\tA\tB\xff\tC\n")
    with pytest.raises(KgbuildInputError) as err:
        reactome_source.read_gmt(gmt)
    assert f"{gmt}, line 2" in str(err.value) and "UTF-8" in str(err.value) and "0xff" in str(err.value)
    res = run(["reactome", "--gmt", gmt, "-o", tmp_path / "r.kg.npz"])
    assert res.exit_code == 1 and f"{gmt}, line 2" in res.output


def _gaf_line(symbol: str) -> str:
    return "\t".join(["UniProtKB", "X", symbol, "involved_in", "GO:0000001", "PMID:1", "IDA", "", "P", "", "",
                      "protein", "taxon:9606", "20220101", "TEST", "", ""])


NON_UTF8 = {
    # name: (file name, lines (bytes) -- the bad one is line 3, call)
    "edges": ("e.tsv", [b"a\tb", b"A\tB", b"B\tC\xff"],
              lambda p: edges_source.build(p, "a", "b", max_in_degree=None)),
    "edges-gz": ("e.tsv.gz", [b"a\tb", b"A\tB", b"B\tC\xff"],
                 lambda p: edges_source.build(p, "a", "b", max_in_degree=None)),
    "string-info": ("info.txt", [b"#string_protein_id\tpreferred_name", b"9606.P1\tA", b"9606.P2\tB\xe9"],
                    lambda p: string_source.read_info(p)),
    "string-links": ("links.txt", [b"protein1 protein2 combined_score", b"9606.P1 9606.P2 900",
                                   b"9606.P2 9606.P\xff1 900"], lambda p: string_source.read_links(p)),
    "n2r": ("n2r.txt", [b"1\tR-1\tu\tP1\tTAS\tHomo sapiens", b"2\tR-1\tu\tP1\tTAS\tHomo sapiens",
                        b"3\tR-1\tu\tP\xff1\tTAS\tHomo sapiens"], lambda p: reactome_source.read_ncbi2reactome(p)),
    "gene-map": ("gene_info.tsv", [b"#tax_id\tGeneID\tSymbol", b"9606\t1\tA", b"9606\t2\tB\xff"],
                 lambda p: reactome_source.read_gene_map(p)),
    "gaf": ("a.gaf", [b"!gaf-version: 2.2", _gaf_line("G1").encode(), _gaf_line("G2\xff").encode("latin-1")],
            lambda p: go_source.read_gaf(p)),
    "screen": ("emb.csv", [b"gene,f1,f2", b"A,1,0", b"B\xff,0,1", b"C,1,1"],
               lambda p: screen_source.load_embeddings(p)),
}


@pytest.mark.parametrize("kind", sorted(NON_UTF8))
def test_non_utf8_bytes_are_refused_with_their_line(tmp_path: Path, kind: str) -> None:
    name, lines, call = NON_UTF8[kind]
    path = tmp_path / name
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    with pytest.raises(KgbuildInputError) as err:
        call(path)
    assert f"{path}, line 3" in str(err.value) and "not valid UTF-8" in str(err.value)


# ====================================================================== 10. truncated gzip files
def _truncated_gz(path: Path, text: str) -> Path:
    data = gzip.compress(text.encode())
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("kind", ["edges", "gmt", "info", "screen", "n2r"])
def test_truncated_gzip_is_a_clean_error_naming_the_file(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "o.kg.npz"
    if kind == "edges":
        path = tmp_path / "e.tsv.gz"
        _truncated_gz(path, "a\tb\n" + "".join(f"A{i}\tB{i}\n" for i in range(5000)))
        args = ["edges", "--edges", path, "--source-col", "a", "--target-col", "b"]
    elif kind == "gmt":
        path = _truncated_gz(tmp_path / "p.gmt.gz", "".join(f"P{i}\tR-{i}\tA\tB{i}\n" for i in range(5000)))
        args = ["reactome", "--gmt", path]
    elif kind == "info":
        path = _truncated_gz(tmp_path / "info.txt.gz", "#string_protein_id\tpreferred_name\n"
                             + "".join(f"9606.P{i}\tG{i}\n" for i in range(5000)))
        links = tmp_path / "links.txt"
        links.write_text("protein1 protein2 combined_score\n9606.P1 9606.P2 900\n")
        args = ["string", "--links", links, "--info", path]
    elif kind == "screen":
        path = _truncated_gz(tmp_path / "emb.csv.gz", "gene,f1\n" + "".join(f"G{i},{i}\n" for i in range(5000)))
        args = ["screen", "--embeddings", path]
    else:
        path = _truncated_gz(tmp_path / "n2r.txt.gz",
                             "".join(f"{i}\tR-1\tu\tP1\tTAS\tHomo sapiens\n" for i in range(5000)))
        args = ["reactome", "--ncbi2reactome", path]
    res = run([*args, "-o", out])
    assert res.exit_code == 1, res.output
    assert res.output.startswith(f"Error: {path}") and "truncated or damaged gzip" in res.output
    assert "Aborted" not in res.output and not out.exists()


def test_literal_backslash_t_separator_is_a_tab(tmp_path: Path) -> None:
    src = tmp_path / "e.txt"
    src.write_text("a\tb\nA\tB\n")
    table, meta = edges_source.build(src, "a", "b", sep="\\t", max_in_degree=None)
    assert len(table) == 1 and meta["separator"] == "\t"
    with pytest.raises(KgbuildInputError, match="one character"):
        edges_source.build(src, "a", "b", sep="ab")


# ====================================================================== 10. OBO problems
OBO_HEAD = "format-version: 1.2\ndata-version: releases/test\n\n"


def _term(term_id: str, *extra: str, namespace: str = "biological_process") -> str:
    return "\n".join(["[Term]", f"id: {term_id}", f"name: {term_id}", f"namespace: {namespace}", *extra]) + "\n\n"


GOOD_TERMS = (_term("GO:0008150") + _term("GO:0000001", "is_a: GO:0008150")
              + _term("GO:0000002", "is_a: GO:0000001"))


@pytest.mark.parametrize("case, text, expected", [
    ("cycle", OBO_HEAD + _term("GO:0008150") + _term("GO:0000001", "is_a: GO:0000003")
     + _term("GO:0000002", "is_a: GO:0000001") + _term("GO:0000003", "relationship: part_of GO:0000002"),
     r"cycle.*GO:0000001.*GO:0000003.*GO:0000002.*GO:0000001"),
    ("unknown is_a", OBO_HEAD + GOOD_TERMS + _term("GO:0000004", "is_a: GO:0007777"),
     r"line 25: GO:0000004 has is_a parent GO:0007777, which is not a term of this file"),
    ("unknown part_of", OBO_HEAD + GOOD_TERMS + _term("GO:0000004", "relationship: part_of GO:0007777 ! x"),
     r"line 25: GO:0000004 has part_of parent GO:0007777, which is not a term of this file"),
    ("duplicate id", OBO_HEAD + GOOD_TERMS + _term("GO:0000001", "is_a: GO:0008150"),
     r"line 22: term GO:0000001 is defined twice \(first on line 10\)"),
    ("truncated mid-line", OBO_HEAD + GOOD_TERMS + "[Term]\nid: GO:00000",
     r"line 22: .*truncated"),
    ("truncated header", OBO_HEAD + GOOD_TERMS + "[Te", r"line 21: malformed stanza header '\[Te'.*truncated"),
    ("truncated stanza", OBO_HEAD + GOOD_TERMS + "[Term]\nid: GO:0000004\n",
     r"line 21: term GO:0000004 has no name.*truncated"),
    ("bad id", OBO_HEAD + GOOD_TERMS + _term("GO:12"), r"line 22: term id 'GO:12' is not of the form GO:0000000"),
    ("non-utf8", OBO_HEAD + GOOD_TERMS.replace("name: GO:0000002", "name: GO:0000002\udcff"),
     r"line 17: not valid UTF-8"),
    ("empty", "", r"empty file"),
])
def test_bad_ontology_is_a_clean_error_naming_term_and_line(tmp_path: Path, case: str, text: str,
                                                             expected: str) -> None:
    obo = tmp_path / "bad.obo"
    obo.write_bytes(text.encode("utf-8", "surrogateescape"))
    gaf = tmp_path / "a.gaf"
    gaf.write_text("!gaf-version: 2.2\n" + _gaf_line("G1") + "\n")
    with pytest.raises(KgbuildInputError, match=expected) as err:
        go_source.build(obo, gaf)
    assert str(err.value).startswith(str(obo))
    assert "recursion" not in str(err.value)


def test_good_small_ontology_still_builds(tmp_path: Path) -> None:
    obo = tmp_path / "ok.obo"
    obo.write_text(OBO_HEAD + GOOD_TERMS + "[Typedef]\nid: part_of\nname: part of\n")
    gaf = tmp_path / "a.gaf"
    gaf.write_text("!gaf-version: 2.2\n" + _gaf_line("G1") + "\n" + _gaf_line("G2") + "\n")
    table, meta = go_source.build(obo, gaf, max_in_degree=None)
    assert len(table) == 2


# ====================================================================== 10. a ';'-separated CSV
def test_semicolon_separated_csv_is_named_as_such(tmp_path: Path) -> None:
    semi = tmp_path / "emb.csv"
    semi.write_text("gene;f1;f2\nG0016;-0.72;0.3\nG0017;0.1;0.5\nG0018;0.4;-0.2\n")
    with pytest.raises(KgbuildInputError, match=r"';'-separated"):
        screen_source.load_embeddings(semi)
    mixed = tmp_path / "mixed.csv"  # a comma header over ';' rows: each row is one 'gene' value
    mixed.write_text("gene,f1,f2\nG0015,0.1,0.2\nG0016;-0.72;0.3\nG0017,0.1,0.5\n")
    with pytest.raises(KgbuildInputError) as err:
        screen_source.load_embeddings(mixed)
    assert f"{mixed}, line 3" in str(err.value) and "';'" in str(err.value)
    edges = tmp_path / "e.csv"
    edges.write_text("a;b;w\nA;B;1\n")
    with pytest.raises(KgbuildInputError, match=r"';'-separated.*`sep=';'`"):
        edges_source.build(edges, "a", "b", "w")
    table, _ = edges_source.build(edges, "a", "b", "w", sep=";", max_in_degree=None)
    assert len(table) == 1


# ====================================================================== 10. a pathway with millions of genes
def test_huge_gene_set_is_refused_early_with_its_line(tmp_path: Path) -> None:
    gmt = tmp_path / "huge.gmt"
    gmt.write_text("P1\tR-1\tA\tB\n" + "P2\tR-2\t" + "\t".join(f"G{i}" for i in range(60_000)) + "\n")
    with pytest.raises(KgbuildInputError) as err:
        reactome_source.build(gmt)  # default limit
    msg = str(err.value)
    assert f"{gmt}, line 2" in msg and "R-2" in msg and "60,000 genes" in msg and "`max_set_size=" in msg
    small = tmp_path / "small.gmt"
    small.write_text("P1\tR-1\tA\tB\nP2\tR-2\tA\tB\tC\tD\n")
    with pytest.raises(KgbuildInputError, match="line 2.*4 genes.*`max_set_size=3`"):
        reactome_source.build(small, max_set_size=3)
    table, _ = reactome_source.build(small, max_set_size=4, max_in_degree=None)
    assert len(table) > 0
    res = run(["reactome", "--gmt", small, "--max-set-size", "3", "-o", tmp_path / "r.kg.npz"])
    assert res.exit_code == 1 and "--max-set-size 3" in res.output


def test_go_term_sets_are_bounded_too(tmp_path: Path) -> None:
    obo = tmp_path / "ok.obo"
    obo.write_text(OBO_HEAD + GOOD_TERMS)
    gaf = tmp_path / "a.gaf"
    gaf.write_text("!gaf-version: 2.2\n" + "".join(_gaf_line(f"G{i}") + "\n" for i in range(5)))
    with pytest.raises(KgbuildInputError, match=r"GO:0000001.*5 genes.*`max_set_size=4`"):
        go_source.build(obo, gaf, max_set_size=4)


def test_jaccard_memory_is_bounded_for_many_genes(monkeypatch) -> None:
    """Blocks shrink with the number of genes, so one block never holds more than the budget of values."""
    import tracemalloc

    import scipy.sparse as sp

    from kgbuild import jaccard

    n = 20_000  # genes in pairs: 10,000 sets of 2 genes
    a = jaccard.membership_matrix(np.arange(n), np.arange(n) // 2, n, n // 2)
    monkeypatch.setattr(jaccard, "BLOCK_VALUES", 1 << 18)  # 256 k values: 1 MB per float32 block array
    tracemalloc.start()
    try:
        src, dst, w, _ = jaccard.jaccard_edges(sp.csr_matrix(a), 0.1, 20, block_rows=512)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(w) == n and np.all(w == 1.0)
    assert peak < 24 << 20  # a 512 x 20,000 block would need about 40 MB per array
