"""Atomic file writes: write a temporary file beside the target, then rename it into place.

A failure at any point (an exception, a full disk: ``OSError(ENOSPC)``) leaves no file at the target and no
temporary file behind. Used by every writer in the toolkit (multigraph files, exports, simulator files, run
folders, checkpoints).

A process killed with ``kill -9`` cannot clean up: its temporary file stays. Temporary files are therefore
named ``.<target name>.<pid>-<host>.<random>.part`` (host: 8 hex digits of a hash of the host name), and
every new write of a target first removes that target's stale temporary files (:func:`remove_stale_parts`):
those written on this host by a process that no longer runs, and those of unknown origin (another host, or
the unnamed ``.<target name>.<random>.part`` of older versions) not modified for a day.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator

log = logging.getLogger(__name__)

PART_SUFFIX = ".part"
STALE_AFTER_S = 24 * 3600  # temporary files of unknown writers older than this are leftovers
_OWNED = re.compile(r"^(\d+)-([0-9a-f]{8})\.[A-Za-z0-9_]{8}$")  # <pid>-<host>.<mkstemp random>
_LEGACY = re.compile(r"^[A-Za-z0-9_]{8}$")  # <mkstemp random> only (before the writer was recorded)


def _umask_mode() -> int:
    """``0o666`` minus the process umask: the mode ``open()`` would give a new file (mkstemp gives 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _pid_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name != "posix":  # os.kill(pid, 0) would signal the process there: assume it runs
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    except OSError:  # pragma: no cover - e.g. pid out of range: not a live process
        return False
    return True


def remove_stale_parts(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files an interrupted (e.g. ``kill -9``) write of ``path`` left; returns them.

    A temporary file is stale when its writer (pid recorded in the name) ran on this host and no longer
    runs, or, when the writer is unknown (another host, old-style name), when it was not modified for
    :data:`STALE_AFTER_S` seconds. Files of running writers and of other targets are never touched.
    """
    path = Path(path)
    prefix = f".{path.name}."
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    host, now = _host_tag(), time.time()
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(PART_SUFFIX)):
            continue
        middle = name[len(prefix):-len(PART_SUFFIX)]
        owned, legacy = _OWNED.match(middle), _LEGACY.match(middle)
        if not (owned or legacy):
            continue
        try:
            if owned and owned.group(2) == host and os.name == "posix":
                stale = not _pid_running(int(owned.group(1)))
            else:
                stale = now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S
            if stale:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:  # gone meanwhile, or not ours to delete: leave it
            continue
    if removed:
        log.info("removed %d stale temporary file(s) of %s left by an interrupted write: %s", len(removed), path,
                 ", ".join(p.name for p in removed))
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error delete it.

    For libraries that want a file name (``torch.save``, ``DataFrame.to_csv``, ``write_h5ad``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-{_host_tag()}.", suffix=PART_SUFFIX,
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(binary file handle)`` on a temporary file beside ``path`` (flushed and fsynced), then rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)
