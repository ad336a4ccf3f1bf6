"""Provenance records for graph layers: which input files (with sha256) and which settings made them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def input_record(path: str | os.PathLike, role: str | None = None) -> dict[str, Any]:
    """``{"path", "sha256", "bytes"[, "role"]}`` for one input file, as stored in a layer's ``inputs``."""
    p = Path(path)
    rec: dict[str, Any] = {"path": str(p), "sha256": sha256_file(p), "bytes": p.stat().st_size}
    if role:
        rec["role"] = role
    return rec
