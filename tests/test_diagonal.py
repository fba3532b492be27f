"""Reference tests for analysis/diagonal.py: the O(T H) products of a diagonal cell against the dense route of
``analysis.jacobians.jacobian_products`` (formed products, renormalized, svdvals, QR for the Lyapunov exponents),
forced on the same run by hiding the cell's ``diagonal`` flag, in float64."""
import math

import numpy as np
import pytest
import torch

from analysis.diagonal import diagonal_products
from analysis.jacobians import _gate_path, jacobian_products, report_lags
from rnn_models import ModelConfig
from rnn_models.cells import cell_type
from rnn_models.network import run_cell

pytestmark = pytest.mark.usefixtures("single_thread")

KINDS = ("lru", "rglru", "mingru", "minlstm")
TOL = 1e-10


def _run(kind: str, T: int = 14, B: int = 3, I: int = 3, H: int = 6, seed: int = 0, scale: float = 1.5):
    cfg = ModelConfig(cell=kind, input_size=I, hidden_size=H, seed=seed)
    cell = cell_type(kind).from_config(I, H, cfg, torch.float64)
    x = scale * torch.randn(T, B, I, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    with torch.no_grad():
        return run_cell(cell, x, cell.init_state(B))


def _dense(run, **kw):
    run.cell.diagonal = False  # an instance attribute: jacobian_products takes its dense route
    try:
        return jacobian_products(run, **kw)
    finally:
        del run.cell.diagonal


def _resolved(sv: np.ndarray, top: np.ndarray) -> np.ndarray:
    """Where a singular value is resolved by svdvals of the formed product: above 1e-5 of sigma_max (float64)."""
    return sv - top[..., :1] > -5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lags,batch", [("all", 0), ("log", 2)])
def test_equals_the_dense_route(kind, lags, batch):
    run = _run(kind)
    T = len(run.xp)
    kw = dict(lags=report_lags(T, lags, 6), batch=batch, n_singular=4, lyapunov_k=3)
    d, ref = diagonal_products(run, **kw), _dense(run, **kw)
    assert d.lag == ref.lag and d.batch_analysed == ref.batch_analysed and d.nonfinite is None is ref.nonfinite
    np.testing.assert_allclose(d.spectral_norm, ref.spectral_norm, rtol=0, atol=TOL)
    np.testing.assert_allclose(d.spectral_norm_per_sequence, ref.spectral_norm_per_sequence, rtol=0, atol=TOL)
    ok = _resolved(d.singular_values, d.singular_values)
    np.testing.assert_allclose(d.singular_values[ok], ref.singular_values[ok], rtol=0, atol=TOL)
    low = ref.min_reliable & (d.min_singular_value - d.spectral_norm > -5)
    assert low.sum() >= 3  # the comparison covers some lags beyond 0
    np.testing.assert_allclose(d.min_singular_value[low], ref.min_singular_value[low], rtol=0, atol=TOL)
    assert d.min_reliable.all()  # exact: every sigma_min is finite here
    assert d.state_spectral_norm is ref.state_spectral_norm is None and d.cell_full is ref.cell_full is None
    assert d.cell_carousel is None
    # the keep gate's path: jacobians._gate_path of the gates over the whole sequence (and the dense route's own
    # where it files one)
    keep = run.cell.keep_gate
    if keep is None:
        assert d.update_gate_path is None
    else:
        xp, st = torch.stack(run.xp), (torch.stack([s[0] for s in run.states[:-1]]),)
        g = run.cell.gates(xp, st)[keep][:, :d.batch_analysed].detach()
        np.testing.assert_allclose(d.update_gate_path, _gate_path(torch.log(g.double()), d.lag), rtol=0, atol=TOL)
        if ref.update_gate_path is not None:
            np.testing.assert_allclose(d.update_gate_path, ref.update_gate_path, rtol=0, atol=TOL)
    assert d.lyapunov.shape == ref.lyapunov.shape == (3,)


@pytest.mark.parametrize("kind", KINDS)
def test_lyapunov_exponents_equal_the_qr_method(kind):
    """One sequence, every exponent: the QR sweep from the identity gives each unit's mean log|m| (in state
    order); the diagonal route sorts them."""
    run = _run(kind, B=1)
    kw = dict(lags=report_lags(len(run.xp)), batch=0, n_singular=6, lyapunov_k=6)
    d, ref = diagonal_products(run, **kw), _dense(run, **kw)
    np.testing.assert_allclose(d.lyapunov, np.sort(ref.lyapunov)[::-1], rtol=0, atol=TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_against_the_plain_products(kind):
    """Each lag's singular values are the |prod m| (twice per complex unit), products taken plainly in float64;
    the exponents are the sorted time means of log|m| per sequence, averaged per rank."""
    run = _run(kind, T=9, B=2)
    T, H = len(run.xp), run.cell.hidden_size
    d = diagonal_products(run, lags=list(range(T)), n_singular=H, lyapunov_k=H)
    m = torch.stack([run.cell.multipliers(run.xp[t], run.states[t]) for t in range(T)]).abs().detach()  # (T, B, U)
    if m.shape[-1] != H:
        m = torch.cat([m, m], -1)
    for k in range(T):
        prod = torch.ones(2, H, dtype=torch.float64)
        for t in range(T - k, T):
            prod = prod * m[t]
        sv = np.log10(np.sort(prod.numpy(), -1)[:, ::-1])  # (B, H) descending
        np.testing.assert_allclose(d.spectral_norm_per_sequence[k], sv[:, 0], rtol=0, atol=TOL)
        np.testing.assert_allclose(d.singular_values[k], sv.mean(0), rtol=0, atol=TOL)
        np.testing.assert_allclose(d.min_singular_value[k], sv[:, -1].mean(), rtol=0, atol=TOL)
    means = torch.log(m[1:]).mean(0).numpy()  # steps T-1 .. 1 (lags 1 .. T-1)
    np.testing.assert_allclose(d.lyapunov, np.sort(means, -1)[:, ::-1].mean(0), rtol=0, atol=TOL)


def test_no_underflow_at_length():
    """Products far below float64's range stay exact in log10 (the dense route renormalizes; a plain product
    underflows to 0 here)."""
    run = _run("mingru", T=3000, B=2, scale=3.0)
    d = diagonal_products(run, lags=[0, 1, 2999], n_singular=2, lyapunov_k=2)
    m = torch.stack([run.cell.multipliers(run.xp[t], run.states[t]) for t in range(1, 3000)])  # (T-1, B, H)
    logs = torch.log10(m).sum(0)  # (B, H)
    assert float(logs.min()) < -400  # a plain product is 0 in float64
    np.testing.assert_allclose(d.spectral_norm[-1], logs.max(-1).values.mean().item(), rtol=1e-12)
    np.testing.assert_allclose(d.min_singular_value[-1], logs.min(-1).values.mean().item(), rtol=1e-12)


@pytest.mark.parametrize("kind", ("rglru", "minlstm"))  # (the LRU's lambda does not depend on the input)
def test_nonfinite_step_is_located_as_the_dense_route_does(kind):
    run = _run(kind)
    T = len(run.xp)
    run.xp[T - 4] = run.xp[T - 4].clone()
    run.xp[T - 4][1] = math.nan
    kw = dict(lags=list(range(T)), n_singular=2, lyapunov_k=0)
    d, ref = diagonal_products(run, **kw), _dense(run, **kw)
    assert d.nonfinite == ref.nonfinite == {"quantity": "jacobian_product", "lag": 4, "timestep": T - 4,
                                            "sequence": 1, "value": "non-finite"}
    np.testing.assert_allclose(d.spectral_norm[:4], ref.spectral_norm[:4], rtol=0, atol=TOL)
    assert np.isnan(d.spectral_norm[4:]).all() and d.lyapunov is None


def test_jacobian_products_takes_the_diagonal_route():
    run = _run("minlstm")
    r = jacobian_products(run, lags=[0, 1, 5])
    assert r.method.startswith("closed-form, diagonal")
