r"""Recurrent cells: one step each, ``(x_t, state) -> state``; the caller owns the time loop.

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
    hidden_size: int
    input_size: int
    layer_norm: bool
    state_names: tuple[str, ...] = ("h",)

    def forward(self, x_t: Tensor, state: State) -> State:
        return self.step(self.project(x_t), state)

    def init_state(self, batch_size: int, dtype=None, device=None) -> State:
        dtype = dtype or self.weight_hh.dtype
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


class LSTMCell(_Cell):
    r"""LSTM cell, as ``torch.nn.LSTMCell`` (gate order i, f, g, o), with optional peepholes and layer norm.

    .. math::
        i_t = \sigma(W_{ii} x_t + b_{ii} + W_{hi} h_{t-1} + b_{hi} + w_{ci} \odot c_{t-1})
        f_t = \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf} + w_{cf} \odot c_{t-1})
        g_t = \tanh(W_{ig} x_t + b_{ig} + W_{hg} h_{t-1} + b_{hg})
        c_t = f_t \odot c_{t-1} + i_t \odot g_t
        o_t = \sigma(W_{io} x_t + b_{io} + W_{ho} h_{t-1} + b_{ho} + w_{co} \odot c_t)
        h_t = o_t \odot \tanh(c_t)

    The peephole terms (Gers, Schraudolph, Schmidhuber 2002: diagonal weights ``weight_ci``, ``weight_cf``,
    ``weight_co``) are present only with ``peephole=True``. With layer norm (Ba et al. 2016) the recurrent and
    the input projections are normalized separately over all 4H gate pre-activations, and c_t before the
    output tanh: gates = LN(W_hh h) + b_hh + LN(W_ih x) + b_ih, h_t = o_t * tanh(LN(c_t)).

    The forget-gate bias of ``torch`` is split over ``bias_ih[H:2H]`` and ``bias_hh[H:2H]``; the ``forget_bias``
    setting (Jozefowicz et al. 2015) writes it into ``bias_ih[H:2H]`` and zeroes ``bias_hh[H:2H]``.

    The state is (h, c); the per-step Jacobian is over the stacked state [h; c] (2H x 2H). Its c->c block
    is diagonal: diag(f_t) (plus peephole terms), the constant error carousel.

    Shapes: x_t (B, I) -> state (h_t, c_t), each (B, H).
    """

    state_names = ("h", "c")

    def __init__(self, input_size: int, hidden_size: int, peephole: bool = False, layer_norm: bool = False,
                 dtype: torch.dtype | None = None):
        super().__init__()
        H = hidden_size
        self.input_size, self.hidden_size = input_size, hidden_size
        self.peephole, self.layer_norm = peephole, layer_norm
        self.weight_ih = nn.Parameter(torch.empty(4 * H, input_size, dtype=dtype))
        self.weight_hh = nn.Parameter(torch.empty(4 * H, H, dtype=dtype))
        self.bias_ih = nn.Parameter(torch.empty(4 * H, dtype=dtype))
        self.bias_hh = nn.Parameter(torch.empty(4 * H, dtype=dtype))
        params = [self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh]
        if peephole:
            self.weight_ci = nn.Parameter(torch.empty(H, dtype=dtype))
            self.weight_cf = nn.Parameter(torch.empty(H, dtype=dtype))
            self.weight_co = nn.Parameter(torch.empty(H, dtype=dtype))
            params += [self.weight_ci, self.weight_cf, self.weight_co]
        if layer_norm:
            self.ln_ih, self.ln_hh, self.ln_c = (LayerNorm(4 * H, dtype=dtype), LayerNorm(4 * H, dtype=dtype),
                                                  LayerNorm(H, dtype=dtype))
        bound = 1 / math.sqrt(H)
        for p in params:
            nn.init.uniform_(p, -bound, bound)

    def project(self, x_t: Tensor) -> Tensor:
        # W_ih x_t + b_ih    (LN(W_ih x_t) + b_ih with layer norm)
        if self.layer_norm:
            return self.ln_ih(F.linear(x_t, self.weight_ih)) + self.bias_ih
        return F.linear(x_t, self.weight_ih, self.bias_ih)

    def _recurrent(self, h: Tensor) -> Tensor:
        # W_hh h_{t-1} + b_hh    (LN(W_hh h_{t-1}) + b_hh with layer norm)
        if self.layer_norm:
            return self.ln_hh(F.linear(h, self.weight_hh)) + self.bias_hh
        return F.linear(h, self.weight_hh, self.bias_hh)

    def _forward(self, xp_t: Tensor, state: State):
        h, c = state
        z_i, z_f, z_g, z_o = (xp_t + self._recurrent(h)).chunk(4, dim=-1)  # 4 x (..., H)
        if self.peephole:
            z_i = z_i + self.weight_ci * c
            z_f = z_f + self.weight_cf * c
        # i_t = sigma(...), f_t = sigma(...), g_t = tanh(...)
        i_t, f_t, g_t = torch.sigmoid(z_i), torch.sigmoid(z_f), torch.tanh(z_g)
        # c_t = f_t * c_{t-1} + i_t * g_t
        c_t = f_t * c + i_t * g_t
        h_t, o_t = self._output(z_o, c_t)
        return (h_t, c_t), {"i": i_t, "f": f_t, "g": g_t, "o": o_t}

    def _output(self, z_o: Tensor, c_t: Tensor) -> tuple[Tensor, Tensor]:
        if self.peephole:
            z_o = z_o + self.weight_co * c_t
        # o_t = sigma(...)
        o_t = torch.sigmoid(z_o)
        # h_t = o_t * tanh(c_t)      (tanh(LN(c_t)) with layer norm)
        return o_t * torch.tanh(self.ln_c(c_t) if self.layer_norm else c_t), o_t

    def h_of_c(self, xp_t: Tensor, h_prev: Tensor, c_t: Tensor) -> Tensor:
        r"""h_t as a function of c_t alone, x_t and h_{t-1} held fixed: o_t(c_t) \odot \tanh(c_t) (peephole
        w_co in o_t, LN(c_t) with layer norm). Its VJP is the part of dL/dc_t that flows through h_t."""
        z_o = (xp_t + self._recurrent(h_prev)).chunk(4, dim=-1)[3]
        return self._output(z_o, c_t)[0]

    def jacobian_blocks(self, xp_t: Tensor, state: State) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The blocks of d[h_t; c_t]/d[h_{t-1}; c_{t-1}] = [[A, diag(d_1)], [C, diag(d_2)]] (no layer norm).

        A = dh_t/dh_{t-1} (..., H, H), C = dc_t/dh_{t-1} (..., H, H), d_1 = diag of dh_t/dc_{t-1} (..., H),
        d_2 = diag of dc_t/dc_{t-1} (..., H): the c-columns are diagonal, which products exploit.
        """
        h, c = state
        H = self.hidden_size
        (_, c_t), gts = self._forward(xp_t, state)
        i, f, g, o = gts["i"], gts["f"], gts["g"], gts["o"]
        W_hi, W_hf, W_hg, W_ho = self.weight_hh.split(H, dim=0)  # 4 x (H, H)
        tc = torch.tanh(c_t)
        di, df, dg, do = i * (1 - i), f * (1 - f), 1 - g * g, o * (1 - o)
        # dc_t/dh_{t-1} = diag(c_{t-1} f') W_hf + diag(g i') W_hi + diag(i g') W_hg  (fused: 3 passes over (.., H, H))
        dc_dh = (c * df).unsqueeze(-1) * W_hf
        dc_dh.addcmul_((g * di).unsqueeze(-1), W_hi).addcmul_((i * dg).unsqueeze(-1), W_hg)
        # dc_t/dc_{t-1} = diag(f_t)  (+ diag(c_{t-1} f' w_cf + g i' w_ci) with peepholes)
        dc_dc = f + (c * df * self.weight_cf + g * di * self.weight_ci if self.peephole else 0)
        # d z_o/dh_{t-1} = W_ho (+ diag(w_co) dc_t/dh_{t-1}),  d z_o/dc_{t-1} = (diag(w_co) dc_t/dc_{t-1})
        dzo_dh = W_ho + (self.weight_co.unsqueeze(-1) * dc_dh if self.peephole else 0)
        dzo_dc = self.weight_co * dc_dc if self.peephole else torch.zeros_like(dc_dc)
        # dh_t/d. = diag(tanh(c_t) o') dz_o/d. + diag(o tanh'(c_t)) dc_t/d.
        a, b = (tc * do), (o * (1 - tc * tc))
        dh_dh = torch.addcmul(a.unsqueeze(-1) * dzo_dh, b.unsqueeze(-1), dc_dh)
        return dh_dh, a * dzo_dc + b * dc_dc, dc_dh, dc_dc

    def _jacobian_closed_form(self, xp_t: Tensor, state: State) -> Tensor:
        A, d1, C, d2 = self.jacobian_blocks(xp_t, state)
        top = torch.cat([A, torch.diag_embed(d1)], dim=-1)  # (..., H, 2H)
        bottom = torch.cat([C, torch.diag_embed(d2)], dim=-1)  # (..., H, 2H)
        return torch.cat([top, bottom], dim=-2)  # (..., 2H, 2H)


class GRUCell(_Cell):
    r"""GRU cell, as ``torch.nn.GRUCell`` (gate order r, z, n; r multiplies ``W_hn h + b_hn``).

    .. math::
        r_t = \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr})
        z_t = \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz})
        n_t = \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn}))
        h_t = (1 - z_t) \odot n_t + z_t \odot h_{t-1}

    z_t is the update gate: the path h_{t-1} -> h_t through z_t alone is diag(z_t), the GRU's analogue of the
    LSTM's carousel. With layer norm the input and recurrent projections are normalized separately over all 3H
    pre-activations before the biases are added (the analogue of Ba et al.'s LN-LSTM).

    Shapes: x_t (B, I) -> state (h_t,), h_t (B, H).
    """

    def __init__(self, input_size: int, hidden_size: int, layer_norm: bool = False,
                 dtype: torch.dtype | None = None):
        super().__init__()
        H = hidden_size
        self.input_size, self.hidden_size, self.layer_norm = input_size, hidden_size, layer_norm
        self.weight_ih = nn.Parameter(torch.empty(3 * H, input_size, dtype=dtype))
        self.weight_hh = nn.Parameter(torch.empty(3 * H, H, dtype=dtype))
        self.bias_ih = nn.Parameter(torch.empty(3 * H, dtype=dtype))
        self.bias_hh = nn.Parameter(torch.empty(3 * H, dtype=dtype))
        if layer_norm:
            self.ln_ih, self.ln_hh = LayerNorm(3 * H, dtype=dtype), LayerNorm(3 * H, dtype=dtype)
        bound = 1 / math.sqrt(H)
        for p in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
            nn.init.uniform_(p, -bound, bound)

    def project(self, x_t: Tensor) -> Tensor:
        # W_ih x_t + b_ih    (LN(W_ih x_t) + b_ih with layer norm)
        if self.layer_norm:
            return self.ln_ih(F.linear(x_t, self.weight_ih)) + self.bias_ih
        return F.linear(x_t, self.weight_ih, self.bias_ih)

    def _forward(self, xp_t: Tensor, state: State):
        (h,) = state
        if self.layer_norm:
            hp = self.ln_hh(F.linear(h, self.weight_hh)) + self.bias_hh
        else:
            hp = F.linear(h, self.weight_hh, self.bias_hh)
        x_r, x_z, x_n = xp_t.chunk(3, dim=-1)  # 3 x (..., H)
        h_r, h_z, h_n = hp.chunk(3, dim=-1)  # 3 x (..., H)
        # r_t = sigma(W_ir x + b_ir + W_hr h + b_hr)
        r_t = torch.sigmoid(x_r + h_r)
        # z_t = sigma(W_iz x + b_iz + W_hz h + b_hz)
        z_t = torch.sigmoid(x_z + h_z)
        # n_t = tanh(W_in x + b_in + r_t * (W_hn h + b_hn))
        n_t = torch.tanh(x_n + r_t * h_n)
        # h_t = (1 - z_t) * n_t + z_t * h_{t-1}
        h_t = (1 - z_t) * n_t + z_t * h
        return (h_t,), {"r": r_t, "z": z_t, "n": n_t, "h_n": h_n}

    def _jacobian_closed_form(self, xp_t: Tensor, state: State) -> Tensor:
        (h,) = state
        H = self.hidden_size
        gts = self._forward(xp_t, state)[1]
        r, z, n, h_n = gts["r"], gts["z"], gts["n"], gts["h_n"]
        W_hr, W_hz, W_hn = self.weight_hh.split(H, dim=0)  # 3 x (H, H)
        # dn_t/dh_{t-1} = diag(1 - n^2) [diag(W_hn h + b_hn) diag(r') W_hr + diag(r) W_hn]
        # dh_t/dh_{t-1} = diag(1 - z) dn/dh + diag(h_{t-1} - n_t) diag(z') W_hz + diag(z)
        # (fused in place: 4 passes over (.., H, H) instead of 10)
        J = r.unsqueeze(-1) * W_hn
        J.addcmul_((h_n * r * (1 - r)).unsqueeze(-1), W_hr).mul_(((1 - n * n) * (1 - z)).unsqueeze(-1))
        J.addcmul_(((h - n) * z * (1 - z)).unsqueeze(-1), W_hz)
        J.diagonal(dim1=-2, dim2=-1).add_(z)
        return J


def make_cell(cell: str, input_size: int, hidden_size: int, *, activation: str = "tanh",
              layer_norm: bool = False, peephole: bool = False, dtype: torch.dtype | None = None) -> _Cell:
    """A cell whose parameters are created in ``dtype`` (None: torch's default dtype)."""
    if cell == "rnn":
        return RNNCell(input_size, hidden_size, activation, layer_norm, dtype=dtype)
    if cell == "lstm":
        return LSTMCell(input_size, hidden_size, peephole, layer_norm, dtype=dtype)
    if cell == "gru":
        return GRUCell(input_size, hidden_size, layer_norm, dtype=dtype)
    raise ValueError(f"cell={cell!r} is not allowed: choose one of rnn, lstm, gru")
