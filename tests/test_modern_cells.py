"""Reference tests for the diagonal cells: rnn_models/cells/lru.py, rglru.py, mingru.py, minlstm.py.

Every forward pass is checked against the paper's equations written out here in float64 numpy (complex arithmetic
for the LRU), unrolled over time; closed-form Jacobians against torch.func (``jacobian_autograd``); the
multipliers and the structured step products against the formed Jacobian; the initialisations against their
papers' distributions (ranges exactly, moments within a stated number of standard errors).
"""
import math

import numpy as np
import pytest
import torch

from rnn_models import ConfigError, ModelConfig, RecurrentNetwork
from rnn_models.cells import LRUCell, MinGRUCell, RGLRUCell, cell_type

TOL = 1e-10
KINDS = ("lru", "rglru", "mingru", "minlstm")

pytestmark = pytest.mark.usefixtures("single_thread")


def _sig(a):
    return 1.0 / (1.0 + np.exp(-a))


def _np(p) -> np.ndarray:
    return p.detach().double().numpy()


def reference(cell, x: np.ndarray, h0: np.ndarray | None = None) -> np.ndarray:
    """The paper's recurrence of ``cell``'s kind with its weights, unrolled over x (T, B, I): h (T, B, H)."""
    T, B, _ = x.shape
    H = cell.hidden_size
    out = np.zeros((T, B, H))
    if isinstance(cell, LRUCell):
        N = H // 2
        lam = np.exp(-np.exp(_np(cell.nu_log)) + 1j * np.exp(_np(cell.theta_log)))  # (N,)
        gamma = np.exp(_np(cell.gamma_log)) if cell.gamma_log is not None else np.ones(N)
        Bc = _np(cell.B_re) + 1j * _np(cell.B_im)  # (N, I)
        h = np.zeros((B, N), complex) if h0 is None else h0[:, :N] + 1j * h0[:, N:]
        for t in range(T):
            h = lam * h + gamma * (x[t] @ Bc.T)  # h_t = lambda h_{t-1} + gamma B x_t
            out[t] = np.concatenate([h.real, h.imag], -1)
        return out
    W, b = _np(cell.weight_in), _np(cell.bias_in)
    h = np.zeros((B, H)) if h0 is None else h0.copy()
    for t in range(T):
        pre = x[t] @ W.T + b
        if isinstance(cell, RGLRUCell):
            r, i = _sig(pre[:, :H]), _sig(pre[:, H:2 * H])
            a = _sig(_np(cell.Lambda)) ** (8.0 * r)  # a_t = a^(c r_t)
            xt = pre[:, 2 * H:] if W.shape[0] == 3 * H else x[t]
            h = a * h + np.sqrt(1 - a ** 2) * (i * xt)
        elif isinstance(cell, MinGRUCell):
            z = _sig(pre[:, :H])
            h = (1 - z) * h + z * pre[:, H:]
        else:
            f, i = _sig(pre[:, :H]), _sig(pre[:, H:2 * H])
            h = f / (f + i) * h + i / (f + i) * pre[:, 2 * H:]
        out[t] = h
    return out


def _randomize(cell, seed: int) -> None:
    """Seeded random parameters away from the initialisation (the LRU's |lambda| anywhere in (0.05, 0.99))."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in cell.named_parameters():
            u = torch.rand(p.shape, generator=g, dtype=torch.float64)
            if name == "nu_log":
                p.copy_(torch.log(-torch.log(0.05 + 0.94 * u)))  # |lambda| = exp(-exp(nu)) in (0.05, 0.99)
            elif name == "theta_log":
                p.copy_(torch.log(0.01 + 6.2 * u))
            else:
                p.copy_((u * 2 - 1) * 0.8)


def _cell(kind: str, I: int = 3, H: int = 6, seed: int = 0, **kw):
    cfg = ModelConfig(cell=kind, input_size=I, hidden_size=H, seed=seed, **kw)
    return cell_type(kind).from_config(I, H, cfg, torch.float64)


def _states(cell, lead, seed):
    """Projected inputs of random x_t (scale 2: into the gates' saturation) and random states, (*lead, .)."""
    g = torch.Generator().manual_seed(seed)
    xp = cell.project(2 * torch.randn(*lead, cell.input_size, generator=g, dtype=torch.float64)).detach()
    return xp, (torch.randn(*lead, cell.hidden_size, generator=g, dtype=torch.float64),)


CASES = [("lru", 3, 6, {}), ("lru", 4, 8, {"lru_gamma": False}), ("rglru", 3, 6, {}), ("rglru", 6, 6, {}),
         ("mingru", 3, 5, {}), ("minlstm", 4, 5, {})]
IDS = [f"{k}-I{i}-H{h}" + ("-nogamma" if kw else "") for k, i, h, kw in CASES]


# --------------------------------------------------------------------------------------------------------------
# forward against the papers' equations
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,I,H,kw", CASES, ids=IDS)
@pytest.mark.parametrize("randomized", [False, True], ids=["init", "random"])
def test_forward_matches_paper_equations(kind, I, H, kw, randomized):
    cell = _cell(kind, I, H, seed=4, **kw)
    if randomized:
        _randomize(cell, 5)
    T, B = 7, 3
    g = torch.Generator().manual_seed(6)
    x = torch.randn(T, B, I, generator=g, dtype=torch.float64)
    h0 = torch.randn(B, H, generator=g, dtype=torch.float64)
    state, hs = (h0,), []
    for t in range(T):
        state = cell(x[t], state)
        hs.append(state[0])
    np.testing.assert_allclose(torch.stack(hs).detach().numpy(), reference(cell, x.numpy(), h0.numpy()),
                               rtol=TOL, atol=TOL)


def test_gates_are_the_papers(f64):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, generator=g)
    for kind in ("mingru", "minlstm", "rglru"):
        cell = _cell(kind, 3, 5)
        _randomize(cell, 2)
        pre = (x @ cell.weight_in.T + cell.bias_in).detach().numpy()
        gates = cell.gates(cell.project(x), (torch.zeros(4, 5),))
        H = 5
        if kind == "mingru":
            np.testing.assert_allclose(gates["1-z"].detach(), 1 - _sig(pre[:, :H]), rtol=TOL)
        elif kind == "minlstm":
            f, i = _sig(pre[:, :H]), _sig(pre[:, H:2 * H])
            np.testing.assert_allclose(gates["f_norm"].detach(), f / (f + i), rtol=TOL)
            np.testing.assert_allclose(gates["i_norm"].detach(), i / (f + i), rtol=TOL)
        else:
            a = _sig(cell.Lambda.detach().numpy()) ** (8 * _sig(pre[:, :H]))
            np.testing.assert_allclose(gates["a"].detach(), a, rtol=TOL)
        assert cell.keep_gate in gates


# --------------------------------------------------------------------------------------------------------------
# per-step Jacobians, multipliers and the structured step products
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,I,H,kw", CASES, ids=IDS)
def test_jacobian_closed_form_equals_autograd(kind, I, H, kw):
    cell = _cell(kind, I, H, **kw)
    _randomize(cell, 7)
    xp, st = _states(cell, (4, 2), 8)  # (C, b, .)
    J = cell.jacobian(xp, st)
    assert J.shape == (4, 2, H, H)
    torch.testing.assert_close(J, cell.jacobian_autograd(xp, st), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("kind,I,H,kw", CASES, ids=IDS)
def test_multipliers_are_the_jacobian(kind, I, H, kw):
    cell = _cell(kind, I, H, **kw)
    _randomize(cell, 9)
    xp, st = _states(cell, (3, 2), 10)
    m = cell.multipliers(xp, st)
    J = cell.jacobian_autograd(xp, st)
    if m.is_complex():  # the real view: per unit the block [[Re m, -Im m], [Im m, Re m]]
        N = H // 2
        assert m.shape == (3, 2, N)
        d = lambda M: torch.diagonal(M, dim1=-2, dim2=-1)  # noqa: E731
        torch.testing.assert_close(d(J[..., :N, :N]), m.real, rtol=TOL, atol=TOL)
        torch.testing.assert_close(d(J[..., N:, N:]), m.real, rtol=TOL, atol=TOL)
        torch.testing.assert_close(d(J[..., N:, :N]), m.imag, rtol=TOL, atol=TOL)
        torch.testing.assert_close(d(J[..., :N, N:]), -m.imag, rtol=TOL, atol=TOL)
        # nothing else: 4 N nonzeros
        assert int((J.abs() > 0).sum(dim=(-2, -1)).max()) <= 4 * N
    else:
        torch.testing.assert_close(J, torch.diag_embed(m), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("kind,I,H,kw", CASES, ids=IDS)
def test_step_products_equal_the_formed_jacobian(kind, I, H, kw):
    cell = _cell(kind, I, H, **kw)
    _randomize(cell, 11)
    C, b, R = 3, 2, 4
    xp, st = _states(cell, (C, b), 12)
    J = cell.jacobian_autograd(xp, st)  # (C, b, H, H)
    g = torch.Generator().manual_seed(13)
    P, Q = torch.randn(b, R, H, generator=g, dtype=torch.float64), torch.randn(b, H, R, generator=g,
                                                                              dtype=torch.float64)
    v, V = torch.randn(b, H, generator=g, dtype=torch.float64), torch.randn(5, b, H, generator=g,
                                                                           dtype=torch.float64)
    steps, vjp = cell.chunk_steps(xp, st), cell.vjp_steps(xp, st)
    assert len(steps) == C
    for c in range(C):
        torch.testing.assert_close(steps.right(c, P), P @ J[c], rtol=TOL, atol=TOL)
        torch.testing.assert_close(steps.left_t(c, Q), J[c].mT @ Q, rtol=TOL, atol=TOL)
        torch.testing.assert_close(vjp(c, v), (v.unsqueeze(1) @ J[c]).squeeze(1), rtol=TOL, atol=TOL)
        torch.testing.assert_close(vjp.vjp(c, V), torch.einsum("nbi,bij->nbj", V, J[c]), rtol=TOL, atol=TOL)
        torch.testing.assert_close(vjp.jvp(c, V), torch.einsum("bij,nbj->nbi", J[c], V), rtol=TOL, atol=TOL)


def test_recurrent_eigenvalues():
    lru = _cell("lru", 3, 8)
    _randomize(lru, 14)
    lam = lru.recurrent_eigenvalues()["λ"]
    ref = np.exp(-np.exp(_np(lru.nu_log)) + 1j * np.exp(_np(lru.theta_log)))
    np.testing.assert_allclose(lam.numpy(), ref, rtol=TOL)
    # the real view's Jacobian has eigenvalues lambda and conj(lambda)
    xp, st = _states(lru, (1,), 15)
    eig = np.sort_complex(torch.linalg.eigvals(lru.jacobian(xp, st)[0].detach()).numpy())
    np.testing.assert_allclose(eig, np.sort_complex(np.concatenate([ref, ref.conj()])), atol=1e-12)
    rg = _cell("rglru", 3, 6)
    np.testing.assert_allclose(rg.recurrent_eigenvalues()["a^c"].numpy().real,
                               _sig(_np(rg.Lambda)) ** 8, rtol=TOL)
    assert _cell("mingru").recurrent_eigenvalues() == {} and _cell("minlstm").recurrent_eigenvalues() == {}


# --------------------------------------------------------------------------------------------------------------
# initialisation
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("r_min,r_max,phase", [(0.9, 0.999, 6.28), (0.0, 1.0, math.pi / 10), (0.4, 0.6, 2 * math.pi)])
def test_lru_ring_initialisation(r_min, r_max, phase):
    I, N = 16, 4000
    cell = LRUCell(I, 2 * N, r_min=r_min, r_max=r_max, phase_max=phase, seed=3, dtype=torch.float64)
    lam = cell.recurrent_eigenvalues()["λ"].numpy()
    mod, arg = np.abs(lam), np.exp(_np(cell.theta_log))
    assert mod.min() >= r_min - 1e-12 and mod.max() <= r_max + 1e-12
    assert arg.min() >= 0 and arg.max() <= phase * (1 + 1e-12)
    # uniform on the ring's area: |lambda|^2 ~ U[r_min^2, r_max^2], arg ~ U[0, phase]; means within 5 standard errors
    lo, hi = r_min ** 2, r_max ** 2
    assert abs((mod ** 2).mean() - (lo + hi) / 2) < 5 * (hi - lo) / math.sqrt(12 * N)
    assert abs(arg.mean() - phase / 2) < 5 * phase / math.sqrt(12 * N)
    # gamma = sqrt(1 - |lambda|^2) exactly; B_re, B_im ~ N(0, 1/(2 I)): std within 5 standard errors
    np.testing.assert_allclose(np.exp(_np(cell.gamma_log)), np.sqrt(1 - mod ** 2), rtol=1e-9)
    for B in (_np(cell.B_re), _np(cell.B_im)):
        assert abs(B.std() - 1 / math.sqrt(2 * I)) < 5 / math.sqrt(2 * I) / math.sqrt(2 * B.size)
        assert abs(B.mean()) < 5 / math.sqrt(2 * I) / math.sqrt(B.size)
    assert np.isfinite(_np(cell.nu_log)).all() and np.isfinite(_np(cell.theta_log)).all()


def test_rglru_initialisation():
    H = 5000
    cell = RGLRUCell(7, H, seed=2, dtype=torch.float64)
    ac = cell.recurrent_eigenvalues()["a^c"].numpy().real
    assert ac.min() >= 0.9 - 1e-12 and ac.max() <= 0.999 + 1e-12
    assert abs(ac.mean() - 0.9495) < 5 * 0.099 / math.sqrt(12 * H)  # U[0.9, 0.999]
    bound = 1 / math.sqrt(7)
    assert float(cell.weight_in.detach().abs().max()) <= bound and float(cell.bias_in.detach().abs().max()) <= bound


@pytest.mark.parametrize("kind", KINDS)
def test_init_is_deterministic_from_the_seed(kind):
    def weights(seed):
        net = RecurrentNetwork(ModelConfig(cell=kind, input_size=3, hidden_size=6, num_layers=2, bidirectional=True,
                                           seed=seed), dtype=torch.float64)
        return {n: p.detach().clone() for n, p in net.torch_named_parameters()}

    a, b, c = weights(1), weights(1), weights(2)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(not torch.equal(a[k], c[k]) for k in a)
    # the two directions and the layers draw different values from the network's generator
    first = [k for k in a if k.endswith("_l0")][0]
    assert not torch.equal(a[first], a[first + "_reverse"])
    # a cell built alone is deterministic from config.seed too
    cfg = ModelConfig(cell=kind, input_size=3, hidden_size=6, seed=9)
    one, two = (cell_type(kind).from_config(3, 6, cfg) for _ in range(2))
    assert all(torch.equal(p, q) for p, q in zip(one.parameters(), two.parameters()))


# --------------------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------------------
def test_lru_config_validation_messages():
    with pytest.raises(ConfigError, match=r"^hidden_size=7 must be even for cell='lru': "):
        ModelConfig(cell="lru", hidden_size=7)
    ModelConfig(cell="mingru", hidden_size=7)  # the others take any H
    with pytest.raises(ConfigError, match=r"^lru_r_min=0.95 must be below lru_r_max=0.9"):
        ModelConfig(cell="lru", lru_r_min=0.95, lru_r_max=0.9)
    with pytest.raises(ConfigError, match=r"^lru_r_max=1.5 is out of range: must be in \(0.0, 1.0\]"):
        ModelConfig(cell="lru", lru_r_max=1.5)
    with pytest.raises(ConfigError, match=r"^lru_phase_max=7.0 is out of range"):
        ModelConfig(cell="lru", lru_phase_max=7.0)
    with pytest.raises(ConfigError, match=r"^lru_gamma=1 must be true or false"):
        ModelConfig(cell="lru", lru_gamma=1)


def test_settings_that_do_not_apply_are_noted():
    assert ModelConfig(cell="lru", lru_r_min=0.5, lru_gamma=False).inapplicable() == []
    notes = ModelConfig(cell="gru", lru_r_min=0.5).inapplicable()
    assert notes == ["lru_r_min applies to the LRU only; ignored for gru"]
    notes = ModelConfig(cell="mingru", layer_norm=True, init="orthogonal").inapplicable()
    assert notes == ["layer_norm applies to the vanilla RNN and the LSTM and the GRU only; ignored for mingru",
                     "init='orthogonal' shapes W_hh, which the mingru has not; it uses its own initialization"]
    for kind in KINDS:
        assert "layer_norm" not in cell_type(kind).settings and cell_type(kind).diagonal
        assert cell_type(kind).gate_names == ()


# --------------------------------------------------------------------------------------------------------------
# the network: stacked and bidirectional
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_network_stacked_bidirectional_against_reference(kind):
    T, B, I, H, L = 6, 2, 3, 4, 2
    net = RecurrentNetwork(ModelConfig(cell=kind, input_size=I, hidden_size=H, num_layers=L, bidirectional=True,
                                       seed=5), dtype=torch.float64)
    x = torch.randn(T, B, I, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = net(x).outputs.detach().numpy()
    layer_in = x.numpy()
    for dirs in net.layers:
        fwd = reference(dirs[0], layer_in)
        bwd = reference(dirs[1], layer_in[::-1].copy())[::-1]
        layer_in = np.concatenate([fwd, bwd], -1)  # (T, B, 2H)
    assert out.shape == (T, B, 2 * H)
    np.testing.assert_allclose(out, layer_in, rtol=TOL, atol=TOL)
