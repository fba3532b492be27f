"""sigma_max by lag without forming the products (analysis.thin_sigma; issue 18 item 2): the forward-mode steps
against autograd, the thin block iteration against svdvals of the formed products within its stated tolerance,
and spectra="fast" taking the thin route only where the estimate says it is cheaper."""
import json

import numpy as np
import pytest
import torch

from analysis import ExperimentConfig, run_experiment
from analysis import jacobian_route
from analysis.experiment import TaskModel, resolve
from analysis.gradient_stage import _detached
from analysis.jacobians import _stack_states, jacobian_products, report_lags
from analysis.thin_sigma import (THIN_SECONDS_PER_FLOP, TESTED_RTOL, Steps, route_flops, route_seconds,
                                  thin_is_cheaper, thin_jacobians)

CASES = [("rnn", {}), ("rnn", {"activation": "relu"}), ("lstm", {}), ("lstm", {"peephole": True}), ("gru", {}),
         ("rnn", {"layer_norm": True}), ("lstm", {"layer_norm": True})]


def _run(cell, kw, T=50, H=12, dtype="float64", **extra):
    cfg = ExperimentConfig(cell=cell, hidden_size=H, seq_len=T, batch_size=3, dtype=dtype, seed=4, **kw, **extra)
    cfg, batch, _ = resolve(cfg)
    model = TaskModel(cfg, batch.spec, cfg.input_size)
    with torch.no_grad():
        trace, _ = model(batch.inputs)
    return _detached(trace.runs[0][0])


@pytest.mark.parametrize("cell,kw", CASES)
def test_jvp_and_vjp_steps_against_autograd(cell, kw):
    run = _run(cell, kw, T=6)
    xp, st = _stack_states(run, 2, 5, torch.arange(3))
    steps = Steps(run.cell, xp, st)
    S = sum(s.shape[-1] for s in st)
    V = torch.randn(2, 3, S, dtype=torch.float64)
    for c in range(3):
        state = tuple(s[c] for s in st)

        def step(flat):
            return torch.cat(run.cell.step(xp[c], tuple(flat.split([s.shape[-1] for s in state], -1))), -1)
        x0 = torch.cat(state, -1)
        for n in range(2):
            _, jv = torch.func.jvp(step, (x0,), (V[n],))
            _, vjp_fn = torch.func.vjp(step, x0)
            torch.testing.assert_close(steps.jvp(c, V)[n], jv, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(steps.vjp(c, V)[n], vjp_fn(V[n])[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell,kw", CASES)
def test_thin_sigma_max_within_tolerance_of_svdvals(cell, kw, dtype):
    T = 20 if kw.get("layer_norm") else 50  # layer norm: dense per-step Jacobians by autograd, slower
    run = _run(cell, kw, T=T, dtype=dtype, init="orthogonal", init_scale=1.1)
    lags = report_lags(T, "log", 16)
    ex = jacobian_products(run, lags=lags)
    th = thin_jacobians(run, lags=lags)
    tol = np.log10(1 + TESTED_RTOL)
    np.testing.assert_allclose(th.spectral_norm_per_sequence, ex.spectral_norm_per_sequence, rtol=0, atol=tol)
    if cell == "lstm":
        np.testing.assert_allclose(th.state_spectral_norm, ex.state_spectral_norm, rtol=0, atol=tol)
        np.testing.assert_allclose(th.cell_full, ex.cell_full, rtol=0, atol=tol)
        np.testing.assert_allclose(th.cell_carousel, ex.cell_carousel, rtol=1e-12)
    keep = ex.lyapunov > -10  # exponents of exactly singular steps (dead ReLUs) are -inf or rounding
    np.testing.assert_allclose(th.lyapunov[keep], ex.lyapunov[keep], rtol=1e-6, atol=1e-7)
    assert np.isnan(th.min_singular_value).all() and th.extras["sigma_max_estimate"]["unconverged"] == 0


def test_fast_takes_the_thin_route_only_where_cheaper(monkeypatch):
    small = ExperimentConfig(cell="lstm", hidden_size=8, seq_len=30, batch_size=2, dtype="float64")
    ex, fa = run_experiment(small), run_experiment(small.replace(spectra="fast"))
    np.testing.assert_array_equal(fa.jac.singular_values, ex.jac.singular_values)  # exact was cheaper here
    assert any("exact route" in n for n in fa.notes)
    # the PyTorch-example LM (H=650, T=35, 4 sequences): the light settings' 16 log-spaced lags take the thin route
    # (measured 5.3 s against 8.3 s exact), every lag at H=400 the exact one (measured 6.0 s against 7.4 s thin)
    assert thin_is_cheaper("lstm", 650, 35, report_lags(35, "log", 16), 4)
    assert not thin_is_cheaper("lstm", 400, 35, list(range(35)), 4)
    thin, exact = route_flops("lstm", 650, 35, report_lags(35, "log", 16), 4)
    t_s, e_s = route_seconds("lstm", 650, 35, report_lags(35, "log", 16), 4)
    assert t_s == THIN_SECONDS_PER_FLOP * thin and e_s < exact  # weighted: the thin sweeps slower per flop
    monkeypatch.setattr(jacobian_route, "thin_is_cheaper", lambda *a, **k: True)
    th = run_experiment(small.replace(spectra="fast"))
    np.testing.assert_allclose(th.jac.spectral_norm, ex.jac.spectral_norm, rtol=0, atol=np.log10(1 + TESTED_RTOL))
    assert th.memory_horizon == ex.memory_horizon
    d = th.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["jacobian"]["min_singular_value"][1] is None and "thin block" in d["jacobian"]["sigma_max_estimate"]["method"]
    assert any("not computed" in n and "thin block" in n for n in th.notes)


def test_thin_route_in_log_space_past_float_range():
    """A float32 linear RNN with W_hh = 8 Q: the products reach 8^79 ~ 1e71, beyond float32; the renormalized sweeps
    keep the log scale, as the exact route does."""
    run = _run("rnn", {"activation": "linear"}, T=80, H=6, dtype="float32", init="orthogonal", init_scale=8.0)
    th = thin_jacobians(run, lags=[0, 1, 2, 79])
    ex = jacobian_products(run, lags=[0, 1, 2, 79])
    assert th.nonfinite is None and ex.nonfinite is None and np.isfinite(th.spectral_norm).all()
    assert th.spectral_norm[-1] > 60
    np.testing.assert_allclose(th.spectral_norm, ex.spectral_norm, rtol=0, atol=np.log10(1 + TESTED_RTOL))
