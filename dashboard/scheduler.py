"""One door for all work of one server: every analysis, background job, upload, sweep point and training tick takes
a slot here, with its cost estimate, and waits in a visible line (no Streamlit here; the callers draw the line).

    GDLAB_MAX_CONCURRENT  work running at once in this server process (default: the cores, at least 1)
    GDLAB_MAX_SERVER_MB   the server's memory ceiling: the estimates of the work running, plus the server's own
                          memory (its resident size when this module loaded, plus the result cache's budget), stay
                          under it (default: 3/4 of the machine's memory; ``off``: no ceiling)
    GDLAB_CACHE_MB        bytes of results kept for later visitors of the same settings (default 256)
    GDLAB_DOOR_LOG        a file to append one JSON line to per piece of work done (its wait and hold; the load test)

Admission (``Slots.acquire``): a ticket (visitor, kind, estimated seconds and MB) waits until

1. fewer than ``n`` tickets hold a slot, or the ticket is short interactive work (*express*: estimated at most
   ``EXPRESS_S``, e.g. a default page's first chart) and the one extra express slot is free: short work never waits
   behind long;
2. kind ``BACKGROUND`` (full analyses in jobs, sweep points, long uploads): fewer than ``n - reserve`` background
   holders (``reserve`` = 1 when n >= 2): a slot is always left for the short work of pages (``INTERACTIVE``:
   first charts, short analyses, training ticks), so a first chart never waits behind a background job;
3. its visitor holds no other slot (one slot per visitor, whatever the kind);
4. it is first in service order among the waiting tickets that pass 1-3: interactive before background, then
   shortest estimate first with ageing, ``key = seconds - seconds waited`` (equal estimates are served first come,
   first served, and a long ticket is overtaken only by work shorter than the time it has waited); or it is express
   and first in that order among the express tickets that pass 1-3 (the *express lane*: a first chart goes in
   past long first passes that have waited longer, and past a head of the line that waits for memory);
5. the running estimates plus its own stay within the memory budget (the head of the line waits for memory; only
   the express lane, short work with its own small estimate that must fit too, goes past it).

A waiting ticket's place (``position``) is in service order; an express ticket's is its place in the express lane.

A ticket whose memory estimate alone is above the budget is refused at once (``LimitExceeded``, one line).
Waiting calls ``wait(position)`` about twice a second (1 = next); raising from it, as a progress callback's
``Cancelled`` or Streamlit's stop on a rerun / closed tab, leaves the line. ``waiting_reason()`` says, inside
``wait``, why this thread's ticket waits.

The cache stores a result only when its run finished normally and no process-wide torch setting (default dtype,
intra-op threads) was different at its end than at its start: a result computed under interference is dropped.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

from analysis.limits import GFLOP_PER_S, LimitExceeded, _env_number

from .result_cache import ByteCache, global_state, result_bytes  # noqa: F401 - re-exported for the callers

INTERACTIVE, BACKGROUND = "interactive", "background"
EXPRESS_S = 1.0  # interactive work estimated at most this long may take the one slot above n


def _env_int(name: str, default: int, lo: int = 1) -> int:
    try:
        return max(lo, int(os.environ.get(name, "") or default))
    except ValueError:
        return default


def cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover
        return max(1, os.cpu_count() or 1)


def default_concurrency() -> int:
    return _env_int("GDLAB_MAX_CONCURRENT", cores())


def _meminfo_mb(key: str) -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return None


def rss_mb() -> float:
    """This process's resident memory in MB (0 where /proc is missing)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover
        pass
    return 0.0


def server_ceiling_mb(env=None) -> float | None:
    """GDLAB_MAX_SERVER_MB, or 3/4 of the machine's memory; None for 'off' (ConfigError: one line, if malformed)."""
    env = os.environ if env is None else env
    total = _meminfo_mb("MemTotal")
    return _env_number(env, "GDLAB_MAX_SERVER_MB", 0.75 * total if total else None)


@dataclass(eq=False)
class Ticket:
    """One piece of work in line or holding a slot."""

    visitor: str | None = None
    kind: str = INTERACTIVE
    seconds: float = 0.0  # estimated run time (flops at analysis.limits.GFLOP_PER_S)
    memory_mb: float = 0.0  # estimated peak memory
    since: float = field(default_factory=time.monotonic)
    reason: str = ""
    label: str = ""
    admitted: float | None = None


_local = threading.local()


def waiting_reason() -> str:
    """Why this thread's ticket waits (read it inside a ``wait`` callback); '' when it is simply in line."""
    return getattr(_local, "reason", "")


class Slots:
    """At most ``n`` holders at once, admitted by the rules of the module docstring."""

    def __init__(self, n: int, reserve: int | None = None, memory_mb: float | None = None, ceiling_mb=None,
                 base_mb: float = 0.0):
        self.n = n
        self.reserve = (1 if n >= 2 else 0) if reserve is None else reserve
        self.memory_mb = memory_mb  # the budget for the work's estimates (None: none)
        self.ceiling_mb, self.base_mb = ceiling_mb, base_mb  # for the messages
        self._cv = threading.Condition()
        self._holders: list[Ticket] = []
        self._queue: list[Ticket] = []

    @property
    def running(self) -> int:
        return len(self._holders)

    @property
    def waiting(self) -> int:
        return len(self._queue)

    @property
    def memory_in_use_mb(self) -> float:
        return sum(t.memory_mb for t in self._holders)

    def background_limit(self) -> int:
        return max(1, self.n - self.reserve)

    # ---- the rules (called under the lock) ----
    def _express(self, t: Ticket) -> bool:
        return t.kind == INTERACTIVE and 0 < t.seconds <= EXPRESS_S  # (no estimate: not express)

    def _free(self, t: Ticket) -> bool:
        """Rule 1: a slot for ``t`` (the express slot counts for short interactive work only)."""
        return len(self._holders) < self.n or (self._express(t) and len(self._holders) < self.n + 1)

    def _blocked(self, t: Ticket) -> str:
        """Why ``t`` cannot take a slot now (rules 1-3), '' if it could."""
        if not self._free(t):
            return ""  # plainly in line
        if t.kind == BACKGROUND and sum(h.kind == BACKGROUND for h in self._holders) >= self.background_limit():
            return (f"background work waits for a background slot ({self.background_limit()} of {self.n}; "
                    "the others are kept for pages' first charts)")
        if t.visitor is not None and any(h.visitor == t.visitor for h in self._holders):
            return "your other analysis holds your one slot: this starts when it ends"
        return ""

    def _order_key(self, t: Ticket, now: float) -> tuple:
        return (t.kind != INTERACTIVE, t.seconds - (now - t.since))

    def _next(self) -> Ticket | None:
        now = time.monotonic()
        cands = [t for t in self._queue if self._free(t) and not self._blocked(t)]
        return min(cands, key=lambda t: self._order_key(t, now), default=None)

    def _next_express(self) -> Ticket | None:
        """The express lane's head: short interactive work that could take a slot now, in the same order."""
        now = time.monotonic()
        cands = [t for t in self._queue if self._express(t) and self._free(t) and not self._blocked(t)]
        return min(cands, key=lambda t: self._order_key(t, now), default=None)

    def _fits(self, t: Ticket) -> bool:
        return self.memory_mb is None or self.memory_in_use_mb + t.memory_mb <= self.memory_mb

    def _admissible(self, t: Ticket) -> bool:
        """Rules 4-5 for ``t``: the head of the line, or of the express lane, and its memory fits."""
        return self._fits(t) and (self._next() is t or (self._express(t) and self._next_express() is t))

    def position(self, t: Ticket) -> int:
        """1 + the waiting tickets served before ``t`` (in service order, whatever blocks them now); for short
        interactive work, its place in the express lane (it goes in there at the latest)."""
        now = time.monotonic()
        key = self._order_key(t, now)
        lane = [o for o in self._queue if o is not t and (self._express(o) or not self._express(t))]
        return 1 + sum(self._order_key(o, now) < key for o in lane)

    # ---- the door ----
    def _refuse_if_too_big(self, t: Ticket, label: str) -> None:
        if self.memory_mb is not None and t.memory_mb > self.memory_mb:
            ceiling = (f"GDLAB_MAX_SERVER_MB={self.ceiling_mb:,.0f} less {self.base_mb:,.0f} MB for the server "
                       "itself and its result cache" if self.ceiling_mb is not None else "the server's ceiling")
            raise LimitExceeded(
                f"{label} would need {t.memory_mb:,.0f} MB of memory (estimate), more than this server keeps for "
                f"all its work ({self.memory_mb:,.0f} MB: {ceiling}): lower the sizes, or raise GDLAB_MAX_SERVER_MB "
                "where the server starts")

    def acquire(self, wait: Callable[[int], None] | None = None, poll_s: float = 0.5, *, visitor: str | None = None,
                kind: str = INTERACTIVE, cost=None, label: str = "this analysis") -> Ticket:
        """Block until admitted; returns the ticket to ``release``. ``cost``: an ``analysis.limits.Cost`` (or
        None: no estimate, counted as instant and free)."""
        t = Ticket(visitor, kind, label=label)
        if cost is not None:
            t.seconds, t.memory_mb = cost.flops / (GFLOP_PER_S * 1e9), cost.memory_mb
        self._refuse_if_too_big(t, label)
        with self._cv:
            self._queue.append(t)
            try:
                while not self._admissible(t):
                    t.reason = self._blocked(t) or ("" if self._fits(t) or not self._free(t) else
                                                    f"waiting for memory: {self.memory_in_use_mb:,.0f} of "
                                                    f"{self.memory_mb:,.0f} MB in use, {t.memory_mb:,.0f} MB needed")
                    if wait is not None:
                        position = self.position(t)
                        self._cv.release()
                        try:
                            _local.reason = t.reason
                            wait(position)
                        finally:
                            _local.reason = ""
                            self._cv.acquire()
                    self._cv.wait(poll_s)
            except BaseException:
                self._queue.remove(t)
                self._cv.notify_all()
                raise
            self._queue.remove(t)
            self._holders.append(t)
            t.admitted = time.monotonic()
            self._cv.notify_all()
        return t

    def release(self, ticket: Ticket | None = None) -> None:
        """Give the slot back (``ticket``; without it the oldest anonymous holder's, as before tickets)."""
        with self._cv:
            if ticket is None:
                ticket = next((h for h in self._holders if h.visitor is None), self._holders[0])
            self._holders.remove(ticket)
            self._cv.notify_all()
        _log(ticket)

    @contextmanager
    def hold(self, wait=None, **kw):
        """``with slots.hold(wait, visitor=..., kind=..., cost=...):`` the work inside holds one slot."""
        t = self.acquire(wait, **kw)
        try:
            yield t
        finally:
            self.release(t)

    def line_text(self, position: int) -> str:
        """'position 3 in line (2 running, at most 2 at once)' plus why this thread waits, for a ``wait``."""
        why = waiting_reason()
        return (f"position {position} in line ({self.running} running, at most {self.n} at once)"
                + (f"; {why}" if why else ""))


def _log(t: Ticket) -> None:
    """One JSON line per piece of work given back, to the file named by GDLAB_DOOR_LOG (set by the host, e.g. the
    load test): label, kind, estimate, seconds waited in line and seconds held, and when it joined the line (wall
    clock)."""
    path = os.environ.get("GDLAB_DOOR_LOG")
    if not path or t.admitted is None:
        return
    import json
    now = time.monotonic()
    line = {"label": t.label, "kind": t.kind, "visitor": (t.visitor or "")[:8], "est_s": round(t.seconds, 3),
            "mb": round(t.memory_mb), "waited_s": round(t.admitted - t.since, 3),
            "held_s": round(now - t.admitted, 3),
            "queued_at": round(time.time() - (now - t.since), 3)}  # wall clock (epoch s): the load test's timelines
    with _LOG_LOCK, open(path, "a") as f:
        f.write(json.dumps(line) + "\n")


_LOG_LOCK = threading.Lock()


def _make_slots() -> Slots:
    """The server's door. With GDLAB_RAY_ADDRESS (dashboard/remote.py) the work runs on the cluster: the slots
    default to its CPUs and the work's estimates are not the server's memory."""
    ceiling = server_ceiling_mb()
    base = rss_mb() + _env_int("GDLAB_CACHE_MB", 256)
    budget = None if ceiling is None else max(0.0, ceiling - base)
    from . import remote
    if remote.enabled():
        n = default_concurrency() if os.environ.get("GDLAB_MAX_CONCURRENT") else remote.cluster_cpus()
        return Slots(n, memory_mb=None, ceiling_mb=ceiling, base_mb=base)
    return Slots(default_concurrency(), memory_mb=budget, ceiling_mb=ceiling, base_mb=base)


SLOTS = _make_slots()
CACHE = ByteCache(_env_int("GDLAB_CACHE_MB", 256) * 2**20)


def run_shared(key: str, compute: Callable[[], object], wait: Callable[[int], None] | None = None,
               slots: Slots | None = None, cache: ByteCache | None = None, **door):
    """The cached value of ``key``, or ``compute()`` run in a slot (then cached if computed without interference).
    ``door``: ``visitor``, ``kind``, ``cost``, ``label`` for ``Slots.acquire``. Returns (value, cached: bool)."""
    slots, cache = slots or SLOTS, cache if cache is not None else CACHE
    hit = cache.get(key)
    if hit is not None:
        return hit, True
    with slots.hold(wait, **door):
        hit = cache.get(key)  # another visitor may have computed it while we waited
        if hit is not None:
            return hit, True
        before = global_state()
        value = compute()
        if global_state() == before:
            cache.put(key, value)
        return value, False


def threads_share(slots: "Slots | None" = None) -> int:
    """The cores one analysis may use now: cores // work running (this one included), at least 1. Read by an
    analysis that holds its slot: concurrent analyses divide the cores instead of oversubscribing them."""
    slots = slots or SLOTS
    return max(1, cores() // max(1, slots.running))
