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
analysed sequences (means of the logs), per lag and per rank, as ``jacobian_products`` reports them. The keep
gate's path prod diag(g_t) (``jacobians._gate_paths``' quantity: log10 of its max over units) is summed in the same
sweep, or is sigma_max itself where the gate is the multiplier (``cell.keep_gate_is_multiplier``: RG-LRU, minGRU,
minLSTM).

Every value is exact to rounding (no SVD of a product that lost its small singular values), so ``min_reliable``
is True wherever sigma_min is finite (False where a step had an exact zero: the product is 0 from there on).

Where every step's multipliers are the same m (``cell.fixed_multipliers()``: the LRU's lambda), the sums are
formulas, log sigma_i(P_k) = k log|m_i| for every sequence, and the Lyapunov exponents are log|m_i| (O(K H), no
sweep; without the sweep's k roundings).

Memory: one chunk of log|m| (C, b, H), its running sums and the keep gate's (C ~ 16 MiB / (8 b H) steps). The sums
along time are vectorised (``analysis.diagonal_scan.running_sum``: ~2 sqrt(C) Python steps per chunk, not C).
Shapes: b sequences analysed, H hidden size.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from rnn_models.network import Run

from .diagonal_scan import log_abs, not_finite_logs, running_sum
from .jacobians import LOG10E, MAX_CHUNK_BYTES, JacobianResult, _stack_states


def _twice(x: torch.Tensor, rep: int, n: int) -> torch.Tensor:
    """Each value ``rep`` times along the last dimension (a complex unit's two equal singular values), first n."""
    return (x.repeat_interleave(rep, dim=-1) if rep > 1 else x)[..., :n]


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
    fixed = cell.fixed_multipliers() if cell.keep_gate is None else None
    if fixed is not None:  # the same diag(m) at every step (the LRU's lambda): P_k = diag(m^k)
        return _fixed_products(fixed, T, b, lag_set, pos, n, lyapunov_k, (norm, low, top), progress)
    # steps per chunk: its log|m| (C, b, U), their running sums and the keep gate's, each float64
    chunk = max(1, MAX_CHUNK_BYTES // max(1, 4 * 8 * b * H))
    # units: H real multipliers, or H/2 complex ones (each unit's |prod m| is two singular values: rep = 2)
    rep = 2 if bool(cell.multipliers(*_stack_states(run, T - 1, T, idx)).is_complex()) else 1
    U = H // rep
    cum = torch.zeros(b, U, dtype=torch.float64)  # per unit, sum of log|m| over the steps swept so far
    # the keep gate's path prod diag(g): the same sums of log g per unit, max over units; where the gate is the
    # multiplier (``keep_gate_is_multiplier``) that is sigma_max itself, filed after the sweep
    keep = None if getattr(cell, "keep_gate_is_multiplier", False) else cell.keep_gate
    gcum = torch.zeros(b, H, dtype=torch.float64) if keep else None
    path = np.full((K, b), np.nan) if keep else None
    if keep and 0 in pos:
        path[pos[0]] = 0.0
    nonfinite, k, t_hi = None, 0, T - 1  # steps t = T-1 .. 1 give lags 1 .. T-1
    while k < max_lag and nonfinite is None:
        t_lo = max(1, t_hi - chunk + 1, T - max_lag)
        xp, st = _stack_states(run, t_lo, t_hi + 1, idx)  # (C, b, .)
        logm = log_abs(cell.multipliers(xp, st))  # (C, b, U), steps t_lo .. t_hi
        logg = log_abs(cell.gates(xp, st)[keep]) if keep else None  # (C, b, H)
        C = logm.shape[0]
        if not_finite_logs(logm):  # (log 0 = -inf is an exact zero step, not an error)
            bad = torch.isnan(logm) | (logm == math.inf)
            s = int(bad.flatten(1).any(1).nonzero().max())  # the latest bad step: the sweep meets it first
            nonfinite = {"quantity": "jacobian_product", "lag": k + C - s, "timestep": t_lo + s,
                         "sequence": int(bad[s].any(-1).nonzero()[0]), "value": "non-finite"}
            C = C - 1 - s  # the steps after it
        # log sigma(P_{k+1+c}) = cum + sum_{j<=c} log|m_{t_hi-j}|: row c of csum is lag k + 1 + c, the steps taken
        # from the chunk's end (analysis.diagonal_scan.running_sum: vectorised, no difference of prefix sums)
        csum = running_sum(logm[logm.shape[0] - C:], cum, reverse=True)  # (C, b, U)
        cum = csum[-1] if C else cum
        if keep:
            # log || prod_{j<k} diag(g_{T-1-j}) || = max over units of sum log g
            gsum = running_sum(logg[logg.shape[0] - C:], gcum, reverse=True)  # (C, b, H)
            gcum = gsum[-1] if C else gcum
            gmax = gsum.amax(-1)  # (C, b)
        rows = [c for c in range(C) if k + 1 + c in pos]
        if rows:
            L = csum if len(rows) == C else csum[rows]  # (R, b, U) natural log of the singular values
            at = [pos[k + 1 + c] for c in rows]
            top[at] = _twice(L.topk(-(-n // rep), dim=-1).values * LOG10E, rep, n).numpy()
            norm[at] = top[at][..., 0]
            low[at] = (L.amin(-1) * LOG10E).numpy()
            if keep:
                path[at] = ((gmax if len(rows) == C else gmax[rows]) * LOG10E).numpy()
        k += C
        t_hi = t_lo - 1
        if progress is not None:
            progress(k / max(1, max_lag), f"Jacobian products, lag {k}/{max_lag} (diagonal)")
    nk = min(lyapunov_k, H)
    # lambda_i = (1/K) sum log|m_i|, sorted descending per sequence; then the mean per rank
    lyap = _twice((cum / k).sort(-1, descending=True).values, rep, nk).mean(0).numpy() if nk and k else None
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
    if keep is None and cell.keep_gate is not None:  # the gate is the multiplier: its path is sigma_max
        path = norm
    if cell.keep_gate is not None:  # filed as jacobians._gate_paths files it: a memory cell's carousel, else h's
        setattr(res, "cell_carousel" if getattr(cell, "c_index", None) is not None else "update_gate_path",
                path.mean(1))
    return res


def _fixed_products(m: torch.Tensor, T: int, b: int, lag_set: list[int], pos: dict, n: int, lyapunov_k: int,
                    out: tuple, progress=None) -> JacobianResult:
    """``diagonal_products`` where every step's multipliers are m (U,): log sigma_i(P_k) = k log|m_i| for every
    sequence, by formula (the sweep's sum of k equal terms, without its k roundings); O(K U)."""
    norm, low, top = out  # (K, b), (K, b), (K, b, n): lag 0 filled
    rep = 2 if m.is_complex() else 1
    H = rep * m.shape[-1]
    logm = torch.log(m.abs().double())  # (U,) natural log |m_i|
    max_lag = lag_set[-1] if lag_set else 0
    bad = torch.isnan(logm) | (logm == math.inf)
    if max_lag >= 1 and bool(bad.any()):  # the sweep meets step T-1 first: every sequence's lag 1
        nonfinite = {"quantity": "jacobian_product", "lag": 1, "timestep": T - 1, "sequence": 0, "value": "non-finite"}
        lyap = None
    else:
        nonfinite = None
        desc = logm.sort(descending=True).values  # (U,): k >= 0 keeps the order of k log|m|
        ks = [k for k in lag_set if k >= 1]
        if ks:
            at = [pos[k] for k in ks]
            kt = torch.tensor(ks, dtype=torch.float64).unsqueeze(-1)  # (K', 1)
            # log10 sigma(P_k): the top n (a complex unit's twice), sigma_max, sigma_min
            top[at] = _twice(kt * desc[: -(-n // rep)] * LOG10E, rep, n).unsqueeze(1).numpy()
            norm[at] = top[at][..., 0]
            low[at] = (kt * desc[-1:] * LOG10E).numpy()  # (K', 1) broadcast over the sequences
        nk = min(lyapunov_k, H)
        # lambda_i = (1/K) sum_{K steps} log|m_i| = log|m_i|, sorted descending (each complex unit's twice)
        lyap = _twice(desc, rep, nk).numpy() if nk and max_lag else None
    if progress is not None:
        progress(1.0, f"Jacobian products, lag {max_lag}/{max_lag} (diagonal, fixed multipliers)")
    return JacobianResult(
        lag=lag_set, spectral_norm=norm.mean(1), min_singular_value=low.mean(1),
        min_reliable=np.isfinite(low.mean(1)), singular_values=top.mean(1), spectral_norm_per_sequence=norm,
        lyapunov=lyap, batch_analysed=b, nonfinite=nonfinite,
        method="closed-form, diagonal (fixed multipliers: log sigma(P_k) = k log|m|, O(K H))")
