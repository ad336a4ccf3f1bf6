"""kgbuild screen: exact top-pct |cosine| pairs (against a dense brute force), input layouts and errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from kgbuild.cli import main as kgbuild_main
from kgbuild.errors import KgbuildInputError
from kgbuild.graph import MultiGraph
from kgbuild.sources import screen as sc


# ---------------------------------------------------------------------- the dense reference
def brute_force_top_pairs(values: np.ndarray, top_pct: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense float64 reference: every |cos| of the upper triangle, sorted by (-w, i, j), first K kept."""
    v = np.asarray(values, dtype=np.float64)
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    n = len(u)
    iu, ju = np.triu_indices(n, 1)
    w = np.abs(u @ u.T)[iu, ju]
    k = int(np.ceil(len(w) * top_pct / 100 - 1e-9))
    order = np.lexsort((ju, iu, -w))[:k]
    return iu[order], ju[order], w[order]


def assert_same_pairs(rows, cols, weights, ref_rows, ref_cols, ref_w, tol=2e-6):
    """Same pair sets except for pairs tied (within float32 rounding) with the cut-off value."""
    got = dict(zip(zip(rows.tolist(), cols.tolist()), weights.tolist()))
    ref = dict(zip(zip(ref_rows.tolist(), ref_cols.tolist()), ref_w.tolist()))
    assert len(got) == len(ref)
    cut = float(ref_w[-1])
    for pair in set(got) ^ set(ref):
        w = got.get(pair, ref.get(pair))
        assert abs(w - cut) < tol, f"pair {pair} (|cos| {w}) differs from the reference, cut-off {cut}"
    for pair in set(got) & set(ref):
        assert abs(got[pair] - ref[pair]) < tol


# ---------------------------------------------------------------------- real data
@pytest.mark.parametrize("name", ["depmap_vae_gene_embeddings", "depmap_pca_gene_embeddings"])
def test_real_depmap_screen_equals_dense_brute_force(shared_data, tmp_path, name):
    path = shared_data / "depmap" / f"{name}.parquet"
    out = tmp_path / "depmap.kg.npz"

    result = CliRunner().invoke(kgbuild_main, ["screen", "--embeddings", str(path), "--top-pct", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output

    g = MultiGraph.load(out)
    df = pd.read_parquet(path).sort_values("gene")
    genes = df["gene"].to_numpy(dtype=str)
    assert g.nodes.tolist() == genes.tolist()  # every gene is a node, sorted
    ri, rj, rw = brute_force_top_pairs(df.drop(columns="gene").to_numpy(), 1.0)
    src, dst = g.edge_index
    upper = src < dst
    assert_same_pairs(src[upper], dst[upper], g.edge_weight[upper], ri, rj, rw)
    # both directions of every pair, same weight
    fwd = {(int(s), int(t)): float(w) for s, t, w in zip(src, dst, g.edge_weight)}
    assert all(fwd[(t, s)] == w for (s, t), w in fwd.items())
    assert g.num_edges == 2 * len(rw)
    entry = g.meta["layers"][name]
    assert entry["source"] == "screen" and entry["parameters"]["top_pct"] == 1.0
    assert entry["inputs"][0]["sha256"] and entry["selection"]["pairs_kept"] == len(rw)


def test_norman_h5ad_profiles_are_mean_change_vs_control(shared_data):
    import anndata

    path = shared_data / "perturbseq" / "norman2019_k562_subset.h5ad"
    table = sc.load_embeddings(path)  # obs column and control label are detected
    adata = anndata.read_h5ad(path)
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    X = np.asarray(adata.X.todense()) if hasattr(adata.X, "todense") else np.asarray(adata.X)
    singles = sorted({p for p in labels if "+" not in p and p != "control"})
    assert table.genes.tolist() == singles
    gene = singles[0]
    expected = X[labels == gene].mean(axis=0) - X[labels == "control"].mean(axis=0)
    np.testing.assert_allclose(table.values[0], expected, rtol=1e-5, atol=1e-6)
    assert table.record["obs_column"] == "perturbation" and table.record["control"] == "control"
    assert table.record["combinations_skipped"] == len({p for p in labels if "+" in p})


# ---------------------------------------------------------------------- the search itself
@pytest.mark.parametrize("seed,n,d,pct,block", [(0, 60, 5, 1.0, 7), (1, 200, 16, 0.5, 64), (2, 90, 3, 30.0, 16),
                                                (3, 40, 8, 100.0, 5), (4, 150, 32, 2.5, 1000)])
def test_top_pairs_match_brute_force(seed, n, d, pct, block):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))  # correlated features
    sel = sc.top_abs_cosine_pairs(sc.l2_normalise(x), pct, block_rows=block, progress=False)
    ri, rj, rw = brute_force_top_pairs(x, pct)
    assert_same_pairs(sel.rows, sel.cols, sel.weights, ri, rj, rw)
    assert np.all(sel.rows < sel.cols)
    assert np.all(np.diff(sel.weights) <= 0)
    assert sel.max_candidates <= 3 * len(rw) + 10  # the store stays O(K)


def test_too_high_threshold_estimate_is_recovered_exactly(monkeypatch):
    """If the sampled threshold leaves fewer than K pairs, the band below is searched again."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((120, 6))
    calls = []

    def bad_estimate(unit, fraction, **kw):
        calls.append(fraction)
        return 0.95 if len(calls) == 1 else 0.2

    monkeypatch.setattr(sc, "estimate_threshold", bad_estimate)
    sel = sc.top_abs_cosine_pairs(sc.l2_normalise(x), 5.0, block_rows=13, progress=False)
    assert sel.passes >= 2
    assert_same_pairs(sel.rows, sel.cols, sel.weights, *brute_force_top_pairs(x, 5.0))


def test_anti_correlated_profiles_are_linked():
    x = np.array([[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0], [3.0, -1.0, 0.5], [0.2, 0.1, -2.0]])
    sel = sc.top_abs_cosine_pairs(sc.l2_normalise(x), 100 / 6, progress=False)  # K = 1 of 6 pairs
    assert (sel.rows.tolist(), sel.cols.tolist()) == ([0], [1])
    assert sel.weights[0] == pytest.approx(1.0)


def test_gpu_code_path_gives_the_cpu_result():
    """The GPU branch (k-NN + CPU range fallback) run with a CPU index in place of the GPU one."""
    rng = np.random.default_rng(7)
    unit = sc.l2_normalise(rng.standard_normal((80, 6)))
    cpu = sc._block_pairs(unit, 10, 30, 0.5)
    emulated = sc._block_pairs(unit, 10, 30, 0.5, gpu_index_factory=lambda index: index, gpu_k=3)
    key = lambda r: sorted(zip(r[0].tolist(), r[1].tolist()))  # noqa: E731
    assert key(cpu) == key(emulated) and len(cpu[0]) > 0


def test_n_top_pairs_rounds_up():
    assert sc.n_top_pairs(2718, 1.0) == int(np.ceil(2718 * 2717 / 2 / 100))
    assert sc.n_top_pairs(4, 1.0) == 1 and sc.n_top_pairs(1, 50.0) == 0


# ---------------------------------------------------------------------- input layouts
def test_duplicate_rows_are_aggregated(tmp_path):
    path = tmp_path / "emb.csv"
    path.write_text("gene,f1,f2\nB,1,2\nA,0,1\nB,3,6\nB,2,10\n")
    mean = sc.load_embeddings(path)
    assert mean.genes.tolist() == ["A", "B"]
    np.testing.assert_allclose(mean.values[1], [2.0, 6.0])
    np.testing.assert_allclose(sc.load_embeddings(path, aggregate="median").values[1], [2.0, 6.0])
    np.testing.assert_allclose(sc.load_embeddings(path, aggregate="first").values[1], [1.0, 2.0])
    assert mean.record["duplicate_rows_aggregated"] == 2
    with pytest.raises(KgbuildInputError, match=r"gene 'B'.*appears in 3 lines \(2, 4, 5\)"):
        sc.load_embeddings(path, aggregate="none")


def test_depmap_crispr_gene_effect_layout(tmp_path):
    """CRISPRGeneEffect.csv style: models x genes, headers 'SYMBOL (EntrezID)', NaN where not screened."""
    path = tmp_path / "CRISPRGeneEffect.csv"
    path.write_text(
        "ModelID,TP53 (7157),A1BG (1),KRAS (3845),MYC (4609)\n"
        "ACH-000001,-0.5,0.1,-1.0,-2.0\n"
        "ACH-000002,,0.2,-0.8,\n"
        "ACH-000003,0.25,,-1.2,\n"
        "ACH-000004,0.0,0.3,-1.0,\n"
    )
    t = sc.load_embeddings(path)
    assert t.record["orientation"] == "features-by-genes"
    assert t.genes.tolist() == ["A1BG", "KRAS", "TP53"]  # MYC: 3 of 4 NaN > 0.5, dropped
    assert t.features == ["ACH-000001", "ACH-000002", "ACH-000003", "ACH-000004"]
    np.testing.assert_allclose(t.values[1], [-1.0, -0.8, -1.2, -1.0])
    np.testing.assert_allclose(t.values[2], [-0.5, -0.25 / 3, 0.25, 0.0])  # NaN -> the gene's mean
    assert t.record["nan_genes_dropped"] == 1 and t.record["nan_values_imputed"] == 2
    assert sc.load_embeddings(path, max_nan_frac=0.8).genes.tolist() == ["A1BG", "KRAS", "MYC", "TP53"]


def test_explicit_features_by_genes_orientation(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("sample\tG1\tG2\tG3\ns1\t1\t0\t1\ns2\t0\t1\t1\n")
    t = sc.load_embeddings(path, orientation="features-by-genes")
    assert t.genes.tolist() == ["G1", "G2", "G3"] and t.values.shape == (3, 2)
    assert sc.load_embeddings(path).record["orientation"] == "genes-by-features"  # no DepMap headers


def test_h5ad_genes_by_features(tmp_path):
    import anndata

    X = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=np.float32)
    adata = anndata.AnnData(X=X, obs=pd.DataFrame(index=["G2", "G1", "G3"]), var=pd.DataFrame(index=["a", "b"]))
    path = tmp_path / "emb.h5ad"
    adata.write_h5ad(path)
    t = sc.load_embeddings(path)
    assert t.genes.tolist() == ["G1", "G2", "G3"]
    np.testing.assert_allclose(t.values, [[0, 2], [1, 0], [1, 1]])


def test_imputation_by_feature_mean_when_asked(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("gene,f1,f2\nA,1,\nB,3,4\nC,5,8\nD,,\n")
    t = sc.load_embeddings(path, max_nan_frac=0.5)
    assert t.genes.tolist() == ["A", "B", "C"]  # D is all NaN
    np.testing.assert_allclose(t.values[0], [1.0, 6.0])


# ---------------------------------------------------------------------- errors
def test_nan_is_an_error_naming_gene_column_and_line(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("gene,f1,f2\nA,1,2\nB,3,\n")
    with pytest.raises(KgbuildInputError, match=r"line 3, column 'f2', gene 'B': NaN.*`max_nan_frac=F`"):
        sc.load_embeddings(path)


def test_inf_is_always_an_error(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("gene,f1,f2\nA,1,2\nB,inf,1\n")
    with pytest.raises(KgbuildInputError, match=r"column 'f1', gene 'B': an infinite value"):
        sc.load_embeddings(path, max_nan_frac=0.5)


def test_missing_gene_column_lists_the_columns(tmp_path):
    path = tmp_path / "e.parquet"
    pd.DataFrame({"symbol": ["A", "B"], "x": [1.0, 2.0]}).to_parquet(path)
    with pytest.raises(KgbuildInputError, match=r"no column 'gene'; the columns are: symbol, x"):
        sc.load_embeddings(path, gene_column="gene")
    numeric_only = tmp_path / "n.csv"
    numeric_only.write_text("a,b\n1,2\n3,4\n")
    with pytest.raises(KgbuildInputError, match="no gene column.*`gene_column`"):
        sc.load_embeddings(numeric_only)


def test_empty_and_non_numeric_tables(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("gene,f1\n")
    with pytest.raises(KgbuildInputError, match="empty table"):
        sc.load_embeddings(empty)
    bad = tmp_path / "bad.csv"
    bad.write_text("gene,f1,f2\nA,1,2\nB,x7,3\n")
    with pytest.raises(KgbuildInputError, match=r"line 3, column 'f1': value 'x7' is not a number"):
        sc.load_embeddings(bad, gene_column="gene")


def test_cli_error_exits_1_and_writes_nothing(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("gene,f1,f2\nA,1,2\nA,3,4\nB,1,1\n")
    out = tmp_path / "o.kg.npz"
    result = CliRunner().invoke(kgbuild_main, ["screen", "--embeddings", str(path), "--aggregate", "none",
                                               "-o", str(out)])
    assert result.exit_code == 1 and "gene 'A'" in result.output and "Traceback" not in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == [path]
    one_gene = tmp_path / "one.csv"
    one_gene.write_text("gene,f1\nA,1\n")
    result = CliRunner().invoke(kgbuild_main, ["screen", "--embeddings", str(one_gene), "-o", str(out)])
    assert result.exit_code == 1 and "no pairs" in result.output and not out.exists()


def test_cli_max_in_degree_and_layer_name(tmp_path):
    rng = np.random.default_rng(3)
    df = pd.DataFrame(rng.standard_normal((50, 4)), columns=[f"f{i}" for i in range(4)])
    df.insert(0, "gene", [f"G{i:02d}" for i in range(50)])
    path = tmp_path / "my_screen.tsv.gz"
    df.to_csv(path, sep="\t", index=False)
    out = tmp_path / "s.kg.npz"
    result = CliRunner().invoke(kgbuild_main, ["screen", "--embeddings", str(path), "--top-pct", "20",
                                               "--max-in-degree", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    g = MultiGraph.load(out)
    assert g.layer_names == ["my_screen"]
    assert g.in_degree().max() == 3
    uncapped = sc.build_screen_graph(path, top_pct=20)
    assert uncapped.in_degree().max() > 3
    # the capped graph keeps, per target, the heaviest incoming edges of the uncapped one
    lookup = {(int(s), int(t)): float(w) for s, t, w in zip(*uncapped.edge_index, uncapped.edge_weight)}
    for t in range(g.num_nodes):
        kept = sorted(float(w) for w in g.edge_weight[g.edge_index[1] == t])
        incoming = sorted((w for (s, tt), w in lookup.items() if tt == t), reverse=True)[: len(kept)]
        assert kept == sorted(incoming)
