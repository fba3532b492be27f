r"""Forward-mode passes of a recurrent cell's tangent recurrence, for ``analysis.param_sensitivity``.

For a tangent v of one parameter block theta (the other parameters fixed), along a run's visited states::

    u_t = (d step / d state) u_{t-1} + (d step / d theta) v,      u_{-1} = 0,      u_t = d state_t / d theta . v

in two terms: the source (d step / d theta) v depends on the visited states only, so a window of steps takes it in
one ``torch.func.jvp`` through ``functional_call`` (a parameter swapped in a module; the window's steps and
sequences as rows, vmapped over the tangents, and over the sequences where each has its own); the state term is the
cell's own forward-mode product ``cell.vjp_steps(xp, st).jvp(c, u)``, one per step. After every step u is
renormalised (u <- u / max|u| per tangent and sequence, log10 of the scale accumulated in ``ls``; the source term
is scaled by 10^-ls to match), so log10 ||d h_t / d theta . v||^2 is exact far outside float64's range.

Forward AD's dual levels are process-wide (torch.autograd.forward_ad), not per thread: two threads in
``torch.func.jvp`` at once break each other ("no level exists"). ``FORWARD_AD`` serialises the passes of one
process (the cells of a comparison, the dashboard's sessions).

Shapes::

    T steps   B sequences   S_i state entries   N tangents of a chunk   K Hutchinson tangents per sequence
    V  (N, *shape) shared by the sequences, or (N, B, *shape) one per sequence
    u  (N, B, S), S = sum S_i    ls  (N, B)      returned log10 norms  (N, B, T), or (B, T) summed over N
    a window's source terms (N, C, B, S), C <= WINDOW steps
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
    m = u.abs().amax(-1)  # max |u| (vector_norm with ord=inf: 15x slower here)
    safe = torch.where(m > 0, m, torch.ones_like(m))
    with torch.no_grad():
        out = 2 * (torch.log10(safe) + torch.log10(torch.linalg.vector_norm(u / safe.unsqueeze(-1), dim=-1)))
    return torch.where(m > 0, out, torch.full_like(out, -math.inf))



# ---- the tangent recurrence --------------------------------------------------------------------------------
WINDOW = 64  # steps per window: their source terms in one vmapped call, their J_t from one ``vjp_steps``


def tangent_pass(step: Step, name: str, p0: Tensor, V: Tensor, per_seq: bool, inputs: list, states: list,
                  tick=None, summed: bool = False) -> tuple[Tensor, dict | None]:
    """log10 || d h_t / d theta . v ||^2 for each tangent v of the chunk, sequence and step: (N, B, T); with
    ``summed`` log10 sum_v || d h_t / d theta . v ||^2 per sequence and step: (B, T) (no (N, B, T) array).

    V (N, *shape) shared by every sequence, or (N, B, *shape) one per sequence (``per_seq``). ``inputs`` and
    ``states`` are the run's, in its dtype: a window at a time is taken to float64. The tangent state u (N, B, S)
    is renormalised every step; its log10 scale ``ls`` (N, B) multiplies the source term.

    The two terms of u_t = J_t u_{t-1} + (d step / d theta) v are taken apart. The source terms depend on the
    visited states only, not on u: those of a window of steps come from one ``jvp`` (the window's steps and
    sequences as one batch of rows, vmapped over the tangents). The state term is the cell's own forward-mode
    product ``cell.vjp_steps(xp, st).jvp(c, u)`` (closed forms for the built-in kinds, tested against autograd;
    forward mode of the step for your own). Measured (curse-of-memory preset, T = 500, one thread): 0.5 s for its
    four passes against 3.2 s where each step was one ``vmap(vmap(jvp))`` of the whole step (~2 ms per step).
    """
    N, T = V.shape[0], len(inputs)
    B = states[0][0].shape[0]
    k = len(states[0])
    H0 = states[0][0].shape[-1]  # h, the first entry of the state
    S = sum(s.shape[-1] for s in states[0])
    source = _source(step, name, p0, per_seq, k)
    G = projected_width(step.cell, inputs[0].shape[-1]) if step.project else inputs[0].shape[-1]
    W = window(step.cell, N, B, S, G, T)
    u = None  # u_{-1} = 0: the first step's is its source term alone
    ls = torch.zeros(N, B, dtype=torch.float64)
    out = torch.empty((B, T) if summed else (N, B, T), dtype=torch.float64)
    bad = None
    for t0, t1 in _chunks(T, W):
        inp = torch.stack(inputs[t0:t1]).to(torch.float64)  # (C, B, .)
        st = tuple(torch.stack([states[t][i] for t in range(t0, t1)]).to(torch.float64)
                   for i in range(k))  # (C, B, S_i) each
        src = source(V, inp, st)  # (N, C, B, S): (d step / d theta) v at each step of the window
        steps = step.cell.vjp_steps(step.cell.project(inp) if step.project else inp, st)
        for c in range(t1 - t0):
            s = t0 + c
            # u_t = J_t u_{t-1} + (d step / d theta) v 10^{-ls}    (u_t = d state_t / d theta . v, scaled by 10^{-ls};
            # u_{-1} = 0: the initial state does not depend on theta)
            scale = torch.pow(10.0, -ls).unsqueeze(-1)  # (N, B, 1)
            u = src[:, c] * scale if s == 0 else torch.addcmul(steps.jvp(c, u), src[:, c], scale)
            # renormalise: r = max |u| over the whole state, per tangent and sequence; ls += log10 r
            r = u.abs().amax(-1)  # (N, B)
            if bad is None and not bool(torch.isfinite(r).all()):
                n_b = (~torch.isfinite(r)).nonzero()[0]
                bad = {"step": s, "sequence": int(n_b[1])}
            r = torch.where((r > 0) & torch.isfinite(r), r, torch.ones_like(r))
            u.div_(r.unsqueeze(-1))  # u is this step's own array
            ls = ls + torch.log10(r)
            # log10 ||d h_t/d theta . v||^2 = log10 ||u_h||^2 + 2 ls
            logx = log10_sq_norm(u[..., :H0]) + 2 * ls  # (N, B)
            if summed:
                out[:, s] = log10_sum(logx, 0)
            else:
                out[:, :, s] = logx
            if tick is not None:
                tick(N)
    return out, bad


def projected_width(cell: nn.Module, I: int) -> int:
    """The width G of ``cell.project``'s output for I inputs (a step's input once projected), on the cell's device
    (the meta device for a cost estimate)."""
    dev = next((p.device for p in cell.parameters()), torch.device("cpu"))
    return int(cell.project(torch.zeros(1, I, dtype=torch.float64, device=dev)).shape[-1])


def window(cell: nn.Module, N: int, B: int, S: int, G: int, T: int) -> int:
    """Steps per window: at most WINDOW, with the source terms' jvp (``_source_floats`` per step and sequence)
    under CHUNK_BYTES / 2, and the window's ``vjp_steps`` (``_step_floats``) under CHUNK_BYTES.
    G: the width of the step's input (its projected x_t)."""
    src = B * _source_floats(N, S, G) * 8
    steps = B * _step_floats(cell, S, G) * 8
    return max(1, min(WINDOW, T, int(CHUNK_BYTES // (2 * src)), int(CHUNK_BYTES // steps)))


def window_bytes(cell: nn.Module, N: int, B: int, S: int, G: int, T: int) -> float:
    """Peak bytes of one window beyond the tangents u: its source terms' jvp, its ``vjp_steps`` with their
    temporaries (2 ``_step_floats`` per step and sequence), its inputs and states in float64, and 16 MiB of small
    tensors and allocator slack (checked against the measured peak in tests/test_param_sensitivity.py)."""
    C = window(cell, N, B, S, G, T)
    return C * B * 8.0 * (_source_floats(N, S, G) + 2 * _step_floats(cell, S, G) + G + S) + 16 * 2**20


def _source_floats(N: int, S: int, G: int) -> int:
    """Floats per step and sequence of the source terms' jvp: the primal and N tangents of the step's
    intermediates (~8 arrays (G + S) wide each) and the N source terms (S)."""
    return 8 * (N + 1) * (G + S) + N * S


def _step_floats(cell: nn.Module, S: int, G: int) -> int:
    """Floats per step and sequence that the cell's ``vjp_steps`` keeps: its ``chunk_floats``; where it forms J_t
    by ``vmap(jacrev)`` (layer norm; a kind, or your own step, without structured products) J_t and the S
    cotangents of the step's intermediates (~16 G-wide each: measured 9-21 S^2 for LN cells)."""
    dense = not getattr(cell, "structured_products", False) or bool(getattr(cell, "layer_norm", False))
    return max(1, S * S + 16 * S * G if dense else type(cell).chunk_floats(cell.hidden_size))


def _source(step: Step, name: str, p0: Tensor, per_seq: bool, k: int):
    """(V, inp (C, B, .), st (C, B, S_i) each) -> (d step / d theta) v at every step and sequence: (N, C, B, S).

    The step runs on rows: the window's C B (step, sequence) pairs at once where the tangents are shared, the C
    steps of one sequence where each sequence has its own (vmapped over the sequences)."""
    key = f"cell.{name}"

    def rows(v: Tensor, inp: Tensor, *st: Tensor) -> Tensor:
        # (d step / d theta) v on R rows: inp (R, .), st (R, S_i) -> (R, S)
        def f(p: Tensor) -> Tensor:
            return torch.cat(functional_call(step, {key: p}, (inp, st)), -1)
        return jvp(f, (p0,), (v,))[1]

    if per_seq:  # v (B, *shape) per tangent: one sequence's C steps a call, vmapped over B (dim 1 of inp, st)
        per_b = vmap(rows, in_dims=(0, 1) + (1,) * k, out_dims=1)  # -> (C, B, S)
        g = vmap(per_b, in_dims=(0, None) + (None,) * k)  # -> (N, C, B, S)
        return lambda V, inp, st: g(V, inp, *st)
    g = vmap(rows, in_dims=(0, None) + (None,) * k)  # -> (N, C B, S)

    def shared(V: Tensor, inp: Tensor, st: tuple) -> Tensor:
        C, B = inp.shape[:2]
        out = g(V, inp.flatten(0, 1), *(q.flatten(0, 1) for q in st))  # (N, C B, S)
        return out.view(V.shape[0], C, B, -1)  # (N, C, B, S)
    return shared


def _chunks(n: int, size: int):
    for i in range(0, n, size):
        yield i, min(n, i + size)


def tangent_bytes(B: int, S: int, n: int, per_seq: bool) -> int:
    """Bytes of one tangent of a block of n entries: u and the step's temporaries (6 S per sequence), v (n; one
    per sequence where ``per_seq``) and its Rademacher draw (2 n more per sequence)."""
    return B * (6 * S + (3 * n if per_seq else 0)) * 8 + (0 if per_seq else 2 * n * 8)


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
    per_tangent = tangent_bytes(B, S, n, False)
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
            part, b = tangent_pass(step, name, p0, V, False, inputs, states, tick, summed=True)  # (B, T)
            bad = bad or b
            total = part if total is None else log10_sum(torch.stack([total, part]), 0)
        return log10_mean(total, (0,)), None, bad
    # Hutchinson: K Rademacher tangents per sequence, V (K, B, *shape) drawn a chunk at a time
    per_tangent = tangent_bytes(B, S, n, True)
    parts = []
    for i0, i1 in _chunks(k, chunk_size(per_tangent)):
        V = torch.randint(0, 2, (i1 - i0, B) + tuple(p0.shape), generator=gen, dtype=torch.float64)
        V = V.mul_(2).sub_(1)  # +-1 in place (the same draws as int64: one (N, B, *shape) array, not four)
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
