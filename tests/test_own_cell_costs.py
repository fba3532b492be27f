"""An own step's cost: the limits and light settings from its estimate, the memory estimate against a measured
peak, and the sensitivity view (analysis.param_sensitivity on a deep copy of the cell) against float64 autograd."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from analysis import analyze
from own_cell_refs import B, F64, H, I, T  # noqa: F401
from own_cell_refs import ScaledGRU, data as _data, weights as _W, zeros_h0 as _h0


def test_limits_and_light_settings_from_the_step_estimate(monkeypatch):
    from analysis import limits
    from analysis.compute_views import ESTIMATE_SINK
    from analysis.limits import LimitExceeded
    x = torch.randn(T, B, I, dtype=torch.float64)
    p, h0 = _W(), _h0()
    step = lambda x, h, W, U: torch.tanh(x @ W + h @ U)  # noqa: E731
    monkeypatch.setattr(limits, "_override", limits.Limits(None, None))
    costs = []
    token = ESTIMATE_SINK.set(costs.append)
    try:
        analyze(step, x, h0=h0, params=p, views="gradients", **F64)
        analyze(step, x, h0=h0, params=p, jacobian_detail="exact", **F64)
    finally:
        ESTIMATE_SINK.reset(token)
    grads, full = (c.flops for c in costs)
    assert grads < full
    monkeypatch.setattr(limits, "_override", limits.Limits(max_memory_mb=None, max_gflop=(grads + full) / 2e9))
    with pytest.raises(LimitExceeded) as e:
        analyze(step, x, h0=h0, params=p, jacobian_detail="exact", **F64)
    assert "this analysis of your step" in str(e.value) and "GFLOP (estimate" in str(e.value)
    assert "\n" not in str(e.value)
    assert analyze(step, x, h0=h0, params=p, views="gradients", **F64).jac is None  # under the limit
    monkeypatch.setattr(limits, "_override", limits.Limits(None, None))
    import analysis.compute_views as cv
    monkeypatch.setattr(cv, "AUTO_LIGHT_SECONDS", 0.0)  # every step analysis is "long": auto picks light
    r = analyze(step, x, h0=h0, params=p, **F64)
    assert r.config.jacobian_detail == "light" and r.config.jacobian_batch == 4 and r.jac.batch_analysed == B
    assert r.config.spectra == "exact" and any(n.startswith("light Jacobian settings") for n in r.notes)


MEMORY_CHILD = r"""
import sys, torch
torch.set_num_threads(1)
from analysis import analyze
from analysis.compute_views import ESTIMATE_SINK
def hwm():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) * 1024
H, T, B, I = 96, 192, 8, 16
g = torch.Generator().manual_seed(0)
p = {n: torch.randn(*s, generator=g) / s[-1] ** 0.5 for n, s in
     (("W_ih", (4 * H, I)), ("W_hh", (4 * H, H)), ("b_ih", (4 * H,)), ("b_hh", (4 * H,)))}
def step(x, state, W_ih, W_hh, b_ih, b_hh):
    h, c = state
    i, f, gg, o = (x @ W_ih.T + b_ih + h @ W_hh.T + b_hh).chunk(4, -1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
    return torch.sigmoid(o) * torch.tanh(c), c
x, z = torch.randn(T, B, I, generator=g), torch.zeros(B, H)
analyze(step, x[:2], h0=(z, z), params=p, jacobian_detail="exact")
base, costs = hwm(), []
ESTIMATE_SINK.set(costs.append)
analyze(step, x, h0=(z, z), params=p, jacobian_detail="exact")
print(hwm() - base, costs[0].memory_bytes)
"""


def test_memory_estimate_is_above_the_measured_peak():
    """The step's memory estimate (analysis.own_step.step_cost, with its 64 MB base) is not below the peak RSS
    growth of the analysis, measured in a fresh process (VmHWM after a warm-up run)."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD], cwd=root, capture_output=True, text=True,
                         timeout=300, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    grown, estimate = map(float, out.stdout.split())
    assert grown <= estimate, (grown / 2**20, estimate / 2**20)


# ---- the sensitivity view of an own step (analysis.param_sensitivity on a deep copy of the cell) ------------------
@pytest.mark.parametrize("form", ["params", "module"])
def test_sensitivity_of_an_own_step_equals_float64_autograd(form, single_thread):
    """S_t = mean_b ||dh_t/d theta||_F^2 over every parameter of the step (an own step declares no recurrent
    parameters), against torch.autograd.functional.jacobian of an independent loop; the step runs on the
    analysis's copy of its weights (a closure over the first copy's would leave the tangents out)."""
    p = _W(21)
    x, h0, _, _ = _data(22)
    if form == "params":
        r = analyze(lambda x, h, W, U: torch.tanh(x @ W + h @ U), x, h0=h0, params=p, views="sensitivity", **F64)
        assert r.param_sensitivity.params == ["params.W", "params.U"]
    else:
        step = ScaledGRU().double()
        p = {n: v.detach() for n, v in step.gru.named_parameters()}
        r = analyze(step, x, h0=h0, as_step=True, views="sensitivity", **F64)
        assert r.param_sensitivity.params == [f"module.gru.{n}" for n in p]

    def hs(*flat):  # every h_t (T, B, H) as a function of the parameters
        if form == "params":
            W, U = flat
            h, out = h0, []
            for t in range(T):
                h = torch.tanh(x[t] @ W + h @ U)
                out.append(h)
            return torch.stack(out)
        ref = ScaledGRU().double()
        out = torch.func.functional_call(ref, {f"gru.{n}": v for n, v in zip(p, flat)}, (x[0], h0))
        h, outs = out, [out]
        for t in range(1, T):
            h = torch.func.functional_call(ref, {f"gru.{n}": v for n, v in zip(p, flat)}, (x[t], h))
            outs.append(h)
        return torch.stack(outs)
    J = torch.autograd.functional.jacobian(hs, tuple(p.values()))  # each (T, B, H, *shape)
    sq = sum(j.reshape(T, B, -1).pow(2).sum(-1) for j in J)  # (T, B)
    want = torch.log10(sq.mean(1)).numpy()
    np.testing.assert_allclose(r.param_sensitivity.log10_sensitivity, want, rtol=0, atol=1e-10)
