"""Full analyses that outlive one script run (no Streamlit here; dashboard/app.py draws their progress).

A long analysis is shown in two steps: the gradient pass first (the page is drawn from it), then the full analysis
(Jacobian products, spectra, memory horizon). The second step runs in a ``Job``: a thread of this server process
that goes through the same scheduler (a slot, the shared byte cache) as every other analysis. A script run only
*watches* a job (``Job.poll`` about four times a second, drawing its progress), so switching tabs or toggling a
display option, which stops the script run, does not stop the computation: the next run watches the same job.

A job stops (``analysis.progress.Cancelled`` raised inside the engine at its next progress call, or while it waits
in line; nothing cached):

* when every session watching it has moved on to other settings (``watch`` drops the session's previous job of the
  same ``lane``: a new setting supersedes the old computation instead of queueing behind it), or
* when nobody has polled it for ``LEASE_S`` seconds (the tab was closed).

Jobs are keyed like the cache (the config's analysis key, the variant and its label): two visitors of the same
settings share one job. A session has at most one job per lane (``"analysis"``: the full analysis of the page's
settings; ``"sweep"``: the Atlas sweep). A job's work passes the scheduler's door as ``BACKGROUND`` under the
visitor that started it, one part (or one sweep point) at a time, giving its slot back between parts.
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable

from analysis.progress import Cancelled

from . import scheduler

LEASE_S = 15.0  # a job nobody polled for this long is cancelled (its page was closed)
NICE = 10  # added to a job thread's niceness: serving pages and the next gradient pass come first (Linux)


def _yield_the_cores() -> None:
    """Lower this thread's CPU priority by NICE (Linux keeps niceness per thread, and the threads it starts, the
    engine's per-call worker pools, inherit it). Measured at T=1000, H=256 with the browser on the same 2 cores:
    without it the page drawn from the gradient pass reached the browser 12-27 s late, starved by the job."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + NICE))
    except (AttributeError, OSError):  # not Linux, or not allowed: the job runs at the page's priority
        pass


class Job:
    """One full analysis running in a thread: ``fraction``/``text`` for the bar, ``value``/``error`` when done."""

    def __init__(self, key: str, compute: Callable[["Job"], object], owner: str | None = None,
                 lane: str = "analysis"):
        self.key, self.owner, self.lane = key, owner, lane
        self.fraction, self.text = 0.0, "starting"
        self.value, self.error = None, None
        self.cancelled = False
        self.watchers: set[str] = set()
        self.seen = time.monotonic()
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(compute,), name=f"gdlab-job-{id(self):x}",
                                        daemon=True)

    def start(self) -> "Job":
        self._thread.start()
        return self

    def _main(self, compute) -> None:
        _yield_the_cores()
        try:
            self.value = compute(self)
        except BaseException as e:  # noqa: BLE001 - kept for the watcher (Cancelled included)
            self.error = e
        finally:
            with _LOCK:
                if _JOBS.get(self.key) is self:
                    del _JOBS[self.key]
            self.done.set()

    def check(self) -> None:
        """Raise Cancelled if the job was superseded or abandoned (called from the engine's progress)."""
        if self.cancelled:
            raise Cancelled("superseded by newer settings")
        if time.monotonic() - self.seen > LEASE_S:
            self.cancelled = True
            raise Cancelled(f"nobody watched this analysis for {LEASE_S:g} s")

    def progress(self, fraction: float, text: str) -> None:
        self.check()
        self.fraction, self.text = min(1.0, max(0.0, float(fraction))), text

    def poll(self, timeout: float = 0.0) -> bool:
        """A watcher's heartbeat; True when the job has finished (value or error set)."""
        self.seen = time.monotonic()
        return self.done.wait(timeout)

    def cancel(self) -> None:
        self.cancelled = True


_LOCK = threading.Lock()
_JOBS: dict[str, Job] = {}


def job_key(analysis_keys: list[str], labels: list[str]) -> str:
    return json.dumps([analysis_keys, labels])


def find(key: str) -> Job | None:
    """The job of ``key`` while it runs (not cancelled), else None."""
    with _LOCK:
        job = _JOBS.get(key)
        return job if job is not None and not job.cancelled else None


def running() -> list[Job]:
    with _LOCK:
        return list(_JOBS.values())


def watch(session: str, key: str, compute: Callable[[Job], object], lane: str = "analysis") -> Job:
    """The job of ``key`` (started if none runs), watched by ``session``; the session's other jobs of the lane
    are dropped."""
    drop(session, keep=key, lane=lane)
    with _LOCK:
        job = _JOBS.get(key)
        if job is None or job.cancelled:
            job = _JOBS[key] = Job(key, compute, owner=session, lane=lane)
            new = True
        else:
            new = False
        job.watchers.add(session)
        job.seen = time.monotonic()
    return job.start() if new else job


def drop(session: str, keep: str | None = None, lane: str = "analysis") -> None:
    """``session`` stops watching every job of ``lane`` but ``keep``; a job left without watchers is cancelled."""
    with _LOCK:
        for key, job in list(_JOBS.items()):
            if key != keep and job.lane == lane and session in job.watchers:
                job.watchers.discard(session)
                if job.owner == session and job.watchers:  # its next part waits under a visitor still here
                    job.owner = sorted(job.watchers)[0]
                if not job.watchers:
                    job.cancel()


def waiter(job: Job, label: str = "") -> Callable[[int], None]:
    """A ``wait(position)`` for the scheduler: stops a cancelled job's wait, shows its place in line."""
    def wait(position: int) -> None:
        job.check()
        job.text = f"{label}waiting for a free slot: {scheduler.SLOTS.line_text(position)}"
    return wait


def run_parts(job: Job, parts: list[tuple]) -> list:
    """Each part (cache key, bar label, run(progress)[, cost]) through the scheduler's door in turn (background,
    under the job's owner), the bar split evenly."""
    out = []
    n = len(parts)
    for i, (key, label, run, *cost) in enumerate(parts):
        def progress(fraction: float, what: str, i=i, label=label) -> None:
            job.progress((i + min(1.0, max(0.0, float(fraction)))) / n, f"{label}{what}")

        value, _ = scheduler.run_shared(key, lambda run=run, progress=progress: run(progress), waiter(job, label),
                                        visitor=job.owner, kind=scheduler.BACKGROUND,
                                        cost=cost[0] if cost else None, label=f"{label}this analysis")
        out.append(value)
    return out
