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
    """

    name: str = ""
    label: str = ""
    color: str = "#333333"
    state_names: tuple[str, ...] = ("h",)
    gate_names: tuple[str, ...] = ("h",)
    keep_gate: str | None = None
    settings: frozenset[str] = frozenset()
    diagonal: bool = False

    hidden_size: int
    input_size: int
    layer_norm: bool = False

    @classmethod
    def from_config(cls, input_size: int, hidden_size: int, config, dtype: torch.dtype | None = None) -> "_Cell":
        """A cell of this kind for one layer of ``config`` (an ``rnn_models.ModelConfig``)."""
        raise NotImplementedError(f"{cls.__name__}.from_config")

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

    def gates(self, xp_t: Tensor, state: State) -> dict[str, Tensor]:
        """The gate activations of one step (empty for the vanilla RNN's pre-activation)."""
        return self._forward(xp_t, state)[1]

    def jacobian(self, xp_t: Tensor, state: State) -> Tensor:
        """d state_t / d state_{t-1}, shape (..., S, S); rows index state_t, columns state_{t-1}."""
        if self.layer_norm:
            return self.jacobian_autograd(xp_t, state)
        return self._jacobian_closed_form(xp_t, state)

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

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, hidden_size={self.hidden_size}, layer_norm={self.layer_norm}"
