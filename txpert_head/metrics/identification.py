"""How well a ranking of candidate genes finds the true target(s) of a perturbation.

For one query with true genes ``T`` (one gene, or the m genes of a combination) and a ranked list of N
candidates, ``rank(t)`` is the 1-based position of t (``∞`` when t is not a candidate). Per query:

* reciprocal rank ``RR = 1 / min_{t∈T} rank(t)`` (0 when no true gene is a candidate); MRR is its mean;
* exact hit@k ``= 1`` if every true gene is in the top k (a single: the gene is in the top k), else 0;
* recall@k ``= |{t ∈ T : rank(t) ≤ k}| / |T|``.

Random ranking (a uniformly random order of the N candidates, n of the m true genes among them) has the
closed forms ``E[hit@k] = C(k, m) / C(N, m)`` (0 when n < m), ``E[recall@k] = (n / m) · min(k, N) / N`` and
``E[RR] = Σ_r (1/r) P(min rank = r)`` with ``P(min rank ≥ r) = C(N − r + 1, n) / C(N, n)``.
"""

from __future__ import annotations

from math import lgamma
from typing import Mapping, Sequence

import numpy as np

KS = (10, 20, 40)


def target_ranks(order_genes: Sequence[str] | Mapping[str, int], targets: Sequence[str]) -> np.ndarray:
    """1-based ranks (float, ``inf`` if absent) of ``targets`` in a ranked gene list or a gene -> rank map."""
    if not isinstance(order_genes, Mapping):
        order_genes = {g: i + 1 for i, g in enumerate(order_genes)}
    return np.asarray([float(order_genes.get(t, np.inf)) for t in targets], dtype=np.float64)


def query_metrics(ranks: Sequence[float], ks: Sequence[int] = KS) -> dict[str, float]:
    """``rr``, ``hit@k`` and ``recall@k`` of one query from the ranks of its true genes."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        raise ValueError("a query needs at least one true gene")
    out = {"rr": float(1.0 / ranks.min())}
    for k in ks:
        out[f"hit@{k}"] = float(np.all(ranks <= k))
        out[f"recall@{k}"] = float(np.mean(ranks <= k))
    return out


def mean_metrics(per_query: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over queries (``rr`` becomes ``mrr``), plus ``n``."""
    if not per_query:
        return {"n": 0}
    keys = list(per_query[0])
    out = {("mrr" if k == "rr" else k): float(np.mean([q[k] for q in per_query])) for k in keys}
    out["n"] = len(per_query)
    return out


def _log_comb(n: int, k: int) -> float:
    if k < 0 or k > n:
        return -np.inf
    return lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1)


def random_expectation(n_candidates: int, n_true: int, n_true_in: int | None = None,
                       ks: Sequence[int] = KS) -> dict[str, float]:
    """Expected ``rr``, ``hit@k``, ``recall@k`` of a uniformly random ranking (see the module docstring).

    ``n_true``: m true genes of the query; ``n_true_in``: how many of them are candidates (default all).
    """
    N, m = int(n_candidates), int(n_true)
    n = m if n_true_in is None else int(n_true_in)
    if N < 1 or m < 1 or not 0 <= n <= min(m, N):
        raise ValueError(f"need N >= 1, m >= 1 and 0 <= n <= min(m, N); got N={N}, m={m}, n={n}")
    out: dict[str, float] = {}
    if n == 0:
        out["rr"] = 0.0
    else:
        r = np.arange(1, N - n + 2)
        surv = np.exp([_log_comb(N - int(x) + 1, n) - _log_comb(N, n) for x in r])  # P(min rank >= r)
        p = surv - np.r_[surv[1:], 0.0]
        out["rr"] = float(np.sum(p / r))
    for k in ks:
        kk = min(int(k), N)
        out[f"hit@{k}"] = float(np.exp(_log_comb(kk, m) - _log_comb(N, m))) if n == m else 0.0
        out[f"recall@{k}"] = n / m * kk / N
    return out
