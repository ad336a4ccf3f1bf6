"""Paired comparison of two methods scored on the same perturbations (is the model really above a baseline?).

Test splits of real screens are small (a handful to a few dozen perturbations), so a difference of means
alone says little. For per-perturbation scores ``a_p`` (e.g. TxPert's Pearson Δ) and ``b_p`` (a baseline's)
on the same P perturbations, with differences ``d_p = a_p − b_p``:

* ``difference``: ``d̄ = mean_p d_p`` (equal to the difference of the two means).
* ``ci_low`` / ``ci_high``: percentile bootstrap interval of ``d̄`` at ``level`` (default 95%): resample the
  P perturbations with replacement ``n_boot`` times, take the (1 − level)/2 and (1 + level)/2 quantiles of
  the resampled means. With few perturbations the percentile bootstrap is too narrow (it cannot see
  variation the sample does not show), so read it together with ``p_value``.
* ``p_value``: two-sided sign-flip randomisation test of "no difference" (the d_p are symmetric about 0):
  the share of sign vectors ``s ∈ {−1, 1}^P`` with ``|mean_p s_p d_p| ≥ |d̄|``. Exact (all ``2^P`` vectors)
  for ``P ≤ exact_max``, else ``n_perm`` random vectors plus the observed one. With P = 4 the smallest
  possible p is 2/16 = 0.125: four perturbations cannot show a significant difference at 0.05.
* ``wins``: ``|{p : d_p > 0}|`` of ``n`` perturbations (ties count for neither).

Perturbations where either score is NaN are left out (``n`` counts the rest).
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

__all__ = ["paired_comparison", "describe_comparison"]


def paired_comparison(a: Sequence[float], b: Sequence[float], level: float = 0.95, n_boot: int = 10_000,
                      n_perm: int = 20_000, exact_max: int = 16, seed: int = 0) -> dict[str, float | int]:
    """Paired difference of per-perturbation scores ``a`` and ``b`` (both (P,), same order); see the module
    docstring for the formulas. Returns ``{"difference", "ci_low", "ci_high", "level", "p_value", "wins", "n"}``
    (NaN difference, interval and p when no perturbation has both scores)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores must be two vectors of the same length, got {a.shape} and {b.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]
    n = int(d.size)
    out: dict[str, float | int] = {"difference": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
                                   "level": level, "p_value": float("nan"), "wins": int((d > 0).sum()), "n": n}
    if n == 0:
        return out
    rng = np.random.default_rng(seed)
    observed = d.mean()
    boot = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    if n <= exact_max:
        signs = np.array(list(itertools.product((-1.0, 1.0), repeat=n)))
        p = float(np.mean(np.abs(signs @ d) / n >= abs(observed) - 1e-12))
    else:
        signs = rng.choice((-1.0, 1.0), size=(n_perm, n))
        p = float((np.sum(np.abs(signs @ d) / n >= abs(observed) - 1e-12) + 1) / (n_perm + 1))
    out.update(difference=float(observed), ci_low=float(lo), ci_high=float(hi), p_value=p)
    return out


def describe_comparison(c: dict, metric: str = "Pearson Δ") -> str:
    """One line for people: ``+0.052 [95% CI −0.010, +0.110], better on 7/10, sign-flip p 0.08``."""
    if not c["n"] or c["difference"] != c["difference"]:
        return f"{metric}: no perturbation scored by both"
    pct = round(100 * c["level"])
    return (f"{metric} {c['difference']:+.3f} [{pct}% CI {c['ci_low']:+.3f}, {c['ci_high']:+.3f}], "
            f"better on {c['wins']}/{c['n']}, sign-flip p {c['p_value']:.3g}")
