"""Distributional training losses between a predicted and a true cell set of one perturbation.

TxPert trains with a mean squared error; the Virtual Cell Challenge community also matches the
*distribution* of predicted cells to that of the observed cells. This module provides, as plain
differentiable torch functions on the input's device and dtype:

* :func:`mse_loss` -- paired mean squared error (the TxPert loss);
* :func:`mmd2_rbf` -- squared maximum mean discrepancy with a multi-bandwidth RBF kernel;
* :func:`sliced_wasserstein1` -- sliced Wasserstein-1 distance over random 1-D projections;
* :func:`build_loss` -- a parser turning a spec such as ``"mse+0.5*mmd"`` into one callable
  ``loss(pred_cells, true_cells) -> scalar``; :func:`per_group_loss` averages any such loss over the
  perturbations of a batch.

Training (``txpert train --loss SPEC``, :mod:`txpert_head.training.trainer`) builds batches of k perturbations x m
cells for specs with ``mmd`` or ``sw1`` and fixes the sw1 directions once per step
(:meth:`CombinedLoss.fix_directions`), so a data-parallel run draws what a single process draws.

Shapes: a cell set is ``(n, G)`` (n cells, G genes); the predicted set ``(n, G)`` and the true set
``(m, G)`` may differ in size for MMD and SW1. Every loss returns a 0-d tensor.

This module depends only on torch (no other txpert_head module).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "DISTRIBUTIONAL_TERMS",
    "LOSS_TERMS",
    "LossSpecError",
    "build_loss",
    "mmd2_rbf",
    "mse_loss",
    "parse_loss_spec",
    "per_group_loss",
    "sliced_wasserstein1",
    "wasserstein1_1d",
]

DEFAULT_SCALES = (0.5, 1.0, 2.0)
DEFAULT_PROJECTIONS = 64

SetLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_sets(x: torch.Tensor, y: torch.Tensor, name: str) -> None:
    if x.dim() != 2 or y.dim() != 2:
        raise ValueError(f"{name}: cell sets must be 2-D (n_cells, n_genes); got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{name}: gene dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    if x.shape[0] == 0 or y.shape[0] == 0:
        raise ValueError(f"{name}: empty cell set ({x.shape[0]} and {y.shape[0]} cells)")


# ----------------------------------------------------------------------------------------------
# MSE
# ----------------------------------------------------------------------------------------------
def mse_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Paired mean squared error ``(1/(n·G)) Σ_{i,g} (pred_ig − true_ig)²``; both ``(n, G)``.

    Cells are paired row by row (each predicted cell against the observed cell it was built for),
    as in TxPert training, so the two sets must have the same shape.
    """
    if pred.shape != true.shape:
        raise ValueError(f"mse: paired cells need equal shapes, got {tuple(pred.shape)} and {tuple(true.shape)}; "
                         "use mmd or sw1 to compare cell sets of different sizes")
    return torch.mean((pred - true) ** 2)


# ----------------------------------------------------------------------------------------------
# MMD
# ----------------------------------------------------------------------------------------------
def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances (n, m) via ||a||² + ||b||² − 2 a·b, clamped at 0."""
    d = (a * a).sum(1, keepdim=True) + (b * b).sum(1).unsqueeze(0) - 2.0 * a @ b.T
    return d.clamp_min(0.0)


def mmd2_rbf(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] | None = None,
             scales: Sequence[float] = DEFAULT_SCALES, unbiased: bool = False) -> torch.Tensor:
    """Squared maximum mean discrepancy between cell sets ``x`` (n, G) and ``y`` (m, G), RBF kernel.

    Kernel: an average of Gaussian kernels over several bandwidths,
    ``k(a, b) = (1/B) Σ_{β} exp(−||a − b||² / β)``. With ``bandwidths=None`` (default) the
    bandwidths are ``β = s · h`` for ``s`` in ``scales`` (0.5, 1, 2), where ``h`` is the median
    heuristic: the median squared distance over distinct pairs of the pooled set ``x ∪ y`` (the
    lower middle value for an even count, as ``torch.median``). ``h``
    is computed without gradient (a constant for back-propagation; otherwise a model could lower
    the loss by spreading its predictions to widen the kernel) and floored at 1e-12. Several
    bandwidths make the loss sensitive at several length scales at once; explicit ``bandwidths``
    (values of β = 2σ²) replace the heuristic.

    Estimator (default, ``unbiased=False``): the biased V-statistic::

        MMD²_b = (1/n²) Σ_{i,j} k(x_i, x_j) + (1/m²) Σ_{i,j} k(y_i, y_j) − (2/(n·m)) Σ_{i,j} k(x_i, y_j)

    which is the squared RKHS distance between the two empirical mean embeddings: symmetric,
    always >= 0, and exactly 0 when the two sets are equal -- the properties a training loss
    wants. ``unbiased=True`` gives the U-statistic (diagonal terms i = j dropped from the within-set
    sums, which need n, m >= 2); it is unbiased for the population MMD² but can be negative and is
    not 0 for identical finite sets.
    """
    _check_sets(x, y, "mmd")
    if unbiased and (x.shape[0] < 2 or y.shape[0] < 2):
        raise ValueError("mmd: the unbiased estimator needs at least 2 cells in each set")
    dxx, dyy, dxy = _sq_dists(x, x), _sq_dists(y, y), _sq_dists(x, y)
    if bandwidths is None:
        with torch.no_grad():
            pooled = torch.cat([x, y]).detach()
            d = _sq_dists(pooled, pooled)
            n = pooled.shape[0]
            off = d[~torch.eye(n, dtype=torch.bool, device=d.device)]
            h = off.median() if off.numel() else torch.ones((), dtype=d.dtype, device=d.device)
            h = h.clamp_min(1e-12)
        betas = [float(s) * h for s in scales]
    else:
        if len(bandwidths) == 0 or any(b <= 0 for b in bandwidths):
            raise ValueError(f"mmd: bandwidths must be positive, got {list(bandwidths)}")
        betas = [torch.as_tensor(float(b), dtype=x.dtype, device=x.device) for b in bandwidths]

    def kernel(d: torch.Tensor) -> torch.Tensor:
        return sum(torch.exp(-d / b) for b in betas) / len(betas)

    kxx, kyy, kxy = kernel(dxx), kernel(dyy), kernel(dxy)
    n, m = x.shape[0], y.shape[0]
    if unbiased:
        xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    else:
        xx, yy = kxx.mean(), kyy.mean()
    return xx + yy - 2.0 * kxy.mean()


# ----------------------------------------------------------------------------------------------
# Wasserstein-1
# ----------------------------------------------------------------------------------------------
def wasserstein1_1d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact Wasserstein-1 distance between 1-D empirical distributions, batched over columns.

    ``a`` (n, P), ``b`` (m, P): P pairs of samples with equal weights 1/n and 1/m; returns (P,).
    In 1-D, ``W1 = ∫₀¹ |F_a⁻¹(t) − F_b⁻¹(t)| dt`` with the empirical quantile functions
    ``F_a⁻¹(t) = a_(⌈t·n⌉)`` (order statistics). For n = m this is ``(1/n) Σ_i |a_(i) − b_(i)|``.
    For n ≠ m both quantile functions are step functions, constant between consecutive points of
    the merged grid ``{i/n} ∪ {j/m}``, so the integral is the exact finite sum
    ``Σ_k (t_k − t_{k−1}) · |a_(⌈t_k·n⌉) − b_(⌈t_k·m⌉)|`` (no interpolation error). Gradients flow
    through the sorted values.
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"wasserstein1_1d: need (n, P) and (m, P); got {tuple(a.shape)} and {tuple(b.shape)}")
    n, m = a.shape[0], b.shape[0]
    if n == 0 or m == 0:
        raise ValueError("wasserstein1_1d: empty sample")
    sa, sb = torch.sort(a, dim=0).values, torch.sort(b, dim=0).values
    if n == m:
        return (sa - sb).abs().mean(dim=0)
    # grid points as integers T = t·n·m in (0, n·m]: breakpoints i·m and j·n
    grid = torch.unique(torch.cat([torch.arange(1, n + 1) * m, torch.arange(1, m + 1) * n]))  # sorted
    widths = torch.diff(grid, prepend=torch.zeros(1, dtype=grid.dtype)).to(a.dtype) / (n * m)
    ia = torch.div(grid + m - 1, m, rounding_mode="floor") - 1  # ceil(T/m) − 1 = ⌈t·n⌉ − 1
    ib = torch.div(grid + n - 1, n, rounding_mode="floor") - 1
    ia, ib, widths = ia.to(a.device), ib.to(a.device), widths.to(a.device)
    return (widths.unsqueeze(1) * (sa[ia] - sb[ib]).abs()).sum(dim=0)


def _random_directions(n_genes: int, n_projections: int, generator: torch.Generator,
                       dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(G, P) unit vectors uniform on the sphere, drawn on the CPU from ``generator`` (so the draw is
    reproducible whatever the device) and then moved to ``device``."""
    theta = torch.randn(n_genes, n_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True).clamp_min(1e-300)
    return theta.to(dtype=dtype, device=device)


def sliced_wasserstein1(x: torch.Tensor, y: torch.Tensor, n_projections: int = DEFAULT_PROJECTIONS,
                        seed: int = 0, generator: torch.Generator | None = None,
                        directions: torch.Tensor | None = None) -> torch.Tensor:
    """Sliced Wasserstein-1 distance between cell sets ``x`` (n, G) and ``y`` (m, G).

    ``SW1(x, y) = (1/P) Σ_{p=1..P} W1(x·θ_p, y·θ_p)`` with P = ``n_projections`` directions θ_p
    drawn uniformly on the unit sphere in R^G, and the 1-D W1 computed exactly
    (:func:`wasserstein1_1d`, which handles n ≠ m). It is a Monte-Carlo estimate of the sliced
    distance; it is symmetric, >= 0, and 0 for equal sets. For G = 1 every direction is ±1, so SW1
    is the exact 1-D W1. Directions come from ``generator`` if given (its state advances, so a
    training loop gets fresh directions each step, reproducibly), else from a new generator seeded
    with ``seed`` (the same directions on every call). ``directions`` (G, P), unit columns, replaces the
    draw (``n_projections``, ``seed`` and ``generator`` are then ignored): a training step uses one set of
    directions for all perturbations of the batch (see :meth:`CombinedLoss.fix_directions`).
    """
    _check_sets(x, y, "sw1")
    if directions is not None:
        if directions.dim() != 2 or directions.shape[0] != x.shape[1] or directions.shape[1] < 1:
            raise ValueError(f"sw1: directions must be (n_genes={x.shape[1]}, P >= 1); got {tuple(directions.shape)}")
        theta = directions.to(dtype=x.dtype, device=x.device)
        return wasserstein1_1d(x @ theta, y @ theta).mean()
    if n_projections < 1:
        raise ValueError(f"sw1: n_projections must be >= 1, got {n_projections}")
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    theta = _random_directions(x.shape[1], n_projections, generator, x.dtype, x.device)
    return wasserstein1_1d(x @ theta, y @ theta).mean()


# ----------------------------------------------------------------------------------------------
# the --loss spec
# ----------------------------------------------------------------------------------------------
LOSS_TERMS = ("mse", "mmd", "sw1")
DISTRIBUTIONAL_TERMS = ("mmd", "sw1")


class LossSpecError(ValueError):
    """A ``--loss`` spec that cannot be parsed (unknown term, bad weight, repeated term)."""


_TERM = re.compile(r"^(?:(?P<w>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*\*\s*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")


def parse_loss_spec(spec: str) -> list[tuple[float, str]]:
    """Parse ``"mse"``, ``"mmd"``, ``"sw1"``, ``"mse+mmd"``, ``"mse+0.5*mmd"``, ``"2*sw1+mse"``.

    Grammar: terms joined by ``+``; each term is ``NAME`` (weight 1) or ``WEIGHT*NAME`` with a
    positive decimal weight; names are case-insensitive and each may appear once; spaces are
    ignored. Returns ``[(weight, name), ...]`` in spec order. Raises :class:`LossSpecError` with the
    offending term and the known names.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise LossSpecError(f"empty loss spec {spec!r}; use e.g. 'mse', 'mmd', 'sw1' or 'mse+0.5*mmd'")
    terms: list[tuple[float, str]] = []
    for raw in spec.replace(" ", "").split("+"):
        match = _TERM.match(raw)
        if not match:
            raise LossSpecError(f"cannot parse loss term {raw!r} in {spec!r}; "
                                "write NAME or WEIGHT*NAME, e.g. 'mse+0.5*mmd'")
        name = match["name"].lower()
        if name not in LOSS_TERMS:
            raise LossSpecError(f"unknown loss term {match['name']!r} in {spec!r}; known terms: {', '.join(LOSS_TERMS)}")
        weight = float(match["w"]) if match["w"] is not None else 1.0
        if not weight > 0:
            raise LossSpecError(f"loss term {raw!r} in {spec!r}: the weight must be positive")
        if any(n == name for _, n in terms):
            raise LossSpecError(f"loss term {name!r} appears twice in {spec!r}")
        terms.append((weight, name))
    return terms


@dataclass
class CombinedLoss:
    """``loss(pred, true) = Σ_k w_k · term_k(pred, true)`` for the terms of a parsed spec.

    ``pred`` (n, G), ``true`` (m, G) cells of one perturbation (n = m needed when ``mse`` is a term).
    ``last_terms`` keeps the detached value of each term of the latest call, for logging.
    """

    terms: list[tuple[float, str]]
    n_projections: int = DEFAULT_PROJECTIONS
    seed: int = 0
    mmd_scales: Sequence[float] = DEFAULT_SCALES

    def __post_init__(self) -> None:
        self._generator = torch.Generator().manual_seed(self.seed)
        self._directions: torch.Tensor | None = None
        self.last_terms: dict[str, float] = {}

    @property
    def spec(self) -> str:
        return "+".join(name if w == 1.0 else f"{w:g}*{name}" for w, name in self.terms)

    def fix_directions(self, n_genes: int, seed: int) -> None:
        """Draw the ``sw1`` directions (G, P) once from a generator seeded with ``seed`` and use them on every
        call until the next ``fix_directions`` (instead of fresh directions per call).

        Training calls this once per step with a seed derived from (run seed, epoch, step): every perturbation
        of the step is compared along the same directions, the draw does not depend on how many perturbations
        came before (so data-parallel ranks holding different perturbations agree with one process), and a
        resumed run redraws the same directions. No-op without an ``sw1`` term.
        """
        if not any(name == "sw1" for _, name in self.terms):
            return
        gen = torch.Generator().manual_seed(int(seed))
        self._directions = _random_directions(n_genes, self.n_projections, gen, torch.float64, torch.device("cpu"))

    def __call__(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        total = None
        for weight, name in self.terms:
            if name == "mse":
                value = mse_loss(pred, true)
            elif name == "mmd":
                value = mmd2_rbf(pred, true, scales=self.mmd_scales)
            else:  # sw1
                value = sliced_wasserstein1(pred, true, self.n_projections, generator=self._generator,
                                            directions=self._directions)
            self.last_terms[name] = float(value.detach())
            total = weight * value if total is None else total + weight * value
        return total


def build_loss(spec: str, n_projections: int = DEFAULT_PROJECTIONS, seed: int = 0,
               mmd_scales: Sequence[float] = DEFAULT_SCALES) -> CombinedLoss:
    """A callable ``loss(pred_cells, true_cells) -> 0-d tensor`` from a spec such as ``"mse+0.5*mmd"``.

    See :func:`parse_loss_spec` for the grammar; ``mmd`` is :func:`mmd2_rbf` (biased estimator,
    median-heuristic bandwidths × ``mmd_scales``), ``sw1`` is :func:`sliced_wasserstein1` with
    ``n_projections`` directions from a generator seeded once with ``seed`` (fresh, reproducible
    directions on each call).
    """
    return CombinedLoss(parse_loss_spec(spec), n_projections=n_projections, seed=seed, mmd_scales=mmd_scales)


def per_group_loss(loss: SetLoss, pred: torch.Tensor, true: torch.Tensor, group: torch.Tensor,
                   true_group: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over perturbation groups of ``loss(pred[group == g], true[true_group == g])``.

    ``pred`` (N, G) with integer ``group`` (N,); ``true`` (M, G) with ``true_group`` (M,) (defaults to
    ``group``, i.e. paired rows). Each perturbation in the batch weighs the same whatever its cell
    count. Groups present in ``group`` must also be present in ``true_group``.
    """
    true_group = group if true_group is None else true_group
    if group.shape[0] != pred.shape[0] or true_group.shape[0] != true.shape[0]:
        raise ValueError("per_group_loss: group labels must have one entry per row")
    values = []
    for g in torch.unique(group):
        sel_t = true_group == g
        if not bool(sel_t.any()):
            raise ValueError(f"per_group_loss: group {int(g)} has predicted cells but no true cells")
        values.append(loss(pred[group == g], true[sel_t]))
    return torch.stack(values).mean()
