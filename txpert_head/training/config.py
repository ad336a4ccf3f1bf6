"""Every knob of a run: :class:`TrainConfig` (written to the run folder as ``config.json``) and the check of
its option types (:func:`check_option_types`, naming the option, the value and the expected type)."""


from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import types
import typing
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gnn.encoder import NODE_INPUTS
from txpert_head.data.controls import CONTROL_MODES
from txpert_head.training.losses import DISTRIBUTIONAL_TERMS, LossSpecError, parse_loss_spec


DEFAULT_CELLS_PER_GROUP = 32
# left out of the fingerprint at these values (options added later; older checkpoints stay resumable)
_NEW_OPTION_DEFAULTS = {"loss": ("mse",), "cells_per_group": (None,), "unknown_token": (False,), "self_mask": (0.0,),
                        "node_inputs": ("id",), "effect_rank": (64,),
                        "expression_features": (True,), "neighbour_term": (False,), "fit_prior": (False,)}
#: what a run folder written before an option existed meant by it (config.json without the key)
LEGACY_OPTIONS = {"node_inputs": "id", "neighbour_term": False, "fit_prior": False}
DEFAULT_EFFECT_MASK = 0.5
#: validation scores that model selection can maximise (see :meth:`Trainer.validate`)
SELECT_ON = ("pearson_delta", "pearson_delta_pert", "both")



@dataclass
class TrainConfig:
    """Every knob of a run (written to the run folder as ``config.json``)."""

    seed: int = 0
    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 8
    encoder_kind: str = "gat"
    encoder_dim: int = 32
    encoder_layers: int = 1
    encoder_heads: int = 2
    encoder_dropout: float = 0.0
    encoder_backend: str = "auto"
    use_edge_weight: bool = True
    basal: str = "none"
    hidden: int = 64
    dropout: float = 0.2
    target_term: bool = True
    control_mode: str = "auto"
    checkpoint_every: int = 50
    eval_cells: int = 256
    device: str = "auto"
    progress: bool = True
    max_steps_per_epoch: int | None = None
    min_steps_per_epoch: int = 10
    aggregate: bool = True
    graph_hops: int | str | None = "auto"
    loss: str = "mse"
    cells_per_group: int | None = None
    unknown_token: bool = False
    self_mask: float | None = None
    node_inputs: str = "effects"
    effect_rank: int = 64
    expression_features: bool = True
    neighbour_term: bool = True
    select_on: str = "pearson_delta"
    fit_prior: bool = True

    def __post_init__(self) -> None:
        check_option_types(self)
        try:
            terms = parse_loss_spec(self.loss)
        except LossSpecError as err:
            raise LossSpecError(f"loss: {err}") from None
        if self.control_mode == "auto":  # batch-mean inputs (fast, aggregated) unless the loss compares cell sets
            self.control_mode = "batch" if self.distributional else "mean"
        if self.control_mode not in CONTROL_MODES:
            raise ValueError(f"control_mode must be 'auto' or one of {CONTROL_MODES}, got {self.control_mode!r}")
        if self.batch_size < 1 or self.epochs < 0:
            raise ValueError("batch_size must be >= 1 and epochs >= 0")
        if self.cells_per_group is not None and (not isinstance(self.cells_per_group, int) or self.cells_per_group < 1):
            raise ValueError(f"cells_per_group must be a positive integer, got {self.cells_per_group!r}")
        if self.select_on not in SELECT_ON:
            raise ValueError(f"select_on must be one of {', '.join(SELECT_ON)}, got {self.select_on!r}")
        if self.node_inputs not in NODE_INPUTS:
            raise ValueError(f"node_inputs must be one of {', '.join(NODE_INPUTS)}, got {self.node_inputs!r}")
        if self.unknown_token and self.node_inputs != "id":
            raise ValueError("unknown_token replaces learned ID input rows: set node_inputs = 'id' too")
        if self.self_mask is not None and not 0.0 <= self.self_mask < 1.0:
            raise ValueError(f"self_mask must be in [0, 1), got {self.self_mask!r}")
        if self.mask_rate > 0 and not (self.unknown_token or self.node_inputs == "effects"):
            raise ValueError("self_mask hides genes' own inputs: it needs node_inputs = 'effects', or unknown_token = "
                             "true with node_inputs = 'id'")
        dist_terms = [n for _, n in terms if n in DISTRIBUTIONAL_TERMS]
        if dist_terms and self.control_mode == "mean":
            raise ValueError(
                f"loss {self.loss!r}: the term(s) {', '.join(dist_terms)} compare a perturbation's predicted and true "
                "cell sets, but control_mode 'mean' gives every cell of a perturbation and batch the same input (the "
                "predicted set is one point); use control_mode 'batch' or 'random' (cell-level training)")

    @property
    def mask_rate(self) -> float:
        """Per-step probability of hiding a gene's own input: ``self_mask``, or by default 0.5 with
        ``node_inputs="effects"`` (chosen on validation splits) and 0 otherwise."""
        if self.self_mask is not None:
            return float(self.self_mask)
        return DEFAULT_EFFECT_MASK if self.node_inputs == "effects" else 0.0

    @property
    def hops(self) -> int | None:
        """How far the encoder's graph reaches from the perturbed genes: ``graph_hops`` (the receptive field's
        hops), or for ``"auto"`` the encoder field's depth, the encoder's layers (plus one with
        ``node_inputs="effects"``, whose features read each node's in-neighbours); None: the whole graph."""
        if self.graph_hops == "auto":
            return self.encoder_layers + (1 if self.node_inputs == "effects" else 0)
        return self.graph_hops

    @property
    def distributional(self) -> bool:
        """True when the loss has an ``mmd`` or ``sw1`` term."""
        return any(n in DISTRIBUTIONAL_TERMS for _, n in parse_loss_spec(self.loss))

    @property
    def group_batches(self) -> bool:
        """Batches of k perturbations x m cells (distributional loss, or ``cells_per_group`` set)."""
        return self.distributional or self.cells_per_group is not None

    @property
    def group_cells(self) -> int:
        """m: cells per perturbation in a perturbation batch."""
        return self.cells_per_group if self.cells_per_group is not None else DEFAULT_CELLS_PER_GROUP

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of the options that change the result (not progress/device/checkpoint cadence).

        Options added later are left out while at their defaults, so older checkpoints stay resumable."""
        values = {**self.to_dict(), "self_mask": self.mask_rate}  # the rate in force (None: the default rate)
        d = {k: v for k, v in values.items() if k not in ("progress", "device", "checkpoint_every")
             and not (k in _NEW_OPTION_DEFAULTS and v in _NEW_OPTION_DEFAULTS[k])}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


#: string values an option typed ``... | str | ...`` accepts (other strings are type errors)
_STRING_CHOICES = {"graph_hops": ("auto",)}


def _type_words(tp: Any, name: str) -> tuple[tuple[Any, ...], str]:
    """The accepted types of an annotation (``int | None`` -> ``(int, NoneType)``) and how to say them."""
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
    said = [" or ".join(map(repr, _STRING_CHOICES[name])) if a is str and name in _STRING_CHOICES
            else words.get(a, getattr(a, "__name__", str(a))) for a in args]
    return args, (said[0] if len(said) == 1 else ", ".join(said[:-1]) + " or " + said[-1])


def _accepts(kind: Any, value: Any, name: str) -> bool:
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, (bool, np.bool_))
    if isinstance(value, (bool, np.bool_)):  # True is not 1 here: a boolean for a number is a mistake
        return False
    if kind is int:
        return isinstance(value, numbers.Integral)
    if kind is float:  # integers are numbers too (lr = 1)
        return isinstance(value, numbers.Real)
    if kind is str:
        return isinstance(value, str) and (name not in _STRING_CHOICES or value in _STRING_CHOICES[name])
    return isinstance(value, kind)


#: smallest value of integer options (sizes and counts); a smaller one is refused before anything is built
_INT_MIN = {"epochs": 0, "batch_size": 1, "patience": 0, "encoder_dim": 1, "encoder_layers": 0, "encoder_heads": 1,
            "hidden": 1, "checkpoint_every": 0, "eval_cells": 1, "max_steps_per_epoch": 1, "min_steps_per_epoch": 0,
            "effect_rank": 1, "cells_per_group": 1, "graph_hops": 0}


def check_option_types(cfg: Any) -> None:
    """Raise ValueError unless every field of the dataclass ``cfg`` has a value of its annotated type
    (``int``, ``float`` (integers accepted, finite), ``bool``, ``str``, unions with ``None``; strings of
    ``int | str | None`` fields only from :data:`_STRING_CHOICES`). The message names the option, the value
    and the expected type."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        kinds, said = _type_words(hints[f.name], f.name)
        if not any(_accepts(k, value, f.name) for k in kinds):
            raise ValueError(f"option {f.name} = {value!r}: expected {said}")
        if float in kinds and isinstance(value, numbers.Real) and not math.isfinite(value):
            raise ValueError(f"option {f.name} = {value!r}: expected a finite number")
        low = _INT_MIN.get(f.name)
        if low is not None and isinstance(value, numbers.Integral) and value < low:
            raise ValueError(f"option {f.name} = {value!r}: expected an integer >= {low}")
    device = getattr(cfg, "device", "auto")
    if device != "auto":
        try:
            torch.device(device)
        except (RuntimeError, ValueError):
            raise ValueError(f"option device = {device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from None

