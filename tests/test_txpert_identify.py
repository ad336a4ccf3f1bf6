"""txpert identify: scoring math, the model-prediction round trip, metrics, baselines and the command."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from txpert_head.cli.main import main
from txpert_files import write_cli_inputs, write_h5ad
from txpert_head.data.perturb_data import PerturbData
from txpert_head.identification.targets import build_queries, candidate_model, identify, ranking, score_candidates, select_groups
from txpert_head.identification.baselines import own_gene_scores, pca_knn_scores
from txpert_head.metrics.identification import mean_metrics, query_metrics, random_expectation, target_ranks
from txpert_head.data.splits import make_split
from txpert_head.simulate.fixtures import synthetic_data, synthetic_graph
from txpert_head.training.config import TrainConfig
from txpert_head.training.trainer import Trainer

MODES = [("none", "mean", False), ("mlp", "mean", True), ("mlp", "batch", True), ("none", "random", True),
         ("mlp", "random", False), ("none", "batch", False)]


@pytest.fixture(scope="module")
def small():
    data = synthetic_data(n_cells=600, n_genes=30, n_perts=12, n_batches=2, seed=3)
    graph = synthetic_graph(40, seed=3)  # G30..G39 are graph genes that are never measured or perturbed
    return data, graph, make_split(data, "unseen_single", seed=0)


def _trainer(small, basal, mode, target_term, graph_hops=None, **options) -> Trainer:
    data, graph, split = small
    cfg = TrainConfig(epochs=0, encoder_dim=8, hidden=16, progress=False, encoder_backend="pyg", basal=basal,
                      control_mode=mode, target_term=target_term, graph_hops=graph_hops, seed=1, **options)
    tr = Trainer(data, graph, split, cfg, None)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():  # an untrained decoder predicts the same change for every gene: give it random weights
        for p in tr.model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
        if target_term:
            tr.model.target_gain.fill_(0.5)
    tr.model.eval()
    return tr


@torch.no_grad()
def _expected_prediction(tr: Trainer, x_controls: np.ndarray, gene: str) -> np.ndarray:
    """Mean of model(x, gene) over the given control inputs (n, G) -> (G,), by direct forward."""
    row = tr.model.encoder.vocab.index(gene)
    x = torch.from_numpy(np.ascontiguousarray(x_controls, dtype=np.float32))
    p = torch.full((len(x), 1), row, dtype=torch.long)
    return tr.model(x, p).double().mean(0).numpy()


def _query_from_prediction(tr: Trainer, gene: str, per_batch: int = 3) -> PerturbData:
    """The training controls plus a group 'mystery' whose cells in batch b all equal the model's expected
    prediction for ``gene`` from that batch's control inputs (for the trainer's control mode)."""
    data = tr.data
    ctrl = np.flatnonzero(data.is_control)
    Xc = data.X[ctrl].toarray()
    rows, batches = [], []
    for b in np.unique(data.batch):
        in_b = data.batch[ctrl] == b
        mode = tr.cfg.control_mode
        if mode == "mean":
            inputs = Xc[in_b].mean(0, keepdims=True)
        elif mode == "batch":
            inputs = Xc[in_b]
        else:  # random: any control cell of the line
            inputs = Xc
        y = _expected_prediction(tr, inputs, gene)
        rows += [y] * per_batch
        batches += [b] * per_batch
    X = np.vstack([Xc, np.asarray(rows)])
    cond = np.r_[np.full(len(ctrl), "ctrl"), np.full(len(rows), "mystery")]
    batch = np.r_[data.batch[ctrl], np.asarray(batches)]
    return PerturbData(X, data.genes, cond, np.full(len(X), "all"), batch, source="<query>")


@pytest.mark.parametrize("basal,mode,target_term", MODES)
@pytest.mark.parametrize("gene", ["G2", "G25", "G33"])  # perturbed; measured but never perturbed; graph only
def test_group_made_of_a_models_prediction_ranks_that_gene_first(small, basal, mode, target_term, gene):
    tr = _trainer(small, basal, mode, target_term)
    query = _query_from_prediction(tr, gene)
    # enough control cells per batch that the Monte-Carlo inputs (basal mlp, modes batch/random) are all cells
    res = identify(tr, query, control_cells=10_000, progress=False)
    assert len(res.genes) == len(tr.model.encoder.vocab) == 40
    best = res.order[0, 0]
    assert res.genes[best] == gene
    assert res.scores[0, best] == pytest.approx(1.0, abs=1e-6)
    res = identify(tr, query, score="neg_l2", control_cells=10_000, progress=False)
    assert res.genes[res.order[0, 0]] == gene and res.scores[0, res.order[0, 0]] == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("score", ["pearson", "cosine", "neg_l2"])
@pytest.mark.parametrize("basal,mode,target_term", [("mlp", "batch", True), ("none", "mean", True)])
def test_vectorised_scores_equal_a_loop_over_candidates(small, score, basal, mode, target_term, center):
    tr = _trainer(small, basal, mode, target_term)
    data = tr.data
    conds = select_groups(data)[:4]
    queries = build_queries(data, conds, mode, basal, control_cells=5, seed=0)
    rows = np.arange(len(tr.model.encoder.vocab))
    fast = score_candidates(tr.model, rows, queries, score, batch_rows=7, progress=False, center=center)
    with torch.no_grad():  # one candidate at a time, predictions materialised
        X = torch.from_numpy(queries.inputs)
        preds = np.stack([queries.weights @ (tr.model(X, torch.full((len(X), 1), int(c), dtype=torch.long))
                                             .double().numpy() - queries.input_ref) for c in rows])  # (C, Q, G)
    obs = queries.observed
    if center:
        background = preds.mean(0)  # (Q, G)
        preds, obs = preds - background, obs - background
    for c in rows:
        for q in range(len(conds)):
            a, b = preds[c, q], obs[q]
            if score == "pearson":
                want = np.corrcoef(a, b)[0, 1]
            elif score == "cosine":
                want = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
            else:
                want = -np.linalg.norm(a - b)
            assert fast[q, c] == pytest.approx(want, rel=1e-4, abs=1e-5)  # float32 forward


def test_queries_weight_batches_by_the_groups_cells(small):
    data, _, _ = small
    conds = select_groups(data)[:3]
    q = build_queries(data, conds, "mean", "mlp")
    assert q.inputs.shape[0] == 2 and np.allclose(q.weights.sum(1), 1.0)
    for k, cond in enumerate(conds):
        rows = np.flatnonzero(data.condition == cond[1])
        frac = np.mean(data.batch[rows] == "b0")
        assert q.weights[k, 0] == pytest.approx(frac)
        ref = q.weights[k] @ q.input_ref
        assert np.allclose(q.observed[k], np.asarray(data.X[rows].mean(0)).ravel() - ref)


@pytest.mark.parametrize("inputs", [{}, {"node_inputs": "id"}, {"node_inputs": "id", "unknown_token": True}])
def test_whole_graph_encoder_reproduces_the_receptive_field_rows(small, inputs):
    data, graph, _ = small
    tr = _trainer(small, "none", "mean", True, graph_hops=2, **inputs)
    assert len(tr.model.encoder.vocab) < graph.num_nodes
    full = candidate_model(tr, "graph")
    assert full.encoder.vocab == graph.nodes.tolist()
    with torch.no_grad():
        e_small, e_full = tr.model.encode(), full.encode()
    assert (e_small.prior is None) == ("node_inputs" in inputs)
    for g in data.perturbed_genes():  # exact for the genes the field was built around
        a, b = tr.model.encoder.vocab.index(g), full.encoder.vocab.index(g)
        assert torch.allclose(e_small.Z[a], e_full.Z[b], atol=1e-5)
        if e_small.prior is not None:  # effect inputs: the prior codes too
            assert torch.allclose(e_small.prior[a], e_full.prior[b], atol=1e-6)
    assert candidate_model(tr, "trained") is tr.model


# ------------------------------------------------------------------------------------------ ranking & metrics
def test_ranking_puts_nan_last_and_breaks_ties_by_key():
    s = np.array([[0.5, np.nan, 0.9, 0.5, -np.inf]])
    assert ranking(s).tolist() == [[2, 0, 3, 4, 1]]
    assert ranking(s, tiebreak=np.array([0, 0, 0, -1, 0])).tolist() == [[2, 3, 0, 4, 1]]


def test_metrics_single_gene_by_hand():
    ranked = ["A", "B", "C", "D", "E"]
    r = target_ranks(ranked, ["C"])
    assert r.tolist() == [3.0]
    m = query_metrics(r, ks=(2, 3))
    assert m == {"rr": pytest.approx(1 / 3), "hit@2": 0.0, "recall@2": 0.0, "hit@3": 1.0, "recall@3": 1.0}
    absent = query_metrics(target_ranks(ranked, ["Z"]), ks=(2,))
    assert absent == {"rr": 0.0, "hit@2": 0.0, "recall@2": 0.0}


def test_metrics_combination_by_hand():
    ranked = ["A", "B", "C", "D", "E"]
    m = query_metrics(target_ranks(ranked, ["B", "E"]), ks=(2, 5))
    assert m["rr"] == pytest.approx(0.5)  # first true gene at rank 2
    assert m["hit@2"] == 0.0 and m["recall@2"] == pytest.approx(0.5)  # only B in the top 2
    assert m["hit@5"] == 1.0 and m["recall@5"] == 1.0
    both = mean_metrics([m, query_metrics([1.0], ks=(2, 5))])
    assert both["mrr"] == pytest.approx(0.75) and both["recall@2"] == pytest.approx(0.75) and both["n"] == 2


def test_random_expectation_closed_forms():
    e = random_expectation(4, 1, ks=(1, 2))
    assert e["rr"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    assert e["hit@1"] == pytest.approx(0.25) and e["recall@2"] == pytest.approx(0.5)
    # two true genes among 4: min rank 1 w.p. 1/2, 2 w.p. 1/3, 3 w.p. 1/6; both in top 2 w.p. 1/6
    e = random_expectation(4, 2, ks=(2,))
    assert e["rr"] == pytest.approx(1 / 2 + 1 / 3 / 2 + 1 / 6 / 3)
    assert e["hit@2"] == pytest.approx(1 / 6) and e["recall@2"] == pytest.approx(0.5)
    e = random_expectation(4, 2, n_true_in=1, ks=(2,))
    assert e["hit@2"] == 0.0 and e["recall@2"] == pytest.approx(0.25)


def test_random_expectation_matches_simulation():
    rng = np.random.default_rng(0)
    N, m, k = 30, 2, 5
    sims = [query_metrics(target_ranks(list(rng.permutation(N).astype(str)), ["0", "1"]), ks=(k,))
            for _ in range(8000)]
    sim = mean_metrics(sims)
    exp = random_expectation(N, m, ks=(k,))
    assert sim["mrr"] == pytest.approx(exp["rr"], abs=0.01)
    assert sim[f"hit@{k}"] == pytest.approx(exp[f"hit@{k}"], abs=0.01)
    assert sim[f"recall@{k}"] == pytest.approx(exp[f"recall@{k}"], abs=0.01)


def test_pca_knn_ranks_training_genes_by_similarity_and_nothing_else():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(6, 40))
    genes = [("A",), ("B",), ("C",), ("D",), ("E",), ("F",)]
    query = train[[2]] + 0.01 * rng.normal(size=(1, 40))
    scores = pca_knn_scores(train, genes, query, ["X", "C", "A", "B", "D", "E", "F", "Y"])
    assert np.argmax(scores[0]) == 1  # C
    assert np.isneginf(scores[0, [0, 7]]).all() and np.isfinite(scores[0, 1:7]).all()


def test_own_gene_scores_follow_the_direction():
    delta = np.array([[0.5, -2.0, 0.1]])
    s = own_gene_scores(delta, ["A", "B", "C"], ["B", "Z", "A"], direction=-1)
    assert s[0, 0] == 2.0 and np.isneginf(s[0, 1]) and s[0, 2] == -0.5
    assert own_gene_scores(delta, ["A", "B", "C"], ["A"], direction=1)[0, 0] == 0.5


# ------------------------------------------------------------------------------------------ the command
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("identify")
    d = write_cli_inputs(root, n_cells=700, graph_genes=36)
    # the query: the same cells with other labels, the controls called 'NT'
    write_h5ad(d, root / "q.h5ad", {"group": np.where(d.condition == "ctrl", "NT", np.char.add("grp_", d.condition.astype(str))),
                                    "rep": d.batch})
    res = CliRunner().invoke(main, ["train", "--data", str(root / "d.h5ad"), "--perturbation-col", "gene",
                                    "--batch-col", "rep", "--graph", str(root / "g.kg.npz"), "--epochs", "2",
                                    "--set", "encoder_dim=8", "--set", "hidden=16", "--set", "progress=false",
                                    "--set", "encoder_backend=\"pyg\"", "--set", "graph_hops=2", "--no-baselines",
                                    "-o", str(root / "run")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return root


def _identify(run, *args):
    return CliRunner().invoke(main, ["identify", str(run / "run"), *args], catch_exceptions=False)


def test_cli_writes_a_full_ranking_per_group(run, tmp_path):
    out = tmp_path / "ranked.tsv"
    res = _identify(run, "--data", str(run / "q.h5ad"), "--perturbation-col", "group", "--control", "NT",
                    "--batch-col", "rep", "-o", str(out))
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out, sep="\t")
    assert list(table.columns) == ["group", "rank", "gene", "score"]
    groups = sorted(table["group"].unique())
    assert groups == sorted(f"grp_G{i}" for i in range(12))
    nodes = {f"G{i}" for i in range(36)}  # scope graph: every graph gene, beyond the trained receptive field
    for _, part in table.groupby("group"):
        assert set(part["gene"]) == nodes and len(part) == 36
        assert part["rank"].tolist() == list(range(1, 37))
        assert (np.diff(part["score"].to_numpy()) <= 1e-12).all()
    summary = json.loads((tmp_path / "ranked.summary.json").read_text())
    assert summary["n_candidates"] == 36 and len(summary["groups"]) == 12
    assert "grp_G0" in res.output and "wrote" in res.output


def test_cli_top_candidates_groups_and_evaluation(run, tmp_path):
    (tmp_path / "cands.txt").write_text("# candidates\nG1\nG3\nG5, extra\nNOTAGENE\n\nG30\n")
    out = tmp_path / "ranked.csv"
    res = _identify(run, "--data", str(run / "d.h5ad"), "--perturbation-col", "gene", "--batch-col", "rep",
                    "--group", "G1", "--group", "G3", "--candidates", str(tmp_path / "cands.txt"), "--top", "2",
                    "--score", "cosine", "--center", "--evaluate", "-o", str(out))
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out)
    assert sorted(table["group"].unique()) == ["G1", "G3"] and len(table) == 4
    assert set(table["gene"]) <= {"G1", "G3", "G5", "G30"}
    summary = json.loads((tmp_path / "ranked.summary.json").read_text())
    assert summary["unknown_candidates"] == ["NOTAGENE"] and summary["n_candidates"] == 4
    assert summary["center"] is True and "(centred)" in res.output
    ev = summary["evaluation"]
    assert ev["random"]["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    assert ev["model"]["n"] == 2 and "MRR" in res.output


def test_cli_clear_errors(run, tmp_path):
    out = tmp_path / "r.tsv"
    common = ["--data", str(run / "q.h5ad"), "--batch-col", "rep", "--control", "NT", "-o", str(out)]
    res = _identify(run, *common, "--perturbation-col", "nope")
    assert res.exit_code == 1 and "no obs column 'nope'" in res.output
    res = CliRunner().invoke(main, ["identify", str(tmp_path / "missing_run"), *common, "--perturbation-col", "group"])
    assert res.exit_code != 0 and "missing_run" in res.output
    res = _identify(run, "--data", str(run / "q.h5ad"), "--perturbation-col", "group", "--batch-col", "rep",
                    "--control", "ctrl", "-o", str(out))  # controls are 'NT', not 'ctrl'
    assert res.exit_code == 1 and "no control rows" in res.output
    res = _identify(run, *common, "--perturbation-col", "group", "--group", "grp_NOPE")
    assert res.exit_code == 1 and "no group 'grp_NOPE'" in res.output
    (tmp_path / "bad.txt").write_text("X1\nX2\n")
    res = _identify(run, *common, "--perturbation-col", "group", "--candidates", str(tmp_path / "bad.txt"))
    assert res.exit_code == 1 and "none of 2 candidate genes" in res.output
    assert not out.exists() and not (tmp_path / "r.summary.json").exists()


@pytest.mark.parametrize("basal,target_term", [("none", True), ("mlp", False)])
def test_true_gene_score_equals_the_training_metric_pearson_delta(small, basal, target_term):
    """An independent path: Trainer.evaluate (predict_means + metrics) gives each test perturbation's
    Pearson Δ; identifying that perturbation's cells must score its own gene with the same number."""
    tr = _trainer(small, basal, "mean", target_term)
    tr.cfg.eval_cells = 10_000  # every row of a condition is an input, as in identify
    conds = list(tr.split.test)
    table, _ = tr.evaluate(conds)
    res = identify(tr, tr.data, groups=[p for _, p in conds], progress=False)
    for q, (_, pert) in enumerate(res.queries.conditions):
        want = table.set_index("condition").loc[pert, "pearson_delta"]
        assert res.scores[q, res.genes.index(pert)] == pytest.approx(want, abs=1e-5)


def test_groups_are_chosen_by_label_in_any_gene_order():
    data = synthetic_data(n_cells=300, n_genes=20, n_perts=6, n_doubles=3, seed=4)
    double = next(c for c in data.perturbations() if "+" in c)
    a, b = double.split("+")
    assert select_groups(data, [f"{b}+{a}"]) == [("all", double)]
    assert select_groups(data, [f"all|{a}", a]) == [("all", a)]
    with pytest.raises(ValueError, match="no group 'other|"):
        select_groups(data, [f"other|{a}"])
