r"""||dL/dh_t|| for a loss on the last step, in closed form, for a diagonal cell, exact in log space at any length:
its per-step Jacobian the same at every step (``cell.fixed_multipliers()``: the LRU's lambda,
``fixed_multiplier_log_grad_norms``) or a diag(m_t) of its own at every step (RG-LRU, minGRU, minLSTM,
``multiplier_log_grad_norms``). A loss at every step: the reverse scan with its direct terms
(``multiplier_chain_log_norms``, a loop over time with log-space rescaling: ``diagonal_scan.chain_log_norms``).

Time-varying multipliers. dL/dh_t = dL/dh_{T-1} J_{T-1} ... J_{t+1}, and with J_s = diag(m_s) each unit's part of
the gradient is scaled by the product of its multipliers (a complex unit's (Re, Im) pair by |m| and a rotation,
which keeps its norm). With R_{k,i} = sum_{j<k} log|m_{T-1-j, i}| (the running sums from the end, as
``analysis.diagonal`` takes them for the products) and w_{b,i} as below:

    log ||dL/dh_{T-1-k}||_b^2 = logsumexp_i (log w_{b,i} + 2 R_{k,i})

every step at once (one log-sum-exp over units per step, no loop over time, no renormalization: the terms are
logs, so nothing underflows). A zero multiplier makes R = -inf from there on (that unit's part is 0).

Fixed multipliers. With d h_t / d h_{t-1} = diag(m) at every step (a complex m_i acts on unit i of the real view
[Re h; Im h] as |m_i| Rot(arg m_i), a real one as m_i), dL/dh_t = dL/dh_{T-1} J^k with k = T-1-t, and per unit i
the gradient's part scales by |m_i| at each step. With w_{b,i} = ||(dL/dh_{T-1})_{b, unit i}||^2 and l_i = log |m_i|^2:

    ||dL/dh_t||_b^2 = sum_i w_{b,i} exp(k l_i)

For a chunk of lags k0 <= k < k0 + C (j = k - k0), shifted by the chunk's largest starting term
M_b = max_i (log w_{b,i} + k0 l_i) and the slowest decay l_max = max_i l_i:

    ||dL/dh_t||_b^2 = exp(M_b + j l_max) sum_i A_{b,i} R_{i,j},
    A_{b,i} = exp(log w_{b,i} + k0 l_i - M_b) in [0, 1],   R_{i,j} = exp(j (l_i - l_max)) in (0, 1]

one GEMM (B, U) @ (U, C) per chunk. With C (l_max - l_min) <= 600, R >= exp(-600) never underflows and the sum is
at least the largest term's exp(-600) ~ 1e-261, so the terms lost to underflow (below ~1e-308 each) are below
1e-46 of it: exact to float64 rounding. log w and k0 l enter by formula, so nothing accumulates along t (the
per-step chain of ``gradients.log_grad_norm_chain`` renormalizes T times). Units with m_i = 0 contribute at
k = 0 only. The result equals ``log_grad_norm_chain(run, v_last)`` (to rounding) at O(T B U / C) Python steps.

Shapes: T steps, B sequences, H hidden size, U units (H, or H/2 complex units), C lags per chunk.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .diagonal_scan import chain_log_norms, log_abs, logsumexp_, not_finite_logs, running_sum
from .jacobians import MAX_CHUNK_BYTES, _stack_states

MAX_CHUNK = 1024  # lags per GEMM
SPAN = 600.0  # nats of decay allowed across a chunk between the fastest and the slowest unit


@torch.no_grad()
def fixed_multiplier_log_grad_norms(run, v_last: Tensor) -> Tensor | None:
    """log10 ||dL/dh_t|| (T, B) float64 for a last-step loss with dL/dh_{T-1} = v_last (B, H), or None where the
    cell has no fixed multipliers (or one is not finite: the step-by-step chain then says what happens)."""
    m = run.cell.fixed_multipliers()
    if m is None or run.cell.state_size(run.cell.hidden_size) != v_last.shape[-1]:
        return None
    T, B = len(run.xp), v_last.shape[0]
    U = m.shape[-1]
    v = v_last.double()
    # w_{b,i}: the squared norm of unit i's part of dL/dh_{T-1} (a complex unit: its Re and Im components)
    w = (v.view(B, 2, U) ** 2).sum(1) if m.is_complex() else v ** 2  # (B, U)
    l = 2 * torch.log(m.abs().double())  # (U,) log |m_i|^2
    if bool(torch.isnan(l).any() | (l == math.inf).any()):
        return None
    logw = torch.log(w)  # (B, U); -inf where a unit's gradient is 0
    out = torch.empty(T, B, dtype=torch.float64)
    # k = 0: ||dL/dh_{T-1}||^2 = sum_i w_{b,i}
    out[T - 1] = _log10_sqrt(torch.logsumexp(logw, -1))
    live = l > -math.inf  # units with m_i != 0 (the others are 0 for k >= 1)
    if T == 1:
        return out
    if not bool(live.any()):
        out[: T - 1] = -math.inf
        return out
    logw, l = logw[:, live], l[live]  # (B, U'), (U',)
    l_max = l.max()
    span = float(l_max - l.min())
    C = MAX_CHUNK if span == 0 else int(max(1, min(MAX_CHUNK, SPAN // span)))
    for k0 in range(1, T, C):
        n = min(C, T - k0)
        j = torch.arange(n, dtype=torch.float64)  # (n,)
        E = logw + k0 * l  # (B, U') log of each term at k0
        M = E.max(-1).values  # (B,)
        M = torch.where(torch.isfinite(M), M, torch.zeros_like(M))  # a zero gradient: every term 0 (log -inf)
        A = torch.exp(E - M.unsqueeze(-1))  # (B, U') in [0, 1]
        R = torch.exp((l - l_max).unsqueeze(-1) * j)  # (U', n) in (0, 1]
        # log ||dL/dh_t||^2 = log sum_i A R + M + j l_max,   t = T-1-k0-j
        log_sq = torch.log(A @ R) + M.unsqueeze(-1) + j * l_max  # (B, n)
        out[T - k0 - n: T - k0] = _log10_sqrt(log_sq.T.flip(0))
    return out


@torch.no_grad()
def multiplier_log_grad_norms(run, v_last: Tensor, progress=None) -> Tensor | None:
    """log10 ||dL/dh_t|| (T, B) float64 for a last-step loss with dL/dh_{T-1} = v_last (B, H), from the
    multipliers of every step (module docstring), or None where the cell has no multipliers (not diagonal) or one
    is not finite (the step-by-step chain then says where). ``progress(fraction, what)`` after each chunk."""
    cell = run.cell
    if not getattr(cell, "diagonal", False) or cell.state_size(cell.hidden_size) != v_last.shape[-1]:
        return None
    T, B = len(run.xp), v_last.shape[0]
    idx = torch.arange(B)
    v = v_last.double()
    out = torch.empty(T, B, dtype=torch.float64)
    H = cell.hidden_size
    chunk = max(1, MAX_CHUNK_BYTES // max(1, 4 * 8 * B * H))  # steps per chunk: log|m|, R, the terms (C, B, U)
    cum = logw = None
    t_hi = T - 1  # steps t = T-1 .. 1 carry the gradient to t - 1
    while t_hi >= 1:
        t_lo = max(1, t_hi - chunk + 1)
        xp, st = _stack_states(run, t_lo, t_hi + 1, idx)  # (C, B, .)
        m = cell.multipliers(xp, st)  # (C, B, U): H real, or H/2 complex units
        if logw is None:
            U = m.shape[-1]
            # w_{b,i}: the squared norm of unit i's part of dL/dh_{T-1} (a complex unit: its Re and Im components)
            w = (v.view(B, 2, U) ** 2).sum(1) if m.is_complex() else v ** 2  # (B, U)
            logw = torch.log(w)
            cum = torch.zeros(B, U, dtype=torch.float64)
            out[T - 1] = _log10_sqrt(torch.logsumexp(logw, -1))  # k = 0: ||dL/dh_{T-1}||
        logm = log_abs(m)  # (C, B, U)
        if not_finite_logs(logm):
            return None
        # R_k = sum_{j<k} log|m_{T-1-j}|: row c is k = T - t_hi + c, the gradient at t = t_hi - 1 - c
        R = running_sum(logm, cum, reverse=True)  # (C, B, U)
        cum = R[-1].clone()
        # log ||dL/dh_t||^2 = logsumexp_i (log w_i + 2 R_i)   (R's memory reused)
        log_sq = logsumexp_(R.mul_(2).add_(logw))  # (C, B)
        out[t_lo - 1:t_hi] = _log10_sqrt(log_sq.flip(0))
        t_hi = t_lo - 1
        if progress is not None:
            progress((T - 1 - t_hi) / max(1, T - 1), f"||dL/dh_t|| back through time, t = {t_hi} (diagonal)")
    if T == 1:
        out[0] = _log10_sqrt(torch.logsumexp(torch.log(v ** 2), -1))
    return out


@torch.no_grad()
def multiplier_chain_log_norms(run, d: Tensor, progress=None) -> Tensor | None:
    """log10 ||dL/dh_t|| (T, B) float64 for a loss at every step, d (T, B, H) = dl_t/dh_t (the direct terms):
    the reverse scan dL/dh_{t-1} = m_t dL/dh_t + d_{t-1} of a diagonal cell (``diagonal_scan.chain_log_norms``, a
    complex m on the real view's units), chunk by chunk from the end; None where the cell is not diagonal or a
    multiplier is not finite. ``progress(fraction, what)`` after each chunk."""
    cell = run.cell
    T, B, H = d.shape
    if not getattr(cell, "diagonal", False) or cell.state_size(cell.hidden_size) != H:
        return None
    idx = torch.arange(B)
    out = torch.empty(T, B, dtype=torch.float64)
    chunk = max(1, MAX_CHUNK_BYTES // max(1, 6 * 8 * B * H))  # steps per chunk: m, d, log|m| (C, B, H) and copies
    carry, t_hi = None, T - 1
    while t_hi >= 0:
        t_lo = max(0, t_hi - chunk + 1)
        xp, st = _stack_states(run, t_lo, t_hi + 1, idx)  # (C, B, .)
        m = cell.multipliers(xp, st)  # (C, B, U)
        if not bool(torch.isfinite(m.sum())):  # (a NaN or an infinity anywhere makes the sum one)
            return None
        dc = d[t_lo:t_hi + 1].double()
        if m.is_complex():  # the real view [Re; Im] of each unit as one complex number
            U = m.shape[-1]
            dc = torch.complex(dc[..., :U], dc[..., U:])
        logs, carry = chain_log_norms(m, dc, carry)  # natural log, (C, B)
        out[t_lo:t_hi + 1] = logs / math.log(10)
        t_hi = t_lo - 1
        if progress is not None:
            progress((T - 1 - t_hi) / max(1, T), f"||dL/dh_t|| back through time, t = {t_hi + 1} (diagonal scan)")
    return out


def _log10_sqrt(log_sq: Tensor) -> Tensor:
    # log10 sqrt(x) = (ln x) / (2 ln 10)
    return log_sq / (2 * math.log(10))
