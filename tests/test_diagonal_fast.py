"""The diagonal cells' fast paths against the step-by-step ones, in float64:

- ``_Cell.run_states`` (a run without a graph: ``linear_scan``, the LRU's complex multiply-add in chunks) against
  T calls of ``cell.step``; ``run_cell`` takes it only where no graph is wanted, and keeps the states stacked;
- ``analysis.diagonal_chain`` (||dL/dh_t|| from a fixed lambda in closed form) against the renormalized
  vector-Jacobian chain ``gradients.log_grad_norm_chain`` and a numpy log-sum-exp of the formula, including a
  sequence whose gradient falls far below float64's range; the chain route against backprop;
- ``diagonal_products`` with fixed multipliers (k log|lambda|) against its own sweep over the steps;
- ``gradients._finite_rows`` (row sums) against the values one by one.
"""
import math

import numpy as np
import pytest
import torch

from analysis import ExperimentConfig
from analysis.diagonal import diagonal_products
from analysis.diagonal_chain import fixed_multiplier_log_grad_norms
from analysis.gradient_stage import CHAIN_METHOD, FIXED_METHOD
from analysis.gradients import _finite_rows, log_grad_norm_chain
from analysis.jacobians import report_lags
from rnn_models import ModelConfig
from rnn_models.cells import cell_type
from rnn_models.network import run_cell
from test_gradient_stage import _both  # (chain route, backprop route)

pytestmark = pytest.mark.usefixtures("single_thread")

KINDS = ("lru", "rglru", "mingru", "minlstm")
F64 = torch.float64


def _cell(kind: str, I: int = 3, H: int = 6, seed: int = 0, modulus: tuple[float, float] = (0.05, 0.99)):
    """A float64 cell with seeded random weights away from the initialisation (the LRU's |lambda| uniform in
    ``modulus``)."""
    cell = cell_type(kind).from_config(I, H, ModelConfig(cell=kind, input_size=I, hidden_size=H, seed=seed), F64)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, p in cell.named_parameters():
            u = torch.rand(p.shape, generator=g, dtype=F64)
            if name == "nu_log":  # |lambda| = exp(-exp(nu))
                lo, hi = modulus
                p.copy_(torch.log(-torch.log(lo + (hi - lo) * u)))
            elif name == "theta_log":
                p.copy_(torch.log(0.01 + 6.2 * u))
            else:
                p.copy_((u * 2 - 1) * 0.8)
    return cell


def _x(T: int, B: int, I: int, seed: int = 1) -> torch.Tensor:
    return 1.5 * torch.randn(T, B, I, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _step_loop(cell, x, h0):
    """The reference: T calls of ``cell.step`` (the time loop as it was), (T, B, H)."""
    xp, h, out = cell.project(x), (h0,), []
    for t in range(x.shape[0]):
        h = cell.step(xp[t], h)
        out.append(h[0])
    return torch.stack(out)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max over steps of ||a_t - b_t|| / ||b_t|| (a state is compared as a vector)."""
    return float((torch.linalg.vector_norm(a - b, dim=-1) / torch.linalg.vector_norm(b, dim=-1)).max())


@pytest.mark.parametrize("kind", KINDS)
def test_run_states_equals_the_step_loop(kind):
    """600 steps (the LRU's scan crosses two chunks of 256), a random initial state: 1e-12 relative."""
    T, B, I, H = 600, 3, 3, 6
    cell, x = _cell(kind, I, H), _x(T, B, I)
    h0 = torch.randn(B, H, generator=torch.Generator().manual_seed(5), dtype=F64)
    with torch.no_grad():
        ref = _step_loop(cell, x, h0)
        (st,) = cell.run_states(cell.project(x), (h0,))
    assert st.shape == (T + 1, B, H) and torch.equal(st[0], h0)
    assert _rel(st[1:], ref) < 1e-12


@pytest.mark.parametrize("kind", KINDS)
def test_run_cell_takes_the_scan_only_without_a_graph(kind):
    """No graph: the whole-run route, its stacks holding the lists' tensors; with a graph, views or truncation:
    the step loop (states with a graph), the same numbers."""
    T, B, I, H = 40, 2, 3, 6
    cell, x = _cell(kind, I, H), _x(T, B, I)
    h0 = cell.init_state(B)
    with torch.no_grad():
        fast = run_cell(cell, x, h0)
    assert fast.xp_stack is not None and fast.state_stack[0].shape == (T + 1, B, H)
    assert all(fast.states[t + 1][0].data_ptr() == fast.state_stack[0][t + 1].data_ptr() for t in range(T))
    xp, st = fast.stacked(3, 9)
    assert torch.equal(xp, torch.stack(fast.xp[3:9])) and torch.equal(st[0], torch.stack([s[0] for s in fast.states[3:9]]))
    for kw in ({}, {"views": True}, {"detach_every": 7}):
        slow = run_cell(cell, x, h0, **kw)
        assert slow.xp_stack is None and slow.states[-1][0].requires_grad, kw
        assert _rel(fast.state_series(0), slow.state_series(0).detach()) < 1e-12, kw
    gru = cell_type("gru").from_config(I, H, ModelConfig(cell="gru", input_size=I, hidden_size=H), F64)
    with torch.no_grad():
        assert run_cell(gru, x, gru.init_state(B)).xp_stack is None  # no whole-run route: the step loop


def test_stacks_step_aside_for_a_replaced_entry():
    cell, x = _cell("mingru"), _x(12, 2, 3)
    with torch.no_grad():
        run = run_cell(cell, x, cell.init_state(2))
    run.xp[4] = run.xp[4].clone()
    run.xp[4][1] = math.nan
    xp, _ = run.stacked(0, 12)
    assert bool(torch.isnan(xp[4, 1]).all()) and not bool(torch.isnan(run.xp_stack).any())


def test_lru_stepper_equals_step():
    cell = _cell("lru")
    xp, h = cell.project(_x(5, 2, 3)), torch.randn(5, 2, 6, dtype=F64)
    torch.testing.assert_close(cell.stepper()(xp, (h,))[0], cell.step(xp, (h,))[0], rtol=0, atol=0)
    a, b = cell.coefficients()
    lam = torch.complex(*cell.lambda_parts())
    hc = torch.complex(h[..., :3], h[..., 3:]) * lam + torch.complex(xp[..., :3], xp[..., 3:])  # lambda h + u
    torch.testing.assert_close(cell.step(xp, (h,))[0], torch.cat([hc.real, hc.imag], -1), rtol=1e-14, atol=1e-14)


def _lru_run(T: int, B: int, modulus, seed: int = 0, H: int = 8, nu: dict | None = None):
    """A run of a float64 LRU; ``nu`` {unit: nu_log} set before it (8.0: lambda = exp(-e^8) = 0 in float64)."""
    cell, x = _cell("lru", 3, H, seed=seed, modulus=modulus), _x(T, B, 3, seed + 1)
    with torch.no_grad():
        for i, v in (nu or {}).items():
            cell.nu_log[i] = v
        return run_cell(cell, x, cell.init_state(B))


def _closed_form(run, v_last: torch.Tensor) -> np.ndarray:
    """log10 ||v_last J^k||, t = T-1-k, by numpy: per sequence log-sum-exp over units of log w_i + 2 k log|lambda_i|
    (an independent evaluation of the formula), (T, B)."""
    T, (B, H) = len(run.xp), v_last.shape
    lam = run.cell.fixed_multipliers().detach().numpy()
    v = v_last.double().numpy()
    logw = np.log(v[:, : H // 2] ** 2 + v[:, H // 2:] ** 2)  # (B, U)
    k = np.arange(T)[:, None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = logw[None] + np.where(k == 0, 0.0, 2 * k * np.log(np.abs(lam))[None, None])  # (T, B, U)
    return (np.logaddexp.reduce(terms, axis=-1) / (2 * math.log(10)))[::-1]


def test_fixed_chain_equals_the_step_chain_and_the_formula():
    """T=300, |lambda| in (0.05, 0.99): log10 ||dL/dh_t|| within 1e-12 relative (of the norm) of the renormalized
    vector-Jacobian chain, and of numpy's log-sum-exp of the formula."""
    run = _lru_run(300, 3, (0.05, 0.99))
    v = torch.randn(3, 8, generator=torch.Generator().manual_seed(9), dtype=F64)
    fast = fixed_multiplier_log_grad_norms(run, v)
    step = log_grad_norm_chain(run, v)
    # |d log10 n| * ln 10 is the relative error of the norm n
    assert float((fast - step).abs().max()) * math.log(10) < 1e-12
    np.testing.assert_allclose(fast.numpy(), _closed_form(run, v), rtol=0, atol=1e-12 / math.log(10))


def test_fixed_chain_far_below_float64():
    """T=4000, |lambda| in (0.5, 0.6): ||dL/dh_0|| ~ 10^-900, far below float64 (1e-308), which only logs carry; the
    closed form within 1e-12 relative of the step chain's log10 values and of numpy's formula."""
    run = _lru_run(4000, 2, (0.5, 0.6), seed=3)
    v = torch.randn(2, 8, generator=torch.Generator().manual_seed(4), dtype=F64)
    fast = fixed_multiplier_log_grad_norms(run, v)
    assert float(fast[0].max()) < -800
    np.testing.assert_allclose(fast.numpy(), log_grad_norm_chain(run, v).numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fast.numpy(), _closed_form(run, v), rtol=1e-12, atol=1e-12)


def test_fixed_chain_zero_units_zero_gradients_and_nan():
    """A unit with lambda = 0 (it counts at t = T-1 only), a sequence whose gradient is 0 (log -inf), a unit with
    a different speed: as the step chain; a NaN lambda: None (the step chain runs and reports)."""
    run = _lru_run(50, 3, (0.3, 0.95), seed=6, nu={1: 8.0})
    assert float(run.cell.fixed_multipliers()[1].abs().detach()) == 0.0
    v = torch.randn(3, 8, generator=torch.Generator().manual_seed(2), dtype=F64)
    v[2] = 0.0
    fast, step = fixed_multiplier_log_grad_norms(run, v), log_grad_norm_chain(run, v)
    assert bool((fast[:, 2] == -math.inf).all()) and bool((step[:, 2] == -math.inf).all())
    np.testing.assert_allclose(fast[:, :2].numpy(), step[:, :2].numpy(), rtol=0, atol=1e-12)
    assert fixed_multiplier_log_grad_norms(_lru_run(50, 3, (0.3, 0.95), seed=6, nu={0: math.nan}), v) is None


@pytest.mark.parametrize("task", ["random", "adding"])
def test_lru_chain_route_equals_backprop(task):
    chain, back = _both(ExperimentConfig(cell="lru", task=task, seq_len=60, hidden_size=8, batch_size=3,
                                         dtype="float64", loss_steps="last"))
    assert chain.method == FIXED_METHOD and back.method not in (CHAIN_METHOD, FIXED_METHOD)
    np.testing.assert_allclose(chain.grad_norm, back.grad_norm, rtol=1e-10)
    np.testing.assert_allclose(chain.log10_grad_norm, back.log10_grad_norm, rtol=0, atol=1e-10)
    np.testing.assert_allclose(chain.grad_norm_band, back.grad_norm_band, rtol=1e-10)
    assert chain.nonfinite is None is back.nonfinite


def _sweep(run, **kw):
    """diagonal_products by its sweep over the steps (the fixed multipliers hidden by an instance attribute)."""
    run.cell.fixed_multipliers = lambda: None
    try:
        return diagonal_products(run, **kw)
    finally:
        del run.cell.fixed_multipliers


@pytest.mark.parametrize("T,modulus,lags,batch,n", [(40, (0.05, 0.99), "all", 0, 3), (40, (0.3, 0.9), "log", 2, 8),
                                                     (3000, (0.5, 0.6), "all", 0, 4)])
def test_fixed_products_equal_the_sweep(T, modulus, lags, batch, n):
    """Every field within 1e-12 relative of the sweep's log10 values (T=3000: sigma_min(P_k) down to 10^-720)."""
    run = _lru_run(T, 3, modulus, seed=T)
    kw = dict(lags=report_lags(T, lags, 12), batch=batch, n_singular=n, lyapunov_k=5)
    d, ref = diagonal_products(run, **kw), _sweep(run, **kw)
    assert d.method.startswith("closed-form, diagonal (fixed") and not ref.method.startswith(d.method)
    assert d.lag == ref.lag and d.batch_analysed == ref.batch_analysed and d.nonfinite is None is ref.nonfinite
    for f in ("spectral_norm", "min_singular_value", "singular_values", "spectral_norm_per_sequence", "lyapunov"):
        np.testing.assert_allclose(getattr(d, f), getattr(ref, f), rtol=1e-12, atol=1e-12, err_msg=f)
    np.testing.assert_array_equal(d.min_reliable, ref.min_reliable)
    if T == 3000:
        assert float(d.min_singular_value[-1]) < -700  # far below float64 (1e-308)


def test_fixed_products_zero_and_nan_multipliers_as_the_sweep():
    run = _lru_run(20, 2, (0.3, 0.9), seed=8, nu={2: 8.0})  # lambda_2 = 0: sigma_min(P_k) = 0 for k >= 1
    kw = dict(lags=list(range(20)), n_singular=4, lyapunov_k=4)
    d, ref = diagonal_products(run, **kw), _sweep(run, **kw)
    np.testing.assert_array_equal(d.min_singular_value, ref.min_singular_value)
    np.testing.assert_array_equal(d.min_reliable, ref.min_reliable)
    np.testing.assert_allclose(d.spectral_norm, ref.spectral_norm, rtol=1e-12, atol=1e-12)
    run = _lru_run(20, 2, (0.3, 0.9), seed=8, nu={2: 8.0, 0: math.nan})
    d, ref = diagonal_products(run, **kw), _sweep(run, **kw)
    assert d.nonfinite == ref.nonfinite == {"quantity": "jacobian_product", "lag": 1, "timestep": 19, "sequence": 0,
                                            "value": "non-finite"}
    assert d.lyapunov is None is ref.lyapunov
    np.testing.assert_array_equal(d.spectral_norm, ref.spectral_norm)


def test_finite_rows_by_sums_and_one_by_one():
    x = torch.randn(6, 3, 4)
    assert bool(_finite_rows(x).all())
    x[1] = 3e38  # every value finite, the row's float32 sum overflows: tested one by one
    x[3, 2, 1], x[5, 0, 0] = math.nan, -math.inf
    assert _finite_rows(x).tolist() == [True, True, True, False, True, False]
    assert _finite_rows(x).tolist() == torch.isfinite(x).flatten(1).all(1).tolist()
