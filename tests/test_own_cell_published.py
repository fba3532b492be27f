"""analyze(step, ...) against float64 autograd on an independent loop: a model looping over nn.LSTMCell (mapped to
the built-in LSTM), two published cells (tests/thirdparty_cells.py), and steps vmap cannot run (a Python scalar
read, an old-style autograd.Function): ||dL/dh_t|| by retain_grad on the loop's states, the Jacobian products by
torch.autograd.functional.jacobian of the composed steps."""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis import analyze
from own_cell_refs import B, F64, H, I, T  # noqa: F401
from own_cell_refs import close as _close, data as _data, probe_loss as _probe_loss, reference, weights as _W
from thirdparty_cells import LayerNormLSTMCell, LNLSTMStep, MinGRUStep, minGRU


# ---- a model looping over nn.LSTMCell, and published cells, against float64 autograd --------------------------
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
