"""The scans of analysis.diagonal_scan (and rnn_models.cells.diagonal.linear_scan) against independent references,
in float64: the blocked running sums and forward scan against plain loops; the compensated prefix sums and the
every-end-step products ``LogProducts`` against math.fsum and direct float64 products at T=10,000 (the plain
prefix-sum difference shown to lose digits there); zeros, signs, infinities; the reverse scan with direct terms
``chain_log_norms`` against autograd and, far below float64's range, against decimal arithmetic. The routes built on
them: tests/test_diagonal_routes.py.
"""
import decimal
import math

import numpy as np
import pytest
import torch

from analysis.diagonal_scan import LogProducts, chain_log_norms, prefix_sums, running_sum

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = torch.float64
LN10 = math.log(10)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _direct_product(m: torch.Tensor, t: int, k: int) -> torch.Tensor:
    """prod_{s=t-k+1..t} m_s by plain float64 multiplication, (B, U)."""
    p = torch.ones_like(m[0])
    for s in range(t - k + 1, t + 1):
        p = p * m[s]
    return p


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
