r"""||dL/dh_t|| for a loss on the last step, in closed form, for a diagonal cell whose per-step Jacobian is the same
at every step (``cell.fixed_multipliers()``: the LRU's lambda), exact in log space at any length.

With d h_t / d h_{t-1} = diag(m) at every step (a complex m_i acts on unit i of the real view [Re h; Im h] as
|m_i| Rot(arg m_i), a real one as m_i), dL/dh_t = dL/dh_{T-1} J^k with k = T-1-t, and per unit i the gradient's
part scales by |m_i| at each step. With w_{b,i} = ||(dL/dh_{T-1})_{b, unit i}||^2 and l_i = log |m_i|^2:

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


def _log10_sqrt(log_sq: Tensor) -> Tensor:
    # log10 sqrt(x) = (ln x) / (2 ln 10)
    return log_sq / (2 * math.log(10))
