"""Effect inputs: the codes, the neighbour features and prior of :mod:`gnn.effects`, and the TxPert model built
on them (untrained = the graph-neighbour baseline; epoch 0 kept when training does not help; the receptive
field gives the same predictions as the whole graph)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gnn import PerturbationEncoder
from kgbuild.graph import MultiGraph
from txpert_head.evaluation import baselines
from txpert_head.model.effects import effect_codes
from txpert_head.data.profiles import true_profiles
from txpert_head.data.splits import make_split
from txpert_head.simulate.fixtures import synthetic_data, synthetic_graph
from txpert_head.training.config import TrainConfig
from txpert_head.training.trainer import Trainer


def test_effect_codes_reconstruct_the_training_changes():
    rng = np.random.default_rng(0)
    deltas = {("L", f"G{i}"): rng.normal(size=12) for i in range(5)}
    deltas[("L", "G0+G1")] = rng.normal(size=12)  # combinations are not coded
    deltas[("M", "G0")] = rng.normal(size=12)  # a second line: G0's code is its mean change over lines
    ec = effect_codes(deltas, 12)
    assert ec.genes == [f"G{i}" for i in range(5)] and ec.rank == 5
    want = {g: deltas[("L", g)] for g in ec.genes}
    want["G0"] = (deltas[("L", "G0")] + deltas[("M", "G0")]) / 2
    for k, g in enumerate(ec.genes):
        np.testing.assert_allclose(ec.basis @ ec.codes[k], want[g], atol=1e-5)
    np.testing.assert_allclose(ec.basis @ ec.mean_code, np.mean(list(want.values()), axis=0), atol=1e-5)
    assert abs(float(np.sqrt(np.mean(ec.codes.astype(np.float64) ** 2))) - 1.0) < 1e-5  # unit scale
    emb = ec.gene_embedding()
    np.testing.assert_allclose(emb.T @ emb / 12, np.eye(5), atol=1e-5)  # orthonormal columns, times sqrt(G)
    assert effect_codes(deltas, 12, max_rank=2).rank == 2
    assert effect_codes({}, 12).rank == 1  # nothing trained: every gene looks unseen


def _two_layer_graph() -> MultiGraph:
    a = MultiGraph.from_edges("a", ["B", "C", "A"], ["A", "A", "D"], [1.0, 0.5, 2.0], {"source": "t"},
                              nodes=["A", "B", "C", "D", "E"])
    b = MultiGraph.from_edges("b", ["C", "D"], ["A", "A"], [0.25, 3.0], {"source": "t"}, nodes=["A", "C", "D"])
    return MultiGraph.merge([a, b])


def test_prior_is_the_weighted_neighbour_mean_of_visible_codes():
    graph = _two_layer_graph()
    enc = PerturbationEncoder(graph, genes=["Z"], kind="gat", dim=8, layers=1, backend="pyg",
                              node_inputs="effects", code_dim=2)
    codes = {"B": [1.0, 0.0], "C": [0.0, 1.0], "D": [2.0, 2.0]}
    enc.set_effects(list(codes), torch.tensor(list(codes.values())), torch.tensor([5.0, -5.0]))
    with torch.no_grad():
        enc.effects.shrink.fill_(-40.0)  # kappa ~ 0: the plain weighted mean
        out = enc.encode()
        row = {g: i for i, g in enumerate(enc.vocab)}
        # A's in-edges: B (1.0, layer a), C (0.5, a; 0.25, b), D (3.0, b)
        want = (1.0 * np.array([1, 0]) + 0.75 * np.array([0, 1]) + 3.0 * np.array([2, 2])) / 4.75
        np.testing.assert_allclose(out.prior[row["A"]].numpy(), want, rtol=1e-6)
        np.testing.assert_allclose(out.prior[row["B"]].numpy(), [1.0, 0.0])  # visible: its own code
        np.testing.assert_allclose(out.prior[row["E"]].numpy(), [5.0, -5.0])  # no trained neighbour: the mean
        np.testing.assert_allclose(out.prior[row["Z"]].numpy(), [5.0, -5.0])  # absent from the graph
        assert out.visible.tolist() == [g in codes for g in enc.vocab]
        # hiding D: A's prior uses B and C only, and D's own code is gone from its features
        hide = torch.tensor([g == "D" for g in enc.vocab])
        hidden = enc.encode(hide)
        np.testing.assert_allclose(hidden.prior[row["A"]].numpy(),
                                   (1.0 * np.array([1, 0]) + 0.75 * np.array([0, 1])) / 1.75, rtol=1e-6)
        assert not bool(hidden.visible[row["D"]])
        # layer trust: silencing layer b leaves B and C's layer-a edges
        enc.effects.layer_trust[1] = -40.0
        np.testing.assert_allclose(enc.encode().prior[row["A"]].numpy(),
                                   (1.0 * np.array([1, 0]) + 0.5 * np.array([0, 1])) / 1.5, rtol=1e-5)
        # shrinkage: a large kappa pulls A towards the mean code
        enc.effects.shrink.fill_(1e5)
        np.testing.assert_allclose(enc.encode().prior[row["A"]].numpy(), [5.0, -5.0], rtol=1e-3)
    assert enc.effects.dim == enc.input_proj.in_features == 2 * 2 + 1 + 3 * (2 + 1)


@pytest.fixture(scope="module")
def small():
    data = synthetic_data(n_cells=1200, n_genes=30, n_perts=14, seed=4)
    return data, synthetic_graph(30, seed=4), make_split(data, "unseen_single", seed=0)


def _cfg(**kw):
    base = dict(epochs=0, progress=False, encoder_backend="pyg", eval_cells=10_000, target_term=False)
    base.update(kw)
    return TrainConfig(**base)


def test_untrained_model_is_the_graph_neighbour_baseline(small):
    data, graph, split = small
    tr = Trainer(data, graph, split, _cfg())
    with torch.no_grad():
        tr.model.encoder.effects.shrink.fill_(-40.0)  # kappa ~ 0
    test = list(split.test)
    pred = tr.predict_means(test)
    _, ref = true_profiles(data, tr.controls, test, tr.rows)
    deltas = baselines.training_changes(data, tr.controls, split.train, tr.rows)
    want = baselines.graph_neighbours(deltas, test, ref, graph)
    np.testing.assert_allclose(pred, want, atol=1e-4)
    assert not np.allclose(pred, baselines.general(deltas, test, ref), atol=1e-3)  # the graph matters


def test_epoch_zero_is_kept_when_training_does_not_beat_it(small, tmp_path):
    data, graph, split = small
    res = Trainer(data, graph, split, _cfg(epochs=2, patience=5, lr=0.0), tmp_path).fit()  # nothing learned
    assert res.untrained_val and res.best_epoch == 0
    assert res.best_val == pytest.approx(res.untrained_val["val_pearson_delta"])
    untrained = Trainer(data, graph, split, _cfg()).fit()  # epochs 0: the fitted prior, never trained
    assert res.prior_fit and res.prior_fit == untrained.prior_fit
    assert res.test_summary["pearson_delta"] == pytest.approx(untrained.test_summary["pearson_delta"], abs=1e-9)


def _cluster_graph(rng: np.random.Generator, n_clusters: int = 6, size: int = 8):
    """Genes in clusters with a shared code (plus noise): layer ``good`` links genes of one cluster, layer
    ``bad`` links random genes."""
    genes = [f"G{i}" for i in range(n_clusters * size)]
    cluster = np.repeat(np.arange(n_clusters), size)
    good = [(a, b) for a in range(len(genes)) for b in range(len(genes)) if a != b and cluster[a] == cluster[b]
            and rng.random() < 0.5]
    bad = list({tuple(int(x) for x in rng.choice(len(genes), 2, replace=False)) for _ in range(len(good))})
    layers = [MultiGraph.from_edges(name, [genes[a] for a, _ in e], [genes[b] for _, b in e], [1.0] * len(e),
                                    {"source": "t"}, nodes=genes) for name, e in (("good", good), ("bad", bad))]
    centres = rng.normal(size=(n_clusters, 4))
    codes = centres[cluster] + 0.3 * rng.normal(size=(len(genes), 4))
    return MultiGraph.merge(layers), genes, codes


def test_fit_prior_trusts_the_layer_that_predicts_held_out_codes():
    rng = np.random.default_rng(0)
    graph, genes, codes = _cluster_graph(rng)
    enc = PerturbationEncoder(graph, genes=genes, kind="gat", dim=8, layers=1, backend="pyg", node_inputs="effects",
                              code_dim=4)
    enc.set_effects(genes, torch.tensor(codes, dtype=torch.float32), torch.tensor(codes.mean(0), dtype=torch.float32))
    row = {g: i for i, g in enumerate(enc.vocab)}

    def held_out_error() -> float:  # each gene hidden in turn: its prior comes from the others alone
        errors = []
        with torch.no_grad():
            for i, g in enumerate(genes):
                hide = torch.zeros(len(enc.vocab), dtype=torch.bool)
                hide[row[g]] = True
                errors.append(float(((enc.encode(hide).prior[row[g]] - torch.tensor(codes[i])) ** 2).sum()))
        return float(np.mean(errors))

    start = held_out_error()
    fit = enc.effects.fit_prior(enc.backend)
    assert fit["loss_before"] == pytest.approx(start, rel=1e-4)  # what the fit minimises is the held-out error
    assert fit["loss_after"] == pytest.approx(held_out_error(), rel=1e-4)
    assert fit["loss_after"] < 0.8 * fit["loss_before"]
    assert fit["beta_good"] > 10 * fit["beta_bad"]
    # the same codes on the random layer alone: nothing to trust, the prior shrinks to the mean code
    bad = graph.layer("bad")
    enc_bad = PerturbationEncoder(bad, genes=genes, kind="gat", dim=8, layers=1, backend="pyg", node_inputs="effects",
                                  code_dim=4)
    enc_bad.set_effects(genes, torch.tensor(codes, dtype=torch.float32), torch.tensor(codes.mean(0), dtype=torch.float32))
    assert enc_bad.effects.fit_prior(enc_bad.backend)["kappa"] > 5.0


def test_fit_prior_needs_two_trained_genes():
    graph = _two_layer_graph()
    enc = PerturbationEncoder(graph, genes=["A"], kind="gat", dim=8, layers=1, backend="pyg", node_inputs="effects",
                              code_dim=2)
    enc.set_effects(["B"], torch.tensor([[1.0, 0.0]]), torch.tensor([1.0, 0.0]))
    state = {k: v.clone() for k, v in enc.state_dict().items()}
    assert enc.effects.fit_prior(enc.backend) == {}
    assert all(torch.equal(v, enc.state_dict()[k]) for k, v in state.items())


def test_validation_specific_score_is_centred_on_the_training_changes(small):
    """``val_pearson_delta_specific``: corr(δ̂_p − δ̄, δ_p − δ̄) with δ̄ the mean *training* change (by hand);
    ``select_on`` picks the score model selection maximises."""
    data, graph, split = small
    scores = {}
    for rule in ("pearson_delta", "pearson_delta_pert", "both"):
        tr = Trainer(data, graph, split, _cfg(select_on=rule))
        record, scores[rule] = tr.validate()
        assert record["val_selection"] == scores[rule]
    val = list(split.val)
    pred = tr.predict_means(val)
    true, ref = true_profiles(data, tr.controls, val, tr.rows)
    centre = np.mean([d for d in baselines.training_changes(data, tr.controls, split.train, tr.rows).values()], axis=0)
    by_hand = np.mean([np.corrcoef(p - r - centre, t - r - centre)[0, 1] for p, t, r in zip(pred, true, ref)])
    assert record["val_pearson_delta_specific"] == pytest.approx(by_hand, abs=1e-9)
    assert scores["pearson_delta"] == pytest.approx(record["val_pearson_delta"])
    assert scores["pearson_delta_pert"] == pytest.approx(by_hand, abs=1e-9)
    assert scores["both"] == pytest.approx(0.5 * (by_hand + record["val_pearson_delta"]), abs=1e-9)
    with pytest.raises(ValueError, match="select_on"):
        _cfg(select_on="mse")


@pytest.mark.parametrize("kind,layers,hops", [("gat", 2, "auto"), ("gat", 1, "auto"), ("gat", 0, "auto"),
                                               ("gat-hybrid", 2, "auto"), ("gat-mlg", 1, "auto"), ("gat", 2, 3)])
def test_receptive_field_gives_the_whole_graph_predictions(kind, layers, hops):
    """Default ``graph_hops="auto"``: the encoder runs on the edges it reads for the perturbed genes only
    (integer: their plain receptive field), with the same predictions as on the whole graph (exact for
    message-passing kinds; with the effect inputs, the prior and the neighbour-response term)."""
    data = synthetic_data(n_cells=900, n_genes=24, n_perts=8, seed=6)
    graph = synthetic_graph(80, degree=3, seed=6)  # 80 nodes, of which the data perturbs and measures 24
    split = make_split(data, "unseen_single", seed=0)
    field = Trainer(data, graph, split, _cfg(encoder_kind=kind, encoder_layers=layers, graph_hops=hops))
    whole = Trainer(data, graph, split, _cfg(encoder_kind=kind, encoder_layers=layers, graph_hops=None))
    assert field.model.neighbour_term and field.model.prior_basis is not None
    assert field.encoder_graph.num_edges < whole.encoder_graph.num_edges
    assert field.model.encoder.num_nodes <= whole.model.encoder.num_nodes
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # random weights everywhere, the same in both models
        for (n, p), (m, q) in zip(field.model.named_parameters(), whole.model.named_parameters()):
            assert n == m
            p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            q.copy_(p)
    conds = list(split.test) + list(split.val)
    np.testing.assert_allclose(field.predict_means(conds), whole.predict_means(conds), atol=1e-5)


def test_training_on_the_encoder_field_equals_training_on_the_whole_graph():
    """The default encoder field changes nothing but speed: the same initial weights, the same self-masks
    (drawn over the trained genes, not over the encoder's rows) and the same gradients, so the same model
    after training (message-passing kinds)."""
    data = synthetic_data(n_cells=900, n_genes=24, n_perts=8, seed=6)
    graph = synthetic_graph(80, degree=3, seed=6)
    split = make_split(data, "unseen_single", seed=0)
    runs = [Trainer(data, graph, split, _cfg(epochs=3, patience=10, encoder_layers=2, graph_hops=h))
            for h in ("auto", None)]
    assert runs[0].model.encoder.num_nodes < runs[1].model.encoder.num_nodes
    field, whole = [[(h["epoch"], h["train_loss"], h["val_pearson_delta"]) for h in tr.fit().history] for tr in runs]
    assert [e for e, _, _ in field] == [1, 2, 3] and len({v for _, _, v in field}) == 3  # it trained and moved
    np.testing.assert_allclose(np.array(field), np.array(whole), rtol=1e-4)
