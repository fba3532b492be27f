"""Benchmark parts: (d) the naive reference, torch.autograd.functional.jacobian once per lag + svdvals."""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # noqa: F841
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402


# ---- (d) the naive reference -----------------------------------------------------------------------------------
def naive_lag(run, k: int, b: int, return_svals: bool = False):
    """Seconds for d state_{T-1} / d state_{T-1-k} of the first b sequences by autograd.functional.jacobian
    (one call: re-run the k steps from state_{T-1-k}), then the same singular values as the engine keeps
    (h->h block; for the LSTM also the whole [h; c] state and the c->c block)."""
    cell = run.cell
    T = len(run.xp)
    H = cell.hidden_size
    is_lstm = len(run.states[0]) == 2
    start = tuple(s[:b].clone() for s in run.states[T - k])  # states[t + 1] = state_t: this is state_{T-1-k}
    xs = [run.xp[t][:b] for t in range(T - k, T)]

    def f(*state):
        for xp_t in xs:
            state = cell.step(xp_t, state)
        return torch.cat(state, -1)  # (b, S)

    t0 = time.perf_counter()
    J = torch.autograd.functional.jacobian(f, start)  # per input: (b, S, b, H)
    J = torch.cat(J, -1) if isinstance(J, tuple) else J  # (b, S, b, S)
    Jb = torch.diagonal(J, dim1=0, dim2=2).permute(2, 0, 1)  # (b, S, S): each sequence's own block
    sv = torch.linalg.svdvals(Jb[:, :H, :H])
    if is_lstm:
        torch.linalg.svdvals(Jb)
        torch.linalg.svdvals(Jb[:, H:, H:])
    dt = time.perf_counter() - t0
    return (dt, sv) if return_svals else dt


def naive_check(run, b: int) -> dict:
    """The naive reference computes what (c) computes: top singular value at one lag, both ways (log10)."""
    from analysis.jacobians import jacobian_products

    T = len(run.xp)
    k = min(8, T - 1)
    _, sv = naive_lag(run, k, b, return_svals=True)
    naive = torch.log10(sv[:, 0].double()).mean().item()  # geometric mean over the batch, as the engine
    res = jacobian_products(run, lags=[k], batch=b, n_singular=1, lyapunov_k=0)
    return {"lag": k, "naive_log10_sigma_max": naive, "engine_log10_sigma_max": float(res.spectral_norm[0])}


def naive_reference(run, b: int, lag_set: list[int], limit_s: float, budget_s: float) -> dict:
    """Time lags 1, 2, 4, 8, ... and T-1 (skipping any predicted over 2 x limit_s, stopping after budget_s),
    fit t(k) = a + s k by least squares and sum it over lag_set. 'over_limit': one lag takes > limit_s,
    so the caller skips larger sizes."""
    T = len(run.xp)
    cand = sorted({2 ** i for i in range(int(math.log2(max(1, T - 1))) + 1)} | {T - 1})
    cand = [k for k in cand if 1 <= k <= T - 1]
    pts: list[tuple[int, float]] = []
    over = False
    spent = 0.0

    def fit():
        if len(pts) == 1:
            return pts[0][1], 0.0  # a lag of one step: mostly the per-call and per-row cost
        ks = np.array([p[0] for p in pts], float)
        ts = np.array([p[1] for p in pts], float)
        slope, icpt = np.polyfit(ks, ts, 1)
        if slope < 0:  # noise: flat
            return float(ts.mean()), 0.0
        if icpt < 0:  # noise: through the origin
            return 0.0, float((ks @ ts) / (ks @ ks))
        return float(icpt), float(slope)

    for k in cand:
        if pts:
            a, sl = fit()
            # with one point the slope is unknown: bound it by proportionality (t ~ t1 * k)
            pred = pts[0][1] * k / pts[0][0] if len(pts) == 1 else a + sl * k
            if pred > 2 * limit_s:  # larger lags only cost more
                over = True
                break
        t = naive_lag(run, k, b)
        pts.append((k, t))
        spent += t
        if t > limit_s:
            over = True
            break
        if spent > budget_s and len(pts) >= 2:
            break
    if not pts:
        return {"measured": [], "over_limit": True, "total_s": None}
    a, sl = fit()
    total = float(sum(a + sl * k for k in lag_set))
    return {"measured": [{"lag": k, "s": t} for k, t in pts], "over_limit": over, "total_s": total,
            "fit": {"intercept_s": a, "per_step_s": sl}}
