"""Shared by the own-step tests (test_own_cell*.py): sizes, float64 data, the closeness check, the float64 autograd reference
(``reference``), small weights, a zero
initial state and a step module that wraps an nn.GRUCell without being a GRU."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

T, B, I, H = 14, 3, 4, 6
F64 = dict(dtype="float64")


def data(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, I, generator=g, dtype=torch.float64)
    h0 = 0.5 * torch.randn(B, H, generator=g, dtype=torch.float64)
    c0 = 0.5 * torch.randn(B, H, generator=g, dtype=torch.float64)
    return x, h0, c0, torch.randint(0, 3, (T, B), generator=g)

def close(a, b, tol=1e-12, what=""):
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert a.shape == b.shape, what
    assert np.array_equal(np.isfinite(a), np.isfinite(b)), what
    ok = np.isfinite(a)
    err = np.abs(a[ok] - b[ok]) / np.maximum(1.0, np.abs(b[ok]))
    assert err.max(initial=0.0) <= tol, f"{what}: {err.max():.3g}"

def weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(W=torch.randn(I, H, generator=g, dtype=torch.float64) / 2,
                U=torch.randn(H, H, generator=g, dtype=torch.float64) / 3)


def zeros_h0(width=H):
    """A zero initial state (B, width) in float64."""
    return torch.zeros(B, width, dtype=torch.float64)


class ScaledGRU(nn.Module):
    """A step built around an nn.GRUCell that is not a GRU: h' = 0.9 GRUCell(x, h)."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRUCell(I, H)

    def forward(self, x, h):
        return 0.9 * self.gru(x, h)


def reference(step, x, state0, loss_of_h, lags=(1, 2, 5)):
    """(geometric mean over the batch of ||dL/dh_t|| (T,), {lag: mean_b log10 sigma_max of the h -> h block},
    {lag: mean_b log10 sigma_max of the whole state}) by autograd on an independent loop of ``step``."""
    state0 = tuple(s.clone().requires_grad_(True) for s in state0) if isinstance(state0, tuple) else \
        state0.clone().requires_grad_(True)  # every h_t then carries a graph, whatever the weights
    hs, states = [], [state0]
    state = state0
    for t in range(x.shape[0]):
        state = step(x[t], state)
        h = state[0] if isinstance(state, tuple) else state
        h.retain_grad()
        hs.append(h)
        states.append(tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach())
    loss_of_h(torch.stack(hs)).backward()
    norms = torch.stack([h.grad.norm(dim=-1) for h in hs])  # (T, B)
    gm = torch.exp(torch.log(norms).mean(1)).numpy()
    tup = isinstance(state0, tuple)
    k = len(state0) if tup else 1
    hh, full = {}, {}
    for lag in lags:
        t0 = x.shape[0] - 1 - lag  # state_{t0} -> state_{T-1}
        a, b = [], []
        for s in range(x.shape[1]):
            def composed(flat, s=s):
                st = tuple(flat[None, i * H:(i + 1) * H] for i in range(k)) if tup else flat[None]
                for t in range(t0 + 1, x.shape[0]):
                    st = step(x[t, s:s + 1], st)
                return torch.cat(st, -1)[0] if tup else st[0]
            start = torch.cat([v[s] for v in states[t0 + 1]]) if tup else states[t0 + 1][s]
            J = torch.autograd.functional.jacobian(composed, start)  # (S, S)
            a.append(math.log10(torch.linalg.svdvals(J[:H, :H])[0]))
            b.append(math.log10(torch.linalg.svdvals(J)[0]))
        hh[lag], full[lag] = np.mean(a), np.mean(b)
    return gm, hh, full


def probe_loss(seed=0):
    """The engine's probe loss on an own step's states (T, B, H): the last state along a seeded unit readout."""
    from analysis.tasks import random_readout
    u = random_readout(H, seed + 1, torch.float64)
    return lambda hs: (hs[-1] @ u).sum()
