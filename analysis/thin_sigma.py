r"""sigma_max of the Jacobian products at every reported lag without forming them (``spectra="fast"``).

    A_k = d state_{T-1} / d state_{T-1-k} = J_{T-1} J_{T-2} ... J_{T-k},     M_k = E_out^T A_k E_in

(E selects a block of the state: h->h, c->c, or the whole [h; c]). Block subspace iteration on M_k with a thin
block of r vectors per sequence, every lag at once, through the cells' closed-form steps (never a S x S matrix):

    W_k = M_k^T U_k      one VJP sweep from T-1 down: every lag's block starts at T-1 and is read at T-1-k
    Q_k = qr(W_k)
    Y_k = M_k Q_k        one JVP sweep up: lag k's block starts at T-1-k and is read at T-1
    Y_k = U' diag(s) V'^T, sigma_k = s_1 (a Ritz value, <= sigma_max), U_k <- U'

Each sweep applies one step to the blocks of every lag still under way (one GEMM per step for all of them), and
renormalizes each lag's block after every step with its log scale accumulated, so long products neither
underflow nor overflow in float32. Cost per iteration: 2 r b sum_k(k) vector-steps, against b T S^3 for the
products plus an SVD per lag.

Stopping: each lag iterates until its Ritz value s_1 changes by less than RTOL (relative, every sequence) between
iterations, at most MAX_ITER (the count of lags that did not settle is reported). Long lags settle in 2-4
iterations (their top singular value separates from the rest as the product grows); short lags, whose spectra
are flat, take more but cost little (work ~ lag). The start block is the leading subspace at T-1 of the longest
product (one JVP sweep with QR). Tested against svdvals of the formed products: within TESTED_RTOL for every cell,
float32 and float64 (tests/test_thin_sigma.py). Lyapunov exponents by the QR method ride along the first VJP sweep
(Q <- qr(J_t^T Q)), as in the exact route.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rnn_models.cells import cell_type

from . import finite
from .jacobians import LOG10E, JacobianResult, _gate_paths, _stack_states

RTOL = 1e-3  # a lag's estimate is accepted when it changes by less than this (relative) between iterations
TESTED_RTOL = 1e-2  # tests/test_thin_sigma.py: relative error against svdvals of the formed products
BLOCK = 4  # r vectors per sequence and block
MAX_ITER = 30  # short lags (flat spectra) take the most iterations, and cost the least: work ~ lag
CHUNK = 64  # steps whose coefficients are computed together


def Steps(cell, xp: Tensor, st: tuple):
    r"""``vjp(c, V) = V J_c`` and ``jvp(c, V) = (J_c V^T)^T`` for blocks V (n, b, S) of row vectors, n per sequence:
    the cell's own ``vjp_steps`` (its backward and forward-mode steps written out; the dense per-step Jacobians
    for layer norm or a kind without them; rnn_models.cells)."""
    return cell.vjp_steps(xp, st)


def _renorm(V: Tensor, scale: Tensor, n_items: int, r: int) -> Tensor:
    """Each item's block (r, b, S) divided by its Frobenius norm per sequence; scale (n_items, b) += ln norm."""
    b, S = V.shape[-2:]
    W = V.view(n_items, r, b, S)
    nrm = torch.linalg.vector_norm(W, dim=(1, 3))  # (n_items, b)
    safe = torch.where(nrm > 0, nrm, torch.ones_like(nrm))
    scale += torch.log(safe.double())
    return (W / safe.view(n_items, 1, b, 1)).view(-1, b, S)


def _chunks_down(T: int, lo: int):
    t_hi = T - 1
    while t_hi >= lo:
        t_lo = max(lo, t_hi - CHUNK + 1)
        yield t_lo, t_hi
        t_hi = t_lo - 1


def _steps(run, t_lo: int, t_hi: int, idx: Tensor) -> Steps:
    xp, st = _stack_states(run, t_lo, t_hi + 1, idx)
    return Steps(run.cell, xp, st)


def vjp_sweep(run, lags: list[int], starts: Tensor, idx: Tensor, lyap=None) -> tuple[Tensor, Tensor]:
    """starts (K, r, b, S) row blocks at T-1 (lags descending) -> (K, r, b, S) blocks V A_{k}, ln scales (K, b).

    lyap: optional (Q (b, S, nk), sums (b, nk)) advanced by Q <- qr(J_t^T Q) over every step (Lyapunov)."""
    T = len(run.xp)
    K, r, b, S = starts.shape
    out, out_scale = torch.empty_like(starts), torch.zeros(K, b, dtype=torch.float64)
    V, scale, n = starts.reshape(-1, b, S), torch.zeros(K, b, dtype=torch.float64), K
    j = 0  # steps applied so far
    for t_lo, t_hi in _chunks_down(T, max(1, T - lags[0])):
        steps = _steps(run, t_lo, t_hi, idx)
        for c in range(t_hi - t_lo, -1, -1):
            V = steps.vjp(c, V)
            V = _renorm(V, scale[:n], n, r)
            if lyap is not None:
                Q, R = finite.qr(steps.vjp(c, lyap[0].permute(2, 0, 1)).permute(1, 2, 0))  # J_t^T Q (b, S, nk)
                lyap[0] = Q
                lyap[1] += torch.log(torch.diagonal(R, dim1=-2, dim2=-1).abs().double())
            j += 1
            while n and lags[n - 1] == j:  # the shortest lag still under way is done
                n -= 1
                out[n], out_scale[n] = V.view(n + 1, r, b, S)[n], scale[n]
                V = V[: n * r]
            if not n and lyap is None:
                return out, out_scale
    return out, out_scale


def jvp_sweep(run, lags: list[int], starts: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """starts (K, r, b, S) column blocks at T-1-k (lags descending) -> (K, r, b, S) blocks A_k V, ln scales (K, b)."""
    T = len(run.xp)
    K, r, b, S = starts.shape
    V, scale, n = starts[:0].reshape(0, b, S), torch.zeros(K, b, dtype=torch.float64), 0
    t0 = T - lags[0]
    for t_lo in range(t0, T, CHUNK):
        t_hi = min(T - 1, t_lo + CHUNK - 1)
        steps = _steps(run, t_lo, t_hi, idx)
        for c in range(t_hi - t_lo + 1):
            t = t_lo + c
            while n < K and T - lags[n] == t:  # lag k starts at state T-1-k, before step T-k
                V = torch.cat([V, starts[n]], 0)
                n += 1
            V = _renorm(steps.jvp(c, V), scale[:n], n, r)
    return V.view(K, r, b, S), scale


@torch.no_grad()
def thin_jacobians(run, *, lags: list[int], batch: int = 0, lyapunov_k: int = 8, block: int = BLOCK,
                   rtol: float = RTOL, max_iter: int = MAX_ITER) -> JacobianResult:
    """sigma_max by lag of the h->h block (and for the LSTM the c->c block and the whole [h; c]) of one run,
    as ``jacobian_products`` reports them, by thin block subspace iteration (module docstring). The full spectra
    (sigma_min, the top n) are not computed: NaN, with ``extras["sigma_max_estimate"]`` saying so."""
    cell = run.cell
    T, B = len(run.xp), run.xp[0].shape[0]
    b = B if batch in (0, None) else min(batch, B)
    idx = torch.arange(b)
    H = cell.hidden_size
    S = cell.state_size(H)
    lag_set = sorted(set(lags))
    K = len(lag_set)
    blocks = {name: (sl, sl) for name, sl in cell.state_blocks(H).items()}  # name -> (out slice, in slice)
    more = [name for name in ("state", "cc") if name in blocks]  # the blocks beyond h->h (the LSTM's)
    out = {name: np.zeros((K, b)) for name in blocks}  # log10 sigma; lag 0 (the identity) -> 0
    nk = min(lyapunov_k, S)
    lyap = _lyap_start(b, S, nk, run.xp[0].dtype) if nk else None
    items = [(k, name) for k in lag_set[::-1] if k > 0 for name in blocks]  # lags descending
    stats = {"iterations": 0, "unconverged": 0}
    if items:
        sig = _iterate(run, items, blocks, idx, min(block, S), S, rtol, max_iter, stats, lyap)
        row = {k: i for i, k in enumerate(lag_set)}
        for (k, name), v in zip(items, sig):
            out[name][row[k]] = v
    jr = JacobianResult(
        lag=lag_set, spectral_norm=out["hh"].mean(1), min_singular_value=np.full(K, np.nan),
        min_reliable=np.zeros(K, dtype=bool), singular_values=np.full((K, 1), np.nan),
        spectral_norm_per_sequence=out["hh"],
        state_spectral_norm=out["state"].mean(1) if "state" in out else None,
        cell_full=out["cc"].mean(1) if "cc" in out else None, batch_analysed=b,
        lyapunov=(lyap[1] / max(1, lag_set[-1])).mean(0).numpy() if lyap is not None and lag_set[-1] > 0 else None,
        method="closed-form, thin block (VJP/JVP chains)" if not cell.layer_norm else "autograd (vmap jacrev), thin block")
    jr.extras["sigma_max_estimate"] = {
        "quantities": ["spectral_norm"] + [{"state": "state_spectral_norm", "cc": "cell_full"}[m] for m in more],
        "method": f"thin block subspace iteration through the step chains (block {min(block, S)}, every lag at "
                  "once), stopped per lag when sigma changes by less than rtol between iterations",
        "change_rtol": rtol, "tested_rtol": TESTED_RTOL, "iterations": stats["iterations"],
        "unconverged": stats["unconverged"], "not_computed": ["min_singular_value", "singular_values"],
        "svdvals_fallbacks": 0, "svdvals_from_lag": None}
    bad = np.isnan(np.stack([out[name] for name in blocks])).any(axis=(0, 2))  # (K,) a product overflowed
    if bad.any():
        jr.nonfinite = {"quantity": "jacobian_product", "lag": int(lag_set[int(np.nonzero(bad)[0][0])]),
                        "value": "non-finite"}
    _gate_paths(run, jr, idx, lag_set)
    return jr


def _lyap_start(b: int, S: int, nk: int, dtype) -> list:
    return [torch.eye(S, nk, dtype=dtype).expand(b, S, nk).clone(), torch.zeros(b, nk, dtype=torch.float64)]


def _embed(blocks_of, X: Tensor, which: int, S: int, dtype) -> Tensor:
    """(n, b, m, r) per item -> starts (n, r, b, S), each item's block in its slice (which: 0 out, 1 in)."""
    n, b, _, r = X.shape
    starts = torch.zeros(n, r, b, S, dtype=dtype)
    for i, sl in enumerate(blocks_of):
        starts[i, :, :, sl[which]] = X[i].permute(2, 0, 1).to(dtype)
    return starts


def _iterate(run, items, blocks, idx, r, S, rtol, max_iter, stats, lyap):
    """log10 sigma_max (n_items, b) of every (lag, block) item (lags descending), iterating each item until its
    Ritz value changes by less than rtol (relative, every sequence) or max_iter; Lyapunov sums ride along the
    first VJP sweep."""
    dtype, b = run.xp[0].dtype, len(idx)
    n = len(items)
    sl = [blocks[name] for _, name in items]
    size = [s[0].stop - s[0].start for s in sl]  # out and in slices have the same size here
    g = torch.Generator().manual_seed(len(run.xp) * 7919 + S)
    lead = _leading_subspace(run, items[0][0], idx, r, S, g)  # (b, S, r) at T-1
    U = [finite.qr(lead[:, s_[0]].double() + 1e-3 * torch.randn(b, m, r, generator=g, dtype=torch.float64)).Q
         for s_, m in zip(sl, size)]  # per item (b, m, r): a warm start, the same for every lag of a block
    sigma = np.full((n, b), np.nan)
    active = list(range(n))
    for it in range(max_iter):
        lags = [items[i][0] for i in active]
        blk = [sl[i] for i in active]
        starts = torch.stack([_embed([blk[j]], U[i][None], 0, S, dtype)[0] for j, i in enumerate(active)])
        W, sw = vjp_sweep(run, lags, starts, idx, lyap if it == 0 else None)  # M^T U
        Qs = [finite.qr(W[j][..., blk[j][1]].double().permute(1, 2, 0)).Q for j in range(len(active))]
        starts = torch.stack([_embed([blk[j]], Qs[j][None], 1, S, dtype)[0] for j in range(len(active))])
        Y, sy = jvp_sweep(run, lags, starts, idx)  # M Q
        still = []
        for j, i in enumerate(active):
            A, s, _ = finite.svd(Y[j][..., blk[j][0]].double().permute(1, 2, 0), full_matrices=False)
            U[i] = A
            new = (torch.log10(s[:, 0]) + sy[j] * LOG10E).numpy()  # (b,)
            with np.errstate(invalid="ignore", over="ignore"):
                change = np.abs(np.power(10.0, new - sigma[i]) - 1.0)
            sigma[i] = new
            if it == 0 or not bool(np.all(change <= rtol)):
                still.append(i)
        stats["iterations"] = it + 1
        active = still
        if not active:
            break
    stats["unconverged"] = len({items[i][0] for i in active})
    return sigma


def _leading_subspace(run, max_lag: int, idx: Tensor, r: int, S: int, g) -> Tensor:
    """The r leading directions at T-1 of the long products (b, S, r): Q <- qr(J_t Q) from T-max_lag to T-1, the
    top left singular subspace of A_k that the longer lags settle to (a warm start for every lag)."""
    T, b = len(run.xp), len(idx)
    Q = finite.qr(torch.randn(b, S, r, generator=g, dtype=torch.float64)).Q.to(run.xp[0].dtype)
    for t_lo in range(T - max_lag, T, CHUNK):
        t_hi = min(T - 1, t_lo + CHUNK - 1)
        steps = _steps(run, t_lo, t_hi, idx)
        for c in range(t_hi - t_lo + 1):
            Q = finite.qr(steps.jvp(c, Q.permute(2, 0, 1)).permute(1, 2, 0)).Q
    return Q


# ---- which route is cheaper (spectra="fast" takes it: never slower than exact) ------------------------------
THIN_ITERATIONS = 5.0  # sum over iterations of the lags still under way, in units of the first (measured: 4.5-5.3)
JVP_FACTOR = 1.2  # a JVP step against a VJP step (the same GEMM, a few more elementwise terms)
# Seconds per flop of each part against the product GEMMs', measured on the word-LM LSTM (H=400/650, T=20-100, 4
# sequences, every lag and 16 log-spaced lags, float32, one thread: benchmarks/bench_own_model_lm.py --spectra):
# the thin sweeps' many small GEMMs, QRs and renormalisations ran 1.3-3.2x slower per counted flop (the largest
# taken, so "fast" never picks the thin route where it could be the slower one); svdvals 0.58x (8 m^3 counts
# more than LAPACK's values-only bidiagonalisation does).
THIN_SECONDS_PER_FLOP = 3.2
SVD_SECONDS_PER_FLOP = 0.58


def route_flops(cell: str, H: int, T: int, lags: list[int], b: int, dense: bool = False) -> tuple[float, float]:
    """(thin, exact) flops of the Jacobian spectra of one run: the thin sweeps (module docstring) against the
    formed products P <- P J_t up to the longest lag plus an SVD per reported lag (as analysis.limits counts).
    Per kind (rnn_models.cells): a vector step ``vjp_flops`` (2 S^2 dense), a product step ``product_flops``,
    the reported ``state_blocks`` (one thin iteration and one SVD each)."""
    thin, prod, svd = _route_parts(cell, H, T, lags, b, dense)
    return thin, prod + svd


def _route_parts(cell, H, T, lags, b, dense):
    kind = cell_type(cell)
    S = kind.state_size(H)
    vec = kind.vjp_flops(H) if not dense else 2 * S * S
    sizes = [sl.stop - sl.start for sl in kind.state_blocks(H).values()]  # h->h, and c->c, [h; c] for the LSTM
    sum_k = sum(k for k in set(lags) if k > 0) * len(sizes)
    thin = THIN_ITERATIONS * (1 + JVP_FACTOR) * BLOCK * b * sum_k * vec
    per_step = kind.product_flops(H, dense)
    K = len(set(lags))
    svd = K * b * 8.0 * sum(m ** 3 for m in sizes)
    return thin, max(lags, default=0) * b * per_step, svd


def route_seconds(cell: str, H: int, T: int, lags: list[int], b: int, dense: bool = False) -> tuple[float, float]:
    """(thin, exact) in units of a product-GEMM flop's time: route_flops weighted by the measured seconds per
    flop of each part (THIN_SECONDS_PER_FLOP, SVD_SECONDS_PER_FLOP)."""
    thin, prod, svd = _route_parts(cell, H, T, lags, b, dense)
    return THIN_SECONDS_PER_FLOP * thin, prod + SVD_SECONDS_PER_FLOP * svd


def thin_is_cheaper(cell: str, H: int, T: int, lags: list[int], b: int, dense: bool = False) -> bool:
    thin, exact = route_seconds(cell, H, T, lags, b, dense)
    return thin < exact
