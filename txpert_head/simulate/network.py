"""The simulator's ground truth: a seeded, signed, directed gene regulatory network with modules.

Genes are named ``G0001``, ``G0002``, ... (zero-padded to at least four digits). They are not human
symbols on purpose: simulated files can never be mistaken for, or silently mixed with, real biology.

Construction (all draws from one ``numpy.random.Generator`` seeded by ``seed``):

* ``K = max(2, round(N / module_size))`` modules; genes are dealt to modules round-robin in a random
  order, so module sizes differ by at most one and gene names carry no module information.
* Within a module every ordered pair ``s -> t`` is an edge with probability ``p_in = in_degree / size``,
  and each module has ``hubs`` master regulators that regulate, and are regulated by, each member with
  probability ``hub_reach``: perturbing any member moves the hubs and through them the whole module, so
  genes of one module have similar perturbation effects (what makes graph information useful).
* Each module regulates one or two downstream modules: each gene of the upstream module gets about
  ``cross_degree`` edges into them; one sign per module link (85 % of those edges follow it).
* Background edges between random genes with expected out-degree ``background_degree``.
* Within-module edges are 80 % activating (+), others have random signs; magnitudes ``U(0.4, 1.0)``.

The weight matrix ``W`` is ``(N, N)`` with ``W[s, t]`` the signed effect of regulator ``s`` on target
``t`` (messages flow source -> target, as in a multigraph file). :meth:`GroundTruthNetwork.variant`
makes the network of a second cell line: the same modules with a fraction of edges moved elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def gene_names(n_genes: int) -> np.ndarray:
    """``G0001 .. GNNNN``: ``(n_genes,)`` unicode, zero-padded to at least four digits (sorted = index order)."""
    width = max(4, len(str(n_genes)))
    return np.asarray([f"G{i + 1:0{width}d}" for i in range(n_genes)])


@dataclass(frozen=True)
class NetworkParams:
    """Knobs of :func:`make_network`; the defaults give ~9 edges per gene (300 genes: ~2,700).

    Dense, mostly activating modules (``in_degree`` 6, ``positive_fraction`` 0.9) make genes of one module
    respond alike to a knock-down, as members of one complex or pathway do in real screens: this is the
    signal a graph can carry to unseen perturbations (sparser modules leave each gene's response mostly
    private, and a graph then helps little over the mean change).
    """

    module_size: int = 25
    in_degree: float = 6.0
    hubs: int = 2
    hub_reach: float = 0.8
    cross_degree: float = 0.6
    background_degree: float = 0.3
    positive_fraction: float = 0.9


@dataclass(frozen=True, eq=False)
class GroundTruthNetwork:
    """Genes, their module and the signed weight matrix ``weight[s, t]`` (shape ``(N, N)``, float64)."""

    genes: np.ndarray
    module: np.ndarray
    weight: np.ndarray

    @property
    def n_genes(self) -> int:
        return int(len(self.genes))

    @property
    def n_modules(self) -> int:
        return int(self.module.max()) + 1

    def edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(source, target, weight)`` index arrays of the non-zero entries, in row-major order."""
        s, t = np.nonzero(self.weight)
        return s, t, self.weight[s, t]

    def undirected_strength(self) -> np.ndarray:
        """``|W| + |W|^T``: ``(N, N)`` symmetric interaction strength (what a PPI database would see)."""
        a = np.abs(self.weight)
        return a + a.T

    def propagation_operator(self, beta: float = 0.7, steps: int = 3) -> np.ndarray:
        """``P = sum_{k=0..steps} (beta * M)^k`` with ``M = W / max(1, rho(|W|))``; shape ``(N, N)``.

        A change ``d0`` (row vector) at the perturbed gene becomes ``d0 @ P``: the direct effect plus
        ``steps`` rounds of signed diffusion along the edges (source -> target). Dividing by the spectral
        radius of ``|W|`` keeps every path sum bounded by ``beta^k``.
        """
        rho = float(np.max(np.abs(np.linalg.eigvals(np.abs(self.weight))))) if self.weight.any() else 0.0
        m = beta * self.weight / max(1.0, rho)
        total = np.eye(self.n_genes)
        term = np.eye(self.n_genes)
        for _ in range(steps):
            term = term @ m
            total = total + term
        return total

    def variant(self, seed: int, rewire_fraction: float = 0.2) -> "GroundTruthNetwork":
        """The same genes and modules with ``rewire_fraction`` of the edges moved to new random
        within-module pairs (same weights): the network of another cell line, partly different."""
        rng = np.random.default_rng(seed)
        w = self.weight.copy()
        s, t, vals = self.edges()
        n_move = int(round(rewire_fraction * len(vals)))
        move = rng.choice(len(vals), size=n_move, replace=False)
        w[s[move], t[move]] = 0.0
        members = [np.flatnonzero(self.module == k) for k in range(self.n_modules)]
        for i in move:
            genes = members[self.module[s[i]]]
            for _ in range(20):  # a free slot in the same module; give up quietly if the module is full
                a, b = rng.choice(genes, size=2, replace=False)
                if w[a, b] == 0.0:
                    w[a, b] = vals[i]
                    break
        return GroundTruthNetwork(self.genes, self.module, w)


def make_network(n_genes: int, seed: int, params: NetworkParams = NetworkParams()) -> GroundTruthNetwork:
    """Build the ground-truth network of ``n_genes`` genes (see the module docstring)."""
    if n_genes < 10:
        raise ValueError(f"the simulated network needs at least 10 genes, got {n_genes}")
    rng = np.random.default_rng(seed)
    n_mod = max(2, int(round(n_genes / params.module_size)))
    module = np.empty(n_genes, dtype=np.int64)
    module[rng.permutation(n_genes)] = np.arange(n_genes) % n_mod
    w = np.zeros((n_genes, n_genes))

    def magnitude(size: int) -> np.ndarray:
        return rng.uniform(0.4, 1.0, size=size)

    for k in range(n_mod):
        genes = np.flatnonzero(module == k)
        size = len(genes)
        p_in = min(1.0, params.in_degree / max(1, size - 1))
        mask = rng.random((size, size)) < p_in
        hubs = rng.choice(genes, size=min(params.hubs, size), replace=False)
        for h in hubs:  # hubs reach about half the module and hear from about half of it
            mask[np.searchsorted(genes, h)] |= rng.random(size) < params.hub_reach
            mask[:, np.searchsorted(genes, h)] |= rng.random(size) < params.hub_reach
        np.fill_diagonal(mask, False)
        si, ti = np.nonzero(mask)
        sign = np.where(rng.random(len(si)) < params.positive_fraction, 1.0, -1.0)
        w[genes[si], genes[ti]] = sign * magnitude(len(si))
    for k in range(n_mod):
        up = np.flatnonzero(module == k)
        n_down = int(rng.integers(1, 3))
        downstream = rng.choice([m for m in range(n_mod) if m != k], size=min(n_down, n_mod - 1), replace=False)
        for d in downstream:
            down = np.flatnonzero(module == d)
            link_sign = 1.0 if rng.random() < 0.5 else -1.0
            mask = rng.random((len(up), len(down))) < params.cross_degree / (len(down) * len(downstream))
            si, ti = np.nonzero(mask)
            sign = np.where(rng.random(len(si)) < 0.85, link_sign, -link_sign)
            w[up[si], down[ti]] = sign * magnitude(len(si))
    mask = rng.random((n_genes, n_genes)) < params.background_degree / n_genes
    np.fill_diagonal(mask, False)
    mask &= w == 0.0
    si, ti = np.nonzero(mask)
    w[si, ti] = np.where(rng.random(len(si)) < 0.5, 1.0, -1.0) * magnitude(len(si))
    return GroundTruthNetwork(gene_names(n_genes), module, w)
