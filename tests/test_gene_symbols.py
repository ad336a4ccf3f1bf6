"""Previous symbols and aliases mapped to current ones (kgbuild.symbols) from NCBI's real gene_info file:
MARCH8 in a dataset meets MARCHF8 in a graph; aliases shared by several genes are reported, not mapped."""

from __future__ import annotations

import json

import anndata
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from kgbuild.graph import MultiGraph
from kgbuild.symbols import SymbolMap, match_names
from txpert_head.cli.main import main
from txpert_head.runs.folder import load_run
from txpert_head.simulate.fixtures import synthetic_data, synthetic_graph
from txpert_files import BASE_TRAIN_OPTIONS, toml_text

GENE_INFO = ("genes", "Homo_sapiens.gene_info.gz")
# 30 current symbols for the synthetic genes G0..G29 (graph side)
CURRENT = ["MARCHF8", "A1BG", "TP53", "KLF1", "CEBPA", "SET", "GATA1", "MYC", "JUN", "FOS", "EGR1", "STAT1",
           "STAT3", "IRF1", "SPI1", "CUL3", "BRD4", "SMAD4", "JAK2", "CAV1", "CD86", "ATF2", "ETV7", "IRF7",
           "NFKBIA", "POU2F2", "STAT2", "UBE2L6", "CMTM6", "IFNGR1"]


@pytest.fixture(scope="module")
def gene_info(shared_data):
    path = shared_data.joinpath(*GENE_INFO)
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="module")
def symbols(gene_info):
    return SymbolMap.from_gene_info(gene_info)


def test_symbol_map_on_the_real_gene_info(symbols):
    assert symbols.lookup("MARCH8") == "MARCHF8"  # previous symbol
    assert symbols.lookup("MARCHF8") == "MARCHF8"  # a current symbol maps to itself
    assert symbols.lookup("TP53") == "TP53"
    # A1B is an alias of both A1BG and SNTB1: ambiguous, never mapped
    assert "A1B" in symbols.ambiguous and {"A1BG", "SNTB1"} <= set(symbols.ambiguous["A1B"])
    assert symbols.lookup("A1B") is None
    m = match_names(["MARCH8", "TP53", "A1B", "NOT_A_GENE"], ["MARCHF8", "TP53", "A1BG"], symbols)
    assert m.mapping == {"MARCH8": "MARCHF8"} and m.matched == ["TP53"]
    assert set(m.ambiguous) == {"A1B"} and m.unknown == ["NOT_A_GENE"]
    assert m.describe().startswith("1 matched, 1 mapped (MARCH8 -> MARCHF8), 1 ambiguous (A1B: ")
    # a graph that still uses the old symbol meets a dataset with the new one
    assert match_names(["MARCHF8"], ["MARCH8"], symbols).mapping == {"MARCHF8": "MARCH8"}
    # without a map nothing is mapped
    assert match_names(["MARCH8"], ["MARCHF8"], None).unknown == ["MARCH8"]


def test_from_records_rules():
    m = SymbolMap.from_records([("AAA", ["OLD1", "SHARED", "BBB"]), ("BBB", ["SHARED"]), ("CCC", [])])
    assert m.lookup("OLD1") == "AAA" and m.lookup("BBB") == "BBB"  # a current symbol is never re-pointed
    assert m.ambiguous == {"SHARED": ["AAA", "BBB"]} and m.lookup("SHARED") is None


def _inputs(root, data_names):
    """A synthetic raw-count dataset whose perturbations use ``data_names`` and a graph of :data:`CURRENT`."""
    d = synthetic_data(n_cells=900, n_genes=30, n_perts=12, seed=2, normalize=False)
    rename = dict(zip([f"G{i}" for i in range(30)], data_names))
    labels = ["+".join(rename[g] for g in c.split("+")) if c != "ctrl" else c for c in d.condition]
    obs = pd.DataFrame({"gene": labels, "rep": d.batch}, index=[f"c{i}" for i in range(d.n_obs)])
    anndata.AnnData(d.X, obs=obs, var=pd.DataFrame(index=CURRENT)).write_h5ad(root / "d.h5ad")
    g = synthetic_graph(30, seed=2)
    arr = g.to_arrays()
    names = dict(zip([f"G{i}" for i in range(30)], CURRENT))
    nodes = [names[str(n)] for n in arr["nodes"]]
    src, dst = arr["edge_index"]
    MultiGraph.from_edges("string", [nodes[i] for i in src], [nodes[i] for i in dst], arr["edge_weight"],
                          nodes=nodes).save(root / "g.kg.npz")
    (root / "train.toml").write_text(toml_text({**BASE_TRAIN_OPTIONS, "epochs": 1}))


def test_march8_in_data_meets_marchf8_in_graph(gene_info, tmp_path):
    data_names = ["MARCH8", "A1B"] + CURRENT[2:]  # an old symbol and an ambiguous alias among the perturbations
    _inputs(tmp_path, data_names)
    run = tmp_path / "run"
    common = ["--data", str(tmp_path / "d.h5ad"), "--perturbation-col", "gene", "--batch-col", "rep"]
    res = CliRunner().invoke(main, ["train", *common, "--graph", str(tmp_path / "g.kg.npz"), "--gene-info",
                                    str(gene_info), "--config", str(tmp_path / "train.toml"), "--no-baselines",
                                    "--no-vcc", "-o", str(run)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    # reported at the default verbosity: MARCH8 mapped, the ambiguous A1B reported and left as it is
    assert "gene symbols (perturbed genes vs" in res.output
    assert "10 matched, 1 mapped (MARCH8 -> MARCHF8), 1 ambiguous (A1B: " in res.output
    assert "1 of 12 perturbed genes are not in" in res.output and "A1B" in res.output
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["data"]["gene_info"] == str(gene_info)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["gene_symbols"]["mapped"] == {"MARCH8": "MARCHF8"} and "A1B" in metrics["gene_symbols"]["ambiguous"]
    split = json.loads((run / "split.json").read_text())
    assert "MARCHF8" in json.dumps(split) and "MARCH8\"" not in json.dumps(split)

    trainer, _ = load_run(run)  # the mapping is applied again when the run is loaded
    assert "MARCHF8" in trainer.data.perturbed_genes() and "MARCH8" not in trainer.data.perturbed_genes()
    # the perturbation's encoder row is the graph node MARCHF8 (not an isolated row)
    assert "MARCHF8" in trainer.graph.node_lookup and "MARCHF8" in trainer.encoder_index
    assert "A1B" not in trainer.graph.node_lookup

    out = tmp_path / "pred.h5ad"
    res = CliRunner().invoke(main, ["predict", str(run), "-p", "MARCH8", "-p", "MARCH8+TP53", "-o", str(out)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "1 mapped (MARCH8 -> MARCHF8)" in res.output
    pred = anndata.read_h5ad(out)
    assert pred.obs["perturbation"].tolist() == ["MARCHF8", "MARCHF8+TP53"]
    assert pred.obs["requested"].tolist() == ["MARCH8", "MARCH8+TP53"]
    assert pred.obs["known"].tolist() == [True, True]
    assert dict(pred.uns["gene_symbols"]["mapped"]) == {"MARCH8": "MARCHF8"}


def test_without_gene_info_the_old_symbol_stays_unmatched_with_a_hint(tmp_path):
    _inputs(tmp_path, ["MARCH8"] + CURRENT[1:])
    from txpert_head.data.perturb_data import load_h5ad
    from txpert_head.runs.folder import load_graph_for

    data = load_h5ad(tmp_path / "d.h5ad", "gene", batch_col="rep")
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("txpert_head.data.perturb_data").addHandler(handler)
    try:
        load_graph_for(data, tmp_path / "g.kg.npz")
    finally:
        logging.getLogger("txpert_head.data.perturb_data").removeHandler(handler)
    assert "MARCH8" in data.perturbed_genes()
    assert any("MARCH8" in r.getMessage() and "--gene-info" in r.getMessage() for r in records)


@pytest.mark.slow
def test_papalexi_march8_is_mapped_to_marchf8(shared_data, gene_info, tmp_path):
    """Papalexi 2021 perturbs MARCH8 (its name before 2020); a graph with the current symbol MARCHF8 meets it."""
    path = shared_data / "perturbseq" / "papalexi2021_thp1_subset.h5ad"
    targets = sorted(set(anndata.read_h5ad(path, backed="r").obs["target"].astype(str)) - {"non-targeting"})
    assert "MARCH8" in targets
    nodes = [("MARCHF8" if t == "MARCH8" else t) for t in targets]
    MultiGraph.from_edges("string", nodes[:-1], nodes[1:], np.ones(len(nodes) - 1)).save(tmp_path / "g.kg.npz")
    res = CliRunner().invoke(main, [
        "train", "--data", str(path), "--perturbation-col", "target", "--control", "non-targeting",
        "--batch-col", "bio_rep", "--graph", str(tmp_path / "g.kg.npz"), "--gene-info", str(gene_info),
        "--epochs", "1", "--set", "max_steps_per_epoch=2", "--set", "progress=false", "--set", "batch_size=64",
        "--set", "encoder_dim=8", "--set", "hidden=16", "--no-baselines", "--no-vcc", "-o", str(tmp_path / "run")],
        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert f"{len(targets) - 1} matched, 1 mapped (MARCH8 -> MARCHF8), 0 ambiguous, 0 unknown" in res.output
    assert "perturbed genes are not in" not in res.output  # MARCHF8 is a graph node: no isolated encoder row
