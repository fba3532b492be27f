r"""Progress reporting, cancellation and threads for long analyses (no Streamlit here).

Progress
--------
``Progress = Callable[[float, str], None]``: the engine calls ``progress(fraction, what)`` with a fraction in
[0, 1] (non-decreasing within one run) and what is being computed, e.g. ``"Jacobian products · LSTM · lag
120/999"``. Calls are throttled to at most ~20 per second (``Reporter``); the first (0) and last (1) always
come. A front end draws it: the command line a bar on stderr (``StderrBar``), the dashboard ``st.progress``.

Cancellation: if the callback raises ``Cancelled``, the exception propagates out of ``run_experiment`` /
``run_comparison`` and nothing is returned or cached (the engine holds no global state that a half-finished run
could leave behind). A newer setting in the dashboard supersedes a running analysis this way.

Threads (no races between concurrent analyses in one process)
-------------------------------------------------------------
``torch.set_num_threads`` is process-wide (and seeds the count of every new thread): calling it around each run
leaks between Streamlit sessions, which run as threads of one process. So:

1. The process's intra-op thread count is set ONCE, at start, by the front end: ``init_threads(n)``. The
   command line calls it with ``--threads`` (0 = every core this process may use, ``hardware_threads()``); the
   dashboard calls it once with 1 at start-up and never again. The engine never calls ``torch.set_num_threads``.
2. Parallelism beyond that comes from the engine's own thread pools, whose size is per call:
   ``ExperimentConfig.threads`` (0 = ``hardware_threads()``): the cells of a comparison side by side
   (``analysis.comparison``) and each Jacobian sweep's spectra in a ``batch_pool(threads)`` while the products go
   on (single-core LAPACK calls; torch releases the GIL inside each op). The dashboard gives each concurrent
   analysis ``cores // running analyses`` threads through the config instead of oversubscribing the cores.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

Progress = Callable[[float, str], None]


class Cancelled(Exception):
    """Raised by a progress callback to stop a run; the engine lets it propagate and returns nothing."""


MIN_INTERVAL_S = 0.05  # at most ~20 calls per second


class Reporter:
    """A throttled view of a ``Progress`` callback over the sub-range [lo, hi] of the whole run.

    ``rep(f, what)`` reports lo + f (hi - lo); ``rep.stage(a, b)`` is the reporter of the sub-range [a, b] of this
    one (fractions of this reporter's range), sharing the throttle. ``progress=None`` makes every call a no-op.
    """

    def __init__(self, progress: Progress | None, lo: float = 0.0, hi: float = 1.0, prefix: str = "",
                 _clock: list | None = None):
        self.progress, self.lo, self.hi, self.prefix = progress, lo, hi, prefix
        self._clock = _clock if _clock is not None else [-1.0]  # time of the last call, shared by stages

    def __call__(self, fraction: float, what: str, *, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if not force and now - self._clock[0] < MIN_INTERVAL_S:
            return
        self._clock[0] = now
        f = self.lo + min(1.0, max(0.0, fraction)) * (self.hi - self.lo)
        self.progress(f, f"{self.prefix}{what}")

    def stage(self, a: float, b: float, prefix: str = "") -> "Reporter":
        span = self.hi - self.lo
        return Reporter(self.progress, self.lo + a * span, self.lo + b * span, self.prefix + prefix, self._clock)


def reporter(progress: "Progress | Reporter | None") -> Reporter:
    return progress if isinstance(progress, Reporter) else Reporter(progress)


# ---- threads ------------------------------------------------------------------------------------------------
_INIT_LOCK = threading.Lock()
_INITIALIZED: list[int] = []


def hardware_threads() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def init_threads(n: int = 0) -> int:
    """Set the process's intra-op thread count once (0 = ``hardware_threads()``); returns the count in force.

    Call it at process start, before any analysis runs. Later calls change nothing and return the first count,
    so no running analysis ever sees its thread count change under it.
    """
    with _INIT_LOCK:
        if not _INITIALIZED:
            k = hardware_threads() if n in (0, None) else int(n)
            torch.set_num_threads(k)
            _INITIALIZED.append(k)
        return _INITIALIZED[0]


def resolve_threads(threads: int) -> int:
    """The size of one analysis's pool: ``threads``, or ``hardware_threads()`` for 0."""
    return hardware_threads() if threads in (0, None) else int(threads)


def batch_pool(threads: int) -> ThreadPoolExecutor | None:
    """A pool of ``threads`` workers for one call (None for 1: run inline). Use as a context manager."""
    return ThreadPoolExecutor(threads, thread_name_prefix="analysis") if threads > 1 else None


# ---- the command line's bar -----------------------------------------------------------------------------
class StderrBar:
    """``Progress`` drawn on stderr as ``[#####.....]  42%  what``: one line redrawn in place on a terminal. Off a
    terminal nothing is drawn, unless ``lines`` (one plain line per update, for logs: the exports use it) or
    ``force`` (draw as on a terminal). ``close()`` ends the line."""

    def __init__(self, stream=None, width: int = 30, force: bool = False, lines: bool = False):
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = force or bool(getattr(self.stream, "isatty", lambda: False)())
        self.lines = lines and not self.tty
        self.enabled = self.tty or self.lines
        self._drawn = False

    def __call__(self, fraction: float, what: str) -> None:
        if not self.enabled:
            return
        f = min(max(float(fraction), 0.0), 1.0)
        n = int(round(f * self.width))
        line = f"[{'#' * n}{'.' * (self.width - n)}] {f * 100:3.0f}%  {what}"
        if self.lines:
            self.stream.write(line[:200] + "\n")
        else:
            self.stream.write(("\r" + line)[:160].ljust(100))
            self._drawn = True
        self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\r" + " " * 110 + "\r")
            self.stream.flush()
            self._drawn = False
