"""Benchmark: ``kgbuild string`` on a full-human-scale STRING links file.

One command::

    .venv/bin/python benchmarks/bench_kgbuild_string.py            # 13.7 M rows, like STRING v12 human
    .venv/bin/python benchmarks/bench_kgbuild_string.py --rows 2000000

It synthesises, in a temporary folder, a ``protein.links`` file in exactly the shared subset's format
(gzip, header ``protein1 protein2 combined_score``, space-separated, ``9606.ENSP...`` ids, 19,600
proteins, integer scores 150-999, every pair in both orientations, sorted) and a matching ``protein.info``;
then times, in a fresh subprocess, what ``kgbuild string --min-score 700 --max-in-degree 20`` does before
writing: parse + min score + id -> symbol + symmetrize/dedupe + in-degree cap
(:func:`kgbuild.sources.string.build`). Side by side in the same run it times the floor every parser pays:
decompressing the same file (``gzip``, single thread) without parsing anything.

Target: parse + filter < 30 s on 2 cores at 13.7 M rows (Python start-up and imports are reported apart).
Peak RSS is the subprocess's high-water mark (``VmHWM``: imports included, synthesis excluded).
Importable: :func:`run_string_bench` returns the table row as a dict (``benchmarks/bench_kgbuild.py`` uses it).
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
N_PROTEINS = 19_600
TARGET_SECONDS = 30.0


def synthesise(folder: Path, rows: int, seed: int = 0) -> tuple[Path, Path]:
    """Write ``9606.protein.links.v12.0.txt.gz`` (``rows`` lines, both orientations) and the info file."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    numbers = np.sort(rng.choice(np.arange(1, 10**8), N_PROTEINS, replace=False))
    ids = np.char.add("9606.ENSP", np.char.zfill(numbers.astype(str), 11))
    pairs = rows // 2
    n = N_PROTEINS
    if pairs > n * (n - 1) // 2:
        raise ValueError(f"at most {n * (n - 1)} rows for {n} proteins")
    keys = np.zeros(0, dtype=np.int64)
    while len(keys) < pairs:  # distinct unordered pairs i < j
        k = rng.integers(0, n * n, size=2 * (pairs - len(keys)) + 1000, dtype=np.int64)
        i, j = k // n, k % n
        keys = np.unique(np.concatenate([keys, (np.minimum(i, j) * n + np.maximum(i, j))[i != j]]))
    keys = rng.permutation(keys)[:pairs]
    i, j = keys // n, keys % n
    # skewed towards low scores like STRING: about 10 % of pairs score >= 700
    score = (150 + np.floor(850 * rng.random(pairs) ** 4)).astype(np.int32).clip(150, 999)
    src, dst, sc = np.concatenate([i, j]), np.concatenate([j, i]), np.concatenate([score, score])
    order = np.lexsort((dst, src))
    names = pa.array(ids)
    table = pa.table({
        "protein1": names.take(pa.array(src[order])),
        "protein2": names.take(pa.array(dst[order])),
        "combined_score": pa.array(sc[order]),
    })
    links = folder / "9606.protein.links.v12.0.txt.gz"
    with gzip.open(links, "wb", compresslevel=6) as fh:
        fh.write(b"protein1 protein2 combined_score\n")
        pacsv.write_csv(table, fh, pacsv.WriteOptions(delimiter=" ", quoting_style="none", include_header=False))
    info = folder / "9606.protein.info.v12.0.txt.gz"
    with gzip.open(info, "wt") as fh:
        fh.write("#string_protein_id\tpreferred_name\tprotein_size\tannotation\n")
        for k, pid in enumerate(ids.tolist()):
            fh.write(f"{pid}\tGENE{k:05d}\t0\tsynthetic protein {k}\n")
    return links, info


_CHILD = r"""
import json, resource, sys, time
t_import = time.perf_counter()
from kgbuild.sources.string import build
t0 = time.perf_counter()
table, meta = build(sys.argv[1], sys.argv[2], min_score=700, max_in_degree=20)
wall = time.perf_counter() - t0
# VmHWM: this process's peak RSS (ru_maxrss would include the parent's peak inherited through fork)
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"wall": wall, "import": t0 - t_import, "peak_kb": peak_kb,
                  "rows": meta["rows_read"], "edges": len(table),
                  "max_in_degree": int(max(table.to_graph("s").in_degree()))}))
"""

_GUNZIP = r"""
import gzip, json, sys, time
t0 = time.perf_counter()
n = 0
with gzip.open(sys.argv[1], "rb") as fh:
    while True:
        block = fh.read(1 << 24)
        if not block:
            break
        n += len(block)
print(json.dumps({"wall": time.perf_counter() - t0, "bytes": n}))
"""


def _child(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_string_bench(rows: int = 13_700_000) -> dict:
    """Synthesise a links file of ``rows`` lines and time ``kgbuild string`` parse + filter on it.

    Returns ``{"rows", "file MB (gz)", "uncompressed MB", "synthesis s", "gunzip only s", "parse+filter s", "rows/s",
    "x gunzip", "import s", "peak RSS MB", "edges kept", "max in-degree", "target", "verdict"}``.
    """
    with tempfile.TemporaryDirectory(prefix="bench_string_") as tmp:
        t0 = time.perf_counter()
        links, info = synthesise(Path(tmp), rows)
        synth = time.perf_counter() - t0
        floor = _child(_GUNZIP, str(links))
        res = _child(_CHILD, str(links), str(info))
        size_mb = links.stat().st_size / 2**20
    return {
        "rows": int(res["rows"]),
        "file MB (gz)": round(size_mb, 1),
        "uncompressed MB": round(floor["bytes"] / 2**20, 1),
        "synthesis s": round(synth, 1),
        "gunzip only s": round(floor["wall"], 2),
        "parse+filter s": round(res["wall"], 2),
        "rows/s": int(res["rows"] / res["wall"]),
        "x gunzip": round(res["wall"] / floor["wall"], 2),
        "import s": round(res["import"], 2),
        "peak RSS MB": round(res["peak_kb"] / 1024, 1),
        "edges kept": int(res["edges"]),
        "max in-degree": int(res["max_in_degree"]),
        "target": f"< {TARGET_SECONDS:.0f} s",
        "verdict": "PASS" if res["wall"] < TARGET_SECONDS else "FAIL",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=13_700_000, help="links rows to synthesise (default: 13.7 M)")
    args = ap.parse_args(argv)
    row = run_string_bench(args.rows)
    width = max(len(k) for k in row)
    print("kgbuild string: full-human-scale STRING parse + min-score 700 + max-in-degree 20")
    for key, value in row.items():
        shown = f"{value:,}" if isinstance(value, (int, float)) and not isinstance(value, bool) else value
        print(f"  {key:<{width}}  {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
