"""run_comparison runs cells side by side (analysis.comparison): the same results as solo runs, progress reported
from the calling thread, cancellation and errors stop every worker."""
import threading

import numpy as np
import pytest

from analysis import ExperimentConfig, run_comparison, run_experiment
from analysis.comparison import cell_workers
from analysis.progress import Cancelled

BASE = dict(compare=("rnn", "lstm", "gru"), seq_len=40, hidden_size=12, batch_size=4, threads=3)


def test_parallel_cells_equal_solo_runs(monkeypatch):
    import torch
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # as the dashboard runs: one intra-op thread
    cfg = ExperimentConfig(**BASE)
    assert cell_workers(cfg, 3) == 3
    calls = []
    out = run_comparison(cfg, progress=lambda f, w: calls.append((f, w, threading.get_ident())))
    for cell in cfg.cells:
        solo = run_experiment(cfg.for_cell(cell))
        np.testing.assert_array_equal(out[cell].grad.log10_grad_norm, solo.grad.log10_grad_norm)
        np.testing.assert_array_equal(out[cell].jac.spectral_norm, solo.jac.spectral_norm)
        np.testing.assert_array_equal(out[cell].jac.singular_values, solo.jac.singular_values)
    assert {t for _, _, t in calls} == {threading.get_ident()}  # every report from the caller's thread
    fractions = [f for f, _, _ in calls]
    assert fractions[-1] == 1.0 and all(0.0 <= f <= 1.0 for f in fractions)
    assert any("cells done" in w for _, w, _ in calls)


def test_cancel_stops_every_worker(monkeypatch):
    import torch
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    cfg = ExperimentConfig(**{**BASE, "seq_len": 400, "hidden_size": 48})

    def cancel(f, w):
        if f > 0.05:
            raise Cancelled("visitor left")
    before = threading.active_count()
    with pytest.raises(Cancelled):
        run_comparison(cfg, progress=cancel)
    assert not [t for t in threading.enumerate() if t.name.startswith("cell")]  # workers stopped, none left
    assert threading.active_count() <= before


def test_one_worker_when_intra_op_uses_every_core(monkeypatch):
    import torch
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert cell_workers(ExperimentConfig(threads=4, compare=("rnn", "lstm")), 2) == 1


def test_progress_text_names_the_running_cell_and_the_ones_waiting(monkeypatch):
    import torch
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    calls = []
    run_comparison(ExperimentConfig(**{**BASE, "threads": 2, "seq_len": 800}), progress=lambda f, w: calls.append(w))
    texts = [w for w in calls if "cells done" in w]
    assert any(w.startswith(("RNN · ", "LSTM · ")) and "GRU next" in w for w in texts), texts[:5]
    assert not any("waiting for a worker" in w for w in texts)
