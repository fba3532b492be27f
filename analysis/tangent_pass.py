r"""Forward-mode passes of a recurrent cell's tangent recurrence, for ``analysis.param_sensitivity``.

For a tangent v of one parameter block theta (the other parameters fixed), along a run's visited states::

    u_t = (d step / d state) u_{t-1} + (d step / d theta) v,      u_{-1} = 0,      u_t = d state_t / d theta . v

by ``torch.func.jvp`` of one step through ``functional_call`` (a parameter swapped in a module), vmapped over the
tangents of a chunk (outer) and the sequences (inner). After every step u is renormalised (u <- u / max|u| per
tangent and sequence, log10 of the scale accumulated in ``ls``; the source term is scaled by 10^-ls to match), so
log10 ||d h_t / d theta . v||^2 is exact far outside float64's range. Primal tensors are fresh (never views):
forward AD gives a view's whole base a tangent, which made each step 30x slower (measured).

Forward AD's dual levels are process-wide (torch.autograd.forward_ad), not per thread: two threads in
``torch.func.jvp`` at once break each other ("no level exists"). ``FORWARD_AD`` serialises the passes of one
process (the cells of a comparison, the dashboard's sessions).

Shapes::

    T steps   B sequences   S_i state entries   N tangents of a chunk   K Hutchinson tangents per sequence
    V  (N, *shape) shared by the sequences, or (N, B, *shape) one per sequence
    u  tuple of (N, B, S_i)      ls  (N, B)      returned log10 norms  (N, B, T)
"""
from __future__ import annotations

import math
import threading

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vmap

CHUNK_BYTES = 64 * 2**20  # the tangents of one chunk (u, v and the step's temporaries)
LN10 = math.log(10.0)
FORWARD_AD = threading.Lock()  # one forward-mode pass at a time per process (see the module docstring)


class Step(nn.Module):
    """One step as a module, so ``functional_call`` can swap a parameter: (input, state) -> state.
    With ``project`` the input is x_t and the step projects it (parameters acting through cell.project)."""

    def __init__(self, cell: nn.Module, project: bool):
        super().__init__()
        self.cell, self.project = cell, project

    def forward(self, inp: Tensor, state: tuple = (), only_project: bool = False):
        if only_project:
            return self.cell.project(inp)
        # state_t = step(project(x_t), state_{t-1})    or    step(xp_t, state_{t-1})
        return tuple(self.cell.step(self.cell.project(inp) if self.project else inp, state))


def acts_through_input(cell: nn.Module, names: list[str]) -> bool:
    """True when one of ``names`` enters ``cell.project`` (autograd connectivity of a probe input, not a value)."""
    probe = torch.zeros(1, cell.input_size, dtype=torch.float64)
    with torch.enable_grad():
        p = {f"cell.{n}": dict(cell.named_parameters())[n].detach().clone().requires_grad_(True) for n in names}
        xp = functional_call(Step(cell, True), p, (probe,), kwargs={"only_project": True})
    return bool(xp.requires_grad)



# ---- log10 helpers -----------------------------------------------------------------------------------------
def log10_sum(a: Tensor, dim) -> Tensor:
    """log10 sum 10^a over ``dim`` (exact for values far outside float64's range)."""
    return torch.logsumexp(a * LN10, dim) / LN10


def log10_mean(a: Tensor, dims: tuple[int, ...]) -> Tensor:
    n = math.prod(a.shape[d] for d in dims)
    return (torch.logsumexp(a * LN10, dims) - math.log(n)) / LN10


def log10_sq_norm(u: Tensor) -> Tensor:
    """log10 ||u||^2 over the last dimension, scaled by its largest entry (no overflow or underflow): (...,)."""
    m = u.abs().amax(-1)
    safe = torch.where(m > 0, m, torch.ones_like(m))
    with torch.no_grad():
        out = 2 * torch.log10(safe) + torch.log10(((u / safe.unsqueeze(-1)) ** 2).sum(-1))
    return torch.where(m > 0, out, torch.full_like(out, -math.inf))



# ---- the tangent recurrence --------------------------------------------------------------------------------
def tangent_pass(step: Step, name: str, p0: Tensor, V: Tensor, per_seq: bool, inputs: list, states: list,
                  tick=None) -> tuple[Tensor, dict | None]:
    """log10 || d h_t / d theta . v ||^2 for each tangent v of the chunk, sequence and step: (N, B, T).

    V (N, *shape) shared by every sequence, or (N, B, *shape) one per sequence (``per_seq``). The tangent state
    is renormalised every step; its log10 scale ``ls`` (N, B) multiplies the source term (d step/d theta) v.
    """
    N, T = V.shape[0], len(inputs)
    B = states[0][0].shape[0]
    key = f"cell.{name}"

    def one(v, c, u, inp, s):
        # one sequence, one tangent: (d step / d theta) (c v) + (d step / d state) u
        def f(p, s_):
            out = functional_call(step, {key: p}, (inp.unsqueeze(0), tuple(q.unsqueeze(0) for q in s_)))
            return tuple(q.squeeze(0) for q in out)
        return jvp(f, (p0, s), (v * c, u))[1]

    g = vmap(vmap(one, in_dims=(0 if per_seq else None, 0, 0, 0, 0)), in_dims=(0, 0, 0, None, None))
    u = tuple(torch.zeros(N, B, s.shape[-1], dtype=torch.float64) for s in states[0])
    ls = torch.zeros(N, B, dtype=torch.float64)
    out = torch.empty(N, B, T, dtype=torch.float64)
    bad = None
    for s in range(T):
        # u_t = J_state u_{t-1} + J_theta v 10^{-ls}    (u_t = d state_t/d theta . v, scaled by 10^{-ls})
        u = g(V, torch.pow(10.0, -ls), u, inputs[s], states[s])
        # renormalise: r = max |u| over the whole state, per tangent and sequence; ls += log10 r
        r = torch.stack([q.abs().amax(-1) for q in u]).amax(0)  # (N, B)
        if bad is None and not bool(torch.isfinite(r).all()):
            n_b = (~torch.isfinite(r)).nonzero()[0]
            bad = {"step": s, "sequence": int(n_b[1])}
        r = torch.where((r > 0) & torch.isfinite(r), r, torch.ones_like(r))
        u = tuple(q / r.unsqueeze(-1) for q in u)
        ls = ls + torch.log10(r)
        # log10 ||d h_t/d theta . v||^2 = log10 ||u_h||^2 + 2 ls
        out[:, :, s] = log10_sq_norm(u[0]) + 2 * ls
        if tick is not None:
            tick(N)
    return out, bad


def _chunks(n: int, size: int):
    for i in range(0, n, size):
        yield i, min(n, i + size)


def chunk_size(per_tangent_bytes: float, budget: float = CHUNK_BYTES) -> int:
    return max(1, int(budget // max(per_tangent_bytes, 1.0)))


def row_tangents(shape: tuple, H: int, i0: int, i1: int) -> Tensor:
    """Tangents i0..i1-1 of a unit-rows block (shape (G, *rest), row r moving unit r mod H only): tangent
    q = g R + c (R = prod(rest)) is 1 on rows g H..(g+1) H - 1 at flat column c, so no two of its entries move the
    same unit and ||J v_q||^2 = the sum of its entries' ||J e||^2; the G R / H tangents cover every entry once."""
    R = math.prod(shape[1:])
    V = torch.zeros(i1 - i0, shape[0] // H, H, R, dtype=torch.float64)  # (N, G/H, H, R)
    q = torch.arange(i0, i1)
    V[torch.arange(i1 - i0), q // R, :, q % R] = 1.0
    return V.view((i1 - i0,) + tuple(shape))


def block(step: Step, name: str, p0: Tensor, mode: str, k: int, gen: torch.Generator, inputs: list,
           states: list, tick, H: int = 0) -> tuple[Tensor, Tensor | None, dict | None]:
    """(log10 S_t^block (T,), log10 of its squared standard error (T,) or None when exact, nonfinite).
    ``H``: the period of a unit-rows block (mode "rows")."""
    n = p0.numel()
    B = states[0][0].shape[0]
    S = sum(s.shape[-1] for s in states[0])
    per_tangent = B * (4 * S + 2 * n) * 8  # u, its temporaries, v and v*c for every sequence
    bad = None
    if mode in ("unitwise", "basis", "rows"):
        total = None  # log10 sum_j ||J e_j||^2 per sequence: (B, T)
        count = 1 if mode == "unitwise" else n // H if mode == "rows" else n
        for i0, i1 in _chunks(count, chunk_size(per_tangent)):
            if mode == "unitwise":  # the all-ones tangent: ||J 1||^2 = ||J||_F^2
                V = torch.ones((1,) + tuple(p0.shape), dtype=torch.float64)
            elif mode == "rows":  # ones on a block of H rows at one column: sum_q ||J v_q||^2 = ||J||_F^2
                V = row_tangents(tuple(p0.shape), H, i0, i1)
            else:  # e_{i0}..e_{i1-1}
                V = torch.zeros(i1 - i0, n, dtype=torch.float64)
                V[torch.arange(i1 - i0), torch.arange(i0, i1)] = 1.0
                V = V.view((i1 - i0,) + tuple(p0.shape))
            logx, b = tangent_pass(step, name, p0, V, False, inputs, states, tick)
            bad = bad or b
            part = log10_sum(logx, 0)  # (B, T)
            total = part if total is None else log10_sum(torch.stack([total, part]), 0)
        return log10_mean(total, (0,)), None, bad
    # Hutchinson: K Rademacher tangents per sequence, V (K, B, *shape) drawn a chunk at a time
    per_tangent = B * (4 * S + 3 * n) * 8
    parts = []
    for i0, i1 in _chunks(k, chunk_size(per_tangent)):
        V = torch.randint(0, 2, (i1 - i0, B) + tuple(p0.shape), generator=gen).to(torch.float64) * 2 - 1
        logx, b = tangent_pass(step, name, p0, V, True, inputs, states, tick)
        bad = bad or b
        parts.append(logx)
    logx = torch.cat(parts, 0)  # (K, B, T): log10 ||J_b v_kb||^2
    est = log10_mean(logx, (0, 1))  # (T,)
    return est, log10_sq_se(logx), bad


def log10_sq_se(logx: Tensor) -> Tensor:
    """log10 of the squared standard error of mean_{k,b} X_kb as an estimate of mean_b E_k X_kb:
    SE^2 = sum_b var_k(X_kb) / (K B^2), var_k unbiased over the K tangents of sequence b. (T,)"""
    K, B = logx.shape[:2]
    m = logx.amax(0, keepdim=True)  # (1, B, T)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    y = torch.pow(10.0, logx - m)  # (K, B, T) in [0, 1]
    var = y.var(0, correction=1) if K > 1 else torch.full_like(y[0], math.inf)  # (B, T)
    log_var = torch.log10(var) + 2 * m[0]  # (B, T); a zero variance is -inf
    return log10_sum(log_var, 0) - math.log10(K * B * B)
