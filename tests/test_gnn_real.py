"""Every encoder runs on the real merged graph (STRING + GO + Reactome + DepMap screen) built from
``../shared/data`` with kgbuild's own builders, and embeds Norman 2019's perturbed genes."""

from __future__ import annotations

import time

import pytest
import torch

from gnn import KINDS, PerturbationEncoder
from kgbuild.graph import MultiGraph

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_graph(shared_data) -> MultiGraph:
    from kgbuild.sources import edges, go, reactome, screen

    string_t, string_m = edges.build(shared_data / "string" / "string_v12_dmfind_edges.tsv.gz", "symbol1", "symbol2",
                                     "combined_score", symmetric=True, weight_scale=1e-3, max_in_degree=20)
    go_t, go_m = go.build(shared_data / "go" / "go-basic.obo", shared_data / "go" / "goa_human.gaf.gz",
                          aspects=["P"], max_in_degree=20, progress=False)
    re_t, re_m = reactome.build(shared_data / "reactome" / "ReactomePathways.gmt", max_in_degree=20, progress=False)
    depmap = screen.build_screen_graph(shared_data / "depmap" / "depmap_pca_gene_embeddings.parquet", top_pct=1.0,
                                       layer_name="depmap", progress=False)
    graph = MultiGraph.merge([string_t.to_graph("string", string_m), go_t.to_graph("go", go_m),
                              re_t.to_graph("reactome", re_m), depmap])
    assert graph.layer_names == ["string", "go", "reactome", "depmap"]
    assert graph.num_nodes > 15_000 and graph.num_edges > 500_000
    return graph


@pytest.fixture(scope="module")
def norman_genes(shared_data) -> list[str]:
    import anndata

    obs = anndata.read_h5ad(shared_data / "perturbseq" / "norman2019_k562_subset.h5ad", backed="r").obs
    column = "perturbation" if "perturbation" in obs else "condition"
    genes = sorted({g for c in obs[column].astype(str) for g in c.split("+") if g not in ("control", "ctrl", "")})
    assert len(genes) >= 20
    return genes


@pytest.mark.parametrize("kind", list(KINDS))
def test_encoder_runs_on_real_merged_graph(real_graph, norman_genes, kind):
    torch.manual_seed(0)
    genes = norman_genes + ["NOT_A_GENE_1"]
    opts = {"num_virtual": 1, "expander_degree": 4} if kind.startswith("exphormer") else {}
    enc = PerturbationEncoder(real_graph, genes=genes, kind=kind, dim=16, layers=1, heads=2, **opts)
    t0 = time.perf_counter()
    z = enc()
    rows = enc.index(genes)
    loss = z[rows].square().mean() + (z - 1).square().mean()
    loss.backward()
    assert z.shape == (real_graph.num_nodes + 1, 16)
    assert torch.isfinite(z).all() and torch.isfinite(enc.embedding.weight.grad).all()
    assert enc.embedding.weight.grad[rows].abs().sum(1).gt(0).all()
    in_graph = [g for g in norman_genes if g in real_graph.node_lookup]
    assert len(in_graph) == len(norman_genes), "every Norman perturbation is in the merged real graph"
    print(f"{kind}: forward+backward {time.perf_counter() - t0:.2f} s on {real_graph}")
