"""minGRU (Feng et al. 2024, "Were RNNs all we needed?")."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import State
from .diagonal import DiagonalCell
from .registry import register


@register
class MinGRUCell(DiagonalCell):
    r"""minGRU: a GRU whose update gate and candidate read x_t only, so the recurrence is elementwise.

    .. math::
        z_t = \sigma(\mathrm{Linear}_z(x_t))
        \tilde h_t = \mathrm{Linear}_h(x_t)
        h_t = (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t

    The kept share 1 - z_t (gate "1-z") is the whole per-step Jacobian: d h_t / d h_{t-1} = diag(1 - z_t), so
    the carry path prod (1 - z_t) is the product itself.

    weight_in rows: [Linear_z; Linear_h] (2H, I). Shapes: x_t (B, I) -> xp_t (B, 2H) -> state (h_t,), (B, H).
    """

    name, label, color = "mingru", "minGRU", "#E69F00"  # Okabe-Ito orange
    keep_gate = "1-z"
    settings = frozenset()
    # the kept share 1 - z_t = sigma(-(W_z x_t + b_z)) is set by rows of weight_in and bias_in (shared with the
    # candidate's): no parameter multiplies h_{t-1} itself
    recurrent_params = ("weight_in", "bias_in")
    activation_note = "uses a sigmoid gate and a linear recurrence"
    gates_shown = ("1-z",)
    gate_descriptions = {"1-z": "kept share", "z": "update gate"}  # titles add the symbol: "kept share 1-z_t"
    gate_captions = {"1-z": "The minGRU's kept share 1 - z_t per unit and step: h_t = (1 - z_t) ⊙ h_{t-1} + "
                            "z_t ⊙ h̃_t, so a unit remembers where 1 - z_t stays near 1 (bright); it is the whole "
                            "per-step Jacobian."}
    flow_caption = ("In the minGRU, h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t and z_t reads x_t only: the Jacobian is "
                    "diag(1 - z_t), so the kept-share path ∏ diag(1 - z_t) is every path and the two lines coincide.")
    graph_per_unit = 18  # measured 16 (backprop route; 15 on the chain): benchmarks/calibrate_limits.py
    rows = 2

    def __init__(self, input_size: int, hidden_size: int, *, seed: int = 0, dtype: torch.dtype | None = None):
        super().__init__(input_size, hidden_size, seed=seed, dtype=dtype)
        self.init_weights(None, torch.Generator().manual_seed(seed))

    def step(self, xp_t: Tensor, state: State) -> State:
        (h,) = state
        x_z, h_cand = xp_t.chunk(2, dim=-1)  # 2 x (..., H)
        # z_t = sigma(Linear_z(x_t))
        z = torch.sigmoid(x_z)
        # h_t = (1 - z_t) h_{t-1} + z_t h~_t = h_{t-1} + z_t (h~_t - h_{t-1})   (one fused op: autograd keeps z alone)
        return (torch.lerp(h, h_cand, z),)

    def _forward(self, xp_t: Tensor, state: State):
        z = torch.sigmoid(xp_t[..., :self.hidden_size])  # (step builds no gate dict: the time loop's T calls)
        return self.step(xp_t, state), {"z": z, "1-z": 1 - z}

    def linear_terms(self, xp: Tensor) -> tuple[Tensor, Tensor]:
        """(1 - z_t, z_t h~_t), each (..., H): h_t = (1 - z_t) h_{t-1} + z_t h~_t."""
        x_z, h_cand = xp.chunk(2, dim=-1)  # 2 x (..., H)
        # 1 - z_t = sigma(-Linear_z(x_t)) (exact where z_t ~ 1), z_t h~_t
        return torch.sigmoid(-x_z), torch.sigmoid(x_z) * h_cand

    def multipliers(self, xp_t: Tensor, state: State) -> Tensor:
        """1 - z_t (..., H) = sigma(-Linear_z(x_t))."""
        return torch.sigmoid(-xp_t[..., :self.hidden_size])
