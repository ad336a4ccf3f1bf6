"""txpert_head: the TxPert model (basal encoder, latent shift, decoder), data, splits, metrics, baselines.

The Python API (``docs/python-api.md``), the verbs at the top level::

    import txpert_head as tx
    predictor = tx.train("screen.h5ad", "graph.kg.npz", "runs/a", epochs=20)   # -> Predictor
    predictor = tx.Predictor.load("runs/a")                                    # no training data read
    result = tx.predict("runs/a", ["KLF1", "KLF1+TP53"])                        # -> Prediction
    table, summary = tx.evaluate("runs/a")
    table, summary, paired = tx.score("gears.h5ad", "screen.h5ad", "runs/a")   # any model's predictions
    report = tx.baselines("screen.h5ad", "runs/base")
    summary = tx.identify("runs/a", "query.h5ad", "ranked.tsv")

The sub-packages are the stages, in the order data flows (each imports only from those before it; the test
``tests/test_import_contract.py`` checks it)::

    data  <  simulate  <  metrics  <  model  <  training  <  evaluation  <  identification  <  reporting
          <  runs  <  api, cli

``tx.data``, ``tx.metrics``, ... are imported on first use, like the verbs (``import txpert_head`` stays fast).
"""

from __future__ import annotations

import importlib

from kgbuild._version import __version__

#: the verbs (txpert_head.api), the classes and the sub-packages, by the module that holds them
_API = ("train", "predict", "evaluate", "score", "baselines", "identify")
_CLASSES = {"Predictor": "txpert_head.runs.predictor", "Prediction": "txpert_head.runs.predictor"}
#: the stages, lowest first (the import contract's order; api and cli are the top)
STAGES = ("data", "simulate", "metrics", "model", "training", "evaluation", "identification", "reporting", "runs",
          "api", "cli")

__all__ = ["__version__", "Prediction", "Predictor", *_API, *STAGES]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module("txpert_head.api"), name)
    if name in _CLASSES:
        return getattr(importlib.import_module(_CLASSES[name]), name)
    if name in STAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
