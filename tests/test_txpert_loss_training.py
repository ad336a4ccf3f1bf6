"""Training with distributional losses (``txpert train --loss``): perturbation batches, errors, resume."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from txpert_head.cli.main import main
from txpert_files import write_cli_inputs
from txpert_head.data.splits import make_split
from txpert_head.simulate.fixtures import synthetic_data, synthetic_graph
from txpert_head.training.trainer import Interrupted, Trainer
from txpert_head.training.config import TrainConfig


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("loss")
    write_cli_inputs(root, epochs=10, lr=0.01, dropout=0.0, eval_cells=64, patience=20, checkpoint_every=0)
    return root


def _train(files, out, *extra):
    args = ["train", "--data", str(files / "d.h5ad"), "--perturbation-col", "gene", "--batch-col", "rep",
            "--graph", str(files / "g.kg.npz"), "--config", str(files / "train.toml"), "--no-baselines",
            "-o", str(out), *extra]
    torch.set_num_threads(1)
    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["mse", "mmd", "sw1", "mse+mmd", "mse+0.5*sw1"])
def test_each_loss_trains_end_to_end_and_its_loss_decreases(files, tmp_path, spec):
    res = _train(files, tmp_path / "run", "--loss", spec)
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert cfg["loss"] == spec
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    losses = [h["train_loss"] for h in metrics["history"]]
    assert len(losses) == 10 and all(np.isfinite(losses))
    assert losses[-1] < 0.95 * losses[0], losses
    assert np.isfinite(metrics["model"]["pearson_delta"])


@pytest.mark.parametrize("spec, message", [("mse+foo", "unknown loss term 'foo'"), ("mmd+mmd", "appears twice"),
                                           ("-1*mse", "cannot parse"), ("", "empty loss spec")])
def test_bad_loss_spec_is_a_clean_error_naming_the_option(files, tmp_path, spec, message):
    res = _train(files, tmp_path / "run", "--loss", spec)
    assert res.exit_code == 2
    assert "--loss" in res.output and message in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "run").exists()  # validated before anything is read or written


def test_distributional_loss_with_mean_controls_is_refused(files, tmp_path):
    res = _train(files, tmp_path / "run", "--loss", "mse+mmd", "--set", "control_mode=mean")
    assert res.exit_code == 1
    assert "control_mode 'mean'" in res.output and "mmd" in res.output and "Traceback" not in res.output
    with pytest.raises(ValueError, match="loss: unknown loss term"):
        TrainConfig(loss="l2")
    with pytest.raises(ValueError, match="cells_per_group"):
        TrainConfig(cells_per_group=0)


def test_fingerprint_of_mse_configs_is_unchanged_by_the_loss_options():
    """The new options are left out of the fingerprint at their defaults (old checkpoints stay resumable)."""
    cfg = TrainConfig(seed=3, lr=0.01, node_inputs="id")  # learned ID inputs: the model of the first release
    old = {k: v for k, v in cfg.to_dict().items()
           if k not in ("progress", "device", "checkpoint_every",
                        # options added after the first release of TrainConfig
                        "loss", "cells_per_group", "unknown_token", "self_mask", "node_inputs", "effect_rank",
                        "expression_features")}
    assert cfg.fingerprint() == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:16]
    assert TrainConfig(seed=3, lr=0.01, loss="mmd").fingerprint() != cfg.fingerprint()
    assert TrainConfig(seed=3, lr=0.01, cells_per_group=8).fingerprint() != cfg.fingerprint()
    assert TrainConfig(seed=3, lr=0.01, node_inputs="id", unknown_token=True).fingerprint() != cfg.fingerprint()
    assert TrainConfig(seed=3, lr=0.01).fingerprint() != cfg.fingerprint()  # effect inputs: another model


@pytest.fixture(scope="module")
def small():
    data = synthetic_data(n_cells=900, n_genes=30, n_perts=12, seed=3)
    return data, synthetic_graph(30, seed=3), make_split(data, "unseen_single", seed=0)


def _cfg(**kw):
    base = dict(epochs=3, batch_size=64, progress=False, encoder_dim=8, encoder_heads=2, hidden=16, dropout=0.2,
                checkpoint_every=3, encoder_backend="pyg", eval_cells=64, patience=10, loss="mse+mmd+sw1",
                cells_per_group=12, min_steps_per_epoch=1, control_mode="batch")
    base.update(kw)
    return TrainConfig(**base)


def test_perturbation_batches_are_k_groups_of_m_cells_and_seeded(small):
    data, graph, split = small
    a, b = Trainer(data, graph, split, _cfg()), Trainer(data, graph, split, _cfg())
    assert a.grouped and not a.aggregated and a.groups_per_step == 64 // 12
    assert a.steps_per_epoch == int(np.ceil(len(a.train_rows) / 64))
    order = a.epoch_order(1)
    np.testing.assert_array_equal(order, b.epoch_order(1))
    k, n = a.groups_per_step, len(a.groups)
    per_pass = int(np.ceil(n / k))
    assert len(order) >= a.steps_per_epoch and len(order) % per_pass == 0
    steps = [a.step_items(order, s) for s in range(len(order))]
    for s in steps:  # distinct perturbations, sizes of np.array_split(n, per_pass): at most k
        assert len(s) in (n // per_pass, -(-n // per_pass)) and len(s) <= k
        assert len(set(s.tolist())) == len(s)
    for start in range(0, len(steps), per_pass):  # each pass is a permutation of the training perturbations
        assert sorted(np.concatenate(steps[start:start + per_pass]).tolist()) == list(range(n))
    groups = steps[2]
    cells = a.draw_group_rows(groups, np.random.default_rng([0, 1, 2]))
    again = b.draw_group_rows(groups, np.random.default_rng([0, 1, 2]))
    train_conds = [c for c in split.train if c in a.rows]
    for g, rows, rows2 in zip(groups, cells, again):
        np.testing.assert_array_equal(rows, rows2)
        assert len(rows) == min(12, len(a.group_rows[g])) and len(set(rows.tolist())) == len(rows)
        assert set(data.condition[rows]) == {train_conds[g][1]}  # the perturbation's own cells only


def test_perturbation_batch_resume_after_interrupt_is_identical(small, tmp_path):
    data, graph, split = small
    torch.set_num_threads(1)
    full = Trainer(data, graph, split, _cfg(), tmp_path / "full").fit()

    def crash(epoch: int, step: int) -> None:
        if epoch == 1 and step == 5:
            raise Interrupted("simulated kill")

    run = tmp_path / "interrupted"
    with pytest.raises(Interrupted):
        Trainer(data, graph, split, _cfg(), run).fit(on_step=crash)
    resumed = Trainer(data, graph, split, _cfg(), run).fit()
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    for key in ("pearson_delta", "mse", "retrieval"):
        assert resumed.test_summary[key] == full.test_summary[key]


def test_mse_with_cells_per_group_is_the_mean_over_perturbations_of_their_paired_mse(small):
    """``cells_per_group`` with plain MSE: the distributional losses' batches; loss = mean over the step's
    perturbations of the paired MSE of their cells (recomputed here from the same seeded draws)."""
    data, graph, split = small
    tr = Trainer(data, graph, split, _cfg(loss="mse", epochs=1, dropout=0.0, self_mask=0.0))  # no hidden inputs
    assert tr.grouped
    groups = tr.step_items(tr.epoch_order(0), 0)
    rng = np.random.default_rng([5, 0, 0])
    rng.integers(0, 2**62)  # the step first draws the sw1 direction seed
    cells = tr.draw_group_rows(groups, rng)
    picked = tr.controls.sample(np.concatenate(cells), "batch", rng)
    with torch.no_grad():
        tr.model.eval()
        x = torch.from_numpy(data.X[picked].toarray())
        rows = np.concatenate(cells)
        pred = tr.model(x, tr.cond_rows[torch.from_numpy(data.cond_id[rows])]).numpy()
    y = data.X[rows].toarray()
    bounds = np.cumsum([0] + [len(c) for c in cells])
    expected = np.mean([((pred[a:b] - y[a:b]) ** 2).mean() for a, b in zip(bounds[:-1], bounds[1:])])
    got = tr.train_step(groups, np.random.default_rng([5, 0, 0]))  # the loss before the update
    assert got == pytest.approx(expected, rel=1e-5)
    assert not Trainer(data, graph, split, _cfg(loss="mse", cells_per_group=None)).grouped
