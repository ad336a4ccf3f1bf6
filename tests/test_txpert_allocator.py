"""txpert_head.training.allocator: freed memory stays in the process, so a loop's large tensors are not
faulted in again at every step (glibc only)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from txpert_head.training import allocator

REPO = Path(__file__).resolve().parents[1]

# a training step in miniature: ten 8 MB tensors made, written and freed, again and again; the fraction of
# their pages faulted in again per round, after two warm-up rounds. malloc starts from glibc's initial settings
# (128 kB thresholds, fixed: its dynamic thresholds depend on what the process freed before, so the rounds would
# refault or not by chance); then keep_freed_memory() is called, or not
ROUNDS = """
import resource, torch
from txpert_head.training.allocator import _glibc_mallopt, keep_freed_memory
mallopt = _glibc_mallopt()
assert mallopt(-3, 128 * 1024) == 1 and mallopt(-1, 128 * 1024) == 1
state = {call}
def round_():
    ts = [torch.ones(2 << 20) for _ in range(10)]
    del ts
round_(); round_()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    round_()
print(state, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 5 / (10 * 2048))
"""


def _refaulted(call: str, env: dict[str, str] | None = None) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", ROUNDS.format(call=call)], capture_output=True, text=True,
                         cwd=REPO, env=env, check=True).stdout.split()
    return out[0], float(out[1])


@pytest.mark.skipif(allocator._glibc_mallopt() is None, reason="only glibc's malloc has these settings")
def test_kept_memory_is_not_faulted_in_again_and_the_switch_leaves_the_defaults():
    import os

    state, kept = _refaulted("keep_freed_memory()")
    assert state == "True"
    assert kept < 0.1, f"{kept:.0%} of the freed pages were faulted in again"
    off = dict(os.environ, **{allocator.ENV_SWITCH: "0"})
    state, default = _refaulted("keep_freed_memory()", off)
    assert state == "False"
    assert default > 0.5, "with the switch off the freed blocks go back to the kernel (this is what is fixed)"


def test_the_txpert_command_and_the_api_keep_freed_memory(monkeypatch, tmp_path):
    """Every entry point sets it: the command's group callback and each work function of the Python API (called
    here on a run folder that does not exist: the setting comes first)."""
    from click.testing import CliRunner

    import txpert_head.api as api
    from txpert_head.cli import main as cli_main

    calls = []
    monkeypatch.setattr(cli_main, "keep_freed_memory", lambda: calls.append("cli"))
    assert CliRunner().invoke(cli_main.main, ["simulate", "--help"]).exit_code == 0
    assert calls == ["cli"]
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append("api"))
    missing = tmp_path / "missing"
    for name, args in [("train", (missing, missing, missing)), ("predict", (missing, "KLF1")), ("evaluate", (missing,)),
                       ("baselines", (missing, missing)), ("identify", (missing, missing, missing)),
                       ("score", (missing, missing))]:
        calls.clear()
        with pytest.raises(Exception):
            getattr(api, name)(*args)
        assert calls == ["api"], f"txpert_head.{name} does not keep freed memory"
