r"""Sums along time for diagonal recurrences, vectorised over the steps: the log-space products of per-step
multipliers m_t (d h_t / d h_{t-1} = diag(m_t), real (T, B, U)) and the gradient chain they drive.

    running_sum(x, start)     R_c = start + sum_{j<=c} x_j                       two-level blocked scan
    prefix_sums(x)            C_t = sum_{s<=t} x_s as a double-double hi + lo     compensated (TwoSum) scan
    LogProducts(m)            log|prod_{s=t-k+1..t} m_s| = C_t - C_{t-k} and its sign, every end step t of a lag k
    chain_log_norms(m, d)     log ||g_t|| for g_{t-1} = m_t g_t + d_{t-1} (the transposed chain of a diagonal cell)

A Python loop over T steps of (B, U) vector ops costs ~3 us per op and step; the scans here loop over the sqrt(T)
steps of a block, and over the sqrt(T) blocks, each op on every block (or every step of a block) at once.

Cancellation. For the end step T-1 alone (the products ``analysis.diagonal`` reports) the sums run from the end
(``running_sum`` of the reversed logs: every term the same sign when |m| <= 1, relative error ~ k eps, no
difference taken). For every end step the products are differences of prefix sums, C_t - C_{t-k}: with C
carried in float64 the difference would lose eps |C_t| absolutely (T = 10,000 steps of log|m| ~ -0.01: |C| ~ 100,
a one-step product of log ~ -1e-4 would keep only 1e-10 of its digits). C is therefore carried as hi + lo
(error ~ eps^2 sum |log m|), and the difference (hi_t - hi_{t-k}) + (lo_t - lo_{t-k}) is exact to a few eps of
itself. tests/test_diagonal_scan.py checks both against direct float64 products at T = 10,000.

Zeros and non-finite factors: log|0| = -inf would make C_t - C_{t-k} = -inf - (-inf) = NaN, so zeros are counted
(an exact integer prefix count) and their logs left out of C; a product that contains one is exactly 0
(log -inf), one with an infinite factor is +inf, NaN where it has a NaN factor or both. The sign is (-1)^(the
number of negative factors), from the same kind of count.

Shapes: T steps (time first), B sequences, U units; ``...`` any trailing shape.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["running_sum", "log_abs", "not_finite_logs", "logsumexp_", "prefix_sums", "LogProducts",
           "chain_log_norms"]

SAFE_LOG = 300.0  # chain_log_norms: a block's vector stays within e^(+-300) of norm 1 (its square within float64)


def _blocks(n: int) -> tuple[int, int]:
    """(L, nb): blocks of L ~ sqrt(n) steps, nb of them (L nb >= n)."""
    L = max(1, math.isqrt(max(n - 1, 0)) + 1)
    return L, -(-n // L)


def running_sum(x: Tensor, start: Tensor | None = None, *, reverse: bool = False) -> Tensor:
    r"""R_c = start + sum_{j<=c} x_j along the first dimension: x (C, ...), start (...) or None (0) -> (C, ...);
    ``reverse``: the steps taken from the end, R_c = start + sum_{j<=c} x_{C-1-j}.

    Two levels: a running sum inside blocks of L ~ sqrt(C) steps (L - 1 adds, each over every block at once),
    then the blocks' offsets (nb adds of one row each), then one add. torch.cumsum along a leading dimension
    walks the trailing ones with a stride (~3x slower than this at (2048, 16, 256)); a loop of C adds pays
    Python's ~3 us per step.
    """
    C = x.shape[0]
    if C == 0:
        return x.clone()
    L, nb = _blocks(C)
    buf = x.new_zeros((nb * L, *x.shape[1:]))
    if reverse:  # x's rows last to first, copied once
        torch.index_select(x, 0, torch.arange(C - 1, -1, -1), out=buf[:C])
    else:
        buf[:C] = x
    v = buf.view(nb, L, *x.shape[1:])  # (nb, L, ...): padding zeros at the end add nothing
    for j in range(1, L):
        # running sum inside every block at once: v[:, j] = v[:, j-1] + x_{jth of each block}
        v[:, j] += v[:, j - 1]
    off = torch.zeros_like(v[:, 0]) if start is None else start.to(x.dtype).expand_as(v[:, 0]).clone()  # (nb, ...)
    for i in range(1, nb):
        # offset of block i = start + the totals of blocks 0 .. i-1
        off[i] = off[i - 1] + v[i - 1, -1]
    v += off.unsqueeze(1)
    return buf[:C]


def log_abs(m: Tensor) -> Tensor:
    """log|m| in float64 (-inf where m = 0), m real or complex, a new tensor."""
    return m.abs().double().log_() if m.dtype != torch.float64 else m.abs().log_()


def not_finite_logs(logm: Tensor) -> bool:
    """Whether some log|m| is NaN or +inf (a NaN or infinite multiplier; -inf is an exact zero, not an error): one
    sum (a NaN or +inf anywhere makes it NaN or +inf, -inf alone keeps it -inf or finite)."""
    s = float(logm.sum())
    return math.isnan(s) or s == math.inf


def logsumexp_(x: Tensor) -> Tensor:
    """log sum exp over the last dimension, overwriting x (one exp over it, no copies): (..., U) -> (...). Rows
    that are all -inf give -inf."""
    M = x.amax(-1, keepdim=True)
    M = torch.where(torch.isfinite(M), M, torch.zeros_like(M))
    # log sum_i exp(x_i) = M + log sum_i exp(x_i - M)
    return torch.log(x.sub_(M).exp_().sum(-1)) + M[..., 0]


def _two_sum(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """s + e = a + b exactly, s = fl(a + b) (Knuth's TwoSum, no ordering needed)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _dd_add(ah: Tensor, al: Tensor, bh: Tensor, bl: Tensor) -> tuple[Tensor, Tensor]:
    """(ah + al) + (bh + bl) in double-double, renormalised so |lo| <= ulp(hi) / 2."""
    s, e = _two_sum(ah, bh)
    e = e + (al + bl)
    hi = s + e
    return hi, e - (hi - s)


def prefix_sums(x: Tensor) -> tuple[Tensor, Tensor]:
    r"""C_t = sum_{s<=t} x_s along the first dimension as hi + lo (each (C, ...) float64), compensated: the error is
    ~ eps^2 sum |x| (a plain cumsum's is ~ C eps sum |x|), so differences C_t - C_{t-k} keep their digits.

    Blocked as ``running_sum``: TwoSum inside blocks (over every block at once), double-double block offsets.
    """
    x = x.double()
    C = x.shape[0]
    if C == 0:
        return x.clone(), x.clone()
    L, nb = _blocks(C)
    hi = x.new_zeros((nb * L, *x.shape[1:]))
    hi[:C] = x
    lo = torch.zeros_like(hi)
    vh, vl = hi.view(nb, L, *x.shape[1:]), lo.view(nb, L, *x.shape[1:])  # (nb, L, ...)
    for j in range(1, L):
        # (hi, lo)_j = (hi, lo)_{j-1} + x_j: TwoSum's error term gathered in lo
        s, e = _two_sum(vh[:, j - 1], vh[:, j])
        vh[:, j] = s
        vl[:, j] = vl[:, j - 1] + e
    oh, ol = torch.zeros_like(vh[:, 0]), torch.zeros_like(vh[:, 0])  # (nb, ...) the blocks' offsets
    for i in range(1, nb):
        oh[i], ol[i] = _dd_add(oh[i - 1], ol[i - 1], vh[i - 1, -1], vl[i - 1, -1])
    h, l = _dd_add(vh, vl, oh.unsqueeze(1), ol.unsqueeze(1))
    return h.reshape(nb * L, *x.shape[1:])[:C], l.reshape(nb * L, *x.shape[1:])[:C]


def _count(flags: Tensor) -> Tensor:
    """Exact prefix counts with a leading 0: (T, ...) bool -> (T + 1, ...) int64."""
    n = torch.zeros((flags.shape[0] + 1, *flags.shape[1:]), dtype=torch.int64)
    torch.cumsum(flags.to(torch.int64), 0, out=n[1:])
    return n


class LogProducts:
    r"""log|P_{t,k}| and sign(P_{t,k}) of P_{t,k} = prod_{s=t-k+1..t} m_s (the product d h_t / d h_{t-k} of a
    diagonal cell) for every end step t, one lag k at a time, from the compensated prefix sums of log|m_s|
    (module docstring). m (T, ...) real (a complex m: its modulus, the sign then None).

    Memory: two float64 and three int64 copies of m's shape (T + 1 rows); each ``lag(k)`` is O(T ...) new.
    """

    def __init__(self, m: Tensor):
        a = m.abs().double()
        zero, inf, nan = a == 0, a == math.inf, torch.isnan(a)
        # log|m_s| where it is a finite number; the zeros, infinities and NaNs by count
        logm = torch.log(a).masked_fill_(zero | inf | nan, 0.0)
        hi, lo = prefix_sums(logm)
        pad = torch.zeros_like(logm[:1])
        self.hi, self.lo = torch.cat([pad, hi]), torch.cat([pad, lo])  # (T + 1, ...): C_{-1} = 0 first
        self.zeros, self.infs, self.nans = _count(zero), _count(inf), _count(nan)
        self.negs = None if m.is_complex() else _count(m < 0)
        self.T = m.shape[0]

    def lag(self, k: int) -> tuple[Tensor, Tensor | None]:
        r"""(log|P_{t,k}|, sign), each (T - k + 1, ...), for t = k-1 .. T-1 (row j is t = k - 1 + j): natural log,
        exactly -inf where a factor is 0; sign +-1 (0 for a zero product, NaN for a NaN one)."""
        if not 0 <= k <= self.T:
            raise ValueError(f"lag k={k} is out of range: must be in [0, {self.T}]")
        n = self.T + 1 - k

        def diff(c: Tensor) -> Tensor:  # c_{t} - c_{t-k} for every end step (rows shifted by k)
            return c[k:] - c[:n]

        # log|P_{t,k}| = C_t - C_{t-k} = (hi_t - hi_{t-k}) + (lo_t - lo_{t-k})
        log = diff(self.hi) + diff(self.lo)
        z, i, nn = diff(self.zeros) > 0, diff(self.infs) > 0, diff(self.nans) > 0
        log = log.masked_fill(z, -math.inf).masked_fill(i, math.inf).masked_fill(nn | (z & i), math.nan)
        if self.negs is None:
            return log, None
        # sign = (-1)^(number of negative factors); 0 for a zero product, NaN for an undefined one
        sign = 1.0 - 2.0 * (diff(self.negs) % 2).double()
        sign = sign.masked_fill(z, 0.0).masked_fill(nn | (z & i), math.nan)
        return log, sign


def chain_log_norms(m: Tensor, d: Tensor, carry: tuple[Tensor, Tensor] | None = None, *,
                    block: int = 32) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    r"""log ||g_t|| (natural log, (T, B)) of the reverse linear scan of a diagonal cell's transposed chain,

        g_{T-1} = d_{T-1} + c,    g_{t-1} = m_t * g_t + d_{t-1}      (t = T-1 .. 1)

    m (T, B, U) real, or complex (the real view's unit i is the pair (Re, Im), on which a step acts as |m| Rot(arg
    m): its transpose is the complex product by conj(m)); d (T, B, U) the direct terms (dl_t / dh_t of a loss at
    every step; complex for complex m). ``carry`` (u, s): c = u e^s (B, U), what a later chunk of steps passes on;
    the call returns its own, m_0 g_0 as (u, s), so a long run goes chunk by chunk from the end.

    The vector is carried as g_t = e^s v with one scale s per sequence (float64), set once per block of ``block``
    steps to the larger of the carried vector's and the block's largest direct term's norm: v and the scaled
    direct terms d e^{-s} start the block at norm <= 1, and ||g_t|| keeps its exponent in s, far below float64's
    range. Within a block v changes by at most the product of the block's multipliers; a block where that could
    take v's norm out of [e^-300, e^300] (its square, which ``vector_norm`` forms, out of float64's range) is done
    one step at a time, rescaled at every step, its norms taken by the largest entry first (``_steps``). One Python
    step per time step (an add, the norm into a buffer, a multiply).

    A loss on the last step alone (d zero but for d_{T-1}) has a closed form without the loop
    (``analysis.diagonal_chain.multiplier_log_grad_norms``).
    """
    T, B = d.shape[0], d.shape[1]
    cplx = m.is_complex()
    m = (m.conj() if cplx else m).to(torch.complex128 if cplx else torch.float64)  # the transposed step
    d = d.to(m.dtype)
    out = torch.empty(T, B, dtype=torch.float64)
    dn = _norm(d)  # (T, B)
    log_dn = torch.log(dn)  # -inf where d_t = 0
    # d_t as its direction and log norm: d_t e^{-s} = du_t exp(log_dn_t - s) never forms e^{-s} (which overflows
    # where ||g|| < 1e-308) and never multiplies a zero by it
    du = d / torch.where(dn > 0, dn, torch.ones_like(dn)).unsqueeze(-1)
    logm = torch.log(m.abs())  # (T, B, U)
    lo, hi = logm.amin(-1), logm.amax(-1)  # (T, B): the fastest shrinking and growing unit of each step
    if carry is None:
        v, s = torch.zeros_like(d[0]), torch.zeros(B, dtype=torch.float64)
    else:
        v, s = carry[0].to(m.dtype), carry[1].double()
    # v is what reaches g_t from step t + 1 (scaled by e^{-s}); each block makes it m_{t_lo} g_{t_lo}
    norms = torch.empty(block, B, dtype=torch.float64)
    t_hi = T - 1
    while t_hi >= 0:
        t_lo = max(0, t_hi - block + 1)
        n = t_hi - t_lo + 1
        if not bool(((lo[t_lo:t_hi + 1].sum(0) > -SAFE_LOG) & (hi[t_lo:t_hi + 1].sum(0) < SAFE_LOG)).all()):
            v, s = _steps(m, du, log_dn, v, s, t_lo, t_hi, out)
            t_hi = t_lo - 1
            continue
        # the block's scale: the carried vector's norm or the largest direct term it meets
        s_new = torch.maximum(s + torch.log(torch.linalg.vector_norm(v, dim=-1)), log_dn[t_lo:t_hi + 1].amax(0))
        s_new = torch.where(torch.isfinite(s_new), s_new, torch.zeros_like(s_new))  # all zero so far: scale 1
        v = v * torch.exp(s - s_new).unsqueeze(-1)
        s = s_new
        dw = (du[t_lo:t_hi + 1] * torch.exp(log_dn[t_lo:t_hi + 1] - s).unsqueeze(-1)).unbind(0)  # d_t e^{-s}
        mw = m[t_lo:t_hi + 1].unbind(0)
        for c in range(n - 1, -1, -1):
            # g_t = d_t + (what step t + 1 carries), then m_t g_t is what reaches g_{t-1}  (all scaled by e^{-s})
            g = dw[c] + v
            torch.linalg.vector_norm(g, dim=-1, out=norms[c])
            v = mw[c] * g
        out[t_lo:t_hi + 1] = torch.log(norms[:n]) + s
        t_hi = t_lo - 1
    return out, (v, s)


def _norm(v: Tensor) -> Tensor:
    """||v|| over the last dimension without squaring small or large entries out of range: a ||v / a||, a = max |v|."""
    a = v.abs().amax(-1, keepdim=True)
    return (a * torch.linalg.vector_norm(v / torch.where(a > 0, a, torch.ones_like(a)), dim=-1, keepdim=True))[..., 0]


def _steps(m, du, log_dn, v, s, t_lo: int, t_hi: int, out: Tensor) -> tuple[Tensor, Tensor]:
    """``chain_log_norms`` for steps t_hi .. t_lo one at a time, the scale reset at every step (its slow path)."""
    for t in range(t_hi, t_lo - 1, -1):
        # the step's scale: the larger of the carried part's and the direct term's norm
        s_new = torch.maximum(s + torch.log(_norm(v)), log_dn[t])
        s_new = torch.where(torch.isfinite(s_new), s_new, torch.zeros_like(s_new))
        # g_t e^{-s_new} = v e^{s - s_new} + d_t e^{-s_new}
        g = v * torch.exp(s - s_new).unsqueeze(-1) + du[t] * torch.exp(log_dn[t] - s_new).unsqueeze(-1)
        ng = _norm(g)
        out[t] = torch.log(ng) + s_new
        ng = torch.where(ng > 0, ng, torch.ones_like(ng))
        # what reaches g_{t-1}: m_t g_t, renormalised
        v, s = m[t] * (g / ng.unsqueeze(-1)), s_new + torch.log(ng)
    return v, s
