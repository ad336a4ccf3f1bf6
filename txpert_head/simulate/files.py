"""Atomic, byte-reproducible text files for the simulator (plain or gzip).

The file is written as a temporary file in the destination folder and renamed into place
(:func:`kgbuild.atomic.atomic_write`; parquet and h5ad files use :func:`kgbuild.atomic.atomic_path`
directly), so a failure never leaves a half-written file. Gzip streams are written with ``mtime=0`` and no file name in the
header, so the same content always gives the same bytes.
"""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

from kgbuild.atomic import atomic_write


def write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text, ``\\n`` line ends; gzip-compressed (deterministically) when ``path`` ends in ``.gz``."""
    data = text.encode("utf-8")
    if str(path).endswith(".gz"):
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
            gz.write(data)
        data = buf.getvalue()
    return atomic_write(path, lambda fh: fh.write(data))
