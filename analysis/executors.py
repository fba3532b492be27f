"""Executors: run ``fn(task)`` for many tasks and yield ``(index, result)`` as each finishes.

One small interface, three implementations:

    InlineExecutor   this process, one task after another (``--workers 1``; the dashboard's default)
    LocalExecutor    a process pool on this machine (``--workers N``, spawned processes, one torch thread each)
    RayExecutor      a Ray cluster: ``address`` (or RAY_ADDRESS) connects to one, none starts Ray on this machine

``fn`` must be a module-level function (it is sent by reference) whose result depends only on its task, so the
same tasks give the same numbers on every executor. A task whose worker dies (killed, out of memory) is yielded
as a ``WorkerError`` in place of its result; the others go on.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from rnn_models.config import ConfigError

EXECUTORS = ("local", "ray")
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the folder holding analysis/, rnn_models/


class WorkerError(Exception):
    """A task's worker died before returning (the message says how)."""


def _worker_error(e: BaseException) -> WorkerError:
    return WorkerError(f"{type(e).__name__}: {' '.join(str(e).split())[:300]}")


class InlineExecutor:
    name = "inline"

    def describe(self) -> dict:
        return {"executor": "local", "workers": 1}

    def run(self, fn: Callable, tasks: list) -> Iterator[tuple[int, object]]:
        for i, t in enumerate(tasks):
            yield i, fn(t)

    def close(self) -> None:
        pass


def _init_worker() -> None:
    from analysis.progress import init_threads
    init_threads(1)


class LocalExecutor:
    """A pool of ``workers`` spawned processes (spawn, not fork: safe inside a threaded server)."""

    name = "local"

    def __init__(self, workers: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        self.workers = workers
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_init_worker)

    def describe(self) -> dict:
        return {"executor": "local", "workers": self.workers}

    def run(self, fn: Callable, tasks: list) -> Iterator[tuple[int, object]]:
        from concurrent.futures import as_completed
        futures = {self.pool.submit(fn, t): i for i, t in enumerate(tasks)}
        try:
            for f in as_completed(futures):
                try:
                    result = f.result()
                except Exception as e:  # noqa: BLE001 - BrokenProcessPool and the like: that point failed
                    result = _worker_error(e)
                yield futures[f], result
        finally:
            for f in futures:
                f.cancel()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A ``host:port`` (or ``ray://host:port``) that does not answer within ``timeout`` s is a one-line error
    (ray.init itself retries for minutes). ``auto`` and other forms are left to Ray."""
    import socket
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConfigError(f"ray_address={address!r}: nothing answers there ({e.strerror or type(e).__name__}); "
                          "start the cluster with `ray start --head` or fix the address") from None


class RayExecutor:
    """Ray tasks of one CPU each. Connects to ``address`` (or RAY_ADDRESS); with neither, starts Ray here with
    ``num_cpus`` (default: all cores) and stops it on ``close``. The project's packages travel with the tasks
    (``py_modules``) to a remote cluster, which needs torch and numpy installed."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        try:
            import ray
        except ImportError:
            raise ConfigError("executor='ray' needs the ray package: pip install 'ray==2.60.0'") from None
        self.ray = ray
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.started = False
        if not ray.is_initialized():
            if self.address:
                _check_reachable(self.address)
                import analysis
                import rnn_models
                env = {"py_modules": [analysis, rnn_models], "env_vars": {"OMP_NUM_THREADS": "1"}}
                try:
                    ray.init(address=self.address, runtime_env=env, log_to_driver=False)
                except (ConnectionError, ValueError, RuntimeError) as e:
                    raise ConfigError(f"ray_address={self.address!r}: cannot connect: "
                                      f"{' '.join(str(e).split())[:200]}") from None
            else:
                os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local instance on loopback
                env = {"env_vars": {"PYTHONPATH": _REPO, "OMP_NUM_THREADS": "1"}}
                ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                         runtime_env=env)
            self.started = True
        self._remote = {}

    def describe(self) -> dict:
        return {"executor": "ray", "address": self.address or "local",
                "cpus": int(self.ray.cluster_resources().get("CPU", 0))}

    def run(self, fn: Callable, tasks: list) -> Iterator[tuple[int, object]]:
        remote = self._remote.setdefault(fn, self.ray.remote(num_cpus=1, max_retries=1)(fn))
        refs = {remote.remote(t): i for i, t in enumerate(tasks)}
        pending = list(refs)
        try:
            while pending:
                done, pending = self.ray.wait(pending, num_returns=1)
                for r in done:
                    try:
                        result = self.ray.get(r)
                    except Exception as e:  # noqa: BLE001 - a worker that died (after its retry)
                        result = _worker_error(e)
                    yield refs[r], result
        finally:
            for r in pending:
                self.ray.cancel(r)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False


def make_executor(executor: str = "local", workers: int = 1, ray_address: str | None = None,
                  num_cpus: int | None = None):
    """The executor by name; bad names or worker counts raise ConfigError with one line. An executor object
    (``run``, ``describe``, ``close``: e.g. the dashboard's, which passes each task through its scheduler) is
    used as it is."""
    if not isinstance(executor, str) and all(hasattr(executor, m) for m in ("run", "describe", "close")):
        return executor
    if executor not in EXECUTORS:
        raise ConfigError(f"executor={executor!r} is not allowed: choose {' or '.join(EXECUTORS)}")
    if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= 256:
        raise ConfigError(f"workers={workers!r} is out of range: must be an integer in [1, 256]")
    if executor == "ray":
        return RayExecutor(ray_address, num_cpus=num_cpus)
    if ray_address:
        raise ConfigError("ray_address is given but executor='local': add --executor ray")
    return InlineExecutor() if workers == 1 else LocalExecutor(workers)
