"""Atomic, byte-reproducible file writes for the simulator (text, gzip, parquet, h5ad).

Every writer writes a temporary file in the destination folder and renames it into place, so a failure
never leaves a half-written file. Gzip streams are written with ``mtime=0`` and no file name in the
header, so the same content always gives the same bytes.
"""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path
from typing import Callable

from kgbuild.atomic import atomic_path, atomic_write


write_atomic = atomic_write


def write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text, ``\\n`` line ends; gzip-compressed (deterministically) when ``path`` ends in ``.gz``."""
    data = text.encode("utf-8")
    if str(path).endswith(".gz"):
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
            gz.write(data)
        data = buf.getvalue()
    return write_atomic(path, lambda fh: fh.write(data))


def write_via_tempfile(path: str | os.PathLike, write_to: Callable[[Path], None]) -> Path:
    """For libraries that want a path (parquet, h5ad): ``write_to(tmp_path)`` then rename to ``path``."""
    with atomic_path(path) as tmp:
        write_to(tmp)
    return Path(path)
