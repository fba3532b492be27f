"""Reference tests for analysis/jacobians.py.

The reference for d state_{T-1} / d state_{T-1-k} is brute force: torch.nn.RNNCell/LSTMCell/GRUCell with the
network's weights, re-run from state_{T-1-k} over the same inputs, differentiated by
torch.autograd.functional.jacobian one sequence at a time. Closed forms (orthogonal / a*I linear RNNs, the zero
LSTM's carousel, the Pascanu bound) are checked as well.
"""
import json
import math

import numpy as np
import pytest
import torch

from analysis import ExperimentConfig, run_experiment
from analysis.jacobians import jacobian_products, report_lags
from rnn_models import ACTIVATION_GAMMA, ModelConfig, RecurrentNetwork, Run



pytestmark = pytest.mark.usefixtures("single_thread")




def _setup(cell, *, T=12, H=5, B=3, I=3, seed=0, xs=1.0, **kw):
    net = RecurrentNetwork(ModelConfig(cell=cell, input_size=I, hidden_size=H, seed=seed, **kw))
    x = xs * torch.randn(T, B, I, generator=torch.Generator().manual_seed(seed + 100))
    with torch.no_grad():
        trace = net(x)
    return net, x, trace.runs[0][0]


def _torch_cell(net, kind):
    c = net.layers[0][0]
    if kind == "rnn":
        ref = torch.nn.RNNCell(c.input_size, c.hidden_size, nonlinearity=c.activation)
    else:
        ref = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[kind](c.input_size, c.hidden_size)
    with torch.no_grad():
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(ref, n).copy_(getattr(c, n))
    return ref


def _ref_step(ref, kind, x_t, st):
    if kind == "lstm":
        return ref(x_t, st)
    return (ref(x_t, st[0]),)


def _ref_states(ref, kind, x):
    """states[t] = state after step t (t = 0..T-1), from zeros; an independent loop with torch.nn cells."""
    B, H = x.shape[1], ref.hidden_size
    st = tuple(torch.zeros(B, H) for _ in range(2 if kind == "lstm" else 1))
    out = []
    with torch.no_grad():
        for t in range(x.shape[0]):
            st = _ref_step(ref, kind, x[t], st)
            out.append(st)
    return out


def _brute_jacobian(ref, kind, x, states, k, b):
    """d state_{T-1} / d state_{T-1-k} of sequence b, (S, S) over [h; c] for the LSTM."""
    T, H = x.shape[0], ref.hidden_size
    n = 2 if kind == "lstm" else 1

    def f(s):
        st = tuple(s[i * H:(i + 1) * H].unsqueeze(0) for i in range(n))
        for t in range(T - k, T):
            st = _ref_step(ref, kind, x[t, b:b + 1], st)
        return torch.cat(st, -1).squeeze(0)

    s0 = torch.cat([s[b] for s in states[T - 1 - k]], -1)
    return torch.autograd.functional.jacobian(f, s0)


def _log10_sv(M):
    return torch.log10(torch.linalg.svdvals(M)).numpy()


# Cases whose products stay well conditioned (sigma_max / sigma_min < 1e6 for every lag and sequence): there the
# smallest singular value of a float64 product is itself determined to ~1e-10 relative, so 1e-8 in log10 is a fair
# demand on every singular value. (Badly conditioned products fix sigma_min only to eps * sigma_max / sigma_min.)
WELL_CONDITIONED = [("rnn", dict(activation="tanh", init="orthogonal", init_scale=1.2, xs=0.5)),
                    ("rnn", dict(activation="tanh", init="orthogonal", init_scale=1.0, xs=0.3)),
                    ("lstm", dict(forget_bias=2.0)),
                    ("lstm", dict(init="orthogonal", init_scale=1.0, forget_bias=3.0)),
                    ("gru", dict(seed=1)),
                    ("gru", dict(seed=2, xs=0.5))]


@pytest.mark.parametrize("cell,kw", WELL_CONDITIONED)
def test_products_against_brute_force_autograd(f64, cell, kw):
    T, H, B = 12, 5, 3
    net, x, run = _setup(cell, T=T, H=H, B=B, **kw)
    ref = _torch_cell(net, cell)
    states = _ref_states(ref, cell, x)
    # the run's states are the reference's states (a precondition of comparing products)
    for t in range(T):
        for a, b in zip(run.states[t + 1], states[t]):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    lags = list(range(T))
    n = 4
    res = jacobian_products(run, lags=lags, n_singular=n, lyapunov_k=0)
    assert res.lag == lags and res.batch_analysed == B
    assert res.spectral_norm.shape == (T,) and res.singular_values.shape == (T, n)
    assert res.spectral_norm_per_sequence.shape == (T, B)
    assert res.nonfinite is None and res.lyapunov is None
    assert res.min_reliable.all()
    for k in lags:
        sv_hh, sv_cc, sv_full = [], [], []
        for b in range(B):
            J = _brute_jacobian(ref, cell, x, states, k, b)
            sv_hh.append(_log10_sv(J[:H, :H]))
            if cell == "lstm":
                sv_cc.append(_log10_sv(J[H:, H:]))
                sv_full.append(_log10_sv(J))
        sv_hh = np.array(sv_hh)  # (B, H) descending
        assert (sv_hh[:, 0] - sv_hh[:, -1]).max() < 6  # precondition: well conditioned
        np.testing.assert_allclose(res.spectral_norm_per_sequence[k], sv_hh[:, 0], rtol=0, atol=1e-8)
        np.testing.assert_allclose(res.spectral_norm[k], sv_hh[:, 0].mean(), rtol=0, atol=1e-8)
        np.testing.assert_allclose(res.min_singular_value[k], sv_hh[:, -1].mean(), rtol=0, atol=1e-8)
        np.testing.assert_allclose(res.singular_values[k], sv_hh[:, :n].mean(0), rtol=0, atol=1e-8)
        if cell == "lstm":
            np.testing.assert_allclose(res.cell_full[k], np.array(sv_cc)[:, 0].mean(), rtol=0, atol=1e-8)
            np.testing.assert_allclose(res.state_spectral_norm[k], np.array(sv_full)[:, 0].mean(), rtol=0, atol=1e-8)
    # the products are not trivial: they change over the lags
    assert np.ptp(res.spectral_norm) > 0.3


@pytest.mark.parametrize("cell,kw", [("rnn", dict(activation="relu", init="orthogonal", init_scale=1.1)),
                                     ("rnn", dict(activation="tanh", init="orthogonal", init_scale=1.3)),
                                     ("lstm", dict(init="orthogonal", init_scale=1.5)),
                                     ("gru", dict(init="orthogonal", init_scale=1.5))])
def test_spectral_norm_against_brute_force_any_conditioning(f64, cell, kw):
    """sigma_max of the product is well determined however singular the product is (dead ReLUs included)."""
    T, H, B = 12, 5, 3
    net, x, run = _setup(cell, T=T, H=H, B=B, **kw)
    ref = _torch_cell(net, cell)
    states = _ref_states(ref, cell, x)
    res = jacobian_products(run, lags=list(range(T)), lyapunov_k=0)
    for k in range(T):
        top = [_log10_sv(_brute_jacobian(ref, cell, x, states, k, b)[:H, :H])[0] for b in range(B)]
        np.testing.assert_allclose(res.spectral_norm_per_sequence[k], top, rtol=0, atol=1e-8)
    assert np.ptp(res.spectral_norm) > 0.5


def _step_brute_jacobian(cell, run, k, b):
    """d state_{T-1} / d state_{T-1-k} of sequence b by re-running cell.step (validated against hand formulas in
    test_cells) from the recorded state with the recorded projected inputs."""
    T, H, n = len(run.xp), cell.hidden_size, len(run.states[0])

    def f(s):
        st = tuple(s[i * H:(i + 1) * H].unsqueeze(0) for i in range(n))
        for t in range(T - k, T):
            st = cell.step(run.xp[t][b:b + 1], st)
        return torch.cat(st, -1).squeeze(0)

    return torch.autograd.functional.jacobian(f, torch.cat([s[b] for s in run.states[T - k]], -1))


@pytest.mark.parametrize("cell,kw", [("lstm", dict(peephole=True, forget_bias=2.0)),
                                     ("lstm", dict(layer_norm=True, forget_bias=2.0)),
                                     ("rnn", dict(layer_norm=True, init="orthogonal", init_scale=1.2, xs=0.5)),
                                     ("gru", dict(layer_norm=True, seed=2, xs=0.5))])
def test_products_peephole_and_layer_norm_against_brute_force(f64, cell, kw):
    T, H, B = 10, 5, 2
    net, x, run = _setup(cell, T=T, H=H, B=B, **kw)
    c = net.layers[0][0]
    with torch.no_grad():  # non-trivial layer-norm gains and peepholes
        for name, p in c.named_parameters():
            if name.startswith("ln") or name.startswith("weight_c"):
                p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))))
        run = net(x).runs[0][0]
    res = jacobian_products(run, lags=list(range(T)), n_singular=H, lyapunov_k=0)
    assert res.method == ("autograd (vmap jacrev)" if kw.get("layer_norm") else "closed-form")
    for k in range(T):
        Js = [_step_brute_jacobian(c, run, k, b).detach() for b in range(B)]
        top = np.array([_log10_sv(J[:H, :H])[0] for J in Js])
        np.testing.assert_allclose(res.spectral_norm_per_sequence[k], top, rtol=0, atol=1e-8)
        svs = np.array([_log10_sv(J[:H, :H]) for J in Js])
        if (svs[:, 0] - svs[:, -1]).max() < 6:  # well conditioned: every singular value is determined
            np.testing.assert_allclose(res.singular_values[k], svs.mean(0), rtol=0, atol=1e-8)
        if cell == "lstm":
            np.testing.assert_allclose(res.cell_full[k], np.mean([_log10_sv(J[H:, H:])[0] for J in Js]),
                                       rtol=0, atol=1e-8)
            np.testing.assert_allclose(res.state_spectral_norm[k], np.mean([_log10_sv(J)[0] for J in Js]),
                                       rtol=0, atol=1e-8)


def test_threaded_svd_path_matches_single_thread(f64):
    """H >= 32 with two threads takes the split-batch SVD path: same numbers as one thread, and as brute force."""
    T, H, B = 5, 32, 3
    net, x, run = _setup("gru", T=T, H=H, B=B, seed=11)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = jacobian_products(run, lags=list(range(T)), n_singular=4, lyapunov_k=2)
        torch.set_num_threads(1)
        one = jacobian_products(run, lags=list(range(T)), n_singular=4, lyapunov_k=2)
    finally:
        torch.set_num_threads(n)
    np.testing.assert_allclose(two.spectral_norm_per_sequence, one.spectral_norm_per_sequence, rtol=0, atol=1e-12)
    np.testing.assert_allclose(two.singular_values, one.singular_values, rtol=0, atol=1e-12)
    c = net.layers[0][0]
    for k in (1, T - 1):
        top = [_log10_sv(_step_brute_jacobian(c, run, k, b).detach())[0] for b in range(B)]
        np.testing.assert_allclose(two.spectral_norm_per_sequence[k], top, rtol=0, atol=1e-8)


def test_gate_paths_against_hand_products(f64):
    T, H, B = 12, 5, 3
    for cell, name, gate in (("lstm", "cell_carousel", slice(5, 10)), ("gru", "update_gate_path", slice(5, 10))):
        net, x, run = _setup(cell, T=T, H=H, B=B, seed=3)
        ref = _torch_cell(net, cell)
        states = _ref_states(ref, cell, x)
        res = jacobian_products(run, lags=list(range(T)), lyapunov_k=0)
        # the gate at step t from the torch weights: sigma(W_i. x_t + b_i. + W_h. h_{t-1} + b_h.)
        hs = [torch.zeros(B, H)] + [s[0] for s in states[:-1]]
        g = torch.stack([torch.sigmoid(x[t] @ ref.weight_ih[gate].T + ref.bias_ih[gate]
                                       + hs[t] @ ref.weight_hh[gate].T + ref.bias_hh[gate]) for t in range(T)])
        for k in range(T):
            prod = torch.ones(B, H)
            for t in range(T - k, T):
                prod = prod * g[t]
            expect = torch.log10(prod.max(-1).values).mean().item()
            assert getattr(res, name)[k] == pytest.approx(expect, abs=1e-10)
        other = "update_gate_path" if cell == "lstm" else "cell_carousel"
        assert getattr(res, other) is None


def test_batch_subset_is_first_sequences(f64):
    net, x, run = _setup("gru", T=8, B=4, seed=4)
    full = jacobian_products(run, lags=list(range(8)), lyapunov_k=0)
    sub = jacobian_products(run, lags=list(range(8)), batch=2, lyapunov_k=0)
    assert sub.batch_analysed == 2 and sub.spectral_norm_per_sequence.shape == (8, 2)
    np.testing.assert_allclose(sub.spectral_norm_per_sequence, full.spectral_norm_per_sequence[:, :2], atol=1e-12)
    np.testing.assert_allclose(sub.spectral_norm, full.spectral_norm_per_sequence[:, :2].mean(1), atol=1e-12)


def test_lags_subset_matches_all_lags(f64):
    net, x, run = _setup("lstm", T=30, seed=5)
    full = jacobian_products(run, lags=list(range(30)), lyapunov_k=0)
    lags = [0, 1, 4, 17, 29]
    sub = jacobian_products(run, lags=[29, 4, 0, 17, 1, 4], lyapunov_k=0)  # unsorted, duplicated
    assert sub.lag == lags
    np.testing.assert_allclose(sub.spectral_norm, full.spectral_norm[lags], atol=1e-12)
    np.testing.assert_allclose(sub.cell_full, full.cell_full[lags], atol=1e-12)
    np.testing.assert_allclose(sub.cell_carousel, full.cell_carousel[lags], atol=1e-12)
    assert sub.spectral_norm[0] == 0.0 and sub.min_singular_value[0] == 0.0  # P_0 = I


# --------------------------------------------------------------------------------------------------------------
# Lyapunov exponents
# --------------------------------------------------------------------------------------------------------------
def test_lyapunov_against_qr_of_brute_force_product(f64):
    T, H, B = 12, 5, 3
    net, x, run = _setup("rnn", T=T, H=H, B=B, seed=6, init="orthogonal", init_scale=1.2, xs=0.5)
    ref = _torch_cell(net, "rnn")
    states = _ref_states(ref, "rnn", x)
    nk = 3
    res = jacobian_products(run, lags=list(range(T)), lyapunov_k=nk)
    assert res.lyapunov.shape == (nk,)
    n = T - 1  # steps multiplied to reach the largest lag
    expect = []
    for b in range(B):
        P = _brute_jacobian(ref, "rnn", x, states, T - 1, b)
        R = torch.linalg.qr(P.T[:, :nk])[1]  # QR of P^T e_1..e_k: |R_ii| = product of the per-step |R_ii|
        expect.append(torch.log(torch.diagonal(R).abs()).numpy() / n)
    np.testing.assert_allclose(res.lyapunov, np.mean(expect, 0), rtol=0, atol=1e-10)
    # all S exponents sum to log|det P| / n
    full = jacobian_products(run, lags=list(range(T)), lyapunov_k=H)
    logdet = np.mean([torch.linalg.slogdet(_brute_jacobian(ref, "rnn", x, states, T - 1, b))[1].item()
                      for b in range(B)])
    assert full.lyapunov.sum() == pytest.approx(logdet / n, abs=1e-10)


# --------------------------------------------------------------------------------------------------------------
# closed forms
# --------------------------------------------------------------------------------------------------------------
def test_orthogonal_linear_rnn_all_singular_values_one(f64):
    T, H = 40, 6
    _, _, run = _setup("rnn", T=T, H=H, B=3, seed=7, activation="linear", init="orthogonal", init_scale=1.0)
    res = jacobian_products(run, lags=list(range(T)), n_singular=H, lyapunov_k=H)
    assert res.singular_values.shape == (T, H)
    np.testing.assert_allclose(res.singular_values, 0.0, rtol=0, atol=1e-9)
    np.testing.assert_allclose(res.spectral_norm, 0.0, rtol=0, atol=1e-9)
    np.testing.assert_allclose(res.min_singular_value, 0.0, rtol=0, atol=1e-9)
    np.testing.assert_allclose(res.lyapunov, 0.0, rtol=0, atol=1e-9)


def test_orthogonal_linear_rnn_through_run_experiment_float64():
    T, H = 40, 6
    r = run_experiment(ExperimentConfig(cell="rnn", activation="linear", init="orthogonal", init_scale=1.0,
                                        hidden_size=H, seq_len=T, batch_size=2, dtype="float64", n_singular=H))
    np.testing.assert_allclose(r.jac.singular_values, 0.0, rtol=0, atol=1e-9)


@pytest.mark.parametrize("a", [0.5, 1.5])
def test_identity_scaled_linear_rnn_float32_long(a):
    T, H = 400, 6
    r = run_experiment(ExperimentConfig(cell="rnn", activation="linear", init="identity", init_scale=a,
                                        hidden_size=H, seq_len=T, batch_size=2, dtype="float32", n_singular=H,
                                        lyapunov_k=H))
    j = r.jac
    k = np.arange(T)
    assert j.lag == list(range(T)) and j.nonfinite is None
    expect = k * math.log10(a)
    for arr in (j.spectral_norm, j.min_singular_value):
        assert np.isfinite(arr).all()
        np.testing.assert_allclose(arr, expect, rtol=0, atol=1e-4)
    np.testing.assert_allclose(j.singular_values, np.repeat(expect[:, None], H, 1), rtol=0, atol=1e-4)
    np.testing.assert_allclose(j.lyapunov, math.log(a), rtol=0, atol=1e-6)
    d = r.to_dict()["jacobian"]
    # the linear-scale JSON values: a^k, no underflow to 0 for a = 0.5 (0.5^399 ~ 1e-120), no overflow for 1.5
    sn = np.array(d["spectral_norm"], dtype=float)
    np.testing.assert_allclose(np.log10(sn), expect, rtol=0, atol=1e-4)
    json.dumps(r.to_dict(), allow_nan=False)


def test_identity_linear_rnn_exact_in_float64(f64):
    a, T = 0.7, 60
    _, _, run = _setup("rnn", T=T, H=4, B=2, seed=8, activation="linear", init="identity", init_scale=a)
    res = jacobian_products(run, lags=list(range(T)), n_singular=4, lyapunov_k=4)
    expect = np.arange(T) * math.log10(a)
    np.testing.assert_allclose(res.spectral_norm, expect, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.min_singular_value, expect, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.lyapunov, math.log(a), rtol=0, atol=1e-12)


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
@pytest.mark.parametrize("init,scale", [("default", 1.0), ("orthogonal", 1.5), ("spectral", 2.0)])
def test_pascanu_bound(f64, activation, init, scale):
    T, H = 30, 8
    net, _, run = _setup("rnn", T=T, H=H, B=4, seed=9, activation=activation, init=init, init_scale=scale)
    W = net.layers[0][0].weight_hh.detach()
    smax = float(torch.linalg.svdvals(W)[0])
    gamma = ACTIVATION_GAMMA[activation]
    assert gamma == {"tanh": 1.0, "relu": 1.0, "sigmoid": 0.25}[activation]
    res = jacobian_products(run, lags=list(range(T)), lyapunov_k=0)
    bound = np.arange(T) * math.log10(gamma * smax)
    per_seq = res.spectral_norm_per_sequence
    assert (per_seq <= bound[:, None] + 1e-10).all()
    if activation == "sigmoid":  # the 1/4 matters: the bound with gamma = 1 would be far looser
        assert (per_seq[-1] <= (T - 1) * math.log10(smax) - (T - 1) * math.log10(4) + 1e-10).all()


def test_zero_lstm_carousel_is_sigmoid_b_to_the_k(f64):
    T, H, b = 50, 4, 1.7
    net = RecurrentNetwork(ModelConfig(cell="lstm", input_size=3, hidden_size=H))
    cell = net.layers[0][0]
    with torch.no_grad():
        for p in cell.parameters():
            p.zero_()
        cell.bias_ih[H:2 * H] = b
    x = torch.randn(T, 2, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        run = net(x).runs[0][0]
    res = jacobian_products(run, lags=list(range(T)), lyapunov_k=0)
    fb = 1 / (1 + math.exp(-b))
    expect = np.arange(T) * math.log10(fb)
    np.testing.assert_allclose(res.cell_carousel, expect, rtol=0, atol=1e-12)
    # with zero weights nothing else reaches c: the full c->c flow is the carousel
    np.testing.assert_allclose(res.cell_full, expect, rtol=0, atol=1e-12)
    # and nothing reaches h_{T-1} from h_{T-1-k} for k >= 1 (every path starts with a zero weight)
    assert res.spectral_norm[0] == 0.0 and np.all(res.spectral_norm[1:] == -np.inf)


# --------------------------------------------------------------------------------------------------------------
# lags
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("T", [1, 2, 10, 48, 49, 50, 100, 1000, 99999])
@pytest.mark.parametrize("num", [3, 5, 48])
def test_report_lags(T, num):
    assert report_lags(T, "all", num) == list(range(T))
    lags = report_lags(T, "log", num)
    assert lags[0] == 0 and lags[-1] == T - 1
    assert lags == sorted(set(lags))
    assert all(isinstance(k, int) for k in lags)
    if T <= num:
        assert lags == list(range(T))
    else:
        assert 1 in lags and len(lags) <= num


@pytest.mark.parametrize("T", [10, 100])
def test_report_lags_num_2_includes_last_lag(T):
    lags = report_lags(T, "log", 2)
    assert lags[0] == 0 and lags[-1] == T - 1


def test_log_lags_in_experiment_exact_at_those_lags():
    base = dict(cell="gru", hidden_size=6, seq_len=120, batch_size=2, dtype="float64")
    r_all = run_experiment(ExperimentConfig(**base, jacobian_lags="all"))
    r_log = run_experiment(ExperimentConfig(**base, jacobian_lags="log", num_log_lags=10))
    lags = r_log.jac.lag
    assert lags == report_lags(120, "log", 10) and lags[-1] == 119
    np.testing.assert_allclose(r_log.jac.spectral_norm, r_all.jac.spectral_norm[lags], rtol=0, atol=1e-12)
    np.testing.assert_allclose(r_log.jac.min_singular_value, r_all.jac.min_singular_value[lags], rtol=0, atol=1e-12)
    assert r_log.to_dict()["jacobian"]["lag"] == lags


# --------------------------------------------------------------------------------------------------------------
# non-finite values
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["relu", "linear"])
def test_overflowing_forward_is_recorded_not_raised(activation):
    T = 400
    cfg = ExperimentConfig(cell="rnn", activation=activation, init="identity", init_scale=50.0, hidden_size=8,
                           seq_len=T, batch_size=2, dtype="float32", jacobian_lags="log", lyapunov_k=0)
    r = run_experiment(cfg)
    # independent reference: the same seeded weights, a float32 loop by hand, first non-finite step
    net = RecurrentNetwork(r.config.model_config(r.config.input_size))
    c = net.layers[0][0]
    from analysis.tasks import make_batch
    x = make_batch("random", T, 2, seed=0, input_size=8, dtype=torch.float32).inputs
    W_ih, W_hh, b_ih, b_hh = (getattr(c, n).detach() for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    h = torch.zeros(2, 8)
    first = None
    with torch.no_grad():
        for t in range(T):
            a = x[t] @ W_ih.T + b_ih + h @ W_hh.T + b_hh
            h = torch.relu(a) if activation == "relu" else a
            if first is None and not torch.isfinite(h).all():
                first = t
    assert first is not None and 10 < first < 60
    nf = r.nonfinite
    assert nf is not None
    assert nf["quantity"] == "hidden_state" and nf["timestep"] == first
    d = r.to_dict()
    assert d["nonfinite"] == nf
    json.dumps(d, allow_nan=False)  # non-finite numbers become null, the file stays valid JSON
    assert len(d["grad_norm"]) == T


def test_nonfinite_jacobian_recorded_with_lag_and_timestep(f64):
    T = 20
    net, x, run = _setup("rnn", T=T, seed=10)
    t0 = 7
    xp = [v.clone() for v in run.xp]
    xp[t0][1, 0] = float("nan")  # sequence 1, step t0
    bad = Run(cell=run.cell, xp=xp, states=run.states, reverse=False)
    good = jacobian_products(run, lags=list(range(T)), lyapunov_k=0)
    res = jacobian_products(bad, lags=list(range(T)), lyapunov_k=0)
    k_bad = T - t0  # P_k multiplies J_{T-k}: the step t0 enters at lag T - t0
    assert res.nonfinite == {"quantity": "jacobian_product", "lag": k_bad, "timestep": t0, "sequence": 1,
                             "value": "non-finite"}
    np.testing.assert_allclose(res.spectral_norm[:k_bad], good.spectral_norm[:k_bad], rtol=0, atol=1e-12)
    assert np.isnan(res.spectral_norm[k_bad:]).all()
