"""txpert_head: the TxPert model (basal encoder, latent shift, decoder), data, splits, metrics, baselines.

The Python API (``docs/python-api.md``)::

    import txpert_head as tx
    predictor = tx.train("screen.h5ad", "graph.kg.npz", "runs/a", epochs=20)   # -> Predictor
    predictor = tx.Predictor.load("runs/a")                                    # no training data read
    result = tx.predict("runs/a", ["KLF1", "KLF1+TP53"])                        # -> Prediction
    table, summary = tx.evaluate("runs/a")
    table, summary, paired = tx.score("gears.h5ad", "screen.h5ad", "runs/a")   # any model's predictions
    report = tx.baselines("screen.h5ad", "runs/base")
    summary = tx.identify("runs/a", "query.h5ad", "ranked.tsv")

Everything is imported on first use (``import txpert_head`` stays fast). ``tx.train``, ``tx.baselines`` and
``tx.identify`` share their names with the submodules ``txpert_head.train`` / ``.baselines`` / ``.identify``:
those modules are *callable* (calling one calls the API function of :mod:`txpert_head.api`), so both
``tx.train(...)`` and ``from txpert_head.train import Trainer`` work.
"""

from __future__ import annotations

import importlib
import sys
import types

from kgbuild._version import __version__

__all__ = ["__version__", "Prediction", "Predictor", "baselines", "evaluate", "identify", "predict", "score",
           "train"]

#: API functions (txpert_head.api) by name; those also naming a submodule are served by calling the module
_API = ("train", "predict", "evaluate", "score", "baselines", "identify")
_SUBMODULE_NAMES = ("train", "baselines", "identify")
_CLASSES = {"Predictor": "txpert_head.predictor", "Prediction": "txpert_head.predictor"}


class _CallableModule(types.ModuleType):
    """A submodule that is also an API function (``txpert_head.train(...)``): calling it calls
    ``txpert_head.api.<name>``."""

    def __call__(self, *args, **kwargs):
        api = importlib.import_module("txpert_head.api")
        return getattr(api, self.__name__.rsplit(".", 1)[1])(*args, **kwargs)


def _callable(module: types.ModuleType) -> types.ModuleType:
    if type(module) is types.ModuleType:
        module.__class__ = _CallableModule
    return module


class _Package(types.ModuleType):
    """The package module: submodules named like API functions become callable when they are imported."""

    def __setattr__(self, name, value):
        if name in _SUBMODULE_NAMES and isinstance(value, types.ModuleType):
            _callable(value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
for _name in _SUBMODULE_NAMES:  # already imported (e.g. by a module imported before this package finished)
    if f"{__name__}.{_name}" in sys.modules:
        _callable(sys.modules[f"{__name__}.{_name}"])


def __getattr__(name: str):
    if name in _SUBMODULE_NAMES:
        return _callable(importlib.import_module(f"{__name__}.{name}"))
    if name in _API:
        return getattr(importlib.import_module("txpert_head.api"), name)
    if name in _CLASSES:
        return getattr(importlib.import_module(_CLASSES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
