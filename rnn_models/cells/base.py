r"""What every kind of recurrent cell is: one step ``(x_t, state) -> state`` (the caller owns the time loop), and
the questions the rest of the code asks of a kind of cell, answered by class attributes and methods of ``_Cell``.
One module per kind (``rnn.py``, ``lstm.py``, ``gru.py``, ...) subclasses it and registers itself
(``registry.register``); the engine, limits, figures and dashboard ask the registry, never branch on a name.

Parameter names and gate order follow ``torch.nn`` (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``;
LSTM gates i, f, g, o; GRU gates r, z, n), so the weights of ``torch.nn.RNNCell/LSTMCell/GRUCell`` (and of
``nn.RNN/LSTM/GRU`` layers) load as they are.

Shape legend::

    B  batch            I  input_size         H  hidden_size
    G  gates * H        S  state size (H; 2H for the LSTM's (h, c))

A step is split in two so a time loop can project every input at once (one matmul instead of T):

    xp_t = cell.project(x_t)          # (..., G)  the input's share of the pre-activations
    state_t = cell.step(xp_t, state)  # the recurrence proper
    cell(x_t, state) == cell.step(cell.project(x_t), state)

Every cell also gives its per-step state Jacobian ``d state_t / d state_{t-1}`` in closed form
(``cell.jacobian``), checked against ``torch.func.jacrev`` (``cell.jacobian_autograd``) in the tests.
Layer-normalized cells use the autograd form, which is exact but slower.

The analysis applies the Jacobians of a chunk of C steps without asking which kind of cell it holds:

    steps = cell.chunk_steps(xp, st)   # xp (C, b, G), st: states before each step, (C, b, H) each
    steps.right(c, P)                  # P @ J_c, P (b, R, S): Jacobian products
    steps.left_t(c, Q)                 # J_c^T @ Q: Lyapunov QR
    vjp = cell.vjp_steps(xp, st)       # vector-Jacobian products, O(G H^2) per vector where the kind has them
    vjp(c, v) == vjp.vjp(c, v)         # v @ J_c, v (..., b, S)
    vjp.jvp(c, V)                      # (J_c V^T)^T, V (..., b, S)

The defaults form J_c densely through ``self.jacobian`` (what layer-normalized cells use); a kind overrides them
with its structure (the RNN's diag(phi') W_hh, the LSTM's blocks, the backward pass written out).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

State = tuple[Tensor, ...]


class LayerNorm(nn.Module):
    r"""LN(a) = g * (a - mu) / sqrt(var + eps) + b over the last dimension (Ba, Kiros, Hinton 2016).

    Its Jacobian (diag(g) / sigma) (I - 11^T / n - y y^T / n) annihilates the all-ones vector: adding a constant
    to every pre-activation changes nothing.
    """

    def __init__(self, n: int, eps: float = 1e-5, dtype: torch.dtype | None = None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(n, dtype=dtype))

    def forward(self, a: Tensor) -> Tensor:
        return F.layer_norm(a, a.shape[-1:], self.weight, self.bias, self.eps)


def activation_and_derivative(name: str, a: Tensor) -> tuple[Tensor, Tensor]:
    """phi(a) and phi'(a) for the vanilla RNN's activation."""
    if name == "tanh":
        y = torch.tanh(a)
        return y, 1 - y * y  # tanh' = 1 - tanh^2
    if name == "relu":
        return torch.relu(a), (a > 0).to(a.dtype)  # relu' = 1[a > 0]
    if name == "sigmoid":
        y = torch.sigmoid(a)
        return y, y * (1 - y)  # sigma' = sigma (1 - sigma) <= 1/4
    if name == "linear":
        return a, torch.ones_like(a)
    raise ValueError(f"activation={name!r} is not allowed: choose one of tanh, relu, sigmoid, linear")


class DenseSteps:
    r"""The per-step Jacobians of a chunk of steps formed densely, J (C, b, S, S) with J[c] = d state_{t_0+c} /
    d state_{t_0+c-1}: the default of ``chunk_steps`` and ``vjp_steps`` (any cell; layer-normalized cells).

        right(c, P) = P J_c          P (b, R, S)
        left_t(c, Q) = J_c^T Q       Q (b, S, R), as (Q^T J_c)^T: a row-block product, never a transposed batched
                                     GEMM (5-20x slower here)
        vjp(c, v) = v J_c            v (b, S) or a block (n, b, S)
        jvp(c, V) = (J_c V^T)^T      V (n, b, S)
    """

    def __init__(self, J: Tensor):
        self.J = J  # (C, b, S, S)

    def __len__(self) -> int:
        return self.J.shape[0]

    def right(self, c: int, P: Tensor) -> Tensor:
        return P @ self.J[c]

    def left_t(self, c: int, Q: Tensor) -> Tensor:
        return self.right(c, Q.mT).mT

    def vjp(self, c: int, v: Tensor) -> Tensor:
        if v.dim() == 2:  # (b, S): one row vector per sequence
            return self.right(c, v.unsqueeze(1)).squeeze(1)
        return torch.einsum("nbi,bij->nbj", v, self.J[c])

    __call__ = vjp

    def jvp(self, c: int, V: Tensor) -> Tensor:
        return torch.einsum("bij,nbj->nbi", self.J[c], V)


class _Cell(nn.Module):
    """One kind of recurrent cell. Subclasses declare (class attributes) what the rest of the code asks:

    name          the config value and registry key ("lstm")
    label         how figures and text name it ("LSTM")
    color         its colour in every figure (colour-blind safe)
    state_names   the state tuple, each entry (B, H) real; S = len(state_names) * H
    gate_names    the row blocks of ``weight_hh`` in order (W_hh spectra per block); () when there is no W_hh
    keep_gate     the gate whose elementwise product over time is the cell's carry path ("f": the LSTM's
                  carousel prod f_t; "z": the GRU's update path), or None
    settings      the ModelConfig settings that apply to it (others given are reported, never silently dropped):
                  "activation", "peephole", "forget_bias", "chrono", "layer_norm", ...
    diagonal      d state_t / d state_{t-1} is diagonal (products cost O(T S), not O(T S^3))
    noun          how a sentence names it ("the LSTM"; "the vanilla RNN"); None: "the <label>"
    activation_note  what it uses instead, when ``activation`` does not apply ("uses sigmoid/tanh gates")
    c_index       the index in the state of a memory cell c_t that feeds h_t through ``h_of_c(xp_t, h_{t-1}, c_t)``
                  (the LSTM: 1), or None; the analysis reports dL/dc_t and the c->c Jacobian block for it
    gates_shown   the gates in (0, 1) shown per unit and checked for saturation, the keep gate first
    chrono_negated  gates whose bias chrono sets to minus the keep gate's (the LSTM's input gate: b_i = -b_f)
    gamma_bound   ||J_t|| <= gamma sigma_max(W_hh) (Pascanu et al. 2013) holds without layer norm (the vanilla RNN)
    torch_modes   torch.nn.RNNBase ``mode`` strings whose weights this kind loads as they are -> the activation
                  they imply ({"LSTM": None}; the RNN: {"RNN_TANH": "tanh", "RNN_RELU": "relu"})
    gate_descriptions  gate -> what it is called in words ("f": "forget gate")
    gate_captions      gate -> a sentence on what its per-unit activity shows (the gates in ``gates_shown``)
    flow_caption       a sentence on the keep gate's path against the full Jacobian (cells with a keep gate)
    recurrent_params  the parameters acting on the previous state (analysis.param_sensitivity's default theta);
                  None: every parameter (a cell that does not say)
    unitwise_params   parameters each of whose entries moves one entry of h at most (a diagonal recurrence's
                  lambda, its biases): ||dh/dp . 1|| = ||dh/dp||_F, one tangent is exact
    unit_rows     parameters whose row r moves unit r mod H of h only (the input weights of a recurrence whose
                  gates read x_t alone): the entries of one block of H rows and one column move distinct units, so
                  numel / H tangents (ones on such a block and column) are exact

    Cost model (analysis.limits, analysis.thin_sigma), per kind; the defaults are a dense S x S step:
    graph_per_unit  autograd's saved floats per step and unit (calibrated: benchmarks/calibrate_limits.py)
    structured_products  ``chunk_steps`` applies J_t without forming it (else the products count as dense)
    and the classmethods chunk_floats, chunk_temporaries, product_flops, vjp_flops below.
    """

    name: str = ""
    label: str = ""
    color: str = "#333333"
    state_names: tuple[str, ...] = ("h",)
    gate_names: tuple[str, ...] = ("h",)
    keep_gate: str | None = None
    settings: frozenset[str] = frozenset()
    diagonal: bool = False
    noun: str | None = None
    activation_note: str = "uses its own nonlinearities"
    c_index: int | None = None
    gates_shown: tuple[str, ...] = ()
    chrono_negated: tuple[str, ...] = ()
    gamma_bound: bool = False
    torch_modes: dict[str, str | None] = {}
    gate_descriptions: dict[str, str] = {}
    gate_captions: dict[str, str] = {}
    flow_caption: str = ""
    graph_per_unit: int = 40
    structured_products: bool = False
    recurrent_params: tuple[str, ...] | None = None
    unitwise_params: frozenset[str] = frozenset()
    unit_rows: frozenset[str] = frozenset()

    hidden_size: int
    input_size: int
    layer_norm: bool = False

    @classmethod
    def from_config(cls, input_size: int, hidden_size: int, config, dtype: torch.dtype | None = None) -> "_Cell":
        """A cell of this kind for one layer of ``config`` (an ``rnn_models.ModelConfig``)."""
        raise NotImplementedError(f"{cls.__name__}.from_config")

    # ---- what a kind is, asked of the class ---------------------------------------------------------------
    @classmethod
    def described(cls) -> str:
        """How a sentence names this kind: "the LSTM", "the vanilla RNN"."""
        return cls.noun or f"the {cls.label}"

    @classmethod
    def state_size(cls, H: int) -> int:
        """S = len(state_names) * H."""
        return len(cls.state_names) * H

    @classmethod
    def state_blocks(cls, H: int) -> dict[str, slice]:
        """The blocks of the state whose Jacobian products the analysis reports, name -> slice of the state
        (the same slice for rows and columns): "hh" always; "cc" the memory cell (``c_index``); "state" the
        whole state when it is more than h. The LSTM: {"hh": [0, H), "cc": [H, 2H), "state": [0, 2H)}."""
        out = {"hh": slice(0, H)}
        if cls.c_index is not None:
            out["cc"] = slice(cls.c_index * H, (cls.c_index + 1) * H)
        S = cls.state_size(H)
        if S > H:
            out["state"] = slice(0, S)
        return out

    @classmethod
    def gate_index(cls, gate: str) -> int:
        """The row block of ``gate`` in weight_hh / weight_ih / the biases (torch's order)."""
        return cls.gate_names.index(gate)

    # ---- cost model (per step and sequence; H = hidden size; dense: the dense S x S route is taken) --------
    @classmethod
    def chunk_floats(cls, H: int, dense: bool = False) -> int:
        """Floats per step that ``chunk_steps`` keeps (dense: J_t, S^2)."""
        return cls.state_size(H) ** 2

    @classmethod
    def chunk_temporaries(cls, dense: bool = False) -> int:
        """Chunks' worth of temporaries while ``chunk_steps`` is built and applied."""
        return 6

    @classmethod
    def product_flops(cls, H: int, dense: bool = False) -> int:
        """Flops of one P <- P J_t, P (S, S)."""
        return 2 * cls.state_size(H) ** 3

    @classmethod
    def vjp_flops(cls, H: int) -> int:
        """Flops of one v <- v J_t through ``vjp_steps``, v (S,)."""
        return 2 * cls.state_size(H) ** 2

    # ---- initialization -------------------------------------------------------------------------------------
    def init_weights(self, config, gen: torch.Generator) -> None:
        """Initialize this cell in place by ``config.init`` (rnn_models.init: per gate block of W_hh, chrono on
        the keep gate). A kind with its own scheme overrides this."""
        from ..init import initialize_gate_blocks

        initialize_gate_blocks(self, config, gen)

    def forward(self, x_t: Tensor, state: State) -> State:
        return self.step(self.project(x_t), state)

    def recurrent_blocks(self) -> dict[str, Tensor]:
        """{gate: (H, H) block of W_hh} in ``gate_names`` order; {} for a cell with no recurrent matrix."""
        W = getattr(self, "weight_hh", None)
        if W is None or not self.gate_names:
            return {}
        return dict(zip(self.gate_names, W.split(self.hidden_size, dim=0)))

    def init_state(self, batch_size: int, dtype=None, device=None) -> State:
        dtype = dtype or next(self.parameters()).dtype
        return tuple(torch.zeros(batch_size, self.hidden_size, dtype=dtype, device=device) for _ in self.state_names)

    def step(self, xp_t: Tensor, state: State) -> State:
        return self._forward(xp_t, state)[0]

    def stepper(self):
        """``step`` for one time loop: a callable ``(xp_t, state) -> state`` equal to ``self.step``; a kind whose
        step would rebuild something constant over the loop (the LRU's lambda) builds it once here."""
        return self.step

    def run_states(self, xp: Tensor, state0: State) -> tuple[Tensor, ...] | None:
        """Every state of a whole run at once, without an autograd graph, or None (the caller loops ``step``).

        xp (T, B, G) every projected input, state0 the state before the first step; returns one (T + 1, B, H)
        tensor per state entry, index 0 holding state0 and index s + 1 the state after input s: the same numbers
        as T calls of ``step`` (to float rounding). A kind with a faster route than a loop of ``step`` (a linear
        recurrence as one multiply-add per step) gives it here."""
        return None

    def gates(self, xp_t: Tensor, state: State) -> dict[str, Tensor]:
        """The gate activations of one step (empty for the vanilla RNN's pre-activation)."""
        return self._forward(xp_t, state)[1]

    def jacobian(self, xp_t: Tensor, state: State) -> Tensor:
        """d state_t / d state_{t-1}, shape (..., S, S); rows index state_t, columns state_{t-1}."""
        if self.layer_norm:
            return self.jacobian_autograd(xp_t, state)
        return self._jacobian_closed_form(xp_t, state)

    def _jacobian_closed_form(self, xp_t: Tensor, state: State) -> Tensor:
        """A kind's closed form of ``jacobian``; without one, autograd's (exact, slower)."""
        return self.jacobian_autograd(xp_t, state)

    def jacobian_autograd(self, xp_t: Tensor, state: State) -> Tensor:
        """The same Jacobian by ``torch.func.vmap(jacrev(step))`` over all leading dimensions at once."""
        lead = xp_t.shape[:-1]
        H = self.hidden_size
        xp = xp_t.reshape(-1, xp_t.shape[-1])  # (N, G) with N = prod(lead)
        s = torch.cat(state, dim=-1).reshape(xp.shape[0], -1)  # (N, S)

        def f(xp_1: Tensor, s_1: Tensor) -> Tensor:
            st = tuple(s_1[i * H:(i + 1) * H].unsqueeze(0) for i in range(len(self.state_names)))
            out = self.step(xp_1.unsqueeze(0), st)
            return torch.cat(out, dim=-1).squeeze(0)  # (S,)

        J = torch.func.vmap(torch.func.jacrev(f, argnums=1))(xp, s)  # (N, S, S)
        return J.reshape(*lead, J.shape[-2], J.shape[-1])

    # ---- the per-step Jacobians applied to many vectors (module docstring) ---------------------------------
    def chunk_steps(self, xp: Tensor, st: State):
        """J_t of a chunk of steps (xp (C, b, G), st the states before each step) as ``right`` / ``left_t``."""
        return DenseSteps(self.jacobian(xp, st))

    def vjp_steps(self, xp: Tensor, st: State):
        """v J_t and J_t v of a chunk of steps as ``vjp`` (also the call) / ``jvp``."""
        return DenseSteps(self.jacobian(xp, st))

    def recurrent_eigenvalues(self) -> dict[str, Tensor]:
        """name -> the complex eigenvalues of a fixed elementwise recurrence (a diagonal cell's lambda), or {}:
        then the spectra are those of ``recurrent_blocks``."""
        return {}

    def fixed_multipliers(self) -> Tensor | None:
        """m (U,) where a diagonal kind's d h_t / d h_{t-1} = diag(m) is the same at every step and for every
        sequence (the LRU's lambda: complex, one per unit); None where it depends on the input or the state. Then
        the products and the gradient chain are powers of m (analysis.diagonal, analysis.diagonal_chain)."""
        return None

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, hidden_size={self.hidden_size}, layer_norm={self.layer_norm}"
