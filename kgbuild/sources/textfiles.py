"""Small helpers for the providers' text files: gzip-or-plain opening, header lines, locating bad lines.

Parsers read files with fast vectorised readers (pyarrow / pandas). Those readers report problems without
reliable line numbers (they skip blank lines, work in parallel blocks); when a fast read fails or a
vectorised check finds a bad value, :func:`find_bad_line` re-reads the file line by line - only on that
error path - to name the exact line.
"""

from __future__ import annotations

import gzip
import io
import os
import re
from pathlib import Path
from typing import Callable, TextIO

from kgbuild.errors import KgbuildInputError

GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(path: str | os.PathLike) -> bool:
    """True when the file starts with the gzip magic bytes (whatever its name)."""
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def open_text(path: str | os.PathLike) -> TextIO:
    """Open a plain or gzip-compressed text file for reading (UTF-8, universal newlines off)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise KgbuildInputError("is a folder, not a file", path=path)
    if is_gzip(path):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace", newline="")
    return open(path, "r", encoding="utf-8", errors="replace", newline="")


def first_line(path: str | os.PathLike) -> str:
    """The first line without its line ending ('' for an empty file)."""
    try:
        with open_text(path) as fh:
            return fh.readline().rstrip("\r\n")
    except (OSError, EOFError) as err:  # e.g. a truncated or corrupt gzip stream
        raise KgbuildInputError(f"cannot read the file ({err})", path=path) from None


def find_bad_line(
    path: str | os.PathLike, check: Callable[[str], str | None], skip: Callable[[str], bool] | None = None,
    header_lines: int = 0,
) -> tuple[int, str, str] | None:
    """The first line for which ``check(line)`` returns a problem: ``(line number (1-based), text, problem)``.

    The first ``header_lines`` lines are not checked, nor lines for which ``skip(line)`` is true
    (comments, blank lines). Line endings are stripped first.
    """
    try:
        with open_text(path) as fh:
            for number, raw in enumerate(fh, start=1):
                line = raw.rstrip("\r\n")
                if number <= header_lines:
                    continue
                if skip is not None and skip(line):
                    continue
                problem = check(line)
                if problem:
                    return number, line, problem
    except (OSError, EOFError) as err:
        raise KgbuildInputError(f"cannot read the file ({err})", path=path) from None
    return None


def raise_bad_line(path: str | os.PathLike, found: tuple[int, str, str]) -> None:
    """Raise :class:`KgbuildInputError` for a :func:`find_bad_line` result, quoting the line (shortened)."""
    number, text, problem = found
    shown = text if len(text) <= 120 else text[:117] + "..."
    raise KgbuildInputError(f"{problem}: {shown!r}", path=path, line=number)


def release_from_name(path: str | os.PathLike) -> str | None:
    """A release number embedded in a provider's file name, e.g. ``12.0`` from ``9606.protein.links.v12.0.txt.gz``."""
    m = re.search(r"\.v(\d+(?:\.\d+)*)\.", Path(path).name)
    return m.group(1) if m else None
