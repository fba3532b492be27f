"""Reference tests for rnn_models/cells.py and rnn_models/init.py.

Every cell is checked against an independent reference: torch.nn.RNNCell / LSTMCell / GRUCell with copied weights,
or a hand-written formula (sigmoid / linear RNN, Gers peephole LSTM, layer-normalized cells), in float64.
Closed-form per-step Jacobians are checked against torch.autograd.functional.jacobian on single samples.
"""
import math

import pytest
import torch

from rnn_models import LayerNorm, ModelConfig, RecurrentNetwork, initialize_cell, make_cell, spectral_radius

TOL = 1e-10


pytestmark = pytest.mark.usefixtures("single_thread")




def _randomize(module: torch.nn.Module, seed: int, scale: float = 0.6) -> None:
    """Overwrite every parameter (incl. layer-norm gains/biases, peepholes) with seeded random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_((torch.rand(p.shape, generator=g, dtype=torch.float64) * 2 - 1) * scale)


def _torch_cell(kind: str, I: int, H: int, activation: str = "tanh"):
    if kind == "rnn":
        return torch.nn.RNNCell(I, H, nonlinearity=activation)
    if kind == "lstm":
        return torch.nn.LSTMCell(I, H)
    return torch.nn.GRUCell(I, H)


def _copy_into(cell, ref) -> None:
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(ref, name))


TORCH_CASES = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]


# --------------------------------------------------------------------------------------------------------------
# forward and backward against torch.nn
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,activation", TORCH_CASES)
def test_cell_matches_torch_forward_and_gradients(f64, kind, activation):
    I, H, B = 4, 5, 3
    torch.manual_seed(0)
    ref = _torch_cell(kind, I, H, activation)
    _randomize(ref, 1)
    cell = make_cell(kind, I, H, activation=activation)
    _copy_into(cell, ref)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(B, I, generator=g)
    n_state = 2 if kind == "lstm" else 1
    state = tuple(torch.randn(B, H, generator=g) for _ in range(n_state))
    w = [torch.randn(B, H, generator=g) for _ in range(n_state)]

    def run(module, is_ref):
        xx = x.clone().requires_grad_(True)
        ss = tuple(s.clone().requires_grad_(True) for s in state)
        if is_ref:
            out = module(xx, ss if kind == "lstm" else ss[0])
            out = out if isinstance(out, tuple) else (out,)
        else:
            out = module(xx, ss)
        loss = sum((o * wi).sum() for o, wi in zip(out, w)) + sum((o ** 2).sum() for o in out) * 0.3
        params = [getattr(module, n) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        grads = torch.autograd.grad(loss, [xx, *ss, *params])
        return [o.detach() for o in out], grads

    out_c, g_c = run(cell, False)
    out_r, g_r = run(ref, True)
    assert len(out_c) == n_state
    for a, b in zip(out_c, out_r):
        assert a.dtype == torch.float64
        torch.testing.assert_close(a, b, rtol=0, atol=TOL)
    names = ["x", *[f"state{i}" for i in range(n_state)], "weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    for name, a, b in zip(names, g_c, g_r):
        assert float(b.abs().max()) > 0  # the reference gradient is not trivially zero
        torch.testing.assert_close(a, b, rtol=0, atol=TOL, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("kind,activation", TORCH_CASES)
def test_project_step_split_equals_forward(f64, kind, activation):
    I, H, B = 3, 4, 2
    cell = make_cell(kind, I, H, activation=activation)
    _randomize(cell, 3)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(B, I, generator=g)
    state = tuple(torch.randn(B, H, generator=g) for _ in range(2 if kind == "lstm" else 1))
    for a, b in zip(cell(x, state), cell.step(cell.project(x), state)):
        assert torch.equal(a, b)
    # project is the input's share: W_ih x + b_ih
    torch.testing.assert_close(cell.project(x), x @ cell.weight_ih.T + cell.bias_ih, rtol=0, atol=1e-14)


@pytest.mark.parametrize("activation", ["sigmoid", "linear", "tanh", "relu"])
def test_rnn_activation_against_hand_formula(f64, activation):
    I, H, B = 3, 5, 4
    cell = make_cell("rnn", I, H, activation=activation)
    _randomize(cell, 5, scale=1.0)
    g = torch.Generator().manual_seed(6)
    x, h = torch.randn(B, I, generator=g), torch.randn(B, H, generator=g)
    a = x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
    phi = {"sigmoid": lambda v: 1 / (1 + torch.exp(-v)), "linear": lambda v: v,
           "tanh": lambda v: (torch.exp(2 * v) - 1) / (torch.exp(2 * v) + 1),
           "relu": lambda v: torch.where(v > 0, v, torch.zeros_like(v))}[activation]
    (h_t,) = cell(x, (h,))
    torch.testing.assert_close(h_t, phi(a), rtol=0, atol=1e-12)
    # gradients w.r.t. input, state and every parameter: autograd through the cell vs through the hand formula
    w = torch.randn(B, H, generator=g)
    params = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
    xx, hh = x.clone().requires_grad_(True), h.clone().requires_grad_(True)
    got = torch.autograd.grad((cell(xx, (hh,))[0] * w).sum(), [xx, hh, *params])
    xx, hh = x.clone().requires_grad_(True), h.clone().requires_grad_(True)
    a2 = xx @ cell.weight_ih.T + cell.bias_ih + hh @ cell.weight_hh.T + cell.bias_hh
    want = torch.autograd.grad((phi(a2) * w).sum(), [xx, hh, *params])
    for gc, gr in zip(got, want):
        torch.testing.assert_close(gc, gr, rtol=0, atol=1e-10)


def test_unknown_activation_and_cell_rejected():
    with pytest.raises(ValueError, match="activation"):
        make_cell("rnn", 2, 3, activation="gelu")
    with pytest.raises(ValueError, match="cell"):
        make_cell("transformer", 2, 3)


# --------------------------------------------------------------------------------------------------------------
# peephole LSTM: hand-written Gers et al. reference
# --------------------------------------------------------------------------------------------------------------
def _gers_lstm(cell, x, h, c):
    H = cell.hidden_size
    W_ih, W_hh, b_ih, b_hh = cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh
    z = x @ W_ih.T + b_ih + h @ W_hh.T + b_hh
    z_i, z_f, z_g, z_o = z[:, :H], z[:, H:2 * H], z[:, 2 * H:3 * H], z[:, 3 * H:]
    sig = lambda v: 1 / (1 + torch.exp(-v))  # noqa: E731
    i = sig(z_i + cell.weight_ci * c)  # input gate sees c_{t-1}
    f = sig(z_f + cell.weight_cf * c)  # forget gate sees c_{t-1}
    gg = torch.tanh(z_g)
    c_new = f * c + i * gg
    o = sig(z_o + cell.weight_co * c_new)  # output gate sees c_t
    return o * torch.tanh(c_new), c_new


def test_peephole_lstm_against_gers_equations(f64):
    I, H, B = 3, 4, 5
    cell = make_cell("lstm", I, H, peephole=True)
    names = {n for n, _ in cell.named_parameters()}
    assert {"weight_ci", "weight_cf", "weight_co"} <= names
    _randomize(cell, 7, scale=1.0)
    g = torch.Generator().manual_seed(8)
    x, h, c = (torch.randn(B, n, generator=g) for n in (I, H, H))
    h_t, c_t = cell(x, (h, c))
    h_ref, c_ref = _gers_lstm(cell, x, h, c)
    torch.testing.assert_close(c_t, c_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(h_t, h_ref, rtol=0, atol=1e-12)
    # the peepholes matter: zeroing them changes the output
    with torch.no_grad():
        cell.weight_co.zero_()
    assert not torch.allclose(cell(x, (h, c))[0], h_t)


def test_no_peephole_parameters_without_peephole():
    cell = make_cell("lstm", 3, 4)
    assert {n for n, _ in cell.named_parameters()} == {"weight_ih", "weight_hh", "bias_ih", "bias_hh"}


# --------------------------------------------------------------------------------------------------------------
# layer norm
# --------------------------------------------------------------------------------------------------------------
def _ln(a, w, b, eps=1e-5):
    mu = a.mean(-1, keepdim=True)
    var = ((a - mu) ** 2).mean(-1, keepdim=True)
    return w * (a - mu) / torch.sqrt(var + eps) + b


def test_layer_norm_cells_against_hand_formula(f64):
    I, H, B = 3, 4, 2
    g = torch.Generator().manual_seed(9)
    x, h, c = (torch.randn(B, n, generator=g) for n in (I, H, H))
    # RNN: h = phi(LN(W_ih x + b_ih + W_hh h + b_hh))
    rnn = make_cell("rnn", I, H, activation="tanh", layer_norm=True)
    _randomize(rnn, 10, scale=1.0)
    a = x @ rnn.weight_ih.T + rnn.bias_ih + h @ rnn.weight_hh.T + rnn.bias_hh
    torch.testing.assert_close(rnn(x, (h,))[0], torch.tanh(_ln(a, rnn.ln.weight, rnn.ln.bias)), rtol=0, atol=1e-12)
    # LSTM: gates = LN(W_hh h) + b_hh + LN(W_ih x) + b_ih;  h = o * tanh(LN(c))
    lstm = make_cell("lstm", I, H, layer_norm=True)
    _randomize(lstm, 11, scale=1.0)
    z = (_ln(h @ lstm.weight_hh.T, lstm.ln_hh.weight, lstm.ln_hh.bias) + lstm.bias_hh
         + _ln(x @ lstm.weight_ih.T, lstm.ln_ih.weight, lstm.ln_ih.bias) + lstm.bias_ih)
    i, f, gg, o = torch.sigmoid(z[:, :H]), torch.sigmoid(z[:, H:2 * H]), torch.tanh(z[:, 2 * H:3 * H]), \
        torch.sigmoid(z[:, 3 * H:])
    c_ref = f * c + i * gg
    h_ref = o * torch.tanh(_ln(c_ref, lstm.ln_c.weight, lstm.ln_c.bias))
    h_t, c_t = lstm(x, (h, c))
    torch.testing.assert_close(c_t, c_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(h_t, h_ref, rtol=0, atol=1e-12)
    # GRU: input and recurrent projections normalized separately, then biases
    gru = make_cell("gru", I, H, layer_norm=True)
    _randomize(gru, 12, scale=1.0)
    xp = _ln(x @ gru.weight_ih.T, gru.ln_ih.weight, gru.ln_ih.bias) + gru.bias_ih
    hp = _ln(h @ gru.weight_hh.T, gru.ln_hh.weight, gru.ln_hh.bias) + gru.bias_hh
    r = torch.sigmoid(xp[:, :H] + hp[:, :H])
    zz = torch.sigmoid(xp[:, H:2 * H] + hp[:, H:2 * H])
    n = torch.tanh(xp[:, 2 * H:] + r * hp[:, 2 * H:])
    torch.testing.assert_close(gru(x, (h,))[0], (1 - zz) * n + zz * h, rtol=0, atol=1e-12)


def test_layer_norm_jacobian_annihilates_ones(f64):
    n = 7
    ln = LayerNorm(n)
    _randomize(ln, 13, scale=2.0)
    g = torch.Generator().manual_seed(14)
    for _ in range(3):
        a = torch.randn(n, generator=g) * 3 + 5
        J = torch.autograd.functional.jacobian(ln, a)
        assert J.shape == (n, n)
        assert float(J.abs().max()) > 0.1
        assert float((J @ torch.ones(n)).abs().max()) < 1e-12
        # shift invariance, the reason: LN(a + s 1) == LN(a)
        torch.testing.assert_close(ln(a + 4.25), ln(a), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------------------
# closed-form Jacobians against autograd
# --------------------------------------------------------------------------------------------------------------
JAC_CASES = ([("rnn", a, False, False) for a in ("tanh", "relu", "sigmoid", "linear")]
             + [("lstm", "tanh", False, False), ("lstm", "tanh", True, False), ("gru", "tanh", False, False)]
             + [("rnn", a, False, True) for a in ("tanh", "relu", "sigmoid", "linear")]
             + [("lstm", "tanh", False, True), ("lstm", "tanh", True, True), ("gru", "tanh", False, True)])


def _autograd_step_jacobian(cell, xp_1, state_1):
    """d state_t / d state_{t-1} of one sample by torch.autograd.functional.jacobian, (S, S)."""
    H = cell.hidden_size
    k = len(state_1)

    def f(s):
        st = tuple(s[i * H:(i + 1) * H].unsqueeze(0) for i in range(k))
        return torch.cat(cell.step(xp_1.unsqueeze(0), st), -1).squeeze(0)

    return torch.autograd.functional.jacobian(f, torch.cat(state_1, -1))


@pytest.mark.parametrize("kind,activation,peephole,layer_norm", JAC_CASES)
def test_jacobian_against_autograd(f64, kind, activation, peephole, layer_norm):
    I, H, B = 3, 4, 3
    cell = make_cell(kind, I, H, activation=activation, peephole=peephole, layer_norm=layer_norm)
    _randomize(cell, 15, scale=0.9)
    g = torch.Generator().manual_seed(16)
    x = torch.randn(2, B, I, generator=g)  # leading dims (2, B): the Jacobian works over any batch shape
    n_state = 2 if kind == "lstm" else 1
    state = tuple(torch.randn(2, B, H, generator=g) for _ in range(n_state))
    xp = cell.project(x).detach()
    S = n_state * H
    with torch.no_grad():
        J = cell.jacobian(xp, state)
    J_ag = cell.jacobian_autograd(xp, state)
    assert J.shape == (2, B, S, S) and J_ag.shape == (2, B, S, S)
    largest = 0.0
    for a in range(2):
        for b in range(B):
            ref = _autograd_step_jacobian(cell, xp[a, b], tuple(s[a, b] for s in state))
            largest = max(largest, float(ref.abs().max()))
            torch.testing.assert_close(J[a, b], ref, rtol=0, atol=1e-12)
            torch.testing.assert_close(J_ag[a, b], ref, rtol=0, atol=1e-12)
    assert largest > 0.01  # the reference is not trivially zero


def test_rnn_jacobian_is_diag_phi_prime_times_whh(f64):
    cell = make_cell("rnn", 2, 4, activation="tanh")
    _randomize(cell, 17)
    g = torch.Generator().manual_seed(18)
    xp, h = torch.randn(4, generator=g), torch.randn(4, generator=g)
    a = xp + cell.weight_hh @ h + cell.bias_hh
    ref = torch.diag(1 - torch.tanh(a) ** 2) @ cell.weight_hh
    torch.testing.assert_close(cell.jacobian(xp, (h,)), ref, rtol=0, atol=1e-14)


def test_lstm_cc_block_is_diag_forget_gate_without_peephole(f64):
    cell = make_cell("lstm", 2, 4)
    _randomize(cell, 19)
    g = torch.Generator().manual_seed(20)
    xp, h, c = torch.randn(16, generator=g), torch.randn(4, generator=g), torch.randn(4, generator=g)
    J = cell.jacobian(xp, (h, c))
    f = torch.sigmoid(xp[4:8] + cell.weight_hh[4:8] @ h + cell.bias_hh[4:8])
    torch.testing.assert_close(J[4:, 4:], torch.diag(f), rtol=0, atol=1e-14)
    assert cell.gates(xp, (h, c))["f"].shape == (4,)
    torch.testing.assert_close(cell.gates(xp, (h, c))["f"], f, rtol=0, atol=1e-14)


# --------------------------------------------------------------------------------------------------------------
# initialization
# --------------------------------------------------------------------------------------------------------------
def _init_cell(cell="rnn", H=6, I=3, **kw):
    cfg = ModelConfig(cell=cell, input_size=I, hidden_size=H, **kw)
    c = make_cell(cell, I, H, activation=cfg.activation, peephole=cfg.peephole, layer_norm=cfg.layer_norm)
    initialize_cell(c, cfg, torch.Generator().manual_seed(cfg.seed))
    return c.requires_grad_(False)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("scale", [0.5, 1.0, 1.7])
def test_identity_init(f64, cell, scale):
    c = _init_cell(cell, init="identity", init_scale=scale)
    H, G = c.hidden_size, {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    assert torch.equal(c.weight_hh, torch.cat([scale * torch.eye(H)] * G, 0))
    assert torch.equal(c.bias_ih, torch.zeros(G * H)) and torch.equal(c.bias_hh, torch.zeros(G * H))
    assert 0 < float(c.weight_ih.abs().max()) < 0.01  # N(0, 0.001^2)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("scale", [1.0, 0.8])
def test_orthogonal_init(f64, cell, scale):
    c = _init_cell(cell, H=7, init="orthogonal", init_scale=scale, seed=3)
    H = c.hidden_size
    blocks = c.weight_hh.split(H, 0)
    for W in blocks:
        torch.testing.assert_close(W.T @ W, scale ** 2 * torch.eye(H), rtol=0, atol=1e-13)
        torch.testing.assert_close(W @ W.T, scale ** 2 * torch.eye(H), rtol=0, atol=1e-13)
    if len(blocks) > 1:
        assert not torch.allclose(blocks[0], blocks[1])  # independent blocks
    assert torch.equal(c.bias_ih, torch.zeros_like(c.bias_ih)) and torch.equal(c.bias_hh, torch.zeros_like(c.bias_hh))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("radius", [0.5, 1.0, 3.0])
def test_spectral_init_radius_exact(f64, cell, radius):
    c = _init_cell(cell, H=8, init="spectral", init_scale=radius, seed=5)
    for W in c.weight_hh.split(c.hidden_size, 0):
        rho = float(torch.linalg.eigvals(W).abs().max())  # independent of rnn_models.spectral_radius
        assert abs(rho - radius) < 1e-12 * max(1.0, radius)
        assert spectral_radius(W) == pytest.approx(rho, abs=1e-13)
    assert torch.equal(c.bias_hh, torch.zeros_like(c.bias_hh))


@pytest.mark.parametrize("tmax", [2, 10, 1000])
def test_chrono_init_lstm(f64, tmax):
    c = _init_cell("lstm", H=50, init="chrono", chrono_tmax=tmax, seed=7)
    H = c.hidden_size
    bf, bi = c.bias_ih[H:2 * H], c.bias_ih[:H]
    assert float(bf.min()) >= 0.0 and float(bf.max()) <= math.log(tmax - 1) + 1e-15
    if tmax > 2:
        assert float(bf.max() - bf.min()) > 0  # actually random
    assert torch.equal(bi, -bf)
    assert torch.equal(c.bias_hh[:2 * H], torch.zeros(2 * H))
    # the total forget bias (what the gate sees) is b_f
    assert torch.equal(c.bias_ih[H:2 * H] + c.bias_hh[H:2 * H], bf)


def test_chrono_init_gru_update_gate(f64):
    c = _init_cell("gru", H=40, init="chrono", chrono_tmax=50, seed=8)
    H = c.hidden_size
    bz = c.bias_ih[H:2 * H]
    assert float(bz.min()) >= 0.0 and float(bz.max()) <= math.log(49) + 1e-15 and float(bz.max()) > 1.0
    assert torch.equal(c.bias_hh[H:2 * H], torch.zeros(H))


@pytest.mark.parametrize("init", ["default", "xavier", "orthogonal", "identity", "spectral"])
@pytest.mark.parametrize("fb", [-2.5, 0.0, 1.0, 3.75])
def test_forget_bias_exact(f64, init, fb):
    c = _init_cell("lstm", H=5, init=init, forget_bias=fb, seed=2)
    H = c.hidden_size
    assert torch.equal(c.bias_ih[H:2 * H] + c.bias_hh[H:2 * H], torch.full((H,), fb))
    assert torch.equal(c.bias_hh[H:2 * H], torch.zeros(H))


def test_forget_bias_exact_in_float32():
    c = _init_cell("lstm", H=5, forget_bias=1.3, seed=2)
    H = c.hidden_size
    assert c.weight_hh.dtype == torch.float32
    assert torch.equal(c.bias_ih[H:2 * H] + c.bias_hh[H:2 * H], torch.full((H,), 1.3, dtype=torch.float32))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_default_init_within_torch_bound(f64, cell):
    H = 16
    c = _init_cell(cell, H=H, peephole=(cell == "lstm"), seed=4)
    bound = 1 / math.sqrt(H)
    for name, p in c.named_parameters():
        assert float(p.abs().max()) <= bound, name
        if p.numel() >= 16:
            assert float(p.abs().max()) > 0.7 * bound, name  # spread over the range, not a constant
            assert abs(float(p.mean())) < 0.5 * bound, name


def test_xavier_init_bounds(f64):
    c = _init_cell("gru", H=6, I=4, init="xavier", init_scale=2.0, seed=1)
    for W in c.weight_hh.split(6, 0):
        assert float(W.abs().max()) <= 2.0 * math.sqrt(6.0 / 12)
    for W in c.weight_ih.split(6, 0):
        assert float(W.abs().max()) <= 2.0 * math.sqrt(6.0 / 10)
    assert torch.equal(c.bias_ih, torch.zeros(18)) and torch.equal(c.bias_hh, torch.zeros(18))


@pytest.mark.parametrize("init", ["default", "xavier", "orthogonal", "identity", "spectral", "chrono"])
def test_same_seed_same_weights(init):
    kw = dict(cell="lstm", input_size=3, hidden_size=5, num_layers=2, bidirectional=True, init=init)
    a = RecurrentNetwork(ModelConfig(seed=11, **kw)).state_dict()
    b = RecurrentNetwork(ModelConfig(seed=11, **kw)).state_dict()
    c = RecurrentNetwork(ModelConfig(seed=12, **kw)).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if "weight_ih" in k)
    # the global RNG does not leak into the initialization
    torch.manual_seed(123)
    d = RecurrentNetwork(ModelConfig(seed=11, **kw)).state_dict()
    assert all(torch.equal(a[k], d[k]) for k in a)
