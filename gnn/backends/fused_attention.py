r"""Fused CPU kernels for attention (C, compiled here on first use), one pass over the edges each: Exphormer's
typed dot-product attention, GATv2's attention, and the edge softmax followed by the weighted sum that GAT
ends with.

The math is :class:`gnn.layers.attention_convs.ExphormerAttention` on
:class:`gnn.edges.TypedEdgeFeatures`. ``N`` nodes, ``E`` edges ``j -> i``, ``H`` heads of ``C`` channels,
``T`` edge types; per edge a weight ``w_e`` (0 when the weight is not a feature) and a type ``t_e``:

.. math::
    \epsilon_e = w_e u + B_{t_e},\qquad
    r_{e,h} = \textstyle\sum_c q_{i,h,c}\, k_{j,h,c}\, \epsilon_{e,h,c},\qquad
    s_{e,h} = \mathrm{clamp}(r_{e,h} / \sqrt{C}, -\kappa, \kappa), \\
    \alpha_{e,h} = \frac{\exp(s_{e,h} - \max_{e' \to i} s_{e',h})}{\sum_{e' \to i} \exp(s_{e',h} - \max) + 10^{-16}},
    \qquad out_{i,h} = \textstyle\sum_{e = (j \to i)} \alpha_{e,h}\, v_{j,h}.

Shapes: ``q, k, v (N, H, C)``, ``u (H, C)``, ``B (T, H, C)``, out ``(N, H, C)``, ``alpha (E, H)``.

Backward, with ``g = dL/d out``:

.. math::
    a_{e,h} = \langle g_{i,h}, v_{j,h}\rangle,\quad
    d_{e,h} = \alpha_{e,h}\big(a_{e,h} - \textstyle\sum_{e' \to i} \alpha_{e',h} a_{e',h}\big)
              [|r_{e,h}|/\sqrt{C} \le \kappa] / \sqrt{C}, \\
    dv_j = \textstyle\sum_{e = (j \to i)} \alpha_e g_i,\quad
    dq_i = \sum_{e \to i} d_e\, k_j \odot \epsilon_e,\quad
    dk_j = \sum_{e = (j \to i)} d_e\, q_i \odot \epsilon_e,\quad
    du = \sum_e w_e d_e\, q_i \odot k_j,\quad dB_t = \sum_{e: t_e = t} d_e\, q_i \odot k_j.

Three kernels, each one pass over the edges with no ``(E, C)`` tensor: the forward by target (CSR rows), the
first backward pass by target (``a``, ``d``, ``dq`` and the parameter gradients ``du``, ``dB``, which are row
sums ``q_i \odot \sum_e d_e k_j`` split by weight and type), the second by source (``dv``, ``dk``, over the
transposed CSR; the first backward pass writes ``alpha`` and ``d`` side by side in by-source order for it,
so the second reads them in sequence). The kernels are bound by the row gathers ``k_j``, ``v_j``, ``q_i``,
``g_i`` (two per edge in every pass) and the first backward pass's scattered records; they prefetch both 16
edges ahead, since the index arrays know the addresses the hardware prefetcher cannot guess. Each pass then
runs at about the speed of torch's CSR sparse x dense product gathering the same bytes
(``benchmarks/bench_attention.py`` measures both; renumbering the nodes by Cuthill-McKee or by degree did not
make them faster on the merged real graph). The head shapes in common use (``H * C`` of 32, 64 or 128) are
compiled with constant sizes; indices are int32 and edge types uint8, to stream fewer bytes past the
gathered rows.
The softmax-and-sum kernels (:func:`softmax_sum`, what GAT and GATv2 aggregate with) take any scores
``s (E, H)`` in the edge set's order and source rows ``x (N, H, C)``:

.. math::
    \alpha_{e,h} = \frac{\exp(s_{e,h} - \max_{e' \to i} s_{e',h})}{\sum_{e' \to i} \exp(s_{e',h} - \max)
    + 10^{-16}},\qquad out_{i,h} = \textstyle\sum_{e = (j \to i)} \alpha_{e,h}\, x_{j,h}, \\
    t_{e,h} = \alpha_{e,h} \langle g_{i,h}, x_{j,h}\rangle,\quad
    ds_{e,h} = t_{e,h} - \alpha_{e,h} \textstyle\sum_{e' \to i} t_{e',h},\quad
    dx_j = \textstyle\sum_{e = (j \to i)} \alpha_e g_i,

the forward and ``ds`` by target, ``dx`` by source, the same three-pass layout as above with one gathered row
per edge and pass instead of two. The second backward pass reads ``alpha`` where the forward left it, at
``tpos``, the by-target position of each by-source position (a gathered read, prefetched); the first writes
nothing for it. Scattering a copy of ``alpha`` into by-source order instead made the two backward passes of
``gat`` on the merged real graph slower: 20-26 ms per step against 18-20.
``ds`` is ``t - alpha * sum t`` in that order, as PyG's softmax backward computes it, so float32 rounding
stays close to the composed primitives'.

GATv2's attention (:func:`gatv2_attention`) on factored edge features ``W_e f_e = w_e u + B_{t_e}``, with
``l = W_l x + b_l`` and ``r = W_r x + b_r`` ``(N, H, C)``, ``a`` the attention vector ``(H, C)`` and
``\sigma`` the LeakyReLU:

.. math::
    z_e = l_j + r_i + w_e u + B_{t_e},\qquad s_{e,h} = \textstyle\sum_c a_{h,c}\, \sigma(z_{e,h,c}),\qquad
    \alpha = \mathrm{softmax}(s),\qquad out_i = \textstyle\sum_{e = (j \to i)} \alpha_e\, l_j, \\
    \delta_e = ds_e\, a \odot \sigma'(z_e),\quad dr_i = \textstyle\sum_{e \to i} \delta_e,\quad
    dl_j = \textstyle\sum_{e = (j \to i)} (\alpha_e g_i + \delta_e),\quad
    da = \textstyle\sum_e ds_e\, \sigma(z_e),\quad du = \sum_e w_e \delta_e,\quad
    dB_t = \textstyle\sum_{e: t_e = t} \delta_e,

with ``ds`` as for the softmax-and-sum. The first backward pass writes its ``(alpha, ds)`` records in
by-target order, in sequence, and the second gathers them at ``tpos``. Over the ``gat-mlg`` supra-graph of
the merged real graph (83,308 nodes, 1.2 million edges) the three passes took 152-157 ms per step this way
(with the grouped parameter sums below), 174-193 ms with the records scattered into by-source order; the
Exphormer kernels' backward, whose first pass has more work to hide its scattered writes behind, was
slower with gathered records (133-143 ms against 129-132 for ``exphormer-mg``) and keeps scattering them.
``z`` is recomputed in each pass instead of stored, so no
``(E, H, C)`` tensor exists (the composed layer makes three); the parameter sums ``da, du, dB`` run over
32 target rows at a time in the working precision and across those groups in float64 (flushed after every
row, the ``T + 2`` accumulators cost about as much as the edges of an average row).

In float32 the softmax's ``exp`` (of ``s - max <= 0``) is the vectorised polynomial of
``gnn/backends/fast_math.h`` (relative error about 1e-7), which the fused block kernels share: libm's
``expf``, a call per edge and head, took a quarter of the GATv2 forward on the merged real graph's GO layer
(12.8 -> 9.4 ms on a 2-core Zen 3). Float64 calls libm's ``exp``.

Rows are split into contiguous blocks of about equal edge counts, one per thread (OpenMP,
``torch.get_num_threads()`` threads, in the runtime torch runs on). Summation order differs from the
composed primitives, so results agree to float rounding; they do not depend on the thread count except
for the per-block partial sums of the parameter gradients (``du``, ``dB``, ``da``).
"""

from __future__ import annotations

import ctypes
import math
import threading
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from gnn.backends.compiled import CompiledLibrary

SOURCE = Path(__file__).with_suffix(".c")
ENV_SWITCH = "TXPERT_FUSED_ATTENTION"   # "0": always compose the primitives instead

_I64, _PTR = ctypes.c_int64, ctypes.c_void_p


def _declare(lib: ctypes.CDLL) -> None:
    for sfx, real in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
        head = [_I64, _PTR, _I64, _I64, _I64]   # blocks, bounds, H, C, T
        getattr(lib, f"txk_forward_{sfx}").argtypes = head + [_PTR] * 9 + [real, real] + [_PTR] * 3
        getattr(lib, f"txk_backward_by_target_{sfx}").argtypes = head + [_PTR] * 9 + [real] + [_PTR] * 8
        getattr(lib, f"txk_backward_by_source_{sfx}").argtypes = head + [_PTR] * 11
        head = [_I64, _PTR, _I64, _I64]         # blocks, bounds, H, C
        getattr(lib, f"txk_softmax_sum_forward_{sfx}").argtypes = head + [_PTR] * 7
        getattr(lib, f"txk_softmax_sum_backward_by_target_{sfx}").argtypes = head + [_PTR] * 7
        getattr(lib, f"txk_softmax_sum_backward_by_source_{sfx}").argtypes = head + [_PTR] * 6
        head = [_I64, _PTR, _I64, _I64, _I64]   # blocks, bounds, H, C, T
        getattr(lib, f"txk_gatv2_forward_{sfx}").argtypes = head + [_PTR] * 9 + [real] + [_PTR] * 2
        getattr(lib, f"txk_gatv2_backward_by_target_{sfx}").argtypes = head + [_PTR] * 9 + [real] + [_PTR] * 7
        getattr(lib, f"txk_gatv2_backward_by_source_{sfx}").argtypes = head + [_PTR] * 9 + [real] + [_PTR] * 4
        for kind in ("forward", "backward_by_target", "backward_by_source", "softmax_sum_forward",
                     "softmax_sum_backward_by_target", "softmax_sum_backward_by_source", "gatv2_forward",
                     "gatv2_backward_by_target", "gatv2_backward_by_source"):
            getattr(lib, f"txk_{kind}_{sfx}").restype = ctypes.c_int


_KERNELS = CompiledLibrary(SOURCE, _declare, "the fused attention kernels",
                           "Exphormer and GAT layers compose the graph primitives instead (same numbers, slower)",
                           ENV_SWITCH)


def library() -> ctypes.CDLL | None:
    """The compiled kernels (compiled on first use, then loaded from the kernel cache:
    :meth:`gnn.backends.compiled.CompiledLibrary.path`), or None when they cannot be built here (one warning
    says why)."""
    return _KERNELS.load()


def kernel_path() -> Path:
    """Where the compiled kernels are kept (``.ci``'s wheel check reads it)."""
    return _KERNELS.path()


def available(*tensors: Tensor) -> bool:
    """Whether the fused kernels take these tensors: not switched off (``TXPERT_FUSED_ATTENTION=0``), kernels
    built, CPU, float32/64, one dtype."""
    return _KERNELS.takes(*tensors)


def _bounds(indptr: np.ndarray, parts: int) -> np.ndarray:
    """Row-block boundaries ``(B + 1,)``, int64: contiguous row ranges with about equal edge counts, ``parts``
    of them (fewer when rows are few)."""
    n = len(indptr) - 1
    cuts = np.searchsorted(indptr, np.linspace(0, indptr[-1], parts + 1)[1:-1])
    return np.unique(np.concatenate([[0], np.clip(cuts, 0, n), [n]])).astype(np.int64)


class TypedAttentionIndex:
    """The edges in the layouts every kernel family here reads (Exphormer, GATv2, softmax-and-sum): by target
    (CSR ``indptr``, source ``col``, type ``typ``, weight ``w`` per stored entry, edge id ``eid``) and by source
    (``tptr``, target ``tdst``, type ``ttyp``, weight ``tw``; ``tpos`` maps a by-source position to its
    by-target one, ``tinv`` the other way). ``etype`` None: every edge is type 0; ``weight`` None: every
    ``w_e = 0`` (the weight is not a feature). Built once per edge set, weights and types (the graph handle
    caches it)."""

    def __init__(self, src: Tensor, dst: Tensor, num_nodes: int, weight: Tensor | None, etype: Tensor | None):
        s, t = src.cpu().numpy(), dst.cpu().numpy()
        e = len(s)
        order = np.lexsort((s, t))                               # by target, then source
        self.num_nodes, self.num_edges = int(num_nodes), e
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(t, minlength=num_nodes))]).astype(np.int64)
        self.col = s[order].astype(np.int32)
        typ = np.zeros(e, np.uint8) if etype is None else etype.cpu().numpy()
        if typ.size and (typ.min() < 0 or typ.max() > 255):
            raise ValueError(f"edge types must lie in [0, 255] for the fused kernels, got {typ.min()}..{typ.max()}")
        typ = typ.astype(np.uint8)
        w = np.zeros(e, np.float64) if weight is None else weight.detach().cpu().double().numpy()
        self.typ, self._eid_tensor = typ[order], torch.from_numpy(order)
        self.eid = order.astype(np.int32)                         # by-target position -> edge id
        self._w = w[order]
        back = np.lexsort((t[order], s[order]))                  # by-target positions, sorted by source
        self.tptr = np.concatenate([[0], np.cumsum(np.bincount(s, minlength=num_nodes))]).astype(np.int64)
        self.tdst = t[order][back].astype(np.int32)
        self.tpos = back.astype(np.int32)                        # by-source position -> by-target position
        self.tinv = np.empty(e, np.int32)                        # by-target position -> by-source position
        self.tinv[back] = np.arange(e, dtype=np.int32)
        self.ttyp, self._tw = self.typ[back], self._w[back]
        self.num_types = int(typ.max()) + 1 if e else 1
        self._cast: dict[torch.dtype, tuple[Tensor, Tensor]] = {}
        self._parts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._work: dict[tuple[torch.dtype, tuple[int, ...]], Tensor] = {}
        self.lock = threading.Lock()

    def weights(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``w`` by target and by source in ``dtype``."""
        hit = self._cast.get(dtype)
        if hit is None:
            hit = self._cast[dtype] = (torch.from_numpy(self._w).to(dtype), torch.from_numpy(self._tw).to(dtype))
        return hit

    def edge_order(self, by_target: Tensor) -> Tensor:
        """An ``(E, ...)`` tensor in by-target order, in the edge set's order."""
        return torch.empty_like(by_target).index_copy_(0, self._eid_tensor, by_target)

    def workspace(self, dtype: torch.dtype, shape: tuple[int, ...]) -> Tensor:
        """A scratch tensor the backward reuses from step to step (freshly mapped memory would cost a page
        fault per 4 KB on every call). Backward passes on one index run one at a time (autograd's CPU
        engine); the lock keeps two threads' backward passes from sharing it."""
        hit = self._work.get((dtype, shape))
        if hit is None:
            hit = self._work[(dtype, shape)] = torch.empty(shape, dtype=dtype)
        return hit

    def blocks(self) -> tuple[np.ndarray, np.ndarray]:
        """Row-block boundaries by target and by source, one block per thread torch uses."""
        n = max(1, torch.get_num_threads())
        hit = self._parts.get(n)
        if hit is None:
            hit = self._parts[n] = (_bounds(self.indptr, n), _bounds(self.tptr, n))
        return hit


def _call(name: str, dtype: torch.dtype, bounds: np.ndarray, *args) -> None:
    """Run kernel ``name`` (its float32 or float64 build) over the row blocks ``bounds``."""
    _KERNELS.call(f"txk_{name}", dtype, len(bounds) - 1, bounds, *args)


class _TypedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, u: Tensor, b: Tensor, index: TypedAttentionIndex,
                scale: float, clamp: float):
        q, k, v, u, b = (t.detach().contiguous() for t in (q, k, v, u, b))
        _, n_heads, n_ch = q.shape
        e = index.num_edges
        out = torch.empty_like(q)
        alpha = q.new_empty((e, n_heads))
        keep = torch.empty((e, n_heads), dtype=torch.uint8)
        w, _ = index.weights(q.dtype)
        by_target, _ = index.blocks()
        _call("forward", q.dtype, by_target, n_heads, n_ch, b.shape[0], index.indptr, index.col, index.typ, w,
              q, k, v, u, b, scale, clamp, out, alpha, keep)
        ctx.save_for_backward(q, k, v, u, b, alpha, keep)
        ctx.index, ctx.scale = index, scale
        ctx.mark_non_differentiable(alpha)
        return out, alpha

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor, _grad_alpha: Tensor):
        q, k, v, u, b, alpha, keep = ctx.saved_tensors
        index = ctx.index
        _, n_heads, n_ch = q.shape
        g = grad.contiguous()
        by_target, by_source = index.blocks()
        w, tw = index.weights(q.dtype)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        # every block accumulates the parameter gradients into its own slice: no two threads write one buffer
        du = u.new_zeros((len(by_target) - 1,) + tuple(u.shape))
        db = b.new_zeros((len(by_target) - 1,) + tuple(b.shape))
        with index.lock:
            ad = index.workspace(alpha.dtype, (alpha.shape[0], 2, n_heads))   # alpha and d side by side
            _call("backward_by_target", q.dtype, by_target, n_heads, n_ch, b.shape[0], index.indptr, index.col,
                  index.typ, w, q, k, v, u, b, ctx.scale, g, alpha, keep, index.tinv, ad, dq, du, db)
            _call("backward_by_source", q.dtype, by_source, n_heads, n_ch, b.shape[0], index.tptr, index.tdst,
                  index.ttyp, tw, q, u, b, g, ad, dk, dv)
        return dq, dk, dv, du.sum(0), db.sum(0), None, None, None


class _SoftmaxSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, score: Tensor, x: Tensor, index: TypedAttentionIndex):
        score, x = score.detach().contiguous(), x.detach().contiguous()
        out = torch.empty_like(x)
        alpha = score.new_empty(score.shape)
        by_target, _ = index.blocks()
        _call("softmax_sum_forward", x.dtype, by_target, x.shape[1], x.shape[2], index.indptr, index.col, index.eid,
              score, x, out, alpha)
        ctx.save_for_backward(x, alpha)
        ctx.index = index
        ctx.mark_non_differentiable(alpha)
        return out, alpha

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor, _grad_alpha: Tensor):
        x, alpha = ctx.saved_tensors
        index = ctx.index
        g = grad.contiguous()
        by_target, by_source = index.blocks()
        dscore, dx = torch.empty_like(alpha), torch.empty_like(x)
        _call("softmax_sum_backward_by_target", x.dtype, by_target, x.shape[1], x.shape[2], index.indptr,
              index.col, index.eid, x, g, alpha, dscore)
        _call("softmax_sum_backward_by_source", x.dtype, by_source, x.shape[1], x.shape[2], index.tptr,
              index.tdst, index.tpos, alpha, g, dx)
        return dscore, dx, None


def softmax_sum(score: Tensor, x: Tensor, index: TypedAttentionIndex) -> tuple[Tensor, Tensor]:
    """``(out (N, H, C), alpha (E, H))``: ``alpha = softmax`` of ``score (E, H)`` (edge order) over each target's
    incoming edges, ``out_i = sum_e alpha_e x_j`` (module docstring), differentiable in ``score`` and ``x``;
    ``alpha`` (no gradient) in by-target order, like :func:`typed_attention`'s."""
    return _SoftmaxSum.apply(score, x, index)


class _GATv2Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, l: Tensor, r: Tensor, u: Tensor, b: Tensor, att: Tensor, index: TypedAttentionIndex,
                slope: float):
        l, r, u, b, att = (t.detach().contiguous() for t in (l, r, u, b, att))
        _, n_heads, n_ch = l.shape
        out = torch.empty_like(l)
        alpha = l.new_empty((index.num_edges, n_heads))
        w, _ = index.weights(l.dtype)
        by_target, _ = index.blocks()
        _call("gatv2_forward", l.dtype, by_target, n_heads, n_ch, b.shape[0], index.indptr, index.col, index.typ, w,
              l, r, u, b, att, slope, out, alpha)
        ctx.save_for_backward(l, r, u, b, att, alpha)
        ctx.index, ctx.slope = index, slope
        ctx.mark_non_differentiable(alpha)
        return out, alpha

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor, _grad_alpha: Tensor):
        l, r, u, b, att, alpha = ctx.saved_tensors
        index = ctx.index
        _, n_heads, n_ch = l.shape
        g = grad.contiguous()
        by_target, by_source = index.blocks()
        w, tw = index.weights(l.dtype)
        dl, dr = torch.empty_like(l), torch.empty_like(r)
        # every block sums the parameter gradients over its edges into its own slice, in float64
        blocks = len(by_target) - 1
        du, db, datt = (torch.zeros((blocks,) + tuple(t.shape), dtype=torch.float64) for t in (u, b, att))
        with index.lock:
            ad = index.workspace(alpha.dtype, (alpha.shape[0], 2, n_heads))   # alpha and ds side by side
            _call("gatv2_backward_by_target", l.dtype, by_target, n_heads, n_ch, b.shape[0], index.indptr, index.col,
                  index.typ, w, l, r, u, b, att, ctx.slope, g, alpha, ad, dr, du, db, datt)
            _call("gatv2_backward_by_source", l.dtype, by_source, n_heads, n_ch, b.shape[0], index.tptr, index.tdst,
                  index.ttyp, tw, l, r, u, b, att, ctx.slope, g, index.tpos, ad, dl)
        return dl, dr, du.sum(0).to(u.dtype), db.sum(0).to(b.dtype), datt.sum(0).to(att.dtype), None, None


def gatv2_attention(l: Tensor, r: Tensor, u: Tensor, b: Tensor, att: Tensor, index: TypedAttentionIndex,
                    negative_slope: float) -> tuple[Tensor, Tensor]:
    """GATv2's attention on factored edge features (module docstring): ``(out (N, H, C), alpha (E, H))``,
    differentiable in ``l, r (N, H, C)``, ``u (H, C)``, ``b (T, H, C)`` and ``att (H, C)``; ``alpha`` (no
    gradient) in by-target order, like :func:`typed_attention`'s."""
    if b.shape[0] < index.num_types:
        raise ValueError(f"the edges have {index.num_types} types but B has {b.shape[0]} rows")
    return _GATv2Attention.apply(l, r, u, b, att, index, float(negative_slope))


def typed_attention(q: Tensor, k: Tensor, v: Tensor, u: Tensor, b: Tensor, index: TypedAttentionIndex,
                    clamp: float) -> tuple[Tensor, Tensor]:
    """``(out (N, H, C), alpha (E, H))`` of the module docstring, differentiable in ``q, k, v, u, b``;
    ``alpha`` (no gradient) in the kernels' by-target order: :meth:`TypedAttentionIndex.edge_order` puts it
    in the edge set's order (a permutation the layer leaves until someone reads the attention)."""
    if b.shape[0] < index.num_types:
        raise ValueError(f"the edges have {index.num_types} types but B has {b.shape[0]} rows")
    return _TypedAttention.apply(q, k, v, u, b, index, 1.0 / math.sqrt(q.shape[-1]), float(clamp))
