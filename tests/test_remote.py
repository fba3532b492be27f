"""GDLAB_RAY_ADDRESS (dashboard/remote.py): the dashboard's work on a Ray cluster gives the numbers of a local run,
and a task whose visitor left is cancelled; Ray started from a thread that then ends (a Streamlit script run) stays
up. A local Ray starts in ~10 s: RUN_SLOW=1; the keeper thread's tests run without Ray (~1 s)."""
from __future__ import annotations

import ctypes
import io
import os
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
import torch

from analysis.config import ExperimentConfig

slow = pytest.mark.skipif(not os.environ.get("RUN_SLOW"), reason="starts a local Ray (~10 s): RUN_SLOW=1")


def _in_a_thread_that_ends(fn):
    """``fn()`` on a thread that has ended when this returns (as a Streamlit script run's thread); its result."""
    box = []
    t = threading.Thread(target=lambda: box.append(fn()))
    t.start()
    t.join()
    assert box, "fn raised in its thread"
    return box[0]


def _sleeper_killed_with_its_parent_thread() -> subprocess.Popen:
    """``sleep 30`` with prctl(PR_SET_PDEATHSIG, SIGKILL), as Ray starts its GCS and raylet."""
    libc = ctypes.CDLL(None, use_errno=True)
    return subprocess.Popen(["sleep", "30"], preexec_fn=lambda: libc.prctl(1, signal.SIGKILL, 0, 0, 0))


def test_children_forked_on_the_keeper_outlive_the_calling_thread():
    from dashboard.remote import _on_keeper
    plain = _in_a_thread_that_ends(_sleeper_killed_with_its_parent_thread)

    def fork_on_the_keeper() -> subprocess.Popen:
        box = []
        _on_keeper(lambda: box.append(_sleeper_killed_with_its_parent_thread()))
        return box[0]
    kept = _in_a_thread_that_ends(fork_on_the_keeper)
    try:
        # the premise: a parent-death signal fires when the forking *thread* ends (how the Ray of a page died)
        assert plain.wait(timeout=10) == -signal.SIGKILL
        time.sleep(0.5)
        assert kept.poll() is None  # forked on the keeper: alive after the caller's thread ended
    finally:
        kept.kill()
        kept.wait()
    with pytest.raises(ZeroDivisionError):  # fn's exception reaches the caller
        _on_keeper(lambda: 1 / 0)


def _vmrss(pid: int) -> int:
    return next(int(line.split()[1]) * 1024 for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS:"))


def test_the_load_tests_peak_rss_counts_the_children_of_every_thread():
    """benchmarks.loadtest.rss_tree: a local Ray's GCS and raylet are children of the server's keeper thread, not
    of its main thread (/proc/PID/task/PID/children lists the main thread's only)."""
    from benchmarks.loadtest import rss_tree
    from dashboard.remote import _on_keeper
    box = []
    _on_keeper(lambda: box.append(subprocess.Popen(["sleep", "30"])))
    child = box[0]
    try:
        time.sleep(0.2)
        me = os.getpid()
        assert str(child.pid) not in open(f"/proc/{me}/task/{me}/children").read().split()  # the premise
        own = [_vmrss(me)]
        tree = rss_tree(me)
        own.append(_vmrss(me))
        assert tree - max(own) >= _vmrss(child.pid) > 0
    finally:
        child.kill()
        child.wait()


@pytest.fixture(scope="module")
def ray_local():
    from dashboard import remote
    old = os.environ.get("GDLAB_RAY_ADDRESS")
    os.environ["GDLAB_RAY_ADDRESS"] = "local"
    ray = _in_a_thread_that_ends(remote.connect)  # as a page's script run does; its thread has ended
    yield remote
    ray.shutdown()
    remote._STATE.clear()
    if old is None:
        os.environ.pop("GDLAB_RAY_ADDRESS", None)
    else:
        os.environ["GDLAB_RAY_ADDRESS"] = old


def fingerprint(results: dict) -> dict:
    return {k: (r.grad.loss, r.grad.grad_norm.tobytes(), r.jac.spectral_norm.tobytes(),
                np.asarray(r.jac.singular_values).tobytes(), r.memory_horizon) for k, r in results.items()}


@slow
def test_ray_started_by_an_ended_thread_still_runs_tasks(ray_local):
    time.sleep(2)  # before the keeper: raylet and GCS were killed at once (SIGKILL) when that thread ended
    deadline = time.monotonic() + 60

    def check():
        assert time.monotonic() < deadline, "no answer from Ray within 60 s"
    assert ray_local.call(sum, [1, 2, 3], check=check) == 6


@slow
def test_an_analysis_on_ray_equals_the_local_one(ray_local):
    from analysis.experiment import run_comparison
    cfg = ExperimentConfig(compare=("rnn", "lstm", "gru"), seq_len=30, hidden_size=8, batch_size=4, seed=11)
    assert fingerprint(ray_local.call(run_comparison, cfg.replace(threads=1))) == fingerprint(run_comparison(cfg))


@slow
def test_an_upload_on_ray_equals_the_local_one(ray_local):
    from analysis.own_model import analyse_files
    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(torch.nn.GRU(3, 5).state_dict(), buf)
    cfg = ExperimentConfig(seq_len=20, batch_size=3, hidden_size=64, cell="rnn")
    here = analyse_files(cfg, buf.getvalue())
    there = ray_local.call(analyse_files, cfg.replace(threads=1), buf.getvalue())
    assert fingerprint({"m": there}) == fingerprint({"m": here}) and there.config.hidden_size == 5


@slow
def test_a_remote_error_is_the_engines_one_line(ray_local):
    from analysis.own_model import analyse_files
    from rnn_models.config import ConfigError
    with pytest.raises(ConfigError, match="not a torch state_dict"):
        ray_local.call(analyse_files, ExperimentConfig(), b"not a file")


@slow
def test_a_task_whose_visitor_left_is_cancelled(ray_local):
    class Left(Exception):
        pass
    calls = []

    def check():
        calls.append(1)
        if len(calls) >= 2:
            raise Left
    t0 = time.monotonic()
    with pytest.raises(Left):
        ray_local.call(time.sleep, 60, check=check)
    assert time.monotonic() - t0 < 10
