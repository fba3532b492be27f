"""Reference tests for rnn_models/network.py: RecurrentNetwork against torch.nn.RNN/LSTM/GRU, torch state_dict
interchange, and truncated BPTT (detach_every)."""
import pytest
import torch

from rnn_models import ModelConfig, RecurrentNetwork, infer_config_from_torch_state_dict, run_cell

TOL = 1e-10


pytestmark = pytest.mark.usefixtures("single_thread")




def _torch_module(cell, I, H, L, bidir, activation="tanh"):
    if cell == "rnn":
        return torch.nn.RNN(I, H, num_layers=L, bidirectional=bidir, nonlinearity=activation)
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    return cls(I, H, num_layers=L, bidirectional=bidir)


NET_CASES = [(cell, L, bd) for cell in ("rnn", "lstm", "gru") for L in (1, 2, 3) for bd in (False, True)]


@pytest.mark.parametrize("cell,L,bidir", NET_CASES)
def test_network_matches_torch_module(f64, cell, L, bidir):
    I, H, T, B = 3, 4, 7, 2
    torch.manual_seed(100 + L)
    ref = _torch_module(cell, I, H, L, bidir)
    net = RecurrentNetwork(ModelConfig(cell=cell, input_size=I, hidden_size=H, num_layers=L, bidirectional=bidir,
                                       seed=5))
    # before loading, the weights differ (a real check that loading does something)
    assert not torch.allclose(net.torch_state_dict()["weight_hh_l0"], ref.state_dict()["weight_hh_l0"])
    net.load_torch_state_dict(ref.state_dict())
    sd = net.torch_state_dict()
    assert sd.keys() == ref.state_dict().keys()
    assert all(torch.equal(sd[k], v) for k, v in ref.state_dict().items())

    g = torch.Generator().manual_seed(6)
    x = torch.randn(T, B, I, generator=g)
    D = 2 if bidir else 1
    w = torch.randn(T, B, D * H, generator=g)

    x1 = x.clone().requires_grad_(True)
    trace = net(x1)
    out = trace.outputs
    x2 = x.clone().requires_grad_(True)
    out_ref = ref(x2)[0]
    assert out.shape == (T, B, D * H) == out_ref.shape
    torch.testing.assert_close(out, out_ref, rtol=0, atol=TOL)

    # per-layer runs: states in processing order; the last layer's time-ordered h are the outputs
    assert len(trace.runs) == L and all(len(r) == D for r in trace.runs)
    for d, run in enumerate(trace.runs[-1]):
        assert run.reverse == (d == 1) and len(run.xp) == T and len(run.states) == T + 1
        hs = torch.stack(run.h_in_time_order(), 0)
        torch.testing.assert_close(hs, out[..., d * H:(d + 1) * H], rtol=0, atol=0)

    loss = (out * w).sum() + 0.5 * (out ** 2).sum()
    loss_ref = (out_ref * w).sum() + 0.5 * (out_ref ** 2).sum()
    params = [getattr(net.layers[l][d], n) for l in range(L) for d in range(D)
              for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    names = [f"{n}_l{l}" + ("_reverse" if d else "") for l in range(L) for d in range(D)
             for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    ref_params = dict(ref.named_parameters())
    grads = torch.autograd.grad(loss, [x1, *params])
    grads_ref = torch.autograd.grad(loss_ref, [x2, *[ref_params[n] for n in names]])
    for name, a, b in zip(["x", *names], grads, grads_ref):
        assert float(b.abs().max()) > 0, name
        torch.testing.assert_close(a, b, rtol=0, atol=TOL, msg=lambda m, n=name: f"{n}: {m}")


def test_network_relu_rnn_matches_torch(f64):
    ref = _torch_module("rnn", 3, 5, 2, True, activation="relu")
    net = RecurrentNetwork(ModelConfig(cell="rnn", activation="relu", input_size=3, hidden_size=5, num_layers=2,
                                       bidirectional=True))
    net.load_torch_state_dict(ref.state_dict())
    x = torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(net(x).outputs, ref(x)[0], rtol=0, atol=TOL)


def test_initial_state_is_used(f64):
    ref = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    net = RecurrentNetwork(ModelConfig(cell="lstm", input_size=3, hidden_size=4, num_layers=2, bidirectional=True))
    net.load_torch_state_dict(ref.state_dict())
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 2, 3, generator=g)
    h0, c0 = torch.randn(4, 2, 4, generator=g), torch.randn(4, 2, 4, generator=g)  # (L*D, B, H)
    initial = [[(h0[2 * l + d], c0[2 * l + d]) for d in range(2)] for l in range(2)]
    out_ref, (hn, cn) = ref(x, (h0, c0))
    trace = net(x, initial)
    torch.testing.assert_close(trace.outputs, out_ref, rtol=0, atol=TOL)
    for l in range(2):
        for d in range(2):
            h_last, c_last = trace.runs[l][d].states[-1]
            torch.testing.assert_close(h_last, hn[2 * l + d], rtol=0, atol=TOL)
            torch.testing.assert_close(c_last, cn[2 * l + d], rtol=0, atol=TOL)


def test_views_do_not_change_values(f64):
    net = RecurrentNetwork(ModelConfig(cell="gru", input_size=3, hidden_size=4, num_layers=2))
    x = torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(4))
    assert torch.equal(net(x).outputs, net(x, views=True).outputs)


def test_input_shape_errors():
    net = RecurrentNetwork(ModelConfig(cell="rnn", input_size=3, hidden_size=4))
    with pytest.raises(ValueError, match="input_size"):
        net(torch.randn(5, 2, 4))
    with pytest.raises(ValueError, match="shape"):
        net(torch.randn(5, 3))


# --------------------------------------------------------------------------------------------------------------
# torch state_dicts
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell,L,bidir", [("rnn", 1, False), ("lstm", 3, True), ("gru", 2, False),
                                          ("gru", 1, True), ("lstm", 12, False)])
def test_infer_config_from_torch_state_dict(cell, L, bidir):
    I, H = 5, 3
    sd = _torch_module(cell, I, H, L, bidir).state_dict()
    cfg = infer_config_from_torch_state_dict(sd)
    assert cfg == {"cell": cell, "hidden_size": H, "input_size": I, "num_layers": L, "bidirectional": bidir}
    net = RecurrentNetwork(ModelConfig(**cfg))
    net.load_torch_state_dict(sd)  # the inferred architecture accepts the weights


def test_infer_config_rejects_foreign_state_dicts():
    with pytest.raises(ValueError, match="weight_ih_l0"):
        infer_config_from_torch_state_dict({"weight": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="proj"):
        infer_config_from_torch_state_dict(torch.nn.LSTM(3, 4, proj_size=2).state_dict())
    with pytest.raises(ValueError, match="bias"):
        infer_config_from_torch_state_dict(torch.nn.GRU(3, 4, bias=False).state_dict())
    with pytest.raises(ValueError, match="weight_hh_l0"):
        infer_config_from_torch_state_dict({"weight_ih_l0": torch.zeros(10, 3), "weight_hh_l0": torch.zeros(10, 4),
                                            "bias_ih_l0": torch.zeros(10)})


@pytest.mark.parametrize("key", ["weight_ih_l0", "weight_hh_l1", "bias_hh_l1_reverse", "bias_ih_l0_reverse"])
def test_wrong_shaped_state_dict_names_the_key(key):
    net = RecurrentNetwork(ModelConfig(cell="gru", input_size=3, hidden_size=4, num_layers=2, bidirectional=True))
    before = {k: v.clone() for k, v in net.torch_state_dict().items()}
    sd = torch.nn.GRU(3, 4, num_layers=2, bidirectional=True).state_dict()
    sd[key] = torch.zeros(*[s + 1 for s in sd[key].shape])
    with pytest.raises(ValueError) as e:
        net.load_torch_state_dict(sd)
    assert key in str(e.value) and "\n" not in str(e.value)
    # nothing was loaded (validation happens before any copy)
    assert all(torch.equal(before[k], v) for k, v in net.torch_state_dict().items())


def test_missing_key_and_wrong_cell_rejected():
    net = RecurrentNetwork(ModelConfig(cell="lstm", input_size=3, hidden_size=4, num_layers=2))
    sd = torch.nn.LSTM(3, 4, num_layers=1).state_dict()
    with pytest.raises(ValueError, match="l1"):
        net.load_torch_state_dict(sd)
    with pytest.raises(ValueError, match="weight_ih_l0"):
        net.load_torch_state_dict(torch.nn.GRU(3, 4, num_layers=2).state_dict())


# --------------------------------------------------------------------------------------------------------------
# truncated BPTT
# --------------------------------------------------------------------------------------------------------------
def _full_and_truncated(cell, k, T=10, B=2, I=3, H=4, L=1):
    net = RecurrentNetwork(ModelConfig(cell=cell, input_size=I, hidden_size=H, num_layers=L, seed=9))
    x = torch.randn(T, B, I, generator=torch.Generator().manual_seed(10))
    u = torch.randn(H, generator=torch.Generator().manual_seed(11))
    return net, x, u


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("k", [1, 3, 4])
def test_detach_every_inside_window_equals_full(f64, cell, k):
    T = 10
    net, x, u = _full_and_truncated(cell, k, T=T)
    full = net(x, views=True)
    trunc = net(x, views=True, detach_every=k)
    torch.testing.assert_close(trunc.outputs, full.outputs, rtol=0, atol=0)  # values are unchanged
    run_f, run_t = full.runs[0][0], trunc.runs[0][0]
    loss_f = (run_f.states[-1][0] @ u).sum()
    loss_t = (run_t.states[-1][0] @ u).sum()
    window = range(T - k, T)  # h_t for t >= T-k: lags 0..k-1
    g_f = torch.autograd.grad(loss_f, [run_f.states[t + 1][0] for t in window])
    g_t = torch.autograd.grad(loss_t, [run_t.states[t + 1][0] for t in window])
    for a, b in zip(g_t, g_f):
        assert float(b.abs().max()) > 0
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)
    # the final-step loss sees exactly the inputs of the last k steps
    xf = x.clone().requires_grad_(True)
    xt = x.clone().requires_grad_(True)
    gxf = torch.autograd.grad((net(xf).outputs[-1] @ u).sum(), xf)[0]
    gxt = torch.autograd.grad((net(xt, detach_every=k).outputs[-1] @ u).sum(), xt)[0]
    assert float(gxt[:T - k].abs().max()) == 0.0
    assert float(gxf[:T - k].abs().max()) > 0
    torch.testing.assert_close(gxt[T - k:], gxf[T - k:], rtol=0, atol=1e-14)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_detach_every_gradient_exactly_zero_beyond_window(f64, cell):
    """Every recorded h view is differentiable (the boundary state included): dL_{T-1}/dh_t is exactly 0 for
    t < T-k and the full gradient for t >= T-k."""
    T, k = 10, 3
    net, x, u = _full_and_truncated(cell, k, T=T)
    full = net(x, views=True)
    trunc = net(x, views=True, detach_every=k)
    hs_f = [s[0] for s in full.runs[0][0].states[1:]]
    hs_t = [s[0] for s in trunc.runs[0][0].states[1:]]
    g_f = torch.autograd.grad((hs_f[-1] @ u).sum(), hs_f)
    g_t = torch.autograd.grad((hs_t[-1] @ u).sum(), hs_t, allow_unused=True)
    g_t = [torch.zeros_like(h) if g is None else g for g, h in zip(g_t, hs_t)]
    for t in range(T):
        if t < T - k:
            assert float(g_t[t].abs().max()) == 0.0, t
            assert float(g_f[t].abs().max()) > 0, t
        else:
            torch.testing.assert_close(g_t[t], g_f[t], rtol=0, atol=1e-14)


@pytest.mark.parametrize("L", [1, 2])
def test_detach_every_cuts_only_the_recurrent_path(f64, L):
    """The output h_t at a window boundary (t = T-k-1, T-2k-1, ...) stays attached to its own input and to the
    layer above: only the recurrent edge into the next step is cut."""
    T, k = 9, 3
    net, x, u = _full_and_truncated("rnn", k, T=T, L=L)
    for t in range(T):
        # d outputs_t / d x_t involves no recurrent step: truncation must not change it
        xf = x.clone().requires_grad_(True)
        xt = x.clone().requires_grad_(True)
        gf = torch.autograd.grad((net(xf).outputs[t] @ u).sum(), xf)[0][t]
        gt = torch.autograd.grad((net(xt, detach_every=k).outputs[t] @ u).sum(), xt)[0][t]
        torch.testing.assert_close(gt, gf, rtol=0, atol=1e-14)
        assert float(gt.abs().max()) > 0, t


def test_run_cell_detach_every_state_values(f64):
    net, x, _ = _full_and_truncated("gru", 4)
    cell = net.layers[0][0]
    s0 = cell.init_state(x.shape[1])
    a = run_cell(cell, x, s0)
    b = run_cell(cell, x, s0, detach_every=4)
    assert len(b.states) == x.shape[0] + 1
    for sa, sb in zip(a.states, b.states):
        assert torch.equal(sa[0], sb[0])


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_a_network_built_to_load_is_zeros_and_loads_every_weight(f64, cell):
    """init=False (what analysis/own_model.py builds before loading a torch module's weights): every parameter 0,
    and after load_torch_state_dict the same network, parameter for parameter, as an initialised one loaded alike."""
    torch.manual_seed(3)
    ref = _torch_module(cell, 3, 4, 2, True)
    cfg = ModelConfig(cell=cell, input_size=3, hidden_size=4, num_layers=2, bidirectional=True, seed=5)
    bare = RecurrentNetwork(cfg, init=False)
    assert all(not p.any() for p in bare.parameters())
    full = RecurrentNetwork(cfg)
    for net in (bare, full):
        net.load_torch_state_dict(ref.state_dict())
    assert [n for n, _ in bare.named_parameters()] == [n for n, _ in full.named_parameters()]
    assert all(torch.equal(a, b) for a, b in zip(bare.parameters(), full.parameters()))
