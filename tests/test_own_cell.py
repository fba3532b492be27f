"""analyze(step, ...) on your own recurrence (analysis.own_cell / own_step), in float64, against references the
generic path never touches:

- the RNN, LSTM and GRU written here as plain step functions from the equations of torch.nn.RNNCell / LSTMCell /
  GRUCell's documentation, with the weights of the engine's built-in cells: the same numbers as the closed-form
  path (analyze of an nn.RNN/LSTM/GRU holding those weights) to 1e-12;
- every bad input answered in one line naming what is wrong;
- torch's cells mapped to the built-in closed forms, and the views, JSON and export of an own step.
Published cells against float64 autograd: test_own_cell_published.py; costs and sensitivity: test_own_cell_costs.py.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from torch import nn

from analysis import analyze
from analysis.own_cell import OwnCell
from rnn_models.cells import make_cell
from rnn_models.config import ConfigError

from own_cell_refs import B, F64, H, I, T  # noqa: F401
from own_cell_refs import (ScaledGRU, close as _close, data as _data, probe_loss as _probe_loss, reference,
                           weights as _W, zeros_h0 as _h0)


# ---- the three cells as plain steps, from torch.nn's documented equations ------------------------------------
def rnn_step(x, h, W_ih, W_hh, b_ih, b_hh):
    # h' = tanh(W_ih x + b_ih + W_hh h + b_hh)
    return torch.tanh(x @ W_ih.T + b_ih + h @ W_hh.T + b_hh)


def lstm_step(x, state, W_ih, W_hh, b_ih, b_hh):
    h, c = state
    # [i, f, g, o] = W_ih x + b_ih + W_hh h + b_hh
    i, f, g, o = (x @ W_ih.T + b_ih + h @ W_hh.T + b_hh).chunk(4, -1)
    # c' = sigma(f) c + sigma(i) tanh(g);  h' = sigma(o) tanh(c')
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def gru_step(x, h, W_ih, W_hh, b_ih, b_hh):
    x_r, x_z, x_n = (x @ W_ih.T + b_ih).chunk(3, -1)
    h_r, h_z, h_n = (h @ W_hh.T + b_hh).chunk(3, -1)
    # r = sigma(W_ir x + b_ir + W_hr h + b_hr);  z likewise;  n = tanh(W_in x + b_in + r (W_hn h + b_hn))
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    # h' = (1 - z) n + z h
    return (1 - z) * n + z * h


STEPS = {"rnn": (rnn_step, nn.RNN), "lstm": (lstm_step, nn.LSTM), "gru": (gru_step, nn.GRU)}


def _built_in(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    cell = make_cell(kind, I, H, dtype=torch.float64)
    with torch.no_grad():  # weights big enough that the Jacobians neither vanish at once nor stay near 1
        cell.weight_hh.mul_(2.5)
    return cell


def _params(cell) -> dict:
    return dict(W_ih=cell.weight_ih.detach(), W_hh=cell.weight_hh.detach(), b_ih=cell.bias_ih.detach(),
                b_hh=cell.bias_hh.detach())


def _torch_module(kind: str, cell):
    m = STEPS[kind][1](I, H).double()
    with torch.no_grad():
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(m, n + "_l0").copy_(getattr(cell, n))
    return m




def _close_spectrum(a, b, log_max, what=""):
    """log10 singular values a, b (..., n) of the same products by two routes, sigma_max log_max (...): each to
    1e-12 plus what float64 can resolve of it (Weyl: a perturbation of eps T sigma_max moves every singular
    value by that much, so sigma_i is known to eps T sigma_max / sigma_i relative)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    cond = 10.0 ** (np.asarray(log_max, float)[..., None] - b)  # sigma_max / sigma_i
    tol = 1e-12 + 10 * T * np.finfo(float).eps * cond / math.log(10)
    ok = np.isfinite(b)
    assert np.array_equal(ok, np.isfinite(a)), what
    assert (np.abs(a - b)[ok] <= tol[ok]).all(), f"{what}: {np.abs(a - b)[ok].max():.3g}"


LOSSES = {"probe": {}, "readout": "readout", "callable": {"loss": lambda y: (y ** 2).mean()},
          "truncated": {"truncate": 4}}


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("loss", list(LOSSES))
def test_plain_steps_equal_the_closed_form_path(kind, loss, single_thread):
    cell = _built_in(kind)
    x, h0, c0, ids = _data()
    kw = dict(LOSSES[loss]) if loss != "readout" else {}
    if loss == "readout":
        torch.manual_seed(3)
        head = nn.Linear(H, 3).double()
        kw = {"readout": head, "targets": ids}
    lstm = kind == "lstm"
    closed = analyze(_torch_module(kind, cell), x, h0=(h0[None], c0[None]) if lstm else h0[None], **kw, **F64)
    mine = analyze(STEPS[kind][0], x, h0=(h0, c0) if lstm else h0, params=_params(cell), **kw, **F64)
    assert mine.config.cell == "own" and closed.config.cell == kind
    g1, g2 = mine.grad, closed.grad
    _close(g1.grad_norm, g2.grad_norm, what="grad_norm")
    _close(g1.log10_grad_norm, g2.log10_grad_norm, what="log10_grad_norm")
    _close(g1.grad_norm_band, g2.grad_norm_band, what="band")
    if loss == "truncated":
        _close(mine.truncated.grad_norm, closed.truncated.grad_norm, what="truncated")
    j1, j2 = mine.jac, closed.jac
    assert j1.lag == j2.lag == list(range(T))
    _close(j1.spectral_norm, j2.spectral_norm, what="sigma_max")
    _close(j1.spectral_norm_per_sequence, j2.spectral_norm_per_sequence, what="sigma_max per sequence")
    _close_spectrum(j1.singular_values, j2.singular_values, j2.spectral_norm, what="top singular values")
    rel = j2.min_reliable
    assert (j1.min_reliable == rel).all() and rel[:4].all()
    _close_spectrum(j1.min_singular_value[rel, None], j2.min_singular_value[rel, None], j2.spectral_norm[rel],
                    what="sigma_min")
    _close(j1.lyapunov, j2.lyapunov, what="Lyapunov")
    if lstm:
        _close(j1.state_spectral_norm, j2.state_spectral_norm, what="[h; c] sigma_max")
        if j1.cell_full is not None:  # the second state tensor's own block, where the engine reports it
            _close(j1.cell_full, j2.cell_full, what="c -> c sigma_max")
    assert mine.memory_horizon == closed.memory_horizon
    assert j1.method.startswith("torch.func") and mine.spectra == {}


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_per_step_jacobians_equal_the_closed_forms(kind, single_thread):
    cell = _built_in(kind)
    x, h0, c0, _ = _data()
    state = (h0, c0) if kind == "lstm" else (h0,)
    own = OwnCell(functools.partial(STEPS[kind][0], **_params(cell)), input_size=I, hidden_size=H, k=len(state),
                  single=kind != "lstm", dtype=torch.float64)
    xs, sts = [], []
    with torch.no_grad():
        for t in range(T):
            xs.append(x[t])
            sts.append(state)
            state = cell(x[t], state)
    xp = cell.project(torch.stack(xs)).detach()  # (T, B, G)
    st = tuple(torch.stack([s[i] for s in sts]) for i in range(len(state)))  # (T, B, H) each
    J_closed = cell.jacobian(xp, st).detach()  # (T, B, S, S)
    J_own = own.jacobian(torch.stack(xs), st)
    assert own.jacobian_method == "jacrev"
    _close(J_own.flatten(), J_closed.flatten(), 1e-13, what="J_t")
    v = torch.randn(B, len(st) * H, dtype=torch.float64)
    vjp = own.vjp_steps(torch.stack(xs), st)
    for t in (0, T // 2, T - 1):
        _close(vjp(t, v), (v.unsqueeze(1) @ J_closed[t]).squeeze(1), 1e-13, what="v J_t")



# ---- bad input: one line naming what is wrong ---------------------------------------------------------------

class Growing(nn.Module):
    """A step whose state gains a unit at its fourth call (t = 3)."""

    def __init__(self):
        super().__init__()
        self.U = nn.Parameter(torch.randn(H, H) / 3)
        self.calls = 0

    def forward(self, x, h):
        self.calls += 1
        h = torch.tanh(h @ self.U + x.sum(-1, keepdim=True))
        return torch.cat([h, h[:, :1]], -1) if self.calls == 4 else h


BAD = {
    "wrong shape": (dict(step=lambda x, h, W, U: torch.tanh(x @ W + h @ U).repeat(1, 2), params=_W(), h0=_h0()),
                    ["the step at t=0 returned the state of shape (3, 12)", "(3, 6)"]),
    "tuple for a tensor": (dict(step=lambda x, h, W, U: (h, h), params=_W(), h0=_h0()),
                           ["the step at t=0 returned a tuple of 2", "one tensor (3, 6)"]),
    "size changes": (dict(step=Growing(), h0=_h0()), ["at t=3", "shape (3, 7)", "(3, 6)"]),
    "detach": (dict(step=lambda x, h, W, U: torch.tanh(x @ W + h.detach() @ U), params=_W(), h0=_h0()),
               ["does not depend on its state through autograd", ".detach()"]),
    "numpy": (dict(step=lambda x, h, W, U: torch.from_numpy(np.tanh(h.numpy() @ U.detach().numpy())) + x @ W,
                   params=_W(), h0=_h0()), ["raised RuntimeError at t=0 under autograd", "numpy", ".numpy()"]),
    "rounding": (dict(step=lambda x, h, W, U: torch.tanh(x @ W + torch.round(4 * h) / 4 @ U), params=_W(),
                      h0=_h0()), ["exactly 0 at t=0..3 for every sequence", "no gradient through its state"]),
    "integer state": (dict(step=lambda x, h, W, U: (x @ W + h @ U > 0).long(), params=_W(), h0=_h0()),
                      ["returned the state as torch.int64", "not differentiable"]),
    "complex h0": (dict(step=lambda x, h, W, U: h, params=_W(), h0=_h0().to(torch.complex128)),
                   ["h0 is complex", "view_as_real"]),
    "complex output": (dict(step=lambda x, h, W, U: torch.polar(h.abs() + 1, h), params=_W(), h0=_h0()),
                       ["returned a complex the state", "view_as_real", "[h.real, h.imag]"]),
    "widths differ": (dict(step=lambda x, s, W, U: s, params=_W(), h0=(_h0(), _h0(4))),
                      ["widths (6, 4)", "the same width H"]),
    "no h0": (dict(step=lambda x, h, W, U: h, params=_W()), ["h0 is needed for your own step"]),
    "batch mixed": (dict(step=lambda x, h, W, U: torch.tanh(x @ W + (h - h.mean(0)) @ U), params=_W(),
                         h0=0.1 * torch.randn(B, H, dtype=torch.float64)), ["mixes the sequences of a batch"]),
    "step raises": (dict(step=lambda x, h, W, U: h @ torch.ones(7, 7, dtype=h.dtype), params=_W(), h0=_h0()),
                    ["the step raised RuntimeError at t=0"]),
    "params not a dict": (dict(step=lambda x, h: h, params=[torch.eye(H)], h0=_h0()), ["params must be a dict"]),
    "params with a module": (dict(step=Growing(), params={"U": torch.eye(H)}, h0=_h0()),
                             ["params= is for a plain function"]),
    "built-in setting": (dict(step=lambda x, h, W, U: h, params=_W(), h0=_h0(), activation="relu"),
                         ["activation='relu' does not apply to your own step", "built-in cells"]),
    "architecture": (dict(step=lambda x, h, W, U: h, params=_W(), h0=_h0(), hidden_size=8),
                     ["hidden_size=8 does not apply to your own step", "your step decides it"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_steps_one_line(case):
    kw, words = BAD[case]
    kw = dict(kw)
    step = kw.pop("step")
    x = torch.randn(T, B, I, dtype=torch.float64)
    with pytest.raises(ConfigError) as e:
        analyze(step, x, **kw, **F64)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 400, msg
    for w in words:
        assert w in msg, (w, msg)


def test_own_is_not_a_kind_a_config_names():
    from analysis import ExperimentConfig
    from rnn_models.cells import cell_names, cell_type
    from rnn_models.config import CELLS
    assert "own" not in CELLS and "own" not in cell_names() and cell_type("own") is OwnCell
    with pytest.raises(ConfigError, match="cell='own' is not allowed"):
        ExperimentConfig(cell="own")
    r = analyze(lambda x, h, W, U: torch.tanh(x @ W + h @ U), torch.randn(T, B, I, dtype=torch.float64), h0=_h0(),
                params=_W(), spectra="fast", **F64)
    assert r.config.spectra == "exact" and any("spectra='fast'" in n for n in r.notes)


def test_float32_weights_of_a_closure_are_named():
    U = torch.eye(H)  # float32, captured: not given as params, so not cast to float64
    with pytest.raises(ConfigError, match=r"returned the state in torch.float32 for a torch.float64 state: its "
                                          r"weights were not cast"):
        analyze(lambda x, h: torch.tanh(h.float() @ U), torch.randn(T, B, I), h0=_h0(), **F64)


# ---- the views, the JSON and the export of an own step --------------------------------------------------------
def test_views_json_and_summary_of_an_own_step(tmp_path, single_thread):
    import json

    from analysis.export.bundles import view_zip
    from analysis.figures import VIEWS
    cell = _built_in("gru")
    x, h0, _, _ = _data()
    r = analyze(gru_step, x, h0=h0, params=_params(cell), **F64)
    for view in VIEWS:
        figs = r.figures(view)
        assert all(f.to_dict() for f in figs.values())
    eig = r.figures("spectrum")["eigenvalues"]
    assert any("no fixed recurrent matrix" in a.text for a in eig.layout.annotations)
    assert "Your cell" in r.figures("gradient-flow")["grad_norm"].data[0].name
    d = json.loads(json.dumps(r.to_dict()))
    assert d["config"]["cell"] == "own" and d["grad_norm"] == pytest.approx(list(r.grad.grad_norm), rel=1e-12)
    assert "no fixed recurrent matrix" in repr(r) and "your step gru_step" in repr(r)
    assert r.provenance["step"] == "gru_step" and r.jac.method.startswith("torch.func: vector-Jacobian products")
    zipped = view_zip(r.figures("jacobians"), r.config.to_dict(), formats=("json",))
    assert len(zipped) > 1000


# ---- torch's cells: mapped to the built-in closed forms; as_step=True keeps a module generic --------------------
@pytest.mark.parametrize("kind,make", [("rnn", lambda: nn.RNNCell(I, H, nonlinearity="relu")),
                                       ("gru", lambda: nn.GRUCell(I, H))])
def test_torch_cells_map_to_the_built_in_cells(kind, make, single_thread):
    torch.manual_seed(11)
    cell = make()
    x, h0, _, _ = _data(12)
    r = analyze(cell, x, h0=h0, **F64)  # the cell itself: h0 (B, H) as the cell takes it
    layer = STEPS[kind][1](I, H, **({"nonlinearity": "relu"} if kind == "rnn" else {}))
    with torch.no_grad():
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(layer, n + "_l0").copy_(getattr(cell, n))
    ref = analyze(layer, x, h0=h0[None], **F64)
    assert r.config.cell == kind and r.config.activation == ("relu" if kind == "rnn" else "tanh")
    np.testing.assert_array_equal(r.grad.grad_norm, ref.grad.grad_norm)
    np.testing.assert_array_equal(r.jac.spectral_norm, ref.jac.spectral_norm)


def test_as_step_analyses_a_module_holding_a_torch_cell_as_it_is(single_thread):
    torch.manual_seed(13)
    step = ScaledGRU()
    x, h0, _, _ = _data(14)
    mapped = analyze(step, x, h0=h0, **F64)  # found nn.GRUCell: the GRU alone (the 0.9 is not seen)
    own = analyze(step, x, h0=h0, as_step=True, **F64)
    assert mapped.config.cell == "gru" and own.config.cell == "own"
    ref = ScaledGRU().double()
    ref.load_state_dict(step.state_dict())
    gm, hh, _ = reference(ref, x, h0, _probe_loss(), lags=(1, 3))
    _close(own.grad.grad_norm, gm, what="grad_norm")
    for lag in hh:
        _close(own.jac.spectral_norm[lag], hh[lag], what=f"sigma_max lag {lag}")
    assert not np.allclose(mapped.grad.grad_norm, gm)
