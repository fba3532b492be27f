"""Beyond one machine: the dashboard's analyses, uploads and sweep points on a Ray cluster (no Streamlit here).

    GDLAB_RAY_ADDRESS=ray://head:10001   (or ``gdlab dashboard --ray ADDRESS``) connect to a running cluster
    GDLAB_RAY_ADDRESS=local              start a private Ray on this machine (tests, the load test)

Unset, everything runs in the server process as before. Set, the server keeps the pages, the scheduler's door and
the result cache, and each admitted piece of work (``call``) runs as one Ray task of one CPU on a worker: the
server's slots become the cluster's (``GDLAB_MAX_CONCURRENT``, default: the cluster's CPUs), the memory ceiling
``GDLAB_MAX_SERVER_MB`` no longer counts the work's estimates (they are the workers' memory; Ray's own memory
monitor guards them), and every analysis runs on one thread (bit-identical to any thread count). The project's
packages travel with the tasks (``py_modules``); the workers need the same torch and numpy. The work's inputs
(config, uploaded bytes) go to the worker and its result comes back pickled: equal to a local run.

Ray is started (``ray.init``) on a thread of its own that lives as long as the server (``_on_keeper``): a local
Ray's GCS and raylet are started with ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, which fires when the *thread* that forked
them ends, not the process. Started from a Streamlit script run's thread they were killed as soon as that page's
run ended (the load test: raylet and GCS gone a second after the first page's analysis, no later page drawn, and
60 s later the server itself exits: "Failed to connect to GCS within 60 seconds").

Cancellation: ``call`` waits on the task in steps of ``POLL_S``, calling ``check()`` between them; when it raises
(the visitor left, a job was cancelled), the task is cancelled on the cluster (``ray.cancel(force=True)``).
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable

from rnn_models.config import ConfigError

POLL_S = 0.5
_LOCK = threading.Lock()
_STATE: dict = {}


def address() -> str | None:
    """GDLAB_RAY_ADDRESS, or None (work runs in the server process)."""
    return (os.environ.get("GDLAB_RAY_ADDRESS") or "").strip() or None


def enabled() -> bool:
    return address() is not None


def _on_keeper(fn: Callable[[], None]) -> None:
    """``fn()`` run on a new daemon thread that then stays alive (parked) for the rest of the process; returns when
    ``fn`` has returned, re-raising its exception. Children forked inside ``fn`` with a parent-death signal outlive
    the calling thread (a Streamlit script run's thread ends with its run)."""
    done, box = threading.Event(), {}

    def keep() -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e
            return
        finally:
            done.set()
        threading.Event().wait()  # parked: the parent thread of fn's children, while this process lives

    threading.Thread(target=keep, name="gdlab-ray-keeper", daemon=True).start()
    done.wait()
    if "error" in box:
        raise box["error"]


def _init(ray, addr: str) -> None:
    if addr == "local":
        from analysis.executors import _REPO
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private instance on loopback
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": _REPO, "OMP_NUM_THREADS": "1"}})
        return
    from analysis.executors import _check_reachable
    import analysis
    import rnn_models
    _check_reachable(addr)
    try:
        ray.init(address=addr, log_to_driver=False, runtime_env={
            "py_modules": [analysis, rnn_models], "env_vars": {"OMP_NUM_THREADS": "1"}})
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise ConfigError(f"GDLAB_RAY_ADDRESS={addr!r}: cannot connect: "
                          f"{' '.join(str(e).split())[:200]}") from None


def connect():
    """The ``ray`` module, initialised once for this process on a thread that outlives the caller's
    (``_on_keeper``; one-line ConfigError if the cluster is not there)."""
    with _LOCK:
        if "ray" in _STATE:
            return _STATE["ray"]
        try:
            import ray
        except ImportError:
            raise ConfigError("GDLAB_RAY_ADDRESS is set but the ray package is missing: pip install 'ray==2.60.0'") \
                from None
        if not ray.is_initialized():
            addr = address()
            _on_keeper(lambda: _init(ray, addr))
        _STATE["ray"] = ray
        return ray


def cluster_cpus() -> int:
    return max(1, int(connect().cluster_resources().get("CPU", 1)))


def ticker(progress, cost) -> Callable[[], None] | None:
    """A ``check`` for ``call`` that moves the page's bar with the time spent against the estimate (drawing is
    where Streamlit stops a script run whose visitor left)."""
    if progress is None:
        return None
    import time

    from analysis.limits import GFLOP_PER_S
    t0 = time.monotonic()
    est = cost.flops / (GFLOP_PER_S * 1e9) if cost is not None else 0.0

    def check() -> None:
        el = time.monotonic() - t0
        frac = min(0.95, el / est) if est > 0 else 0.0
        progress(frac, f"on the Ray cluster, {el:.0f} s" + (f" of about {est:.0f} s (estimate)" if est else ""))
    return check


def _task(fn: Callable, args: tuple, kwargs: dict):
    """What a worker runs: one intra-op thread (workers share their machine), then ``fn``."""
    from analysis.progress import init_threads
    init_threads(1)
    return fn(*args, **kwargs)


def call(fn: Callable, *args, check: Callable[[], None] | None = None, **kwargs):
    """``fn(*args, **kwargs)`` as one Ray task of one CPU; its result (its exception re-raised here).
    ``fn`` must be importable by the workers (a module-level function of analysis/ or rnn_models/)."""
    ray = connect()
    remote = _STATE.setdefault("task", ray.remote(num_cpus=1, max_retries=0)(_task))
    ref = remote.remote(fn, args, kwargs)
    try:
        while True:
            done, _ = ray.wait([ref], timeout=POLL_S)
            if done:
                break
            if check is not None:
                check()
    except BaseException:
        ray.cancel(ref, force=True)
        raise
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:  # the worker's own exception (a ConfigError stays one line)
        raise e.as_instanceof_cause() from None
