r"""Per-timestep gradient norms ||dL/dh_t|| for every t, every layer and direction, in ONE backward pass.

The network is run with ``views=True``: each step receives a fresh view of its state and that view is recorded,
so ``torch.autograd.grad(L, [h_0, ..., h_{T-1}])`` returns the total gradient dL/dh_t through every later path
(for the LSTM, the gradient of h_t alone; c_t gets its own).

The probe loss of a sequence is, by ``loss_steps``:
    last   l_{T-1}             (the final step's loss: pure propagation back through time)
    all    sum_t l_t           (a loss at every step, summed)
where l_t is the task's loss at step t (for last-step tasks, the final target predicted from step t's output).
Sequences are independent, so differentiating the SUM over the batch gives each sequence its own gradient;
``grad_norm`` is the geometric mean over the batch (the mean of logs), with a 10-90% band.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rnn_models.network import Trace

from .tasks import TaskBatch


def step_losses(batch: TaskBatch, y: Tensor) -> Tensor:
    """The task's loss at every step, (T, B), from readout outputs y (T, B, O)."""
    spec, tg = batch.spec, batch.targets
    T, B, O = y.shape
    if spec.kind == "probe":
        return y[..., 0]  # l_t = u . h_t
    if spec.name == "adding":
        return (y[..., 0] - tg.to(y.dtype).unsqueeze(0)) ** 2  # (T, B)
    if tg.dim() == 1:  # one class per sequence (temporal order): predicted at every step
        tg = tg.unsqueeze(0).expand(T, B)
    return F.cross_entropy(y.reshape(T * B, O), tg.reshape(T * B), reduction="none").view(T, B)


def probe_loss(batch: TaskBatch, y: Tensor, loss_steps: str) -> Tensor:
    """Per-sequence probe loss (B,): the final step's loss, or the sum over steps."""
    l = step_losses(batch, y)
    return l[-1] if loss_steps == "last" else l.sum(0)


def geometric_mean(x: Tensor, dim: int = -1) -> Tensor:
    """exp(mean(log x)) along dim; 0 if any entry is 0, NaN if any is non-finite."""
    return torch.exp(torch.log(x.double()).mean(dim))


@dataclass
class GradientResult:
    grad_norm: np.ndarray  # (T,) ||dL/dh_t|| of the analysed layer's output, geometric mean over the batch
    grad_norm_band: np.ndarray  # (2, T) 10th and 90th percentile over the batch
    per_layer: np.ndarray  # (L, T) the same for every layer (bidirectional: the layer's [h_fwd; h_bwd])
    per_direction: np.ndarray  # (D, T) analysed layer, each direction's h alone
    cell_grad_norm: np.ndarray | None  # (T,) ||dL/dc_t|| (LSTM)
    loss: float  # mean probe loss
    nonfinite: dict | None
    last_state_grad: Tensor | None = None  # (B, S) dL/dstate_{T-1} of the analysed layer's forward direction
    log10_grad_norm: np.ndarray | None = None  # (T,) exact log10 of grad_norm (see log_grad_norm_chain)
    method: str = "backprop"


def _first_nonfinite_forward(trace: Trace) -> dict | None:
    """Where the forward pass first overflowed (layer, direction, time step), or None; one sync per run."""
    for l, runs in enumerate(trace.runs):
        for d, run in enumerate(runs):
            finite = torch.stack([torch.isfinite(torch.stack(st, 0)).flatten(1).all(1).all()
                                  for st in run.states[1:]])  # (T,) processing order
            if not bool(finite.all()):
                s = int((~finite).nonzero()[0])
                t = len(run.xp) - 1 - s if run.reverse else s
                return {"quantity": "hidden_state", "layer": l, "direction": d, "timestep": t}
    return None


def gradient_norms(trace: Trace, probe: Tensor, analysed_layer: int, *, retain_graph: bool = False) -> GradientResult:
    """dL/dh_t norms from a trace run with ``views=True`` and its per-sequence probe loss (B,)."""
    runs = trace.runs
    L, D = len(runs), len(runs[0])
    is_lstm = len(runs[0][0].states[0]) == 2
    wrt = []
    for layer in runs:
        for run in layer:
            wrt += [s[0] for s in run.states[1:]]
    if is_lstm:
        wrt += [s[1] for s in runs[analysed_layer][0].states[1:]]
    grads = torch.autograd.grad(probe.sum(), wrt, retain_graph=retain_graph, allow_unused=True)
    grads = [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt)]
    T = len(runs[0][0].xp)
    # squared norms per (layer, direction, t, b), in time order
    sq = torch.stack([(g.double() ** 2).sum(-1) for g in grads[: L * D * T]]).view(L, D, T, -1)  # (L, D, T, B)
    for l in range(L):
        for d in range(D):
            if runs[l][d].reverse:
                sq[l, d] = sq[l, d].flip(0)
    layer_norms = sq.sum(1).sqrt()  # (L, T, B): ||dL/d[h_fwd; h_bwd]||
    a = analysed_layer
    norms = layer_norms[a]  # (T, B)
    finite = torch.isfinite(norms)
    band = torch.quantile(norms.nan_to_num(posinf=math.inf), torch.tensor([0.1, 0.9], dtype=norms.dtype), dim=1)
    cell = None
    if is_lstm:
        cell = geometric_mean(torch.stack([(g.double() ** 2).sum(-1).sqrt() for g in grads[L * D * T:]]), -1).numpy()
    nonfinite = _first_nonfinite_forward(trace)
    if nonfinite is None and not bool(torch.isfinite(probe).all()):
        nonfinite = {"quantity": "loss", "sequence": int((~torch.isfinite(probe)).nonzero()[0])}
    if nonfinite is None and not bool(finite.all()):
        bad_t = (~finite).any(1).nonzero().flatten()
        t = int(bad_t.max())  # backprop runs from T-1 down: the largest bad t is where it first appeared
        nonfinite = {"quantity": "grad_norm", "layer": a, "timestep": t,
                     "sequence": int((~finite[t]).nonzero()[0])}
    last = [grads[(a * D) * T + T - 1]]  # dL/dh_{T-1}, forward direction of the analysed layer
    if is_lstm:
        last.append(grads[L * D * T + T - 1])  # dL/dc_{T-1}
    return GradientResult(
        last_state_grad=torch.cat(last, -1).detach(),
        grad_norm=geometric_mean(norms, -1).numpy(),
        grad_norm_band=band.numpy(),
        per_layer=geometric_mean(layer_norms, -1).numpy(),
        per_direction=geometric_mean(sq[a].sqrt(), -1).numpy(),
        cell_grad_norm=cell,
        loss=float(probe.detach().double().mean()),
        nonfinite=nonfinite,
    )


@torch.no_grad()
def log_grad_norm_chain(run, v_last: Tensor) -> Tensor:
    r"""log10 ||dL/dh_t|| for every t and sequence, (T, B), for a loss on the last step only.

    Such a loss reaches state_t only through state_{t+1}, so dL/dstate_{t-1} = dL/dstate_t J_t exactly. The
    row vector is renormalized after every step and its log norm accumulated, so the values stay exact where
    float32 (or float64) backpropagation underflows to 0 (below ~1e-38 / 1e-308).
    """
    from .jacobians import _ChunkSteps, _stack_states

    T = len(run.xp)
    B = v_last.shape[0]
    H = run.cell.hidden_size
    idx = torch.arange(B)
    v = v_last.unsqueeze(1).to(run.xp[0].dtype)  # (B, 1, S)
    log_scale = torch.zeros(B, dtype=torch.float64)
    out = torch.empty(T, B, dtype=torch.float64)
    out[T - 1] = torch.log10(torch.linalg.vector_norm(v[:, 0, :H].double(), dim=-1))
    S = v.shape[-1]
    chunk = max(1, min(64, (64 * 2**20) // max(1, B * S * S * v.element_size())))
    t_hi = T - 1
    while t_hi >= 1:
        t_lo = max(1, t_hi - chunk + 1)
        steps = _ChunkSteps(run.cell, *_stack_states(run, t_lo, t_hi + 1, idx))
        for c in range(len(steps) - 1, -1, -1):
            t = t_lo + c
            v = steps.right(c, v)  # dL/dstate_{t-1} = dL/dstate_t J_t
            n = torch.linalg.vector_norm(v.double(), dim=(-2, -1))  # (B,)
            n = torch.where(n > 0, n, torch.ones_like(n))
            v = v / n.to(v.dtype).view(B, 1, 1)
            log_scale = log_scale + torch.log10(n)
            out[t - 1] = torch.log10(torch.linalg.vector_norm(v[:, 0, :H].double(), dim=-1)) + log_scale
        t_hi = t_lo - 1
    return out
