"""kgbuild.fetch against a real HTTP server on 127.0.0.1 serving the real shared files.

The server is ``http.server`` in a thread with a handler that can answer 500, cut the connection after N
bytes, honour or ignore ``Range`` and ``If-Range``, and records every request. ``requests`` is never
mocked: every download goes through real sockets. "Offline never opens a socket" is proved with a
``socket.connect`` audit hook (and a control test shows the same hook does see online downloads).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import sys
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from kgbuild import fetch as kf
from kgbuild.cli import main as kgbuild_main
from kgbuild.provenance import sha256_file

# ---------------------------------------------------------------------- socket audit
_CONNECTS: list[object] = []
_AUDIT = {"on": False}


def _audit_hook(event: str, args: tuple) -> None:
    if _AUDIT["on"] and event == "socket.connect":
        _CONNECTS.append(args[1] if len(args) > 1 else args)


sys.addaudithook(_audit_hook)  # hooks cannot be removed; it records only while a test switches it on


@pytest.fixture
def socket_audit():
    """Records the address of every socket.connect made while the test runs."""
    _CONNECTS.clear()
    _AUDIT["on"] = True
    try:
        yield _CONNECTS
    finally:
        _AUDIT["on"] = False


# ---------------------------------------------------------------------- the test server
@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=dict)  # URL path -> body
    requests: list[dict] = field(default_factory=list)
    fail: dict[str, list[int]] = field(default_factory=dict)  # URL path -> statuses to answer first
    cut_after: dict[str, int] = field(default_factory=dict)  # URL path -> bytes sent before the first cut
    honour_range: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)

    def etag(self, path: str) -> str:
        return '"' + hashlib.sha256(self.files[path]).hexdigest()[:16] + '"'

    def gets(self, path: str) -> list[dict]:
        return [r for r in self.requests if r["path"] == path]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: ServerState  # set on a per-server subclass

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        st = self.state
        with st.lock:
            st.requests.append({"path": self.path, "range": self.headers.get("Range"),
                                "if_range": self.headers.get("If-Range")})
            fail = st.fail.get(self.path)
            status = fail.pop(0) if fail else None
            cut = st.cut_after.pop(self.path, None)
        if status is not None:
            body = f"error {status}".encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path not in st.files:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data, etag = st.files[self.path], st.etag(self.path)
        start = 0
        rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
        if rng and st.honour_range and (if_range is None or if_range == etag):
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True  # the socket closes with Content-Length unmet
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    """A threaded HTTP server on 127.0.0.1 (random port); yields ``(base_url, state)``."""
    state = ServerState()
    handler = type("BoundHandler", (Handler,), {"state": state})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    finally:
        httpd.shutdown()
        httpd.server_close()


# ---------------------------------------------------------------------- helpers
LINKS = "string/9606.protein.links.v12.0.subset.txt.gz"
INFO = "string/9606.protein.info.v12.0.subset.txt.gz"


def write_manifest(folder: Path, source: str, files: dict[str, dict], version: str = "1") -> Path:
    """A manifest ``folder/<source>.toml`` with the given ``[files.<key>]`` tables."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f'source = "{source}"', f'version = "{version}"', 'license = "CC BY 4.0"',
             'citation = "A test citation."', ""]
    for key, entry in files.items():
        lines.append(f"[files.{key}]")
        lines += [f'{k} = "{v}"' for k, v in entry.items()]
        lines.append("")
    path = folder / f"{source}.toml"
    path.write_text("\n".join(lines))
    return path


def cache_files(root: Path) -> list[Path]:
    """Every file under the cache (data, partial files, records)."""
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture(autouse=True)
def _no_env_overrides(monkeypatch):
    for var in ("KGBUILD_MIRROR", "KGBUILD_MIRROR_STRING", "KGBUILD_MIRROR_REACTOME", "KGBUILD_CACHE_DIR",
                "KGBUILD_MANIFEST_DIR"):
        monkeypatch.delenv(var, raising=False)


# ---------------------------------------------------------------------- downloads
def test_good_download_lands_in_cache_with_sha256(server, shared_data, tmp_path):
    base, state = server
    data = (shared_data / LINKS).read_bytes()
    state.files["/links.txt.gz"] = data
    digest = hashlib.sha256(data).hexdigest()
    manifests = tmp_path / "manifests"
    write_manifest(manifests, "demo", {"links": {"url": f"{base}/links.txt.gz", "sha256": digest}})
    cache = tmp_path / "cache"

    out = kf.fetch("demo", cache_dir=cache, manifests=manifests, progress=False)

    path = out["links"]
    assert path == cache / "demo" / "1" / "links.txt.gz"
    assert path.read_bytes() == data
    assert sha256_file(path) == digest
    record = kf.fetch_record(path)
    assert record["sha256"] == digest and record["sha256_pinned"] is True
    assert record["url"] == f"{base}/links.txt.gz" and record["bytes"] == len(data)
    assert record["license"] == "CC BY 4.0"
    assert not list(cache.rglob("*.part"))


def test_checksum_mismatch_raises_and_leaves_nothing(server, shared_data, tmp_path):
    base, state = server
    data = (shared_data / INFO).read_bytes()
    state.files["/info.txt.gz"] = data
    wrong = "0" * 64
    manifests = tmp_path / "manifests"
    write_manifest(manifests, "demo", {"info": {"url": f"{base}/info.txt.gz", "sha256": wrong}})
    cache = tmp_path / "cache"

    with pytest.raises(kf.ChecksumError) as err:
        kf.fetch("demo", cache_dir=cache, manifests=manifests, progress=False)

    msg = str(err.value)
    assert f"{base}/info.txt.gz" in msg and wrong in msg and hashlib.sha256(data).hexdigest() in msg
    assert cache_files(cache) == []


def test_connection_cut_midway_is_resumed_with_range(server, shared_data, tmp_path):
    base, state = server
    data = (shared_data / LINKS).read_bytes()
    state.files["/links.txt.gz"] = data
    state.cut_after["/links.txt.gz"] = 50_000
    dest = tmp_path / "cache" / "links.txt.gz"

    digest = kf.download(f"{base}/links.txt.gz", dest, hashlib.sha256(data).hexdigest(),
                         retries=3, backoff=0.01, progress=False)

    gets = state.gets("/links.txt.gz")
    assert len(gets) == 2
    assert gets[0]["range"] is None
    assert gets[1]["range"] == "bytes=50000-"
    assert gets[1]["if_range"] == state.etag("/links.txt.gz")
    assert dest.read_bytes() == data and digest == hashlib.sha256(data).hexdigest()
    assert not Path(str(dest) + ".part").exists()


def test_server_ignoring_range_restarts_from_zero(server, shared_data, tmp_path):
    base, state = server
    data = (shared_data / INFO).read_bytes()
    state.files["/info.txt.gz"] = data
    state.cut_after["/info.txt.gz"] = 10_000
    state.honour_range = False
    dest = tmp_path / "info.txt.gz"

    kf.download(f"{base}/info.txt.gz", dest, hashlib.sha256(data).hexdigest(), retries=2, backoff=0.01,
                progress=False)

    gets = state.gets("/info.txt.gz")
    assert [g["range"] for g in gets] == [None, "bytes=10000-"]  # asked to resume, got 200: started over
    assert dest.read_bytes() == data


def test_partial_file_of_a_changed_resource_is_not_spliced(server, shared_data, tmp_path):
    """A .part left by an earlier run of a file that has since changed: If-Range makes the server send
    the whole new file, so old and new bytes are never mixed."""
    base, state = server
    data = (shared_data / INFO).read_bytes()
    state.files["/info.txt.gz"] = data
    dest = tmp_path / "info.txt.gz"
    Path(str(dest) + ".part").write_bytes(b"x" * 5000)  # bytes of an older version
    Path(str(dest) + ".part.validator").write_text('"old-etag"')

    kf.download(f"{base}/info.txt.gz", dest, hashlib.sha256(data).hexdigest(), retries=0, progress=False)

    assert state.gets("/info.txt.gz")[0]["range"] == "bytes=5000-"
    assert dest.read_bytes() == data


def test_http_500_is_retried_then_succeeds(server, shared_data, tmp_path):
    base, state = server
    data = (shared_data / INFO).read_bytes()
    state.files["/info.txt.gz"] = data
    state.fail["/info.txt.gz"] = [500, 503]
    dest = tmp_path / "info.txt.gz"

    kf.download(f"{base}/info.txt.gz", dest, retries=3, backoff=0.01, progress=False)

    assert len(state.gets("/info.txt.gz")) == 3
    assert dest.read_bytes() == data


def test_http_500_retried_then_reported(server, shared_data, tmp_path):
    base, state = server
    state.files["/info.txt.gz"] = (shared_data / INFO).read_bytes()
    state.fail["/info.txt.gz"] = [500] * 10
    manifests = tmp_path / "manifests"
    write_manifest(manifests, "demo", {"info": {"url": f"{base}/info.txt.gz"}})
    cache = tmp_path / "cache"

    with pytest.raises(kf.DownloadError) as err:
        kf.fetch("demo", cache_dir=cache, manifests=manifests, retries=2, backoff=0.01, progress=False)

    assert len(state.gets("/info.txt.gz")) == 3  # 1 attempt + 2 retries
    msg = str(err.value)
    assert f"{base}/info.txt.gz" in msg and "3 attempt" in msg and "HTTP 500" in msg
    assert cache_files(cache) == []


def test_http_404_fails_at_once(server, tmp_path):
    base, state = server
    with pytest.raises(kf.DownloadError, match="HTTP 404"):
        kf.download(f"{base}/missing.gz", tmp_path / "missing.gz", retries=3, backoff=0.01, progress=False)
    assert len(state.gets("/missing.gz")) == 1


def test_backoff_grows_exponentially():
    assert [kf._backoff_delay(a, 0.5) for a in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert kf._backoff_delay(30, 1.0) == 60.0


def test_cache_hit_does_not_download_again(server, shared_data, tmp_path):
    base, state = server
    data = (shared_data / INFO).read_bytes()
    state.files["/info.txt.gz"] = data
    manifests = tmp_path / "manifests"
    write_manifest(manifests, "demo", {"info": {"url": f"{base}/info.txt.gz",
                                                "sha256": hashlib.sha256(data).hexdigest()}})
    cache = tmp_path / "cache"

    first = kf.fetch("demo", cache_dir=cache, manifests=manifests, progress=False)
    second = kf.fetch("demo", cache_dir=cache, manifests=manifests, progress=False)
    assert first == second
    assert len(state.gets("/info.txt.gz")) == 1
    kf.fetch("demo", cache_dir=cache, manifests=manifests, force=True, progress=False)
    assert len(state.gets("/info.txt.gz")) == 2


def test_corrupted_cached_file_is_downloaded_again(server, shared_data, tmp_path):
    base, state = server
    data = (shared_data / INFO).read_bytes()
    state.files["/info.txt.gz"] = data
    manifests = tmp_path / "manifests"
    write_manifest(manifests, "demo", {"info": {"url": f"{base}/info.txt.gz",
                                                "sha256": hashlib.sha256(data).hexdigest()}})
    cache = tmp_path / "cache"
    path = kf.fetch("demo", cache_dir=cache, manifests=manifests, progress=False)["info"]
    path.write_bytes(b"y" * len(data))  # same size, wrong bytes

    kf.fetch("demo", cache_dir=cache, manifests=manifests, progress=False)
    assert len(state.gets("/info.txt.gz")) == 2 and path.read_bytes() == data


# ---------------------------------------------------------------------- the real manifests through a mirror
def test_real_string_manifest_through_mirror(server, shared_data, tmp_path, monkeypatch):
    base, state = server
    state.files["/string/9606.protein.links.v12.0.txt.gz"] = (shared_data / LINKS).read_bytes()
    state.files["/string/9606.protein.info.v12.0.txt.gz"] = (shared_data / INFO).read_bytes()
    monkeypatch.setenv("KGBUILD_MIRROR", base)
    cache = tmp_path / "cache"

    out = kf.fetch("string", ["links", "info"], cache_dir=cache, progress=False)

    assert set(out) == {"links", "info"}
    assert out["links"] == cache / "string" / "12.0" / "9606.protein.links.v12.0.txt.gz"
    assert out["links"].read_bytes() == (shared_data / LINKS).read_bytes()
    assert kf.fetch_record(out["info"])["sha256"] == sha256_file(shared_data / INFO)
    assert kf.fetch_record(out["info"])["sha256_pinned"] is False


def _serve_reactome_zip(server, shared_data, tmp_path, monkeypatch):
    """Serve the shared Reactome GMT zipped, as Reactome does; returns ``(gmt path, server state)``."""
    base, state = server
    gmt = shared_data / "reactome" / "ReactomePathways.gmt"
    archive = tmp_path / "ReactomePathways.gmt.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(gmt, "ReactomePathways.gmt")
    state.files["/reactome/ReactomePathways.gmt.zip"] = archive.read_bytes()
    monkeypatch.setenv("KGBUILD_MIRROR_REACTOME", f"{base}/reactome")
    return gmt, state


def test_reactome_zip_is_unpacked(server, shared_data, tmp_path, monkeypatch):
    gmt, state = _serve_reactome_zip(server, shared_data, tmp_path, monkeypatch)
    cache = tmp_path / "cache"

    out = kf.fetch("reactome", ["gmt"], cache_dir=cache, progress=False)

    assert out["gmt"].name == "ReactomePathways.gmt"
    assert out["gmt"].read_bytes() == gmt.read_bytes()
    record = kf.fetch_record(out["gmt"])
    assert record["sha256"] == sha256_file(gmt) and record["archive_sha256"] == sha256_file(tmp_path / "ReactomePathways.gmt.zip")
    # the unpacked file is a cache hit afterwards
    kf.fetch("reactome", ["gmt"], cache_dir=cache, progress=False)
    assert len(state.gets("/reactome/ReactomePathways.gmt.zip")) == 1


# ---------------------------------------------------------------------- offline
def test_socket_audit_sees_online_downloads(server, shared_data, tmp_path, socket_audit):
    """Control for the offline tests: the audit hook does record the connections of a download."""
    base, state = server
    state.files["/info.txt.gz"] = (shared_data / INFO).read_bytes()
    kf.download(f"{base}/info.txt.gz", tmp_path / "info.txt.gz", progress=False)
    assert len(socket_audit) >= 1


def test_offline_never_opens_a_socket(server, shared_data, tmp_path, socket_audit, monkeypatch):
    base, state = server
    data = (shared_data / INFO).read_bytes()
    state.files["/info.txt.gz"] = data
    manifests = tmp_path / "manifests"
    write_manifest(manifests, "demo", {"info": {"url": f"{base}/info.txt.gz"},
                                       "links": {"url": f"{base}/links.txt.gz"}})
    cache = tmp_path / "cache"

    with pytest.raises(kf.OfflineError) as err:  # nothing cached yet
        kf.fetch("demo", ["info"], cache_dir=cache, offline=True, manifests=manifests)
    assert "demo/info" in str(err.value) and "kgbuild fetch demo --file info" in str(err.value)
    assert socket_audit == [] and state.requests == []

    _AUDIT["on"] = False
    kf.fetch("demo", ["info"], cache_dir=cache, manifests=manifests, progress=False)  # online, fills cache
    socket_audit.clear()
    _AUDIT["on"] = True

    out = kf.fetch("demo", ["info"], cache_dir=cache, offline=True, manifests=manifests)
    assert out["info"].read_bytes() == data
    with pytest.raises(kf.OfflineError, match="links"):
        kf.fetch("demo", cache_dir=cache, offline=True, manifests=manifests)
    monkeypatch.setenv("KGBUILD_CACHE_DIR", str(cache))
    result = CliRunner().invoke(kgbuild_main, ["fetch", "demo", "--offline", "--manifest-dir", str(manifests)])
    assert result.exit_code == 1 and "offline" in result.output
    assert socket_audit == []
    assert len(state.requests) == 1


# ---------------------------------------------------------------------- manifests and the command line
def test_unknown_source_and_file_are_named(tmp_path):
    manifests = tmp_path / "m"
    write_manifest(manifests, "demo", {"a": {"url": "http://127.0.0.1:9/a"}})
    with pytest.raises(kf.ManifestError, match="known sources: demo"):
        kf.fetch("nope", manifests=manifests, cache_dir=tmp_path)
    with pytest.raises(kf.ManifestError, match="no file 'b'.*a"):
        kf.fetch("demo", ["b"], manifests=manifests, cache_dir=tmp_path)


def test_bad_manifest_is_reported(tmp_path):
    manifests = tmp_path / "m"
    write_manifest(manifests, "demo", {"a": {"url": "http://x/a", "sha256": "abc"}})
    with pytest.raises(kf.ManifestError, match="demo.toml.*not a 64-digit hex sha256"):
        kf.load_manifest("demo", manifests)
    (manifests / "demo.toml").write_text('source = "demo"\nversion = "1"\n')
    with pytest.raises(kf.ManifestError, match="missing key"):
        kf.load_manifest("demo", manifests)


def test_shipped_manifests_are_complete():
    sources = {m.source: m for m in kf.list_manifests()}
    assert {"string", "go", "reactome"} <= set(sources)
    assert set(sources["string"].files) == {"links", "info", "links_detailed"}
    assert set(sources["go"].files) >= {"obo", "gaf"}
    assert set(sources["reactome"].files) >= {"gmt", "ncbi2reactome"}
    assert sources["reactome"].files["gmt"].unpack == "zip"
    for m in sources.values():
        assert m.license and m.citation and m.version


def test_cli_fetch_list_and_download(server, shared_data, tmp_path, monkeypatch):
    base, state = server
    state.files["/string/9606.protein.info.v12.0.txt.gz"] = (shared_data / INFO).read_bytes()
    monkeypatch.setenv("KGBUILD_MIRROR", base)
    runner = CliRunner()

    listing = runner.invoke(kgbuild_main, ["fetch", "--list"])
    assert listing.exit_code == 0, listing.output
    assert "string" in listing.output and "CC BY 4.0" in listing.output and "Szklarczyk" in listing.output

    cache = tmp_path / "cache"
    result = runner.invoke(kgbuild_main, ["fetch", "string", "--file", "info", "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    path = cache / "string" / "12.0" / "9606.protein.info.v12.0.txt.gz"
    assert f"string/info\t{path}" in result.output and path.exists()

    bad = runner.invoke(kgbuild_main, ["fetch", "string", "--file", "nope", "--cache-dir", str(cache)])
    assert bad.exit_code == 1 and "no file 'nope'" in bad.output
    none = runner.invoke(kgbuild_main, ["fetch"])
    assert none.exit_code == 2 and "--list" in none.output
    assert json.loads(Path(str(path) + kf.RECORD_SUFFIX).read_text())["source"] == "string"


# ---------------------------------------------------------------------- issue 14: writes stay in the cache
@pytest.mark.parametrize("field_name, value", [
    ("filename", "ABS"),            # replaced by an absolute path inside tmp_path
    ("filename", "../../outside.txt"),
    ("filename", "sub/dir.txt"),
    ("filename", ".."),
    ("version", "../../.."),
    ("version", "a/b"),
    ("version", ".."),
    ("member", "../../evil.gmt"),
    ("source", "../x"),
    ("url", "http://127.0.0.1:9/a/.."),  # the cache name would be '..'
])
def test_manifest_paths_outside_the_cache_are_refused(tmp_path, field_name, value):
    manifests = tmp_path / "manifests"
    cache = tmp_path / "work" / "cache"
    entry = {"url": "http://127.0.0.1:9/data.txt"}
    source, version = "demo", "1"
    if value == "ABS":
        value = str(tmp_path / "abs" / "x.txt")
    if field_name == "version":
        version = value
    elif field_name == "source":
        source = value
    elif field_name == "member":
        entry.update(url="http://127.0.0.1:9/data.zip", unpack="zip", member=value)
    else:
        entry[field_name] = value
    path = write_manifest(manifests, "demo", {"data": entry}, version=version)
    if field_name == "source":
        path.write_text(path.read_text().replace('source = "demo"', f'source = "{source}"'))
    with pytest.raises(kf.ManifestError) as err:
        kf.fetch("demo", cache_dir=cache, manifests=manifests, retries=0, progress=False)
    assert str(path) in str(err.value) and repr(value) in str(err.value)
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["manifests/demo.toml"]


def test_cache_paths_refuse_a_target_outside_the_root(tmp_path):
    """The last line of defence, for manifests built in code (not read from a file)."""
    spec = kf.FileSpec(key="x", url="http://h/x.txt")
    bad = kf.Manifest(source="demo", version="../../..", license="l", citation="c", path=tmp_path / "m.toml",
                      files={"x": spec})
    with pytest.raises(kf.ManifestError, match="outside the cache"):
        kf.cache_paths(bad, spec, tmp_path / "cache")
    good = kf.Manifest(source="demo", version="1", license="l", citation="c", path=tmp_path / "m.toml",
                       files={"x": spec})
    assert kf.cache_paths(good, spec, tmp_path / "cache")[0] == tmp_path / "cache" / "demo" / "1" / "x.txt"


_WRITES: list[str] = []
_WRITE_AUDIT = {"on": False}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _write_audit_hook(event: str, args: tuple) -> None:
    if not _WRITE_AUDIT["on"] or not args:
        return
    if isinstance(args[0], (str, bytes, os.PathLike)) and "__pycache__" in os.fsdecode(args[0]):
        return  # the import system caching bytecode, not the code under test
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1], args[2]
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & _WRITE_FLAGS:
            _WRITES.append(os.fsdecode(args[0]))
    elif event in ("os.rename", "os.replace", "os.link", "os.symlink"):
        _WRITES.append(os.fsdecode(args[1]))
    elif event in ("os.mkdir", "os.remove", "os.unlink", "os.rmdir", "os.chmod", "os.truncate", "os.utime"):
        if isinstance(args[0], (str, bytes, os.PathLike)):
            _WRITES.append(os.fsdecode(args[0]))


sys.addaudithook(_write_audit_hook)


def test_every_write_of_a_fetch_lands_inside_the_cache(server, shared_data, tmp_path):
    """An audit hook records every file opened for writing, renamed, created or removed during a fetch
    (download, resume files, zip unpacking, records): all of them are under the cache root."""
    base, state = server
    gmt = shared_data / "reactome" / "ReactomePathways.gmt"
    archive = tmp_path / "src" / "ReactomePathways.gmt.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(gmt, "ReactomePathways.gmt")
    state.files["/r.zip"] = archive.read_bytes()
    state.files["/info.txt.gz"] = (shared_data / INFO).read_bytes()
    state.cut_after["/info.txt.gz"] = 1000  # a resumed download too
    manifests = tmp_path / "manifests"
    write_manifest(manifests, "demo", {"gmt": {"url": f"{base}/r.zip", "unpack": "zip",
                                               "member": "ReactomePathways.gmt"},
                                       "info": {"url": f"{base}/info.txt.gz"}})
    cache = tmp_path / "cache"
    _WRITES.clear()
    _WRITE_AUDIT["on"] = True
    try:
        out = kf.fetch("demo", cache_dir=cache, manifests=manifests, backoff=0.01, progress=False)
        kf.fetch("demo", cache_dir=cache, manifests=manifests, force=True, backoff=0.01, progress=False)
    finally:
        _WRITE_AUDIT["on"] = False
    assert out["gmt"].read_bytes() == gmt.read_bytes()
    assert len(_WRITES) > 5
    root = os.path.realpath(cache)
    outside = [w for w in _WRITES if os.path.commonpath([root, os.path.realpath(w)]) != root]
    assert outside == []


# ---------------------------------------------------------------------- issue 14: the cache is verified
def _fill_cache(base, state, shared_data, tmp_path, pinned: bool):
    data = (shared_data / INFO).read_bytes()
    state.files["/info.txt.gz"] = data
    entry = {"url": f"{base}/info.txt.gz"}
    if pinned:
        entry["sha256"] = hashlib.sha256(data).hexdigest()
    manifests = tmp_path / "manifests"
    write_manifest(manifests, "demo", {"info": entry})
    cache = tmp_path / "cache"
    path = kf.fetch("demo", cache_dir=cache, manifests=manifests, progress=False)["info"]
    return data, manifests, cache, path


def _damage(path: Path) -> str:
    """Overwrite with same-size junk, keeping the modification time; returns the junk's sha256."""
    st = path.stat()
    junk = b"y" * st.st_size
    path.write_bytes(junk)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    return hashlib.sha256(junk).hexdigest()


@pytest.mark.parametrize("pinned", [False, True])
def test_same_size_junk_in_the_cache_is_reported_as_damaged_offline(server, shared_data, tmp_path, pinned):
    base, state = server
    data, manifests, cache, path = _fill_cache(base, state, shared_data, tmp_path, pinned)
    junk_sha = _damage(path)

    with pytest.raises(kf.DamagedCacheError) as err:
        kf.fetch("demo", cache_dir=cache, offline=True, manifests=manifests)
    msg = str(err.value)
    assert str(path) in msg and "damaged" in msg and "not in the cache" not in msg
    assert hashlib.sha256(data).hexdigest() in msg and junk_sha in msg
    assert "kgbuild fetch demo --file info --force" in msg
    result = CliRunner().invoke(kgbuild_main, ["fetch", "demo", "--offline", "--manifest-dir", str(manifests),
                                               "--cache-dir", str(cache)])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and "damaged" in result.output
    assert len(state.gets("/info.txt.gz")) == 1


def test_damaged_cache_file_is_downloaded_again_online_with_a_warning(server, shared_data, tmp_path, caplog):
    base, state = server
    data, manifests, cache, path = _fill_cache(base, state, shared_data, tmp_path, pinned=False)
    junk_sha = _damage(path)
    with caplog.at_level("WARNING", logger="kgbuild.fetch"):
        kf.fetch("demo", cache_dir=cache, manifests=manifests, progress=False)
    assert path.read_bytes() == data and len(state.gets("/info.txt.gz")) == 2
    assert any("damaged" in r.message and junk_sha in r.message for r in caplog.records)


def test_cached_file_without_its_record_is_not_used_offline(server, shared_data, tmp_path):
    base, state = server
    data, manifests, cache, path = _fill_cache(base, state, shared_data, tmp_path, pinned=False)
    Path(str(path) + kf.RECORD_SUFFIX).unlink()
    with pytest.raises(kf.DamagedCacheError, match="no download record"):
        kf.fetch("demo", cache_dir=cache, offline=True, manifests=manifests)


def test_damaged_unpacked_member_is_unpacked_again_offline(server, shared_data, tmp_path, monkeypatch):
    gmt, state = _serve_reactome_zip(server, shared_data, tmp_path, monkeypatch)
    cache = tmp_path / "cache"
    out = kf.fetch("reactome", ["gmt"], cache_dir=cache, progress=False)["gmt"]
    _damage(out)
    again = kf.fetch("reactome", ["gmt"], cache_dir=cache, offline=True)["gmt"]
    assert again.read_bytes() == gmt.read_bytes()
    assert len(state.gets("/reactome/ReactomePathways.gmt.zip")) == 1
