"""Adding a kind of cell is one module (issue 16, item 1): a toy kind registered here, in the test, is accepted by
the config, built by the network, and analysed by the engine (products, gradient norms, the thin route, the
cost estimate, the whole experiment and its figures) with every number checked against float64 autograd; and no
code outside rnn_models/cells/ branches on a cell's name any more (an AST scan of rnn_models, analysis and
dashboard).

The toy "elman2" is a dense two-state Elman variant whose parameters have none of torch's names (no weight_hh,
no gate blocks), no closed-form Jacobian and its own initialization:

    a_t = A h_{t-1} + K m_{t-1} + u_t,    h_t = tanh(a_t)
    m_t = m_{t-1} / 2 + tanh(N h_{t-1} + w_t) / 2,       [u_t; w_t] = P x_t + b

State (h, m): S = 2H. Shapes: x (T, B, I), xp (T, B, 2H).
"""
import ast
import json
import math
import pathlib

import numpy as np
import pytest
import torch
from torch import nn

from analysis import ExperimentConfig, run_experiment
from analysis.figures import VIEWS, view_figures
from analysis.gradients import gradient_norms, log_grad_norm_chain
from analysis.jacobians import jacobian_products
from analysis.limits import SVD_FLOPS, estimate
from analysis.spectra import weight_spectra
from analysis.summary import summary_lines
from analysis.thin_sigma import BLOCK, JVP_FACTOR, TESTED_RTOL, THIN_ITERATIONS, route_flops, thin_jacobians
from rnn_models import CELLS, ConfigError, ModelConfig, RecurrentNetwork
from rnn_models.cells import _Cell, cell_names, registry

ROOT = pathlib.Path(__file__).resolve().parents[1]


class Elman2Cell(_Cell):
    """The module docstring's toy kind: everything a new kind must give, nothing more."""

    name, label, color = "elman2", "Elman2", "#CC79A7"
    state_names = ("h", "m")
    gate_names = ()  # no W_hh

    @classmethod
    def from_config(cls, input_size, hidden_size, config, dtype=None):
        return cls(input_size, hidden_size, dtype)

    def __init__(self, input_size, hidden_size, dtype=None):
        super().__init__()
        H = hidden_size
        self.input_size, self.hidden_size = input_size, hidden_size
        self.A, self.K, self.N = (nn.Parameter(torch.empty(H, H, dtype=dtype)) for _ in range(3))
        self.P = nn.Parameter(torch.empty(2 * H, input_size, dtype=dtype))
        self.b = nn.Parameter(torch.empty(2 * H, dtype=dtype))

    @torch.no_grad()
    def init_weights(self, config, gen):
        """Its own scheme: A = 0.9 Q (Q orthogonal), the rest U(-1/sqrt(H), 1/sqrt(H)), b = 0."""
        H = self.hidden_size
        Q, R = torch.linalg.qr(torch.randn(H, H, generator=gen, dtype=torch.float64))
        self.A.copy_(0.9 * Q * torch.sign(torch.diagonal(R)))
        for p in (self.K, self.N, self.P):
            p.copy_((torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1) / math.sqrt(H))
        self.b.zero_()

    def project(self, x_t):
        # [u_t; w_t] = P x_t + b
        return x_t @ self.P.T + self.b

    def _forward(self, xp_t, state):
        h, m = state
        u, w = xp_t.chunk(2, dim=-1)  # 2 x (..., H)
        # h_t = tanh(A h_{t-1} + K m_{t-1} + u_t)
        h_t = torch.tanh(h @ self.A.T + m @ self.K.T + u)
        # m_t = m_{t-1} / 2 + tanh(N h_{t-1} + w_t) / 2
        m_t = 0.5 * m + 0.5 * torch.tanh(h @ self.N.T + w)
        return (h_t, m_t), {}


@pytest.fixture
def elman2():
    """Register the toy kind for one test, and take it out again (the registry is global)."""
    registry.register(Elman2Cell)
    yield Elman2Cell
    registry._REGISTRY.pop("elman2", None)


def _net(T=12, B=3, H=4, I=3, seed=1):
    cfg = ModelConfig(cell="elman2", input_size=I, hidden_size=H, seed=seed)
    net = RecurrentNetwork(cfg, dtype=torch.float64)
    x = torch.randn(T, B, I, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    return net, x


def _step_jacobians(run) -> list[torch.Tensor]:
    """J_t = d state_t / d state_{t-1} (B, S, S) of every step t = 0..T-1 by torch.func.jacrev of the step alone."""
    cell, H = run.cell, run.cell.hidden_size
    out = []
    for t in range(len(run.xp)):
        xp = run.xp[t].detach()
        s = torch.cat([v.detach() for v in run.states[t]], -1)  # (B, S)

        def f(s1, xp1):
            h, m = cell.step(xp1[None], (s1[None, :H], s1[None, H:]))
            return torch.cat([h, m], -1)[0]
        out.append(torch.func.vmap(torch.func.jacrev(f))(s, xp).detach())
    return out


# ---- the config and the network ----------------------------------------------------------------------------
def test_unregistered_kind_is_refused_then_accepted_once_registered():
    with pytest.raises(ConfigError, match=r"cell='elman2' is not allowed: choose one of rnn, lstm, gru"):
        ModelConfig(cell="elman2")
    registry.register(Elman2Cell)
    try:
        assert "elman2" in CELLS and "elman2" in cell_names() and list(CELLS)[-1] == "elman2"
        cfg = ModelConfig(cell="elman2", hidden_size=5, activation="relu", peephole=True)
        assert cfg.state_size == 10 and cfg.num_gates == 0
        notes = cfg.inapplicable()
        assert notes[0] == ("activation='relu' applies to the vanilla RNN only; elman2 uses its own "
                            "nonlinearities")
        assert notes[1] == "peephole applies to the LSTM only; ignored for elman2"
        assert ExperimentConfig(compare=("rnn", "elman2")).cells == ("rnn", "elman2")
    finally:
        registry._REGISTRY.pop("elman2", None)
    assert "elman2" not in CELLS


def test_network_builds_the_kind_with_its_own_init_and_runs_its_equations(elman2):
    net, x = _net()
    cell = net.layers[0][0]
    assert isinstance(cell, Elman2Cell)
    A = cell.A.detach()
    torch.testing.assert_close(A.T @ A, 0.81 * torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-12)  # its init
    assert bool((cell.b == 0).all())
    with torch.no_grad():
        trace = net(x)
        h = m = torch.zeros(3, 4, dtype=torch.float64)
        for t in range(x.shape[0]):  # the module docstring's equations, written out
            u, w = (x[t] @ cell.P.T + cell.b).chunk(2, -1)
            h, m = torch.tanh(h @ A.T + m @ cell.K.T + u), 0.5 * m + 0.5 * torch.tanh(h @ cell.N.T + w)
            torch.testing.assert_close(trace.outputs[t], h, rtol=0, atol=1e-14)
    assert len(trace.runs[0][0].states[-1]) == 2


# ---- the engine on the new kind, against float64 autograd -----------------------------------------------------
def test_jacobian_products_match_autograd_products(elman2):
    net, x = _net(T=12)
    with torch.no_grad():
        run = net(x).runs[0][0]
    lags = list(range(12))
    jac = jacobian_products(run, lags=lags, n_singular=4, lyapunov_k=0)
    Js = _step_jacobians(run)
    P = torch.eye(8, dtype=torch.float64).expand(3, 8, 8)
    want_h, want_s = [np.zeros(3)], [np.zeros(3)]
    for k in range(1, 12):
        P = P @ Js[12 - k]  # d state_{T-1} / d state_{T-1-k}
        want_h.append(torch.log10(torch.linalg.svdvals(P[:, :4, :4])[:, 0]).numpy())
        want_s.append(torch.log10(torch.linalg.svdvals(P)[:, 0]).numpy())
    np.testing.assert_allclose(jac.spectral_norm_per_sequence, np.array(want_h), rtol=0, atol=1e-10)
    np.testing.assert_allclose(jac.state_spectral_norm, np.array(want_s).mean(1), rtol=0, atol=1e-10)
    assert jac.cell_full is None and jac.cell_carousel is None and jac.update_gate_path is None  # no c, no keep gate


def test_gradient_norms_and_log_chain_match_the_autograd_chain(elman2):
    net, x = _net(T=12)
    u = torch.randn(4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    trace = net(x, views=True)
    probe = trace.outputs[-1] @ u  # (B,): L = u . h_{T-1}
    grad = gradient_norms(trace, probe, 0)
    run = trace.runs[0][0]
    Js = _step_jacobians(run)
    # dL/dstate_{T-1} = [u, 0]; dL/dstate_{t-1} = dL/dstate_t J_t (the loss reads state_t only through state_{t+1})
    v = torch.cat([u.expand(3, 4), torch.zeros(3, 4, dtype=torch.float64)], -1)
    want = [None] * 12
    for t in range(11, -1, -1):
        want[t] = v
        v = (v.unsqueeze(1) @ Js[t]).squeeze(1)
    want = torch.stack(want)  # (T, B, S)
    torch.testing.assert_close(grad.state_grads, want, rtol=1e-10, atol=1e-14)
    ref = torch.exp(torch.log(torch.linalg.vector_norm(want[..., :4], dim=-1)).mean(-1))  # geometric mean
    np.testing.assert_allclose(grad.grad_norm, ref.numpy(), rtol=1e-10)
    assert grad.cell_grad_norm is None  # no memory cell declared
    with torch.no_grad():
        logs = log_grad_norm_chain(run, want[-1])  # the dense vjp_steps default
    np.testing.assert_allclose(logs.numpy(), torch.log10(torch.linalg.vector_norm(want[..., :4], dim=-1)).numpy(),
                               rtol=0, atol=1e-10)


def test_thin_route_within_its_tolerance_of_the_exact_products(elman2):
    net, x = _net(T=20, seed=3)
    with torch.no_grad():
        run = net(x).runs[0][0]
    lags = [0, 1, 2, 5, 10, 19]
    ex, th = jacobian_products(run, lags=lags), thin_jacobians(run, lags=lags)
    tol = math.log10(1 + TESTED_RTOL)
    np.testing.assert_allclose(th.spectral_norm_per_sequence, ex.spectral_norm_per_sequence, rtol=0, atol=tol)
    np.testing.assert_allclose(th.state_spectral_norm, ex.state_spectral_norm, rtol=0, atol=tol)
    assert th.extras["sigma_max_estimate"]["quantities"] == ["spectral_norm", "state_spectral_norm"]


def test_cost_estimate_uses_the_dense_default(elman2):
    cfg = ExperimentConfig(cell="elman2", hidden_size=32, seq_len=50, batch_size=4, lyapunov_k=8)
    cost = estimate(cfg)
    H, S, T, b, nk = 32, 64, 50, 4, 8
    assert cost.parts["products"] == T * b * (2 * S ** 3 + 4 * S * nk * nk)  # dense S x S products
    assert cost.parts["svd"] == T * SVD_FLOPS * b * (H ** 3 + S ** 3)  # h->h and the whole state, every lag
    assert cost.parts["gates"] == 0  # no keep gate
    assert cost.parts["graph"] == T * b * Elman2Cell.graph_per_unit * H * 4
    thin, exact = route_flops("elman2", H, T, list(range(T)), b)
    assert thin == THIN_ITERATIONS * (1 + JVP_FACTOR) * BLOCK * b * 2 * sum(range(T)) * 2 * S * S
    assert exact == (T - 1) * b * 2 * S ** 3 + T * b * 8.0 * (H ** 3 + S ** 3)


def test_whole_experiment_result_and_figures(elman2):
    cfg = ExperimentConfig(compare=("rnn", "elman2"), hidden_size=6, seq_len=15, batch_size=2, dtype="float64")
    from analysis.experiment import run_comparison
    res = run_comparison(cfg)
    r = res["elman2"]
    assert r.jac.state_spectral_norm is not None and np.isfinite(r.grad.grad_norm).all()
    d = json.loads(json.dumps(r.to_dict()))
    assert d["config"]["cell"] == "elman2" and d["cell_flow"] is None and d["gate_flow"] is None
    assert d["gamma"] is None  # no activation setting: no vanilla-RNN bound
    assert summary_lines(r)[0] == "cell: Elman2"
    figs = {view: view_figures(view, res) for view in VIEWS}  # every view draws the new kind
    ours = [t for t in figs["gradient-flow"]["grad_norm"].data if t.name.startswith("Elman2 ‖")]
    assert len(ours) == 1 and ours[0].line.color == Elman2Cell.color  # its declared colour and label


def test_spectra_of_a_cell_without_w_hh(elman2, monkeypatch):
    """No W_hh: no blocks, no crash; a fixed diagonal recurrence's eigenvalues (recurrent_eigenvalues) are used as
    they are, their singular values those of diag(lambda)."""
    net, _ = _net()
    cell = net.layers[0][0]
    assert cell.recurrent_blocks() == {} and weight_spectra(cell) == {}
    lam = torch.tensor([0.5 + 0.5j, -0.9 + 0j, 0.1j], dtype=torch.complex128)
    monkeypatch.setattr(Elman2Cell, "recurrent_eigenvalues", lambda self: {"lambda": lam})
    s = weight_spectra(cell)["lambda"]
    np.testing.assert_array_equal(s["eigenvalues"], lam.numpy())
    np.testing.assert_allclose(s["singular_values"], torch.linalg.svdvals(torch.diag(lam)).numpy(), rtol=1e-15)
    assert s["spectral_radius"] == pytest.approx(0.9, rel=1e-15) and s["sigma_max"] == pytest.approx(0.9, rel=1e-15)


# ---- no branch on a cell's name outside rnn_models/cells/ ------------------------------------------------------
KIND_NAMES = {"rnn", "lstm", "gru"}
CLASS_NAMES = {"RNNCell", "LSTMCell", "GRUCell"}


def _is_name(node) -> bool:
    return isinstance(node, ast.Constant) and node.value in KIND_NAMES


def _names_in(node) -> bool:
    return _is_name(node) or (isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(map(_is_name, node.elts)))


def _class_ref(node) -> bool:
    return (isinstance(node, ast.Name) and node.id in CLASS_NAMES) or \
        (isinstance(node, ast.Attribute) and node.attr in CLASS_NAMES) or \
        (isinstance(node, ast.Constant) and node.value in CLASS_NAMES)


def branches_on_cell_names(source: str) -> list[tuple[int, str]]:
    """(line, what) for every place the code asks a cell's name or class instead of the cell: a comparison or a
    membership test with "rnn"/"lstm"/"gru" (cell == "lstm", c.cell != "rnn", cell in ("lstm", "gru"),
    "lstm" in cells, arch["cell"] == "rnn"), a dict keyed by (or mapping to) those names ({"rnn": 1, ...},
    {1: "rnn"}, {"RNN_TANH": "rnn"}), isinstance / ``is`` tests and name lookups of the cell classes
    (isinstance(cell, LSTMCell), self.kind is GRUCell, {"LSTMCell": "f"}.get(type(cell).__name__)).
    Docstrings and comments are not code: they are not read."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left] + node.comparators
            if any(map(_names_in, operands)):
                found.append((node.lineno, "compares with a cell name"))
            if any(isinstance(op, (ast.Is, ast.IsNot, ast.Eq, ast.NotEq)) for op in node.ops) and \
                    any(map(_class_ref, operands)):
                found.append((node.lineno, "compares with a cell class"))
        elif isinstance(node, ast.Dict):
            if any(k is not None and (_is_name(k) or _class_ref(k)) for k in node.keys) or any(map(_is_name, node.values)):
                found.append((node.lineno, "a dict keyed by (or mapping to) cell names"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("isinstance", "issubclass"):
            if any(_class_ref(a) or (isinstance(a, ast.Tuple) and any(map(_class_ref, a.elts))) for a in node.args[1:]):
                found.append((node.lineno, "isinstance of a cell class"))
    return found


def test_the_scan_finds_each_kind_of_branch():
    """The scan itself, on the branches this issue removed (each must be found) and on what stays (none)."""
    bad = ['if cell == "lstm": pass', 'x = c.cell != "rnn"', 'ok = cell in ("lstm", "gru")', 'g = "lstm" in cells',
           'y = arch["cell"] == "lstm"', 'GATES = {"rnn": 1, "lstm": 4, "gru": 3}', 'n = {1: "rnn", 4: "lstm"}[g]',
           'm = {"RNN_TANH": "rnn"}[mode]', 'a = isinstance(cell, LSTMCell)', 'b = self.kind is GRUCell',
           'n = {"LSTMCell": "f", "GRUCell": "z"}.get(type(cell).__name__)', 'z = isinstance(c, (RNNCell, x.GRUCell))',
           'w = cells != ["lstm"]']
    for src in bad:
        assert branches_on_cell_names(src), src
    fine = ['cfg = ExperimentConfig(cell="rnn", compare=("rnn", "lstm"))', 'cell: str = "rnn"',
            '"""cell == "lstm" in a docstring"""', '# cell == "lstm"', 'st.text_input("m", placeholder="rnn")',
            'k = cell_type(c).keep_gate is not None', 'from .cells import GRUCell, LSTMCell, RNNCell']
    for src in fine:
        assert not branches_on_cell_names(src), src


def test_no_code_outside_the_cells_branches_on_a_cells_name():
    files = [p for d in ("rnn_models", "analysis", "dashboard") for p in sorted((ROOT / d).rglob("*.py"))
             if "rnn_models/cells/" not in p.relative_to(ROOT).as_posix()]
    assert len(files) > 50
    found = [f"{p.relative_to(ROOT)}:{line}: {what}" for p in files
             for line, what in branches_on_cell_names(p.read_text(encoding="utf-8"))]
    assert not found, "ask the cell (rnn_models.cells.cell_type(name)) instead:\n" + "\n".join(found)
