"""minLSTM (Feng et al. 2024, "Were RNNs all we needed?")."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import State
from .diagonal import DiagonalCell
from .registry import register


@register
class MinLSTMCell(DiagonalCell):
    r"""minLSTM: an LSTM without output gate whose gates read x_t only, the forget and input gates normalised.

    .. math::
        f_t = \sigma(\mathrm{Linear}_f(x_t)), \quad i_t = \sigma(\mathrm{Linear}_i(x_t)), \quad
        \tilde h_t = \mathrm{Linear}_h(x_t)
        f'_t = f_t / (f_t + i_t), \quad i'_t = i_t / (f_t + i_t)
        h_t = f'_t \odot h_{t-1} + i'_t \odot \tilde h_t

    The normalised forget gate f'_t is the whole per-step Jacobian: d h_t / d h_{t-1} = diag(f'_t), so the carry
    path prod f'_t (``keep_gate = "f_norm"``) is the product itself. The gates are named f, i, f_norm (f'), i_norm
    (i'): names that are also file names (an export writes one figure per gate).

    weight_in rows: [Linear_f; Linear_i; Linear_h] (3H, I). Shapes: x_t (B, I) -> xp_t (B, 3H) -> (h_t,), (B, H).
    """

    name, label, color = "minlstm", "minLSTM", "#000000"  # Okabe-Ito black (its yellow is unreadable on white)
    keep_gate = "f_norm"
    settings = frozenset()
    # f'_t = f_t / (f_t + i_t) is set by rows of weight_in and bias_in (shared with the candidate's)
    recurrent_params = ("weight_in", "bias_in")
    activation_note = "uses sigmoid gates and a linear recurrence"
    gates_shown = ("f_norm", "f", "i")
    gate_descriptions = {"f_norm": "normalized forget gate", "f": "forget gate", "i": "input gate",
                         "i_norm": "normalized input gate"}  # + the symbol: "normalized forget gate f_norm_t"
    gate_captions = {
        "f_norm": "The minLSTM's normalized forget gate f'_t = f_t/(f_t + i_t) per unit and step: h_t = f'_t ⊙ h_{t-1} "
              "+ i'_t ⊙ h̃_t, so a unit remembers where f'_t stays near 1 (bright); it is the whole per-step "
              "Jacobian.",
        "f": "The minLSTM's forget gate f_t per unit and step (before normalization by f_t + i_t).",
        "i": "The minLSTM's input gate i_t per unit and step (before normalization by f_t + i_t).",
    }
    flow_caption = ("In the minLSTM, h_t = f'_t ⊙ h_{t-1} + i'_t ⊙ h̃_t and the gates read x_t only: the Jacobian is "
                    "diag(f'_t), so the forget path ∏ diag(f'_t) is every path and the two lines coincide.")
    graph_per_unit = 24  # measured 22 (backprop route; 15 on the chain): benchmarks/calibrate_limits.py
    rows = 3

    def __init__(self, input_size: int, hidden_size: int, *, seed: int = 0, dtype: torch.dtype | None = None):
        super().__init__(input_size, hidden_size, seed=seed, dtype=dtype)
        self.init_weights(None, torch.Generator().manual_seed(seed))

    def _gates(self, xp_t: Tensor) -> dict[str, Tensor]:
        x_f, x_i, _ = xp_t.chunk(3, dim=-1)  # 3 x (..., H)
        # f_t = sigma(Linear_f(x_t)), i_t = sigma(Linear_i(x_t))
        f, i = torch.sigmoid(x_f), torch.sigmoid(x_i)
        # f'_t = f_t / (f_t + i_t), i'_t = i_t / (f_t + i_t)
        s = f + i
        return {"f": f, "i": i, "f_norm": f / s, "i_norm": i / s}

    def multipliers(self, xp_t: Tensor, state: State) -> Tensor:
        """f'_t (..., H)."""
        x_f, x_i, _ = xp_t.chunk(3, dim=-1)  # 3 x (..., H)
        f = torch.sigmoid(x_f)
        # f'_t = f_t / (f_t + i_t)
        return f / (f + torch.sigmoid(x_i))

    def linear_terms(self, xp: Tensor) -> tuple[Tensor, Tensor]:
        """(f'_t, i'_t h~_t), each (..., H): h_t = f'_t h_{t-1} + i'_t h~_t."""
        g = self._gates(xp)
        return g["f_norm"], g["i_norm"] * xp[..., 2 * self.hidden_size:]

    def step(self, xp_t: Tensor, state: State) -> State:
        (h,) = state
        # h_t = f'_t h_{t-1} + i'_t h~_t = h~_t + f'_t (h_{t-1} - h~_t)   (i' = 1 - f'; one fused op)
        return (torch.lerp(xp_t[..., 2 * self.hidden_size:], h, self.multipliers(xp_t, state)),)

    def _forward(self, xp_t: Tensor, state: State):
        return self.step(xp_t, state), self._gates(xp_t)  # (step builds no gate dict: the time loop's T calls)
