"""analyze(step, ...) on your own recurrence (analysis.own_cell / own_step), in float64, against references the
generic path never touches:

- the RNN, LSTM and GRU written here as plain step functions from the equations of torch.nn.RNNCell / LSTMCell /
  GRUCell's documentation, with the weights of the engine's built-in cells: the same numbers as the closed-form
  path (analyze of an nn.RNN/LSTM/GRU holding those weights) to 1e-12;
- a model looping over nn.LSTMCell (mapped to the built-in LSTM) and two published cells (tests/thirdparty_cells.py)
  against float64 autograd: ||dL/dh_t|| by retain_grad on the states of an independent loop, the Jacobian
  products by torch.autograd.functional.jacobian of the composed steps;
- every bad input answered in one line naming what is wrong.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis import analyze
from analysis.own_cell import OwnCell
from analysis.tasks import random_readout
from rnn_models.cells import make_cell
from rnn_models.config import ConfigError
from thirdparty_cells import LayerNormLSTMCell, LNLSTMStep, MinGRUStep, minGRU

T, B, I, H = 14, 3, 4, 6
F64 = dict(dtype="float64")


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


def _data(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, I, generator=g, dtype=torch.float64)
    h0 = 0.5 * torch.randn(B, H, generator=g, dtype=torch.float64)
    c0 = 0.5 * torch.randn(B, H, generator=g, dtype=torch.float64)
    return x, h0, c0, torch.randint(0, 3, (T, B), generator=g)


def _close(a, b, tol=1e-12, what=""):
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert a.shape == b.shape, what
    assert np.array_equal(np.isfinite(a), np.isfinite(b)), what
    ok = np.isfinite(a)
    err = np.abs(a[ok] - b[ok]) / np.maximum(1.0, np.abs(b[ok]))
    assert err.max(initial=0.0) <= tol, f"{what}: {err.max():.3g}"


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


# ---- a model looping over nn.LSTMCell, and published cells, against float64 autograd --------------------------
def reference(step, x, state0, loss_of_h, lags=(1, 2, 5)):
    """(geometric mean over the batch of ||dL/dh_t|| (T,), {lag: mean_b log10 sigma_max of the h -> h block},
    {lag: mean_b log10 sigma_max of the whole state}) by autograd on an independent loop of ``step``."""
    state0 = tuple(s.clone().requires_grad_(True) for s in state0) if isinstance(state0, tuple) else \
        state0.clone().requires_grad_(True)  # every h_t then carries a graph, whatever the weights
    hs, states = [], [state0]
    state = state0
    for t in range(x.shape[0]):
        state = step(x[t], state)
        h = state[0] if isinstance(state, tuple) else state
        h.retain_grad()
        hs.append(h)
        states.append(tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach())
    loss_of_h(torch.stack(hs)).backward()
    norms = torch.stack([h.grad.norm(dim=-1) for h in hs])  # (T, B)
    gm = torch.exp(torch.log(norms).mean(1)).numpy()
    tup = isinstance(state0, tuple)
    k = len(state0) if tup else 1
    hh, full = {}, {}
    for lag in lags:
        t0 = x.shape[0] - 1 - lag  # state_{t0} -> state_{T-1}
        a, b = [], []
        for s in range(x.shape[1]):
            def composed(flat, s=s):
                st = tuple(flat[None, i * H:(i + 1) * H] for i in range(k)) if tup else flat[None]
                for t in range(t0 + 1, x.shape[0]):
                    st = step(x[t, s:s + 1], st)
                return torch.cat(st, -1)[0] if tup else st[0]
            start = torch.cat([v[s] for v in states[t0 + 1]]) if tup else states[t0 + 1][s]
            J = torch.autograd.functional.jacobian(composed, start)  # (S, S)
            a.append(math.log10(torch.linalg.svdvals(J[:H, :H])[0]))
            b.append(math.log10(torch.linalg.svdvals(J)[0]))
        hh[lag], full[lag] = np.mean(a), np.mean(b)
    return gm, hh, full


class LoopedLSTMCell(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = nn.LSTMCell(I, H)
        self.head = nn.Linear(H, 3)

    def forward(self, x, state):
        outs = []
        for t in range(x.shape[0]):
            state = self.cell(x[t], state)
            outs.append(self.head(state[0]))
        return torch.stack(outs)


def test_model_looping_over_lstmcell_equals_float64_autograd(single_thread):
    torch.manual_seed(5)
    model = LoopedLSTMCell()
    x, h0, c0, ids = _data(6)
    r = analyze(model, x, h0=(h0, c0), readout="head", targets=ids, **F64)
    assert r.config.cell == "lstm" and "LSTMCell 'cell'" in " ".join(r.notes)
    ref = LoopedLSTMCell().double()
    ref.load_state_dict(model.state_dict())
    gm, hh, full = reference(lambda xt, s: ref.cell(xt, s), x, (h0, c0),
                             lambda hs: F.cross_entropy(ref.head(hs).reshape(-1, 3), ids.reshape(-1)))
    _close(r.grad.grad_norm, gm, what="grad_norm")
    for lag in hh:
        _close(r.jac.spectral_norm[lag], hh[lag], what=f"sigma_max h->h lag {lag}")
        _close(r.jac.state_spectral_norm[lag], full[lag], what=f"sigma_max state lag {lag}")
    # the model was only read: its parameters are float32 and unchanged
    assert all(p.dtype == torch.float32 and p.grad is None for p in model.parameters())


def _probe_loss(seed=0):
    u = random_readout(H, seed + 1, torch.float64)
    return lambda hs: (hs[-1] @ u).sum()


@pytest.mark.parametrize("which", ["lnlstm", "mingru"])
def test_published_cells_equal_float64_autograd(which, single_thread):
    torch.manual_seed(7)
    x, h0, c0, ids = _data(8)
    if which == "lnlstm":
        cell = LayerNormLSTMCell(I, H)
        with torch.no_grad():
            cell.weight_ih.mul_(0.5), cell.weight_hh.mul_(0.5)
        step, state0 = LNLSTMStep(cell), (h0, c0)
    else:  # minGRU keeps the width: inputs of size H
        x = torch.randn(T, B, H, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
        step, state0 = MinGRUStep(minGRU(H)), h0
    r = analyze(step, x, h0=state0, **F64)  # the random probe u . h_{T-1}: the exact chain
    ref_step = type(step)(type(step.cell)(*((I, H) if which == "lnlstm" else (H,)))).double()
    ref_step.load_state_dict(step.state_dict())
    gm, hh, full = reference(ref_step, x, state0, _probe_loss())
    _close(r.grad.grad_norm, gm, 1e-11, what="grad_norm")
    for lag in hh:
        _close(r.jac.spectral_norm[lag], hh[lag], 1e-11, what=f"sigma_max h->h lag {lag}")
        if which == "lnlstm":
            _close(r.jac.state_spectral_norm[lag], full[lag], 1e-11, what=f"sigma_max state lag {lag}")
    # a loss at every step through a readout: the backprop route
    head = nn.Linear(H, 3).double()
    r2 = analyze(step, x, h0=state0, readout=head, targets=ids, **F64)
    gm2, _, _ = reference(ref_step, x, state0, lambda hs: F.cross_entropy(head(hs).reshape(-1, 3), ids.reshape(-1)),
                          lags=())
    _close(r2.grad.grad_norm, gm2, 1e-11, what="grad_norm (readout)")
    assert all(p.dtype == torch.float32 for p in step.parameters())  # the user's module is never cast


class OldStyleClip(torch.autograd.Function):
    """clamp(a, -2, 2) as an autograd.Function without setup_context: torch.func's transforms refuse it."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return a.clamp(-2, 2)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return g * (a.abs() < 2).to(g.dtype)


@pytest.mark.parametrize("which", ["item", "function"])
def test_steps_vmap_cannot_run_equal_float64_autograd(which, single_thread):
    """float() of a tensor (vmap cannot run the step's forward, its vjp is fine) and an old-style autograd.Function
    (torch.func refuses it: the Jacobians are formed by S backward passes, the products dense)."""
    p = _W(15)
    if which == "item":
        def step(x, h, W, U):
            scale = 1.0 if float(x[..., 0].sum()) > -1e9 else 0.0  # a Python number from a tensor
            return scale * torch.tanh(x @ W + h @ U)
    else:
        def step(x, h, W, U):
            return torch.tanh(OldStyleClip.apply(x @ W + h @ U))
    x, h0, _, _ = _data(16)
    r = analyze(step, x, h0=h0, params=p, **F64)
    gm, hh, _ = reference(functools.partial(lambda x, h, W, U: step(x, h, W, U), W=p["W"], U=p["U"]), x, h0,
                          _probe_loss(), lags=(1, 4))
    _close(r.grad.grad_norm, gm, what="grad_norm")
    for lag in hh:
        _close(r.jac.spectral_norm[lag], hh[lag], what=f"sigma_max lag {lag}")
    assert "autograd" in " ".join(r.notes)
    assert r.jac.method.startswith("per-step Jacobians" if which == "function" else "torch.func")


# ---- bad input: one line naming what is wrong ---------------------------------------------------------------
def _W(seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(W=torch.randn(I, H, generator=g, dtype=torch.float64) / 2,
                U=torch.randn(H, H, generator=g, dtype=torch.float64) / 3)


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


def _h0(width=H):
    return torch.zeros(B, width, dtype=torch.float64)


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


class ScaledGRU(nn.Module):
    """A step built around an nn.GRUCell that is not a GRU: h' = 0.9 GRUCell(x, h)."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRUCell(I, H)

    def forward(self, x, h):
        return 0.9 * self.gru(x, h)


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
