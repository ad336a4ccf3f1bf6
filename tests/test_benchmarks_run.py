"""The GNN benchmark scripts still run against the current code, end to end on tiny graphs. Nothing is timed
here (a benchmark prints figures; this only checks that every cell of its table gets one)."""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH_GNN_ROWS = {"pyg-GATv2Conv", "gat", "gatv2", "exphormer", "exphormer-mg", "gat-hybrid", "gat-mlg", "hybrid-bmp"}


@pytest.mark.slow
def test_bench_gnn_fills_every_cell_on_a_tiny_graph():
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_gnn.py"), "--nodes", "300", "--edges", "2000",
           "--layers", "1", "--dim", "8", "--repeats", "1", "--warmup", "0", "--dgl-python", ""]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "failed" not in done.stdout
    rows = {line.split()[0] for line in done.stdout.splitlines() if line.strip()}
    assert BENCH_GNN_ROWS <= rows
    assert "our gatv2 (pyg backend) / PyG GATv2Conv stack" in done.stdout
    kind_rows = [line for line in done.stdout.splitlines() if line.split()[:1] and line.split()[0] in BENCH_GNN_ROWS]
    side = re.compile(r"side by side [0-9.]+ s at B [0-9.]+ GB/s = [0-9.]+x the floor .*best [0-9.]+ s at [0-9.]+ GB/s")
    assert len(kind_rows) == 8 and all(side.search(line) for line in kind_rows), "\n".join(kind_rows)
    if shutil.which("cc"):   # every encoder kind's pass runs fused attention kernels, timed alone beside it
        kernels = re.compile(r"fused attention kernels alone [0-9.]+ s = [0-9.]+x the floor, with the dense products")
        encoders = [line for line in kind_rows if not line.startswith("pyg-GATv2Conv")]
        reference = [line for line in kind_rows if line.startswith("pyg-GATv2Conv")]
        assert len(reference) == 1 and all(kernels.search(line) for line in encoders), "\n".join(kind_rows)
        assert not kernels.search(reference[0])   # PyG's own GATv2Conv runs none


def test_side_by_side_ratio_is_the_median_step_times_the_median_bandwidth_over_the_floor(monkeypatch):
    """bench_gnn's side-by-side ratio from alternated steps and copies (stubbed times: nothing is timed)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import bench_gnn

    steps = iter([0.30, 0.10, 0.20, 0.40, 0.50])
    bandwidths = iter([10e9, 30e9, 20e9, 50e9, 40e9])
    monkeypatch.setattr(bench_gnn, "copy_numel", lambda model, dim: 16)
    monkeypatch.setattr(bench_gnn, "copy_buffers", lambda numel: (None, None))
    monkeypatch.setattr(bench_gnn, "step_seconds", lambda model, target: next(steps))
    monkeypatch.setattr(bench_gnn, "copy_bandwidth", lambda a, b: next(bandwidths))
    got = bench_gnn.side_by_side(None, None, floor_bytes=1e9, dim=8, rounds=5)
    assert got["round_seconds"] == pytest.approx(0.30) and got["round_bandwidth"] == pytest.approx(30e9)
    assert got["ratio"] == pytest.approx(0.30 * 30)              # median step x median B / floor bytes
    assert got["ratio_best"] == pytest.approx(0.10 * 50)         # fastest step x fastest copy / floor bytes
    per_round = sorted([0.30 * 10, 0.10 * 30, 0.20 * 20, 0.40 * 50, 0.50 * 40])
    q1, _, q3 = statistics.quantiles(per_round, n=4)
    assert (got["ratio_q1"], got["ratio_q3"]) == (pytest.approx(q1), pytest.approx(q3))


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