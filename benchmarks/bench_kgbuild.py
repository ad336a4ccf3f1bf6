"""kgbuild benchmarks: one command, prints a table.

    python benchmarks/bench_kgbuild.py [--threads 2] [--n 20000] [--d 256] [--repeat 3]

(a) ``screen``: the exact top-1% |cosine| pair search of ``kgbuild screen``
(:func:`kgbuild.sources.screen.top_abs_cosine_pairs`) on the real DepMap VAE embeddings and on
``n x d`` synthetic embeddings (low-rank structure plus noise, seeded), against

* a dense numpy brute force: ``S = |U U^T|`` (N x N float32), lower triangle masked, the K-th value by
  ``np.partition``, then the pairs at or above it (peak about two N x N float32 matrices), and
* the hardware floor: one float32 GEMM ``U U^T`` of the same size (``N x d`` times ``d x N``).

Every method runs in its own subprocess with the same thread count (``OMP_NUM_THREADS``,
``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``), so peak RSS (``VmHWM`` of that process) is per method;
"work MB" is peak RSS minus the RSS after imports and data loading. Wall time is the best of ``--repeat``
runs of the timed step (input already L2-normalised, in memory). The screen and dense results are
compared pair by pair (ties at the cut-off aside).

(b) ``string``: if ``benchmarks/bench_kgbuild_string.py`` exists, its ``run_string_bench(rows)`` row is
printed too (full-human-scale STRING parse + filter).

Targets (from the issue): screen within 2x of the GEMM floor at 20k genes with peak memory < 2 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
METHODS = ("gemm", "screen", "dense")


# ---------------------------------------------------------------------- workers (run in subprocesses)
def _rss_mb() -> float:
    """Peak resident memory of this process in MB: ``VmHWM`` (reset at exec, unlike ``ru_maxrss``, which
    a child inherits from the parent it was forked from)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker(method: str, data: Path, top_pct: float, repeat: int, out: Path) -> dict:
    """Run one method on the unit-norm embeddings in ``data`` (.npy); returns timing and memory."""
    if method == "screen":
        import faiss  # noqa: F401 - imported before timing, like numpy for the others
        import tqdm.auto  # noqa: F401

        from kgbuild.sources.screen import top_abs_cosine_pairs
    unit = np.load(data)
    n = len(unit)
    k = int(np.ceil(n * (n - 1) // 2 * top_pct / 100 - 1e-9))
    rss_before = _rss_mb()
    times = []
    result = None
    for _ in range(repeat):
        result = None
        t0 = time.perf_counter()
        if method == "gemm":
            s = unit @ unit.T
            result = float(s[0, 0])
            del s
        elif method == "screen":
            sel = top_abs_cosine_pairs(unit, top_pct, progress=False)
            result = (sel.rows, sel.cols, sel.weights)
        elif method == "dense":
            result = dense_top_pairs(unit, k)
        times.append(time.perf_counter() - t0)
    if method in ("screen", "dense"):
        rows, cols, weights = result
        np.savez(out, rows=rows, cols=cols, weights=weights)
    return {"method": method, "n": n, "d": int(unit.shape[1]), "k": k, "seconds": min(times),
            "all_seconds": times, "peak_rss_mb": _rss_mb(), "rss_before_mb": rss_before}


def dense_top_pairs(unit: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The dense brute force: full |U U^T|, lower triangle and diagonal masked, K-th value by partition."""
    n = len(unit)
    s = unit @ unit.T
    np.abs(s, out=s)
    for i in range(n):
        s[i, : i + 1] = -1.0
    flat = s.ravel()
    kth = np.partition(flat, flat.size - k)[flat.size - k]  # a copy: the second N x N array
    idx = np.flatnonzero(flat >= kth)
    rows, cols, w = idx // n, idx % n, flat[idx]
    order = np.lexsort((cols, rows, -w))[:k]
    return rows[order], cols[order], w[order]


# ---------------------------------------------------------------------- the driver
def synthetic_embeddings(n: int, d: int, rank: int = 16, noise: float = 3.0, seed: int = 0) -> np.ndarray:
    """``Z W + noise``: N x d with a rank-``rank`` shared structure (gene modules), float32."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, rank)).astype(np.float32)
    w = rng.standard_normal((rank, d)).astype(np.float32)
    return z @ w + noise * rng.standard_normal((n, d)).astype(np.float32)


def run_method(method: str, data: Path, top_pct: float, repeat: int, threads: int, workdir: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = workdir / f"{data.stem}.{method}.npz"
    cmd = [sys.executable, __file__, "--worker", method, "--data", str(data), "--top-pct", str(top_pct),
           "--repeat", str(repeat), "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"method": method, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    rec["out"] = str(out)
    return rec


def compare(screen_out: str, dense_out: str) -> str:
    """'exact' when the pair sets match, else how many differ and whether all at the cut-off."""
    a, b = np.load(screen_out), np.load(dense_out)
    pa = dict(zip(zip(a["rows"].tolist(), a["cols"].tolist()), a["weights"].tolist()))
    pb = dict(zip(zip(b["rows"].tolist(), b["cols"].tolist()), b["weights"].tolist()))
    diff = set(pa) ^ set(pb)
    if not diff:
        return "identical pairs"
    cut = float(b["weights"][-1])
    at_cut = all(abs(pa.get(p, pb.get(p)) - cut) < 1e-5 for p in diff)
    return f"{len(diff)} pairs differ ({'all tied at the cut-off' if at_cut else 'NOT ties'})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="threads for every method (default 2)")
    ap.add_argument("--n", type=int, default=20000, help="synthetic genes (default 20000)")
    ap.add_argument("--d", type=int, default=256, help="synthetic features (default 256)")
    ap.add_argument("--top-pct", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per method; the best is reported")
    ap.add_argument("--string-rows", type=int, default=13_700_000, help="rows for the STRING benchmark")
    ap.add_argument("--skip-string", action="store_true")
    ap.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args.top_pct, args.repeat, args.out)))
        return 0

    sys.path.insert(0, str(REPO))
    from kgbuild.sources.screen import l2_normalise, load_embeddings

    shared = Path(os.environ.get("TXPERT_SHARED_DATA", REPO.parent / "shared" / "data"))
    print(f"kgbuild benchmarks: {args.threads} thread(s) per method, best of {args.repeat}, "
          f"top {args.top_pct:g}% of pairs; each method in its own subprocess\n")
    with tempfile.TemporaryDirectory(prefix="bench_kgbuild.") as tmp:
        workdir = Path(tmp)
        datasets = []
        depmap = shared / "depmap" / "depmap_vae_gene_embeddings.parquet"
        if depmap.exists():
            t = load_embeddings(depmap)
            np.save(workdir / "depmap_vae.npy", l2_normalise(t.values))
            datasets.append(("DepMap VAE (real)", workdir / "depmap_vae.npy"))
        else:
            print(f"(real DepMap embeddings not found at {depmap}: skipped)")
        np.save(workdir / "synthetic.npy", l2_normalise(synthetic_embeddings(args.n, args.d)))
        datasets.append((f"synthetic {args.n:,} x {args.d}", workdir / "synthetic.npy"))

        header = f"{'dataset':<26}{'method':<34}{'seconds':>9}{'x GEMM':>8}{'peak MB':>9}{'work MB':>9}"
        lines = [header, "-" * len(header)]
        verdicts = []
        for label, data in datasets:
            res = {m: run_method(m, data, args.top_pct, args.repeat, args.threads, workdir) for m in METHODS}
            shape = np.load(data, mmap_mode="r").shape
            floor = res["gemm"].get("seconds")
            names = {"gemm": f"float32 GEMM {shape[0]}x{shape[1]}.T (floor)",
                     "screen": "kgbuild screen (FAISS, blocks)", "dense": "dense numpy brute force"}
            for m in METHODS:
                r = res[m]
                if "error" in r:
                    lines.append(f"{label:<26}{names[m]:<34}  failed: {r['error'][:60]}")
                    continue
                ratio = r["seconds"] / floor if floor else float("nan")
                lines.append(f"{label:<26}{names[m]:<34}{r['seconds']:>9.2f}{ratio:>8.2f}"
                             f"{r['peak_rss_mb']:>9.0f}{r['peak_rss_mb'] - r['rss_before_mb']:>9.0f}")
            if "error" not in res["screen"] and "error" not in res["dense"]:
                agree = compare(res["screen"]["out"], res["dense"]["out"])
                lines.append(f"{'':<26}screen vs dense: {agree}; K = {res['screen']['k']:,} pairs")
                if shape[0] >= 20000 and floor:
                    ok_t = res["screen"]["seconds"] <= 2 * floor
                    ok_m = res["screen"]["peak_rss_mb"] < 2048
                    verdicts.append(f"target at {shape[0]:,} genes: screen {res['screen']['seconds'] / floor:.2f}x "
                                    f"GEMM floor ({'met' if ok_t else 'MISSED'}: <= 2x), peak "
                                    f"{res['screen']['peak_rss_mb']:.0f} MB ({'met' if ok_m else 'MISSED'}: < 2048 MB)")
        print("\n".join(lines))
        for v in verdicts:
            print(v)

    print()
    if args.skip_string:
        print("string: skipped (--skip-string)")
        return 0
    string_bench = Path(__file__).with_name("bench_kgbuild_string.py")
    if not string_bench.exists():
        print("string: not available (benchmarks/bench_kgbuild_string.py not found)")
        return 0
    sys.path.insert(0, str(string_bench.parent))
    try:
        from bench_kgbuild_string import run_string_bench
    except ImportError as err:
        print(f"string: not available ({err})")
        return 0
    row = run_string_bench(args.string_rows)
    print("string (full-human-scale STRING parse + filter, from benchmarks/bench_kgbuild_string.py):")
    width = max(len(str(k)) for k in row) if row else 0
    for key, value in row.items():
        shown = f"{value:,.2f}" if isinstance(value, float) else (f"{value:,}" if isinstance(value, int) else value)
        print(f"  {key:<{width}}  {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
