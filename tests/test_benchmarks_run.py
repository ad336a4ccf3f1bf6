"""The GNN benchmark scripts still run against the current code, end to end on tiny graphs. Nothing is timed
here (a benchmark prints figures; this only checks that every cell of its table gets one)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_gnn_fills_every_cell_on_a_tiny_graph():
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_gnn.py"), "--nodes", "300", "--edges", "2000",
           "--layers", "1", "--dim", "8", "--repeats", "1", "--warmup", "0", "--dgl-python", ""]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "failed" not in done.stdout
    rows = {line.split()[0] for line in done.stdout.splitlines() if line.strip()}
    assert {"pyg-GATv2Conv", "gat", "gatv2", "exphormer", "exphormer-mg", "gat-hybrid", "gat-mlg",
            "hybrid-bmp"} <= rows
    assert "our gatv2 (pyg backend) / PyG GATv2Conv stack" in done.stdout


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler: nothing fused to compare")
def test_bench_attention_prints_its_table_on_a_tiny_graph(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import bench_attention

    assert bench_attention.main(["--nodes", "300", "--edges", "2000", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for row in ("layer, fused", "layer, composed", "fused forward", "fused backward", "gather-sum yardstick"):
        assert row in out


def test_bench_linear_prints_a_row_per_shape_and_which_products_go_to_onednn(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import bench_linear

    from gnn.layers import linear as lin

    assert bench_linear.main(["--repeats", "1", "--shapes", "8192x64x64,300x1000x300,16x8x8"]) == 0
    out = capsys.readouterr().out
    if lin._ROUTINE is None:
        assert "no oneDNN linear routine" in out
        return
    rows = {line.split(" ->")[0].strip(): line for line in out.splitlines() if " -> " in line and " ms" in line}

    def columns(m, i, o):   # "oneDNN takes" (scope all) and "here" (this processor's scope), as printed
        return [", ".join(n for n, on in zip(("y", "dx", "dW"), lin.onednn_products(m, i, o, scope)) if on) or "-"
                for scope in ("all", lin.onednn_scope())]

    for key, shape, why in [("8192 x 64", (8192, 64, 64), "a whole graph's projection: y and dx by oneDNN"),
                            ("16 x 8", (16, 8, 8), "a small product stays with torch"),
                            ("300 x 1000", (300, 1000, 300), "a head's wide layer: dW by oneDNN too")]:
        takes, here = columns(*shape)
        assert re.search(re.escape(takes) + r"\s+" + re.escape(here) + r"\s*$", rows[key]), why
    assert columns(8192, 64, 64)[0] == "y, dx" and columns(16, 8, 8)[0] == "-"
    assert columns(300, 1000, 300)[0] == "y, dx, dW"
    assert f"scope {lin.onednn_scope()!r}" in out