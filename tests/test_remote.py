"""GDLAB_RAY_ADDRESS (dashboard/remote.py): the dashboard's work on a Ray cluster gives the numbers of a local run,
and a task whose visitor left is cancelled. A local Ray starts in ~10 s: RUN_SLOW=1."""
from __future__ import annotations

import io
import os
import time

import numpy as np
import pytest
import torch

from analysis.config import ExperimentConfig

pytestmark = pytest.mark.skipif(not os.environ.get("RUN_SLOW"), reason="starts a local Ray (~10 s): RUN_SLOW=1")


@pytest.fixture(scope="module")
def ray_local():
    from dashboard import remote
    old = os.environ.get("GDLAB_RAY_ADDRESS")
    os.environ["GDLAB_RAY_ADDRESS"] = "local"
    ray = remote.connect()
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


def test_an_analysis_on_ray_equals_the_local_one(ray_local):
    from analysis.experiment import run_comparison
    cfg = ExperimentConfig(compare=("rnn", "lstm", "gru"), seq_len=30, hidden_size=8, batch_size=4, seed=11)
    assert fingerprint(ray_local.call(run_comparison, cfg.replace(threads=1))) == fingerprint(run_comparison(cfg))


def test_an_upload_on_ray_equals_the_local_one(ray_local):
    from analysis.own_model import analyse_files
    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(torch.nn.GRU(3, 5).state_dict(), buf)
    cfg = ExperimentConfig(seq_len=20, batch_size=3, hidden_size=64, cell="rnn")
    here = analyse_files(cfg, buf.getvalue())
    there = ray_local.call(analyse_files, cfg.replace(threads=1), buf.getvalue())
    assert fingerprint({"m": there}) == fingerprint({"m": here}) and there.config.hidden_size == 5


def test_a_remote_error_is_the_engines_one_line(ray_local):
    from analysis.own_model import analyse_files
    from rnn_models.config import ConfigError
    with pytest.raises(ConfigError, match="not a torch state_dict"):
        ray_local.call(analyse_files, ExperimentConfig(), b"not a file")


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
