"""The VCC block at screen scale: its Wilcoxon tests against scipy's, and the streamed block's time and memory.

Two tables, one command::

    .venv/bin/python benchmarks/bench_vcc.py [--genes 8000] [--conditions 200] [--cells 256]

1. **One DE call's Wilcoxon test** (``--cells`` cells against 2,048 control cells, log1p of Poisson counts, so
   with the ties of single cells): ``scipy.stats.mannwhitneyu(method="asymptotic")`` in chunks of 2,048 genes
   (what :func:`txpert_head.metrics.vcc.wilcoxon_pvalues` called before) against the sorted-value kernel with
   the controls sorted once (:class:`~txpert_head.metrics.vcc.ControlCells`), for real cells and for a point
   mass (a replicated mean, what every baseline submits). Both in this process, alternated, medians of
   ``--repeats``; the p-values are checked identical.
2. **The streamed VCC block** (:func:`txpert_head.evaluation.vcc.score_predictions`) on a synthetic screen of
   ``--conditions`` perturbations x ``--cells`` cells x ``--genes`` genes, one cell line, with a cell-level
   prediction set (noisy true cells, produced lazily one condition at a time as the model's are) and six mean
   profiles (as the baselines): wall time, the peak of traced numpy memory (``tracemalloc``) and, beside it,
   what holding every condition's dense true and predicted cells (float64), as the block did before streaming,
   would take.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from collections.abc import Mapping
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def counts(rng, n: int, g: int, lam: float) -> np.ndarray:
    """log1p of Poisson counts, float32 values as an .h5ad stores them, (n, g) float64."""
    return np.log1p(rng.poisson(lam, (n, g)).astype(np.float32)).astype(np.float64)


def scipy_pvalues(cells: np.ndarray, control: np.ndarray, chunk: int = 2048) -> np.ndarray:
    from scipy.stats import mannwhitneyu

    out = np.ones(cells.shape[1])
    for s in range(0, cells.shape[1], chunk):
        out[s:s + chunk] = mannwhitneyu(cells[:, s:s + chunk], control[:, s:s + chunk], axis=0,
                                        alternative="two-sided", method="asymptotic").pvalue
    return np.clip(np.where(np.isnan(out), 1.0, out), 0.0, 1.0)


def wilcoxon_table(args) -> None:
    from txpert_head.metrics.vcc import ControlCells, wilcoxon_pvalues

    rng = np.random.default_rng(0)
    control = counts(rng, 2048, args.genes, 0.3)
    cells = counts(rng, args.cells, args.genes, 0.35)
    t0 = time.perf_counter()
    prepared = ControlCells(control)
    prep = time.perf_counter() - t0
    print(f"1. One Wilcoxon DE test: {args.cells} cells vs 2,048 controls x {args.genes:,} genes "
          f"(median of {args.repeats}; sorting the controls once per line: {prep:.3f} s)")
    print(f"{'prediction':<12}{'scipy, s':>10}{'kernel, s':>11}{'scipy / kernel':>16}{'identical':>11}")
    for name, x in (("cells", cells), ("point mass", np.broadcast_to(cells.mean(0), cells.shape).copy())):
        ts, tk = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            a = scipy_pvalues(x, control)
            ts.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            b = wilcoxon_pvalues(x, prepared)
            tk.append(time.perf_counter() - t0)
        s, k = statistics.median(ts), statistics.median(tk)
        print(f"{name:<12}{s:>10.3f}{k:>11.3f}{s / k:>16.1f}{str(np.array_equal(a, b)):>11}")


class LazyCells(Mapping):
    """Predicted cells made on demand, one condition at a time (the true cells plus noise)."""

    def __init__(self, data, rows, conditions, seed: int):
        self.data, self.rows, self.keys, self.seed = data, rows, list(conditions), seed

    def __getitem__(self, c):
        x = np.asarray(self.data.X[self.rows[c]].toarray(), dtype=np.float64)
        return x + np.random.default_rng([self.seed, self.keys.index(c)]).normal(0, 0.2, x.shape)

    def __iter__(self):
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


def block_table(args) -> None:
    import scipy.sparse as sp

    from txpert_head.data.controls import ControlIndex
    from txpert_head.data.perturb_data import PerturbData
    from txpert_head.data.profiles import rows_by_condition
    from txpert_head.evaluation.vcc import score_predictions

    rng = np.random.default_rng(1)
    P, n, G = args.conditions, args.cells, args.genes
    n_ctrl, n_train = 4096, 10
    labels = ["ctrl"] * n_ctrl + [f"T{i}" for i in range(n_train) for _ in range(n)] + \
        [f"P{i}" for i in range(P) for _ in range(n)]
    shift = rng.gamma(0.5, 0.2, size=(P + n_train, G))
    blocks = [sp.csr_matrix(counts(rng, n_ctrl, G, 0.3).astype(np.float32))]
    for k in range(P + n_train):
        blocks.append(sp.csr_matrix(np.log1p(rng.poisson(0.3 + shift[k], (n, G))).astype(np.float32)))
    data = PerturbData(sp.vstack(blocks).tocsr(), [f"g{i}" for i in range(G)], np.asarray(labels),
                       np.full(len(labels), "line"), np.asarray([f"b{i % 4}" for i in range(len(labels))]))
    controls = ControlIndex(data)
    rows = rows_by_condition(data)
    test = [("line", f"P{i}") for i in range(P)]
    train = [("line", f"T{i}") for i in range(n_train)]
    preds = {"model": LazyCells(data, rows, test, 0)}
    for b in range(6):
        preds[f"mean{b}"] = {c: np.asarray(data.X[rows[c]].mean(0)).ravel() + 0.01 * b for c in test}
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    summary, _ = score_predictions(data, controls, test, train, preds, true_rows=rows)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    held = 2 * P * n * G * 8
    print(f"\n2. The VCC block, streamed: {P} conditions x {n} cells x {G:,} genes, 1 cell-level and 6 mean "
          "prediction sets plus the cell mean")
    print(f"{'seconds':>9}{'s / condition':>15}{'peak traced, GB':>17}{'dense cells held before, GB':>29}"
          f"{'before / now':>14}")
    print(f"{seconds:>9.1f}{seconds / P:>15.2f}{peak / 2**30:>17.2f}{held / 2**30:>29.2f}{held / peak:>14.1f}")
    print(f"   model S = {summary['model']['score']:.1f}, DES {summary['model']['des']:.3f}, "
          f"PDS {summary['model']['pds']:.3f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--genes", type=int, default=8000)
    ap.add_argument("--conditions", type=int, default=200)
    ap.add_argument("--cells", type=int, default=256, help="cells per condition (the true and predicted sets)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    wilcoxon_table(args)
    block_table(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
