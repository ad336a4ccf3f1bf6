"""Checkpoints (``<run>/checkpoints/last.pt``, ``best.pt``): written atomically (:func:`atomic_torch_save`),
read safely with ``torch.load(..., weights_only=True)`` (:func:`load_checkpoint`), loaded into a model with
an error naming the file when the weights do not fit (:func:`load_weights`)."""


from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kgbuild.atomic import atomic_path


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read (damaged, truncated, not a txpert checkpoint, holding code) or whose
    weights do not fit the model; the message names the file."""


def _first_line(err: BaseException, limit: int = 160) -> str:
    text = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Safe load (``weights_only=True``): tensors and plain Python values only.

    Raises :class:`CheckpointError` naming ``path`` when the file cannot be read as a checkpoint (an
    ``UnpicklingError`` for a file holding code, a zip or EOF error for a damaged one, ...)."""
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch raises many types for damaged files
        raise CheckpointError(f"{path}: not a readable checkpoint ({_first_line(err)}); the file is damaged or "
                              "was not written by txpert") from None
    if not isinstance(ck, dict) or not isinstance(ck.get("model"), dict):
        raise CheckpointError(f"{path}: not a txpert checkpoint (no model weights in it)")
    return ck


def load_weights(model: torch.nn.Module, state: dict[str, Any], path: Path | str) -> None:
    """``model.load_state_dict(state)``; a mismatch (other shapes or names: the checkpoint belongs to another
    model) raises :class:`CheckpointError` naming ``path``."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: its weights do not fit the run's model ({_first_line(err)}); the "
                              "checkpoint belongs to another model or run options") from None

