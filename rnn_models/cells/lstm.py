"""The LSTM cell (peepholes, layer norm)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import LayerNorm, State, _Cell
from .registry import register

@register
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


    name, label, color = "lstm", "LSTM", "#0072B2"  # Okabe-Ito blue
    state_names = ("h", "c")
    gate_names = ("i", "f", "g", "o")
    keep_gate = "f"
    settings = frozenset({"peephole", "forget_bias", "chrono", "layer_norm"})
    recurrent_params = ("weight_hh", "bias_hh")
    activation_note = "uses sigmoid/tanh gates"
    c_index = 1
    gates_shown = ("f", "i", "o")
    chrono_negated = ("i",)
    torch_modes = {"LSTM": None}
    gate_descriptions = {"i": "input gate", "f": "forget gate", "o": "output gate", "g": "candidate"}
    gate_captions = {
        "f": "The LSTM's forget gate f_t per unit and step: c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t, so the cell state "
             "carries a unit's memory back only where f_t stays near 1 (bright); near 0 it is wiped every step.",
        "i": "The LSTM's input gate i_t per unit and step: how much of the candidate g_t is written into c_t.",
        "o": "The LSTM's output gate o_t per unit and step: h_t = o_t ⊙ tanh(c_t), so a closed o_t hides the cell "
             "from h_t (and from the gradient through h_t) without erasing it.",
    }
    flow_caption = ("In the LSTM, c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t: the direct path back through c has Jacobian "
                    "diag(f_t), so the dashed 'carousel' ∏ diag(f_t) is that path alone and the solid line every "
                    "path.")
    graph_per_unit = 30
    structured_products = True

    # cost: the blocks [A; C] (2 H^2 floats per step; the estimate keeps this size with layer norm too, as
    # calibrated); P J = [P A_h + P_c C, P_h d1 + P_c d2] is one (2H, 2H) x (2H, H) GEMM, 8 H^3
    @classmethod
    def chunk_floats(cls, H, dense=False):
        return 2 * H * H

    @classmethod
    def chunk_temporaries(cls, dense=False):
        return 6 if dense else 4

    @classmethod
    def product_flops(cls, H, dense=False):
        return 2 * (2 * H) ** 3 if dense else 8 * H ** 3

    @classmethod
    def vjp_flops(cls, H):
        return 8 * H * H  # one (4H) x (4H, H) GEMM

    @classmethod
    def from_config(cls, input_size, hidden_size, config, dtype=None):
        return cls(input_size, hidden_size, config.peephole, config.layer_norm, dtype=dtype)

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

    def chunk_steps(self, xp: Tensor, st: State):
        if self.layer_norm:
            return super().chunk_steps(xp, st)
        return LSTMBlockSteps(*self.jacobian_blocks(xp, st))

    def vjp_steps(self, xp: Tensor, st: State):
        if self.layer_norm:
            return super().vjp_steps(xp, st)
        return LSTMVJPSteps(self, xp, st)


class LSTMBlockSteps:
    r"""J = [[A, diag d1], [C, diag d2]] of a chunk of steps (``LSTMCell.jacobian_blocks``) applied by blocks:

        right(c, P) = P J_c = [P_h A + P_c C,  P_h d1 + P_c d2]     P = [P_h, P_c] (b, R, 2H)

    with [P_h, P_c] @ [A; C] one GEMM (half the flops of the dense (2H, 2H) product).
    Shapes: AC = [A; C] (C, b, 2H, H), d1, d2 (C, b, H).
    """

    def __init__(self, A: Tensor, d1: Tensor, C: Tensor, d2: Tensor):
        self.d1, self.d2 = d1, d2
        self.AC = torch.cat([A, C], -2)  # (C, b, 2H, H): [P_h, P_c] @ [A; C] = P_h A + P_c C, one GEMM

    def __len__(self) -> int:
        return self.AC.shape[0]

    def right(self, c: int, P: Tensor) -> Tensor:
        H = self.AC.shape[-1]
        P_h, P_c = P[..., :H], P[..., H:]  # (b, R, H) each
        # [P_h A + P_c C,  P_h diag(d1) + P_c diag(d2)]
        return torch.cat([P @ self.AC[c], P_h * self.d1[c].unsqueeze(-2) + P_c * self.d2[c].unsqueeze(-2)], -1)

    def left_t(self, c: int, Q: Tensor) -> Tensor:
        return self.right(c, Q.mT).mT


class LSTMVJPSteps:
    r"""v J_t and J_t v of a chunk of steps, O(B H^2) per vector (one GEMM with the shared W_hh), without forming
    J_t: the LSTM's backward (forward-mode) pass written out, no layer norm. Coefficients, per step:

        ci = g i(1-i),  cf = c_{t-1} f(1-f),  cg = i (1-g^2)      dc_t / dz_{i,f,g}
        co = tanh(c_t) o(1-o),  hc = o (1 - tanh^2 c_t)          dh_t / dz_o, dh_t / dc_t

    vjp   gc = v_c + v_h hc [+ ga_o w_co],  ga_o = v_h co,  ga_{i,f,g} = gc c{i,f,g};
          v J = [ [ga_i, ga_f, ga_g, ga_o] W_hh,  gc f [+ ga_i w_ci + ga_f w_cf] ]
    jvp   dz = W_hh dh [+ w_ci dc, w_cf dc];  dc_t = cf dz_f + f dc + ci dz_i + cg dz_g;
          dh_t = co (dz_o [+ w_co dc_t]) + hc dc_t

    Shapes: xp (C, b, 4H), states (C, b, H) each, v (..., b, 2H) = [v_h, v_c].
    """

    def __init__(self, cell: LSTMCell, xp: Tensor, st: State):
        self.W = cell.weight_hh.detach()
        (_, c_t), g = cell._forward(xp, st)
        i, f, gg, o = g["i"], g["f"], g["g"], g["o"]
        tc = torch.tanh(c_t)
        self.peep = (cell.weight_ci.detach(), cell.weight_cf.detach(), cell.weight_co.detach()) \
            if cell.peephole else None
        # coefficients: dc_t/dz_{i,f,g} and dh_t/dz_o, dh_t/dc_t, dc_t/dc_{t-1}
        self.ci, self.cf, self.cg = gg * i * (1 - i), st[1] * f * (1 - f), i * (1 - gg * gg)
        self.co, self.hc, self.f = tc * o * (1 - o), o * (1 - tc * tc), f

    def vjp(self, c: int, v: Tensor) -> Tensor:
        H = self.W.shape[-1]
        v_h, v_c = v[..., :H], v[..., H:]
        ga_o = v_h * self.co[c]
        # gc = v_c + v_h o tanh'(c_t) [+ ga_o w_co]
        gc = v_c + v_h * self.hc[c]
        if self.peep is not None:
            gc = gc + ga_o * self.peep[2]
        ga_i, ga_f = gc * self.ci[c], gc * self.cf[c]
        # u_h = [ga_i, ga_f, ga_g, ga_o] W_hh
        u_h = torch.cat([ga_i, ga_f, gc * self.cg[c], ga_o], -1) @ self.W  # (B, 4H) @ (4H, H)
        # u_c = gc f [+ ga_i w_ci + ga_f w_cf]
        u_c = gc * self.f[c]
        if self.peep is not None:
            u_c = u_c + ga_i * self.peep[0] + ga_f * self.peep[1]
        return torch.cat([u_h, u_c], -1)

    __call__ = vjp

    def jvp(self, c: int, V: Tensor) -> Tensor:
        H = self.W.shape[-1]
        dh, dc = V[..., :H], V[..., H:]
        # dz = W_hh dh [+ w_ci dc, w_cf dc]
        dz_i, dz_f, dz_g, dz_o = (dh @ self.W.T).chunk(4, -1)
        if self.peep is not None:
            dz_i, dz_f = dz_i + self.peep[0] * dc, dz_f + self.peep[1] * dc
        # dc_t = cf dz_f + f dc + ci dz_i + cg dz_g
        dc_t = self.cf[c] * dz_f + self.f[c] * dc + self.ci[c] * dz_i + self.cg[c] * dz_g
        if self.peep is not None:
            dz_o = dz_o + self.peep[2] * dc_t
        # dh_t = co dz_o + hc dc_t
        return torch.cat([self.co[c] * dz_o + self.hc[c] * dc_t, dc_t], -1)
