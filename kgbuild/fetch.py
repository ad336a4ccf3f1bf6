"""Download the public source files named in ``kgbuild/manifests/*.toml`` into a local cache.

A manifest describes one source (``string``, ``go``, ``reactome``, ...)::

    source = "string"            # the name users type: kgbuild fetch string
    version = "12.0"             # part of the cache path: <cache>/<source>/<version>/<file>
    license = "CC BY 4.0"
    citation = "..."
    homepage = "https://..."

    [files.links]                # one table per file, keyed by the name builders ask for
    url = "https://.../9606.protein.links.v12.0.txt.gz"
    sha256 = "..."               # only when the provider's file is stable; else omitted
    unpack = "zip"               # optional: the download is a zip archive ...
    member = "X.gmt"             # ... and this member is the file handed to the builder
    description = "..."

:func:`fetch` returns ``{key: local path}``; builders call it when the user gives no input path.
Downloads (:func:`download`) stream into ``<file>.part`` with a progress bar, resume a partial file with an
HTTP ``Range`` request (restarting when the server ignores it or the file changed, via ``If-Range``),
retry connection errors and 5xx answers with exponential backoff, verify the sha256, and only then rename
the file into place. A checksum mismatch deletes the partial file: nothing unverified stays in the cache.
Beside each cached file a ``<file>.fetch.json`` records URL, sha256 (computed when the manifest has none),
size, time, version, license and citation; :func:`fetch_record` reads it for a layer's provenance. A cached
file is used only after its sha256 is checked against that record (:func:`cache_state`), so a damaged file
is reported as damaged (path and both hashes) instead of being used or called missing.

Manifests cannot steer a write out of the cache: ``source``, ``version``, file names and zip member names
must be plain names (no separators, no ``..``, not absolute), and :func:`cache_paths` checks that every
target lies inside the cache root.

Environment:

* ``KGBUILD_CACHE_DIR`` - cache root (default ``~/.cache/txpert-kg``);
* ``KGBUILD_MANIFEST_DIR`` - where the ``*.toml`` manifests live (default: the package data
  ``kgbuild/manifests/``, installed with kgbuild and found through :mod:`importlib.resources`);
* ``KGBUILD_MIRROR`` - fetch every file from ``<mirror>/<source>/<file name>`` instead of the provider;
  ``KGBUILD_MIRROR_<SOURCE>`` (e.g. ``KGBUILD_MIRROR_STRING``) - ``<mirror>/<file name>`` for one source.

Offline mode (``offline=True``) never creates a network connection: only cached files are returned, and a
missing file raises :class:`OfflineError` saying which file and how to get it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import tomllib
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

from kgbuild._version import __version__
from kgbuild.atomic import atomic_path, atomic_write
from kgbuild.provenance import sha256_file

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("~/.cache/txpert-kg")
RECORD_SUFFIX = ".fetch.json"
PART_SUFFIX = ".part"
CHUNK_BYTES = 1 << 20


# ---------------------------------------------------------------------- errors
class FetchError(RuntimeError):
    """Base class: a source file could not be provided."""


class ManifestError(FetchError):
    """A manifest that is missing, unreadable or incomplete (names the file and the problem)."""


class DownloadError(FetchError):
    """An HTTP download that failed for good (names the URL, the attempts and the last error)."""


class ChecksumError(FetchError):
    """A downloaded file whose sha256 is not the one the manifest pins."""

    def __init__(self, url: str, expected: str, actual: str):
        self.url, self.expected, self.actual = url, expected, actual
        super().__init__(
            f"checksum mismatch for {url}: expected sha256 {expected}, got {actual}; the download was "
            f"deleted. The provider may have changed the file: update the manifest's sha256 only after "
            f"checking the new file."
        )


class OfflineError(FetchError):
    """Offline mode was asked for a file that is not in the cache."""


class DamagedCacheError(FetchError):
    """A cached file that no longer matches the sha256 recorded when it was downloaded (or whose record is
    missing), found where no new download is allowed (``--offline``)."""


# ---------------------------------------------------------------------- manifests
@dataclass(frozen=True)
class FileSpec:
    """One downloadable file of a source."""

    key: str
    url: str | None
    sha256: str | None = None
    filename: str | None = None
    unpack: str | None = None
    member: str | None = None
    description: str = ""
    instructions: str = ""

    @property
    def download_name(self) -> str:
        """File name in the cache (the manifest's ``filename`` or the URL's last path segment)."""
        if self.filename:
            return self.filename
        if not self.url:
            return self.key
        name = Path(urlparse(self.url).path).name
        return name or self.key


@dataclass(frozen=True)
class Manifest:
    """A source's manifest: version, license, citation and its files by key."""

    source: str
    version: str
    license: str
    citation: str
    path: Path
    name: str = ""
    homepage: str = ""
    description: str = ""
    files: dict[str, FileSpec] = field(default_factory=dict)

    def file(self, key: str) -> FileSpec:
        if key not in self.files:
            raise ManifestError(
                f"source {self.source!r} has no file {key!r}; its files are: {', '.join(self.files)} "
                f"(see {self.path})"
            )
        return self.files[key]


def manifest_dir(override: str | os.PathLike | None = None) -> Path:
    """``override``, else ``$KGBUILD_MANIFEST_DIR``, else the manifests installed with kgbuild (package data
    ``kgbuild/manifests/``, located with :mod:`importlib.resources`, so it works from a wheel as from a
    checkout)."""
    if override is not None:
        return Path(override)
    env = os.environ.get("KGBUILD_MANIFEST_DIR")
    if env:
        return Path(env)
    from importlib.resources import files

    return Path(str(files("kgbuild.manifests")))


def resolve_cache_dir(override: str | os.PathLike | None = None) -> Path:
    """``override``, else ``$KGBUILD_CACHE_DIR``, else ``~/.cache/txpert-kg``."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("KGBUILD_CACHE_DIR")
    return Path(env).expanduser() if env else DEFAULT_CACHE_DIR.expanduser()


# a file name or version: letters, digits and . _ + - only, not starting with '.' or '-' (so never '..',
# a hidden file, an option, an absolute path or a path with separators): every cache path stays in the cache
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,199}$")


def _safe_name(path: Path, where: str, value: Any, what: str) -> str:
    """``value`` if it is a plain name (see ``_SAFE_NAME``), else :class:`ManifestError` naming it."""
    if not isinstance(value, str) or not _SAFE_NAME.match(value):
        raise ManifestError(
            f"{path}: {where} {value!r} is not a plain {what} (letters, digits and . _ + - only, no '/', no '..', "
            "not starting with '.' or '-'): it names a place in the cache, which must stay inside the cache"
        )
    return value


def _check_member(path: Path, key: str, member: Any) -> str | None:
    """A zip member may sit in a folder of the archive, but never above it; its file name must be plain."""
    if member is None:
        return None
    if not isinstance(member, str) or member.startswith("/") or "\\" in member or ".." in member.split("/"):
        raise ManifestError(f"{path}: files.{key}.member {member!r} must be a path inside the archive "
                            "(no leading '/', no '..')")
    _safe_name(path, f"files.{key}.member", member.rsplit("/", 1)[-1], "file name")
    return member


def _parse_manifest(path: Path) -> Manifest:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ManifestError(f"{path}: not valid TOML ({err})") from None
    except OSError as err:
        raise ManifestError(f"{path}: cannot read manifest ({err})") from None
    missing = [k for k in ("source", "version", "license", "citation", "files") if k not in data]
    if missing:
        raise ManifestError(f"{path}: missing key(s) {', '.join(missing)}")
    if not isinstance(data["files"], dict) or not data["files"]:
        raise ManifestError(f"{path}: [files] must hold at least one [files.<key>] table")
    files = {}
    for key, entry in data["files"].items():
        if not isinstance(entry, dict):
            raise ManifestError(f"{path}: files.{key} must be a table")
        unknown = set(entry) - {"url", "sha256", "filename", "unpack", "member", "description", "instructions"}
        if unknown:
            raise ManifestError(f"{path}: files.{key} has unknown key(s) {', '.join(sorted(unknown))}")
        if not entry.get("url") and not entry.get("instructions"):
            raise ManifestError(f"{path}: files.{key} needs a url (or instructions for a manual download)")
        sha = entry.get("sha256") or None
        if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower())):
            raise ManifestError(f"{path}: files.{key}.sha256 is not a 64-digit hex sha256: {sha!r}")
        if entry.get("unpack") not in (None, "zip"):
            raise ManifestError(f"{path}: files.{key}.unpack must be 'zip' (got {entry.get('unpack')!r})")
        if entry.get("filename") is not None:
            _safe_name(path, f"files.{key}.filename", entry["filename"], "file name")
        spec = FileSpec(
            key=key,
            url=entry.get("url"),
            sha256=sha.lower() if sha else None,
            filename=entry.get("filename"),
            unpack=entry.get("unpack"),
            member=_check_member(path, key, entry.get("member")),
            description=entry.get("description", ""),
            instructions=entry.get("instructions", ""),
        )
        if entry.get("filename") is None:
            try:
                _safe_name(path, f"files.{key}: the file name", spec.download_name, "file name")
            except ManifestError as err:
                raise ManifestError(f"{err}; it comes from the url {spec.url!r}: set files.{key}.filename "
                                    "to a plain file name") from None
        files[key] = spec
    _safe_name(path, "source", str(data["source"]), "name")
    _safe_name(path, "version", str(data["version"]), "version")
    return Manifest(
        source=str(data["source"]),
        version=str(data["version"]),
        license=str(data["license"]),
        citation=str(data["citation"]).strip(),
        path=path,
        name=str(data.get("name", data["source"])),
        homepage=str(data.get("homepage", "")),
        description=str(data.get("description", "")).strip(),
        files=files,
    )


def list_manifests(manifests: str | os.PathLike | None = None) -> list[Manifest]:
    """Every manifest in the manifest folder, sorted by source name."""
    folder = manifest_dir(manifests)
    if not folder.is_dir():
        raise ManifestError(f"manifest folder {folder} does not exist (set `manifests` or KGBUILD_MANIFEST_DIR)")
    return sorted((_parse_manifest(p) for p in sorted(folder.glob("*.toml"))), key=lambda m: m.source)


def load_manifest(source: str, manifests: str | os.PathLike | None = None) -> Manifest:
    """The manifest of ``source`` (``<folder>/<source>.toml``, or any manifest declaring that source)."""
    folder = manifest_dir(manifests)
    direct = folder / f"{source}.toml"
    if direct.exists():
        m = _parse_manifest(direct)
        if m.source == source:
            return m
    known = list_manifests(folder)
    for m in known:
        if m.source == source:
            return m
    raise ManifestError(
        f"no manifest for source {source!r} in {folder}; known sources: "
        f"{', '.join(m.source for m in known) or '(none)'}"
    )


def resolve_url(manifest: Manifest, spec: FileSpec) -> str:
    """The URL to download ``spec`` from, after mirror overrides (see the module docstring)."""
    per_source = os.environ.get(f"KGBUILD_MIRROR_{manifest.source.upper().replace('-', '_')}")
    if per_source:
        return f"{per_source.rstrip('/')}/{spec.download_name}"
    mirror = os.environ.get("KGBUILD_MIRROR")
    if mirror:
        return f"{mirror.rstrip('/')}/{manifest.source}/{spec.download_name}"
    if not spec.url:
        raise FetchError(
            f"{manifest.source}/{spec.key} cannot be downloaded automatically: {spec.instructions}"
        )
    return spec.url


# ---------------------------------------------------------------------- cache layout and records
def cache_paths(manifest: Manifest, spec: FileSpec, root: Path) -> tuple[Path, Path]:
    """``(download path, path handed to the builder)``; they differ only for unpacked archives.

    Both are ``<root>/<source>/<version>/<name>``; a path that would leave ``root`` (an absolute or ``..``
    name in a manifest built in code: read manifests are validated already) raises :class:`ManifestError`.
    Every file fetch writes (download, ``.part``, record, unpacked member) sits beside these."""
    folder = root / manifest.source / manifest.version
    download_path = folder / spec.download_name
    final_path = download_path
    if spec.unpack == "zip":
        member = spec.member or Path(spec.download_name).stem
        final_path = folder / Path(member).name
    for target in (download_path, final_path):
        _check_inside(root, target, manifest, spec)
    return download_path, final_path


def _check_inside(root: Path, target: Path, manifest: Manifest, spec: FileSpec) -> None:
    """Raise unless ``target`` is strictly inside ``root``, three levels down, after normalising '..'.

    Lexical on purpose: a cache folder that is itself a symlink the user made is fine."""
    base = os.path.normpath(os.path.abspath(root))
    full = os.path.normpath(os.path.abspath(target))
    rel = os.path.relpath(full, base)
    if os.path.isabs(rel) or rel.split(os.sep)[0] in ("..", ".") or len(rel.split(os.sep)) != 3:
        raise ManifestError(
            f"{manifest.path}: {manifest.source}/{spec.key} would be written to {full}, outside the cache {base} "
            f"(source {manifest.source!r}, version {manifest.version!r}, file name {spec.download_name!r})"
        )


def fetch_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``.fetch.json`` record written beside a cached file (URL, sha256, license, ...), or None."""
    rec = Path(str(path) + RECORD_SUFFIX)
    if not rec.exists():
        return None
    try:
        return json.loads(rec.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """The record beside a cached file, written atomically (temporary file, fsync, rename)."""
    text = json.dumps(data, indent=2, sort_keys=True).encode("utf-8")
    atomic_write(path, lambda fh: fh.write(text))


@dataclass(frozen=True)
class CacheState:
    """What the cache holds for one file: ``status`` is ``ok``, ``missing`` (no file), ``unrecorded`` (a
    file without a readable ``.fetch.json`` record), ``damaged`` (its bytes no longer have the sha256 its
    record holds) or ``stale`` (intact, but not the sha256 the manifest now pins); ``problem`` says which."""

    status: str
    path: Path
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def cache_state(path: Path, pinned_sha256: str | None = None) -> CacheState:
    """Verify a cached file against the sha256 recorded when it was downloaded (always hashed: a file
    overwritten with junk of the same size is caught) and, if given, the manifest's pinned sha256."""
    if not path.is_file():
        return CacheState("missing", path)
    record = fetch_record(path)
    recorded = record.get("sha256") if isinstance(record, dict) else None
    if not isinstance(recorded, str) or len(recorded) != 64:
        return CacheState("unrecorded", path, f"the cached file {path} has no download record "
                          f"({path.name}{RECORD_SUFFIX} with its sha256), so it cannot be verified")
    actual = sha256_file(path)
    if actual != recorded:
        return CacheState("damaged", path, f"the cached file {path} is damaged: its sha256 is {actual}, but "
                          f"{recorded} was recorded when it was downloaded")
    if pinned_sha256 is not None and actual != pinned_sha256:
        return CacheState("stale", path, f"the cached file {path} has sha256 {actual}, but the manifest now pins "
                          f"{pinned_sha256}")
    return CacheState("ok", path)


def _cached_ok(path: Path, expected_sha256: str | None) -> bool:
    """True when ``path`` is a complete cached file matching its record (and the pinned sha256, if any)."""
    return cache_state(path, expected_sha256).ok


@contextlib.contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on a cache folder, so two processes never write one ``.part`` file.

    The lock is taken on the folder itself (no lock file is left behind)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# ---------------------------------------------------------------------- the download itself
class _RetryableError(Exception):
    """A failed attempt worth retrying (connection error, cut stream, 5xx, 429)."""


def _backoff_delay(attempt: int, backoff: float, max_delay: float = 60.0) -> float:
    """Delay before retry ``attempt`` (1-based): ``backoff * 2**(attempt-1)``, capped."""
    return min(max_delay, backoff * (2 ** (attempt - 1)))


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    *,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
    chunk_bytes: int = CHUNK_BYTES,
    progress: bool | None = None,
    session: Any = None,
) -> str:
    """Download ``url`` to ``dest`` and return the file's sha256 (hex).

    The bytes go to ``dest + '.part'``; an existing ``.part`` file (from a cut connection, in this run or
    an earlier one) is resumed with ``Range: bytes=<size>-`` and ``If-Range`` (the validator of the first
    response), so a server that ignores the range or has changed the file answers 200 and the download
    restarts from zero. Connection errors, cut streams, HTTP 5xx and 429 are retried ``retries`` times with
    delays ``backoff * 2**(attempt-1)`` seconds; other HTTP errors fail at once. When ``sha256`` is given
    and the file does not match it, the ``.part`` file is deleted and :class:`ChecksumError` raised.
    ``dest`` appears only complete and verified (atomic rename).
    """
    import requests

    from kgbuild.progress import progress as _progress

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = Path(str(dest) + PART_SUFFIX)
    validator_file = Path(str(part) + ".validator")
    own_session = session is None
    if own_session:
        session = requests.Session()
        session.headers["User-Agent"] = f"txpert-kg/{__version__} (+kgbuild fetch)"
    attempts = retries + 1
    last_error: str = ""
    try:
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                delay = _backoff_delay(attempt - 1, backoff)
                log.warning("retrying %s in %.1f s (attempt %d of %d): %s", url, delay, attempt, attempts, last_error)
                time.sleep(delay)
            try:
                _attempt(session, url, part, validator_file, timeout, chunk_bytes, progress, _progress)
                break
            except _RetryableError as err:
                last_error = str(err)
        else:
            raise DownloadError(
                f"download of {url} failed after {attempts} attempt(s): {last_error}"
                + (f"; the partial file {part} is kept and the next run resumes it" if part.exists() else "")
            )
        actual = sha256_file(part)
        if sha256 is not None and actual != sha256.lower():
            part.unlink(missing_ok=True)
            validator_file.unlink(missing_ok=True)
            raise ChecksumError(url, sha256.lower(), actual)
        with open(part, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(part, dest)
        validator_file.unlink(missing_ok=True)
        return actual
    finally:
        if own_session:
            session.close()


def _attempt(session, url, part: Path, validator_file: Path, timeout, chunk_bytes, progress, make_bar) -> None:
    """One GET; appends to or restarts ``part``. Raises :class:`_RetryableError` for transient failures."""
    import http.client

    import requests
    import urllib3

    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    validator = validator_file.read_text().strip() if validator_file.exists() else ""
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
        if validator:
            headers["If-Range"] = validator
    try:
        resp = session.get(url, headers=headers, stream=True, timeout=timeout)
    except (requests.ConnectionError, requests.Timeout) as err:
        raise _RetryableError(f"connection error: {err}") from None
    with resp:
        status = resp.status_code
        if status == 416 and offset > 0:
            # our partial file is at least as long as the resource (or stale): start over from zero
            part.unlink(missing_ok=True)
            raise _RetryableError("server refused the resume range (416); restarting from zero")
        if status >= 500 or status == 429:
            raise _RetryableError(f"HTTP {status} {resp.reason}")
        if status >= 400:
            raise DownloadError(f"download of {url} failed: HTTP {status} {resp.reason}")
        if status == 206:
            start = _content_range_start(resp.headers.get("Content-Range", ""))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _RetryableError(f"server resumed at byte {start}, not {offset}; restarting from zero")
            mode = "ab"
            total = _content_range_total(resp.headers.get("Content-Range", ""))
        else:
            if offset > 0:
                log.info("server sent the whole file (status %d) instead of a range: restarting %s", status, url)
            offset, mode = 0, "wb"
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        new_validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified") or ""
        if mode == "wb":
            if new_validator:
                validator_file.write_text(new_validator)
            else:
                validator_file.unlink(missing_ok=True)
        written = offset
        # a bar on a terminal, plain periodic lines otherwise (kgbuild.progress); progress=False: silent
        bar = make_bar(total=total, initial=offset, unit="B", desc=Path(urlparse(url).path).name or url,
                       enabled=None if progress is None else bool(progress), leave=False)
        try:
            with open(part, mode) as fh:
                try:
                    for chunk in resp.raw.stream(chunk_bytes, decode_content=False):
                        fh.write(chunk)
                        written += len(chunk)
                        bar.update(len(chunk))
                except (urllib3.exceptions.HTTPError, http.client.HTTPException, ConnectionError, TimeoutError) as err:
                    raise _RetryableError(f"connection lost after {written} bytes: {type(err).__name__}: {err}") from None
        finally:
            bar.close()
        if total is not None and written < total:
            raise _RetryableError(f"connection closed after {written} of {total} bytes")
        if total is not None and written > total:
            part.unlink(missing_ok=True)
            raise _RetryableError(f"received {written} bytes but the server announced {total}; restarting")


def _content_range_start(value: str) -> int | None:
    """Start byte of ``Content-Range: bytes START-END/TOTAL``."""
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _content_range_total(value: str) -> int | None:
    try:
        total = value.split("/")[1]
        return None if total == "*" else int(total)
    except (IndexError, ValueError):
        return None


def _unpack_zip(archive: Path, member: str | None, target: Path) -> None:
    """Extract one member of ``archive`` to ``target`` atomically."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            if member is None:
                if len(names) != 1:
                    raise FetchError(f"{archive}: the archive holds {len(names)} files ({', '.join(names[:5])}); "
                                     "the manifest must name the member to use")
                member = names[0]
            matches = [n for n in names if n == member or Path(n).name == member]
            if not matches:
                raise FetchError(f"{archive}: no member {member!r}; the archive holds {', '.join(names[:10])}")
            with atomic_path(target) as tmp, open(tmp, "wb") as out, zf.open(matches[0]) as src:
                while block := src.read(CHUNK_BYTES):
                    out.write(block)
    except zipfile.BadZipFile as err:
        raise FetchError(f"{archive}: not a valid zip archive ({err}); delete it and fetch again") from None


# ---------------------------------------------------------------------- the public entry point
def fetch(
    source: str,
    files: list[str] | None = None,
    cache_dir: Path | None = None,
    offline: bool = False,
    *,
    manifests: str | os.PathLike | None = None,
    force: bool = False,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool | None = None,
) -> dict[str, Path]:
    """Make the files of ``source`` available locally; returns ``{file key: path}``.

    ``files`` selects keys of the manifest (default: all of them). Cached files are used only after they
    are verified (:func:`cache_state`: the sha256 recorded at download, and the pinned one when the manifest
    has it); a damaged file is downloaded again with a warning naming it and both hashes. ``force``
    downloads again. With ``offline`` no network connection is ever opened: a file missing from the cache
    raises :class:`OfflineError`, a damaged one :class:`DamagedCacheError`, each naming the file and the
    command that downloads it (an unpacked member whose archive is intact is unpacked again).
    """
    manifest = load_manifest(source, manifests)
    keys = list(files) if files else list(manifest.files)
    specs = [manifest.file(k) for k in keys]
    root = resolve_cache_dir(cache_dir)
    result: dict[str, Path] = {}
    for spec in specs:
        download_path, final_path = cache_paths(manifest, spec, root)
        zipped = final_path != download_path
        archive_ok = False
        if not force:
            states = [cache_state(download_path, spec.sha256)]
            if zipped:
                states.append(cache_state(final_path))
            if all(st.ok for st in states):
                log.info("cache hit: %s/%s -> %s", source, spec.key, final_path)
                result[spec.key] = final_path
                continue
            archive_ok = states[0].ok
            bad = [st for st in states if st.status in ("damaged", "stale", "unrecorded")]
            refetch = f"`kgbuild fetch {source} --file {spec.key} --force`"
            if offline and bad and not archive_ok:
                raise DamagedCacheError(
                    f"offline: {bad[0].problem}; run {refetch} with network access to download it again"
                    + (" (or set KGBUILD_CACHE_DIR to a cache with an intact copy)" if cache_dir is None else "")
                )
            for st in bad:
                if st.status in ("damaged", "stale"):
                    log.warning("%s; %s", st.problem, "unpacking it again from its archive" if archive_ok
                                else "downloading it again")
        if offline and not archive_ok:
            raise OfflineError(
                f"offline: {source}/{spec.key} ({spec.download_name}) is not in the cache {root / source / manifest.version}; "
                f"run `kgbuild fetch {source} --file {spec.key}` with network access"
                + (" (or set KGBUILD_CACHE_DIR to the cache that has it)" if cache_dir is None else "")
                + ", or give the builder an input path"
            )
        url = None if archive_ok else resolve_url(manifest, spec)
        download_path.parent.mkdir(parents=True, exist_ok=True)
        with _lock(download_path.parent):
            if force or not _cached_ok(download_path, spec.sha256):
                if offline:  # the archive changed since it was checked: never download offline
                    raise DamagedCacheError(f"offline: {cache_state(download_path, spec.sha256).problem or 'missing'}")
                url = url or resolve_url(manifest, spec)
                log.info("downloading %s -> %s", url, download_path)
                digest = download(url, download_path, spec.sha256, retries=retries, backoff=backoff,
                                  timeout=timeout, progress=progress)
                _write_record(download_path, manifest, spec, url, digest)
            if zipped:
                _unpack_zip(download_path, spec.member, final_path)
                record = dict(fetch_record(download_path) or {})
                record.update(
                    unpacked_from=str(download_path), archive_sha256=record.get("sha256"),
                    sha256=sha256_file(final_path), bytes=final_path.stat().st_size,
                    mtime_ns=final_path.stat().st_mtime_ns, sha256_pinned=False,
                )
                _write_json_atomic(Path(str(final_path) + RECORD_SUFFIX), record)
        result[spec.key] = final_path
    return result


def _write_record(path: Path, manifest: Manifest, spec: FileSpec, url: str, digest: str) -> None:
    st = path.stat()
    _write_json_atomic(Path(str(path) + RECORD_SUFFIX), {
        "source": manifest.source,
        "key": spec.key,
        "version": manifest.version,
        "url": url,
        "manifest_url": spec.url,
        "sha256": digest,
        "sha256_pinned": spec.sha256 is not None,
        "bytes": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "retrieved": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "license": manifest.license,
        "citation": manifest.citation,
        "tool_version": __version__,
    })
