r"""The linear layer every model here uses: ``y = x W^T + b``, with its large float32 CPU products run by oneDNN.

Shapes: ``x (..., F_in)``, ``W (F_out, F_in)``, ``b (F_out,)`` or None, ``y (..., F_out)``; with ``M`` the
number of rows of ``x`` (all leading dimensions flattened) and ``g = dL/dy``:

.. math::
    y = x W^\top + b,\qquad dx = g W,\qquad dW = g^\top x,\qquad db = \textstyle\sum_m g_m.

:class:`Linear` is :class:`torch.nn.Linear` (same parameters, initialisation and ``state_dict``); only the
routine that multiplies changes. torch multiplies float32 matrices on the CPU with MKL, which gives its
AVX-512 code to Intel processors only: on an AMD processor with AVX-512 (Zen 4, Zen 5) it runs AVX2 code at
about half of what the vector units allow (``docs/training-and-evaluation.md``, "Speed on the CPU"). oneDNN,
the other matrix library inside torch's CPU builds, dispatches on the vector units themselves. Measured on
2-core AMD Zen 5 machines (``benchmarks/bench_linear.py``), oneDNN computes ``y`` in about half of MKL's time
once ``M F_in F_out`` is several million, ``dx`` mostly in less (0.4-0.9 of it, with exceptions from run to
run), and is slower on small products. On a 2-core AMD Zen 3 (AVX2 only, where MKL's AVX2 code is the best
there is) oneDNN still wins a whole graph's projections (a layer 1.1-1.4x faster from about 20,000 rows; an
encoder pass over the merged real graph 5-9 % faster) but loses a head's products over a batch (``dx`` and
``dW`` 0.7-0.8x, a training step about 8 % slower). So the layer's scope (:func:`onednn_scope`):

``"all"`` (an AMD processor whose widest vectors torch reports as AVX-512):

* ``y`` and ``dx`` through oneDNN (``torch.ops.mkldnn._linear_pointwise``, the routine torch's own compiler
  uses for CPU linear layers) when ``M F_in F_out >= 2^23`` (and, for ``dx``, ``M >= 256``);
* ``dW`` too when ``F_in F_out >= M`` (a head's wide layer over a batch; oneDNN reads ``g^T`` and ``x^T`` as
  copies), else by torch: over a whole graph's nodes ``dW`` is a long reduction into a small matrix, where
  MKL is 2-3x faster;
* ``db`` and every smaller product as torch does them (MKL).

``"tall"`` (other AMD processors): ``y`` and ``dx`` of products over at least 16,384 rows (and
``M F_in F_out >= 2^23``) through oneDNN, everything else by torch.

``"none"`` (other processors, where MKL picks its own best code): torch.

Only for float32 tensors on the CPU, without autocast, when torch was built with oneDNN. ``TXPERT_ONEDNN_LINEAR=0``
keeps every product with torch, ``=1`` takes the scope ``"all"`` on any processor (unset: the processor's);
otherwise :func:`torch.nn.functional.linear`. The result is the same product up to float32 rounding (each
library sums in its own order), as between any two thread counts.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ENV_SWITCH = "TXPERT_ONEDNN_LINEAR"   # "0": always torch.nn.functional.linear; "1": scope "all" on any CPU
MIN_WORK = 1 << 23                    # M * F_in * F_out from which oneDNN is faster (module docstring)
MIN_ROWS_DX = 256                     # and the rows from which it is faster for dx
MIN_ROWS_TALL = 1 << 14               # scope "tall": the rows from which oneDNN takes y and dx


def _onednn_linear():
    """torch's oneDNN linear routine, or None when this torch build has none."""
    if not torch.backends.mkldnn.is_available():
        return None
    return getattr(torch.ops.mkldnn, "_linear_pointwise", None)


_ROUTINE = _onednn_linear()


def _cpu_vendor() -> str:
    """The processor's vendor string (``AuthenticAMD``, ``GenuineIntel``), or "" when unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    text = platform.processor()   # e.g. "AMD64 Family 25 Model 17 Stepping 1, AuthenticAMD" on Windows
    return next((v for v in ("AuthenticAMD", "GenuineIntel") if v in text), "")


def onednn_scope() -> str:
    """Which products the layer gives oneDNN on this processor (module docstring): ``"all"`` on an AMD processor
    whose widest vectors torch reports as AVX-512 (MKL gives AVX-512 code to Intel processors only, so it
    runs below the vector units there), ``"tall"`` on other AMD processors, ``"none"`` elsewhere."""
    if _cpu_vendor() != "AuthenticAMD":
        return "none"
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:   # torch < 2.1
        return "none"
    return "all" if capability.startswith("AVX512") else "tall"


_SCOPE = onednn_scope()


def _scope() -> str:
    """The scope in force: the switch's, else the processor's."""
    switch = os.environ.get(ENV_SWITCH, "")
    return "none" if switch == "0" or _ROUTINE is None else "all" if switch == "1" else _SCOPE


def _cpu_autocast_query():
    """torch's "is CPU autocast on?", chosen once (it is asked on every call of :func:`linear`)."""
    try:
        torch.is_autocast_enabled("cpu")
    except TypeError:   # torch < 2.4 takes no device
        return torch.is_autocast_cpu_enabled
    return lambda: torch.is_autocast_enabled("cpu")


#: whether CPU autocast is on (a function; torch's own query, chosen once)
cpu_autocast_on = _cpu_autocast_query()


def onednn_products(rows: int, in_features: int, out_features: int, scope: str | None = None) -> tuple[bool, bool, bool]:
    """Which of ``y``, ``dx``, ``dW`` oneDNN computes for a float32 CPU product of this shape in ``scope``
    (default: the one in force; module docstring)."""
    scope = scope or _scope()
    if scope == "none" or rows * in_features * out_features < MIN_WORK:
        return False, False, False
    if scope == "tall":
        return rows >= MIN_ROWS_TALL, rows >= MIN_ROWS_TALL, False
    return True, rows >= MIN_ROWS_DX, in_features * out_features >= rows


def uses_onednn(x: Tensor, weight: Tensor) -> bool:
    """Whether :func:`linear` multiplies ``x`` by ``weight`` with oneDNN (module docstring)."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32 or cpu_autocast_on():
        return False
    return onednn_products(x.numel() // max(x.shape[-1], 1), weight.shape[1], weight.shape[0])[0]


def _mm_onednn(a: Tensor, b_t: Tensor, bias: Tensor | None) -> Tensor:
    """``a b_t^T + bias`` by oneDNN: ``a (M, K)``, ``b_t (N, K)`` -> ``(M, N)``."""
    return _ROUTINE(a.contiguous(), b_t.contiguous(), bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """``y = x W^T + b`` for 2-d ``x (M, F_in)``: ``y`` by oneDNN, ``dx`` and ``dW`` as :func:`onednn_products`
    says, ``db`` by torch."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _mm_onednn(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor):
        x, weight = ctx.saved_tensors
        _, dx_onednn, dw_onednn = onednn_products(x.shape[0], weight.shape[1], weight.shape[0])
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = _mm_onednn(g, weight.t(), None) if dx_onednn else g.mm(weight)
        if ctx.needs_input_grad[1]:   # oneDNN reads g^T and x^T as copies
            dw = _mm_onednn(g.t(), x.t(), None) if dw_onednn else g.t().mm(x)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = g.sum(0)
        return dx, dw, db


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x W^T + b`` (:func:`torch.nn.functional.linear`), large float32 CPU products by oneDNN (module docstring)."""
    if not uses_onednn(x, weight):
        return F.linear(x, weight, bias)
    if x.dim() == 2:
        return _OneDNNLinear.apply(x, weight, bias)
    lead = x.shape[:-1]
    return _OneDNNLinear.apply(x.reshape(-1, x.shape[-1]), weight, bias).view(*lead, weight.shape[0])


class Linear(nn.Linear):
    """:class:`torch.nn.Linear` whose products go through :func:`linear`: ``(..., in_features) -> (..., out_features)``."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
