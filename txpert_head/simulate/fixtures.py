"""Small fixed test data with a known graph, for unit tests and benchmarks (never for reported results).

The project's simulator is :func:`txpert_head.simulate.perturbseq.simulate_perturbseq` (``txpert simulate``:
effects propagated over a ground-truth network, negative-binomial counts, knobs). This module is the fixture
generator the test suite was calibrated on: its draws are fixed, and the suite's numerical expectations
depend on them, so it keeps its own simple model instead of calling the simulator.

Model: gene programmes are carried by a random graph; perturbing gene p shifts the log-expression of
cell i by ``effect_p = W @ onehot(neighbours of p)`` (smooth over the graph, so graph neighbours have
similar effects), plus a per-batch offset. Counts are Poisson of ``exp(mu)``, stored as CSR.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from kgbuild.graph import MultiGraph
from txpert_head.data.perturb_data import CONTROL, LEGACY_TARGET_SUM, PerturbData, normalize_counts


def synthetic_graph(n_genes: int, degree: int = 4, seed: int = 0, prefix: str = "G") -> MultiGraph:
    """A random graph over ``G0..G{n-1}``: each gene has ``degree`` in-edges from nearby genes."""
    rng = np.random.default_rng(seed)
    src, dst = [], []
    for t in range(n_genes):
        near = (t + rng.integers(1, 6, degree)) % n_genes
        for s in np.unique(near):
            if s != t:
                src.append(f"{prefix}{s}")
                dst.append(f"{prefix}{t}")
    return MultiGraph.from_edges("synthetic", src, dst, rng.uniform(0.4, 1.0, len(src)), {"source": "synthetic"},
                                 nodes=[f"{prefix}{i}" for i in range(n_genes)])


def synthetic_data(n_cells: int = 2000, n_genes: int = 50, n_perts: int = 16, n_batches: int = 2,
                   n_doubles: int = 0, control_frac: float = 0.2, density_mean: float = 1.0, seed: int = 0,
                   normalize: bool = True, prefix: str = "G") -> PerturbData:
    """Cells x genes counts (CSR), perturbations ``G0..G{n_perts-1}`` (+ doubles), ``n_batches`` batches.

    ``density_mean`` scales the baseline expression (lower -> sparser counts).
    """
    rng = np.random.default_rng(seed)
    base = rng.normal(np.log(density_mean), 1.0, n_genes)
    perts = [f"{prefix}{i}" for i in range(n_perts)]
    effects = {}
    smooth = rng.normal(0, 0.6, (n_perts // 4 + 1, n_genes))
    for i, p in enumerate(perts):
        effects[p] = smooth[i // 4] + rng.normal(0, 0.1, n_genes)
    doubles = []
    for _ in range(n_doubles):
        a, b = rng.choice(n_perts, 2, replace=False)
        doubles.append("+".join(sorted([perts[a], perts[b]])))
    doubles = sorted(set(doubles))
    for d in doubles:
        a, b = d.split("+")
        effects[d] = effects[a] + effects[b]
    labels = [CONTROL] + perts + doubles
    probs = np.r_[control_frac, np.full(len(labels) - 1, (1 - control_frac) / (len(labels) - 1))]
    cond = rng.choice(len(labels), n_cells, p=probs)
    batch = rng.integers(0, n_batches, n_cells)
    batch_shift = rng.normal(0, 0.2, (n_batches, n_genes))
    chunks = []
    step = max(1, 10_000_000 // n_genes)
    eff = np.stack([effects[labels[c]] if c else np.zeros(n_genes) for c in range(len(labels))])
    for lo in range(0, n_cells, step):
        hi = min(n_cells, lo + step)
        mu = base[None, :] + batch_shift[batch[lo:hi]] + eff[cond[lo:hi]]
        counts = rng.poisson(np.exp(mu)).astype(np.float32)
        chunks.append(sp.csr_matrix(counts))
    X = sp.vstack(chunks).tocsr()
    if normalize:
        X = normalize_counts(X, LEGACY_TARGET_SUM)  # the calibrated synthetic data keeps 4,000
    names = np.asarray(labels)[cond]
    return PerturbData(X, [f"{prefix}{i}" for i in range(n_genes)], names, np.full(n_cells, "all"),
                       np.asarray([f"b{b}" for b in batch]), source="<synthetic>", normalized_here=normalize)
