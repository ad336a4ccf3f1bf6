"""Guards for output paths: a command never overwrites one of its own inputs, and write failures (a full
disk, a read-only folder) become one clean error naming the file instead of a traceback."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from kgbuild.errors import KgbuildInputError


class OutputError(KgbuildInputError):
    """An output that cannot or must not be written (it is an input, its folder is read-only, the disk is full)."""


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name one file: equal after resolving symlinks and ``..``, or (both existing)
    one inode, as for a hard link."""
    try:
        if Path(a).resolve() == Path(b).resolve():
            return True
    except (OSError, RuntimeError):  # a symlink loop: fall through to the inode comparison
        pass
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): not the same file
        return False


def check_output_not_input(output: str | os.PathLike,
                           inputs: Iterable[tuple[str, str | os.PathLike | None]]) -> None:
    """Raise :class:`OutputError` when ``output`` is the same file as one of ``inputs`` (``(label, path)``
    pairs; ``None`` paths are skipped). Nothing has been written when this raises."""
    for label, path in inputs:
        if path is not None and same_file(output, path):
            shown = f"input {path}" if not label else f"input {path} ({label})"
            raise OutputError(
                f"the output {output} is the same file as the {shown}; writing it would destroy the "
                "input. Choose another output path (nothing was written)"
            )


@contextmanager
def output_errors(output: str | os.PathLike) -> Iterator[None]:
    """Turn an ``OSError`` while writing ``output`` (no space left, permission denied, a parent that is a
    file, ...) into :class:`OutputError` naming the file. The atomic writers have removed their temporary
    file by then, so nothing is left at ``output``."""
    try:
        yield
    except OSError as err:
        blocker = _file_in_the_way(output) if isinstance(err, (FileExistsError, NotADirectoryError)) else None
        if blocker is not None:
            reason = f"{blocker} is a file, not a folder"
        else:
            reason = err.strerror or str(err)
            if err.filename and not same_file(err.filename, output):
                reason += f" ({err.filename})"
        raise OutputError(f"cannot write {output}: {reason}; nothing was written") from err


def _file_in_the_way(output: str | os.PathLike) -> Path | None:
    """The nearest existing ancestor of ``output`` when it is not a folder (so the folder cannot be made)."""
    for parent in Path(output).absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None
