"""``make demo`` (txpert_head.cli.demo) and its report writer (txpert_head.reporting.report)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest

from txpert_head.cli import demo
from txpert_head.reporting.report import ablation_blocks, build_blocks, mean_sd, to_html, to_markdown, write_report


def tiny_png(path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1])
    fig.savefig(path)
    plt.close(fig)
    return path.name if path.parent.name == "" else str(path.relative_to(path.parents[1]))


def fake_result(out: Path) -> dict:
    for name in ("degree.png", "lc.png", "pvg.png", "pvt.png", "ab.png"):
        tiny_png(out / "figs" / name)
    return {
        "title": "demo | test", "mode": "simulated", "data": "`sim`", "started": "2026-01-01 00:00:00 UTC",
        "wall_seconds": 123.4,
        "commands": [{"step": "simulate", "command": "txpert simulate -o sim", "seconds": 1.5},
                     {"step": "train", "command": "txpert train --graph g.kg.npz -o runs/a", "seconds": 60.0}],
        "graph": {"path": "graphs/multi.kg.npz", "summary_text": "10 nodes, 20 edges", "degree_plot": "figs/degree.png"},
        "runs": [{"name": "unseen_single", "dataset": "sim", "task": "unseen_single", "run_dir": "runs/a",
                  "model": {"pearson_delta": 0.41, "retrieval": 0.8, "mse": 0.01, "n_perturbations": 38},
                  "baselines": {"general": {"pearson_delta": 0.13, "retrieval": 0.5, "mse": 0.02,
                                            "n_perturbations": 38},
                                "linear": {"pearson_delta": 0.21, "retrieval": 0.6, "mse": 0.02,
                                           "n_perturbations": 38},
                                "split_half": {"pearson_delta": float("nan"), "retrieval": None, "mse": 0.003}},
                  "subgroups": {}, "best_epoch": 7, "train_seconds": 50.0,
                  "prior_fit": {"loss_before": 40.0, "loss_after": 38.0, "kappa": 0.53, "beta_string": 1.03,
                                "beta_go": 0.47},
                  "paired": {"general": {"difference": 0.28, "ci_low": 0.2, "ci_high": 0.35, "level": 0.95,
                                         "p_value": 0.0001, "wins": 30, "n": 38}},
                  "plots": {"learning_curves": "figs/lc.png", "pearson_vs_general": "figs/pvg.png",
                            "predicted_vs_true": "figs/pvt.png"}}],
        "ablation": {"task": "unseen_single", "seeds": [0, 1], "general": [0.12, 0.14], "linear": [0.2, 0.22],
                     "plot": "figs/ab.png",
                     "graphs": [{"name": "original", "path": "graphs/multi.kg.npz", "pearson_delta": [0.40, 0.42],
                                 "graph_neighbours": [0.5, 0.6], "linear_graph": [0.3, 0.3]},
                                {"name": "rewire 1.0", "path": "graphs/rw.kg.npz", "pearson_delta": [0.30, 0.34],
                                 "graph_neighbours": [0.04, 0.02], "linear_graph": [0.1, 0.1]}]},
        "checks": [{"name": "model above general", "passed": True, "detail": "0.41 vs 0.13"},
                   {"name": "rewired below original", "passed": False, "detail": "x"}],
    }


def test_report_writer_renders_every_section_in_markdown_and_html(tmp_path):
    result = fake_result(tmp_path)
    paths = write_report(result, tmp_path)
    assert sorted(p.name for p in paths) == ["report.html", "report.md"]
    md = (tmp_path / "report.md").read_text()
    for heading in ("# demo | test", "## Commands run", "## Graph", "## TxPert on sim: unseen_single",
                    "## Graph ablation", "## Timings"):
        assert heading in md
    assert "txpert simulate -o sim    # 1.5 s" in md
    assert "| TxPert (this run) | 0.410 | 0.800 | 0.010 | 38 |" in md
    assert "| general baseline | 0.130 | 0.500 | 0.020 | 38 |" in md
    assert "| split-half (experimental ceiling) | - | - | 0.003 | - |" in md  # NaN / None shown as '-'
    assert "| general baseline | +0.280 | [+0.200, +0.350] | 30/38 | 0.0001 |" in md
    assert "| original | `graphs/multi.kg.npz` | 0.410 ± 0.014 | 0.400 / 0.420 | 0.550 ± 0.071 | 0.300 ± 0.000 |" in md
    assert "| linear (Ahlmann-Eltze et al. 2025) | 0.210 | 0.600 | 0.020 | 38 |" in md
    assert "| linear baseline (no graph) | - | 0.210 ± 0.014 | 0.200 / 0.220 | - | - |" in md
    assert "layer trust string 1, go 0.47; shrinkage towards the mean change 0.53" in md
    assert "## Results" in md and "1 of 2 checks passed." in md
    assert "| ✓ pass | model above general | 0.41 vs 0.13 |" in md and "| ✗ FAIL | rewired below original | x |" in md
    assert "PASS:" not in md and "FAIL:" not in md
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(images) == 5 and all((tmp_path / p).is_file() for p in images)
    html = (tmp_path / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<title>demo | test</title>" in html
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert len(srcs) == len(images) and all(src.startswith("data:image/png;base64,") for src in srcs)
    assert "<strong>simulated</strong>" in html and "<code>sim</code>" in html
    assert "demo \\| test" not in html


class _Links(HTMLParser):
    """Every URL-bearing attribute and every <img> of a page."""

    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.images: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "poster", "action", "background") and value is not None:
                self.refs.append((tag, name, value))
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")


def test_report_html_is_one_shareable_file(tmp_path):
    """report.html copied ALONE to another folder still has every figure: no external reference, each
    <img> a base64 PNG that decodes and reads, as many images as the report has figures."""
    import base64
    import io
    import shutil

    import matplotlib.image

    out = tmp_path / "out"
    result = fake_result(out)
    write_report(result, out)
    n_figures = len(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (out / "report.md").read_text()))
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    shutil.copy(out / "report.html", alone / "report.html")
    assert [p.name for p in alone.iterdir()] == ["report.html"]
    page = (alone / "report.html").read_text(encoding="utf-8")
    parser = _Links()
    parser.feed(page)
    assert "link" not in parser.tags and "script" not in parser.tags and "iframe" not in parser.tags
    assert "http://" not in page and "https://" not in page and "url(" not in page
    external = [r for r in parser.refs if not r[2].startswith("data:image/png;base64,")]
    assert not external, external
    assert len(parser.images) == n_figures == 5
    for src in parser.images:
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        img = matplotlib.image.imread(io.BytesIO(data), format="png")
        assert img.ndim == 3 and img.shape[0] > 10 and img.shape[1] > 10
    # the commands block wraps instead of scrolling sideways
    style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    assert re.search(r"pre\{[^}]*white-space:pre-wrap[^}]*word-break:break-all", style)
    assert "overflow-x:auto" not in style
    assert '<td class="pass">✓ pass</td><td>model above general</td>' in page
    assert '<td class="fail">✗ FAIL</td>' in page


def double_run() -> dict:
    same = {"pearson_delta": 0.936, "retrieval": 0.9, "mse": 0.004, "n_perturbations": 6}
    return {"name": "double", "dataset": "sim", "task": "double", "run_dir": "runs/d",
            "model": {"pearson_delta": 0.95, "retrieval": 0.92, "mse": 0.003, "n_perturbations": 6},
            "subgroups": {"seen2": {"pearson_delta": 0.95, "retrieval": 0.92, "mse": 0.003, "n_perturbations": 6}},
            "baselines": {"general": dict(same), "additive": dict(same), "graph_neighbours": dict(same),
                          "linear": {"pearson_delta": 0.5, "retrieval": 0.6, "mse": 0.01, "n_perturbations": 6}},
            "best_epoch": 3, "train_seconds": 10.0, "plots": {}}


def test_report_explains_rows_that_look_like_copies(tmp_path):
    """Doubles: general = additive = graph_neighbours gets a one-line reason; a subgroup that is the whole
    test set is not printed; identical ablation rows get a note."""
    result = fake_result(tmp_path)
    result["runs"].append(double_run())
    result["ablation"]["graphs"].insert(1, {"name": "rewire 0.5", "path": "graphs/rw5.kg.npz",
                                            "pearson_delta": [0.30, 0.34], "graph_neighbours": [0.2, 0.3],
                                            "linear_graph": [0.1, 0.1]})
    md = to_markdown(build_blocks(result))
    double = md.split("## TxPert on sim: double")[1].split("## ")[0]
    assert "| TxPert (this run) | 0.950 |" in double
    assert "TxPert, seen2" not in double
    assert "Subgroup `seen2` (both genes trained) is the whole test set (6 perturbations)" in double
    assert double.count("| 0.936 | 0.900 | 0.004 | 6 |") == 3
    assert ("Identical rows (general baseline = additive baseline = graph neighbours (no training)) are expected: "
            "every test double has both genes trained as singles") in double
    assert "sum of the two measured single changes" in double
    assert "Identical rows" not in md.split("## TxPert on sim: double")[0]  # the singles run has none
    ablation = md.split("## Graph ablation")[1]
    assert "Note: rewire 0.5 and rewire 1.0 give identical TxPert Pearson Δ for every seed" in ablation
    assert "0.250 ± 0.071 vs 0.030 ± 0.014" in ablation  # their graphs differ: not a copied row
    # a subgroup smaller than the test set keeps its row; unequal baselines get no note
    run = double_run()
    run["subgroups"]["seen2"]["n_perturbations"] = 4
    run["baselines"]["additive"]["pearson_delta"] = 0.9
    run["baselines"]["graph_neighbours"]["pearson_delta"] = 0.8
    from txpert_head.reporting.report import metrics_notes, metrics_table

    assert any(row[0] == "TxPert, seen2" for row in metrics_table(run)[2])
    assert metrics_notes(run) == []


def test_report_writer_refuses_missing_images_and_writes_nothing(tmp_path):
    result = fake_result(tmp_path)
    result["runs"][0]["plots"]["learning_curves"] = "figs/nope.png"
    with pytest.raises(FileNotFoundError, match="figs/nope.png"):
        write_report(result, tmp_path)
    assert not (tmp_path / "report.md").exists() and not (tmp_path / "report.html").exists()
    assert not list(tmp_path.glob(".report*"))


def test_report_helpers():
    assert mean_sd([0.4, 0.42]) == "0.410 ± 0.014"
    assert mean_sd([0.5]) == "0.500" and mean_sd([]) == "-" and mean_sd([float("nan")]) == "-"
    blocks = [("h", 1, "a <b>"), ("table", ["x|y"], [["1"]]), ("code", "<pre>")]
    assert "| x\\|y |" in to_markdown(blocks)
    html = to_html(blocks, "t")
    assert "a &lt;b&gt;" in html and "&lt;pre&gt;" in html
    with pytest.raises(ValueError, match="unknown report block"):
        to_markdown([("video", "x")])


def test_build_blocks_without_ablation_or_checks(tmp_path):
    result = fake_result(tmp_path)
    result.update(ablation=None, checks=[], notes=["a note"])
    md = to_markdown(build_blocks(result))
    assert "## Graph ablation" not in md and "PASS" not in md and "a note" in md


# ---------------------------------------------------------------------- --data layout
def make_layout(root: Path, string: str = "edges") -> None:
    files = ["go/go-basic.obo", "go/goa_human.gaf.gz", "reactome/ReactomePathways.gmt",
             "depmap/depmap_pca_gene_embeddings.parquet", "depmap/depmap_vae_gene_embeddings.parquet",
             "perturbseq/b.h5ad", "perturbseq/a.h5ad"]
    files += (["string/string_v12_dmfind_edges.tsv.gz"] if string == "edges" else
              ["string/9606.protein.links.v12.0.subset.txt.gz", "string/9606.protein.info.v12.0.subset.txt.gz"])
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_bytes(b"")


def test_find_inputs_follows_the_layout(tmp_path):
    make_layout(tmp_path)
    found = demo.find_inputs(tmp_path)
    assert found["string_edges"].name == "string_v12_dmfind_edges.tsv.gz"
    assert found["screen"].name == "depmap_vae_gene_embeddings.parquet"
    assert [p.name for p in found["datasets"]] == ["a.h5ad", "b.h5ad"]
    other = tmp_path / "other"
    make_layout(other, string="official")
    found = demo.find_inputs(other)
    assert found["string_edges"] is None and found["string_links"].name.startswith("9606.protein.links")


def test_find_inputs_names_every_missing_file(tmp_path):
    make_layout(tmp_path)
    (tmp_path / "go/goa_human.gaf.gz").unlink()
    (tmp_path / "string/string_v12_dmfind_edges.tsv.gz").unlink()
    with pytest.raises(demo.DemoError) as err:
        demo.find_inputs(tmp_path)
    msg = str(err.value)
    assert "GO annotations: go/*.gaf.gz or go/*.gaf" in msg and "string/*protein.links*" in msg
    assert "reactome" not in msg
    with pytest.raises(demo.DemoError, match="not a folder"):
        demo.find_inputs(tmp_path / "nope")


def test_demo_command_reports_a_missing_file_cleanly(tmp_path, capsys):
    make_layout(tmp_path / "data")
    (tmp_path / "data/reactome/ReactomePathways.gmt").unlink()
    assert demo.main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")]) == 1
    assert "Reactome GMT: reactome/*.gmt" in capsys.readouterr().err
    assert not (tmp_path / "out/report.md").exists()


def test_find_inputs_on_the_shared_data_folder(shared_data):
    found = demo.find_inputs(shared_data)
    assert found["string_edges"] is not None and found["go_gaf"] is not None and found["screen"] is not None
    assert {p.name for p in found["datasets"]} >= {"papalexi2021_thp1_subset.h5ad", "norman2019_k562_subset.h5ad"}


def write_h5ad(path: Path, obs: dict) -> Path:
    n = len(next(iter(obs.values())))
    adata = anndata.AnnData(np.ones((n, 3), dtype=np.float32), obs=pd.DataFrame(obs, index=[f"c{i}" for i in range(n)]))
    adata.write_h5ad(path)
    return path


def test_describe_dataset_finds_columns_labels_and_task(tmp_path):
    ds = demo.describe_dataset(write_h5ad(tmp_path / "pap.h5ad", {
        "target": ["A", "B", "non-targeting", "A"], "bio_rep": ["r1", "r2", "r1", "r2"]}))
    assert (ds.perturbation_col, ds.control, ds.batch_col, ds.cell_line_col, ds.task) == (
        "target", ["non-targeting"], "bio_rep", None, "unseen_single")
    ds = demo.describe_dataset(write_h5ad(tmp_path / "nor.h5ad", {
        "perturbation": ["A+B", "A", "control", "B"], "batch": ["1", "1", "1", "1"],
        "cell_type": ["k562", "k562", "hek", "hek"]}))
    assert (ds.control, ds.batch_col, ds.cell_line_col, ds.task) == (["control"], None, "cell_type", "double")
    with pytest.raises(demo.DemoError, match="no control label"):
        demo.describe_dataset(write_h5ad(tmp_path / "x.h5ad", {"perturbation": ["A", "B"]}))
    with pytest.raises(demo.DemoError, match="no perturbation column.*obs has guide"):
        demo.describe_dataset(write_h5ad(tmp_path / "y.h5ad", {"guide": ["A", "B"]}))


def test_graph_ablation_collects_the_training_free_graph_baselines(tmp_path):
    """With every run reused (no training), the ablation still computes graph_neighbours and linear_graph
    per graph and seed, and takes general / linear from the first graph's run."""
    from kgbuild.graph import MultiGraph
    from txpert_head.simulate.fixtures import synthetic_data, synthetic_graph

    data = synthetic_data(n_cells=600, n_genes=30, n_perts=12, seed=2, normalize=False)
    path = tmp_path / "d.h5ad"
    anndata.AnnData(data.X, obs=pd.DataFrame({"perturbation": data.condition, "batch": data.batch},
                                             index=[f"c{i}" for i in range(data.n_obs)]),
                    var=pd.DataFrame(index=data.genes)).write_h5ad(path)
    graphs = {"original": tmp_path / "g.kg.npz", "other": tmp_path / "h.kg.npz"}
    synthetic_graph(30, seed=2).save(graphs["original"])
    MultiGraph.from_edges("x", ["G1", "G2", "G3"], ["G2", "G3", "G4"], [1.0, 1.0, 1.0]).save(graphs["other"])
    ds = demo.Dataset("d", path, "perturbation", ["ctrl"], "batch", None, "unseen_single")
    rep = {"model": {"pearson_delta": 0.3}, "baselines": {"general": {"pearson_delta": 0.1},
                                                          "linear": {"pearson_delta": 0.2}}}
    reuse = {(name, seed): rep for name in graphs for seed in (0, 1)}
    ab = demo.graph_ablation(demo.Recorder(tmp_path / "out"), ds, graphs, "unseen_single", {}, [0, 1],
                             tmp_path / "runs", reuse)
    assert ab["general"] == [0.1, 0.1] and ab["linear"] == [0.2, 0.2]
    for g in ab["graphs"]:
        assert len(g["graph_neighbours"]) == 2 and len(g["linear_graph"]) == 2
        assert all(np.isfinite(g["linear_graph"]))
    md = to_markdown(ablation_blocks(ab))
    assert "linear graph baseline (no training)" in md and "| linear baseline (no graph) |" in md


def test_ablation_checks_need_the_neighbour_baseline_and_a_rewire_cost():
    ab = {"seeds": [0, 1], "general": [0.1, 0.2],
          "graphs": [{"name": "original", "pearson_delta": [0.6, 0.62], "graph_neighbours": [0.55, 0.57]},
                     {"name": "rewire 0.5", "pearson_delta": [0.59, 0.6]},
                     {"name": "rewire 1.0", "pearson_delta": [0.58, 0.57]}]}
    checks = {c["name"]: c["passed"] for c in demo.ablation_checks(ab)}
    assert checks == {"TxPert on the original graph above the general baseline": True,
                      "TxPert on the original graph at least the graph-neighbour baseline": True,
                      "rewire 0.5 graph below the original": True,
                      "rewire 1.0 graph at least 0.05 below the original": False}  # 0.035 below: not enough
    ab["graphs"][2]["pearson_delta"] = [0.5, 0.52]
    ab["graphs"][0]["graph_neighbours"] = [0.7, 0.7]
    checks = {c["name"]: c["passed"] for c in demo.ablation_checks(ab)}
    assert checks["rewire 1.0 graph at least 0.05 below the original"]
    assert not checks["TxPert on the original graph at least the graph-neighbour baseline"]


# ---------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_quick_demo_runs_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert demo.main(["--quick", "--no-doubles", "--out", "out"]) == 0
    out = tmp_path / "out"
    md = (out / "report.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(images) >= 5 and all((out / p).is_file() for p in images)
    assert (out / "report.html").is_file()
    summary = json.loads((out / "summary.json").read_text())
    steps = [c["step"] for c in summary["commands"]]
    assert steps[:8] == ["simulate", "string graph", "go graph", "reactome graph", "screen graph", "merge",
                         "rewire 0.5", "rewire 1.0"]
    assert "kgbuild merge out/graphs/string.kg.npz out/graphs/go.kg.npz" in md  # paths as typed from the cwd
    run = summary["runs"][0]
    assert run["task"] == "unseen_single" and np.isfinite(run["model"]["pearson_delta"])
    assert [g["name"] for g in summary["ablation"]["graphs"]] == ["original", "rewire 0.5", "rewire 1.0"]
    assert all(len(g["graph_neighbours"]) == 1 and np.isfinite(g["graph_neighbours"][0])
               for g in summary["ablation"]["graphs"])
    assert all(len(g["linear_graph"]) == 1 and np.isfinite(g["linear_graph"][0]) for g in summary["ablation"]["graphs"])
    assert "| TxPert (this run) |" in md and "| general baseline |" in md
    assert len(summary["checks"]) == 5  # model > general, >= neighbours, ablation: rewire 0.5, rewire 1.0
    assert "sign-flip p" in summary["checks"][0]["detail"] and "| TxPert minus |" in md
