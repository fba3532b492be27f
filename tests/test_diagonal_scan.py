"""The vectorised routes of the time-varying diagonal cells (RG-LRU, minGRU, minLSTM) against independent references,
in float64:

- ``analysis.diagonal_scan``: the blocked running sums (and the blocked forward scan ``linear_scan``) against a
  plain loop; the compensated prefix sums and the
  every-end-step products ``LogProducts`` against math.fsum and direct float64 products at T=10,000 (and the plain
  prefix-sum difference shown to lose digits there); zeros, signs, infinities; the reverse scan with direct terms
  ``chain_log_norms`` against autograd and, far below float64's range, against decimal arithmetic;
- ``analysis.diagonal_chain.multiplier_log_grad_norms`` (||dL/dh_t|| of a last-step loss) against backprop and the
  renormalized step chain (down to 10^-1000), in chunks or not, with zero and NaN multipliers; the scan route of a
  loss at every step (``multiplier_chain_log_norms``) against backprop;
- ``analysis.diagonal.diagonal_products`` at T=10,000 against direct float64 products of the multipliers, and on
  every layer and direction of a stacked bidirectional network against the dense route;
- the benchmark's plain-torch reference (benchmarks/bench_modern_cells.py) against our model's gradients.
"""
import decimal
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis import ExperimentConfig
from analysis import diagonal as diagonal_mod
from analysis import diagonal_chain
from analysis.diagonal import diagonal_products
from analysis.diagonal_chain import multiplier_log_grad_norms
from analysis.diagonal_scan import LogProducts, chain_log_norms, prefix_sums, running_sum
from analysis.experiment import TaskModel, resolve
from analysis.gradient_stage import CHAIN_METHOD, DIAGONAL_METHOD, DTYPES, SCAN_METHOD, gradient_stage
from analysis.gradients import log_grad_norm_chain, probe_loss
from analysis.jacobians import jacobian_products, report_lags
from rnn_models import ModelConfig, RecurrentNetwork
from rnn_models.cells import cell_type
from rnn_models.network import run_cell

pytestmark = pytest.mark.usefixtures("single_thread")

GATED = ("rglru", "mingru", "minlstm")
F64 = torch.float64
LN10 = math.log(10)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _run(kind: str, T: int, B: int = 2, I: int = 3, H: int = 5, seed: int = 0, scale: float = 1.5):
    """A float64 run of a cell at its initialisation, inputs N(0, scale^2)."""
    cell = cell_type(kind).from_config(I, H, ModelConfig(cell=kind, input_size=I, hidden_size=H, seed=seed), F64)
    x = scale * torch.randn(T, B, I, generator=_gen(seed + 1), dtype=F64)
    with torch.no_grad():
        return run_cell(cell, x, cell.init_state(B))


def _multipliers(run) -> torch.Tensor:
    """(T, B, U) m_t of every step, one step at a time (the cell's own per-step call)."""
    return torch.stack([run.cell.multipliers(run.xp[t], run.states[t]) for t in range(len(run.xp))])


# --------------------------------------------------------------------------------------------------------------
# the scans
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("C", [0, 1, 2, 3, 5, 99, 100, 101, 1000])
@pytest.mark.parametrize("reverse", [False, True])
def test_running_sum_equals_a_plain_loop(C, reverse):
    x = torch.randn(C, 2, 3, generator=_gen(C), dtype=F64)
    start = torch.randn(2, 3, generator=_gen(C + 1), dtype=F64)
    want, acc = [], start.clone()
    for j in range(C):
        acc = acc + (x[C - 1 - j] if reverse else x[j])
        want.append(acc)
    got = running_sum(x, start, reverse=reverse)
    assert got.shape == x.shape
    if C:
        scale = float(torch.stack(want).abs().max()) + float(x.abs().sum(0).max())
        assert float((got - torch.stack(want)).abs().max()) <= 4 * C * 1.2e-16 * scale
    assert torch.equal(running_sum(x)[:1], x[:1]) if C else True


@pytest.mark.parametrize("T", [0, 1, 2, 3, 5, 17, 100, 101, 600])
@pytest.mark.parametrize("fixed", [False, True])
@pytest.mark.parametrize("cplx", [False, True])
def test_blocked_linear_scan_equals_the_step_loop(T, fixed, cplx):
    """rnn_models.cells.diagonal.linear_scan (blocks of sqrt(T) steps, the tail one by one) against h_t = a_t h_{t-1}
    + u_t step by step: 1e-13 relative per state; a given (T, B, U) is left as it was unless overwrite_a."""
    from rnn_models.cells.diagonal import linear_scan
    g = _gen(T + 10 * fixed + 100 * cplx)
    a = torch.rand((4,) if fixed else (T, 2, 4), generator=g, dtype=F64)
    u = torch.randn(T, 2, 4, generator=g, dtype=F64)
    h0 = torch.randn(2, 4, generator=g, dtype=F64)
    if cplx:
        a = a * torch.exp(1j * 6 * torch.rand(a.shape, generator=g, dtype=F64))
        u, h0 = torch.complex(u, torch.randn(T, 2, 4, generator=g, dtype=F64)), h0.to(torch.complex128)
    want, h = [h0], h0
    for t in range(T):
        h = (a if fixed else a[t]) * h + u[t]
        want.append(h)
    want = torch.stack(want)
    a0 = a.clone()
    got = linear_scan(a, u, h0)
    assert got.shape == (T + 1, 2, 4) and torch.equal(a, a0)
    assert float(((got - want).abs().norm(dim=-1) / want.abs().norm(dim=-1)).max()) < 1e-13
    if not fixed:
        assert torch.equal(linear_scan(a.clone(), u, h0, overwrite_a=True), got)


def test_running_sum_keeps_an_exact_zero():
    """-inf (the log of a zero multiplier) stays -inf from there on and never becomes NaN."""
    x = -torch.rand(50, 1, 2, generator=_gen(3), dtype=F64)
    x[20, 0, 1] = -math.inf
    r = running_sum(x, reverse=True)  # from the end: step 20 is reached at row 29
    assert bool(torch.isfinite(r[:29]).all()) and bool((r[29:, 0, 1] == -math.inf).all())
    assert bool(torch.isfinite(r[:, 0, 0]).all())


def _cancelling_logs(T: int = 10_000) -> torch.Tensor:
    """log|m| (T, 1, 3) where the prefix sums grow large and late steps are small: RG-LRU-like log a ~ -1e-4 after
    100 steps of -30 (|C| ~ 3000, one-step products ~ 1e-4: the plain difference keeps ~1e-12 / 1e-4 of them)."""
    x = -1e-4 * (1 + torch.rand(T, 1, 3, generator=_gen(7), dtype=F64))
    x[:100] = -30.0 * (1 + torch.rand(100, 1, 3, generator=_gen(8), dtype=F64))
    return x


def test_compensated_prefix_sums_keep_the_digits_a_plain_cumsum_loses():
    """At T=10,000: C_t - C_{t-k} from the compensated sums within 1e-15 relative of math.fsum of the terms (an
    exactly rounded sum); the plain float64 cumsum's difference off by more than 1e-10 relative there."""
    x = _cancelling_logs()
    hi, lo = prefix_sums(x)
    plain = torch.cumsum(x, 0)
    worst_plain = 0.0
    for t, k in [(9999, 1), (9999, 2), (5000, 3), (150, 7), (9999, 500), (9999, 9950)]:
        for u in range(3):
            exact = math.fsum(x[t - k + 1:t + 1, 0, u].tolist())
            comp = float((hi[t, 0, u] - hi[t - k, 0, u]) + (lo[t, 0, u] - lo[t - k, 0, u]))
            assert abs(comp - exact) <= 1e-15 * abs(exact), (t, k, u)
            worst_plain = max(worst_plain, abs(float(plain[t, 0, u] - plain[t - k, 0, u]) - exact) / abs(exact))
    assert worst_plain > 1e-10  # why the sums are compensated


def _direct_product(m: torch.Tensor, t: int, k: int) -> torch.Tensor:
    """prod_{s=t-k+1..t} m_s by plain float64 multiplication, (B, U)."""
    p = torch.ones_like(m[0])
    for s in range(t - k + 1, t + 1):
        p = p * m[s]
    return p


def test_log_products_at_length_against_direct_products_and_fsum():
    """T=10,000 of RG-LRU-like multipliers (the cancelling logs above, a third of them negative): log10|P_{t,k}| within
    1e-10 relative of direct float64 products wherever those are finite and nonzero, their signs equal; where the
    direct product underflows to 0, within 1e-12 of math.fsum of the logs (the exact log-space value)."""
    x = _cancelling_logs()
    sign = torch.where(torch.rand(x.shape, generator=_gen(9)) < 0.3, -1.0, 1.0).to(F64)
    m = torch.exp(x) * sign
    lp = LogProducts(m)
    checked = below = 0
    for k in (1, 2, 7, 60, 150, 3000):
        log, sg = lp.lag(k)
        assert log.shape == (10_000 - k + 1, 1, 3)
        for t in sorted({k - 1, k + 40, 5000, 9999} - {-1}):
            if t - k + 1 < 0:
                continue
            p = _direct_product(m, t, k)[0]
            for u in range(3):
                got = float(log[t - k + 1, 0, u]) / LN10
                if float(p[u]) != 0.0:
                    want = math.log10(abs(float(p[u])))
                    assert abs(got - want) <= 1e-10 * max(abs(want), 1e-300), (t, k, u)
                    assert float(sg[t - k + 1, 0, u]) == math.copysign(1.0, float(p[u]))
                    checked += 1
                else:  # below float64's floor: the exact log-space value
                    want = math.fsum(x[t - k + 1:t + 1, 0, u].tolist()) / LN10
                    assert want < -307 and abs(got - want) <= 1e-12 * abs(want)
                    below += 1
    assert checked > 30 and below > 10


def test_log_products_zeros_signs_infinities():
    m = torch.tensor([2.0, -0.5, 0.0, 4.0, -3.0, math.inf, 0.25, math.nan, 1.0], dtype=F64).view(9, 1, 1)
    lp = LogProducts(m)
    for k in range(0, 10):
        log, sg = lp.lag(k)
        for j in range(10 - k):
            f = m[j:j + k, 0, 0].tolist()  # the factors of end step t = j + k - 1
            p = math.prod(f) if k else 1.0
            if math.isnan(p):
                assert math.isnan(float(log[j])) and math.isnan(float(sg[j])), (k, j)
            elif p == 0:
                assert float(log[j]) == -math.inf and float(sg[j]) == 0.0, (k, j)
            else:
                assert float(log[j]) == pytest.approx(math.log(abs(p)), rel=1e-15, abs=1e-15), (k, j)
                assert float(sg[j]) == math.copysign(1.0, p), (k, j)
    with pytest.raises(ValueError, match="lag k=10"):
        lp.lag(10)


def _chain_autograd(m: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """log ||dL/dh_t|| by autograd through h_t = m_t h_{t-1} (+ anything), L = sum_t <d_t, h_t>: dL/dh_t is the
    reverse scan g_{t-1} = m_t^T g_t + d_{t-1} (for complex m: the real view, m acting as |m| Rot(arg m))."""
    T, B, U = d.shape
    cplx = m.is_complex()
    hs, h = [], torch.zeros(B, 2 * U if cplx else U, dtype=F64, requires_grad=True)
    for t in range(T):
        if cplx:
            hc = m[t] * torch.complex(h[:, :U], h[:, U:])
            h = torch.cat([hc.real, hc.imag], -1)
        else:
            h = m[t] * h
        h = h.view_as(h)
        hs.append(h)
    dr = torch.cat([d.real, d.imag], -1) if cplx else d
    loss = sum((hs[t] * dr[t]).sum() for t in range(T))
    grads = torch.autograd.grad(loss, hs)
    return torch.log(torch.stack([g.norm(dim=-1) for g in grads]))


@pytest.mark.parametrize("cplx", [False, True])
def test_chain_with_direct_terms_equals_autograd_in_chunks_or_not(cplx):
    T, B, U = 70, 3, 4
    m = 1.4 * torch.rand(T, B, U, generator=_gen(1), dtype=F64)
    d = torch.randn(T, B, U, generator=_gen(2), dtype=F64)
    d[10:20] = 0.0  # stretches without a direct term
    if cplx:
        m = m * torch.exp(1j * 6 * torch.rand(T, B, U, generator=_gen(3), dtype=F64))
        d = torch.complex(d, torch.randn(T, B, U, generator=_gen(4), dtype=F64))
    want = _chain_autograd(m, d)
    got, _ = chain_log_norms(m, d, block=9)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-12)
    late, carry = chain_log_norms(m[40:], d[40:], block=5)  # two chunks from the end, the carry between them
    early, _ = chain_log_norms(m[:40], d[:40], carry, block=32)
    np.testing.assert_allclose(torch.cat([early, late]).numpy(), want.numpy(), rtol=0, atol=1e-12)


def _decimal_chain(m: torch.Tensor, d: torch.Tensor) -> np.ndarray:
    """The same scan in 60-digit decimal arithmetic (its exponent range reaches 10^-999999), natural log norms."""
    decimal.getcontext().prec = 60
    D = decimal.Decimal
    T, B, U = d.shape
    out = np.empty((T, B))
    for b in range(B):
        g = [D(0)] * U
        for t in range(T - 1, -1, -1):
            g = [D(float(d[t, b, i])) + (D(float(m[t + 1, b, i])) * g[i] if t < T - 1 else D(0)) for i in range(U)]
            out[t, b] = float(sum(x * x for x in g).ln() / 2)
    return out


def test_chain_with_direct_terms_far_below_float64():
    """Multipliers from 1e-30 to 1e-3 and direct terms from 1e-200 to 1: ||g_t|| down to ~1e-670, where every
    float64 product is 0; within 1e-12 relative of decimal arithmetic."""
    T, B, U = 60, 2, 3
    m = torch.pow(10.0, -3 - 27 * torch.rand(T, B, U, generator=_gen(5), dtype=F64))
    d = torch.zeros(T, B, U, dtype=F64)
    d[-1] = torch.randn(B, U, generator=_gen(6), dtype=F64)
    d[17] = 1e-200 * torch.randn(B, U, generator=_gen(7), dtype=F64)
    got, _ = chain_log_norms(m, d)
    want = _decimal_chain(m, d)
    assert want.min() / LN10 < -600
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=0)


# --------------------------------------------------------------------------------------------------------------
# ||dL/dh_t|| of a last-step loss
# --------------------------------------------------------------------------------------------------------------
def _routes(cfg):
    cfg, batch, _ = resolve(cfg)
    model = TaskModel(cfg, batch.spec, cfg.input_size).to(DTYPES[cfg.dtype])
    _, chain, _, _ = gradient_stage(cfg, batch, model, loss_steps="last")
    _, back, _, _ = gradient_stage(cfg, batch, model, loss_steps="last",
                                   loss_fn=lambda y: probe_loss(batch, y, "last"))
    return chain, back


@pytest.mark.parametrize("kind", GATED)
@pytest.mark.parametrize("task", ["random", "adding"])
def test_diagonal_chain_route_equals_backprop(kind, task):
    chain, back = _routes(ExperimentConfig(cell=kind, task=task, seq_len=60, hidden_size=7, batch_size=3,
                                           dtype="float64", loss_steps="last"))
    assert chain.method == DIAGONAL_METHOD and back.method != DIAGONAL_METHOD
    np.testing.assert_allclose(chain.grad_norm, back.grad_norm, rtol=1e-10)
    np.testing.assert_allclose(chain.log10_grad_norm, back.log10_grad_norm, rtol=0, atol=1e-10)
    np.testing.assert_allclose(chain.grad_norm_band, back.grad_norm_band, rtol=1e-10)
    np.testing.assert_allclose(chain.per_layer, back.per_layer, rtol=1e-10)
    assert chain.nonfinite is None is back.nonfinite and chain.cell_grad_norm is None


@pytest.mark.parametrize("kind", GATED + ("lru",))
def test_multiplier_chain_far_below_float64_equals_the_step_chain(kind, monkeypatch):
    """T=3000 with large inputs: ||dL/dh_0|| far below 1e-308; the closed form equals the renormalized vector-Jacobian
    chain (log_grad_norm_chain, an independent route) within 1e-10 relative of each log10 value, in one chunk and
    in chunks of 7 steps (the LRU with its lambda taken per step)."""
    run = _run(kind, T=3000, B=2, H=6, scale=4.0, seed=1)
    if kind == "rglru":  # a = sigmoid(Lambda) = 0.5 (its initialisation's a^c ~ 0.9..0.999 stays above 1e-308)
        run.cell.Lambda.data.zero_()
    v = torch.randn(2, 6, generator=_gen(3), dtype=F64)
    step = log_grad_norm_chain(run, v)
    whole = multiplier_log_grad_norms(run, v)
    assert float(step[0].min()) < -320 or kind == "lru"
    np.testing.assert_allclose(whole.numpy(), step.numpy(), rtol=1e-10, atol=1e-10)
    monkeypatch.setattr(diagonal_chain, "MAX_CHUNK_BYTES", 7 * 4 * 8 * 2 * 6)
    np.testing.assert_allclose(multiplier_log_grad_norms(run, v).numpy(), whole.numpy(), rtol=1e-13, atol=1e-13)


def test_multiplier_chain_zero_and_nan_multipliers():
    """minGRU with 1 - z = sigmoid(-1e4) = 0 for one unit at step 30: that unit's part of dL/dh_t is 0 for t < 30
    (-inf logs never NaN, as the step chain); every unit 0 there: -inf before it. A NaN multiplier: None, and the
    gradient stage takes the step chain (which says where)."""
    run = _run("mingru", T=50, B=2, H=4)
    H = 4
    run.xp[30] = run.xp[30].clone()
    run.xp[30][0, 1] = 1e4  # unit 1 of sequence 0
    run.xp[30][1, :H] = 1e4  # every unit of sequence 1
    assert float(run.cell.multipliers(run.xp[30], run.states[30])[0, 1]) == 0.0
    v = torch.randn(2, H, generator=_gen(2), dtype=F64)
    got, step = multiplier_log_grad_norms(run, v), log_grad_norm_chain(run, v)
    assert bool(torch.isfinite(got[:, 0]).all()) and bool((got[:30, 1] == -math.inf).all())
    np.testing.assert_array_equal(got[:30, 1].numpy(), step[:30, 1].numpy())
    np.testing.assert_allclose(got[:, 0].numpy(), step[:, 0].numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(got[30:].numpy(), step[30:].numpy(), rtol=0, atol=1e-12)
    run.xp[20] = run.xp[20].clone()
    run.xp[20][0, 0] = math.nan
    assert multiplier_log_grad_norms(run, v) is None


@pytest.mark.parametrize("kind", GATED + ("lru",))
@pytest.mark.parametrize("task", ["random", "copy", "adding"])
def test_scan_route_for_a_loss_at_every_step_equals_backprop(kind, task):
    """loss_steps="all" on one layer: the reverse scan with the readout's direct terms (SCAN_METHOD) against the
    backprop route, every field, in float64."""
    cfg, batch, _ = resolve(ExperimentConfig(cell=kind, task=task, seq_len=40, hidden_size=6, batch_size=3,
                                             dtype="float64", loss_steps="all"))
    model = TaskModel(cfg, batch.spec, cfg.input_size).to(F64)
    _, scan, _, _ = gradient_stage(cfg, batch, model, loss_steps="all")
    _, back, _, _ = gradient_stage(cfg, batch, model, loss_steps="all", loss_fn=lambda y: probe_loss(batch, y, "all"))
    assert scan.method == SCAN_METHOD and back.method != SCAN_METHOD
    np.testing.assert_allclose(scan.grad_norm, back.grad_norm, rtol=1e-10)
    np.testing.assert_allclose(scan.log10_grad_norm, back.log10_grad_norm, rtol=0, atol=1e-10)
    np.testing.assert_allclose(scan.grad_norm_band, back.grad_norm_band, rtol=1e-10)
    np.testing.assert_allclose(scan.per_direction, back.per_direction, rtol=1e-10)
    assert scan.loss == pytest.approx(back.loss, rel=1e-12) and scan.nonfinite is None is back.nonfinite
    torch.testing.assert_close(scan.last_state_grad, back.last_state_grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", ("minlstm", "lru"))
def test_scan_route_in_chunks(kind, monkeypatch):
    """multiplier_chain_log_norms chunk by chunk from the end (the carry between chunks) equals one chunk."""
    run = _run(kind, T=200, B=2, H=6, seed=2)
    d = torch.randn(200, 2, 6, generator=_gen(4), dtype=F64)
    whole = diagonal_chain.multiplier_chain_log_norms(run, d)
    monkeypatch.setattr(diagonal_chain, "MAX_CHUNK_BYTES", 7 * 6 * 8 * 2 * 6)
    np.testing.assert_allclose(diagonal_chain.multiplier_chain_log_norms(run, d).numpy(), whole.numpy(), rtol=0,
                               atol=1e-13)


def test_nan_input_falls_back_to_the_step_chain_route():
    cfg, batch, _ = resolve(ExperimentConfig(cell="minlstm", seq_len=30, hidden_size=4, batch_size=2,
                                             dtype="float64"))
    model = TaskModel(cfg, batch.spec, cfg.input_size).to(F64)
    with torch.no_grad():
        model.net.layers[0][0].weight_in[:4, 0] = math.nan  # the forget gate: every f'_t NaN, and h_t with it
    _, grad, _, _ = gradient_stage(cfg, batch, model, loss_steps="last")
    assert grad.method not in (DIAGONAL_METHOD, CHAIN_METHOD) and grad.nonfinite is not None


# --------------------------------------------------------------------------------------------------------------
# the products
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", GATED)
def test_products_at_length_against_direct_products(kind, monkeypatch):
    """T=10,000: log10 sigma_max / sigma_min / top singular values of d h_{T-1} / d h_{T-1-k} (|prod m| sorted)
    within 1e-10 relative of direct float64 products of the multipliers taken from the end, wherever those are
    finite and nonzero; below float64's floor within 1e-12 relative of math.fsum of the logs; in chunks of 999
    steps the same to 1e-12."""
    T = 10_000
    run = _run(kind, T=T, B=2, H=4, scale=2.0, seed=4)
    lags = [0, 1, 2, 3, 10, 100, 1000, 5000, T - 1]
    d = diagonal_products(run, lags=lags, n_singular=4, lyapunov_k=4)
    assert d.method.startswith("closed-form, diagonal (O(T H)")
    m = _multipliers(run).abs().detach()  # (T, B, H)
    logm = torch.log(m)
    p = torch.ones(2, 4, dtype=F64)
    below = 0
    for i, k in enumerate(lags):
        p = p if k == 0 else _direct_product(m, T - 1, k)
        want = np.full((2, 4), np.nan)
        for b in range(2):
            for u in range(4):  # (a subnormal product has lost digits: below float64's normal floor, fsum)
                want[b, u] = (math.log10(float(p[b, u])) if float(p[b, u]) >= sys.float_info.min else
                              math.fsum(logm[T - k:, b, u].tolist()) / LN10)
        below += int((p < sys.float_info.min).sum())
        want = -np.sort(-want, -1)  # descending per sequence
        np.testing.assert_allclose(d.spectral_norm_per_sequence[i], want[:, 0], rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(d.singular_values[i], want.mean(0), rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(d.min_singular_value[i], want[:, -1].mean(), rtol=1e-10, atol=1e-14)
    assert below > 0 or kind == "rglru"  # (the RG-LRU's a_t ~ 0.99..0.9999 keeps its products above 1e-308)
    monkeypatch.setattr(diagonal_mod, "MAX_CHUNK_BYTES", 999 * 4 * 8 * 2 * 4)
    c = diagonal_products(run, lags=lags, n_singular=4, lyapunov_k=4)
    for f in ("spectral_norm", "min_singular_value", "singular_values", "lyapunov", "update_gate_path"):
        np.testing.assert_allclose(getattr(c, f), getattr(d, f), rtol=1e-12, atol=1e-12, err_msg=f)


def _dense(run, **kw):
    run.cell.diagonal = False  # an instance attribute: jacobian_products takes its dense route
    try:
        return jacobian_products(run, **kw)
    finally:
        del run.cell.diagonal


@pytest.mark.parametrize("kind", GATED)
def test_products_of_every_layer_and_direction_equal_the_dense_route(kind):
    """A two-layer bidirectional network: each run (the backward direction in its processing order) by the diagonal
    route and by formed products (svdvals, QR), within 1e-10 in log10; the keep gate's path is sigma_max."""
    T, B, H = 16, 2, 4
    cfg = ModelConfig(cell=kind, input_size=3, hidden_size=H, num_layers=2, bidirectional=True, seed=3)
    net = RecurrentNetwork(cfg, dtype=F64)
    x = 1.5 * torch.randn(T, B, 3, generator=_gen(5), dtype=F64)
    with torch.no_grad():
        trace = net(x)
    kw = dict(lags=report_lags(T), n_singular=H, lyapunov_k=H)
    for layer in trace.runs:
        for run in layer:
            d, ref = diagonal_products(run, **kw), _dense(run, **kw)
            np.testing.assert_allclose(d.spectral_norm_per_sequence, ref.spectral_norm_per_sequence, rtol=0,
                                       atol=1e-10)
            ok = d.singular_values - d.singular_values[:, :1] > -5  # resolved by svdvals of a formed product
            np.testing.assert_allclose(d.singular_values[ok], ref.singular_values[ok], rtol=0, atol=1e-10)
            # one sequence (the QR route averages its exponents unsorted, the diagonal one sorted per sequence)
            d1, ref1 = diagonal_products(run, batch=1, **kw), _dense(run, batch=1, **kw)
            np.testing.assert_allclose(d1.lyapunov, np.sort(ref1.lyapunov)[::-1], rtol=0, atol=1e-10)
            np.testing.assert_array_equal(d.update_gate_path, d.spectral_norm)
            if ref.update_gate_path is not None:  # the dense route's own path from the gates
                np.testing.assert_allclose(d.update_gate_path, ref.update_gate_path, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------------------------------------------
# the benchmark's reference
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", GATED)
def test_benchmark_plain_reference_has_our_gradients(kind):
    """benchmarks/bench_modern_cells.plain_gated (the cell in plain torch, the target's denominator) computes the same
    loss gradients as our model's own forward+backward, in float64."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    try:
        from bench_modern_cells import plain_gated
    finally:
        sys.path.pop(0)
    cfg, batch, _ = resolve(ExperimentConfig(cell=kind, seq_len=25, hidden_size=6, batch_size=3, dtype="float64"))
    model = TaskModel(cfg, batch.spec, cfg.input_size).to(F64)
    cell = model.net.layers[0][0]
    _, y = model(batch.inputs)
    ours = dict(zip([n for n, _ in cell.named_parameters()],
                    torch.autograd.grad(y[-1, :, 0].sum(), list(cell.parameters()))))
    f = plain_gated(cell, model.readout, batch.inputs)
    f()
    assert set(f.params) == set(ours)
    for n, g in ours.items():
        torch.testing.assert_close(f.params[n].grad, g, rtol=1e-12, atol=1e-14)
