"""Small helpers for the providers' text files: gzip-or-plain opening, header lines, locating bad lines.

Parsers read files with fast vectorised readers (pyarrow / pandas). Those readers report problems without
reliable line numbers (they skip blank lines, work in parallel blocks); when a fast read fails or a
vectorised check finds a bad value, :func:`find_bad_line` re-reads the file line by line - only on that
error path - to name the exact line.

Text is UTF-8, strictly: bytes that are not UTF-8 are an error naming the line (:func:`iter_lines`,
:func:`reader_error`), never silently replaced by U+FFFD inside a gene name. A truncated or damaged gzip
file is an error naming the file.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import zlib
from pathlib import Path
from typing import IO, Callable, Iterator, TextIO

from kgbuild.errors import KgbuildInputError

GZIP_MAGIC = b"\x1f\x8b"
GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


def is_gzip(path: str | os.PathLike) -> bool:
    """True when the file starts with the gzip magic bytes (whatever its name)."""
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def _check_file(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise KgbuildInputError("is a folder, not a file", path=path)


def open_binary(path: str | os.PathLike) -> IO[bytes]:
    """Open a plain or gzip-compressed file for reading bytes (decompressed)."""
    path = Path(path)
    _check_file(path)
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def open_text(path: str | os.PathLike) -> TextIO:
    """Open a plain or gzip-compressed text file for reading (strict UTF-8, universal newlines off).

    Decoding errors surface as ``UnicodeDecodeError`` without a line number: read with :func:`iter_lines`
    (or convert the error with :func:`reader_error`) to name the line."""
    return io.TextIOWrapper(open_binary(path), encoding="utf-8", errors="strict", newline="")


def gzip_error(path: str | os.PathLike, err: BaseException) -> KgbuildInputError:
    """The clean error for a gzip stream that ends early or is corrupt."""
    if isinstance(err, gzip.BadGzipFile):
        problem = f"not a valid gzip file ({err})"
    else:
        problem = f"truncated or damaged gzip file ({type(err).__name__}: {err}); download or compress it again"
    return KgbuildInputError(problem, path=path)


def decode_line(path: str | os.PathLike, number: int, raw: bytes) -> str:
    """``raw`` (one line's bytes) as UTF-8; a :class:`KgbuildInputError` naming line and column if it is not."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        bad = raw[err.start:err.end]
        shown = raw.decode("utf-8", "backslashreplace").rstrip("\r\n")
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise KgbuildInputError(
            f"not valid UTF-8: byte(s) {' '.join(f'0x{b:02x}' for b in bad)} at column {err.start + 1} "
            f"({shown!r}); save the file as UTF-8", path=path, line=number,
        ) from None


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """``(line number (1-based), line without its line ending)`` for every line, decoded as strict UTF-8.

    Bytes that are not UTF-8 and truncated gzip streams raise :class:`KgbuildInputError` naming the file
    (and the line)."""
    try:
        with open_binary(path) as fh:
            for number, raw in enumerate(fh, start=1):
                yield number, decode_line(path, number, raw).rstrip("\r\n")
    except GZIP_ERRORS as err:
        raise gzip_error(path, err) from None
    except FileNotFoundError:
        raise
    except OSError as err:
        raise KgbuildInputError(f"cannot read the file ({err})", path=path) from None


def first_non_utf8_line(path: str | os.PathLike) -> KgbuildInputError | None:
    """The error naming the first line that is not valid UTF-8, or None when every line is."""
    try:
        for _ in iter_lines(path):
            pass
    except KgbuildInputError as err:
        return err
    return None


def reader_error(path: str | os.PathLike, err: BaseException) -> KgbuildInputError | None:
    """A clean, located error for an exception raised by a fast reader (pandas, pyarrow) on ``path``, or
    None when it is not a decoding or gzip problem (the caller reports it its own way)."""
    if isinstance(err, UnicodeDecodeError) or "utf-8" in str(err).lower() or "utf8" in str(err).lower():
        located = first_non_utf8_line(path)
        if located is not None:
            return located
    if isinstance(err, GZIP_ERRORS):
        return gzip_error(path, err)
    if isinstance(err, (OSError, ValueError)) and is_gzip(path):
        located = first_non_utf8_line(path)  # decompresses it all: reports a truncated stream by name
        if located is not None:
            return located
    return None


def first_line(path: str | os.PathLike) -> str:
    """The first line without its line ending ('' for an empty file)."""
    for _, line in iter_lines(path):
        return line
    return ""


def find_bad_line(
    path: str | os.PathLike, check: Callable[[str], str | None], skip: Callable[[str], bool] | None = None,
    header_lines: int = 0,
) -> tuple[int, str, str] | None:
    """The first line for which ``check(line)`` returns a problem: ``(line number (1-based), text, problem)``.

    The first ``header_lines`` lines are not checked, nor lines for which ``skip(line)`` is true
    (comments, blank lines). Line endings are stripped first. A line that is not UTF-8 raises
    :class:`KgbuildInputError` naming it.
    """
    for number, line in iter_lines(path):
        if number <= header_lines:
            continue
        if skip is not None and skip(line):
            continue
        problem = check(line)
        if problem:
            return number, line, problem
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


def guess_separator(header: str, sep: str) -> str | None:
    """Another separator the first line seems to use when it does not contain ``sep`` (``;``, tab, ``,`` or
    ``|``, in that order), else None: a ``;``-separated "CSV" read with ``,`` is one column."""
    if sep in header:
        return None
    for other in (";", "\t", ",", "|"):
        if other != sep and other in header:
            return other
    return None
