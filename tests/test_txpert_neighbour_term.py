"""The neighbour-response term of TxPert (``neighbour_term``): a perturbed gene's measured graph partners move
by ``(a_ℓ + v_ℓ·z_p) w_{jp}``, computed without a dense (genes x genes) table."""

from __future__ import annotations

import numpy as np
import torch

from kgbuild.graph import MultiGraph
from txpert_head.data.splits import make_split
from txpert_head.model.txpert import TxPert, neighbour_edges
from txpert_head.simulate.fixtures import synthetic_data, synthetic_graph
from txpert_head.training.config import TrainConfig
from txpert_head.training.prediction import build_model


class _Encoder(torch.nn.Module):
    """A stand-in encoder: fixed Z, no prior path."""

    def __init__(self, Z: torch.Tensor):
        super().__init__()
        self.Z, self.dim, self.num_nodes = Z, Z.shape[1], Z.shape[0]

    def encode(self, hide=None):
        return type("Out", (), {"Z": self.Z, "prior": None, "visible": None})()


def _graph() -> MultiGraph:
    # nodes a..e; measured genes are b, c, e (columns 0, 1, 2); two layers
    src = ["b", "c", "a", "e", "a", "d"]
    dst = ["a", "a", "b", "a", "c", "a"]
    g1 = MultiGraph.from_edges("l1", src[:3], dst[:3], np.array([0.5, 1.0, 0.7]), {}, nodes=list("abcde"))
    g2 = MultiGraph.from_edges("l2", src[3:], dst[3:], np.array([0.2, 0.9, 0.4]), {}, nodes=list("abcde"))
    return MultiGraph.merge([g1, g2])


def test_the_term_adds_each_measured_partners_weighted_response():
    graph = _graph()
    measured = ["b", "c", "e"]
    col = torch.tensor([measured.index(n) if n in measured else -1 for n in graph.nodes.tolist()])
    nbr = neighbour_edges(graph, graph.num_nodes, col)
    Z = torch.randn(graph.num_nodes, 4)
    model = TxPert(_Encoder(Z), 3, basal="none", hidden=8, neighbour_edges=nbr)
    with torch.no_grad():
        model.nbr_gain.copy_(torch.tensor([0.3, -0.5])[: model.nbr_gain.numel()])
        model.nbr_head.weight.normal_()
    rows = torch.tensor([[0, -1], [0, 2], [3, -1]])  # a; a + c; d (no measured partner into d)
    x = torch.zeros(3, 3)
    y = model(x, rows)
    # by hand: edges j -> p with j measured
    expected = torch.zeros(3, 3)
    src, dst = graph.edge_index
    for b, slots in enumerate(rows.tolist()):
        for p in slots:
            if p < 0:
                continue
            for e in range(graph.num_edges):
                j = graph.nodes[src[e]]
                if dst[e] == p and j in measured:
                    ell = int(graph.edge_layer[e])
                    scale = model.nbr_gain[ell] + model.nbr_head(Z[p])[ell]
                    expected[b, measured.index(j)] += scale * float(graph.edge_weight[e])
    assert model.nbr_gain.numel() == 2  # a gain per layer
    torch.testing.assert_close(y, expected)
    assert torch.all(y[2] == 0)


def test_untrained_term_changes_nothing_and_a_run_trains_it():
    data = synthetic_data(n_cells=800, n_genes=30, n_perts=12, seed=0)
    graph = synthetic_graph(30)
    split = make_split(data, "unseen_single", seed=0)
    from txpert_head.training.trainer import Trainer

    outs = {}
    for on in (False, True):
        cfg = TrainConfig(epochs=2, progress=False, neighbour_term=on)
        trainer = Trainer(data, graph, split, cfg)
        x = torch.zeros(2, data.n_genes)
        rows = trainer.cond_rows[:2]
        with torch.no_grad():
            outs[on] = trainer.model(x, rows)
        if on:  # it learns: one training step moves it (fit() may keep the untrained prior of epoch 0)
            trainer.train_step(trainer.step_items(trainer.epoch_order(0), 0), np.random.default_rng(0))
            assert float(trainer.model.nbr_gain.detach().abs().sum()) > 0
    torch.testing.assert_close(outs[False], outs[True])  # zero-initialised: the same model before training


def test_checkpoints_do_not_hold_the_edge_table():
    data = synthetic_data(n_cells=400, n_genes=20, n_perts=8, seed=1)
    graph = synthetic_graph(20)
    cfg = TrainConfig(progress=False, neighbour_term=True)
    from txpert_head.model.effects import effect_codes

    model = build_model(graph, data.genes, data.perturbed_genes(), cfg,
                        effect_codes({("all", "G1"): np.ones(20)}, 20, cfg.effect_rank))
    keys = model.state_dict().keys()
    assert "nbr_gain" in keys and not any(k.startswith("nbr_rowptr") or k == "nbr_cols" for k in keys)
