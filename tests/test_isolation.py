"""Concurrent sessions in one process get exactly the numbers they get alone, and the dashboard's shared pieces
(slots, byte-budget cache) keep their promises."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from analysis.config import ExperimentConfig
from analysis.experiment import run_experiment
from dashboard.scheduler import ByteCache, Slots, result_bytes, run_shared

CONFIGS = [
    ExperimentConfig(cell="rnn", activation="relu", dtype="float64", seq_len=40, hidden_size=12, batch_size=4,
                     init="orthogonal", init_scale=1.05),
    ExperimentConfig(cell="lstm", dtype="float32", seq_len=40, hidden_size=12, batch_size=4),
    ExperimentConfig(cell="gru", dtype="float64", seq_len=40, hidden_size=12, batch_size=4, layer_norm=True),
    ExperimentConfig(cell="rnn", dtype="float32", seq_len=40, hidden_size=12, batch_size=4, num_layers=2),
    ExperimentConfig(cell="lstm", dtype="float64", seq_len=40, hidden_size=12, batch_size=4, bidirectional=True),
    ExperimentConfig(cell="gru", dtype="float32", seq_len=40, hidden_size=12, batch_size=4),
]


def fingerprint(r) -> tuple:
    return (r.grad.loss, r.grad.grad_norm.tobytes(), r.jac.spectral_norm.tobytes(), r.hidden.tobytes(),
            np.asarray(r.jac.singular_values).tobytes())


def test_threads_get_the_numbers_of_a_solo_run():
    solo = [fingerprint(run_experiment(c)) for c in CONFIGS]
    dtype0, threads0 = torch.get_default_dtype(), torch.get_num_threads()
    for _ in range(2):
        with ThreadPoolExecutor(len(CONFIGS)) as pool:
            together = list(pool.map(lambda c: fingerprint(run_experiment(c)), CONFIGS * 2))
        assert together == solo * 2
    assert (torch.get_default_dtype(), torch.get_num_threads()) == (dtype0, threads0)


def test_model_parameters_are_created_in_the_config_dtype():
    from analysis.experiment import TaskModel
    from analysis.tasks import task_spec
    cfg = CONFIGS[0]
    m = TaskModel(cfg, task_spec("random", cfg.seq_len, 8), 8)
    assert {p.dtype for p in m.parameters()} == {torch.float64}
    assert torch.get_default_dtype() == torch.float32


def test_cache_stays_within_its_byte_budget():
    cache = ByteCache(10_000)
    blobs = {f"k{i}": np.zeros(300 + 40 * i) for i in range(40)}  # 2.4 kB .. 15 kB
    for k, v in blobs.items():
        cache.put(k, v)
        assert cache.bytes <= cache.budget
        assert cache.bytes == sum(result_bytes(cache.get(key)) for key in list(cache._items))
    assert cache.get("k39") is None  # above the budget alone: never stored
    assert cache.get("k0") is None  # the oldest went first
    cache.put("a", np.zeros(10))
    cache.get("a")
    assert cache.get("a") is not None


def test_a_result_computed_under_interference_is_not_cached():
    cache, slots = ByteCache(10**6), Slots(1)

    def meddling():
        old = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64 if old == torch.float32 else torch.float32)
        try:
            return np.ones(3)
        finally:
            pass

    old = torch.get_default_dtype()
    try:
        value, cached = run_shared("x", meddling, slots=slots, cache=cache)
    finally:
        torch.set_default_dtype(old)
    assert not cached and cache.get("x") is None
    value, cached = run_shared("y", lambda: np.ones(3), slots=slots, cache=cache)
    assert cache.get("y") is not None
    assert run_shared("y", lambda: 1 / 0, slots=slots, cache=cache)[1] is True


def test_slots_bound_the_running_count_and_serve_in_order():
    slots = Slots(2)
    running, peak, order, positions = [0], [0], [], {}
    lock = threading.Lock()

    def job(i):
        def wait(pos):
            positions.setdefault(i, pos)
        slots.acquire(wait, poll_s=0.01)
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            order.append(i)
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        slots.release()

    threads = []
    for i in range(6):
        t = threading.Thread(target=job, args=(i,))
        t.start()
        threads.append(t)
        time.sleep(0.005)
    for t in threads:
        t.join(10)
    assert peak[0] == 2 and sorted(order) == list(range(6))
    assert order[2:] == sorted(order[2:]), "first come, first served"
    assert positions and min(positions.values()) >= 1


def test_a_waiter_that_leaves_frees_its_place():
    slots = Slots(1)
    slots.acquire()

    class Left(Exception):
        pass

    def wait(pos):
        raise Left

    with pytest.raises(Left):
        slots.acquire(wait)
    assert slots.waiting == 0
    slots.release()
    slots.acquire()
    slots.release()


def test_concurrent_analyses_divide_the_cores(monkeypatch):
    """dashboard.scheduler.threads_share: each analysis holding a slot gets cores // running (at least 1)."""
    from dashboard import scheduler
    monkeypatch.setattr(scheduler, "cores", lambda: 4)
    slots = scheduler.Slots(3)
    slots.acquire()
    assert scheduler.threads_share(slots) == 4
    slots.acquire()
    assert scheduler.threads_share(slots) == 2
    slots.acquire()
    assert scheduler.threads_share(slots) == 1
    for _ in range(3):
        slots.release()
