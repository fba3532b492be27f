"""The chain-only gradient route (analysis.gradient_stage) equals backprop: every field of GradientResult, every
cell and variant, each task's loss on its last step; it falls back to backprop where that reports what overflowed."""
import math

import numpy as np
import pytest
import torch

from analysis import ExperimentConfig
from analysis.experiment import TaskModel, resolve
from analysis.gradient_stage import CHAIN_METHOD, DTYPES, chain_gradients, gradient_stage
from analysis.gradients import probe_loss


def _both(cfg):
    """(chain route, backprop route) GradientResults of one config (a loss_fn forces the backprop route)."""
    cfg, batch, _ = resolve(cfg)
    model = TaskModel(cfg, batch.spec, cfg.input_size).to(DTYPES[cfg.dtype])
    _, chain, _, _ = gradient_stage(cfg, batch, model, loss_steps="last")
    _, back, _, _ = gradient_stage(cfg, batch, model, loss_steps="last",
                                   loss_fn=lambda y: probe_loss(batch, y, "last"))
    return chain, back


CASES = [("rnn", {}), ("rnn", {"activation": "relu"}), ("rnn", {"activation": "sigmoid"}),
         ("rnn", {"activation": "linear"}), ("rnn", {"layer_norm": True}), ("lstm", {}),
         ("lstm", {"peephole": True}), ("lstm", {"peephole": True, "layer_norm": True}), ("gru", {}),
         ("gru", {"layer_norm": True})]
TASKS = [("random", {}), ("adding", {}), ("temporal-order", {}), ("copy", {"seq_len": 30}),
         ("charlm", {"loss_steps": "last"})]


@pytest.mark.parametrize("cell,kw", CASES)
@pytest.mark.parametrize("task,tkw", TASKS)
def test_chain_route_equals_backprop_float64(cell, kw, task, tkw):
    cfg = ExperimentConfig(cell=cell, task=task, hidden_size=9, batch_size=3, dtype="float64",
                           **{"seq_len": 25, "loss_steps": "last", **tkw}, **kw)
    chain, back = _both(cfg)
    assert chain.method == CHAIN_METHOD and back.method != CHAIN_METHOD
    np.testing.assert_allclose(chain.grad_norm, back.grad_norm, rtol=1e-10)
    np.testing.assert_allclose(chain.log10_grad_norm, back.log10_grad_norm, rtol=0, atol=1e-10)
    np.testing.assert_allclose(chain.grad_norm_band, back.grad_norm_band, rtol=1e-10)
    np.testing.assert_allclose(chain.per_layer, back.per_layer, rtol=1e-10)
    np.testing.assert_allclose(chain.per_direction, back.per_direction, rtol=1e-10)
    assert chain.loss == pytest.approx(back.loss, rel=1e-12)
    if cell == "lstm":
        # dL/dc_{T-1} = 0 (the loss reads h): both give a geometric mean of exactly 0 there
        np.testing.assert_allclose(chain.cell_grad_norm, back.cell_grad_norm, rtol=1e-10)
        np.testing.assert_allclose(chain.cell_carry_grad_norm, back.cell_carry_grad_norm, rtol=1e-10)
    else:
        assert chain.cell_grad_norm is None and back.cell_grad_norm is None
    assert chain.nonfinite is None and back.nonfinite is None
    torch.testing.assert_close(chain.last_state_grad, back.last_state_grad, rtol=1e-12, atol=0)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_chain_route_float32_is_exact_where_backprop_underflows(cell):
    """T=300 tanh RNN / LSTM / GRU at a small init: float32 backprop reaches 0 for early t; the chain route
    matches float64 (same weights) in log space everywhere."""
    kw = dict(cell=cell, seq_len=300, hidden_size=16, batch_size=4, task="random", init_scale=0.3, seed=2)
    c32, _ = _both(ExperimentConfig(dtype="float32", **kw))
    c64, b64 = _both(ExperimentConfig(dtype="float64", **kw))
    assert float(np.min(c64.log10_grad_norm)) < -38  # below float32's range: backprop in float32 gives 0
    np.testing.assert_allclose(c32.log10_grad_norm, c64.log10_grad_norm, rtol=0, atol=2e-3)
    np.testing.assert_allclose(c64.log10_grad_norm, b64.log10_grad_norm, rtol=0, atol=1e-9)


def test_overflow_falls_back_to_backprop_which_says_where():
    """A linear RNN with spectral radius 3 over 120 steps: float32 backprop overflows; the chain route steps aside
    and the result reports where, as before."""
    cfg = ExperimentConfig(cell="rnn", activation="linear", init="spectral", init_scale=3.0, seq_len=120,
                           hidden_size=8, batch_size=2, task="random", dtype="float32")
    cfg, batch, _ = resolve(cfg)
    model = TaskModel(cfg, batch.spec, cfg.input_size).to(torch.float32)
    assert chain_gradients(batch, model, None, torch.float32) is None
    _, grad, _, _ = gradient_stage(cfg, batch, model, loss_steps="last")
    assert grad.method != CHAIN_METHOD
    assert grad.nonfinite is not None


def test_chain_route_only_where_it_applies():
    """Stacked, bidirectional, truncated and every-step losses keep the backprop route."""
    base = dict(cell="gru", seq_len=12, hidden_size=5, batch_size=2, dtype="float64", task="random")
    for kw in ({"num_layers": 2}, {"bidirectional": True}, {"truncate": 4}, {"loss_steps": "all"}):
        cfg, batch, _ = resolve(ExperimentConfig(**base, **kw))
        model = TaskModel(cfg, batch.spec, cfg.input_size).to(torch.float64)
        steps = "last" if kw.get("loss_steps") != "all" else "all"
        _, grad, _, _ = gradient_stage(cfg, batch, model, loss_steps=steps)
        assert grad.method != CHAIN_METHOD, kw
        assert math.isfinite(float(grad.grad_norm[-1]))


def test_the_chain_reports_progress_and_can_be_cancelled():
    """log_grad_norm_chain calls progress once per chunk of 64 steps (run_experiment passes it through its
    throttled reporter); raising Cancelled there stops it."""
    from analysis.gradients import log_grad_norm_chain
    from analysis.progress import Cancelled
    cfg, batch, _ = resolve(ExperimentConfig(cell="lstm", seq_len=300, hidden_size=8, batch_size=2, task="random"))
    model = TaskModel(cfg, batch.spec, cfg.input_size)
    with torch.no_grad():
        trace, _ = model(batch.inputs)
    run = trace.runs[0][0]
    v = torch.zeros(2, 16)
    v[:, 0] = 1.0
    seen = []
    log_grad_norm_chain(run, v, progress=lambda f, w: seen.append((f, w)))
    assert len(seen) == 5 and [f for f, _ in seen] == sorted(f for f, _ in seen) and seen[-1][0] == 1.0
    assert all("back through time" in w for _, w in seen)

    def stop(f, w):
        raise Cancelled()
    with pytest.raises(Cancelled):
        log_grad_norm_chain(run, v, progress=stop)
