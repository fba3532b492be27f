"""Sensitivity of h_t to the recurrent parameters (analysis.param_sensitivity): the exact paths against float64
autograd, the Hutchinson estimate against the exact value within its stated standard error, the scalar linear
recurrence against Zucchet & Orvieto's closed forms, and log space past float64's range."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from analysis import ExperimentConfig, run_experiment
from analysis.param_sensitivity import layer_input, param_sensitivity
from rnn_models.cells import _Cell
from rnn_models.config import ModelConfig
from rnn_models.network import RecurrentNetwork, run_cell


TINY = dict(cell="rnn", hidden_size=4, seq_len=10, batch_size=3, dtype="float64", seed=3)


def _net(cell: str, H: int = 4, I: int = 3, seed: int = 1, **kw) -> RecurrentNetwork:
    torch.manual_seed(seed)
    return RecurrentNetwork(ModelConfig(cell=cell, hidden_size=H, input_size=I, seed=seed, **kw), dtype=torch.float64)


def _reference(net: RecurrentNetwork, x: torch.Tensor, names: list[str], layer: int = 0, d: int = 0) -> np.ndarray:
    """log10 mean_b ||dh_t/dtheta||_F^2 (T,) by torch.autograd.functional.jacobian of every h_t (time order)."""
    cell = net.layers[layer][d]
    P = {n: p.detach().clone() for n, p in cell.named_parameters()}

    def h_all(*vals):
        full = {**P, **dict(zip(names, vals))}
        tr = torch.func.functional_call(net, {f"layers.{layer}.{d}.{k}": v for k, v in full.items()}, (x,))
        return torch.stack(tr.runs[layer][d].h_in_time_order())  # (T, B, H)

    J = torch.autograd.functional.jacobian(h_all, tuple(P[n] for n in names))  # each (T, B, H, *shape)
    S = sum((j.reshape(*j.shape[:3], -1) ** 2).sum((-1, -2)) for j in J)  # (T, B)
    return torch.log10(S.mean(1)).numpy()


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_exact_equals_float64_autograd(cell):
    net = _net(cell)
    x = torch.randn(8, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    run = net(x).runs[0][0]
    r = param_sensitivity(run)  # weight_hh (16-64 entries) and bias_hh: both by a tangent basis
    assert r.params == ["weight_hh", "bias_hh"] and r.method == "exact" and r.rel_se is None
    np.testing.assert_allclose(r.log10_sensitivity, _reference(net, x, r.params), rtol=0, atol=1e-10)
    for name, b in r.blocks.items():  # the per-block breakdown, each exact too
        np.testing.assert_allclose(b["log10_sensitivity"], _reference(net, x, [name]), rtol=0, atol=1e-10)
    hs = torch.stack([s[0] for s in run.states[1:]]).detach()  # (T, B, H)
    np.testing.assert_allclose(r.log10_state_energy, torch.log10((hs ** 2).sum(-1).mean(1)).numpy(), atol=1e-12)
    np.testing.assert_allclose(r.log10_ratio, r.log10_sensitivity - r.log10_state_energy, atol=1e-12)


def test_parameters_through_the_input_and_the_backward_direction_of_an_upper_layer():
    net = _net("lstm", num_layers=2, bidirectional=True)
    x = torch.randn(6, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    tr = net(x)
    run = tr.runs[1][1]  # layer 1 reads [h_fwd; h_bwd] of layer 0, processed from t = T-1 down
    names = ["weight_ih", "bias_ih", "weight_hh"]
    with pytest.raises(ValueError, match="input projection"):
        param_sensitivity(run, params=names)
    r = param_sensitivity(run, params=names, x=layer_input(tr.runs, 1, x))
    np.testing.assert_allclose(r.log10_sensitivity, _reference(net, x, names, layer=1, d=1), atol=1e-10)
    with pytest.raises(ValueError, match="params='nope' is not a parameter"):
        param_sensitivity(run, params=["nope"])


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_hutchinson_within_its_stated_standard_error(cell):
    """Forced onto the estimate (exact_max=0): |estimate / exact - 1| <= 4 relative standard errors at every
    step, over 6 seeds; and the stated error is calibrated: |z| <= 2 for most (step, seed) pairs."""
    net = _net(cell, H=4)
    x = torch.randn(8, 16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    run = net(x).runs[0][0]
    exact = param_sensitivity(run)
    zs = []
    for seed in range(6):
        est = param_sensitivity(run, exact_max=0, k=8, seed=seed)
        assert est.method == "estimate (Hutchinson, K=8)" and est.rel_se is not None
        ratio = 10.0 ** (est.log10_sensitivity - exact.log10_sensitivity)
        ok = est.rel_se > 0  # an exactly known zero (W_hh at t=0, the initial state is 0) has no spread
        z = (ratio[ok] - 1) / est.rel_se[ok]
        assert np.all(np.abs(z) <= 4), (seed, z)
        assert np.all(est.rel_se < 0.2)  # K=8 per sequence, 16 sequences: a few percent
        zs.append(z)
    z = np.concatenate(zs)
    assert np.mean(np.abs(z) <= 2) >= 0.8 and 0.4 < np.std(z) < 1.6


def test_mixed_method_names_the_estimated_block():
    net = _net("rnn", H=20)  # weight_hh 400 entries > 256: estimated; bias_hh 20: exact
    x = torch.randn(5, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    r = param_sensitivity(net(x).runs[0][0])
    assert r.method == "estimate (Hutchinson, K=8): weight_hh; exact: bias_hh"
    assert r.blocks["bias_hh"]["rel_se"] is None and r.blocks["weight_hh"]["rel_se"] is not None
    np.testing.assert_allclose(r.blocks["bias_hh"]["log10_sensitivity"], _reference(net, x, ["bias_hh"]), atol=1e-10)


class _Diag(_Cell):
    """h_t = tanh(lam * h_{t-1} + xp_t + b): every entry of lam and b moves one unit of h."""

    name = ""  # not registered
    state_names, gate_names = ("h",), ()

    def __init__(self, H: int):
        super().__init__()
        self.input_size, self.hidden_size = 1, H
        g = torch.Generator().manual_seed(0)
        self.lam = nn.Parameter(torch.rand(H, generator=g, dtype=torch.float64) * 1.8 - 0.9)
        self.b = nn.Parameter(torch.randn(H, generator=g, dtype=torch.float64) * 0.1)
        self.w = nn.Parameter(torch.randn(H, 1, generator=g, dtype=torch.float64))

    def project(self, x):
        return x @ self.w.T

    def _forward(self, xp, state):
        (h,) = state
        return (torch.tanh(self.lam * h + xp + self.b),), {}


class _DiagDeclared(_Diag):
    unitwise_params = frozenset({"lam", "b"})


def test_unitwise_blocks_one_tangent_equal_the_basis():
    x = torch.randn(12, 3, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    runs = [run_cell(c, x, c.init_state(3)) for c in (_Diag(300), _DiagDeclared(300))]
    basis = param_sensitivity(runs[0], params=["lam", "b"], exact_max=300)
    one = param_sensitivity(runs[1], params=["lam", "b"], exact_max=0)  # above exact_max, but declared unit-wise
    assert one.method == "exact" and one.blocks["lam"]["method"].startswith("exact (unit-wise")
    assert basis.blocks["lam"]["method"] == "exact (tangent basis, 300 tangents)"
    np.testing.assert_allclose(one.log10_sensitivity, basis.log10_sensitivity, atol=1e-12)
    assert param_sensitivity(runs[0], x=x).params == ["lam", "b", "w"]  # a cell that declares nothing: all of them


def _scalar_linear(lam: float) -> RecurrentNetwork:
    net = RecurrentNetwork(ModelConfig(cell="rnn", activation="linear", hidden_size=1, input_size=1),
                           dtype=torch.float64)
    cell = net.layers[0][0]
    with torch.no_grad():
        cell.weight_hh.fill_(lam)
        cell.weight_ih.fill_(1.0)
        cell.bias_ih.zero_()
        cell.bias_hh.zero_()
    return net


@pytest.mark.parametrize("lam", [0.5, 0.9, 0.99])
def test_scalar_linear_recurrence_closed_forms(lam):
    """h_t = lam h_{t-1} + x_t, x_t ~ N(0, 1): E[h^2] -> 1/(1-lam^2), E[(dh/dlam)^2] -> (1+lam^2)/(1-lam^2)^3
    (T = 12/(1-lam) >> 1/(1-lam), at least 50: lam^(2T) < 1e-10, the limits reached; B = 2048 sequences: h_T and
    dh_T/dlam are Gaussian, so each sample mean of squares is within sqrt(2/B) = 3.1% of its expectation, one
    standard deviation: 10% is over three)."""
    T, B = max(50, math.ceil(12 / (1 - lam))), 2048
    net = _scalar_linear(lam)
    x = torch.randn(T, B, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    r = param_sensitivity(net(x).runs[0][0], params=["weight_hh"])
    E, S = 10.0 ** r.log10_state_energy[-1], 10.0 ** r.log10_sensitivity[-1]
    assert E == pytest.approx(1 / (1 - lam ** 2), rel=0.10)
    assert S == pytest.approx((1 + lam ** 2) / (1 - lam ** 2) ** 3, rel=0.10)
    assert r.method == "exact"


def test_log_space_past_float64_and_nonfinite_reported():
    """h_t = 2 h_{t-1} with zero inputs stays 0, while dh_t/db_hh = 2^{t+1} - 1 passes float64's 1.8e308 at
    t ~ 1023: S_t = (2^{t+1} - 1)^2 is carried exactly in log10 (~660 decades at t = 1099)."""
    T = 1100
    net = _scalar_linear(2.0)
    r = param_sensitivity(net(torch.zeros(T, 1, 1, dtype=torch.float64)).runs[0][0], params=["bias_hh"])
    t = np.arange(T)
    want = 2 * (t + 1) * math.log10(2.0) + 2 * np.log10(1 - 2.0 ** -(t + 1.0))
    np.testing.assert_allclose(r.log10_sensitivity, want, rtol=1e-12, atol=1e-9)
    assert r.log10_sensitivity[-1] > 600 and r.nonfinite is None
    assert np.all(np.isneginf(r.log10_state_energy))  # h = 0 exactly
    # with unit inputs the run itself overflows (h_t = 2^{t+1} - 1): reported at that step, NaN from there on
    x = torch.ones(T, 1, 1, dtype=torch.float64)
    run = net(x).runs[0][0]
    r = param_sensitivity(run, params=["weight_hh"])
    first_bad = next(s for s in range(T) if not torch.isfinite(run.states[s + 1][0]).all())
    assert r.nonfinite == {"quantity": "hidden_state", "timestep": first_bad, "sequence": 0}
    assert np.all(np.isnan(r.log10_sensitivity[first_bad:])) and np.all(np.isfinite(r.log10_sensitivity[1:first_bad]))
    d = r.to_dict()
    assert d["log10_sensitivity"][first_bad] is None and d["nonfinite"]["timestep"] == first_bad


def test_float32_run_analysed_in_float64_and_bad_arguments():
    net = RecurrentNetwork(ModelConfig(cell="gru", hidden_size=3, input_size=2))  # float32
    x = torch.randn(4, 2, 2)
    r = param_sensitivity(net(x).runs[0][0])
    assert r.log10_sensitivity.dtype == np.float64 and np.all(np.isfinite(r.log10_sensitivity))
    for bad in (dict(k=1), dict(k=True), dict(exact_max=-1)):
        with pytest.raises(ValueError, match=list(bad)[0]):
            param_sensitivity(net(x).runs[0][0], **bad)


def test_two_threads_at_once_give_the_serial_numbers():
    """Forward AD's dual levels are process-wide: concurrent callers (a comparison's cells, the dashboard's
    sessions) take turns and get exactly what they get alone."""
    import threading
    runs = []
    for cell in ("rnn", "gru", "lstm"):
        net = _net(cell, H=5)
        x = torch.randn(20, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
        runs.append(net(x).runs[0][0])
    alone = [param_sensitivity(r).log10_sensitivity for r in runs]
    got, errors = {}, []

    def go(i):
        try:
            got[i] = param_sensitivity(runs[i]).log10_sensitivity
        except Exception as e:  # noqa: BLE001 - recorded for the assert
            errors.append(e)
    threads = [threading.Thread(target=go, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in range(3):
        np.testing.assert_array_equal(got[i], alone[i])


def test_a_kind_the_user_registers_gets_all_its_parameters_exactly():
    """A kind that declares no recurrent_params (test_registry's toy two-state cell, no W_hh, its input projection
    P x + b a parameter too): theta = every parameter, the ones inside cell.project through the layer's input."""
    from test_registry import Elman2Cell

    from analysis.experiment import TaskModel, resolve
    from rnn_models.cells import registry
    registry.register(Elman2Cell)
    try:
        cfg = ExperimentConfig(**{**TINY, "cell": "elman2"})
        ps = run_experiment(cfg, views="sensitivity").param_sensitivity
        assert ps.params == ["A", "K", "N", "P", "b"] and ps.method == "exact"
        c, batch, _ = resolve(cfg)
        model = TaskModel(c, batch.spec, c.input_size).to(torch.float64)
        np.testing.assert_allclose(ps.log10_sensitivity, _reference(model.net, batch.inputs, ps.params), atol=1e-10)
    finally:
        registry._REGISTRY.pop("elman2", None)


def test_the_lru_declares_unitwise_blocks_and_they_are_exact():
    """The LRU's nu_log, theta_log, gamma_log move one complex unit each (declared unitwise_params): one all-ones
    tangent per block equals float64 autograd; its default theta is lambda's (nu_log, theta_log), which act in the
    step (lambda is not in the projected input u_t), so the run alone suffices (x changes nothing)."""
    net = RecurrentNetwork(ModelConfig(cell="lru", hidden_size=6, input_size=3, seed=2), dtype=torch.float64)
    x = torch.randn(9, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    run = net(x).runs[0][0]
    r = param_sensitivity(run, x=x)
    np.testing.assert_allclose(param_sensitivity(run).log10_sensitivity, r.log10_sensitivity, rtol=0, atol=1e-12)
    assert r.params == ["nu_log", "theta_log"] and r.method == "exact"
    assert all(b["method"].startswith("exact (unit-wise") for b in r.blocks.values())
    np.testing.assert_allclose(r.log10_sensitivity, _reference(net, x, r.params), atol=1e-10)
    g = param_sensitivity(run, x=x, params=["gamma_log", "B_re"])  # B_re is not unit-wise: a tangent basis
    assert g.blocks["B_re"]["method"] == "exact (tangent basis, 9 tangents)"
    np.testing.assert_allclose(g.log10_sensitivity, _reference(net, x, ["gamma_log", "B_re"]), atol=1e-10)


@pytest.mark.parametrize("kind, I, params, methods", [
    ("rglru", 3, ["Lambda", "weight_in", "bias_in"], ["unit-wise", "unit rows, 9 tangents", "unit rows, 3 tangents"]),
    ("rglru", 6, ["Lambda", "weight_in", "bias_in"], ["unit-wise", "unit rows, 12 tangents", "unit rows, 2 tangents"]),
    ("mingru", 3, ["weight_in", "bias_in"], ["unit rows, 6 tangents", "unit rows, 2 tangents"]),
    ("minlstm", 3, ["weight_in", "bias_in"], ["unit rows, 9 tangents", "unit rows, 3 tangents"]),
])
def test_the_diagonal_cells_declare_their_blocks_and_they_are_exact(kind, I, params, methods):
    """RG-LRU, minGRU, minLSTM: their recurrent parameters (the RG-LRU's Lambda, unit-wise; the gates' rows of
    weight_in and bias_in) and row r of weight_in / bias_in moving unit r mod H only (unit_rows): G/H tangents per
    column equal float64 autograd, with the input projection's parameters through the layer's input; an upper layer
    of a bidirectional stack too (its input is the layer below's [h_fwd; h_bwd], width 2H)."""
    net = RecurrentNetwork(ModelConfig(cell=kind, hidden_size=6, input_size=I, seed=3), dtype=torch.float64)
    x = torch.randn(9, 4, I, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    run = net(x).runs[0][0]
    r = param_sensitivity(run, x=x)
    assert r.params == params and r.method == "exact" and r.rel_se is None
    assert [b["method"].removeprefix("exact (").split(",")[0] if "unit-wise" in b["method"]
            else b["method"].removeprefix("exact (").rstrip(")") for b in r.blocks.values()] == methods
    np.testing.assert_allclose(r.log10_sensitivity, _reference(net, x, r.params), atol=1e-10)
    for name, b in r.blocks.items():
        np.testing.assert_allclose(b["log10_sensitivity"], _reference(net, x, [name]), atol=1e-10)
    deep = RecurrentNetwork(ModelConfig(cell=kind, hidden_size=4, input_size=I, num_layers=2, bidirectional=True,
                                        seed=5), dtype=torch.float64)
    tr = deep(x)
    up = param_sensitivity(tr.runs[1][1], x=layer_input(tr.runs, 1, x))  # 2H = 8 inputs, processed from T-1 down
    assert up.method == "exact"
    np.testing.assert_allclose(up.log10_sensitivity, _reference(deep, x, up.params, layer=1, d=1), atol=1e-10)


def test_unit_rows_blocks_fall_back_where_they_would_not_pay_and_the_cost_counts_their_tangents(monkeypatch):
    """exact_max caps the unit-rows tangents as it caps a basis (then Hutchinson); the cost estimate counts n / H
    tangents for a unit-rows block: (16 + 2) / (512 + 64) of a tangent basis's for a minGRU with H = 32, I = 8."""
    from analysis.param_sensitivity import sensitivity_cost
    from rnn_models.cells import cell_type
    net = RecurrentNetwork(ModelConfig(cell="mingru", hidden_size=6, input_size=3, seed=3), dtype=torch.float64)
    x = torch.randn(7, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(13))
    run = net(x).runs[0][0]
    r = param_sensitivity(run, x=x, exact_max=4)  # 6 tangents > 4: weight_in by Hutchinson; bias_in's 2 rows exact
    assert r.blocks["weight_in"]["method"].startswith("estimate (Hutchinson")
    assert r.blocks["bias_in"]["method"] == "exact (unit rows, 2 tangents)"
    cfg = ExperimentConfig(cell="mingru", seq_len=50, hidden_size=32, batch_size=4)
    rows = sensitivity_cost(cfg, "mingru", 8, exact_max=10_000)[1]
    monkeypatch.setattr(cell_type("mingru"), "unit_rows", frozenset())
    basis = sensitivity_cost(cfg, "mingru", 8, exact_max=10_000)[1]  # every entry a tangent
    from analysis.limits import STEP_FLOPS
    from analysis.param_sensitivity import STEP_OVERHEAD
    loop = 50 * 2 * STEP_OVERHEAD * STEP_FLOPS  # T steps of one chunk per block: the same in both
    assert 0.95 * 18 / 576 < (rows - loop) / (basis - loop) < 1.05 * 18 / 576


SENSITIVITY_MEMORY_CHILD = r"""
import ctypes
import torch
torch.set_num_threads(1)
from analysis import ExperimentConfig
from analysis.param_sensitivity import param_sensitivity, sensitivity_cost
from rnn_models import ModelConfig, RecurrentNetwork
def status(key):
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key)) * 1024
cases = (("rnn", 32, 8, 200, True), ("rnn", 128, 16, 100, False))  # layer norm (J_t formed), a basis + Hutchinson
runs = []
for kind, H, B, T, ln in cases:  # each kind's code paths once, on a tiny model, before any measurement
    for h, b, t in ((4, 2, 5), (H, B, T)):
        net = RecurrentNetwork(ModelConfig(cell=kind, hidden_size=h, input_size=8, seed=1, layer_norm=ln))
        x = torch.randn(t, b, 8, generator=torch.Generator().manual_seed(0))
        runs.append((net(x).runs[0][0], x))
    tiny_run, tiny_x = runs.pop(-2)
    param_sensitivity(tiny_run, x=tiny_x)
for (kind, H, B, T, ln), (run, x) in zip(cases, runs):
    ctypes.CDLL('libc.so.6').malloc_trim(0)  # the freed memory of the runs before back to the system
    open('/proc/self/clear_refs', 'w').write('5')  # VmHWM back to the current RSS
    base = status('VmRSS')
    param_sensitivity(run, x=x)
    est = sensitivity_cost(ExperimentConfig(cell=kind, hidden_size=H, batch_size=B, seq_len=T, layer_norm=ln), kind, 8)[0]
    print(status('VmHWM') - base, est)
"""


def test_the_memory_estimate_is_above_the_measured_peak():
    """sensitivity_cost's bytes (a chunk's tangents, one window, the logs) against the peak RSS growth of the pass in
    a fresh process (VmHWM reset before each case), for a layer-normalized RNN (J_t formed by vmap(jacrev)) and an
    RNN with a Hutchinson block and a 128-tangent basis; and not absurdly above (measured 0.25-0.8 of it)."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", SENSITIVITY_MEMORY_CHILD], cwd=root, capture_output=True, text=True,
                         timeout=300, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    for line in out.stdout.split("\n")[:2]:
        grown, estimate = map(float, line.split())
        assert 0 < grown <= estimate < 8 * grown + 32 * 2**20, (grown / 2**20, estimate / 2**20)
