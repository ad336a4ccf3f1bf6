"""Keep freed memory in the process, so a training or evaluation loop reuses its large tensors' pages instead of
returning them to the kernel and faulting them back in at every step.

torch allocates CPU tensors with the C library's ``malloc``. glibc's defaults suit programs that shrink: a
block above the *mmap threshold* (128 kB at start, raised up to the largest block freed so far) is mapped
fresh and unmapped when freed, and free memory above the *trim threshold* (twice the mmap threshold) at the
top of the heap is given back. A forward and backward pass over a whole graph allocates and frees many
tensors of 1-30 MB (``N x d`` activations, ``E x H`` attention, their gradients), so every step pays a page
fault per 4 kB page it touches again: about 6,000-14,000 faults and 8-18 ms of a 0.11 s ``exphormer-mg``
pass over the merged real graph on the 2-core machines here, more for the multigraph encoders
(``benchmarks/bench_gnn.py`` measures a pass either way: ``--allocator keep`` or ``default``).

:func:`keep_freed_memory` sets the two thresholds once (``mallopt``): blocks up to 32 MB (glibc's largest
mmap threshold) come from the heap, and up to 1 GB of free heap is kept. Peak memory is unchanged (freed
pages are reused, not added to); the resident size no longer falls back after a peak, up to that 1 GB.
The ``txpert`` command line and the Python API's work functions call it; ``TXPERT_KEEP_FREED_MEMORY=0``
leaves the C library's defaults. Only glibc (Linux) has these settings; elsewhere nothing changes. The same
effect is had by hand with ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824`` in the
environment, or with another allocator (jemalloc, tcmalloc) loaded by ``LD_PRELOAD``.
"""

from __future__ import annotations

import ctypes
import os
import sys

ENV_SWITCH = "TXPERT_KEEP_FREED_MEMORY"   # "0": leave the C library's defaults
MMAP_THRESHOLD = 32 << 20                 # blocks up to this size come from the heap (glibc's maximum)
TRIM_THRESHOLD = 1 << 30                  # free heap kept before any is given back
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # mallopt parameters (malloc.h)

_state: bool | None = None


def _glibc_mallopt():
    """glibc's ``mallopt``, or None (another C library, or not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version   # only glibc has it
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory (module docstring), once per process; whether it is set."""
    global _state
    if _state is None:
        mallopt = None if os.environ.get(ENV_SWITCH, "1") == "0" else _glibc_mallopt()
        _state = bool(mallopt is not None and mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                      and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    return _state
