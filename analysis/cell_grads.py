r"""The two gradients of a memory cell c_t (the LSTM's), each named as what it is.

    c_t feeds two things: the next step (c_{t+1} = f_{t+1} c_t + ..., and the peepholes) and its own output
    h_t = o_t tanh(c_t) (o_t through w_co c_t with peepholes, tanh(LN(c_t)) with layer norm). So

        dL/dc_t  (total)  =  carry_t  +  dL/dh_t . dh_t/dc_t |_{x_t, h_{t-1} fixed}
        carry_t           =  the part through c_{t+1} and the later steps alone

    ``cell_grad_norm``        ||dL/dc_t|| total: what ``retain_grad()`` on c_t of a hand-written LSTM step gives
    ``cell_carry_grad_norm``  ||carry_t||: the gradient of c_t as a state coordinate with h_t held fixed
                              (exactly 0 at t = T-1, where no later step reads c_t)

Both are geometric means over the batch (as ``grad_norm``). The carry part is what the engine's state views
give (the next step reads a view of c_t); the h-path term is one vector-Jacobian product of the cell's
``h_of_c(xp_t, h_{t-1}, c_t)`` per step, batched over every t at once. Any cell that declares a memory cell
(``cell.c_index``: where c_t sits in the state) and gives ``h_of_c`` gets both; the LSTM is the one today.
"""
from __future__ import annotations

import torch
from torch import Tensor


def h_path(cell, xp: Tensor, h_prev: Tensor, c_t: Tensor, g_h: Tensor) -> Tensor:
    """g_h dh_t/dc_t at fixed (x_t, h_{t-1}): (..., H), every leading index at once (e.g. (T, B, H))."""
    with torch.enable_grad():
        c = c_t.detach().requires_grad_(True)
        h = cell.h_of_c(xp.detach(), h_prev.detach(), c)
        (g,) = torch.autograd.grad(h, c, grad_outputs=g_h.detach().to(h.dtype))
    return g


def total_cell_grads(run, g_h: Tensor, carry: Tensor) -> Tensor:
    """dL/dc_t total (T, B, H) of one forward-direction run from dL/dh_t (T, B, H) and the carry part (T, B, H)."""
    T = len(run.xp)
    ci = run.cell.c_index
    xp = torch.stack([x.detach() for x in run.xp[:T]])  # (T, B, G)
    h_prev = torch.stack([s[0].detach() for s in run.states[:T]])  # (T, B, H) h_{t-1}
    c_t = torch.stack([s[ci].detach() for s in run.states[1:T + 1]])  # (T, B, H)
    return carry + h_path(run.cell, xp, h_prev, c_t, g_h)


def log10_total_cell(run, t0: int, t1: int, v: Tensor, log_scale: Tensor) -> Tensor:
    """log10 ||dL/dc_t|| total (C, B) at times t0..t1-1 from the log-space chain's renormalized vectors
    v (C, B, S) = dL/d[h_t; c_t]_carry / 10**log_scale (C, B): the h-path term is linear in v, so the scale
    carries over."""
    H, ci = run.cell.hidden_size, run.cell.c_index
    xp = torch.stack(run.xp[t0:t1])  # (C, B, G)
    h_prev = torch.stack([run.states[t][0] for t in range(t0, t1)])  # (C, B, H)
    c_t = torch.stack([run.states[t + 1][ci] for t in range(t0, t1)])  # (C, B, H)
    tot = v[..., ci * H:(ci + 1) * H] + h_path(run.cell, xp, h_prev, c_t, v[..., :H])
    return torch.log10(torch.linalg.vector_norm(tot.double(), dim=-1)) + log_scale
