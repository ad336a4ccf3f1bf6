"""txpert simulate: byte-reproducible example files in the real layouts, and a Perturb-seq screen whose
counts are integers with batch effects, knock-downs, effects that follow the true network, and roughly
additive doubles."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from txpert_head.cli.main import main as txpert_main
from txpert_head.simulate import PerturbSeqConfig, make_network, simulate_perturbseq, write_example_bundle
from txpert_head.simulate import example_sources as src
from txpert_head.simulate.bundle import MANIFEST, PERTURBSEQ, TRUTH_EFFECTS, TRUTH_MODULES, TRUTH_NETWORK, part_seed

SMALL = dict(n_genes=150, config=PerturbSeqConfig(n_singles=24, n_doubles=10, cells_per_perturbation=60,
                                                  n_batches=3))


def all_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    write_example_bundle(out, seed=11, **SMALL)
    return out


@pytest.fixture(scope="module")
def screen(bundle):
    import anndata as ad

    return ad.read_h5ad(bundle / PERTURBSEQ)


@pytest.fixture(scope="module")
def lognorm(screen) -> np.ndarray:
    """Counts normalised to 4,000 per cell, log1p: ``(cells, genes)``."""
    x = screen.X.toarray().astype(np.float64)
    return np.log1p(x / x.sum(axis=1, keepdims=True) * 4000)


@pytest.fixture(scope="module")
def truth(bundle) -> tuple[pd.DataFrame, pd.Series]:
    net = pd.read_csv(bundle / TRUTH_NETWORK, sep="\t")
    modules = pd.read_csv(bundle / TRUTH_MODULES, sep="\t").set_index("gene")["module"]
    return net, modules


def mean_delta(screen, lognorm: np.ndarray, condition: str) -> np.ndarray:
    pert = screen.obs["perturbation"].to_numpy()
    return lognorm[pert == condition].mean(axis=0) - lognorm[pert == "ctrl"].mean(axis=0)


# ---------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_bytes_for_every_file(bundle, tmp_path):
    write_example_bundle(tmp_path, seed=11, **SMALL)
    first, second = all_files(bundle), all_files(tmp_path)
    assert sorted(first) == sorted(second)
    assert len(first) >= 12
    for name in first:
        assert first[name] == second[name], f"{name} differs between two runs with the same seed"


def test_different_seed_gives_different_files(bundle, tmp_path):
    write_example_bundle(tmp_path, seed=12, **SMALL)
    first, second = all_files(bundle), all_files(tmp_path)
    for name in ("string/9606.protein.links.sim.txt.gz", "go/goa_human.sim.gaf.gz", PERTURBSEQ, TRUTH_NETWORK):
        assert first[name] != second[name], name


def test_gzip_headers_carry_no_time_or_name(bundle):
    for p in bundle.rglob("*.gz"):
        head = p.read_bytes()[:10]
        assert head[:2] == b"\x1f\x8b"
        assert head[4:8] == b"\0\0\0\0", f"{p} has an mtime in its gzip header"
        assert head[3] & 0x08 == 0, f"{p} stores a file name in its gzip header"


def test_changing_the_screen_size_keeps_the_graph_sources(bundle, tmp_path):
    config = PerturbSeqConfig(n_singles=12, n_doubles=3, cells_per_perturbation=20, n_batches=2)
    write_example_bundle(tmp_path, seed=11, n_genes=150, config=config)
    for name in (src.STRING_LINKS, src.GO_GAF, src.REACTOME_GMT, src.SCREEN_PARQUET, TRUTH_NETWORK):
        assert (bundle / name).read_bytes() == (tmp_path / name).read_bytes(), name


# ---------------------------------------------------------------------- formats (the real layouts)
def test_string_links_layout(bundle):
    with gzip.open(bundle / src.STRING_LINKS, "rt") as fh:
        lines = fh.read().splitlines()
    assert lines[0] == "protein1 protein2 combined_score"
    rows = [line.split(" ") for line in lines[1:]]
    assert all(len(r) == 3 for r in rows)
    assert all(re.fullmatch(r"9606\.ENSP\d{11}", r[0]) and re.fullmatch(r"9606\.ENSP\d{11}", r[1]) for r in rows)
    scores = {(a, b): int(s) for a, b, s in rows}
    assert all(150 <= s <= 999 for s in scores.values())
    assert all(scores.get((b, a)) == s for (a, b), s in scores.items()), "both orientations with one score"
    assert [r[:2] for r in rows] == sorted(r[:2] for r in rows)
    assert len(scores) == len(rows), "no duplicate lines"


def test_string_info_layout_and_coverage(bundle):
    info = pd.read_csv(bundle / src.STRING_INFO, sep="\t", compression="gzip")
    assert list(info.columns) == ["#string_protein_id", "preferred_name", "protein_size", "annotation"]
    assert info["#string_protein_id"].is_unique and info["preferred_name"].is_unique
    links = pd.read_csv(bundle / src.STRING_LINKS, sep=" ", compression="gzip")
    assert list(links.columns) == ["protein1", "protein2", "combined_score"]
    assert links["combined_score"].dtype.kind == "i"
    assert set(links["protein1"]) <= set(info["#string_protein_id"])
    assert 0.6 * 150 < len(info) < 150, "STRING covers most, not all, genes"


def test_string_headers_match_the_real_files(bundle, shared_data):
    for ours, real in ((src.STRING_LINKS, "string/9606.protein.links.v12.0.subset.txt.gz"),
                       (src.STRING_INFO, "string/9606.protein.info.v12.0.subset.txt.gz")):
        with gzip.open(bundle / ours, "rt") as a, gzip.open(shared_data / real, "rt") as b:
            assert a.readline() == b.readline()


def test_string_scores_carry_signal(bundle, truth):
    net, _ = truth
    info = pd.read_csv(bundle / src.STRING_INFO, sep="\t", compression="gzip")
    sym = dict(zip(info["#string_protein_id"], info["preferred_name"]))
    links = pd.read_csv(bundle / src.STRING_LINKS, sep=" ", compression="gzip")
    true_pairs = {frozenset(p) for p in zip(net["source"], net["target"])}
    is_true = np.array([frozenset((sym[a], sym[b])) in true_pairs for a, b in zip(links["protein1"], links["protein2"])])
    assert 0.6 < is_true.mean() < 0.95, "a noisy view: mostly true pairs, some false ones"
    assert links["combined_score"][is_true].mean() > links["combined_score"][~is_true].mean() + 150


def test_go_obo_parses_with_goatools(bundle):
    from goatools.obo_parser import GODag

    dag = GODag(str(bundle / src.GO_OBO), optional_attrs={"relationship"}, prt=None)
    text = (bundle / src.GO_OBO).read_text()
    assert text.startswith("format-version: 1.2\n")
    live = {t for t in dag.values() if not t.is_obsolete}
    assert {"GO:0008150", "GO:0003674", "GO:0005575"} <= {t.id for t in live}
    assert any("part_of" in t.relationship for t in live), "part_of relationships are present"
    assert {t.namespace for t in live} == {"biological_process", "molecular_function", "cellular_component"}
    branch = next(t for t in live if t.name.endswith("branch a"))
    assert "GO:0008150" in branch.get_all_parents()


def test_gaf_layout(bundle):
    with gzip.open(bundle / src.GO_GAF, "rt") as fh:
        lines = fh.read().splitlines()
    assert lines[0] == "!gaf-version: 2.2"
    rows = [line.split("\t") for line in lines if not line.startswith("!")]
    assert rows and all(len(r) == 17 for r in rows)
    assert {r[8] for r in rows} == {"P", "F", "C"}
    assert all(re.fullmatch(r"GO:\d{7}", r[4]) for r in rows)
    assert all(r[12] == "taxon:9606" for r in rows)
    nots = [r for r in rows if r[3].startswith("NOT|")]
    assert nots, "a few NOT-qualified rows exercise the parser's NOT filter"
    from goatools.obo_parser import GODag

    dag = GODag(str(bundle / src.GO_OBO), prt=None)
    assert all(r[4] in dag for r in rows), "every annotated term is in the ontology"


def test_gaf_reads_with_goatools(bundle, tmp_path):
    from goatools.anno.gaf_reader import GafReader

    plain = tmp_path / "sim.gaf"
    plain.write_bytes(gzip.decompress((bundle / src.GO_GAF).read_bytes()))
    reader = GafReader(str(plain), prt=None)
    assert len(reader.associations) > 100
    assert {a.DB_Symbol for a in reader.associations} <= {f"G{i:04d}" for i in range(1, 151)}


def test_reactome_gmt_layout(bundle, truth):
    _, modules = truth
    lines = (bundle / src.REACTOME_GMT).read_text().splitlines()
    assert len(lines) >= 5
    fields = [line.split("\t") for line in lines]
    assert all(len(f) >= 3 and " " not in f[0] and re.fullmatch(r"R-HSA-\d+", f[1]) for f in fields)
    assert all(set(f[2:]) <= set(modules.index) for f in fields)
    # pathways mostly follow modules: the dominant module holds most of a module pathway's genes
    purity = [modules[f[2:]].value_counts(normalize=True).iloc[0] for f in fields if "-module-" in f[0] and len(f) > 4]
    assert np.median(purity) > 0.6


def test_screen_embeddings_layout_and_signal(bundle, truth):
    net, _ = truth
    table = pd.read_parquet(bundle / src.SCREEN_PARQUET)
    real_style = ["gene"] + [f"z_{i}" for i in range(1, table.shape[1])]
    assert list(table.columns) == real_style
    assert all(table[c].dtype == np.float32 for c in table.columns[1:])
    assert table["gene"].is_unique
    emb = table.set_index("gene")
    z = emb.to_numpy(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    cos = pd.DataFrame(z @ z.T, index=emb.index, columns=emb.index)
    pairs = [(a, b) for a, b in zip(net["source"], net["target"]) if a in cos.index and b in cos.index]
    linked = np.mean([cos.loc[a, b] for a, b in pairs])
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(cos), size=(2000, 2))
    random = np.mean([cos.iat[i, j] for i, j in idx if i != j])
    assert linked > random + 0.2


def test_sources_cover_different_genes(bundle):
    string = set(pd.read_csv(bundle / src.STRING_INFO, sep="\t", compression="gzip")["preferred_name"])
    screen = set(pd.read_parquet(bundle / src.SCREEN_PARQUET)["gene"])
    reactome = {g for line in (bundle / src.REACTOME_GMT).read_text().splitlines() for g in line.split("\t")[2:]}
    assert string != screen and screen != reactome and string != reactome
    assert len(string | screen | reactome) > max(len(string), len(screen), len(reactome))


# ---------------------------------------------------------------------- the screen
def test_anndata_layout(screen):
    assert list(screen.obs.columns[:3]) == ["perturbation", "batch", "cell_line"]
    labels = set(screen.obs["perturbation"].astype(str))
    singles = {p for p in labels if p != "ctrl" and "+" not in p}
    doubles = {p for p in labels if "+" in p}
    assert "ctrl" in labels and len(singles) == 24 and len(doubles) == 10
    assert all(set(d.split("+")) <= singles for d in doubles)
    assert singles <= set(screen.var_names)
    counts = screen.obs.groupby(["perturbation", "batch"], observed=False).size().unstack()
    assert (counts > 0).all().all(), "every condition is in every batch"
    assert screen.obs["cell_line"].nunique() == 1
    assert screen.shape == (240 + 34 * 60, 150)


def test_counts_are_raw_integers(screen):
    x = screen.X
    assert x.dtype == np.float32
    data = x.data if hasattr(x, "data") else np.asarray(x).ravel()
    assert np.all(data >= 0) and np.all(data == np.round(data))
    per_cell = np.asarray(x.sum(axis=1)).ravel()
    assert 1000 < np.median(per_cell) < 10000
    assert per_cell.std() / per_cell.mean() > 0.15, "library sizes vary between cells"


def test_counts_are_overdispersed(screen):
    x = screen.X.toarray()
    ctrl = x[(screen.obs["perturbation"] == "ctrl").to_numpy() & (screen.obs["batch"] == "batch1").to_numpy()]
    lib = ctrl.sum(axis=1, keepdims=True)
    scaled = ctrl / lib * np.median(lib)
    mean, var = scaled.mean(axis=0), scaled.var(axis=0)
    high = mean > 20
    assert np.median(var[high] / mean[high]) > 2, "negative binomial, not Poisson"


def test_batch_effects_are_present(screen, lognorm):
    ctrl = (screen.obs["perturbation"] == "ctrl").to_numpy()
    batch = screen.obs["batch"].to_numpy()
    means = np.stack([lognorm[ctrl & (batch == b)].mean(axis=0) for b in ("batch1", "batch2", "batch3")])
    between = np.mean((means[0] - means[1]) ** 2)
    cells = np.flatnonzero(ctrl & (batch == "batch1"))
    rng = np.random.default_rng(0)
    halves = rng.permutation(cells)
    half = len(halves) // 2
    within = np.mean((lognorm[halves[:half]].mean(axis=0) - lognorm[halves[half:2 * half]].mean(axis=0)) ** 2)
    assert between > 3 * within


def test_target_genes_are_knocked_down(screen, lognorm):
    singles = [p for p in screen.obs["perturbation"].cat.categories if p != "ctrl" and "+" not in p]
    genes = list(screen.var_names)
    own = np.array([mean_delta(screen, lognorm, p)[genes.index(p)] for p in singles])
    assert np.mean(own < -0.2) > 0.8


def test_effects_propagate_to_network_neighbours(screen, lognorm, truth):
    net, _ = truth
    genes = list(screen.var_names)
    singles = [p for p in screen.obs["perturbation"].cat.categories if p != "ctrl" and "+" not in p]
    ratios = []
    near_all, far_all = [], []
    for p in singles:
        delta = np.abs(mean_delta(screen, lognorm, p))
        near = set(net.loc[net["source"] == p, "target"]) - {p}
        linked = near | set(net.loc[net["target"] == p, "source"]) | {p}
        far = [g for g in genes if g not in linked]
        if not near:
            continue
        near_all.append(delta[[genes.index(g) for g in near]].mean())
        far_all.append(delta[[genes.index(g) for g in far]].mean())
        ratios.append(near_all[-1] / far_all[-1])
    near_all, far_all = np.array(near_all), np.array(far_all)
    assert len(ratios) >= 15
    assert np.mean(near_all > far_all) > 0.75
    assert np.median(ratios) > 1.5
    # a paired sign test: the chance of this many "near > far" under no effect is tiny
    from scipy.stats import binomtest

    assert binomtest(int((near_all > far_all).sum()), len(near_all), 0.5, alternative="greater").pvalue < 1e-3


def test_measured_effects_match_the_truth(screen, lognorm, bundle):
    effects = pd.read_csv(bundle / TRUTH_EFFECTS, sep="\t").set_index("perturbation").drop(columns="cell_line")
    r = [np.corrcoef(mean_delta(screen, lognorm, p), effects.loc[p].to_numpy())[0, 1] for p in effects.index if p != "ctrl"]
    assert np.median(r) > 0.5


def test_doubles_are_roughly_additive(screen, lognorm):
    doubles = [p for p in screen.obs["perturbation"].cat.categories if "+" in p]
    singles = [p for p in screen.obs["perturbation"].cat.categories if p != "ctrl" and "+" not in p]
    rng = np.random.default_rng(0)
    additive, control = [], []
    for d in doubles:
        a, b = d.split("+")
        obs = mean_delta(screen, lognorm, d)
        additive.append(np.corrcoef(obs, mean_delta(screen, lognorm, a) + mean_delta(screen, lognorm, b))[0, 1])
        x, y = rng.choice([s for s in singles if s not in (a, b)], size=2, replace=False)
        control.append(np.corrcoef(obs, mean_delta(screen, lognorm, x) + mean_delta(screen, lognorm, y))[0, 1])
    assert np.median(additive) > 0.6
    assert np.median(additive) > np.median(control) + 0.4


def test_two_cell_lines_share_part_of_their_responses():
    net = make_network(120, seed=3)
    config = PerturbSeqConfig(n_singles=15, n_doubles=2, cells_per_perturbation=5, n_batches=2, n_cell_lines=2)
    sim = simulate_perturbseq(net, seed=4, config=config)
    assert set(sim.adata.obs["cell_line"]) == {"CL1", "CL2"}
    r = [np.corrcoef(sim.effects[("CL1", p)], sim.effects[("CL2", p)])[0, 1] for p in sim.singles]
    assert 0.3 < np.median(r) < 0.999, "responses partly shared, partly different"
    assert any(not np.allclose(sim.effects[("CL1", p)], sim.effects[("CL2", p)]) for p in sim.singles)


def test_part_seeds_are_distinct():
    seeds = {part_seed(0, p) for p in ("network", "string", "go", "reactome", "screen", "perturbseq")}
    assert len(seeds) == 6


# ---------------------------------------------------------------------- command line
def test_cli_simulate_writes_everything(tmp_path):
    res = CliRunner().invoke(txpert_main, ["simulate", "-o", str(tmp_path), "--seed", "2", "--genes", "60",
                                           "--singles", "10", "--doubles", "3", "--cells-per-perturbation", "8",
                                           "--batches", "2", "--cell-lines", "2"])
    assert res.exit_code == 0, res.output
    import json

    manifest = json.loads((tmp_path / MANIFEST).read_text())
    for rel in manifest["files"].values():
        assert (tmp_path / rel).is_file(), rel
    assert manifest["perturbseq"]["cells"] == 2 * (32 + 13 * 8)
    assert "perturbseq.h5ad" in res.output
    assert not list(tmp_path.rglob("*.part")), "no temporary files left behind"


def test_cli_simulate_rejects_impossible_sizes(tmp_path):
    res = CliRunner().invoke(txpert_main, ["simulate", "-o", str(tmp_path), "--genes", "50", "--singles", "5",
                                           "--doubles", "11"])
    assert res.exit_code == 1
    assert "--doubles must be between 0 and 10" in res.output
    assert not (tmp_path / PERTURBSEQ).exists()


def test_cli_simulate_help_teaches():
    res = CliRunner().invoke(txpert_main, ["simulate", "--help"])
    assert res.exit_code == 0 and "txpert simulate -o sim" in res.output
