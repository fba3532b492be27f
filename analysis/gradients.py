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

from .cell_grads import log10_total_cell, total_cell_grads
from .tasks import TaskBatch


def step_losses(batch: TaskBatch, y: Tensor, *, last_only: bool = False) -> Tensor:
    """The task's loss at every step, (T, B), from readout outputs y (T, B, O); ``last_only``: y is the last
    step's output alone (1, B, O) and per-step targets are taken at the last step."""
    spec, tg = batch.spec, batch.targets
    T, B, O = y.shape
    if last_only and tg is not None and tg.dim() == 2:
        tg = tg[-1:]  # (1, B)
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
    cell_grad_norm: np.ndarray | None  # (T,) ||dL/dc_t|| total (LSTM; see analysis.cell_grads)
    loss: float  # mean probe loss
    nonfinite: dict | None
    last_state_grad: Tensor | None = None  # (B, S) dL/dstate_{T-1} of the analysed layer's forward direction
    log10_grad_norm: np.ndarray | None = None  # (T,) exact log10 of grad_norm (see log_grad_norm_chain)
    method: str = "backprop"
    underflow_t: int | None = None  # grad_norm is NaN for t <= this: below float's safe range, no exact chain
    top_last_grad: Tensor | None = None  # (B, H) dL/dh_{T-1} of the top layer's forward direction
    state_grads: Tensor | None = None  # (T, B, S) dL/dstate_t of the analysed layer's forward direction (dropped after use)
    cell_carry_grad_norm: np.ndarray | None = None  # (T,) the carry path of dL/dc_t alone (LSTM; 0 at T-1)
    log10_grad_norm_band: np.ndarray | None = None  # (2, T) exact log10 of grad_norm_band (log10_quantiles)


def _finite_rows(x: Tensor) -> Tensor:
    """(T,) bool: every value of x[t] (T, ...) is finite. A row's sum is finite only if all its values are (a NaN
    or an inf anywhere makes it NaN or inf), so the sums decide unless one is not finite (NaN, inf, or an overflow
    of the sum itself): then the values are tested one by one."""
    ok = torch.isfinite(x.flatten(1).sum(1))
    return ok if bool(ok.all()) else torch.isfinite(x).flatten(1).all(1)


def _first_nonfinite_forward(trace: Trace) -> dict | None:
    """Where the forward pass first overflowed (layer, direction, time step), or None; one sync per run."""
    for l, runs in enumerate(trace.runs):
        for d, run in enumerate(runs):
            finite = torch.stack([_finite_rows(run.state_series(i))
                                  for i in range(len(run.states[0]))]).all(0)  # (T,) processing order
            if not bool(finite.all()):
                s = int((~finite).nonzero()[0])
                t = len(run.xp) - 1 - s if run.reverse else s
                return {"quantity": "hidden_state", "layer": l, "direction": d, "timestep": t}
    return None


def gradient_norms(trace: Trace, probe: Tensor, analysed_layer: int, *, retain_graph: bool = False) -> GradientResult:
    """dL/dh_t norms from a trace run with ``views=True`` and its per-sequence probe loss (B,).

    The h of every layer and direction is differentiated, and the analysed layer's forward direction's other
    states too (the LSTM's c: ``state_grads`` is then dL/d[h; c]); a cell with a memory cell c that feeds h_t
    (``cell.c_index``, with ``h_of_c``) also gets ||dL/dc_t|| total and its carry part (analysis.cell_grads)."""
    runs = trace.runs
    L, D = len(runs), len(runs[0])
    cell0 = runs[analysed_layer][0].cell
    n_extra = len(cell0.state_names) - 1  # states beyond h, differentiated for the analysed layer
    ci = cell0.c_index
    wrt = []
    for layer in runs:
        for run in layer:
            wrt += [s[0] for s in run.states[1:]]
    for i in range(1, n_extra + 1):
        wrt += [s[i] for s in runs[analysed_layer][0].states[1:]]
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
    extra = [grads[L * D * T + (i - 1) * T: L * D * T + i * T] for i in range(1, n_extra + 1)]  # per state, T each
    cell = carry = None
    if ci is not None:  # the views give the carry path; the total adds the path through h_t (analysis.cell_grads)
        g_c = torch.stack(extra[ci - 1])  # (T, B, H)
        total = total_cell_grads(runs[a][0], torch.stack(grads[a * D * T: a * D * T + T]), g_c)
        carry = geometric_mean(torch.linalg.vector_norm(g_c.double(), dim=-1), -1).numpy()
        cell = geometric_mean(torch.linalg.vector_norm(total.double(), dim=-1), -1).numpy()
    nonfinite = _first_nonfinite_forward(trace)
    if nonfinite is None and not bool(torch.isfinite(probe).all()):
        nonfinite = {"quantity": "loss", "sequence": int((~torch.isfinite(probe)).nonzero()[0])}
    if nonfinite is None and not bool(finite.all()):
        bad_t = (~finite).any(1).nonzero().flatten()
        t = int(bad_t.max())  # backprop runs from T-1 down: the largest bad t is where it first appeared
        nonfinite = {"quantity": "grad_norm", "layer": a, "timestep": t,
                     "sequence": int((~finite[t]).nonzero()[0])}
    # dL/dstate_{T-1}, forward direction of the analysed layer: [dL/dh_{T-1}, dL/dc_{T-1}, ...]
    last = [grads[(a * D) * T + T - 1]] + [e[T - 1] for e in extra]
    h_g = torch.stack(grads[a * D * T: a * D * T + T])  # (T, B, H)
    state_grads = torch.cat([h_g] + [torch.stack(e) for e in extra], -1) if extra else h_g  # (T, B, S)
    return GradientResult(
        state_grads=state_grads.detach(),
        top_last_grad=grads[((L - 1) * D) * T + T - 1].detach(),
        last_state_grad=torch.cat(last, -1).detach(),
        grad_norm=geometric_mean(norms, -1).numpy(),
        grad_norm_band=band.numpy(),
        per_layer=geometric_mean(layer_norms, -1).numpy(),
        per_direction=geometric_mean(sq[a].sqrt(), -1).numpy(),
        cell_grad_norm=cell,
        cell_carry_grad_norm=carry,
        loss=float(probe.detach().double().mean()),
        nonfinite=nonfinite,
    )


def _underflow_floor(dtype: torch.dtype) -> float:
    """Norms above this are far from float underflow: tiny / eps^2 (float32 ~8e-25, float64 ~4e-277)."""
    fi = torch.finfo(dtype)
    return fi.tiny / fi.eps ** 2


@torch.no_grad()
def log_grad_norm_chain(run, v_last: Tensor, state_grads: Tensor | None = None, *,
                        cell_logs: bool = False, progress=None) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    r"""log10 ||dL/dh_t|| for every t and sequence, (T, B), for a loss on the last step only.

    Such a loss reaches state_t only through state_{t+1}, so dL/dstate_{t-1} = dL/dstate_t J_t exactly, a
    vector-Jacobian product per step (O(B S^2), as backprop). The row vector is renormalized after every step
    and its log norm accumulated, so the values stay exact where float32 (or float64) backpropagation
    underflows to 0 (below ~1e-38 / 1e-308).

    state_grads  optional (T, B, S) backprop's dL/dstate_t: where every sequence's norm is above
                 ``_underflow_floor`` those values are exact to float rounding and used as they are; the chain
                 starts from the last step whose norms are all safe and runs down from there (no extra cost
                 when nothing underflows). Without it the chain runs from v_last (B, S) at t = T-1.
    cell_logs    also return log10 ||dL/dc_t|| (T, B) twice, (h, carry, total): the carry path alone (the memory
                 cell's part of the state) and the total (carry + the path through h_t, analysis.cell_grads);
                 cells with a memory cell only (``cell.c_index``, the LSTM), requires no state_grads
    progress     optional ``progress(fraction, what)``, called after each chunk of steps (may raise Cancelled)
    """
    if cell_logs and state_grads is not None:
        raise ValueError("cell_logs needs the chain from the last step: pass no state_grads")
    if cell_logs and run.cell.c_index is None:
        raise ValueError(f"cell_logs needs a cell with a memory cell c; {run.cell.label} has none")
    T = len(run.xp)
    H = run.cell.hidden_size
    cs = run.cell.state_blocks(H).get("cc")  # the memory cell's part of the state (cell_logs)
    dtype = run.xp[0].dtype
    out = torch.empty(T, B := v_last.shape[0], dtype=torch.float64)
    out_c = torch.empty(T, B, dtype=torch.float64) if cell_logs else None
    out_ct = torch.empty(T, B, dtype=torch.float64) if cell_logs else None
    start = T - 1
    if state_grads is not None:
        sg = state_grads.double()
        norms = torch.linalg.vector_norm(sg, dim=-1)  # (T, B) full state
        out[:] = torch.log10(torch.linalg.vector_norm(sg[..., :H], dim=-1))
        unsafe = ~(norms > _underflow_floor(dtype)).all(1)  # (T,) some sequence near underflow (or 0, NaN)
        if not bool(unsafe.any()):
            return out
        start = int(unsafe.nonzero().max()) + 1  # every t >= start is safe
        if start > T - 1:
            start = T - 1
        v = state_grads[start].to(dtype)
    else:
        v = v_last.to(dtype)
    n = torch.linalg.vector_norm(v.double(), dim=-1)
    n = torch.where(n > 0, n, torch.ones_like(n))
    v = v / n.to(dtype).unsqueeze(-1)
    log_scale = torch.log10(n)  # (B,)
    out[start] = torch.log10(torch.linalg.vector_norm(v[:, :H].double(), dim=-1)) + log_scale
    if out_c is not None:
        out_c[start] = torch.log10(torch.linalg.vector_norm(v[:, cs].double(), dim=-1)) + log_scale
    from .jacobians import _stack_states

    idx = torch.arange(B)
    tiny = torch.finfo(dtype).tiny
    t_hi = start
    while t_hi >= 1:
        # steps t_lo..t_hi at once: their coefficients in one batched pass, then one GEMM per step; the norms
        # and logs of the chunk's vectors are taken together at the end (one batched call, not one per step)
        t_lo = max(1, t_hi - _VJP_CHUNK + 1)
        xp, st = _stack_states(run, t_lo, t_hi + 1, idx)  # (C, B, G), states before each step
        steps = run.cell.vjp_steps(xp, st)  # steps(c, v) = v J_{t_lo+c}
        C = t_hi - t_lo + 1
        v_in, scale_in = v, log_scale  # dL/dstate_{t_hi} and its scale (for the total cell gradient)
        vs = torch.empty(C, B, v.shape[-1], dtype=dtype)  # vs[c] = dL/dstate_{t_lo+c-1}, renormalized
        ns = torch.empty(C, B, 1, dtype=dtype)  # the norm taken out at that step
        for c in range(C - 1, -1, -1):
            u = steps(c, v)  # dL/dstate_{t-1} = dL/dstate_t J_t  (B, S), t = t_lo + c
            # ||u|| is O(||J||) (v has norm 1): no underflow in the norm itself; an exactly 0 gradient stays 0
            # (0 / tiny = 0, and its log is -inf below)
            torch.linalg.vector_norm(u, dim=-1, keepdim=True, out=ns[c]).clamp_min_(tiny)
            v = torch.div(u, ns[c], out=vs[c])
        # log scale after step c = log_scale + sum_{c' >= c} log10 n_c'  (the chunk runs from c = C-1 down)
        cum = torch.log10(ns[..., 0].double()).flip(0).cumsum(0).flip(0) + log_scale  # (C, B)
        out[t_lo - 1: t_hi] = torch.log10(torch.linalg.vector_norm(vs[..., :H].double(), dim=-1)) + cum
        if out_c is not None:
            out_c[t_lo - 1: t_hi] = torch.log10(torch.linalg.vector_norm(vs[..., cs].double(), dim=-1)) + cum
            # times t_lo..t_hi: vs[1:] and v_in, with their scales
            out_ct[t_lo: t_hi + 1] = log10_total_cell(run, t_lo, t_hi + 1, torch.cat([vs[1:], v_in[None]]),
                                                      torch.cat([cum[1:], scale_in[None]]))
        log_scale = cum[0]
        t_hi = t_lo - 1
        if progress is not None:
            progress((start - t_hi) / max(1, start), f"||dL/dh_t|| back through time, t = {t_hi + 1}")
    if out_ct is not None:  # time 0 (the loop stops at its vector)
        out_ct[:1] = log10_total_cell(run, 0, 1, v[None], log_scale[None])
    return (out, out_c, out_ct) if cell_logs else out


_VJP_CHUNK = 64  # steps whose coefficients are computed together


def _vjp_layer_step(cell, h_below: Tensor | None, xp_t: Tensor, state: tuple, g: Tensor):
    """One step of a stacked layer: state_t = step(project(h_below_t), state_{t-1}) (or the stored projection for
    the bottom of the chain); returns (g J_state (B, S), g d state_t/d h_below_t (B, H_below) or None)."""
    H = cell.hidden_size
    with torch.enable_grad():
        s = tuple(x.detach().requires_grad_(True) for x in state)
        if h_below is None:
            out = cell.step(xp_t.detach(), s)
            ins = s
        else:
            hb = h_below.detach().requires_grad_(True)
            out = cell.step(cell.project(hb), s)
            ins = s + (hb,)
        cot = tuple(g[:, i * H:(i + 1) * H] for i in range(len(out)))
        gr = torch.autograd.grad(out, ins, grad_outputs=cot)
    return torch.cat(gr[:len(s)], -1), (gr[-1] if h_below is not None else None)


@torch.no_grad()
def log_grad_norm_chain_stacked(runs: list, v_last: Tensor) -> Tensor:
    r"""log10 ||dL/dh^a_t|| (T, B) for the bottom layer a of a unidirectional stack ``runs`` = [run_a, ...,
    run_{L-1}] (forward direction), for a loss on the top layer's last step, exact in log space.

    At time t the loss reaches layer l's state only through state^l_{t+1} (u^l_t) and, for l < L-1, through
    layer l+1's input at t. Top-down at each t:  g^{L-1}_t = u^{L-1}_t,  g^l_t = u^l_t + g^{l+1}_t d state^{l+1}_t/d h^l_t,
    then u^l_{t-1} = g^l_t J^l_t. The joint vector (u^a, ..., u^{L-1}) is linear in v_last, so it is renormalized
    by one factor per sequence after every step and the log scale accumulated (vector-Jacobian products only).
    """
    T = len(runs[0].xp)
    dtype = runs[0].xp[0].dtype
    Ha = runs[0].cell.hidden_size
    B = v_last.shape[0]
    u = [torch.zeros(B, len(r.states[0]) * r.cell.hidden_size, dtype=dtype) for r in runs]  # per layer (B, S_l)
    u[-1] = v_last.to(dtype)
    log_scale = torch.zeros(B, dtype=torch.float64)
    out = torch.empty(T, B, dtype=torch.float64)
    for t in range(T - 1, -1, -1):
        g_in = None
        prev = [None] * len(runs)
        for l in range(len(runs) - 1, -1, -1):
            r = runs[l]
            g = u[l] if g_in is None else torch.cat([u[l][:, :r.cell.hidden_size] + g_in, u[l][:, r.cell.hidden_size:]], -1)
            if l == 0:
                out[t] = torch.log10(torch.linalg.vector_norm(g[:, :Ha].double(), dim=-1)) + log_scale
                if t > 0:
                    prev[0], _ = _vjp_layer_step(r.cell, None, r.xp[t], r.states[t], g)
            else:
                h_below = runs[l - 1].states[t + 1][0]  # h^{l-1}_t
                p, g_in = _vjp_layer_step(r.cell, h_below, r.xp[t], r.states[t], g)
                prev[l] = p if t > 0 else None
        if t == 0:
            break
        n = torch.sqrt(sum(torch.linalg.vector_norm(p.double(), dim=-1) ** 2 for p in prev))  # (B,)
        n = torch.where(n > 0, n, torch.ones_like(n))
        u = [p / n.to(dtype).unsqueeze(-1) for p in prev]
        log_scale = log_scale + torch.log10(n)
    return out
