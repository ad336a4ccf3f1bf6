"""Progress output (kgbuild.progress): a bar on a terminal, plain periodic lines in a pipe or a log; and
``--help`` command lists that are not cut at "..."."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from kgbuild.progress import progress

BIN = Path(sys.executable).parent


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_every_ten_percent_and_at_the_end():
    out = io.StringIO()
    with progress(total=3085, desc="go: Jaccard", unit="genes", stream=out) as bar:
        for _ in range(0, 3085, 100):
            bar.update(min(100, 3085 - bar.n))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert 9 <= len(lines) <= 11 and lines[-1].startswith("go: Jaccard 100% (3,085 of 3,085 genes), ")
    assert lines[0].startswith("go: Jaccard 13% (400 of 3,085 genes), ") and lines[-1].endswith(" s")


def test_iterator_wrapper_time_based_lines_and_off():
    out = io.StringIO()
    assert list(progress(range(5), desc="x", stream=out, every_seconds=0.0)) == list(range(5))
    assert len(out.getvalue().splitlines()) == 5  # a line per item when every step is "10 s later"
    out = io.StringIO()
    assert list(progress(range(5), desc="x", stream=out, enabled=False)) == list(range(5))
    assert out.getvalue() == ""
    out = io.StringIO()
    with progress(total=None, desc="dl", unit="B", stream=out) as bar:
        bar.update(3 * 1024 * 1024)
    assert out.getvalue().startswith("dl 3.0 MiB, ")


def test_delay_keeps_quick_work_silent_and_reports_slow_work(monkeypatch):
    import kgbuild.progress as mod

    out = io.StringIO()
    assert list(progress(range(5), desc="quick", stream=out, every_seconds=0.0, delay=60.0)) == list(range(5))
    assert out.getvalue() == ""  # done before the delay: nothing, not even the last line
    clock = iter(range(0, 1000, 30))  # every reading of the clock is 30 s later
    monkeypatch.setattr(mod.time, "perf_counter", lambda: float(next(clock)))
    assert list(progress(range(4), desc="slow", stream=out, every_percent=100.0, delay=60.0)) == list(range(4))
    lines = out.getvalue().splitlines()
    assert lines and lines[0].startswith("slow ") and lines[-1].startswith("slow 100% (4 of 4 it), ")


def test_a_terminal_gets_a_tqdm_bar():
    out = FakeTerminal()
    with progress(total=10, desc="bar", stream=out) as bar:
        bar.update(10)
    assert "\r" in out.getvalue() and "10/10" in out.getvalue()


def test_kgbuild_go_piped_prints_plain_progress_lines(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sim = tmp_path / "sim"
    subprocess.run([str(BIN / "txpert"), "simulate", "-o", str(sim), "--genes", "60", "--singles", "10",
                    "--doubles", "2"], check=True, capture_output=True, env=env)
    res = subprocess.run([str(BIN / "kgbuild"), "go", "--offline", "--obo", str(sim / "go/go-basic.obo"),
                          "--gaf", str(sim / "go/goa_human.sim.gaf.gz"), "-o", str(tmp_path / "go.kg.npz")],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert "\r" not in res.stderr and "\r" not in res.stdout
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("Jaccard ")]
    assert lines and lines[-1].startswith("Jaccard 100% (") and " genes), " in lines[-1]


def test_help_command_lists_are_not_cut():
    for tool in ("txpert", "kgbuild"):
        res = subprocess.run([str(BIN / tool), "--help"], capture_output=True, text=True, check=True,
                             env={**os.environ, "COLUMNS": "80"})
        commands = res.stdout.split("Commands:")[1]
        assert commands.strip()
        assert not [ln for ln in commands.splitlines() if ln.rstrip().endswith(("...", "…"))], res.stdout
