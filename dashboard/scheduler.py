"""Fair sharing of one server between many visitors: a bounded number of analyses at once, a FIFO queue with a
visible position, and a result cache with a byte budget (no Streamlit here; dashboard/compute.py draws it).

    GDLAB_MAX_CONCURRENT  analyses running at once in this server process (default: the cores, at least 1)
    GDLAB_CACHE_MB        bytes of results kept for later visitors of the same settings (default 256)

A visitor waits in line (``Slots.acquire`` calls ``wait(position)`` about twice a second; raising from it, as the
progress callback's ``Cancelled`` or Streamlit's own stop on a rerun / closed tab, leaves the line). One visitor
holds at most one slot: the dashboard analyses a session's settings one after another, so a single visitor
cannot take every slot, and the FIFO order means nobody is overtaken.

The cache stores a result only when its run finished normally and no process-wide torch setting (default dtype,
intra-op threads) was different at its end than at its start: a result computed under interference is dropped.
"""
from __future__ import annotations

import os
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable

import torch


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


class Slots:
    """At most ``n`` holders at once; waiters are served first come, first served."""

    def __init__(self, n: int):
        self.n = n
        self._cv = threading.Condition()
        self._running = 0
        self._queue: list[object] = []

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def acquire(self, wait: Callable[[int], None] | None = None, poll_s: float = 0.5) -> None:
        """Block until a slot is free; ``wait(position)`` (1 = next) is called while waiting and may raise."""
        ticket = object()
        with self._cv:
            self._queue.append(ticket)
            try:
                while not (self._running < self.n and self._queue[0] is ticket):
                    position = self._queue.index(ticket) + 1
                    if wait is not None:
                        self._cv.release()
                        try:
                            wait(position)
                        finally:
                            self._cv.acquire()
                    self._cv.wait(poll_s)
            except BaseException:
                self._queue.remove(ticket)
                self._cv.notify_all()
                raise
            self._queue.pop(0)
            self._running += 1
            self._cv.notify_all()

    def release(self) -> None:
        with self._cv:
            self._running -= 1
            self._cv.notify_all()


def result_bytes(value) -> int:
    """The size of a result as stored (its pickle), in bytes."""
    return len(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


class ByteCache:
    """LRU of key -> value whose total size (``result_bytes``) stays within ``budget`` bytes."""

    def __init__(self, budget: int):
        self.budget = budget
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[object, int]] = OrderedDict()
        self.bytes = 0

    def get(self, key: str):
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: str, value, size: int | None = None) -> bool:
        """Store (evicting the least recently used); False if the value alone is above the budget."""
        size = result_bytes(value) if size is None else size
        if size > self.budget:
            return False
        with self._lock:
            if key in self._items:
                self.bytes -= self._items.pop(key)[1]
            while self._items and self.bytes + size > self.budget:
                _, (_, s) = self._items.popitem(last=False)
                self.bytes -= s
            self._items[key] = (value, size)
            self.bytes += size
            return True

    def __len__(self) -> int:
        return len(self._items)


def global_state() -> tuple:
    """Process-wide torch settings a concurrent run must not see change."""
    return torch.get_default_dtype(), torch.get_num_threads()


SLOTS = Slots(default_concurrency())
CACHE = ByteCache(_env_int("GDLAB_CACHE_MB", 256) * 2**20)


def run_shared(key: str, compute: Callable[[], object], wait: Callable[[int], None] | None = None,
               slots: Slots = SLOTS, cache: ByteCache = CACHE):
    """The cached value of ``key``, or ``compute()`` run in a slot (then cached if computed without interference).

    Returns (value, cached: bool).
    """
    hit = cache.get(key)
    if hit is not None:
        return hit, True
    slots.acquire(wait)
    try:
        hit = cache.get(key)  # another visitor may have computed it while we waited
        if hit is not None:
            return hit, True
        before = global_state()
        value = compute()
        if global_state() == before:
            cache.put(key, value)
        return value, False
    finally:
        slots.release()


def threads_share(slots: "Slots | None" = None) -> int:
    """The cores one analysis may use now: cores // analyses running (this one included), at least 1. Read by an
    analysis that holds its slot: concurrent analyses divide the cores instead of oversubscribing them."""
    slots = slots or SLOTS
    return max(1, cores() // max(1, slots.running))
