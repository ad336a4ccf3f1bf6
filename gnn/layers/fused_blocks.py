r"""Fused CPU kernels (C, compiled here on first use) for the row-wise ends of the encoder blocks: the residual
ELU + LayerNorm of every :class:`~gnn.layers.blocks.ConvBlock` and the whole of
:class:`~gnn.layers.blocks.LayerAttention` but its projection. Both are a handful of elementwise passes in
torch (and torch's ``elu`` and ``tanh`` run 3-4x slower than an add on CPUs without AVX-512); here each is
one pass over its rows forward and one backward.

**Residual ELU + LayerNorm** (``N`` rows of width ``D``, LayerNorm weight ``\gamma``, bias ``\beta``):

.. math::
    x = h + \mathrm{ELU}(c),\qquad \hat x = (x - \mu(x))\, \rho,\quad \rho = (\sigma^2(x) + \epsilon)^{-1/2},
    \qquad out = \hat x \odot \gamma + \beta, \\
    \tilde g = g \odot \gamma,\qquad
    dh = \rho\,\big(\tilde g - \overline{\tilde g} - \hat x\, \overline{\tilde g \odot \hat x}\big),\qquad
    dc = dh \odot \mathrm{ELU}'(c),\qquad d\gamma = \textstyle\sum_i g \odot \hat x,\quad d\beta = \sum_i g,

with ``\mu``, ``\sigma^2`` (biased) and the bars the means over the ``D`` columns of a row. Shapes:
``h, c, out (N, D)``; kept for the backward: ``c``, ``\hat x (N, D)`` and ``\rho (N,)``.

**Layer attention** over ``L`` views of ``N`` nodes, with ``p = W h + b`` the projection (computed before,
by :class:`~gnn.layers.linear.Linear`) and ``q`` the query:

.. math::
    s_{l,i} = \textstyle\sum_k q_k \tanh(p_{l,i,k}),\qquad \beta_{i,\cdot} = \mathrm{softmax}_l(s_{\cdot,i}),
    \qquad z_i = \textstyle\sum_l \beta_{i,l}\, h_{l,i}, \\
    a_{l,i} = \langle g_i, h_{l,i}\rangle,\quad ds_{l,i} = \beta_{i,l}\big(a_{l,i} - \textstyle\sum_m
    \beta_{i,m} a_{m,i}\big),\quad dh_{l,i} = \beta_{i,l}\, g_i,\quad
    dp_{l,i} = ds_{l,i}\; q \odot (1 - \tanh^2 p_{l,i}),\quad dq = \textstyle\sum_{l,i} ds_{l,i} \tanh p_{l,i}.

Shapes: ``p (L, N, K)``, ``h (L, N, D)``, ``q (K,)``, ``z (N, D)``, ``\beta (N, L)``; ``\tanh`` is
recomputed in the backward rather than kept.

Rows are split into one contiguous block per thread (``torch.get_num_threads()``); parameter gradients are
summed per block in float64, then across blocks. In float32 ``exp`` (of ELU and of ``\tanh``) is a
vectorised polynomial with a relative error of about 1e-7; float64 calls the C library. The numbers are the
composed torch operations' to float rounding (``tests/test_gnn_fused_blocks.py``). Without a C compiler, on
a GPU, under autocast, with dropout while training, or with ``TXPERT_FUSED_BLOCKS=0``, the layers compose
torch operations.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from gnn.backends.compiled import CompiledLibrary
from gnn.layers.linear import cpu_autocast_on

SOURCE = Path(__file__).with_suffix(".c")
ENV_SWITCH = "TXPERT_FUSED_BLOCKS"   # "0": always compose torch operations instead

_I64, _PTR = ctypes.c_int64, ctypes.c_void_p


def _declare(lib: ctypes.CDLL) -> None:
    for sfx, real in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
        getattr(lib, f"tbk_residual_elu_norm_forward_{sfx}").argtypes = [_I64] * 3 + [_PTR] * 4 + [real] + [_PTR] * 3
        getattr(lib, f"tbk_residual_elu_norm_backward_{sfx}").argtypes = [_I64] * 3 + [_PTR] * 9
        getattr(lib, f"tbk_layer_attention_forward_{sfx}").argtypes = [_I64] * 5 + [_PTR] * 5
        getattr(lib, f"tbk_layer_attention_backward_{sfx}").argtypes = [_I64] * 5 + [_PTR] * 8
        for kind in ("residual_elu_norm_forward", "residual_elu_norm_backward", "layer_attention_forward",
                     "layer_attention_backward"):
            getattr(lib, f"tbk_{kind}_{sfx}").restype = ctypes.c_int


_KERNELS = CompiledLibrary(SOURCE, _declare, "the fused block kernels",
                           "encoder blocks compose torch operations instead (same numbers, slower)", ENV_SWITCH)


def available(*tensors: Tensor) -> bool:
    """Whether the kernels take these tensors: not switched off (``TXPERT_FUSED_BLOCKS=0``), kernels built,
    CPU, float32/64, one dtype, no autocast."""
    return not cpu_autocast_on() and _KERNELS.takes(*tensors)


def _call(name: str, dtype: torch.dtype, *args) -> None:
    _KERNELS.call(f"tbk_{name}", dtype, *args)


def _blocks(rows: int) -> int:
    return max(1, min(torch.get_num_threads(), rows))


class _ResidualEluNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: Tensor, c: Tensor, weight: Tensor, bias: Tensor, eps: float):
        h, c, weight, bias = (t.detach().contiguous() for t in (h, c, weight, bias))
        n, d = c.shape
        out, xhat, rstd = torch.empty_like(c), torch.empty_like(c), c.new_empty(n)
        _call("residual_elu_norm_forward", c.dtype, _blocks(n), n, d, h, c, weight, bias, eps, out, xhat, rstd)
        ctx.save_for_backward(c, xhat, rstd, weight)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        c, xhat, rstd, weight = ctx.saved_tensors
        n, d = c.shape
        nb = _blocks(n)
        dx, dc = torch.empty_like(c), torch.empty_like(c)
        dweight, dbias = (torch.zeros((nb, d), dtype=torch.float64) for _ in range(2))
        _call("residual_elu_norm_backward", c.dtype, nb, n, d, g.contiguous(), c, xhat, rstd, weight, dx, dc,
              dweight, dbias)
        return dx, dc, dweight.sum(0).to(c.dtype), dbias.sum(0).to(c.dtype), None


def residual_elu_norm(h: Tensor, c: Tensor, norm: torch.nn.LayerNorm) -> Tensor | None:
    """``norm(h + elu(c))`` for ``h, c (N, D)`` by the fused kernel (module docstring), or None when it does not
    take these tensors (:func:`available`; ``norm`` must have its affine weight and bias)."""
    if norm.weight is None or norm.bias is None or c.dim() != 2 or h.shape != c.shape or \
            tuple(norm.normalized_shape) != (c.shape[1],) or not available(h, c, norm.weight, norm.bias):
        return None
    return _ResidualEluNorm.apply(h, c, norm.weight, norm.bias, float(norm.eps))


class _LayerAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p: Tensor, h: Tensor, q: Tensor):
        p, h, q = (t.detach().contiguous() for t in (p, h, q))
        n_views, n, k = p.shape
        d = h.shape[2]
        z, beta = h.new_empty((n, d)), h.new_empty((n, n_views))
        _call("layer_attention_forward", h.dtype, _blocks(n), n_views, n, k, d, p, h, q, z, beta)
        ctx.save_for_backward(p, h, q, beta)
        ctx.mark_non_differentiable(beta)
        return z, beta

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor, _grad_beta: Tensor):
        p, h, q, beta = ctx.saved_tensors
        n_views, n, k = p.shape
        d = h.shape[2]
        nb = _blocks(n)
        dp, dh = torch.empty_like(p), torch.empty_like(h)
        dq = torch.zeros((nb, k), dtype=torch.float64)
        _call("layer_attention_backward", h.dtype, nb, n_views, n, k, d, p, h, q, beta, g.contiguous(), dp, dh, dq)
        return dp, dh, dq.sum(0).to(q.dtype)


def layer_attention(p: Tensor, h: Tensor, query: Tensor) -> tuple[Tensor, Tensor] | None:
    """``(z (N, D), beta (N, L))`` of the module docstring for ``p (L, N, K)``, ``h (L, N, D)`` and the query
    ``(K,)`` by the fused kernels, or None when they do not take these tensors (:func:`available`)."""
    if p.dim() != 3 or h.dim() != 3 or p.shape[:2] != h.shape[:2] or query.shape != (p.shape[2],) or \
            not available(p, h, query):
        return None
    return _LayerAttention.apply(p, h, query)
