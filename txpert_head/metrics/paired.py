"""Paired comparison of two methods scored on the same perturbations (is the model really above a baseline?).

Test splits of real screens are small (a handful to a few dozen perturbations), so a difference of means
alone says little. For per-perturbation scores ``a_p`` (e.g. TxPert's Pearson Δ) and ``b_p`` (a baseline's)
on the same P perturbations, with differences ``d_p = a_p − b_p``:

* ``difference``: ``d̄ = mean_p d_p`` (equal to the difference of the two means).
* ``p_value``: two-sided sign-flip randomisation test of "no difference" (the d_p are symmetric about 0).
  For a shift δ let ``p(δ)`` be the share of sign vectors ``s`` with
  ``|mean_p s_p (d_p − δ)| ≥ |mean_p (d_p − δ)| − 1e-12``; ``p_value = p(0)``. The sign vectors are all
  ``2^P`` of ``{−1, 1}^P`` (exact) for ``P ≤ exact_max``, else ``n_perm`` random ones drawn with ``seed``
  and ``p(δ) = (count + 1) / (n_perm + 1)`` (the observed vector counted once).
* ``min_p``: the smallest p the test can give: ``2 / 2^P`` exact (only ``s = ±1`` always reach the observed
  value), ``1 / (n_perm + 1)`` with random flips. With P = 4 it is 0.125: four perturbations cannot show a
  difference at the 5% level, whichever way it goes.
* ``ci_low`` / ``ci_high``: the test inverted, ``{δ : p(δ) ≥ 1 − level}`` (default level 0.95) -- the shifts
  of the mean difference that the same sign-flip test does not reject. So the interval contains 0 exactly
  when ``p_value ≥ 1 − level``. It is an interval: writing ``δ = d̄ ± e`` (e ≥ 0), ``u_s = Σ_p s_p (d_p − d̄)``
  and ``b_s = Σ_p s_p``, sign vector s counts at δ iff ``|u_s ∓ b_s e| ≥ P e``, which (as ``|b_s| ≤ P``)
  stays true for every smaller e, so ``p`` never increases moving away from d̄ (where it is 1). Each
  indicator can only switch off at a root ``e = ±u_s / (P ± b_s)``; the bound is the largest positive root
  (on each side) at which ``p ≥ 1 − level``, found by bisection on the sorted roots (p is evaluated at
  O(log of their number) points). When ``min_p ≥ 1 − level`` no shift is ever rejected and the bounds are
  ``−inf`` / ``+inf`` (``null`` in JSON). The interval need not be symmetric about d̄.
* ``boot_low`` / ``boot_high``: percentile bootstrap interval of ``d̄`` at ``level``: resample the P
  perturbations with replacement ``n_boot`` times, take the (1 − level)/2 and (1 + level)/2 quantiles of the
  resampled means. Kept for reference only: with few perturbations it is too narrow (it cannot see
  variation the sample does not show) and can exclude 0 while p is large.
* ``wins``: ``|{p : d_p > 0}|`` of ``n`` perturbations (ties count for neither).

Perturbations where either score is NaN are left out (``n`` counts the rest).
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

__all__ = ["paired_comparison", "describe_comparison"]

TOL = 1e-12  # in units of mean differences: a sign vector reaching the observed value up to rounding counts


def _sign_vectors(n: int, exact_max: int, n_perm: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    if n <= exact_max:
        return np.array(list(itertools.product((-1.0, 1.0), repeat=n))), True
    return rng.choice((-1.0, 1.0), size=(n_perm, n)), False


def _p_of(u: np.ndarray, b: np.ndarray, n: int, e: float, exact: bool) -> float:
    """p(d̄ + e) for sign-vector sums ``u = signs @ (d − d̄)``, ``b = signs.sum(1)`` (use −b for d̄ − e)."""
    count = int(np.sum(np.abs(u - b * e) / n >= abs(e) - TOL))
    return count / len(u) if exact else (count + 1) / (len(u) + 1)


def _bound(u: np.ndarray, b: np.ndarray, n: int, alpha: float, exact: bool) -> float:
    """Largest e ≥ 0 with p(d̄ + e) ≥ alpha (module docstring); inf when no e is rejected."""
    if _p_of(u, b, n, 1e300, exact) >= alpha:  # only |b_s| = n counts far out: the min_p of the test
        return float("inf")
    with np.errstate(divide="ignore", invalid="ignore"):
        roots = np.concatenate([u / (n + b), -u / (n - b)])
    roots = np.unique(roots[np.isfinite(roots) & (roots > 0)])
    lo, hi, best = 0, len(roots) - 1, 0.0  # p is non-increasing in e: bisect for the last accepted root
    while lo <= hi:
        mid = (lo + hi) // 2
        if _p_of(u, b, n, float(roots[mid]), exact) >= alpha:
            best, lo = float(roots[mid]), mid + 1
        else:
            hi = mid - 1
    return best


def paired_comparison(a: Sequence[float], b: Sequence[float], level: float = 0.95, n_boot: int = 10_000,
                      n_perm: int = 20_000, exact_max: int = 16, seed: int = 0) -> dict[str, float | int]:
    """Paired difference of per-perturbation scores ``a`` and ``b`` (both (P,), same order); see the module
    docstring for the formulas. Returns ``{"difference", "ci_low", "ci_high", "level", "p_value", "min_p",
    "boot_low", "boot_high", "wins", "n"}`` (NaN difference, intervals and p when no perturbation has both
    scores; ``ci_low``/``ci_high`` are ∓inf when P is too small to reject any shift at ``1 − level``)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores must be two vectors of the same length, got {a.shape} and {b.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]
    n = int(d.size)
    nan = float("nan")
    out: dict[str, float | int] = {"difference": nan, "ci_low": nan, "ci_high": nan, "level": level,
                                   "p_value": nan, "min_p": nan, "boot_low": nan, "boot_high": nan,
                                   "wins": int((d > 0).sum()), "n": n}
    if n == 0:
        return out
    rng = np.random.default_rng(seed)
    observed = float(d.mean())
    boot = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    boot_lo, boot_hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    signs, exact = _sign_vectors(n, exact_max, n_perm, rng)
    u = signs @ (d - observed)
    bs = signs.sum(axis=1)
    # p(0): e = −d̄ on the upper side's parametrisation, |u + b d̄| = |signs @ d|
    p = _p_of(u, bs, n, -observed, exact)
    alpha = (1 - level) * (1 - 1e-9)  # 1 − 0.95 is 0.05000000000000004 in floating point
    hi_e = _bound(u, bs, n, alpha, exact)
    lo_e = _bound(u, -bs, n, alpha, exact)
    out.update(difference=observed, ci_low=observed - lo_e, ci_high=observed + hi_e, p_value=p,
               min_p=2.0 / 2 ** n if exact else 1.0 / (n_perm + 1),
               boot_low=float(boot_lo), boot_high=float(boot_hi))
    return out


def _signed(v) -> str:
    if v is None:
        return "unbounded"
    v = float(v)
    return f"{v:+.3f}" if np.isfinite(v) else ("-∞" if v < 0 else "+∞")


def describe_comparison(c: dict, metric: str = "Pearson Δ") -> str:
    """One line for people: ``+0.052 [95% CI −0.010, +0.110], better on 7/10, sign-flip p 0.08``, plus
    ``; with 4 perturbations no p below 0.125 is possible`` when ``min_p`` ≥ 0.05. The interval is the
    inverted sign-flip test (module docstring)."""
    if not c["n"] or c["difference"] is None or c["difference"] != c["difference"]:
        return f"{metric}: no perturbation scored by both"
    pct = round(100 * c["level"])
    text = (f"{metric} {c['difference']:+.3f} [{pct}% CI {_signed(c['ci_low'])}, {_signed(c['ci_high'])}], "
            f"better on {c['wins']}/{c['n']}, sign-flip p {c['p_value']:.3g}")
    min_p = c.get("min_p")
    if min_p is not None and min_p == min_p and min_p >= 0.05:
        text += f"; with {c['n']} perturbations no p below {min_p:.3g} is possible"
    return text
