"""The linear layer's two matrix libraries side by side: torch's own (MKL) and oneDNN, per product and shape.

For every shape ``(M rows, F_in -> F_out)`` the models here multiply -- an encoder's projections over a whole
20,827-node graph (``dim`` 64, Exphormer's feed-forward 64 -> 128 -> 64, the layer attention over 4 graph
layers' copies) and the TxPert head's MLPs at ``bench_train``'s batch of 256 and at 1024 (5,000 genes, hidden
256, latent 64) -- in one process, calls alternated, medians of ``--repeats`` rounds, float32, CPU:

* ``y = x W^T + b``, ``dx = g W``, ``dW = g^T x``: torch (``addmm`` / ``mm``, MKL) vs oneDNN
  (``torch.ops.mkldnn._linear_pointwise``), with the ratio torch / oneDNN (> 1: oneDNN is faster);
* ``layer``: forward + backward of :class:`gnn.layers.linear.Linear` against :class:`torch.nn.Linear` with
  the same parameters, and which products the layer gives oneDNN (``y``, ``dx``: see
  :mod:`gnn.layers.linear`), measured with ``TXPERT_ONEDNN_LINEAR=1`` (the scope ``all``, on any processor);
  the last column gives the products the layer hands oneDNN here unasked, in this processor's scope
  (:func:`gnn.layers.linear.onednn_scope`: ``all`` on AMD processors with AVX-512, ``tall`` on other AMD
  processors, ``none`` elsewhere).

Usage::

    .venv/bin/python benchmarks/bench_linear.py
    .venv/bin/python benchmarks/bench_linear.py --repeats 5 --shapes 20827x64x64,256x5000x256
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = [
    (20827, 64, 64, "encoder projection (q, k, v, o; GAT)"),
    (20827, 64, 128, "Exphormer feed-forward in"),
    (20827, 128, 64, "Exphormer feed-forward out"),
    (83308, 64, 64, "layer attention, 4 copies"),
    (83308, 64, 1, "layer attention query"),
    (256, 5000, 256, "basal MLP in, batch 256"),
    (256, 256, 64, "basal MLP out, batch 256"),
    (256, 64, 256, "decoder in, batch 256"),
    (256, 256, 5000, "decoder out, batch 256"),
    (1024, 5000, 256, "basal MLP in, batch 1024"),
    (1024, 256, 5000, "decoder out, batch 1024"),
    (32, 64, 64, "a small product"),
]


def _shape(text: str) -> tuple[int, int, int, str]:
    try:
        m, i, o = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is ROWSxINxOUT, e.g. 20827x64x64; got {text!r}") from None
    return m, i, o, ""


def table(args) -> None:
    """Print the table (module docstring), the layer's switch set to use oneDNN."""
    import torch
    from torch import nn

    from gnn.layers import linear as lin

    routine = lin._ROUTINE

    def timed(fns: dict) -> dict:
        """Median seconds of every callable, called in alternation: one warm-up round, then ``repeats``."""
        times = {k: [] for k in fns}
        for r in range(args.repeats + 1):
            for k, f in fns.items():
                t0 = time.perf_counter()
                f()
                if r:
                    times[k].append(time.perf_counter() - t0)
        return {k: statistics.median(v) for k, v in times.items()}

    print(f"float32, {args.threads} thread(s), torch {torch.__version__}; median of {args.repeats} alternated calls; "
          "ratio = torch (MKL) time / oneDNN time")
    print(f"this processor: {torch.backends.cpu.get_cpu_capability()}, {lin._cpu_vendor() or 'vendor unknown'}: "
          f"scope {lin.onednn_scope()!r}; the layer column is measured with {lin.ENV_SWITCH}=1 (scope 'all')")
    print(f"{'rows x in -> out':<22}{'y':>16}{'dx':>16}{'dW':>16}{'layer fwd+bwd':>26}  {'oneDNN takes':<12} "
          f"{'here':<12} shape")
    gen = torch.Generator().manual_seed(0)
    for m, i, o, what in args.shapes:
        x = torch.randn(m, i, generator=gen)
        g = torch.randn(m, o, generator=gen)
        ours = lin.Linear(i, o)
        ref = nn.Linear(i, o)
        ref.load_state_dict(ours.state_dict())
        w, b = ours.weight.detach(), ours.bias.detach()
        xg = x.clone().requires_grad_(True)

        def step(layer):
            layer.zero_grad(set_to_none=True)
            xg.grad = None
            layer(xg).backward(g)

        t = timed({
            "y_mkl": lambda: torch.addmm(b, x, w.t()), "y_dnn": lambda: routine(x, w, b, "none", [], ""),
            "dx_mkl": lambda: g.mm(w), "dx_dnn": lambda: routine(g, w.t().contiguous(), None, "none", [], ""),
            "dw_mkl": lambda: g.t().mm(x), "dw_dnn": lambda: routine(g.t().contiguous(), x.t().contiguous(), None,
                                                                     "none", [], ""),
            "layer_ref": lambda: step(ref), "layer_ours": lambda: step(ours),
        })
        takes, here = ([n for n, on in zip(("y", "dx", "dW"), lin.onednn_products(m, i, o, scope)) if on]
                       for scope in ("all", lin.onednn_scope()))

        def cell(k):
            return f"{t[k + '_mkl'] * 1e3:8.3f} ms {t[k + '_mkl'] / t[k + '_dnn']:4.2f}x"

        layer = f"{t['layer_ref'] * 1e3:8.3f} -> {t['layer_ours'] * 1e3:7.3f} ms {t['layer_ref'] / t['layer_ours']:4.2f}x"
        print(f"{f'{m} x {i} -> {o}':<22}{cell('y'):>16}{cell('dx'):>16}{cell('dw'):>16}{layer:>26}  "
              f"{', '.join(takes) or '-':<12} {', '.join(here) or '-':<12} {what}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 2))
    p.add_argument("--shapes", type=lambda s: [_shape(v) for v in s.split(",")], default=SHAPES,
                   help="comma-separated ROWSxINxOUT (default: the models' shapes, listed in the description)")
    args = p.parse_args(argv)

    import torch

    from gnn.layers import linear as lin

    torch.set_num_threads(args.threads)
    if lin._ROUTINE is None:
        print("this torch build has no oneDNN linear routine: the layer is torch's own linear")
        return 0
    # the layer column shows the rule's products on oneDNN whatever the processor (whether the layer takes
    # them here unasked is printed above the table); the switch is put back afterwards
    with mock.patch.dict(os.environ, {lin.ENV_SWITCH: "1"}):
        table(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
