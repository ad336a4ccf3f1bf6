"""Training: runs, checkpoints are safe, and an interrupted run resumes to the same final metrics."""

from __future__ import annotations

import pytest
import torch

from txpert_head.data.splits import make_split
from txpert_head.simulate.fixtures import synthetic_data, synthetic_graph
from txpert_head.training.trainer import Interrupted, Trainer
from txpert_head.training.config import TrainConfig
from txpert_head.training.checkpoints import load_checkpoint


@pytest.fixture(scope="module")
def small():
    data = synthetic_data(n_cells=900, n_genes=30, n_perts=12, seed=3)
    return data, synthetic_graph(30, seed=3), make_split(data, "unseen_single", seed=0)


def _cfg(**kw):
    base = dict(epochs=3, batch_size=64, progress=False, encoder_dim=8, encoder_heads=2, hidden=16,
                dropout=0.2, checkpoint_every=3, encoder_backend="pyg", eval_cells=64, patience=10)
    base.update(kw)
    return TrainConfig(**base)


def test_resume_after_interrupt_gives_identical_metrics(small, tmp_path):
    data, graph, split = small
    torch.set_num_threads(1)
    full = Trainer(data, graph, split, _cfg(), tmp_path / "full").fit()

    calls = {"n": 0}

    def crash(epoch: int, step: int) -> None:
        if epoch == 1 and step == 5:  # mid-epoch, between checkpoints (last one after step 3)
            calls["n"] += 1
            raise Interrupted("simulated kill")

    run = tmp_path / "interrupted"
    with pytest.raises(Interrupted):
        Trainer(data, graph, split, _cfg(), run).fit(on_step=crash)
    assert calls["n"] == 1
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    assert (ck["state"]["epoch"], ck["state"]["step"]) == (1, 3)
    resumed = Trainer(data, graph, split, _cfg(), run).fit()
    assert resumed.best_epoch == full.best_epoch
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    for key in ("pearson_delta", "mse", "retrieval"):
        assert resumed.test_summary[key] == full.test_summary[key]


def test_resume_refuses_other_options(small, tmp_path):
    data, graph, split = small
    Trainer(data, graph, split, _cfg(epochs=1), tmp_path).fit()
    with pytest.raises(ValueError, match="different training options"):
        Trainer(data, graph, split, _cfg(epochs=1, lr=0.1), tmp_path).fit()


def test_checkpoints_load_with_weights_only(small, tmp_path):
    data, graph, split = small
    Trainer(data, graph, split, _cfg(epochs=1), tmp_path).fit()
    for name in ("last.pt", "best.pt"):
        ck = torch.load(tmp_path / "checkpoints" / name, weights_only=True)
        assert "model" in ck
    assert not list((tmp_path / "checkpoints").glob("*.part"))


def test_training_reduces_loss_and_target_term_learns_knockdown(tmp_path):
    """With the target-gene term the perturbed gene's own drop is learned; without it, it is not."""
    data = synthetic_data(n_cells=2500, n_genes=24, n_perts=16, seed=5)
    # make every perturbation knock its own gene down strongly
    X = data.X.tolil()
    for i, c in enumerate(data.condition):
        if c != "ctrl":
            X[i, int(c[1:])] = 0.0
    data = type(data)(X.tocsr(), data.genes, data.condition, data.cell_line, data.batch)
    graph = synthetic_graph(24, seed=5)
    split = make_split(data, "unseen_single", seed=1)
    errs = {}
    for term in (False, True):
        res = Trainer(data, graph, split, _cfg(epochs=12, target_term=term, dropout=0.0, lr=3e-3)).fit()
        assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
        errs[term] = res.test_summary["target_error"]
    assert abs(errs[True]) < 0.5 * abs(errs[False]), errs


def test_unknown_token_and_self_mask_train_and_resume(small, tmp_path):
    """unknown_token + self_mask: the unseen test genes use the shared row, training is deterministic and an
    interrupted run resumes to the same metrics (the mask is drawn from the step's seeded generator)."""
    data, graph, split = small
    torch.set_num_threads(1)
    cfg = dict(node_inputs="id", unknown_token=True, self_mask=0.3)
    full = Trainer(data, graph, split, _cfg(**cfg), tmp_path / "full")
    known = set(full.known_genes)
    assert not any(g in known for _, p in split.test for g in p.split("+"))
    enc = full.model.encoder
    assert [enc.vocab[i] for i in torch.nonzero(enc.known).flatten().tolist()] == sorted(known, key=enc.vocab.index)
    result = full.fit()

    def crash(epoch: int, step: int) -> None:
        if epoch == 1 and step == 5:
            raise Interrupted("simulated kill")

    with pytest.raises(Interrupted):
        Trainer(data, graph, split, _cfg(**cfg), tmp_path / "cut").fit(on_step=crash)
    resumed = Trainer(data, graph, split, _cfg(**cfg), tmp_path / "cut").fit()
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in result.history]
    assert resumed.test_summary["pearson_delta"] == result.test_summary["pearson_delta"]
    # the mask changes training: same seed without it ends elsewhere
    plain = Trainer(data, graph, split, _cfg(node_inputs="id", unknown_token=True), tmp_path / "plain").fit()
    assert [h["train_loss"] for h in plain.history] != [h["train_loss"] for h in result.history]


def test_self_mask_needs_unknown_token():
    with pytest.raises(ValueError, match="unknown_token"):
        TrainConfig(node_inputs="id", self_mask=0.2)
    with pytest.raises(ValueError, match="self_mask"):
        TrainConfig(node_inputs="id", unknown_token=True, self_mask=1.0)
    with pytest.raises(ValueError, match="node_inputs = 'id'"):
        TrainConfig(unknown_token=True)  # the unknown token replaces learned ID rows
    # options at their defaults do not change the fingerprint of older configurations
    assert (TrainConfig(node_inputs="id").fingerprint()
            == TrainConfig(node_inputs="id", unknown_token=False, self_mask=0.0).fingerprint())
    # with effect inputs the default mask rate is 0.5, and it is part of the fingerprint
    assert TrainConfig().mask_rate == 0.5
    assert TrainConfig().fingerprint() == TrainConfig(self_mask=0.5).fingerprint() != TrainConfig(self_mask=0.0).fingerprint()
