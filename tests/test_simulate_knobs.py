"""txpert simulate's difficulty knobs (--systematic, --spread / --beta, --graph-noise, --effect-size): the
defaults reproduce the original simulator, and each knob moves the truth in the intended direction."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from txpert_head.cli.main import main as txpert_main
from txpert_head.simulate import PerturbSeqConfig, make_network, simulate_perturbseq, write_example_bundle
from txpert_head.simulate import example_sources as src
from txpert_head.simulate.bundle import MANIFEST, PERTURBSEQ, README, TRUTH_EFFECTS, TRUTH_NETWORK, TRUTH_SYSTEMATIC

TINY = PerturbSeqConfig(n_singles=6, n_doubles=2, cells_per_perturbation=4, n_batches=2, n_cell_lines=2)


def screen_config(**knobs) -> PerturbSeqConfig:
    return PerturbSeqConfig(n_singles=12, n_doubles=4, cells_per_perturbation=2, n_batches=1, n_cell_lines=2, **knobs)


@pytest.fixture(scope="module")
def net():
    return make_network(80, seed=3)


@pytest.fixture(scope="module")
def base(net):
    return simulate_perturbseq(net, seed=4, config=screen_config())


def all_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def text_sha(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha256(gzip.decompress(data) if path.suffix == ".gz" else data).hexdigest()


# ---------------------------------------------------------------------- defaults
# sha256 of the (decompressed) texts written by the simulator before the knobs existed, for
# write_example_bundle(seed=2, n_genes=40, config=TINY): the defaults must not move a single draw
ORIGINAL_SHA256 = {
    src.STRING_LINKS: "1e6c00bf61bf66ab2d4e0f4b52603923519eeecd463fec5f54b5971bfaba35bb",
    src.GO_GAF: "7585328a3e3b1adebedf914ebbe883c4c89d2cddb12e9848557d78d9a952d303",
    src.REACTOME_GMT: "f76e332ffd8157cd9758605a26cf81bbf9445e5b33a01b77df30a2fa8834487a",
    TRUTH_NETWORK: "3e99664e35d34e76e09a82cdea83b587e45ad55a852761abd979174fc6c351c1",
}


def test_default_knobs_reproduce_the_original_source_files(tmp_path):
    write_example_bundle(tmp_path, seed=2, n_genes=40, config=TINY)
    for rel, sha in ORIGINAL_SHA256.items():
        assert text_sha(tmp_path / rel) == sha, f"{rel} changed at the default settings"


def test_explicit_default_knobs_give_identical_bytes(tmp_path):
    a, b = tmp_path / "implicit", tmp_path / "explicit"
    write_example_bundle(a, seed=2, n_genes=40, config=TINY)
    res = CliRunner().invoke(txpert_main, [
        "simulate", "-o", str(b), "--seed", "2", "--genes", "40", "--singles", "6", "--doubles", "2",
        "--cells-per-perturbation", "4", "--batches", "2", "--cell-lines", "2",
        "--systematic", "0", "--spread", "3", "--beta", "0.8", "--graph-noise", "1", "--effect-size", "1"])
    assert res.exit_code == 0, res.output
    assert "knobs:" not in res.output, "the default run prints what it always printed"
    first, second = all_files(a), all_files(b)
    assert sorted(first) == sorted(second)
    assert TRUTH_SYSTEMATIC not in first, "no systematic truth file without a systematic response"
    for name in first:
        assert first[name] == second[name], name


def test_default_h5ad_records_no_new_knobs(tmp_path):
    import anndata as ad

    write_example_bundle(tmp_path, seed=2, n_genes=40, config=TINY)
    recorded = json.loads(ad.read_h5ad(tmp_path / PERTURBSEQ).uns["simulation"])
    assert "systematic" not in recorded and "effect_size" not in recorded
    assert recorded["steps"] == 3 and recorded["beta"] == 0.8


def test_knobs_are_recorded_in_manifest_readme_and_h5ad(tmp_path):
    import anndata as ad

    res = CliRunner().invoke(txpert_main, [
        "simulate", "-o", str(tmp_path), "--genes", "40", "--singles", "6", "--doubles", "2",
        "--cells-per-perturbation", "4", "--systematic", "1.5", "--spread", "2", "--beta", "0.6",
        "--graph-noise", "2", "--effect-size", "0.5"])
    assert res.exit_code == 0, res.output
    assert "knobs: systematic 1.5, spread 2, beta 0.6, graph-noise 2.0, effect-size 0.5" in res.output
    m = json.loads((tmp_path / MANIFEST).read_text())
    assert m["knobs"] == {"systematic": 1.5, "spread": 2, "beta": 0.6, "graph_noise": 2.0, "effect_size": 0.5}
    assert m["perturbseq"]["steps"] == 2 and m["perturbseq"]["systematic"] == 1.5
    assert m["source_noise"]["string_false_fraction"] == 0.5
    assert m["files"]["truth_systematic"] == TRUTH_SYSTEMATIC and (tmp_path / TRUTH_SYSTEMATIC).is_file()
    readme = (tmp_path / README).read_text()
    for row in ("| `--systematic` | 1.5 |", "| `--spread` | 2 |", "| `--beta` | 0.6 |", "| `--graph-noise` | 2.0 |",
                "| `--effect-size` | 0.5 |"):
        assert row in readme, row
    recorded = json.loads(ad.read_h5ad(tmp_path / PERTURBSEQ).uns["simulation"])
    assert recorded["systematic"] == 1.5 and recorded["effect_size"] == 0.5 and recorded["steps"] == 2


# ---------------------------------------------------------------------- --systematic
def test_systematic_response_dominates_the_mean_perturbation(net, base):
    sim = simulate_perturbseq(net, seed=4, config=screen_config(systematic=2.0))
    for line in sim.cell_lines:
        v = sim.systematic_direction[line]
        assert abs(v.mean()) < 1e-9 and v.std() == pytest.approx(1.0)
        perturbed = [c for (cl, c) in sim.effects if cl == line and c != "ctrl"]
        mean_now = np.mean([sim.effects[(line, c)] for c in perturbed], axis=0)
        mean_before = np.mean([base.effects[(line, c)] for c in perturbed], axis=0)
        assert np.corrcoef(mean_now, v)[0, 1] > 0.9
        assert abs(np.corrcoef(mean_before, v)[0, 1]) < 0.5
    a, b = sim.systematic_direction.values()
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.5, "each cell line has its own systematic response"


def test_systematic_response_is_added_on_top_of_unchanged_draws(net, base):
    sim = simulate_perturbseq(net, seed=4, config=screen_config(systematic=1.0))
    assert sim.singles == base.singles and sim.doubles == base.doubles
    assert sim.systematic_weight == base.systematic_weight, "a_p does not depend on S"
    genes = list(net.genes)
    # CL1 only: the network of a further cell line is drawn after CL1's counts, which change with any knob
    for (line, cond), d in sim.effects.items():
        if line != "CL1":
            continue
        if cond == "ctrl":
            assert not d.any()
            continue
        np.testing.assert_allclose(d - sim.systematic[(line, cond)], base.effects[(line, cond)], atol=1e-12)
        weight = sim.systematic_weight[cond]
        targets = [genes.index(t) for t in cond.split("+")]
        expected = weight * sim.systematic_direction[line]
        expected[targets] = 0.0
        np.testing.assert_allclose(sim.systematic[(line, cond)], expected, atol=1e-12)
        assert np.all(d[targets] == base.effects[(line, cond)][targets]), "targets keep their knock-down"
    for d in sim.doubles:
        x, y = d.split("+")
        assert sim.systematic_weight[d] == pytest.approx(sim.systematic_weight[x] + sim.systematic_weight[y])
    assert all(0.5 <= sim.systematic_weight[s] <= 1.5 for s in sim.singles)


def test_systematic_truth_file(tmp_path):
    write_example_bundle(tmp_path, seed=2, n_genes=40, config=PerturbSeqConfig(
        n_singles=6, n_doubles=2, cells_per_perturbation=4, systematic=1.0))
    sys_part = pd.read_csv(tmp_path / TRUTH_SYSTEMATIC, sep="\t").set_index(["cell_line", "perturbation"])
    effects = pd.read_csv(tmp_path / TRUTH_EFFECTS, sep="\t").set_index(["cell_line", "perturbation"])
    assert list(sys_part.columns) == list(effects.columns)
    assert list(sys_part.index) == [ix for ix in effects.index if ix[1] != "ctrl"]
    rows = sys_part.to_numpy()
    direction = rows[0] / np.linalg.norm(rows[0])
    assert all(abs(np.dot(r / np.linalg.norm(r), direction)) > 0.9 for r in rows), "one shared direction"


# ---------------------------------------------------------------------- --spread / --beta
def affected_genes(sim) -> float:
    return float(np.mean([(np.abs(sim.effects[("CL1", p)]) > 0.05).sum() for p in sim.singles]))


def test_spread_sets_how_far_effects_travel(net, base):
    counts = {k: affected_genes(simulate_perturbseq(net, seed=4, config=screen_config(steps=k))) for k in (0, 1, 4)}
    assert counts[0] == 1, "spread 0: only the target changes"
    assert counts[1] < counts[4]
    assert counts[4] > 1.5 * counts[1]
    assert affected_genes(base) > counts[1]


def test_beta_damps_the_spread(net):
    weak = simulate_perturbseq(net, seed=4, config=screen_config(beta=0.2))
    strong = simulate_perturbseq(net, seed=4, config=screen_config(beta=1.0))
    assert affected_genes(weak) < affected_genes(strong)


# ---------------------------------------------------------------------- --effect-size
def test_effect_size_scales_the_off_target_effects(net, base):
    genes = list(net.genes)
    for size in (0.0, 0.5, 2.0):
        sim = simulate_perturbseq(net, seed=4, config=screen_config(effect_size=size))
        for p in sim.singles:  # CL1: the network of CL2 is drawn after CL1's counts
            d, d0 = sim.effects[("CL1", p)], base.effects[("CL1", p)]
            off = np.arange(len(genes)) != genes.index(p)
            np.testing.assert_allclose(d[off], size * d0[off], atol=1e-12)
            assert d[genes.index(p)] == d0[genes.index(p)], "the knock-down of the target stays"
    flat = simulate_perturbseq(net, seed=4, config=screen_config(effect_size=0.0))
    assert affected_genes(flat) == 1


# ---------------------------------------------------------------------- --graph-noise
def string_pair_truth(folder: Path) -> tuple[np.ndarray, pd.DataFrame]:
    """Per STRING line: is it a true pair; plus the info table."""
    info = pd.read_csv(folder / src.STRING_INFO, sep="\t", compression="gzip")
    sym = dict(zip(info["#string_protein_id"], info["preferred_name"]))
    links = pd.read_csv(folder / src.STRING_LINKS, sep=" ", compression="gzip")
    net = pd.read_csv(folder / TRUTH_NETWORK, sep="\t")
    true_pairs = {frozenset(p) for p in zip(net["source"], net["target"])}
    pairs = zip(links["protein1"], links["protein2"])
    return np.array([frozenset((sym[a], sym[b])) in true_pairs for a, b in pairs]), info


@pytest.fixture(scope="module")
def noise_bundles(tmp_path_factory) -> dict[float, tuple[Path, dict]]:
    config = PerturbSeqConfig(n_singles=4, n_doubles=1, cells_per_perturbation=2, n_batches=1)
    out = {}
    for level in (0.0, 1.0, 2.0):
        folder = tmp_path_factory.mktemp(f"noise{level}")
        out[level] = (folder, write_example_bundle(folder, seed=6, n_genes=100, config=config, graph_noise=level))
    return out


def test_graph_noise_zero_gives_clean_complete_views(noise_bundles):
    folder, manifest = noise_bundles[0.0]
    is_true, info = string_pair_truth(folder)
    assert is_true.all(), "no false STRING pairs"
    assert manifest["sources"]["string"]["false_pairs"] == 0
    assert len(info) == 100, "STRING covers every gene"
    net = pd.read_csv(folder / TRUTH_NETWORK, sep="\t")
    assert len(is_true) == 2 * len({frozenset(p) for p in zip(net["source"], net["target"])}), "every true pair"
    assert manifest["sources"]["go"]["not_lines"] == 0 and manifest["sources"]["go"]["annotated_genes"] == 100
    assert len(pd.read_parquet(folder / src.SCREEN_PARQUET)) == 100
    assert not any("small-complex" in line for line in (folder / src.REACTOME_GMT).read_text().splitlines())


def test_graph_noise_makes_the_sources_noisier(noise_bundles):
    false_share, proteins, screen_genes = [], [], []
    for level in (0.0, 1.0, 2.0):
        folder, manifest = noise_bundles[level]
        is_true, info = string_pair_truth(folder)
        false_share.append(1 - is_true.mean())
        proteins.append(len(info))
        screen_genes.append(manifest["sources"]["screen"]["genes"])
    assert false_share[0] == 0 < false_share[1] < false_share[2]
    assert proteins[0] > proteins[1] > proteins[2]
    assert screen_genes[0] > screen_genes[1] > screen_genes[2]


def test_graph_noise_leaves_the_truth_and_screen_alone(noise_bundles):
    files = [all_files(folder) for folder, _ in noise_bundles.values()]
    for rel in (TRUTH_NETWORK, TRUTH_EFFECTS, PERTURBSEQ):
        assert files[0][rel] == files[1][rel] == files[2][rel], rel


def test_source_noise_scaling():
    assert src.SourceNoise.scaled(1.0) == src.SourceNoise()
    clean = src.SourceNoise.scaled(0.0)
    assert clean.string_coverage == clean.string_recall == clean.reactome_member_min == 1.0
    assert clean.string_false_fraction == clean.go_wrong_fraction == clean.screen_noise == 0.0
    noisy = src.SourceNoise.scaled(2.0)
    assert noisy.string_false_fraction == 0.5 and noisy.string_recall == pytest.approx(0.5625)
    assert src.SourceNoise.scaled(30.0).go_wrong_fraction == 1.0, "probabilities are capped at 1"
    assert src.SourceNoise().kwargs("string") == {"coverage": 0.85, "recall": 0.75, "false_fraction": 0.25,
                                                  "score_sd": 80.0}


# ---------------------------------------------------------------------- validation
@pytest.mark.parametrize("args, message, code", [
    (["--systematic", "-1"], "--systematic", 2),  # out of range: click's usage error
    (["--spread", "-1"], "--spread", 2),
    (["--beta", "1.5"], "--beta", 2),
    (["--graph-noise", "-0.5"], "--graph-noise", 2),
    (["--effect-size", "-2"], "--effect-size", 2),
    (["--systematic", "nan"], "--systematic must be a finite number >= 0", 1),  # not finite: the library's error
    (["--effect-size", "inf"], "--effect-size must be a finite number >= 0", 1),
    (["--graph-noise", "nan"], "--graph-noise must be a finite number >= 0", 1),
])
def test_cli_rejects_bad_knobs(tmp_path, args, message, code):
    res = CliRunner().invoke(txpert_main, ["simulate", "-o", str(tmp_path), "--genes", "20", "--singles", "3",
                                           "--doubles", "0", *args])
    assert res.exit_code == code, res.output
    assert message in res.output
    assert not (tmp_path / PERTURBSEQ).exists()


@pytest.mark.parametrize("knobs, message", [
    (dict(systematic=-0.1), "--systematic"),
    (dict(effect_size=math.nan), "--effect-size"),
    (dict(steps=-1), "--spread"),
    (dict(steps=1.5), "--spread"),
    (dict(beta=-0.1), "--beta"),
    (dict(beta=math.inf), "--beta"),
])
def test_config_validation_names_the_option(knobs, message):
    with pytest.raises(ValueError, match=message):
        PerturbSeqConfig(n_singles=3, n_doubles=0, **knobs).validate(20)


def test_graph_noise_validation():
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="--graph-noise"):
            src.SourceNoise.scaled(bad)
