"""C kernels compiled here on first use: one :class:`CompiledLibrary` per C source file.

A library is compiled with the host's C compiler (``$CC``, else ``cc``) and :data:`CFLAGS` into the toolkit's
cache folder, under a name that hashes the source and the local headers it includes, the compiler, the flags
and the CPU (``-march=native`` code runs only on the CPU it was compiled for), then loaded with
:mod:`ctypes`. When it cannot be built (no compiler, a read-only cache), one warning says why and the caller
composes torch operations instead.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import re
import subprocess
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from kgbuild.atomic import atomic_path

#: what the C kernels are compiled with: -O3 and the host's vector units; reassociation (not the rest of
#: -ffast-math: infinities and NaN keep their meaning) so the per-head dot products vectorise; OpenMP, which
#: resolves to the libgomp.so.1 torch has already loaded (one thread pool, not two competing for the cores)
CFLAGS = ["-O3", "-march=native", "-std=gnu11", "-fopenmp", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math",
          "-fassociative-math", "-fno-signed-zeros"]
ENV_CACHE = "TXPERT_KERNEL_CACHE"       # where compiled kernels are kept (default ~/.cache/txpert-kg/kernels)
_LOCAL_INCLUDE = re.compile(r'\s*#\s*include\s+"([^"]+)"')


def _cpu_identity() -> str:
    """What ``-march=native`` depends on: the architecture, CPU model and feature flags."""
    text = platform.machine() + platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags", "Features", "CPU part")):
                text += line
                if line.startswith(("flags", "Features")):
                    break
    except OSError:
        pass
    return text


def _compiler() -> str:
    return os.environ.get("CC", "cc")


class CompiledLibrary:
    """The C source ``source`` as a loaded shared library; ``declare(lib)`` sets its functions' ``argtypes``
    and ``restype``; ``label`` names it in messages ("the fused attention kernels"), ``fallback`` says what
    runs instead when it cannot be built; the environment variable ``switch`` set to ``0`` turns it off.
    Every function comes in a float32 and a float64 build, ``<name>_f32`` and ``<name>_f64``, and returns
    nonzero when it could not allocate its scratch buffers."""

    def __init__(self, source: Path, declare: Callable[[ctypes.CDLL], None], label: str, fallback: str,
                 switch: str):
        self.source, self.declare, self.label, self.fallback = Path(source), declare, label, fallback
        self.switch = switch
        self._lib: ctypes.CDLL | None = None
        self.error: str | None = None
        self._lock = threading.Lock()

    def path(self) -> Path:
        """The compiled library's path for this source, compiler, flags and CPU (built there on first use):
        ``$TXPERT_KERNEL_CACHE``, else ``kernels`` in the toolkit's cache folder (``~/.cache/txpert-kg``)."""
        from kgbuild.fetch import DEFAULT_CACHE_DIR

        key = hashlib.sha256(b"".join(f.read_bytes() for f in self.files())
                             + " ".join([_compiler(), *CFLAGS]).encode() + _cpu_identity().encode())
        base = Path(os.environ[ENV_CACHE]) if os.environ.get(ENV_CACHE) else DEFAULT_CACHE_DIR.expanduser() / "kernels"
        return base / f"{self.source.stem}-{key.hexdigest()[:20]}.so"

    def files(self) -> list[Path]:
        """The source and the local headers it includes (``#include "name"``, relative to the including file,
        followed recursively): what the compiled library is built from, so what its cache name hashes."""
        found: list[Path] = []
        todo = [self.source]
        while todo:
            path = todo.pop(0).resolve()
            if path in found:
                continue
            found.append(path)
            for line in path.read_text().splitlines():
                match = _LOCAL_INCLUDE.match(line)
                if match:
                    todo.append(path.parent / match.group(1))
        return found

    def _compile(self, target: Path) -> None:
        """Compile the source to ``target`` (an atomic write: never half-written)."""
        with atomic_path(target) as tmp:
            cmd = [_compiler(), *CFLAGS, "-o", str(tmp), str(self.source), "-lm"]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr.strip()}")

    def load(self) -> ctypes.CDLL | None:
        """The library (compiled on first use, then loaded from :meth:`path`), or None when it cannot be built
        here (one warning says why)."""
        if self._lib is not None or self.error is not None:
            return self._lib
        with self._lock:
            if self._lib is None and self.error is None:
                try:
                    path = self.path()
                    if not path.exists():
                        self._compile(path)
                    lib = ctypes.CDLL(str(path))
                    self.declare(lib)
                    self._lib = lib
                except (OSError, RuntimeError) as err:
                    self.error = str(err)
                    warnings.warn(f"{self.label} could not be built ({err}); {self.fallback}", RuntimeWarning,
                                  stacklevel=3)
        return self._lib

    def takes(self, *tensors: torch.Tensor) -> bool:
        """Whether the kernels take these tensors: not switched off (``switch=0``), built, CPU, float32 or
        float64, one dtype."""
        t0 = tensors[0]
        return os.environ.get(self.switch, "1") != "0" and t0.dtype in (torch.float32, torch.float64) and \
            all(t.device.type == "cpu" and t.dtype == t0.dtype for t in tensors) and self.load() is not None

    def call(self, name: str, dtype: torch.dtype, *args) -> None:
        """Run function ``name`` in its build for ``dtype``; tensors and numpy arrays go as pointers."""
        fn = getattr(self.load(), f"{name}_{'f32' if dtype == torch.float32 else 'f64'}")
        ptrs = [a.data_ptr() if isinstance(a, torch.Tensor) else a.ctypes.data if isinstance(a, np.ndarray) else a
                for a in args]
        if fn(*ptrs):
            raise MemoryError(f"{self.label}, {name}: out of memory for its scratch buffers")
