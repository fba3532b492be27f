"""The diagonal cells through the whole analysis: run_experiment (||dL/dh_t|| against autograd through the
papers' recurrences written out here in float64 torch, sigma_max by lag against formed products, every view), the
trainer, and the cost estimate of analysis.limits."""
import numpy as np
import pytest
import torch

from rnn_models.cells import LRUCell, MinGRUCell, RGLRUCell, cell_type

KINDS = ("lru", "rglru", "mingru", "minlstm")

pytestmark = pytest.mark.usefixtures("single_thread")


# --------------------------------------------------------------------------------------------------------------
# the whole analysis: run_experiment, every view
# --------------------------------------------------------------------------------------------------------------
def _torch_reference_states(cell, x: torch.Tensor) -> list[torch.Tensor]:
    """The paper's recurrence in float64 torch (complex for the LRU), h_t in the real view, each a fresh view so
    ``torch.autograd.grad(loss, hs)`` is the total dL/dh_t."""
    T, B, _ = x.shape
    H = cell.hidden_size
    p = {n: t.detach().double() for n, t in cell.named_parameters()}
    hs, h = [], torch.zeros(B, H, dtype=torch.float64, requires_grad=True)  # (a graph from h_0 on)
    for t in range(T):
        if isinstance(cell, LRUCell):
            N = H // 2
            lam = torch.exp(torch.complex(-torch.exp(p["nu_log"]), torch.exp(p["theta_log"])))
            gamma = torch.exp(p["gamma_log"]) if "gamma_log" in p else torch.ones(N, dtype=torch.float64)
            v = gamma * (x[t].to(torch.complex128) @ torch.complex(p["B_re"], p["B_im"]).T)
            hc = lam * torch.complex(h[:, :N], h[:, N:]) + v  # h_t = lambda h_{t-1} + gamma B x_t
            h = torch.cat([hc.real, hc.imag], -1)
        else:
            pre = x[t] @ p["weight_in"].T + p["bias_in"]
            if isinstance(cell, RGLRUCell):
                r, i = torch.sigmoid(pre[:, :H]), torch.sigmoid(pre[:, H:2 * H])
                a = torch.sigmoid(p["Lambda"]) ** (8.0 * r)
                xt = pre[:, 2 * H:] if pre.shape[-1] == 3 * H else x[t]
                h = a * h + torch.sqrt(1 - a ** 2) * (i * xt)
            elif isinstance(cell, MinGRUCell):
                z = torch.sigmoid(pre[:, :H])
                h = (1 - z) * h + z * pre[:, H:]
            else:
                f, i = torch.sigmoid(pre[:, :H]), torch.sigmoid(pre[:, H:2 * H])
                h = f / (f + i) * h + i / (f + i) * pre[:, 2 * H:]
        h = h.view_as(h)
        hs.append(h)
    return hs


@pytest.fixture
def captured(monkeypatch):
    """The TaskModel instances run_experiment builds (to read the exact weights it used)."""
    from analysis import experiment
    models = []
    orig = experiment.TaskModel

    class Capturing(orig):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            models.append(self)

    monkeypatch.setattr(experiment, "TaskModel", Capturing)
    return models


@pytest.mark.parametrize("kind", KINDS)
def test_run_experiment_gradients_and_products_against_references(captured, kind):
    """||dL/dh_t|| (the log-space chain through the cell's vjp_steps) against autograd through the paper's
    recurrence; sigma_max by lag against the plain products of the multipliers; the W_hh-free spectra."""
    from analysis import ExperimentConfig, run_experiment
    from analysis.tasks import make_batch
    T, B, H = 10, 3, 6
    r = run_experiment(ExperimentConfig(cell=kind, hidden_size=H, seq_len=T, batch_size=B, dtype="float64", seed=2))
    model, rc = captured[-1], r.config
    cell = model.net.layers[0][0]
    x = make_batch("random", T, B, seed=2, input_size=rc.input_size, dtype=torch.float64).inputs
    hs = _torch_reference_states(cell, x)
    probe = hs[-1] @ model.readout.weight.detach().double()[0]  # u . h_{T-1} (B,)
    grads = torch.autograd.grad(probe.sum(), hs)
    norms = torch.stack([g.norm(dim=-1) for g in grads])  # (T, B)
    np.testing.assert_allclose(r.grad.grad_norm, torch.exp(torch.log(norms).mean(1)).numpy(), rtol=1e-9)
    assert r.jac.method.startswith("closed-form, diagonal") and r.nonfinite is None
    # sigma_max(dh_{T-1}/dh_{T-1-k}) = max |prod m| (the real view's blocks of the LRU: |lambda|^k), per sequence
    with torch.no_grad():
        J = [cell.jacobian(cell.project(x[t]), (hs[t - 1].detach(),)) for t in range(1, T)]  # (B, H, H) each
        P = torch.eye(H, dtype=torch.float64).expand(B, H, H)
        for k in range(1, T):
            P = P @ J[T - 1 - k]
            sv = torch.linalg.svdvals(P)[:, 0]
            np.testing.assert_allclose(r.jac.spectral_norm[k], torch.log10(sv).mean().item(), rtol=0, atol=1e-10)
    eig = cell.recurrent_eigenvalues()
    assert set(r.spectra) == set(eig)
    for name, lam in eig.items():
        np.testing.assert_allclose(r.spectra[name]["eigenvalues"], lam.numpy(), rtol=1e-12)
        assert r.spectra[name]["spectral_radius"] == pytest.approx(float(lam.abs().max()), rel=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_run_experiment_every_view_stacked_bidirectional(kind):
    import json

    from analysis import ExperimentConfig, run_experiment
    from analysis.figures import VIEWS
    cfg = ExperimentConfig(cell=kind, hidden_size=4, seq_len=9, batch_size=2, num_layers=2, bidirectional=True,
                           layer=0, truncate=3, spectra="fast", jacobian_lags="log", num_log_lags=4)
    r = run_experiment(cfg)
    assert r.complete and r.jac_backward is not None and r.truncated is not None and r.nonfinite is None
    assert np.isfinite(r.jac.spectral_norm).all() and np.isfinite(r.grad.grad_norm).all()
    assert r.jac.extras.get("sigma_max_estimate") is None  # spectra="fast": the diagonal route is exact anyway
    json.dumps(r.to_dict())
    for view in VIEWS:
        assert isinstance(r.figures(view), dict), view
    assert repr(r).startswith("ExperimentResult(")
    if cell_type(kind).keep_gate:
        np.testing.assert_allclose(r.jac.update_gate_path, r.jac.spectral_norm, rtol=0, atol=1e-5)  # the same path


def test_cost_estimate_counts_the_diagonal_route():
    """analysis.limits: a diagonal cell's products are O(H) per step and lag (no SVD, no QR, no gate stack), so
    T=1000, H=256 passes the default limits (an SVD per lag would count ~2,000 GFLOP)."""
    import analysis.limits as lim
    from analysis import ExperimentConfig
    cfg = ExperimentConfig(cell="lru", seq_len=1000, hidden_size=256, batch_size=16)
    e = lim.estimate(cfg)
    assert e.parts["svd"] == 1000 * 16 * 256 * 16.0 and e.parts["products"] == 1000 * 16 * 10 * 256
    assert e.parts["gates"] == 0
    lim.configure(lim.Limits(2048, 2000.0, "test"))
    try:
        lim.check(cfg)  # not refused
    finally:
        lim.configure(None)


@pytest.mark.parametrize("kind", KINDS)
def test_trainer_runs_and_reports_the_fixed_recurrence(kind):
    """Training steps run; the spectral radius recorded is max |lambda| (LRU), max a^c (RG-LRU) at the step's
    weights, None for the min cells (no fixed recurrence: their factor depends on x_t)."""
    from analysis import ExperimentConfig
    from analysis.training import Trainer
    t = Trainer(ExperimentConfig(cell=kind, hidden_size=6, seq_len=12, batch_size=4, task="adding", seed=1))
    t.run(1)
    cell = t.model.net.layers[0][0]
    eig = cell.recurrent_eigenvalues()
    want = max(float(v.abs().max()) for v in eig.values()) if eig else None
    rec = t.records[0]
    assert np.isfinite(rec.loss)
    assert rec.spectral_radius == (pytest.approx(want, rel=1e-6) if want is not None else None)
