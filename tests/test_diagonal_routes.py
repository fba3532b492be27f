"""The vectorised routes of the time-varying diagonal cells (RG-LRU, minGRU, minLSTM) against independent references,
in float64:

- ``analysis.diagonal_chain.multiplier_log_grad_norms`` (||dL/dh_t|| of a last-step loss) against backprop and the
  renormalized step chain (down to 10^-1000), in chunks or not, with zero and NaN multipliers; the scan route of a
  loss at every step (``multiplier_chain_log_norms``) against backprop;
- ``analysis.diagonal.diagonal_products`` at T=10,000 against direct float64 products of the multipliers, and on
  every layer and direction of a stacked bidirectional network against the dense route;
- the benchmark's plain-torch reference (benchmarks/bench_modern_cells.py) against our model's gradients.

The scans under them: tests/test_diagonal_scan.py.
"""
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
from analysis.experiment import TaskModel, resolve
from analysis.gradient_stage import CHAIN_METHOD, DIAGONAL_METHOD, SCAN_METHOD, gradient_stage
from analysis.gradients import log_grad_norm_chain, probe_loss
from analysis.jacobians import report_lags
from rnn_models import ModelConfig, RecurrentNetwork
from rnn_models.cells import cell_type
from rnn_models.network import run_cell
from test_diagonal import _dense  # jacobian_products made to take its dense route
from test_gradient_stage import _both as _routes  # (chain route, backprop route)


def _same_norms(a, b):
    """||dL/dh_t|| and its 10-90% band, as floats and as exact log10, of two routes' GradientResults."""
    np.testing.assert_allclose(a.grad_norm, b.grad_norm, rtol=1e-10)
    np.testing.assert_allclose(a.log10_grad_norm, b.log10_grad_norm, rtol=0, atol=1e-10)
    np.testing.assert_allclose(a.grad_norm_band, b.grad_norm_band, rtol=1e-10)
    np.testing.assert_allclose(a.log10_grad_norm_band, b.log10_grad_norm_band, rtol=0, atol=1e-10)

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


def _direct_product(m: torch.Tensor, t: int, k: int) -> torch.Tensor:
    """prod_{s=t-k+1..t} m_s by plain float64 multiplication, (B, U)."""
    p = torch.ones_like(m[0])
    for s in range(t - k + 1, t + 1):
        p = p * m[s]
    return p


# --------------------------------------------------------------------------------------------------------------
# ||dL/dh_t|| of a last-step loss
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", GATED)
@pytest.mark.parametrize("task", ["random", "adding"])
def test_diagonal_chain_route_equals_backprop(kind, task):
    chain, back = _routes(ExperimentConfig(cell=kind, task=task, seq_len=60, hidden_size=7, batch_size=3,
                                           dtype="float64", loss_steps="last"))
    assert chain.method == DIAGONAL_METHOD and back.method != DIAGONAL_METHOD
    _same_norms(chain, back)
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
    _same_norms(scan, back)
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
