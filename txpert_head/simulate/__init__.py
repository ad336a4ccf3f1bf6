"""The embedded default: a seeded ground-truth gene network, example source files in the real layouts
kgbuild parses, and a Perturb-seq simulator whose effects propagate over that network.

Entry point: :func:`write_example_bundle` (what ``txpert simulate``, :mod:`txpert_head.cli.simulate`, runs).
:mod:`.fixtures` holds the small fixed data the unit tests are calibrated on.
"""

from txpert_head.simulate.bundle import write_example_bundle
from txpert_head.simulate.network import GroundTruthNetwork, NetworkParams, gene_names, make_network
from txpert_head.simulate.perturbseq import PerturbSeqConfig, SimulatedScreen, simulate_perturbseq

__all__ = [
    "GroundTruthNetwork", "NetworkParams", "PerturbSeqConfig", "SimulatedScreen", "gene_names", "make_network",
    "simulate_perturbseq", "write_example_bundle",
]
