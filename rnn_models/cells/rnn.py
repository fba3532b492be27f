"""The vanilla (Elman) RNN cell."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import LayerNorm, State, _Cell, activation_and_derivative
from .registry import register

@register
class RNNCell(_Cell):
    r"""Vanilla (Elman) RNN cell, as ``torch.nn.RNNCell`` with any of four activations.

    .. math::
        a_t = W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}
        h_t = \phi(a_t)                     \qquad \phi \in \{\tanh, \mathrm{relu}, \sigma, \mathrm{id}\}
        h_t = \phi(\mathrm{LN}(a_t))        \qquad \text{with layer norm (the summed pre-activation)}

    Per-step Jacobian: dh_t/dh_{t-1} = diag(phi'(a_t)) W_hh (without layer norm), so
    ||dh_t/dh_{t-1}|| <= gamma * sigma_max(W_hh), gamma = sup |phi'| (1 for tanh/relu/linear, 1/4 for sigmoid).

    Shapes: x_t (B, I) -> state (h_t,), h_t (B, H).
    """

    name, label, color = "rnn", "RNN", "#D55E00"  # Okabe-Ito vermillion
    noun = "the vanilla RNN"
    gate_names = ("h",)
    settings = frozenset({"activation", "layer_norm"})
    recurrent_params = ("weight_hh", "bias_hh")
    gamma_bound = True
    torch_modes = {"RNN_TANH": "tanh", "RNN_RELU": "relu"}
    graph_per_unit = 8
    structured_products = True

    # cost: J_t = diag(phi') W_hh is kept as phi' (H floats); P J = (P * phi') @ W_hh (one GEMM, 2 H^3)
    @classmethod
    def chunk_floats(cls, H, dense=False):
        return H * H if dense else H

    @classmethod
    def chunk_temporaries(cls, dense=False):
        return 6 if dense else 2

    @classmethod
    def product_flops(cls, H, dense=False):
        return 2 * H ** 3

    @classmethod
    def vjp_flops(cls, H):
        return 2 * H * H

    @classmethod
    def from_config(cls, input_size, hidden_size, config, dtype=None):
        return cls(input_size, hidden_size, config.activation, config.layer_norm, dtype=dtype)

    def __init__(self, input_size: int, hidden_size: int, activation: str = "tanh", layer_norm: bool = False,
                 dtype: torch.dtype | None = None):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.activation, self.layer_norm = activation, layer_norm
        activation_and_derivative(activation, torch.zeros(1))  # validates the name
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size, dtype=dtype))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size, dtype=dtype))
        self.bias_ih = nn.Parameter(torch.empty(hidden_size, dtype=dtype))
        self.bias_hh = nn.Parameter(torch.empty(hidden_size, dtype=dtype))
        self.ln = LayerNorm(hidden_size, dtype=dtype) if layer_norm else None
        bound = 1 / math.sqrt(hidden_size)
        for p in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
            nn.init.uniform_(p, -bound, bound)

    def project(self, x_t: Tensor) -> Tensor:
        # W_ih x_t + b_ih
        return F.linear(x_t, self.weight_ih, self.bias_ih)

    def _forward(self, xp_t: Tensor, state: State):
        (h,) = state
        # a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
        a = xp_t + F.linear(h, self.weight_hh, self.bias_hh)
        if self.ln is not None:
            # a_t <- LN(a_t)
            a = self.ln(a)
        # h_t = phi(a_t)
        h_t, _ = activation_and_derivative(self.activation, a)
        return (h_t,), {"pre_activation": a}

    def derivative(self, xp_t: Tensor, state: State) -> Tensor:
        """phi'(a_t) (..., H): dh_t/dh_{t-1} = diag(phi'(a_t)) W_hh without layer norm."""
        (h,) = state
        a = xp_t + F.linear(h, self.weight_hh, self.bias_hh)
        return activation_and_derivative(self.activation, a)[1]

    def _jacobian_closed_form(self, xp_t: Tensor, state: State) -> Tensor:
        # dh_t/dh_{t-1} = diag(phi'(a_t)) W_hh
        return self.derivative(xp_t, state).unsqueeze(-1) * self.weight_hh

    def chunk_steps(self, xp: Tensor, st: State):
        if self.layer_norm:
            return super().chunk_steps(xp, st)
        return RNNSteps(self.derivative(xp, st), self.weight_hh.detach())

    vjp_steps = chunk_steps


class RNNSteps:
    r"""The vanilla RNN's J_t = diag(phi'(a_t)) W_hh applied without forming it (one GEMM with the shared W_hh):

        right(c, P) = P J_c = (P * phi'_c) W_hh         P (b, R, H)
        vjp(c, v)   = v J_c = (v * phi'_c) W_hh         v (..., b, H)
        jvp(c, V)   = (J_c V^T)^T = phi'_c * (V W_hh^T)  V (n, b, H)

    Shapes: d = phi'(a) (C, b, H), W = W_hh (H, H).
    """

    def __init__(self, d: Tensor, W: Tensor):
        self.d, self.W = d, W

    def __len__(self) -> int:
        return self.d.shape[0]

    def right(self, c: int, P: Tensor) -> Tensor:
        # P diag(phi') W_hh
        return (P * self.d[c].unsqueeze(-2)) @ self.W

    def left_t(self, c: int, Q: Tensor) -> Tensor:
        return self.right(c, Q.mT).mT

    def vjp(self, c: int, v: Tensor) -> Tensor:
        # v J = (v * phi'(a)) W_hh
        return (v * self.d[c]) @ self.W

    __call__ = vjp

    def jvp(self, c: int, V: Tensor) -> Tensor:
        # J v = phi'(a) * (W_hh v)
        return (V @ self.W.T) * self.d[c]
