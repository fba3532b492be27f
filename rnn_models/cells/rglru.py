"""Griffin's Real-Gated Linear Recurrent Unit (De et al. 2024, "Griffin: mixing gated linear recurrences with
local attention for efficient language models")."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import State
from .diagonal import DiagonalCell
from .registry import register

C = 8.0  # the paper's constant c in a_t = a^(c r_t)
A_C_LOW, A_C_HIGH = 0.9, 0.999  # a^c ~ U[0.9, 0.999] at initialisation (the paper's)


@register
class RGLRUCell(DiagonalCell):
    r"""RG-LRU: a real diagonal recurrence whose decay a_t = a^(c r_t) is gated by the input.

    .. math::
        r_t = \sigma(W_a x_t + b_a)                                  \qquad \text{recurrence gate}
        i_t = \sigma(W_x x_t + b_x)                                  \qquad \text{input gate}
        \log a_t = -c \, \mathrm{softplus}(-\Lambda) \odot r_t    \quad (a_t = a^{c r_t},\ a = \sigma(\Lambda),\ c = 8)
        h_t = a_t \odot h_{t-1} + \sqrt{1 - a_t^2} \odot (i_t \odot \tilde x_t)

    The paper's x_t has width H (the block's own projection comes before the RG-LRU). Here the gates read x_t of
    width I directly (W_a, W_x: (H, I), dense, where Griffin's are block-diagonal) and the value is
    x~_t = x_t when I == H, else an input projection x~_t = W_v x_t + b_v (H, I), part of this cell.
    Lambda is initialised so that a^c ~ U[0.9, 0.999] (the paper's); the Linear weights as torch.nn.Linear.

    Per-step Jacobian: the gates read x_t only, so d h_t / d h_{t-1} = diag(a_t) (``multipliers``), and the carry
    path prod a_t is the whole product (``keep_gate = "a"``).

    weight_in rows: [W_a; W_x] (2H, I), plus W_v (3H rows) when I != H; xp_t = [W_a x + b_a; W_x x + b_x; x~_t].
    Shapes: x_t (B, I) -> xp_t (B, 3H) -> state (h_t,), h_t (B, H).
    """

    name, label, color = "rglru", "RG-LRU", "#56B4E9"  # Okabe-Ito sky blue
    keep_gate = "a"
    settings = frozenset()
    # a_t = sigmoid(Lambda)^(c r_t): Lambda, and the recurrence gate's rows of weight_in and bias_in (shared with the
    # input gate's and the value's); Lambda_j moves unit j only: one tangent
    recurrent_params = ("Lambda", "weight_in", "bias_in")
    unitwise_params = frozenset({"Lambda"})
    activation_note = "uses sigmoid gates and a linear recurrence"
    gates_shown = ("a", "r", "i")
    gate_descriptions = {"a": "decay", "r": "recurrence gate", "i": "input gate"}  # + the symbol: "decay a_t"
    gate_captions = {
        "a": "The RG-LRU's decay a_t = a^(c r_t) per unit and step: h_t = a_t ⊙ h_{t-1} + √(1-a_t²) ⊙ (i_t ⊙ x_t), "
             "so a unit remembers where a_t stays near 1 (bright); a_t is the whole per-step Jacobian.",
        "r": "The RG-LRU's recurrence gate r_t per unit and step: it sets the decay's exponent, a_t = a^(c r_t); "
             "r_t near 0 holds the state (a_t near 1) whatever a is.",
        "i": "The RG-LRU's input gate i_t per unit and step: how much of x_t is written into h_t.",
    }
    flow_caption = ("In the RG-LRU, h_t = a_t ⊙ h_{t-1} + √(1-a_t²) ⊙ (i_t ⊙ x_t) and the gates read x_t only: the "
                    "Jacobian is diag(a_t), so the decay path ∏ diag(a_t) is every path and the two lines coincide.")
    graph_per_unit = 35  # measured 33 (backprop route; 20 on the chain): benchmarks/calibrate_limits.py

    def __init__(self, input_size: int, hidden_size: int, *, seed: int = 0, dtype: torch.dtype | None = None):
        self.rows = 2 if input_size == hidden_size else 3  # (an instance attribute: read by DiagonalCell)
        super().__init__(input_size, hidden_size, seed=seed, dtype=dtype)
        self.Lambda = nn.Parameter(torch.empty(hidden_size, dtype=dtype))
        self.init_weights(None, torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def init_weights(self, config, gen: torch.Generator) -> None:
        """weight_in, bias_in as torch.nn.Linear; Lambda = logit(u^(1/c)), u ~ U[0.9, 0.999], so a^c = u."""
        super().init_weights(config, gen)
        u = A_C_LOW + (A_C_HIGH - A_C_LOW) * torch.rand(self.hidden_size, generator=gen, dtype=torch.float64)
        # log a = log(u) / c;  Lambda = logit(a) = log a - log(1 - a)
        log_a = torch.log(u) / C
        self.Lambda.copy_(log_a - torch.log(-torch.expm1(log_a)))

    def project(self, x_t: Tensor) -> Tensor:
        # [W_a x + b_a; W_x x + b_x; W_v x + b_v]   (x~ = x_t itself when I == H)
        xp = F.linear(x_t, self.weight_in, self.bias_in)
        return xp if self.rows == 3 else torch.cat([xp, x_t], dim=-1)  # (..., 3H)

    def _log_a(self, xp_t: Tensor) -> tuple[Tensor, Tensor]:
        # r_t = sigma(W_a x + b_a);  log a_t = -c softplus(-Lambda) r_t
        r = torch.sigmoid(xp_t[..., :self.hidden_size])
        return -C * F.softplus(-self.Lambda) * r, r

    def _forward(self, xp_t: Tensor, state: State):
        (h,) = state
        H = self.hidden_size
        log_a, r = self._log_a(xp_t)
        # i_t = sigma(W_x x + b_x)
        i = torch.sigmoid(xp_t[..., H:2 * H])
        a = torch.exp(log_a)
        # h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t x~_t)     (1 - a^2 = -expm1(2 log a): exact where a ~ 1)
        h_t = a * h + torch.sqrt(-torch.expm1(2 * log_a)) * (i * xp_t[..., 2 * H:])
        return (h_t,), {"r": r, "i": i, "a": a}

    def linear_terms(self, xp: Tensor) -> tuple[Tensor, Tensor]:
        """(a_t, sqrt(1 - a_t^2) (i_t x~_t)), each (..., H): h_t = a_t h_{t-1} + the second."""
        H = self.hidden_size
        log_a, _ = self._log_a(xp)
        # the step's own terms (``_forward``): a_t, sqrt(1 - a_t^2) (i_t x~_t)
        i = torch.sigmoid(xp[..., H:2 * H])
        return torch.exp(log_a), torch.sqrt(-torch.expm1(2 * log_a)) * (i * xp[..., 2 * H:])

    def multipliers(self, xp_t: Tensor, state: State) -> Tensor:
        """a_t (..., H): d h_t / d h_{t-1} = diag(a_t)."""
        return torch.exp(self._log_a(xp_t)[0])

    def recurrent_eigenvalues(self) -> dict[str, Tensor]:
        """a^c = sigmoid(Lambda)^c, the decay at r_t = 1 (the strongest), as complex (H,)."""
        return {"a^c": torch.exp(-C * F.softplus(-self.Lambda.detach())).to(torch.complex128)}
