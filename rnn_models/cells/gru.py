"""The GRU cell."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import LayerNorm, State, _Cell
from .registry import register

@register
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

    name, label, color = "gru", "GRU", "#009E73"  # Okabe-Ito bluish green
    gate_names = ("r", "z", "n")
    keep_gate = "z"
    settings = frozenset({"chrono", "layer_norm"})
    recurrent_params = ("weight_hh", "bias_hh")
    activation_note = "uses sigmoid/tanh gates"
    gates_shown = ("z", "r")
    torch_modes = {"GRU": None}
    gate_descriptions = {"z": "update gate", "r": "reset gate", "n": "candidate"}
    gate_captions = {
        "z": "The GRU's update gate z_t per unit and step: h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}, so z_t near 1 "
             "(bright) copies the state forward and carries the gradient back almost unchanged.",
        "r": "The GRU's reset gate r_t per unit and step: how much of h_{t-1} enters the candidate n_t.",
    }
    flow_caption = ("In the GRU, h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}: the dashed ∏ diag(z_t) is the copy "
                    "path alone, the solid line every path.")
    graph_per_unit = 35

    # cost: the products use the dense J_t (the default); a VJP is one (3H) x (3H, H) GEMM
    @classmethod
    def vjp_flops(cls, H):
        return 6 * H * H

    @classmethod
    def from_config(cls, input_size, hidden_size, config, dtype=None):
        return cls(input_size, hidden_size, config.layer_norm, dtype=dtype)

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

    def vjp_steps(self, xp: Tensor, st: State):
        if self.layer_norm:
            return super().vjp_steps(xp, st)
        return GRUVJPSteps(self, xp, st)


class GRUVJPSteps:
    r"""v J_t and J_t v of a chunk of steps, O(B H^2) per vector (one GEMM with the shared W_hh), without forming
    J_t: the GRU's backward (forward-mode) pass written out, no layer norm. Coefficients, per step:

        an = (1-z)(1-n^2),  ar = (W_hn h_{t-1} + b_hn) r(1-r),  az = (h_{t-1} - n) z(1-z)

    vjp   ga_n = v an,  ga_r = ga_n ar,  ga_z = v az;   v J = v z + [ga_r, ga_z, ga_n r] W_hh
    jvp   [a_r, a_z, a_n] = W_hh dh;   J dh = z dh + az a_z + an (ar a_r + r a_n)

    Shapes: xp (C, b, 3H), states (C, b, H), v (..., b, H).
    """

    def __init__(self, cell: GRUCell, xp: Tensor, st: State):
        self.W = cell.weight_hh.detach()
        g = cell._forward(xp, st)[1]
        r, z, n, h_n = g["r"], g["z"], g["n"], g["h_n"]
        self.z, self.an = z, (1 - z) * (1 - n * n)
        self.ar, self.az, self.r = h_n * r * (1 - r), (st[0] - n) * z * (1 - z), r

    def vjp(self, c: int, v: Tensor) -> Tensor:
        ga_n = v * self.an[c]
        # v J = v z + [ga_r, ga_z, ga_n r] W_hh
        return v * self.z[c] + torch.cat([ga_n * self.ar[c], v * self.az[c], ga_n * self.r[c]], -1) @ self.W

    __call__ = vjp

    def jvp(self, c: int, V: Tensor) -> Tensor:
        a_r, a_z, a_n = (V @ self.W.T).chunk(3, -1)
        # J v = z v + az a_z + an (ar a_r + r a_n)
        return self.z[c] * V + self.az[c] * a_z + self.an[c] * (self.ar[c] * a_r + self.r[c] * a_n)
