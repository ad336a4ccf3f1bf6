"""kgbuild's Python API (kgbuild.api) against the command line: same files in, same graph out.

Every source is built from the real shared data twice, through ``kgbuild.<source>(...)`` and through
``kgbuild <source> ...``, and the two graphs must match exactly: nodes, edges, weights (dtype included),
layers and the whole provenance (apart from the creation time).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import kgbuild
from kgbuild.cli import flag_message, main as kgbuild_cli
from kgbuild.errors import KgbuildInputError
from kgbuild.graph import MultiGraph

LINKS = "string/9606.protein.links.v12.0.subset.txt.gz"
INFO = "string/9606.protein.info.v12.0.subset.txt.gz"
DMFIND = "string/string_v12_dmfind_edges.tsv.gz"


def _meta(g: MultiGraph) -> dict:
    meta = json.loads(json.dumps(g.meta))
    meta.pop("created", None)
    for entry in meta.get("merged_from", []):
        entry.pop("created", None)
    return meta


def assert_identical(a: MultiGraph, b: MultiGraph) -> None:
    for name in ("nodes", "edge_index", "edge_weight", "edge_layer", "layers"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert _meta(a) == _meta(b)


def cli(tmp_path: Path, *args: str) -> MultiGraph:
    out = tmp_path / f"cli{len(list(tmp_path.glob('cli*')))}.kg.npz"
    res = CliRunner().invoke(kgbuild_cli, [*args, "-o", str(out)])
    assert res.exit_code == 0, res.output
    return MultiGraph.load(out)


def via_file(graph: MultiGraph, tmp_path: Path) -> MultiGraph:
    """The API's graph after a save/load round trip (as the CLI's is)."""
    path = tmp_path / f"api{len(list(tmp_path.glob('api*')))}.kg.npz"
    graph.save(path)
    return MultiGraph.load(path)


def test_string_api_equals_cli(shared_data: Path, tmp_path: Path) -> None:
    links, info = shared_data / LINKS, shared_data / INFO
    for kwargs, flags in [({}, []),
                          ({"min_score": 400, "max_in_degree": 0, "layer_name": "s400"},
                           ["--min-score", "400", "--max-in-degree", "0", "--layer-name", "s400"])]:
        api = kgbuild.string(links, info, **kwargs)
        assert_identical(via_file(api, tmp_path), cli(tmp_path, "string", "--links", str(links), "--info", str(info),
                                                      *flags))


@pytest.mark.slow  # builds from the full real files twice
def test_go_api_equals_cli(shared_data: Path, tmp_path: Path) -> None:
    obo, gaf = shared_data / "go/go-basic.obo", shared_data / "go/goa_human.gaf.gz"
    api = kgbuild.go(obo, gaf, aspects="P", exclude_evidence=["IEA"], min_jaccard=0.2, max_in_degree=10,
                     progress=False)
    assert_identical(via_file(api, tmp_path), cli(tmp_path, "go", "--obo", str(obo), "--gaf", str(gaf), "--aspects",
                                                  "P", "--exclude-evidence", "IEA", "--min-jaccard", "0.2",
                                                  "--max-in-degree", "10"))


@pytest.mark.slow  # builds from the full real files twice
def test_reactome_api_equals_cli(shared_data: Path, tmp_path: Path) -> None:
    gmt = shared_data / "reactome/ReactomePathways.gmt"
    api = kgbuild.reactome(gmt, progress=False)
    assert_identical(via_file(api, tmp_path), cli(tmp_path, "reactome", "--gmt", str(gmt)))


@pytest.mark.slow  # builds from the full real files twice
def test_screen_api_equals_cli(shared_data: Path, tmp_path: Path) -> None:
    emb = shared_data / "depmap/depmap_pca_gene_embeddings.parquet"
    api = kgbuild.screen(emb, top_pct=0.5, max_in_degree=20, layer_name="pca", progress=False)
    assert_identical(via_file(api, tmp_path), cli(tmp_path, "screen", "--embeddings", str(emb), "--top-pct", "0.5",
                                                  "--max-in-degree", "20", "--layer-name", "pca"))
    h5ad = shared_data / "perturbseq/norman2019_k562_subset.h5ad"
    api = kgbuild.screen(h5ad, top_pct=10, progress=False)
    assert_identical(via_file(api, tmp_path), cli(tmp_path, "screen", "--embeddings", str(h5ad), "--top-pct", "10"))


def test_edges_api_equals_cli_and_merge(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / DMFIND
    api = kgbuild.edges(path, source_col="symbol1", target_col="symbol2", weight_col="combined_score",
                        weight_scale=0.001, min_weight=0.7, symmetric=True, layer_name="dmfind")
    by_cli = cli(tmp_path, "edges", "--edges", str(path), "--source-col", "symbol1", "--target-col", "symbol2",
                 "--weight-col", "combined_score", "--weight-scale", "0.001", "--min-weight", "0.7", "--symmetric",
                 "--layer-name", "dmfind")
    assert_identical(via_file(api, tmp_path), by_cli)
    string = kgbuild.string(shared_data / LINKS, shared_data / INFO)
    out = tmp_path / "merged.kg.npz"
    merged = kgbuild.merge(string, api, output=out)
    assert merged.layer_names == ["string", "dmfind"] and MultiGraph.load(out).equals(merged)
    parts = [tmp_path / "s.kg.npz", tmp_path / "d.kg.npz"]
    string.save(parts[0])
    api.save(parts[1])
    assert_identical(MultiGraph.load(out), cli(tmp_path, "merge", *map(str, parts)))
    assert_identical(kgbuild.merge(parts), MultiGraph.load(out))


def test_api_fetches_missing_inputs_and_keeps_the_download_provenance(shared_data: Path, tmp_path: Path,
                                                                     monkeypatch) -> None:
    import kgbuild.fetch

    calls = []

    def fake_fetch(source, files=None, cache_dir=None, offline=False, **kw):
        calls.append((source, list(files), cache_dir, offline))
        return {k: shared_data / (INFO if k == "info" else LINKS) for k in files}

    monkeypatch.setattr(kgbuild.fetch, "fetch", fake_fetch)
    monkeypatch.setattr(kgbuild.fetch, "fetch_record",
                        lambda p: {"url": f"https://example.org/{Path(p).name}", "version": "12.0", "sha256": "ab"})
    g = kgbuild.string(offline=True, cache_dir=tmp_path / "cache")
    assert calls == [("string", ["links", "info"], tmp_path / "cache", True)]
    entry = g.meta["layers"]["string"]
    assert entry["downloaded"]["links"]["url"].endswith(Path(LINKS).name) and entry["version"] == "12.0"
    # a channel needs protein.links.detailed: that is the file asked for
    calls.clear()
    with pytest.raises(KgbuildInputError):
        kgbuild.string(channel="experimental", offline=True)
    assert calls[0][1] == ["links_detailed", "info"]


def test_library_errors_name_parameters_and_the_cli_names_flags(shared_data: Path, tmp_path: Path) -> None:
    with pytest.raises(KgbuildInputError, match="no edges left after filtering; lower `min_score`"):
        kgbuild.string(shared_data / LINKS, shared_data / INFO, min_score=1000)
    out = tmp_path / "s.kg.npz"
    res = CliRunner().invoke(kgbuild_cli, ["string", "--links", str(shared_data / LINKS), "--info",
                                           str(shared_data / INFO), "--min-score", "1000", "-o", str(out)])
    assert res.exit_code == 1 and "lower --min-score or check the files" in res.output and "`" not in res.output
    # the output must not be an input: refused, by parameter name in Python and by flag on the command line
    with pytest.raises(KgbuildInputError, match="`links`"):
        kgbuild.string(shared_data / LINKS, shared_data / INFO, output=shared_data / LINKS)
    res = CliRunner().invoke(kgbuild_cli, ["string", "--links", str(shared_data / LINKS), "--info",
                                           str(shared_data / INFO), "-o", str(shared_data / LINKS)])
    assert res.exit_code == 1 and "(--links)" in res.output
    assert flag_message("more than `max_set_size=3`: raise `max_set_size`", kgbuild_cli.commands["go"]) == \
        "more than --max-set-size 3: raise --max-set-size"
    assert flag_message("`sep=';'` and `unknown` and `offline=True`", kgbuild_cli.commands["edges"]) == \
        "--sep ';' and unknown and offline=True"
    assert flag_message("`offline=True`", kgbuild_cli.commands["string"]) == "--offline"


def test_manifests_are_package_data(monkeypatch, tmp_path: Path) -> None:
    from kgbuild.fetch import list_manifests, manifest_dir

    monkeypatch.delenv("KGBUILD_MANIFEST_DIR", raising=False)
    folder = manifest_dir()
    assert folder == Path(kgbuild.__file__).resolve().parent / "manifests"
    assert {"string", "go", "reactome", "gene_info", "depmap"} <= {m.source for m in list_manifests()}
    (tmp_path / "mine.toml").write_text('source = "mine"\nversion = "1"\nlicense = "x"\ncitation = "y"\n'
                                        '[files.a]\nurl = "https://example.org/a.txt"\n')
    monkeypatch.setenv("KGBUILD_MANIFEST_DIR", str(tmp_path))
    assert [m.source for m in list_manifests()] == ["mine"]
    res = CliRunner().invoke(kgbuild_cli, ["fetch", "--list", "--manifest-dir", str(folder)])
    assert res.exit_code == 0 and res.output.startswith("depmap")
