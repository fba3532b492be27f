"""The stepwise trainer: clipping against torch, non-finite handling, mid-run changes, char-LM perplexity/sampling."""
import math

import numpy as np
import pytest
import torch

from analysis.config import ExperimentConfig
from analysis.tasks import char_corpus
from analysis.training import Trainer, clip_gradients
from rnn_models.config import ConfigError

pytestmark = pytest.mark.usefixtures("single_thread")


def _grads(seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64) * scale for s in [(5, 3), (7,), (4, 4, 2)]]


@pytest.mark.parametrize("threshold,scale", [(0.5, 1.0), (100.0, 1.0), (1.0, 1e-3), (3.0, 10.0)])
def test_norm_clipping_matches_torch(threshold, scale):
    mine, ref = _grads(0, scale), _grads(0, scale)
    params = [torch.zeros_like(g, requires_grad=True) for g in ref]
    for p, g in zip(params, ref):
        p.grad = g.clone()
    total = torch.nn.utils.clip_grad_norm_(params, threshold)
    before, after, clipped = clip_gradients(mine, "norm", threshold)
    assert before == pytest.approx(float(total), rel=1e-12)
    for g, p in zip(mine, params):
        torch.testing.assert_close(g, p.grad, rtol=1e-12, atol=0)
    assert clipped == (float(total) > threshold + 1e-6)
    assert after == pytest.approx(min(before, threshold), rel=1e-5)


def test_value_clipping_matches_torch():
    mine, ref = _grads(1, 3.0), _grads(1, 3.0)
    params = [torch.zeros_like(g, requires_grad=True) for g in ref]
    for p, g in zip(params, ref):
        p.grad = g.clone()
    torch.nn.utils.clip_grad_value_(params, 0.7)
    _, after, clipped = clip_gradients(mine, "value", 0.7)
    assert clipped
    for g, p in zip(mine, params):
        torch.testing.assert_close(g, p.grad, rtol=0, atol=0)
    assert after == pytest.approx(float(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params]))))


def test_training_step_records_and_learns():
    tr = Trainer(ExperimentConfig(cell="gru", task="adding", seq_len=20, hidden_size=16, batch_size=32, lr=1e-2))
    recs = tr.run(40)
    assert len(recs) == 40 and all(r.nonfinite is None for r in recs)
    assert recs[0].grad_norm_t.shape == (20,)
    assert np.mean([r.loss for r in recs[-10:]]) < np.mean([r.loss for r in recs[:5]])
    h = tr.history()
    assert h["grad_norm_t"].shape == (40, 20) and h["chance_loss"] == pytest.approx(1 / 6)


def test_clipping_change_mid_run_takes_effect_at_next_step_and_is_recorded():
    tr = Trainer(ExperimentConfig(cell="rnn", task="adding", seq_len=20, hidden_size=16, batch_size=8))
    tr.run(3)
    assert not any(r.clipped for r in tr.records)
    tr.update(clip="norm", clip_threshold=1e-4)
    r = tr.step()
    assert r.changed == ["clip", "clip_threshold"] and r.clipped
    assert r.grad_norm_after == pytest.approx(1e-4, rel=1e-2)
    assert r.settings["clip"] == "norm"
    assert tr.step().changed == []
    with pytest.raises(ConfigError, match="clip_threshold"):
        tr.update(clip_threshold=-1.0)


def test_overflow_is_recorded_and_stops_cleanly():
    tr = Trainer(ExperimentConfig(cell="rnn", activation="relu", init="identity", init_scale=3.0, task="adding",
                                  seq_len=200, hidden_size=8, batch_size=4))
    recs = tr.run(5)
    assert len(recs) == 1 and tr.stopped is not None
    assert tr.stopped["quantity"] == "hidden_state" and tr.stopped["step"] == 0
    assert 0 < tr.stopped["timestep"] < 200
    assert tr.step() is recs[0]  # a stopped run does not advance
    assert recs[0].to_dict()["loss"] is None  # JSON-safe


def test_skip_mode_keeps_going():
    tr = Trainer(ExperimentConfig(cell="rnn", activation="relu", init="identity", init_scale=3.0, task="adding",
                                  seq_len=200, hidden_size=8, batch_size=4), on_nonfinite="skip")
    recs = tr.run(3)
    assert len(recs) == 3 and all(r.skipped for r in recs) and tr.stopped is None


def test_random_task_cannot_be_trained():
    with pytest.raises(ConfigError, match="task='random'"):
        Trainer(ExperimentConfig(task="random"))


def test_perplexity_is_exp_cross_entropy_and_untrained_is_near_vocab_size():
    _, vocab = char_corpus("shipped")
    tr = Trainer(ExperimentConfig(cell="lstm", task="charlm", seq_len=30, hidden_size=32, batch_size=16))
    r = tr.step()
    assert r.perplexity == pytest.approx(math.exp(r.loss), rel=1e-12)
    assert tr.spec.chance_loss == pytest.approx(math.log(vocab.size))
    assert abs(r.perplexity / vocab.size - 1) < 0.1  # an untrained model is near the uniform baseline


def test_hello_lm_learns_and_sampling_is_reproducible():
    tr = Trainer(ExperimentConfig(cell="lstm", task="charlm", text="hello", seq_len=8, hidden_size=16,
                                  batch_size=8, lr=0.02))
    assert abs(tr.step().perplexity - 4) < 0.5
    tr.run(150)
    assert tr.records[-1].perplexity < 1.2
    s1, s2 = tr.sample(30, temperature=0.5, seed=7), tr.sample(30, temperature=0.5, seed=7)
    assert s1 == s2 and len(s1) == 30 and set(s1) <= set("helo")
    assert "hello" in "h" + tr.sample(30, temperature=0.1, seed=1, prime="h")
    with pytest.raises(ConfigError, match="temperature"):
        tr.sample(5, temperature=0)
    with pytest.raises(ConfigError, match="prime"):
        tr.sample(5, prime="xyz")


def test_truncated_training_uses_the_cut_gradient():
    base = dict(cell="rnn", task="adding", seq_len=30, hidden_size=8, batch_size=4)
    full, trunc = Trainer(ExperimentConfig(**base)), Trainer(ExperimentConfig(**base, truncate=5))
    r_full, r_trunc = full.step(), trunc.step()
    assert r_full.loss == pytest.approx(r_trunc.loss)  # same forward pass
    assert np.all(r_trunc.grad_norm_t[:25] == 0) and np.all(r_full.grad_norm_t[:25] > 0)
    np.testing.assert_allclose(r_trunc.grad_norm_t[25:], r_full.grad_norm_t[25:], rtol=1e-5)
