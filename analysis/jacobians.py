r"""Hidden-state Jacobian products dh_{T-1}/dh_{T-1-k} for every lag k, their spectra, and the cell-state flow.

Per-step Jacobians J_t = d state_t / d state_{t-1} come from the cells' closed forms (autograd's vmapped jacrev
for layer-normalized cells), computed a chunk of steps at a time. The suffix products

    P_0 = I,    P_k = P_{k-1} J_{T-k}  =  d state_{T-1} / d state_{T-1-k}

are renormalized after every multiply (P <- P / ||P||_F, log||P||_F accumulated), so products of thousands of
steps neither underflow nor overflow in float32; every reported number is carried as a log10 and the spectra
of P_k are exact (svdvals of the normalized product, shifted by the accumulated log scale).

Memory: one running product (b, S, S) and one chunk of per-step Jacobians; never all of them.

For the LSTM the state is [h; c] (S = 2H): the h->h block of P_k is dh_{T-1}/dh_{T-1-k} (every path, through c
too), the c->c block is dc_{T-1}/dc_{T-1-k} ("full" cell flow), and the carousel is the single path
prod_k diag(f) through the forget gates alone. For the GRU the update-gate path is prod_k diag(z).

Lyapunov exponents by the QR method (Benettin et al.) run in the same sweep on the transposed steps:
Q <- qr(J_t^T Q), lambda_i = (1/n) sum log|R_ii|; P and P^T have the same singular values, so the rates agree.

Batch statistics are geometric means over the analysed sequences (means of logs).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from rnn_models.network import Run

from . import finite
from .power import BLOCK, RTOL, sigma_max_block
from .progress import batch_pool, resolve_threads

LOG10E = 1.0 / math.log(10.0)
MAX_CHUNK_BYTES = 64 * 2**20


def report_lags(T: int, mode: str = "all", num: int = 48) -> list[int]:
    """Lags 0..T-1 ('all'), or about ``num`` log-spaced lags always including 0, 1 and T-1 ('log')."""
    if mode == "all" or T <= num:
        return list(range(T))
    pts = np.unique(np.round(np.logspace(0, math.log10(T - 1), max(2, num - 1))).astype(int))
    return sorted({0, 1, T - 1} | {int(p) for p in pts if 0 < p <= T - 1})


@dataclass
class JacobianResult:
    """All values are log10 of the quantity; geometric means over ``batch_analysed`` sequences."""

    lag: list[int]
    spectral_norm: np.ndarray  # (K,) sigma_max of the h->h block
    min_singular_value: np.ndarray  # (K,) sigma_min of the h->h block
    min_reliable: np.ndarray  # (K,) bool: sigma_min above the resolution of the product (1e3 * eps * S * sigma_max)
    singular_values: np.ndarray  # (K, n) top n singular values of the h->h block
    spectral_norm_per_sequence: np.ndarray  # (K, b)
    state_spectral_norm: np.ndarray | None = None  # (K,) full [h; c] state (LSTM)
    cell_full: np.ndarray | None = None  # (K,) dc_{T-1}/dc_{T-1-k} (LSTM)
    cell_carousel: np.ndarray | None = None  # (K,) prod diag(f) (LSTM)
    update_gate_path: np.ndarray | None = None  # (K,) prod diag(z) (GRU)
    lyapunov: np.ndarray | None = None  # (k,) exponents per step, natural log, largest first
    batch_analysed: int = 0
    nonfinite: dict | None = None
    method: str = "closed-form"
    extras: dict = field(default_factory=dict)


def _stack_states(run: Run, t0: int, t1: int, idx: Tensor):
    """States before steps t0..t1-1 and their inputs, for the analysed sequences: (C, b, .)."""
    if idx.numel() == run.xp[0].shape[0]:  # every sequence (idx is arange(b)): no gather per step
        return run.stacked(t0, t1)  # (C, B, G), (C, B, H) each
    xp = torch.stack([run.xp[t][idx] for t in range(t0, t1)], 0)  # (C, b, G)
    st = tuple(torch.stack([run.states[t][i][idx] for t in range(t0, t1)], 0) for i in range(len(run.states[0])))
    return xp, st


def _log10_svals(M: Tensor, log_scale: Tensor) -> Tensor:
    """log10 singular values of M (b, n, n) scaled by exp(log_scale) (b,): (b, n), descending."""
    s = finite.svdvals(M).double()
    return torch.log10(s) + (log_scale * LOG10E).unsqueeze(-1)


def _log10_sigma_max(M: Tensor, log_scale: Tensor) -> Tensor:
    """log10 sigma_max of M (b, n, n) scaled by exp(log_scale) (b,): (b,), from the largest eigenvalue of the Gram
    matrix M^T M (a symmetric eigensolver, ~1.6x faster than svdvals). The largest singular value is perfectly
    conditioned, so this is exact to float rounding (tested against float64 svdvals: relative 1e-6 in float32,
    as svdvals' own); only small singular values would lose accuracy by squaring, and none is taken from here."""
    lam = finite.sigma_max_sq(M).double().clamp_min(0.0)  # (b,) sigma_max^2 (eigvalsh of M^T M, analysis.finite)
    return 0.5 * torch.log10(lam) + log_scale * LOG10E


class _Spectra:
    """The spectra of the reported lags, computed in the call's pool while the product sweep goes on (at most
    ``2 * threads + 2`` tasks in flight, each holding a reference to one normalized product, never a copy: the
    sweep makes a new tensor at every step). Without a pool every task runs at once, in order.

    Per lag, for the cell's ``state_blocks``: svdvals of the h->h block (the whole spectrum is shown: sigma_max,
    sigma_min, the top n); sigma_max of the whole state when it is more than h ("state", the LSTM's [h; c]) and of
    the memory cell's block ("cc", the LSTM's c->c) (``_log10_sigma_max``), or the state's by the sweep's own
    block iteration (spectra="fast", set by the caller).
    """

    def __init__(self, pool, threads: int, K: int, b: int, n: int, blocks: dict[str, slice]):
        self.pool, self.max_pending = pool, 2 * threads + 2
        self.n, self.blocks = n, blocks
        self.norm, self.min = np.full((K, b), np.nan), np.full((K, b), np.nan)
        self.top = np.full((K, b, n), np.nan)
        self.state = np.full((K, b), np.nan) if "state" in blocks else None
        self.cc = np.full((K, b), np.nan) if "cc" in blocks else None
        self._pending: list = []

    def identity(self, i: int) -> None:
        """Lag 0: the product is the identity, every singular value exactly 1 (log 0)."""
        self.norm[i], self.min[i], self.top[i] = 0.0, 0.0, 0.0
        if self.state is not None:
            self.state[i] = 0.0
        if self.cc is not None:
            self.cc[i] = 0.0

    def submit(self, i: int, P: Tensor, log_scale: Tensor, *, state: bool = True) -> None:
        h = self.blocks["hh"]
        self._run(i, "hh", _log10_svals, P[:, h, h] if self.state is not None else P, log_scale)
        if self.state is not None and state:
            self._run(i, "state", _log10_sigma_max, P, log_scale)
        if self.cc is not None:
            c = self.blocks["cc"]
            self._run(i, "cc", _log10_sigma_max, P[:, c, c], log_scale)

    def _run(self, i, what, fn, M, log_scale) -> None:
        if self.pool is None:
            return self._store(i, what, fn(M, log_scale))
        self._pending.append((i, what, self.pool.submit(fn, M, log_scale)))
        while len(self._pending) > self.max_pending:
            self._collect_one()

    def _collect_one(self) -> None:
        i, what, fut = self._pending.pop(0)
        self._store(i, what, fut.result())

    def _store(self, i: int, what: str, v: Tensor) -> None:
        v = v.double().numpy()
        if what == "hh":  # (b, H) descending
            self.norm[i], self.min[i], self.top[i] = v[:, 0], v[:, -1], v[:, :self.n]
        elif what == "state":
            self.state[i] = v
        else:
            self.cc[i] = v

    def finish(self) -> None:
        while self._pending:
            self._collect_one()


class _FastSigmaMax:
    """log10 sigma_max of one block across the lag sweep by warm-started block subspace iteration
    (analysis.power, residual-certified to RTOL). Sequences whose iteration did not get there get svdvals
    (counted in ``fallbacks``); after two lags in a row with a fallback (clustered top singular values, e.g. an
    LSTM whose forget gates are all near 1) the rest of the sweep uses svdvals directly (``switched_at``)."""

    def __init__(self):
        self.U = None
        self.fallbacks = 0
        self.streak = 0
        self.switched_at = None

    def __call__(self, M: Tensor, log_scale: Tensor, lag: int, exact) -> Tensor:
        if self.switched_at is not None:
            return exact(M)
        sigma, self.U, ok = sigma_max_block(M, self.U)
        if not bool(ok.all()):
            bad = (~ok).nonzero().flatten()
            sigma[bad] = finite.svdvals(M[bad]).double()[:, 0]
            self.fallbacks += int(bad.numel())
            self.streak += 1
            if self.streak >= 2:
                self.switched_at = lag
        else:
            self.streak = 0
        return torch.log10(sigma) + log_scale * LOG10E  # (b,)


def _ChunkSteps(cell, xp: Tensor, st: tuple):
    """The per-step Jacobians of a chunk of steps as the cell applies them: ``cell.chunk_steps`` (right(c, P) =
    P @ J_c, left_t(c, Q) = J_c^T @ Q; rnn_models.cells.base)."""
    return cell.chunk_steps(xp, st)


def _gate_path(log_gate: Tensor, lags: list[int]) -> np.ndarray:
    """log10 || prod_{j<k} diag(g_{T-1-j}) ||_2 = max_units sum log g, per lag; geometric mean over batch.

    log_gate: (T, b, H) log of the gate at each time step.
    """
    T = log_gate.shape[0]
    rev = log_gate.flip(0)[: T - 1]  # (T-1, b, H): times T-1, T-2, ..., 1
    cum = torch.cat([torch.zeros_like(log_gate[:1]), rev.cumsum(0)], 0)  # (T, b, H): lag 0..T-1
    per_seq = cum.max(-1).values * LOG10E  # (T, b)
    return per_seq.mean(-1)[lags].double().numpy()


def _reliable(log_min: np.ndarray, log_max: np.ndarray, floor: float) -> np.ndarray:
    """sigma_min / sigma_max above the product's resolution (False where the product is exactly 0)."""
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(log_min - log_max, nan=-np.inf) > math.log10(floor)


@torch.no_grad()
def jacobian_products(run: Run, *, lags: list[int], batch: int = 0, n_singular: int = 8,
                      lyapunov_k: int = 8, progress=None, spectra: str = "exact", threads: int = 1) -> JacobianResult:
    """Spectra of d state_{T-1}/d state_{T-1-k} at the given lags for one layer and direction (processing order).

    batch       number of sequences analysed (0 = all)
    n_singular  top singular values kept per lag
    lyapunov_k  Lyapunov exponents computed (0 = none)
    progress    optional ``analysis.progress.Progress`` (fraction of the lags done, what); may raise Cancelled
    spectra     "exact": svdvals of every block at every lag; "fast": the blocks of which only sigma_max is kept
                (the LSTM's full [h; c] state) by warm-started block subspace iteration (an estimate, see
                analysis.power; extras["sigma_max_estimate"] says which and where it fell back to svdvals),
                the h->h and c->c spectra stay exact
    threads     size of this call's pool for the spectra, computed while the sweep goes on (0 = every core)
    """
    if getattr(run.cell, "diagonal", False):  # diag(m_t) steps: O(T H) from the multipliers (analysis.diagonal)
        from .diagonal import diagonal_products
        return diagonal_products(run, lags=lags, batch=batch, n_singular=n_singular, lyapunov_k=lyapunov_k,
                                 progress=progress)
    threads = resolve_threads(threads)
    pool = batch_pool(threads)
    try:
        return _jacobian_products(run, lags, batch, n_singular, lyapunov_k, progress, spectra, pool, threads)
    finally:
        if pool is not None:
            pool.shutdown()


def _jacobian_products(run, lags, batch, n_singular, lyapunov_k, progress, spectra, pool, threads):
    cell = run.cell
    T = len(run.xp)
    B = run.xp[0].shape[0]
    b = B if batch in (0, None) else min(batch, B)
    idx = torch.arange(b)
    H = cell.hidden_size
    blocks = cell.state_blocks(H)  # "hh", and "cc" / "state" where the cell has them
    S = cell.state_size(H)
    dtype = run.xp[0].dtype
    eps = torch.finfo(dtype).eps
    lag_set = sorted(set(lags))
    K = len(lag_set)
    pos = {k: i for i, k in enumerate(lag_set)}
    n = min(n_singular, H)

    spectra_out = _Spectra(pool, threads, K, b, n, blocks)

    P = torch.eye(S, dtype=dtype).expand(b, S, S).clone()  # (b, S, S)
    log_scale = torch.zeros(b, dtype=torch.float64)
    nk = min(lyapunov_k, S)
    Q = torch.eye(S, nk, dtype=dtype).expand(b, S, nk).clone() if nk else None
    lyap = torch.zeros(b, nk, dtype=torch.float64)
    nonfinite = None

    fast = spectra == "fast" and "state" in blocks
    fast_state = _FastSigmaMax()

    def record(k: int):
        i = pos[k]
        if fast:  # the warm-started iteration runs in order, here; the rest in the pool
            spectra_out.state[i] = fast_state(P, log_scale, k, lambda M: _log10_sigma_max(M, log_scale)).numpy()
        spectra_out.submit(i, P, log_scale, state=not fast)

    if 0 in pos:
        spectra_out.identity(pos[0])
    max_lag = lag_set[-1] if lag_set else 0
    chunk = max(1, min(64, MAX_CHUNK_BYTES // max(1, b * S * S * P.element_size())))
    k = 0
    t_hi = T - 1  # steps t = T-1 .. 1 give lags 1 .. T-1
    while k < max_lag and nonfinite is None:
        t_lo = max(1, t_hi - chunk + 1, T - max_lag)
        xp, st = _stack_states(run, t_lo, t_hi + 1, idx)
        steps = cell.chunk_steps(xp, st)  # J[c] = d state_{t_lo+c} / d state_{t_lo+c-1}
        for c in range(len(steps) - 1, -1, -1):
            k += 1
            t = t_lo + c
            # P_k = P_{k-1} J_{T-k}
            P = steps.right(c, P)
            nrm = torch.linalg.matrix_norm(P)  # (b,) Frobenius
            if not bool(torch.isfinite(nrm).all()):
                bad = int((~torch.isfinite(nrm)).nonzero()[0])
                nonfinite = {"quantity": "jacobian_product", "lag": k, "timestep": t, "sequence": bad,
                             "value": "non-finite"}
                break
            # an exactly singular step (e.g. dead ReLUs) makes that product 0 from here on: log scale -inf
            P = P / torch.where(nrm == 0, torch.ones_like(nrm), nrm).view(b, 1, 1)
            log_scale = log_scale + torch.log(nrm.double())
            if nk:
                # Q <- qr(J_t^T Q): Lyapunov exponents of the product
                Qn, R = finite.qr(steps.left_t(c, Q))
                Q = Qn
                lyap += torch.log(torch.diagonal(R, dim1=-2, dim2=-1).abs().double())
            if k in pos:
                record(k)
            if k >= max_lag:
                break
        t_hi = t_lo - 1
        if progress is not None:
            progress(k / max(1, max_lag), f"Jacobian products, lag {k}/{max_lag}")

    spectra_out.finish()
    out_norm, out_min, out_top = spectra_out.norm, spectra_out.min, spectra_out.top
    out_state, out_cc = spectra_out.state, spectra_out.cc
    res = JacobianResult(
        lag=lag_set,
        spectral_norm=out_norm.mean(1),
        min_singular_value=out_min.mean(1),
        min_reliable=_reliable(out_min.mean(1), out_norm.mean(1), 1e3 * eps * S),
        singular_values=out_top.mean(1),
        spectral_norm_per_sequence=out_norm,
        state_spectral_norm=None if out_state is None else out_state.mean(1),
        cell_full=None if out_cc is None else out_cc.mean(1),
        lyapunov=(lyap / max(1, k)).mean(0).numpy() if nk and k else None,
        batch_analysed=b,
        nonfinite=nonfinite,
        method=getattr(cell, "jacobian_text", None) or ("autograd (vmap jacrev)" if cell.layer_norm else "closed-form"),
    )
    if fast:
        res.extras["sigma_max_estimate"] = {
            "quantities": ["state_spectral_norm"],
            "method": f"warm-started block subspace iteration (block {BLOCK}), residual-certified",
            "residual_rtol": RTOL, "tested_rtol": 1e-5,
            "svdvals_fallbacks": fast_state.fallbacks, "svdvals_from_lag": fast_state.switched_at}
    _gate_paths(run, res, idx, lag_set)
    return res


def _gate_paths(run: Run, res: JacobianResult, idx: Tensor, lags: list[int]) -> None:
    """The keep gate's path prod diag(g_k) at the reported lags (the cell's ``keep_gate``): the carousel
    prod diag(f) of a memory cell (``cell_carousel``, the LSTM) or the update-gate path prod diag(z) of h
    (``update_gate_path``, the GRU)."""
    cell = run.cell
    name = cell.keep_gate
    if name is None or not lags:
        return
    T = len(run.xp)
    xp, st = _stack_states(run, 0, T, idx)
    g = cell.gates(xp, st)[name]  # (T, b, H)
    path = _gate_path(torch.log(g.double()), lags)
    if cell.c_index is not None:
        res.cell_carousel = path
    else:
        res.update_gate_path = path
