r"""The Jacobian products of a diagonal cell in O(T H), from its per-step multipliers, never a matrix.

A cell with ``diagonal = True`` gives m_t = ``cell.multipliers(xp_t, state)`` with d h_t / d h_{t-1} = diag(m_t):
real (b, H) (RG-LRU, minGRU, minLSTM), or complex (b, H/2) acting on the real view [Re h; Im h] (the LRU: per
unit the 2 x 2 block |m| Rot(arg m)). The products over lags stay diagonal:

    P_k = d h_{T-1} / d h_{T-1-k} = diag(prod_{j<k} m_{T-1-j})

so their singular values are the |prod m| (each twice for a complex unit: |m| Rot(phi) has both singular
values |m|), carried in log10 as cumulative sums of log|m| (no underflow or overflow at any length):

    log10 sigma_i(P_k) = sum_{j<k} log10 |m_{T-1-j, i}|

sigma_max is their max, sigma_min their min, the top n the largest n. The Lyapunov exponents of a product of
diagonal steps are the time means of log|m_i| over the K steps swept (K = the largest lag, as the QR sweep of
``jacobians.jacobian_products``), sorted descending per sequence. Batch statistics are geometric means over the
analysed sequences (means of the logs), per lag and per rank, as ``jacobian_products`` reports them; the carry
path of the keep gate comes from the same ``_gate_paths``.

Every value is exact to rounding (no SVD of a product that lost its small singular values), so ``min_reliable``
is True wherever sigma_min is finite (False where a step had an exact zero: the product is 0 from there on).

Memory: one chunk of multipliers (C, b, H) and the running sum (b, H). Shapes: b sequences analysed, H hidden size.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from rnn_models.network import Run

from .jacobians import LOG10E, MAX_CHUNK_BYTES, JacobianResult, _gate_paths, _stack_states


def _log_abs(m: torch.Tensor) -> torch.Tensor:
    """log|m| in float64, (C, b, H): a complex unit's value twice (its two singular values in the real view)."""
    la = torch.log(m.abs().double())
    return torch.cat([la, la], -1) if m.is_complex() else la


@torch.no_grad()
def diagonal_products(run: Run, *, lags: list[int], batch: int = 0, n_singular: int = 8, lyapunov_k: int = 8,
                      progress=None) -> JacobianResult:
    """``jacobian_products``' result (every field, the same units) for a diagonal cell, in O(T b H)."""
    cell = run.cell
    T, B = len(run.xp), run.xp[0].shape[0]
    b = B if batch in (0, None) else min(batch, B)
    idx = torch.arange(b)
    H = cell.hidden_size
    lag_set = sorted(set(lags))
    K = len(lag_set)
    pos = {k: i for i, k in enumerate(lag_set)}
    n = min(n_singular, H)
    norm, low, top = np.full((K, b), np.nan), np.full((K, b), np.nan), np.full((K, b, n), np.nan)
    if 0 in pos:  # lag 0: the identity, every singular value 1
        norm[pos[0]], low[pos[0]], top[pos[0]] = 0.0, 0.0, 0.0
    max_lag = lag_set[-1] if lag_set else 0
    chunk = max(1, min(4096, MAX_CHUNK_BYTES // max(1, 8 * b * H)))
    cum = torch.zeros(b, H, dtype=torch.float64)  # sum of log|m| over the steps swept so far
    nonfinite, k, t_hi = None, 0, T - 1  # steps t = T-1 .. 1 give lags 1 .. T-1
    while k < max_lag and nonfinite is None:
        t_lo = max(1, t_hi - chunk + 1, T - max_lag)
        xp, st = _stack_states(run, t_lo, t_hi + 1, idx)  # (C, b, .)
        logm = _log_abs(cell.multipliers(xp, st)).flip(0)  # (C, b, H): row c is step t_hi - c, lag k + 1 + c
        bad = torch.isnan(logm) | (logm == math.inf)  # (log 0 = -inf is an exact zero step, not an error)
        if bool(bad.any()):
            c = int(bad.flatten(1).any(1).nonzero()[0])
            nonfinite = {"quantity": "jacobian_product", "lag": k + 1 + c, "timestep": t_hi - c,
                         "sequence": int(bad[c].any(-1).nonzero()[0]), "value": "non-finite"}
            logm = logm[:c]
        # log sigma(P_{k+1+c}) = cum + sum_{j<=c} log|m|
        csum = cum + logm.cumsum(0)  # (C, b, H)
        rows = [c for c in range(csum.shape[0]) if k + 1 + c in pos]
        if rows:
            L = csum[rows] * LOG10E  # (R, b, H) log10 of the singular values
            at = [pos[k + 1 + c] for c in rows]
            top[at] = L.topk(n, dim=-1).values.numpy()
            norm[at] = top[at][..., 0]
            low[at] = L.min(-1).values.numpy()
        if csum.shape[0]:
            cum = csum[-1]
        k += csum.shape[0]
        t_hi = t_lo - 1
        if progress is not None:
            progress(k / max(1, max_lag), f"Jacobian products, lag {k}/{max_lag} (diagonal)")
    nk = min(lyapunov_k, H)
    # lambda_i = (1/K) sum log|m_i|, sorted descending per sequence; then the mean per rank
    lyap = (cum / k).sort(-1, descending=True).values[:, :nk].mean(0).numpy() if nk and k else None
    res = JacobianResult(
        lag=lag_set,
        spectral_norm=norm.mean(1),
        min_singular_value=low.mean(1),
        min_reliable=np.isfinite(low.mean(1)),
        singular_values=top.mean(1),
        spectral_norm_per_sequence=norm,
        lyapunov=lyap,
        batch_analysed=b,
        nonfinite=nonfinite,
        method="closed-form, diagonal (O(T H) from the multipliers)",
    )
    _gate_paths(run, res, idx, lag_set)
    return res
