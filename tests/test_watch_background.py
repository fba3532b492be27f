"""watch(..., background=True): the worker's records are the synchronous records bit for bit (the same float64
numbers, probes too, weights copied before opt.step()), written in step order; the bounded queue blocks record()
and the run's notes count it; a worker failure is one line at the next record/flush/close; kill -9 and interpreter
exit leave a readable run (tests/test_watch.py holds the synchronous references against analyze())."""
from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis import load_run, watch
from analysis.watch_worker import WatchError
from rnn_models.config import ConfigError
from test_watch import LM, V, _batch

ROOT = Path(__file__).resolve().parents[1]
WATCH = sys.modules["analysis.watch"]  # (the package attribute analysis.watch is the function)


def _step(model, opt, w, step, hx=None, seed=None):
    if seed is not None:
        torch.manual_seed(seed)  # the same dropout masks in both copies
    x, y = _batch(step)
    out, _ = model(x, hx)
    loss = F.cross_entropy(out.reshape(-1, V), y.reshape(-1))
    opt.zero_grad()
    loss.backward()
    w.record(step, loss=loss)
    opt.step()  # changes the weights in place right after the record: the worker must have its own copy


def _lines(path, kind):
    return [json.loads(l) for l in (path / f"{kind}.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("cell,dtype,dropout", [(nn.LSTM, torch.float64, 0.0), (nn.GRU, torch.float64, 0.0),
                                                (nn.RNN, torch.float64, 0.0), (nn.LSTM, torch.float32, 0.0),
                                                (nn.LSTM, torch.float64, 0.3)])
def test_background_equals_synchronous_bit_for_bit(tmp_path, cell, dtype, dropout):
    """Two copies trained in lockstep on the same batches, one watched synchronously, one in the background:
    records and probes are the same numbers exactly (JSON's float repr round-trips float64)."""
    torch.manual_seed(11)
    a = LM(cell, dtype=dtype)
    if dropout:
        a.rnn.dropout = dropout  # every layer recomputed in the chain
    b = copy.deepcopy(a)
    h0 = torch.randn(2, 4, 8, dtype=dtype) * 0.5
    hx = (h0, torch.randn_like(h0) * 0.5) if cell is nn.LSTM else h0
    wa = watch(a, str(tmp_path / "sync"), every=2)
    wb = watch(b, str(tmp_path / "bg"), every=2, background=True)
    oa, ob = torch.optim.SGD(a.parameters(), lr=0.5), torch.optim.SGD(b.parameters(), lr=0.5)
    for step in range(5):
        _step(a, oa, wa, step, hx, seed=100 + step)
        _step(b, ob, wb, step, hx, seed=100 + step)
    wa.close()
    wb.close()
    for kind in ("records", "probes"):
        sync, bg = _lines(tmp_path / "sync", kind), _lines(tmp_path / "bg", kind)
        assert len(sync) == (5 if kind == "records" else 3)
        assert bg == sync
    rec = _lines(tmp_path / "sync", "records")
    assert rec[0]["log10_grad_norm"] != rec[1]["log10_grad_norm"]  # the weights moved between steps
    note = _lines(tmp_path / "bg", "notes")[-1]
    assert note["step"] == 4 and note["background_records"] == 5


def test_order_and_bounded_queue_blocks(tmp_path, monkeypatch):
    """The worker held at step 0: two records wait, the fourth blocks until the worker goes on (counted in the
    run's notes); every record and probe comes out in step order, notes interleaved."""
    gate, entered = threading.Event(), threading.Event()
    write = WATCH.Watch._write

    def held(self, *args):
        entered.set()
        assert gate.wait(30)
        write(self, *args)
    monkeypatch.setattr(WATCH.Watch, "_write", held)
    torch.manual_seed(12)
    m = LM(nn.GRU)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    w = watch(m, str(tmp_path / "run"), every=2, background=True, pending=2)
    _step(m, opt, w, 0)
    assert entered.wait(30)  # the worker holds step 0
    for step in (1, 2):
        _step(m, opt, w, step)
        w.note(step, seen=step)
    assert w._worker.blocked == 0
    x, y = _batch(3)
    F.cross_entropy(m(x)[0].reshape(-1, V), y.reshape(-1)).backward()
    threading.Timer(0.4, gate.set).start()
    t0 = time.perf_counter()
    w.record(3)  # the queue holds steps 1 and 2: record(3) waits for the worker
    assert time.perf_counter() - t0 >= 0.3
    assert w._worker.blocked == 1 and w._worker.blocked_s >= 0.3
    opt.step()
    for step in (4, 5):
        _step(m, opt, w, step)  # may block again while the worker catches up
    blocked, blocked_s = w._worker.blocked, w._worker.blocked_s
    w.close()
    run = load_run(str(tmp_path / "run"))
    assert run.steps.tolist() == [0, 1, 2, 3, 4, 5] and run.probe_steps.tolist() == [0, 2, 4]
    assert np.isfinite(run.log10_grad_norm[0]).all()
    assert run.note_series("seen")[0].tolist() == [1, 2]
    note = run.notes[-1]
    assert note["step"] == 5 and note["background_records"] == 6 and note["background_blocked"] == blocked >= 1
    assert note["background_blocked_s"] == round(blocked_s, 4) and blocked_s >= 0.3


def test_worker_failure_is_one_line_at_the_next_call(tmp_path, monkeypatch):
    """A chain that raises in the worker: the next flush / record / close raises it once, as one line naming the
    step; the records after it are still written; a record that raised an earlier failure can be made again."""
    real = WATCH.total_grads
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] in (2, 4, 6):
            raise ValueError("boom:\n  the chain broke")
        return real(*a, **k)
    monkeypatch.setattr(WATCH, "total_grads", flaky)
    torch.manual_seed(13)
    m = LM(nn.LSTM)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    w = watch(m, str(tmp_path / "run"), background=True)
    _step(m, opt, w, 0)
    _step(m, opt, w, 1)  # fails in the worker
    with pytest.raises(WatchError) as err:
        w.flush()
    assert str(err.value) == ("watch: the background record of step 1 failed: ValueError: boom: the chain broke "
                              "(background=False runs it on the training thread, with the full traceback)")
    assert "\n" not in str(err.value) and isinstance(err.value.__cause__, ValueError)
    w.flush()  # said once
    _step(m, opt, w, 2)
    _step(m, opt, w, 3)  # fails
    w._worker.wait()
    x, y = _batch(4)
    loss = F.cross_entropy(m(x)[0].reshape(-1, V), y.reshape(-1))
    loss.backward()
    with pytest.raises(WatchError, match="record of step 3 failed: ValueError"):
        w.record(4, loss=loss)  # raised instead of recording step 4 ...
    w.record(4, loss=loss)  # ... which the loop may record again
    _step(m, opt, w, 5)  # fails: close raises it, after closing the files
    with pytest.raises(WatchError, match="record of step 5 failed"):
        w.close()
    assert w.closed
    run = load_run(str(tmp_path / "run"))
    assert run.steps.tolist() == [0, 2, 4]


@pytest.mark.parametrize("end", ["flush_then_kill", "kill", "exit_without_close"])
def test_kill_9_and_exit(tmp_path, end):
    """A background watch killed with SIGKILL after step 4's record: a readable run holding the steps the worker
    had written, in order (all of 0..4 after a flush; at least 0..1 without one: at most pending + 1 = 3 records
    were queued or running). An interpreter that exits without close() waits for the queue."""
    code = textwrap.dedent(f"""
        import os, signal, sys, torch
        sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
        import torch.nn.functional as F
        from test_watch import LM, _batch, V
        from analysis import watch
        torch.manual_seed(0)
        m = LM()
        w = watch(m, {str(tmp_path / 'run')!r}, every=2, background=True)
        for step in range(10):
            x, y = _batch(step)
            loss = F.cross_entropy(m(x)[0].reshape(-1, V), y.reshape(-1))
            loss.backward()
            w.record(step, loss=loss)
            if step == 4 and {end!r} != "exit_without_close":
                if {end!r} == "flush_then_kill":
                    w.flush()
                os.kill(os.getpid(), signal.SIGKILL)
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    run = load_run(str(tmp_path / "run"))
    steps = run.steps.tolist()
    assert np.isfinite(run.log10_grad_norm[0]).all()
    if end == "exit_without_close":
        assert p.returncode == 0, p.stderr[-2000:]
        assert steps == list(range(10)) and run.probe_steps.tolist() == [0, 2, 4, 6, 8]
        assert run.notes[-1]["background_records"] == 10
        return
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    if end == "flush_then_kill":
        assert steps == [0, 1, 2, 3, 4] and run.probe_steps.tolist() == [0, 2, 4]
    else:
        assert steps == list(range(len(steps))) and 2 <= len(steps) <= 5


def test_context_manager_waits_and_bad_input(tmp_path):
    torch.manual_seed(14)
    m = LM(nn.RNN)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    with watch(m, str(tmp_path / "run"), background=True, pending=1) as w:
        for step in range(4):
            _step(m, opt, w, step)
    assert load_run(str(tmp_path / "run")).steps.tolist() == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="background='yes': must be True or False"):
        watch(m, str(tmp_path / "a"), background="yes")
    with pytest.raises(ConfigError, match=r"pending=0: must be an integer in \[1, 64\]"):
        watch(m, str(tmp_path / "b"), background=True, pending=0)


@pytest.mark.parametrize("background", [False, True])
@pytest.mark.parametrize("cell,bidirectional", [(nn.GRU, False), (nn.RNN, False), (nn.LSTM, True)])
def test_watching_leaves_the_loops_random_numbers_alone(tmp_path, background, cell, bidirectional):
    """A loop drawing dropout masks from the global RNG trains to the same weights, bit for bit, watched (probes
    every step, the GRU/RNN chain's fused twins, a bidirectional module's engine network) or not: nothing the
    watch makes draws from it, on the training thread or in the worker."""
    g = torch.Generator().manual_seed(16)
    xs = [torch.randn(T_, 3, 3, generator=g, dtype=torch.float64) for T_ in (7, 7, 7, 7)]
    zs = [torch.randn(x.shape[0], 3, 10 if bidirectional else 5, generator=g, dtype=torch.float64) for x in xs]
    torch.manual_seed(17)
    rnn0 = cell(3, 5, num_layers=2, dropout=0.5, bidirectional=bidirectional, dtype=torch.float64)
    finals = []
    for watched in (False, True):
        rnn = copy.deepcopy(rnn0)
        opt = torch.optim.SGD(rnn.parameters(), lr=0.1)
        w = watch(rnn, str(tmp_path / "run"), every=1, background=background) if watched else None
        torch.manual_seed(18)  # once: every step's masks come from the stream
        for step, (x, z) in enumerate(zip(xs, zs)):
            opt.zero_grad()
            (rnn(x)[0] * z).sum().backward()
            if w is not None:
                w.record(step)
            opt.step()
        if w is not None:
            w.close()
        finals.append([p.detach().clone() for p in rnn.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*finals))
    assert load_run(str(tmp_path / "run")).probe_steps.tolist() == [0, 1, 2, 3]
