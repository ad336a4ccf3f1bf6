"""``make demo``: run the toolkit end to end on what exists.

Today it builds a small multigraph in memory from a handful of gene pairs, writes it to ``demo_out/``,
reads it back and prints its summary. Later stages extend this to graph building from example source
files, TxPert training, evaluation against baselines and a report.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kgbuild.graph import MultiGraph


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m txpert_head.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="folder of real source files (not used yet)")
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="where to write outputs")
    args = parser.parse_args(argv)
    ppi = MultiGraph.from_edges("ppi", ["TP53", "MDM2", "CDKN1A"], ["MDM2", "TP53", "TP53"], [0.99, 0.99, 0.9],
                                {"source": "demo"})
    coexp = MultiGraph.from_edges("coexp", ["MYC", "MAX"], ["MAX", "MYC"], [0.7, 0.7], {"source": "demo"})
    path = MultiGraph.merge([ppi, coexp]).save(args.out / "demo.kg.npz")
    print(f"demo: wrote {path}")
    print(MultiGraph.load(path).format_summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
