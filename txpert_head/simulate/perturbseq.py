"""A Perturb-seq simulator: raw UMI counts whose perturbation effects propagate over the ground truth.

Model, for cell ``i`` of cell line ``c``, batch ``b``, condition ``p`` and gene ``g``::

    network effect    n_p      = -kd_p · (e_p + E · gain · (P_c - I)[p])  (N,)
                      P_c      = Σ_{k≤steps} (β M_c)^k        signed diffusion over the network, see network.py
                      kd_p     ~ U(kd_min, kd_max)            knock-down of the target by its guide
                      n_p[p]   = -kd_p                        the target itself is set by the guide, not the network
    doubles           n_AB     = n_A + n_B + γ · z_AB ⊙ sqrt(|n_A ⊙ n_B|),  z_AB ~ N(0, 1)^N
    log-fold change   δ_p      = n_p + S · a_p · v_c ⊙ (1 - e_p)          (e_AB = e_A + e_B, a_AB = a_A + a_B)
                      a_p      ~ U(0.5, 1.5)                  how strongly single p shows the systematic response
                      v_c      ~ N(0, 1)^N, standardised      the systematic response of cell line c (mean 0, var 1)
    mean              μ_ig     = L_i · π_cg · s_bg · exp(δ_pg)
    counts            x_ig     ~ Poisson(Gamma(shape=θ, scale=μ_ig/θ))      (negative binomial, mean μ, var μ + μ²/θ)

``π_c = softmax(m + u_c)`` is the baseline expression profile of cell line ``c`` (``m ~ N(0, baseline_sd²)``
shared, ``u_c ~ N(0, cell_line_sd²)``), ``s_bg = exp(N(0, batch_sd²))`` the batch effect (per batch a
per-gene scaling and a library-size factor), ``L_i`` the library size (log-normal around
``library_size``). ``gain`` scales the downstream response relative to the knock-down: ``M`` is divided by
the spectral radius of ``|W|`` to keep the diffusion bounded, which alone would make downstream effects
tiny. Cell line 1 uses the ground-truth network; other cell lines use
:meth:`GroundTruthNetwork.variant`, so responses are partly shared, partly different.

Four knobs set how hard the screen is (``txpert simulate`` options; the defaults reproduce the original
simulator byte for byte):

* ``S`` = ``systematic`` (``--systematic``, default 0): a systematic response shared by all perturbations
  (Systema, Nat Biotechnol 2025: many perturbations share a generic stress / selection response, so the
  mean perturbed profile already predicts much of any single one). ``v_c`` and ``a_p`` come from their
  own random stream, so the other draws do not move; targets keep their knock-down.
* ``steps`` (``--spread``, default 3) and ``β`` (``--beta``, default 0.8): how far effects travel over the
  network (``steps`` = 0: only the target changes).
* ``E`` = ``effect_size`` (``--effect-size``, default 1): multiplies the downstream gain, so every
  off-target entry of ``n_p`` scales by ``E``; the knock-down of the target (a property of the guide) does not.
* ``--graph-noise`` acts on the example source files, not on the screen (see example_sources.py).

The network and baseline of a second (third, ...) cell line are drawn from the main stream after the
counts of the previous line, whose number of draws depends on the means: any change to the screen (a knob,
or ``cells_per_perturbation``) redraws them. Cell line 1, the singles, doubles, knock-downs and interaction
terms stay the same.

The result is an :class:`anndata.AnnData` with ``X`` a CSR matrix of integer-valued float32 counts, ``obs``
columns ``perturbation`` (``A``, ``A+B``, ``ctrl``), ``batch``, ``cell_line``, and ``var['module']``.
The true ``δ`` of every (cell line, condition) comes back alongside, for evaluation and tests.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from txpert_head.simulate.network import GroundTruthNetwork

CONTROL = "ctrl"
CHUNK_CELLS = 4096
SYSTEMATIC_STREAM = 1  # the systematic response draws from default_rng([seed, SYSTEMATIC_STREAM])
#: knobs added after the first release, recorded in ``uns['simulation']`` only when not at their default
#: (so the default perturbseq.h5ad stays byte-identical; simulation.json always records them)
LATER_KNOBS = {"systematic": 0.0, "effect_size": 1.0}


@dataclass(frozen=True)
class PerturbSeqConfig:
    """Sizes and noise levels of the simulated screen (defaults: ~4,000 cells, trains in a minute or two)."""

    n_singles: int = 60
    n_doubles: int = 20
    cells_per_perturbation: int = 50
    control_cells: int | None = None  # per cell line; default 4 x cells_per_perturbation
    n_batches: int = 3
    n_cell_lines: int = 1
    library_size: float = 3000.0
    library_sd: float = 0.3
    dispersion: float = 10.0
    baseline_sd: float = 1.0
    cell_line_sd: float = 0.4
    cell_line_rewire: float = 0.25
    batch_sd: float = 0.2
    knockdown_min: float = 1.0
    knockdown_max: float = 2.5
    beta: float = 0.8
    steps: int = 3
    gain: float = 8.0
    interaction: float = 0.3
    systematic: float = 0.0
    effect_size: float = 1.0

    def validate(self, n_genes: int) -> None:
        """Raise ``ValueError`` naming the setting that cannot work with ``n_genes`` genes."""
        if not 1 <= self.n_singles <= n_genes:
            raise ValueError(f"--singles must be between 1 and the number of genes ({n_genes}), got {self.n_singles}")
        max_doubles = self.n_singles * (self.n_singles - 1) // 2
        if not 0 <= self.n_doubles <= max_doubles:
            raise ValueError(f"--doubles must be between 0 and {max_doubles} (pairs of {self.n_singles} singles), "
                             f"got {self.n_doubles}")
        for name in ("cells_per_perturbation", "n_batches", "n_cell_lines"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.control_cells is not None and self.control_cells < 1:
            raise ValueError(f"control_cells must be at least 1, got {self.control_cells}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer)) or self.steps < 0:
            raise ValueError(f"--spread (diffusion steps) must be a whole number >= 0, got {self.steps}")
        if not (math.isfinite(self.beta) and 0 <= self.beta <= 1):
            raise ValueError(f"--beta (damping per diffusion step) must be between 0 and 1, got {self.beta}")
        for flag, value in (("--systematic", self.systematic), ("--effect-size", self.effect_size)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{flag} must be a finite number >= 0, got {value}")


@dataclass(frozen=True, eq=False)
class SimulatedScreen:
    """The AnnData plus the truth: ``effects[(cell_line, condition)]`` is δ, shape ``(N,)``.

    ``systematic[(cell_line, condition)]`` is the systematic part of δ (``S · a_p · v_c ⊙ (1 - e_p)``; empty
    when ``S = 0``), ``systematic_direction[cell_line]`` is ``v_c`` and ``systematic_weight[condition]`` is
    ``a_p`` (the sum of the two for a double; drawn whatever ``S``).
    """

    adata: "anndata.AnnData"  # noqa: F821
    effects: dict[tuple[str, str], np.ndarray]
    singles: list[str]
    doubles: list[str]
    cell_lines: list[str]
    batches: list[str]
    systematic: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    systematic_direction: dict[str, np.ndarray] = field(default_factory=dict)
    systematic_weight: dict[str, float] = field(default_factory=dict)


def single_effects(net: GroundTruthNetwork, targets: np.ndarray, knockdown: np.ndarray, beta: float,
                   steps: int, gain: float) -> np.ndarray:
    """δ for knocking down each of ``targets`` (``(T,)`` gene indices, ``knockdown`` ``(T,)``): ``(T, N)``."""
    op = net.propagation_operator(beta=beta, steps=steps) - np.eye(net.n_genes)
    delta = -knockdown[:, None] * gain * op[targets]
    delta[np.arange(len(targets)), targets] = -knockdown
    return delta


def systematic_response(seed: int, n_genes: int, n_singles: int, n_cell_lines: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """``(a, v)``: per-single weights ``a ~ U(0.5, 1.5)`` ``(n_singles,)`` and per-cell-line directions ``v``
    ``(n_cell_lines, n_genes)``, each row standardised to mean 0 and variance 1.

    Drawn from ``default_rng([seed, SYSTEMATIC_STREAM])``, a stream of its own: the screen's other draws
    are the same whatever the systematic strength.
    """
    rng = np.random.default_rng([seed, SYSTEMATIC_STREAM])
    weight = rng.uniform(0.5, 1.5, size=n_singles)
    v = rng.normal(size=(n_cell_lines, n_genes))
    v -= v.mean(axis=1, keepdims=True)
    v /= v.std(axis=1, keepdims=True)
    return weight, v


def double_effect(delta_a: np.ndarray, delta_b: np.ndarray, z: np.ndarray, strength: float) -> np.ndarray:
    """``δ_A + δ_B + strength · z ⊙ sqrt(|δ_A ⊙ δ_B|)``: additive plus a small interaction, ``(N,)``."""
    return delta_a + delta_b + strength * z * np.sqrt(np.abs(delta_a * delta_b))


def simulate_perturbseq(net: GroundTruthNetwork, seed: int, config: PerturbSeqConfig = PerturbSeqConfig()
                        ) -> SimulatedScreen:
    """Simulate the screen (see the module docstring); the same ``seed`` gives the same counts."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    config.validate(net.n_genes)
    rng = np.random.default_rng(seed)
    n = net.n_genes
    targets = np.sort(rng.choice(n, size=config.n_singles, replace=False))
    singles = net.genes[targets].tolist()
    knockdown = rng.uniform(config.knockdown_min, config.knockdown_max, size=config.n_singles)
    pairs = [(a, b) for a in range(config.n_singles) for b in range(a + 1, config.n_singles)]
    chosen = sorted(rng.choice(len(pairs), size=config.n_doubles, replace=False).tolist())
    double_pairs = [pairs[i] for i in chosen]
    doubles = [f"{singles[a]}+{singles[b]}" for a, b in double_pairs]
    interaction_z = rng.normal(size=(config.n_doubles, n))
    sys_weight, sys_direction = systematic_response(seed, n, config.n_singles, config.n_cell_lines)
    cond_weight = np.concatenate([[0.0], sys_weight, [sys_weight[a] + sys_weight[b] for a, b in double_pairs]])
    cond_targets = [[]] + [[t] for t in targets.tolist()] + [[targets[a], targets[b]] for a, b in double_pairs]
    gain = config.gain * config.effect_size  # exactly config.gain at the default effect size 1

    cell_lines = [f"CL{c + 1}" for c in range(config.n_cell_lines)]
    batches = [f"batch{b + 1}" for b in range(config.n_batches)]
    shared_base = rng.normal(0.0, config.baseline_sd, size=n)
    batch_gene = rng.normal(0.0, config.batch_sd, size=(config.n_batches, n))
    batch_lib = rng.normal(0.0, config.batch_sd / 2, size=config.n_batches)
    n_ctrl = config.control_cells or 4 * config.cells_per_perturbation
    conditions = [CONTROL] + singles + doubles

    effects: dict[tuple[str, str], np.ndarray] = {}
    systematic: dict[tuple[str, str], np.ndarray] = {}
    blocks, obs_parts = [], []
    for c, line in enumerate(cell_lines):
        line_net = net if c == 0 else net.variant(seed=int(rng.integers(2**31)), rewire_fraction=config.cell_line_rewire)
        log_base = shared_base + (rng.normal(0.0, config.cell_line_sd, size=n) if c else 0.0)
        pi = np.exp(log_base - log_base.max())
        pi /= pi.sum()
        single = single_effects(line_net, targets, knockdown, config.beta, config.steps, gain)
        delta = np.zeros((len(conditions), n))
        delta[1:1 + config.n_singles] = single
        for j, (a, b) in enumerate(double_pairs):
            delta[1 + config.n_singles + j] = double_effect(single[a], single[b], interaction_z[j], config.interaction)
        if config.systematic > 0:  # skipped at 0: adding zeros would turn -0.0 into 0.0 in truth/effects.tsv.gz
            shared = config.systematic * cond_weight[:, None] * sys_direction[c][None, :]
            for i, genes in enumerate(cond_targets):
                shared[i, genes] = 0.0
            delta = delta + shared
            for name, d in zip(conditions[1:], shared[1:]):
                systematic[(line, name)] = d
        for name, d in zip(conditions, delta):
            effects[(line, name)] = d
        counts_per = np.full(len(conditions), config.cells_per_perturbation)
        counts_per[0] = n_ctrl
        cond_idx = np.repeat(np.arange(len(conditions)), counts_per)
        batch_idx = np.concatenate([rng.permutation(np.arange(k) % config.n_batches) for k in counts_per])
        lib = config.library_size * np.exp(rng.normal(0.0, config.library_sd, size=len(cond_idx)) + batch_lib[batch_idx])
        for start in range(0, len(cond_idx), CHUNK_CELLS):  # bounded memory: (CHUNK_CELLS, N) at a time
            rows = slice(start, start + CHUNK_CELLS)
            mu = lib[rows, None] * pi[None, :] * np.exp(batch_gene[batch_idx[rows]] + delta[cond_idx[rows]])
            counts = rng.poisson(rng.gamma(config.dispersion, mu / config.dispersion))
            blocks.append(sp.csr_matrix(counts.astype(np.float32)))
        obs_parts.append(pd.DataFrame({
            "perturbation": np.asarray(conditions)[cond_idx],
            "batch": np.asarray(batches)[batch_idx],
            "cell_line": line,
        }))

    obs = pd.concat(obs_parts, ignore_index=True)
    obs.index = [f"cell{i + 1:06d}" for i in range(len(obs))]
    for col, cats in (("perturbation", conditions), ("batch", batches), ("cell_line", cell_lines)):
        obs[col] = pd.Categorical(obs[col], categories=cats)
    var = pd.DataFrame({"module": net.module.astype(np.int64)}, index=pd.Index(net.genes.tolist(), name="gene"))
    adata = ad.AnnData(X=sp.vstack(blocks, format="csr"), obs=obs, var=var)
    recorded = {k: v for k, v in asdict(config).items() if k not in LATER_KNOBS or v != LATER_KNOBS[k]}
    adata.uns["simulation"] = json.dumps({"seed": seed, "n_genes": n, **recorded}, sort_keys=True)
    adata.uns["control_label"] = CONTROL
    return SimulatedScreen(adata, effects, singles, doubles, cell_lines, batches, systematic=systematic,
                           systematic_direction=dict(zip(cell_lines, sys_direction)),
                           systematic_weight=dict(zip(conditions[1:], cond_weight[1:].tolist())))
