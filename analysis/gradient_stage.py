r"""The gradient stage of an analysis: ||dL/dh_t|| for every t (and the truncated-BPTT comparison).

Two routes, the same numbers (to float rounding):

    chain only   a loss on the last step of a one-layer, one-direction network with the task's own loss:
                 a no-grad forward pass, dL/dstate_{T-1} from the readout alone, then the renormalized
                 vector-Jacobian chain  dL/dstate_{t-1} = dL/dstate_t J_t  down to t = 0
                 (``gradients.log_grad_norm_chain``): one backward's worth of GEMMs, exact in log space at
                 every t, no autograd graph kept; ||dL/dc_t|| (LSTM) comes from the same vectors. A cell whose
                 J_t is one fixed diag(m) (the LRU's lambda, ``cell.fixed_multipliers``) gets
                 ||dL/dh_{T-1} J^(T-1-t)|| in closed form instead (``analysis.diagonal_chain``, ``FIXED_METHOD``);
                 one whose J_t = diag(m_t) changes with the input (RG-LRU, minGRU, minLSTM) gets it per unit from
                 the running sums of log|m_t| (``DIAGONAL_METHOD``); with a loss at every step a diagonal cell
                 (one layer, one direction) takes the reverse scan dL/dh_{t-1} = m_t dL/dh_t + dl_{t-1}/dh_{t-1}
                 with the direct terms from the readout (``SCAN_METHOD``)
    backprop     every other case: one ``torch.autograd.grad`` over the views of every state
                 (``gradients.gradient_norms``), then the exact chain below where float backprop nears
                 underflow (``_exact_log_grad_norms``)

The chain-only route falls back to backprop (recomputing) where the forward pass or the loss is not finite, or
where float backprop would overflow, so those are reported where and when as before.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from rnn_models.cells import cell_type
from rnn_models.network import Run

from .config import ExperimentConfig
from .diagonal_chain import fixed_multiplier_log_grad_norms, multiplier_chain_log_norms, multiplier_log_grad_norms
from .gradients import (GradientResult, _first_nonfinite_forward, _underflow_floor, gradient_norms,
                        log_grad_norm_chain, log_grad_norm_chain_stacked, probe_loss, step_losses)
from .tasks import TaskBatch

DTYPES = {"float32": torch.float32, "float64": torch.float64}
CHAIN_METHOD = ("log10 exact: the renormalized chain dL/dstate_{t-1} = dL/dstate_t J_t from the last step "
                "(vector-Jacobian products, no backprop)")
FIXED_METHOD = ("log10 exact: ||dL/dh_{T-1} J^(T-1-t)|| in closed form from the fixed per-step Jacobian diag(m) "
                "(sums of powers of |m|, no backprop)")
DIAGONAL_METHOD = ("log10 exact: ||dL/dh_t|| per unit from dL/dh_{T-1} and the running sums of log|m_s| of the "
                   "diagonal per-step Jacobians diag(m_s), s > t (no backprop)")
SCAN_METHOD = ("log10 exact: the reverse scan dL/dh_{t-1} = m_t dL/dh_t + dl_{t-1}/dh_{t-1} of the diagonal per-step "
               "Jacobians diag(m_t), rescaled in log space (no backprop)")


BAND_QUANTILES = (0.1, 0.9)  # the band of ||dL/dh_t|| over the batch: its 10th and 90th percentiles


def log10_quantiles(logs: torch.Tensor, qs=BAND_QUANTILES) -> np.ndarray:
    """(len(qs), T) log10 of ``torch.quantile(10^logs, q, dim=1)`` from logs (T, B) = log10 ||dL/dh_t|| per sequence,
    exact where 10^logs is below the float's range.

    torch.quantile's linear interpolation, in log space: at position p = q (B - 1) of the sorted values, between
    a = x_(lo) <= b = x_(lo+1) with weight w = p - lo on b,
        log10((1 - w) 10^a + w 10^b) = b + log10((1 - w) 10^(a - b) + w)      (a - b <= 0: no overflow)
    (an exact zero, log10 = -inf, stays -inf when both neighbours are)."""
    s, _ = torch.sort(logs.double(), dim=1)  # (T, B) ascending
    B = s.shape[1]
    out = []
    for q in qs:
        p = q * (B - 1)
        lo = min(int(math.floor(p)), B - 1)
        hi, w = min(lo + 1, B - 1), p - lo
        a, b = s[:, lo], s[:, hi]  # (T,)
        if w == 0 or hi == lo:
            out.append(a)
            continue
        # b + log10((1 - w) 10^(a - b) + w); a = b = -inf -> -inf
        diff = torch.where(torch.isfinite(b), a - b, torch.zeros_like(b))
        out.append(torch.where(torch.isfinite(b), b + torch.log10((1 - w) * torch.pow(10.0, diff) + w), b))
    return torch.stack(out).numpy()


def gradient_stage(config: ExperimentConfig, batch: TaskBatch, model, *, loss_fn=None, initial=None,
                   loss_steps: str = "last", progress=None):
    """(trace, grad, truncated, underflow_note) for ``analyse_model``; trace is the forward pass (its states
    carry a graph on the backprop route only). ``progress(fraction, what)`` is called along the chain (and may
    raise ``Cancelled``)."""
    if loss_fn is None and _chain_applies(config, loss_steps):
        got = chain_gradients(batch, model, initial, DTYPES[config.dtype], progress, loss_steps)
        if got is not None:
            return got[0], got[1], None, None
    loss_fn = loss_fn or (lambda y: probe_loss(batch, y, loss_steps))
    a = config.analysed_layer
    with torch.enable_grad():
        trace, y = model(batch.inputs, views=True, initial=initial)
        grad = gradient_norms(trace, loss_fn(y), a)
        truncated = None
        if config.truncate:
            # truncated BPTT: the same loss with the recurrent gradient cut every k steps
            tr_k, y_k = model(batch.inputs, views=True, initial=initial, detach_every=config.truncate)
            truncated = gradient_norms(tr_k, loss_fn(y_k), a)
    underflow_note = _exact_log_grad_norms(config, trace, grad, loss_steps, a)
    grad.state_grads = None
    if truncated is not None:
        truncated.state_grads = None
    if grad.log10_grad_norm is None:  # the log10 twin of every result (zeros -> -inf, no warning printed)
        with np.errstate(divide="ignore", invalid="ignore"):
            grad.log10_grad_norm = np.log10(np.asarray(grad.grad_norm, dtype=float))
    if grad.log10_grad_norm_band is None:
        with np.errstate(divide="ignore", invalid="ignore"):
            grad.log10_grad_norm_band = np.log10(np.asarray(grad.grad_norm_band, dtype=float))
    return trace, grad, truncated, underflow_note


def _chain_applies(config: ExperimentConfig, loss_steps: str) -> bool:
    one = config.num_layers == 1 and not config.bidirectional and not config.truncate
    # a loss at every step: the reverse scan of a diagonal cell (analysis.diagonal_chain.multiplier_chain_log_norms)
    return one and (loss_steps == "last" or (loss_steps == "all" and cell_type(config.cell).diagonal))


def chain_gradients(batch: TaskBatch, model, initial, dtype: torch.dtype, progress=None,
                    loss_steps: str = "last") -> tuple | None:
    """(trace, GradientResult) by the chain alone (see the module docstring), or None where backprop must run;
    ``loss_steps="all"``: a diagonal cell's reverse scan with the direct terms dl_t/dh_t (``_scan_gradients``)."""
    with torch.no_grad():
        trace, _ = model(batch.inputs, views=False, initial=initial)
    if _first_nonfinite_forward(trace) is not None:
        return None
    run = trace.runs[0][0]
    if loss_steps == "all":
        return _scan_gradients(batch, model, trace, dtype, progress)
    h_last = trace.outputs[-1].detach().requires_grad_(True)  # (B, H) h_{T-1}: the loss reads it alone
    with torch.enable_grad():
        y_last = model.readout(h_last).unsqueeze(0)  # (1, B, O)
        probe = step_losses(batch, y_last, last_only=True)[-1]  # (B,) l_{T-1}
        if not bool(torch.isfinite(probe).all()):
            return None
        (g,) = torch.autograd.grad(probe.sum(), h_last)  # dL/dh_{T-1} (B, H), through the readout alone
    v_last = torch.cat([g] + [torch.zeros_like(g)] * (len(run.states[0]) - 1), -1)  # (B, S): dL/dc_{T-1} = 0
    # (T, B) log10 ||dL/dh_t||, ||dL/dc_t||
    has_c = run.cell.c_index is not None  # a memory cell c_t (the LSTM's): its two gradients too
    if has_c:
        logs, logs_carry, logs_c = log_grad_norm_chain(run, v_last, cell_logs=True, progress=progress)
        method = CHAIN_METHOD
    else:  # a diagonal per-step Jacobian, fixed (the LRU's lambda) or per step: closed forms (analysis.diagonal_chain)
        logs, method = fixed_multiplier_log_grad_norms(run, v_last), FIXED_METHOD
        if logs is None:
            logs, method = multiplier_log_grad_norms(run, v_last, progress), DIAGONAL_METHOD
        if logs is None:
            logs, method = log_grad_norm_chain(run, v_last, progress=progress), CHAIN_METHOD
    res = _result(logs, method, dtype, probe, v_last, g, *((logs_carry, logs_c) if has_c else (None, None)))
    return None if res is None else (trace, res)


def _scan_gradients(batch: TaskBatch, model, trace, dtype: torch.dtype, progress=None) -> tuple | None:
    """A loss at every step of a one-layer diagonal network: dL/dh_t = m_{t+1} dL/dh_{t+1} + dl_t/dh_t, the direct
    terms from the readout at every step at once, the scan in log space (analysis.diagonal_chain)."""
    run = trace.runs[0][0]
    h = trace.outputs.detach().requires_grad_(True)  # (T, B, H) every h_t: each l_t reads its own
    with torch.enable_grad():
        probe = probe_loss(batch, model.readout(h), "all")  # (B,) sum_t l_t
        if not bool(torch.isfinite(probe).all()):
            return None
        (d,) = torch.autograd.grad(probe.sum(), h)  # (T, B, H) dl_t/dh_t, through the readout alone
    logs = multiplier_chain_log_norms(run, d, progress)
    if logs is None:  # a multiplier not finite: backprop says where
        return None
    res = _result(logs, SCAN_METHOD, dtype, probe, d[-1], d[-1])
    return None if res is None else (trace, res)


def _result(logs, method: str, dtype: torch.dtype, probe, v_last, g, logs_carry=None, logs_c=None):
    """The GradientResult of a chain route from log10 ||dL/dh_t|| (T, B) (and ||dL/dc_t||'s, a memory cell's), or
    None where it holds a NaN or a norm float backprop would overflow (the backprop route then says where)."""
    ok = torch.isfinite(logs) | (logs == -math.inf)
    if not bool(ok.all()) or float(logs.max()) > math.log10(torch.finfo(dtype).max) - 1:
        return None
    log_mean = logs.mean(1)  # (T,) log10 of the geometric mean over the batch
    with np.errstate(over="ignore", under="ignore"):
        grad_norm = np.power(10.0, log_mean.numpy())
        cell = np.power(10.0, logs_c.mean(1).numpy()) if logs_c is not None else None
        carry = np.power(10.0, logs_carry.mean(1).numpy()) if logs_carry is not None else None
    band = torch.quantile(torch.pow(10.0, logs), torch.tensor(BAND_QUANTILES, dtype=logs.dtype), dim=1)  # (2, T)
    return GradientResult(grad_norm=grad_norm, grad_norm_band=band.numpy(), per_layer=grad_norm[None].copy(),
                          per_direction=grad_norm[None].copy(), cell_grad_norm=cell, cell_carry_grad_norm=carry,
                          loss=float(probe.detach().double().mean()), nonfinite=None, last_state_grad=v_last.detach(),
                          log10_grad_norm=log_mean.numpy(), method=method, top_last_grad=g.detach(),
                          log10_grad_norm_band=log10_quantiles(logs))


def _exact_log_grad_norms(config: ExperimentConfig, trace, grad: GradientResult, loss_steps: str,
                          a: int) -> str | None:
    """Make ||dL/dh_t|| exact where float backprop underflows (sets grad.log10_grad_norm, and grad_norm / band
    from it); returns a note when it cannot (the values then are marked: NaN below the float's safe range).

    A final-step loss on a unidirectional stack: backprop where every sequence's norm is far above underflow,
    below that the renormalized vector-Jacobian chain (log_grad_norm_chain / _stacked), exact in log space.
    """
    dtype = DTYPES[config.dtype]
    chain_ok = loss_steps == "last" and not config.bidirectional and not config.truncate
    logs = None
    if chain_ok and a == config.num_layers - 1:
        logs = log_grad_norm_chain(_detached(trace.runs[a][0]), grad.last_state_grad, grad.state_grads)  # (T, B)
    elif chain_ok:
        safe = bool((torch.linalg.vector_norm(grad.state_grads.double(), dim=-1) > _underflow_floor(dtype)).all())
        if safe:
            logs = torch.log10(torch.linalg.vector_norm(grad.state_grads[..., :config.hidden_size].double(), dim=-1))
        else:
            top = trace.runs[-1][0]
            v_last = torch.cat([grad.top_last_grad] + [torch.zeros_like(grad.top_last_grad)] * (len(top.states[0]) - 1),
                               -1)  # (B, S): the loss reads h^{L-1}_{T-1} only, so dL/dc_{T-1} = 0
            logs = log_grad_norm_chain_stacked([_detached(trace.runs[l][0]) for l in range(a, config.num_layers)],
                                               v_last)
    if logs is not None:
        grad.log10_grad_norm = logs.mean(1).numpy()  # (T,) log10 of the geometric mean over the batch
        grad.grad_norm = np.power(10.0, grad.log10_grad_norm)
        grad.grad_norm_band = torch.quantile(torch.pow(10.0, logs), torch.tensor(BAND_QUANTILES, dtype=logs.dtype),
                                             dim=1).numpy()
        grad.log10_grad_norm_band = log10_quantiles(logs)
        grad.method = ("backprop; log10 exact: backprop where far from underflow, below that the renormalized chain "
                       "dL/dstate_{t-1} = dL/dstate_t J_t (vector-Jacobian products)")
        return None
    # not a single chain (losses at every step, bidirectional, truncated): mark what float cannot represent
    norms = torch.linalg.vector_norm(grad.state_grads[..., :config.hidden_size].double(), dim=-1)  # (T, B)
    unsafe = ~(norms > _underflow_floor(dtype)).all(1)
    if config.truncate or not bool(unsafe.any()):
        return None
    t_u = int(unsafe.nonzero().max())
    grad.grad_norm = grad.grad_norm.copy()
    grad.grad_norm[: t_u + 1] = np.nan
    grad.grad_norm_band = grad.grad_norm_band.copy()
    grad.grad_norm_band[:, : t_u + 1] = np.nan
    if grad.log10_grad_norm_band is not None:
        grad.log10_grad_norm_band = grad.log10_grad_norm_band.copy()
        grad.log10_grad_norm_band[:, : t_u + 1] = np.nan
    grad.underflow_t = t_u
    return (f"||dL/dh_t|| for t <= {t_u} is not shown: some sequence's gradient fell below "
            f"{_underflow_floor(dtype):.0e}, where {config.dtype} backprop underflows (0 or inexact); the exact "
            "log-space chain covers final-step losses on unidirectional stacks")




def _detached(run: Run) -> Run:
    if run.state_stack is not None:  # computed without a graph (no detach needed): keep the stacks
        return run
    return Run(cell=run.cell, xp=[x.detach() for x in run.xp],
               states=[tuple(s.detach() for s in st) for st in run.states], reverse=run.reverse)
