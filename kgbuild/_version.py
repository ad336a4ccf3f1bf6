"""The single version number of the txpert-kg distribution (kgbuild, gnn and txpert_head)."""

__version__ = "0.1.0"
