r"""What the diagonal cells share: kinds whose gates read x_t only, so d h_t / d h_{t-1} = diag(m_t) (RG-LRU,
minGRU, minLSTM; the LRU's complex diagonal overrides the real-view Jacobian).

A diagonal cell gives ``multipliers(xp, state)`` -> m_t (..., H) with d h_t / d h_{t-1} = diag(m_t), from which
its Jacobian, and every product of them, follows in O(H) per step (``analysis.diagonal``). It has no W_hh
(``gate_names = ()``); its input weights are one Linear over every pre-activation, ``weight_in`` (G, I) and
``bias_in`` (G,), initialised as ``torch.nn.Linear`` (U(-1/sqrt(I), 1/sqrt(I))) from the generator given.

Shape legend: B batch, I input_size, H hidden_size, G rows of weight_in (gates * H).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import State, _Cell


class DiagonalSteps:
    r"""The per-step Jacobians diag(m_t) of a chunk of steps, applied in O(H) per vector (never formed).

        right(c, P) = P diag(m_c)          P (b, R, H): scales P's columns
        left_t(c, Q) = diag(m_c) Q         Q (b, H, R): scales Q's rows
        vjp(c, v) = jvp(c, v) = v * m_c    v (b, H) or a block (n, b, H)
    """

    def __init__(self, m: Tensor):
        self.m = m  # (C, b, H)

    def __len__(self) -> int:
        return self.m.shape[0]

    def right(self, c: int, P: Tensor) -> Tensor:
        return P * self.m[c].unsqueeze(-2)

    def left_t(self, c: int, Q: Tensor) -> Tensor:
        return Q * self.m[c].unsqueeze(-1)

    def vjp(self, c: int, v: Tensor) -> Tensor:
        return v * self.m[c]

    __call__ = jvp = vjp


class RotationSteps:
    r"""The per-step Jacobians J_t = diag(a_t) + diag(b_t) rolled by H/2 columns of a complex diagonal recurrence in
    the real view [Re h; Im h] (a = [Re m; Re m], b = [-Im m; Im m]: per unit the block [[Re m, -Im m], [Im m,
    Re m]]), applied in O(H) per vector. With roll(x) = the halves of x swapped ([x_im; x_re]):

        J x   = a x + b roll(x)                 jvp (the step itself)
        x J   = a x + roll(b x)                 right (rows of P), vjp
        J^T Q = a Q + roll(b Q) along Q's rows  left_t
    """

    def __init__(self, a: Tensor, b: Tensor):
        self.a, self.b = a, b  # (C, b, H) each
        self.N = a.shape[-1] // 2

    def __len__(self) -> int:
        return self.a.shape[0]

    def right(self, c: int, P: Tensor) -> Tensor:
        a, b = self.a[c].unsqueeze(-2), self.b[c].unsqueeze(-2)  # P (b, R, H)
        return a * P + torch.roll(b * P, self.N, dims=-1)

    def left_t(self, c: int, Q: Tensor) -> Tensor:
        a, b = self.a[c].unsqueeze(-1), self.b[c].unsqueeze(-1)  # Q (b, H, R)
        return a * Q + torch.roll(b * Q, self.N, dims=-2)

    def vjp(self, c: int, v: Tensor) -> Tensor:
        return self.a[c] * v + torch.roll(self.b[c] * v, self.N, dims=-1)  # v (b, H) or (n, b, H)

    __call__ = vjp

    def jvp(self, c: int, V: Tensor) -> Tensor:
        return self.a[c] * V + self.b[c] * torch.roll(V, self.N, dims=-1)


def linear_scan(a: Tensor, u: Tensor, h0: Tensor, *, overwrite_a: bool = False) -> Tensor:
    r"""h_t = a_t h_{t-1} + u_t for t = 0 .. T-1 from h_{-1} = h0, elementwise (the time loop of a linear diagonal
    recurrence without a cell step's other work); real or complex.

    a (T, B, U), or (U,) the same at every step;  u (T, B, U);  h0 (B, U)  ->  (T + 1, B, U), h0 first.
    ``overwrite_a``: a (T, B, U) may be overwritten (with the products inside each block), saving a copy.

    In blocks of L ~ sqrt(T) steps, every block at once: inside block i (steps iL .. iL + L - 1), from a zero
    start, S_j = a_j S_{j-1} + u_j and A_j = a_j A_{j-1} = prod_{j' <= j} a_{j'} (L - 1 multiply-adds over all
    blocks at once); then the blocks' starting states one after the other, h_{iL-1} = A_{L-1} h_{(i-1)L-1} +
    S_{L-1} of block i - 1 (nb multiply-adds of one row); then every state at once, h_{iL+j} = A_j h_{iL-1} + S_j.
    ~2 sqrt(T) + 1 Python steps instead of T; the steps past the last whole block one by one.
    """
    T = u.shape[0]
    out = torch.empty((T + 1, *u.shape[1:]), dtype=torch.result_type(u, a), device=u.device)
    out[0] = h0
    fixed = a.dim() < u.dim()
    L = max(1, math.isqrt(T))
    nb = T // L if L > 1 else 0  # whole blocks (none: every step one by one)
    n = nb * L
    if nb:
        S = out[1:n + 1].view(nb, L, *u.shape[1:])  # (nb, L, B, U): the states, first the blocks' own sums
        S.copy_(u[:n].view(nb, L, *u.shape[1:]))
        if fixed:  # A_j = a^(j+1), the same in every block: (L, U)
            A = a.unsqueeze(0).repeat(L, *[1] * a.dim())
        else:
            A = (a[:n] if overwrite_a else a[:n].clone()).view(nb, L, *u.shape[1:])
        for j in range(1, L):
            # S_j = a_j S_{j-1} + u_j;  A_j = a_j A_{j-1}   (every block at once)
            S[:, j].addcmul_(a if fixed else A[:, j], S[:, j - 1])
            if fixed:
                A[j] *= A[j - 1]
            else:
                A[:, j] *= A[:, j - 1]
        # the blocks' starting states: h before block i = A_{L-1} (h before block i-1) + S_{L-1} of block i-1
        starts = torch.empty((nb, *u.shape[1:]), dtype=out.dtype, device=u.device)  # (nb, B, U)
        starts[0] = h0
        for i in range(1, nb):
            torch.addcmul(S[i - 1, -1], A[L - 1] if fixed else A[i - 1, -1], starts[i - 1], out=starts[i])
        # h_{iL+j} = A_j h_{iL-1} + S_j
        S.addcmul_(A.view(L, *[1] * (u.dim() - 2), -1) if fixed else A, starts.unsqueeze(1))  # fixed A: (L, 1.., U)
    h, hs = out[n], out[n + 1:].unbind(0)
    for t, u_t in enumerate(u[n:].unbind(0)):  # the steps past the last whole block
        # h_t = a_t h_{t-1} + u_t
        h = torch.addcmul(u_t, a if fixed else a[n + t], h, out=hs[t])
    return out


class DiagonalCell(_Cell):
    """Base of the cells whose recurrence is elementwise; subclasses define ``rows`` (G // H), ``_forward`` and
    ``multipliers``."""

    state_names = ("h",)
    gate_names = ()  # no W_hh
    diagonal = True
    rows = 1  # weight_in has rows * H rows
    structured_products = True  # chunk_steps applies diag(m_t) without forming it
    # the keep gate g_t is the multiplier m_t (RG-LRU's a_t, minGRU's 1 - z_t, minLSTM's f'_t): its path
    # prod diag(g_t) is the Jacobian product itself, so analysis.diagonal files sigma_max as the path (no second sum)
    keep_gate_is_multiplier = True
    # row r of weight_in / bias_in is a pre-activation of unit r mod H, which only h_t[r mod H] reads (the gates read
    # x_t alone and the recurrence is elementwise): analysis.param_sensitivity is exact with G/H tangents per column
    unit_rows = frozenset({"weight_in", "bias_in"})

    # cost (analysis.limits): a chunk keeps m_t (H floats per step); a product or VJP step is elementwise
    @classmethod
    def chunk_floats(cls, H: int, dense: bool = False) -> int:
        return H * H if dense else H

    @classmethod
    def chunk_temporaries(cls, dense: bool = False) -> int:
        return 6 if dense else 2

    @classmethod
    def product_flops(cls, H: int, dense: bool = False) -> int:
        return 2 * H ** 3 if dense else 10 * H  # analysis.diagonal: m_t, log|m_t|, the running sum

    @classmethod
    def vjp_flops(cls, H: int) -> int:
        return H

    def __init__(self, input_size: int, hidden_size: int, *, seed: int = 0, dtype: torch.dtype | None = None):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_in = nn.Parameter(torch.empty(self.rows * hidden_size, input_size, dtype=dtype))
        self.bias_in = nn.Parameter(torch.empty(self.rows * hidden_size, dtype=dtype))

    @classmethod
    def from_config(cls, input_size, hidden_size, config, dtype=None):
        return cls(input_size, hidden_size, seed=getattr(config, "seed", 0), dtype=dtype)

    @torch.no_grad()
    def init_weights(self, config, gen: torch.Generator) -> None:
        """torch.nn.Linear's U(-1/sqrt(I), 1/sqrt(I)) for weight_in and bias_in, drawn from ``gen`` (float64)."""
        bound = 1 / math.sqrt(self.input_size)
        for p in (self.weight_in, self.bias_in):
            p.copy_((torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound)

    def project(self, x_t: Tensor) -> Tensor:
        # W_in x_t + b_in  (every gate's pre-activation at once)
        return F.linear(x_t, self.weight_in, self.bias_in)

    def multipliers(self, xp_t: Tensor, state: State) -> Tensor:
        """m_t (..., H) with d h_t / d h_{t-1} = diag(m_t)."""
        raise NotImplementedError(f"{type(self).__name__}.multipliers")

    def linear_terms(self, xp: Tensor) -> tuple[Tensor, Tensor]:
        """(a, u), each (..., H), with h_t = a_t h_{t-1} + u_t: the recurrence is linear in h (the gates read x_t
        only), a_t = m_t."""
        raise NotImplementedError(f"{type(self).__name__}.linear_terms")

    @torch.no_grad()
    def run_states(self, xp: Tensor, state0: State) -> tuple[Tensor]:
        """Every h_t of a run, (T + 1, B, H) with state0 first: ``linear_terms`` of every step at once, then one
        multiply-add per step (``linear_scan``)."""
        a, u = self.linear_terms(xp)  # (T, B, H) each
        return (linear_scan(a, u, state0[0], overwrite_a=True),)

    def recurrent_eigenvalues(self) -> dict[str, Tensor]:
        """No fixed recurrence matrix: the factor m_t depends on x_t."""
        return {}

    def chunk_steps(self, xp: Tensor, st: State) -> DiagonalSteps:
        """J_t = diag(m_t) of a chunk of steps (xp (C, b, G)), applied without forming it."""
        return DiagonalSteps(self.multipliers(xp, st))

    vjp_steps = chunk_steps

    def _jacobian_closed_form(self, xp_t: Tensor, state: State) -> Tensor:
        # dh_t/dh_{t-1} = diag(m_t)
        return torch.diag_embed(self.multipliers(xp_t, state))  # (..., H, H)
