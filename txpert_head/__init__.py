"""txpert_head: the TxPert model (basal encoder, latent shift, decoder), data, splits, metrics, baselines."""

from kgbuild._version import __version__

__all__ = ["__version__"]
