"""Progress reporting that suits where the output goes: a tqdm bar on a terminal, plain lines elsewhere.

A tqdm bar redraws itself with carriage returns, which fills a log file or a CI log with ``\\r`` lines
(and tqdm's ``disable=None`` hides the bar altogether when output is piped, so a long step prints
nothing). :func:`progress` chooses per call: when stderr is a terminal it is a tqdm bar; otherwise it
writes one plain line to stderr each time another 10 % is done or 10 s have passed, and a last line at
the end::

    go: Jaccard 40% (1,234 of 3,085 genes), 12 s

Use it as an iterator wrapper or, for weighted steps, as a context manager with :meth:`Progress.update`::

    for item in progress(items, desc="scoring", unit="candidates"):
        ...
    with progress(total=n_genes, desc="Jaccard", unit="genes") as bar:
        for b0 in range(0, n, block):
            ...
            bar.update(b1 - b0)
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, TextIO

#: plain mode: a line each time this many percent more is done ...
EVERY_PERCENT = 10.0
#: ... or this many seconds have passed since the last line
EVERY_SECONDS = 10.0


def is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _amount(n: float, unit: str) -> str:
    if unit == "B":  # bytes: binary prefixes
        value = float(n)
        for prefix in ("", "Ki", "Mi", "Gi", "Ti"):
            if abs(value) < 1024 or prefix == "Ti":
                return f"{value:.0f} {prefix}B" if not prefix else f"{value:.1f} {prefix}B"
            value /= 1024
    return f"{int(n):,}"


class Progress:
    """One progress report; see the module docstring. ``enabled=False`` reports nothing."""

    def __init__(self, iterable: Iterable | None = None, total: float | None = None, desc: str = "",
                 unit: str = "it", enabled: bool | None = None, initial: float = 0, leave: bool = True,
                 stream: TextIO | None = None, every_percent: float = EVERY_PERCENT,
                 every_seconds: float = EVERY_SECONDS, delay: float = 0.0, **tqdm_kwargs: Any) -> None:
        self.iterable = iterable
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total, self.desc, self.unit = total, desc, unit
        self.n = initial
        self.stream = sys.stderr if stream is None else stream
        self.every_percent, self.every_seconds, self.delay = every_percent, every_seconds, delay
        self.mode = "off" if enabled is False else ("bar" if is_terminal(self.stream) else "plain")
        self._bar = None
        self._start = self._last_time = time.perf_counter()
        self._last_n = initial
        self._printed_n: float | None = None
        self._closed = False
        if self.mode == "bar":
            from tqdm import tqdm

            unit_kwargs = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave, file=self.stream,
                             delay=delay, **unit_kwargs, **tqdm_kwargs)

    # ------------------------------------------------------------------ reporting
    def line(self) -> str:
        elapsed = time.perf_counter() - self._start
        unit = "" if self.unit == "B" else f" {self.unit}"
        if self.total:
            pct = 100.0 * self.n / self.total
            return (f"{self.desc} {pct:.0f}% ({_amount(self.n, self.unit)} of {_amount(self.total, self.unit)}"
                    f"{unit}), {elapsed:.0f} s")
        return f"{self.desc} {_amount(self.n, self.unit)}{unit}, {elapsed:.0f} s"

    def _emit(self) -> None:
        self.stream.write(self.line() + "\n")
        self.stream.flush()
        self._printed_n, self._last_n, self._last_time = self.n, self.n, time.perf_counter()

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.mode == "bar":
            self._bar.update(n)
        elif self.mode == "plain":
            now = time.perf_counter()
            step = self.total * self.every_percent / 100.0 if self.total else None
            crossed = step is not None and step > 0 and int(self.n // step) > int(self._last_n // step)
            if (crossed or now - self._last_time >= self.every_seconds) and now - self._start >= self.delay:
                self._emit()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.mode == "bar":
            self._bar.close()
        elif self.mode == "plain" and self._printed_n != self.n and \
                (self._printed_n is not None or time.perf_counter() - self._start >= self.delay):
            self._emit()

    # ------------------------------------------------------------------ protocols
    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("progress(total=...) is not iterable: use it as a context manager with update()")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress(iterable: Iterable | None = None, total: float | None = None, desc: str = "", unit: str = "it",
             enabled: bool | None = None, **kwargs: Any) -> Progress:
    """A :class:`Progress` over ``iterable`` (or of ``total`` units, updated by hand).

    ``enabled``: ``False`` reports nothing; ``None`` or ``True`` report, as a tqdm bar when stderr is a
    terminal and as plain periodic lines otherwise (never carriage returns in a pipe or a log).
    ``delay`` (seconds, tqdm's option): nothing is shown before that much time has passed, so work that
    is usually quick stays silent and only a long run reports.
    """
    return Progress(iterable, total=total, desc=desc, unit=unit, enabled=enabled, **kwargs)
