"""Data-parallel training under torchrun (2 CPU processes, gloo) against a single process.

Each rank keeps a block of every batch and scales its loss so that DDP's averaged gradient equals the
single-process gradient; with dropout off the two runs differ only by floating-point summation order.
Tolerances: final weights within 1e-5 (observed ~1e-7) and test metrics within 1e-6 (observed ~1e-9).

The torchrun processes run a small wrapper (written into the test's folder) that records every atomic
rename (``os.replace``, the last step of :func:`kgbuild.atomic.atomic_path`) per rank and can stop training
after a given number of steps (a simulated kill) to exercise resume.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from txpert_head.cli.main import main
from txpert_files import write_cli_inputs

pytestmark = pytest.mark.slow

TORCHRUN = Path(sys.executable).with_name("torchrun")
WEIGHT_TOL = 1e-5
METRIC_TOL = 1e-6

WRAPPER = '''
import os, sys
from pathlib import Path

log_dir, crash_after = Path(sys.argv[1]), int(sys.argv[2])
rank = os.environ.get("RANK", "0")
_replace = os.replace


def logged_replace(src, dst, *args, **kwargs):
    _replace(src, dst, *args, **kwargs)
    with open(log_dir / f"writes.{rank}.txt", "a") as fh:
        fh.write(f"{dst}\\n")


os.replace = logged_replace
if crash_after > 0:
    from txpert_head.training import trainer as train

    original, calls = train.Trainer.train_step, [0]

    def train_step(self, items, rng):
        calls[0] += 1
        if calls[0] > crash_after:  # every rank stops before the same step
            raise train.Interrupted("simulated kill")
        return original(self, items, rng)

    train.Trainer.train_step = train_step
from txpert_head.cli.main import main

main(sys.argv[3:], prog_name="txpert")
'''


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    write_cli_inputs(root, epochs=3, dropout=0.0, eval_cells=64, patience=10, checkpoint_every=3)
    (root / "wrapper.py").write_text(WRAPPER)
    return root


def _args(files: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(files / "d.h5ad"), "--perturbation-col", "gene", "--batch-col", "rep",
            "--graph", str(files / "g.kg.npz"), "--config", str(files / "train.toml"), "--no-baselines",
            "-o", str(out), *extra]


def _single(files: Path, out: Path, *extra: str) -> Path:
    torch.set_num_threads(1)
    res = CliRunner().invoke(main, _args(files, out, *extra), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out


def _torchrun(files: Path, out: Path, *extra: str, crash_after: int = 0, wrapper: bool = True
              ) -> subprocess.CompletedProcess:
    """2 processes; ``wrapper=False`` runs the documented ``torchrun -m txpert_head.cli.main train ...`` as is."""
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2"]
    if wrapper:
        logs = out.parent / f"{out.name}_writes"
        logs.mkdir(parents=True, exist_ok=True)
        cmd += [str(files / "wrapper.py"), str(logs), str(crash_after)]
    else:
        cmd += ["-m", "txpert_head.cli.main"]
    cmd += _args(files, out, *extra)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def _ok(res: subprocess.CompletedProcess) -> None:
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "best.pt", weights_only=True)["model"]


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _assert_same_run(a: Path, b: Path, weight_tol: float = WEIGHT_TOL, metric_tol: float = METRIC_TOL) -> None:
    ma, mb = _metrics(a), _metrics(b)
    assert ma["best_epoch"] == mb["best_epoch"]
    assert len(ma["history"]) == len(mb["history"])
    for ha, hb in zip(ma["history"], mb["history"]):
        assert ha["train_loss"] == pytest.approx(hb["train_loss"], rel=1e-6)
    for key in ("pearson_delta", "mse", "retrieval"):
        assert ma["model"][key] == pytest.approx(mb["model"][key], abs=metric_tol), key
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        if wa[k].is_floating_point():
            assert torch.allclose(wa[k], wb[k], atol=weight_tol, rtol=0), (k, float((wa[k] - wb[k]).abs().max()))
        else:
            assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def ddp_rows(files, tmp_path_factory):
    """Row batches (MSE) with the target-gene term: one process and two."""
    root = tmp_path_factory.mktemp("rows")
    single = _single(files, root / "single", "--set", "target_term=true")
    res = _torchrun(files, root / "ddp", "--set", "target_term=true")
    _ok(res)
    return single, root / "ddp", res


def test_torchrun_matches_single_process_mse(ddp_rows):
    single, ddp, res = ddp_rows
    _assert_same_run(single, ddp)
    assert res.stdout.count("wrote ") == 1  # the table is printed by rank 0 only


def test_torchrun_writes_each_file_once_from_rank_0(ddp_rows):
    _, ddp, _ = ddp_rows
    logs = ddp.parent / f"{ddp.name}_writes"
    assert not (logs / "writes.1.txt").exists(), "rank 1 wrote files"
    writes = Counter(Path(p).relative_to(ddp).as_posix() for p in (logs / "writes.0.txt").read_text().split())
    for name in ("config.json", "split.json", "metrics.json", "per_perturbation.csv", "plots/learning_curves.png",
                 "plots/predicted_vs_true.png", "checkpoints/best.pt"):
        assert writes[name] >= 1, name
    for name in ("config.json", "split.json", "metrics.json", "per_perturbation.csv", "plots/learning_curves.png",
                 "plots/predicted_vs_true.png"):
        assert writes[name] == 1, (name, writes[name])
    assert writes["checkpoints/last.pt"] >= 3  # one per epoch at least, all from rank 0
    assert not [p for p in ddp.rglob("*") if p.name.endswith(".part")], "temporary files left behind"
    json.loads((ddp / "metrics.json").read_text())
    torch.load(ddp / "checkpoints" / "last.pt", weights_only=True)


@pytest.fixture(scope="module")
def ddp_groups(files, tmp_path_factory):
    """Perturbation batches (mse + mmd + sw1) with the unknown token and self-masking (the step's mask must be
    the same on every rank): one process and two (groups sharded by rank)."""
    root = tmp_path_factory.mktemp("groups")
    loss = ["--loss", "mse+mmd+0.5*sw1", "--set", "cells_per_group=16", "--set", "min_steps_per_epoch=1", "--set", "node_inputs=id", "--set", "unknown_token=true",
            "--set", "self_mask=0.3"]
    single = _single(files, root / "single", *loss)
    res = _torchrun(files, root / "ddp", *loss, wrapper=False)
    _ok(res)
    return single, root / "ddp", loss


def test_torchrun_matches_single_process_distributional_loss(ddp_groups):
    single, ddp, _ = ddp_groups
    _assert_same_run(single, ddp)


def test_torchrun_resume_after_kill_matches_uninterrupted(files, ddp_groups, tmp_path):
    _, uninterrupted, loss = ddp_groups
    run = tmp_path / "killed"
    res = _torchrun(files, run, *loss, crash_after=11)  # epoch 2 (7 steps per epoch), after its step-3 checkpoint
    assert res.returncode != 0 and "simulated kill" in res.stderr
    ck = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert (ck["state"]["epoch"], ck["state"]["step"]) == (1, 3), ck["state"]
    assert len(ck["torch_rng_ranks"]) == 2
    assert not (run / "metrics.json").exists()
    _ok(_torchrun(files, run, *loss))
    _assert_same_run(uninterrupted, run, weight_tol=1e-6, metric_tol=1e-9)
