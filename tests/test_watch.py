"""watch(): the per-time-step ||dL/dh_t|| of a real training step equal analyze() on the same weights, batch and
loss (float64, 1e-10), the probes equal the engine's, the run directory survives kill -9, bad input is one line.

analyze() is itself tested against torch.nn stepped one step at a time (tests/test_own_model.py); here the
reference is analyze() run on a deep copy of the model taken before the step, with the same h0 and targets.
"""
from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis import analyze, load_run, watch
from analysis import watch_chain
from analysis.watch_chain import engine_total, total_grads
from rnn_models.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CHEAP = {"jacobian_lags": "log", "num_log_lags": 4, "n_singular": 1, "lyapunov_k": 0}  # the reference's grads only
V, E, H, T, B = 13, 6, 8, 12, 4


class LM(nn.Module):
    def __init__(self, cell=nn.LSTM, layers=2, dtype=torch.float64):
        super().__init__()
        self.encoder = nn.Embedding(V, E, dtype=dtype)
        self.rnn = cell(E, H, num_layers=layers, dtype=dtype)
        self.decoder = nn.Linear(H, V, dtype=dtype)

    def forward(self, ids, hx=None):
        out, hx = self.rnn(self.encoder(ids), hx)
        return self.decoder(out), hx


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (T, B), generator=g), torch.randint(0, V, (T, B), generator=g)


def _train(model, log_dir, steps=3, hx=None, every=100, clip=None, lr=0.5):
    """A plain training loop, watched; returns the model copies and batches each step saw (for the reference)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    seen = []
    w = watch(model, str(log_dir), every=every)
    for step in range(steps):
        x, y = _batch(step)
        seen.append((copy.deepcopy(model), x, y))
        out, _ = model(x, hx)
        loss = F.cross_entropy(out.reshape(-1, V), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        w.record(step, loss=loss)
        if clip:
            gn = nn.utils.clip_grad_norm_(model.parameters(), clip)
            w.note(step, grad_norm=gn, clipped=bool(gn > clip))
        opt.step()
    w.close()
    return seen


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU, nn.RNN])
def test_watch_equals_analyze_float64(tmp_path, cell):
    torch.manual_seed(1)
    model = LM(cell)
    h0 = torch.randn(2, B, H, dtype=torch.float64) * 0.5
    hx = (h0, torch.randn_like(h0) * 0.5) if cell is nn.LSTM else h0
    seen = _train(model, tmp_path / "run", steps=2, hx=hx)
    run = load_run(str(tmp_path / "run"))
    assert run.steps.tolist() == [0, 1] and run.layers == ["rnn.l0", "rnn.l1"]
    for i, (m, x, y) in enumerate(seen):
        ref = analyze(m, x, readout="decoder", targets=y, embedding="encoder", h0=hx, dtype="float64", **CHEAP)
        np.testing.assert_allclose(run.grad_norm[-1][i], ref.grad.grad_norm, rtol=1e-10, atol=0)
        for layer in (0, 1):
            np.testing.assert_allclose(run.grad_norm[f"rnn.l{layer}"][i], ref.grad.per_layer[layer], rtol=1e-10)
        assert run.loss[i] == pytest.approx(ref.grad.loss, rel=1e-12)
    # the weights changed between steps, and so did the norms: each record is its own step's
    assert not np.allclose(run.grad_norm[0][0], run.grad_norm[0][1])


def test_float32_to_rounding(tmp_path):
    torch.manual_seed(2)
    model = LM(nn.LSTM, dtype=torch.float32)
    seen = _train(model, tmp_path / "run", steps=1)
    m, x, y = seen[0]
    ref = analyze(m, x, readout="decoder", targets=y, embedding="encoder", dtype="float64", **CHEAP)
    run = load_run(str(tmp_path / "run"))
    np.testing.assert_allclose(run.grad_norm[-1][0], ref.grad.grad_norm, rtol=2e-5)


def test_closed_form_chain_equals_engine_autograd():
    """The fast chain (fused forwards + closed-form steps) against the engine's network and autograd."""
    torch.manual_seed(3)
    for cell, kw in [(nn.LSTM, {}), (nn.GRU, {}), (nn.RNN, {}), (nn.RNN, {"nonlinearity": "relu"})]:
        m = cell(5, 7, 3, dtype=torch.float64, **kw)
        x = torch.randn(9, 4, 5, dtype=torch.float64)
        h0 = torch.randn(3, 4, 7, dtype=torch.float64)
        hx = (h0, torch.randn_like(h0)) if cell is nn.LSTM else h0
        y, _ = m(x, hx)
        e = torch.randn_like(y)
        for a, b in zip(total_grads(m, x, hx, e, {}, top_out=y.detach()), engine_total(m, x, hx, e)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)



def test_recomputed_layers_equal_engine_autograd():
    """Every layer recomputed (no top_out: what a module with active inter-layer dropout gets; the LSTM runs its
    own forward keeping the gates), with and without h0, against the engine's network and autograd."""
    torch.manual_seed(3)
    for cell, kw in [(nn.LSTM, {}), (nn.GRU, {}), (nn.RNN, {}), (nn.RNN, {"nonlinearity": "relu"})]:
        m = cell(5, 7, 3, dtype=torch.float64, **kw)
        x = torch.randn(9, 4, 5, dtype=torch.float64)
        h0 = torch.randn(3, 4, 7, dtype=torch.float64)
        for hx in (None, (h0, torch.randn_like(h0)) if cell is nn.LSTM else h0):
            e = torch.randn(9, 4, 7, dtype=torch.float64)
            got, ref = total_grads(m, x, hx, e, {}), engine_total(m, x, hx, e)
            assert len(got) == 3
            for a, b in zip(got, ref):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)



@pytest.mark.parametrize("onednn", [True, False])
def test_float32_chain_both_product_routes(monkeypatch, onednn):
    """float32 products go through oneDNN where this torch has it (else torch.addmm): either route equals the
    engine's float64 autograd to float32 rounding, every layer recomputed or the top one given, with a
    non-contiguous direct gradient (a batch_first module's, made time-major)."""
    monkeypatch.setattr(watch_chain, "ONEDNN", onednn)
    torch.manual_seed(7)
    for cell, kw in [(nn.LSTM, {}), (nn.GRU, {}), (nn.RNN, {}), (nn.RNN, {"nonlinearity": "relu"})]:
        m = cell(6, 16, 2, **kw)
        m64 = copy.deepcopy(m).double()
        x = torch.randn(11, 5, 6)
        h0 = torch.randn(2, 5, 16) * 0.5
        hx = (h0, torch.randn_like(h0) * 0.5) if cell is nn.LSTM else h0
        hx64 = tuple(h.double() for h in hx) if isinstance(hx, tuple) else hx.double()
        e = torch.randn(5, 11, 16).transpose(0, 1)  # (T, B, H), not contiguous
        assert not e.is_contiguous()
        ref = engine_total(m64, x.double(), hx64, e.double())
        y, _ = m(x, hx)
        for top in (None, y.detach()):
            for a, b in zip(total_grads(m, x, hx, e, {}, top_out=top), ref):
                assert a.dtype == torch.float32
                torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5 * b.abs().max().item())
    if onednn and hasattr(torch.ops.mkldnn, "_linear_pointwise") and torch.backends.mkldnn.is_available():
        assert watch_chain._onednn_works  # the fast route was taken, not silently skipped

@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU, nn.RNN])
def test_dropout_between_layers_runs_the_network_without_it(tmp_path, cell):
    """A module training with dropout between layers: the top layer's direct gradient is the true one (here
    dL/dy = z exactly, L = sum y z) and the chain runs on the network without dropout (the engine's)."""
    torch.manual_seed(6)
    rnn = cell(3, 5, num_layers=2, dropout=0.5, dtype=torch.float64).train()
    x = torch.randn(T, B, 3, dtype=torch.float64)
    z = torch.randn(T, B, 5, dtype=torch.float64)
    ref = [torch.log10(torch.linalg.vector_norm(g, dim=-1)).mean(1).numpy() for g in engine_total(rnn, x, None, z)]
    w = watch(rnn, str(tmp_path / "run"))
    out, _ = rnn(x)
    (out * z).sum().backward()
    w.record(0)
    w.close()
    run = load_run(str(tmp_path / "run"))
    for layer in (0, 1):
        np.testing.assert_allclose(run.log10_grad_norm[layer][0], ref[layer], rtol=1e-10)
    msgs = json.loads((tmp_path / "run" / "records.jsonl").read_text().splitlines()[0])["messages"]
    assert any("dropout=0.5" in m for m in msgs)

def test_bidirectional_batch_first_own_loss(tmp_path):
    """A batch_first bidirectional GRU under an MSE loss on its outputs: the engine route, against analyze()."""
    torch.manual_seed(4)
    rnn = nn.GRU(3, 5, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64)
    x = torch.randn(B, T, 3, dtype=torch.float64)
    z = torch.randn(B, T, 10, dtype=torch.float64)
    ref_model = copy.deepcopy(rnn)
    w = watch(rnn, str(tmp_path / "run"))
    out, _ = rnn(x)
    loss = ((out - z) ** 2).mean()
    loss.backward()
    w.record(0, loss=loss)
    w.close()
    run = load_run(str(tmp_path / "run"))
    assert run.layers == ["l0", "l1"]
    for layer in (0, 1):
        ref = analyze(ref_model, x, loss=lambda o: ((o - z.transpose(0, 1)) ** 2).mean(), layer=layer,
                      dtype="float64", **CHEAP)
        np.testing.assert_allclose(run.grad_norm[layer][0], ref.grad.grad_norm, rtol=1e-10)


def test_probe_equals_engine_on_first_sequence(tmp_path):
    torch.manual_seed(5)
    model = LM(nn.LSTM)
    seen = _train(model, tmp_path / "run", steps=2, every=1)
    run = load_run(str(tmp_path / "run"))
    assert run.probe_steps.tolist() == [0, 1]
    m, x, y = seen[1]
    for layer in (0, 1):
        ref = analyze(m, x[:, :1], readout="decoder", targets=y[:, :1], embedding="encoder", layer=layer,
                      jacobian_lags="log", num_log_lags=12, dtype="float64")
        assert run.lags.tolist() == list(ref.jac.lag)
        np.testing.assert_allclose(run.log10_sigma_max[layer][1], ref.jac.spectral_norm, rtol=1e-9, atol=1e-9)
        hz = run.horizon[layer][1]
        assert (np.isnan(hz) and ref.memory_horizon is None) or hz == ref.memory_horizon
        W = getattr(m.rnn, f"weight_hh_l{layer}").detach()
        for g, block in zip("ifgo", W.split(H, 0)):
            want = np.sort_complex(torch.linalg.eigvals(block).numpy())
            np.testing.assert_allclose(np.sort_complex(run.eigenvalues[layer][1][g]), want, rtol=1e-5, atol=1e-6)


def test_probes_of_sequences_of_different_lengths_load_at_their_own_lags(tmp_path):
    """A last window shorter than the others (T=30, then T=9): its probe has fewer log-spaced lags. The run loads;
    lags is the union, each probe's sigma_max sits at its own lags (equal to the engine's), NaN at the others."""
    torch.manual_seed(7)
    model = LM(nn.LSTM)
    w = watch(model, str(tmp_path / "run"), every=1)
    seen = []
    for step, T_ in enumerate((30, 9)):
        g = torch.Generator().manual_seed(step)
        x, y = torch.randint(0, V, (T_, B), generator=g), torch.randint(0, V, (T_, B), generator=g)
        seen.append((copy.deepcopy(model), x, y))
        out, _ = model(x)
        loss = F.cross_entropy(out.reshape(-1, V), y.reshape(-1))
        model.zero_grad()
        loss.backward()
        w.record(step, loss=loss)
    w.close()
    run = load_run(str(tmp_path / "run"))
    assert run.probe_steps.tolist() == [0, 1]
    for i, (m, x, y) in enumerate(seen):
        ref = analyze(m, x[:, :1], readout="decoder", targets=y[:, :1], embedding="encoder", layer=0,
                      jacobian_lags="log", num_log_lags=12, dtype="float64")
        cols = [run.lags.tolist().index(k) for k in ref.jac.lag]
        np.testing.assert_allclose(run.log10_sigma_max[0][i][cols], ref.jac.spectral_norm, rtol=1e-9, atol=1e-9)
        others = np.setdiff1d(np.arange(len(run.lags)), cols)
        assert np.isnan(run.log10_sigma_max[0][i][others]).all()
    assert np.isnan(run.log10_sigma_max[0][1]).any()  # the short window lacks the long window's longest lags


def test_notes_and_clipping(tmp_path):
    torch.manual_seed(6)
    _train(LM(nn.LSTM), tmp_path / "run", steps=3, clip=0.01)
    run = load_run(str(tmp_path / "run"))
    steps, clipped = run.note_series("clipped")
    assert steps.tolist() == [0, 1, 2] and clipped.tolist() == [1.0, 1.0, 1.0]
    assert (run.note_series("grad_norm")[1] > 0.01).all()


def test_kill_9_keeps_every_record_before_it(tmp_path):
    """A training process killed with SIGKILL after step 4's record: the run loads with steps 0..4."""
    code = textwrap.dedent(f"""
        import os, signal, sys, torch
        sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
        import torch.nn.functional as F
        from test_watch import LM, _batch, V
        from analysis import watch
        torch.manual_seed(0)
        m = LM()
        w = watch(m, {str(tmp_path / 'run')!r}, every=2)
        for step in range(10):
            x, y = _batch(step)
            loss = F.cross_entropy(m(x)[0].reshape(-1, V), y.reshape(-1))
            loss.backward()
            w.record(step, loss=loss)
            if step == 4:
                os.kill(os.getpid(), signal.SIGKILL)
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    run = load_run(str(tmp_path / "run"))
    assert run.steps.tolist() == [0, 1, 2, 3, 4] and run.probe_steps.tolist() == [0, 2, 4]
    assert np.isfinite(run.log10_grad_norm[0]).all()
    # a record cut short mid-line (a kill during the write) is skipped; a damaged earlier line is refused
    with open(tmp_path / "run" / "records.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 1.2, "log10_gr')
    assert load_run(str(tmp_path / "run")).steps.tolist() == [0, 1, 2, 3, 4]
    lines = (tmp_path / "run" / "records.jsonl").read_text().split("\n")
    (tmp_path / "run" / "records.jsonl").write_text("\n".join(["garbage"] + lines))
    with pytest.raises(ConfigError, match="records.jsonl line 1 is not a JSON record"):
        load_run(str(tmp_path / "run"))


def test_bad_input_one_line(tmp_path):
    with pytest.raises(ConfigError, match="holds no nn.RNN/LSTM/GRU"):
        watch(nn.Linear(2, 2), str(tmp_path / "a"))
    with pytest.raises(ConfigError, match="every=0"):
        watch(LM(), str(tmp_path / "b"), every=0)
    m = LM()
    w = watch(m, str(tmp_path / "c"))
    with pytest.raises(ConfigError, match="call loss.backward\\(\\) before w.record"):
        w.record(0)
    x, y = _batch()
    loss = F.cross_entropy(m(x)[0].reshape(-1, V), y.reshape(-1))
    with pytest.raises(ConfigError, match="call loss.backward"):
        w.record(0, loss=loss)  # a forward, no backward yet
    loss.backward()
    torch.optim.SGD(m.parameters(), lr=0.1).step()
    with pytest.raises(ConfigError, match="changed since its forward pass"):
        w.record(0, loss=loss)
    w.close()
    with pytest.raises(ConfigError, match="already holds a run"):
        watch(m, str(tmp_path / "c"))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "run.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ConfigError, match="not a gdlab-run header"):
        load_run(str(tmp_path / "d"))


def test_readable_while_training_and_no_grad_forwards_ignored(tmp_path):
    """The run reads between steps; an evaluation forward under no_grad does not replace the captured batch."""
    torch.manual_seed(7)
    m = LM()
    w = watch(m, str(tmp_path / "run"))
    x, y = _batch()
    loss = F.cross_entropy(m(x)[0].reshape(-1, V), y.reshape(-1))
    loss.backward()
    with torch.no_grad():
        m(_batch(9)[0][:5])  # a shorter evaluation batch
    w.record(0, loss=loss)
    assert load_run(str(tmp_path / "run")).log10_grad_norm[0].shape == (1, T)
    w.close()


def test_probe_failure_is_a_message_not_a_crash(tmp_path, monkeypatch):
    """An exploding run may make LAPACK fail: the probe says so in the run, the training loop goes on."""
    import analysis.watch_probe as probe_mod  # where the probe computes its Jacobian products

    def fail(*a, **k):
        raise torch.linalg.LinAlgError("linalg.eigh: the algorithm failed to converge")
    monkeypatch.setattr(probe_mod, "jacobian_products", fail)
    _train(LM(nn.GRU, layers=1), tmp_path / "run", steps=2, every=1)
    run = load_run(str(tmp_path / "run"))
    assert run.steps.tolist() == [0, 1] and np.isnan(run.log10_sigma_max[0]).all()
    assert len(run.eigenvalues[0][0]["z"]) == H  # the eigenvalues still recorded
    assert "probe at step 0, rnn.l0: failed (" in run.messages[0] and "linalg.eigh" in run.messages[0]


def test_tensorboard_scalars_and_images(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from analysis.watch_tensorboard import ZMAX, ZMIN, grey_image
    torch.manual_seed(8)
    m = LM(nn.GRU, layers=1)
    w = watch(m, str(tmp_path / "run"), every=2, tensorboard=True)
    for step in range(3):
        x, y = _batch(step)
        loss = F.cross_entropy(m(x)[0].reshape(-1, V), y.reshape(-1))
        loss.backward()
        w.record(step, loss=loss)
        m.zero_grad()
    w.close()
    run = load_run(str(tmp_path / "run"))
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    loss = acc.Scalars("watch/loss")
    assert [e.step for e in loss] == [0, 1, 2] and loss[1].value == pytest.approx(run.loss[1], rel=1e-6)
    last = acc.Scalars("watch/rnn.l0/log10_grad_norm_last_t")
    np.testing.assert_allclose([e.value for e in last], run.log10_grad_norm[0][:, -1], rtol=1e-6)
    sig = acc.Scalars(f"watch/rnn.l0/log10_sigma_max_lag{T - 1}")
    np.testing.assert_allclose([e.value for e in sig], run.log10_sigma_max[0][:, -1], rtol=1e-6)
    assert [e.step for e in sig] == [0, 2]  # (the horizon is written where the probe found one)
    assert [e.step for e in acc.Images("watch/rnn.l0/grad_norm_timeline")] == [0, 2]
    img = grey_image([[ZMIN - 1, ZMIN, (ZMIN + ZMAX) / 2, ZMAX + 3, None]])
    np.testing.assert_allclose(img[:, 0], [0, 0, 0.5, 1, 0])  # the fixed scale, clipped; missing -> black


def test_unbatched_input_batch_first_module(tmp_path):
    """torch runs an unbatched (T, I) input time-major even when batch_first: so does watch."""
    torch.manual_seed(9)
    rnn = nn.LSTM(3, 4, batch_first=True, dtype=torch.float64)
    x = torch.randn(T, 3, dtype=torch.float64)
    ref_model = copy.deepcopy(rnn)
    w = watch(rnn, str(tmp_path / "run"))
    out, _ = rnn(x)
    loss = (out ** 2).sum()
    loss.backward()
    w.record(0, loss=loss)
    w.close()
    ref = analyze(ref_model, x.unsqueeze(0), loss=lambda o: (o ** 2).sum(), dtype="float64", **CHEAP)
    np.testing.assert_allclose(load_run(str(tmp_path / "run")).grad_norm[0][0], ref.grad.grad_norm, rtol=1e-10)
