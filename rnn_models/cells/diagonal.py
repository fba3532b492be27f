r"""What the diagonal cells share: kinds whose gates read x_t only, so d h_t / d h_{t-1} = diag(m_t) (RG-LRU,
minGRU, minLSTM; the LRU's complex diagonal overrides the real-view Jacobian).

A diagonal cell gives ``multipliers(xp, state)`` -> m_t (..., H) with d h_t / d h_{t-1} = diag(m_t), from which
its Jacobian, and every product of them, follows in O(H) per step (``analysis.diagonal``). It has no W_hh
(``gate_names = ()``); its input weights are one Linear over every pre-activation, ``weight_in`` (G, I) and
``bias_in`` (G,), initialised as ``torch.nn.Linear`` (U(-1/sqrt(I), 1/sqrt(I))) from the generator given.

Shape legend: B batch, I input_size, H hidden_size, G rows of weight_in (gates * H).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import State, _Cell


class DiagonalCell(_Cell):
    """Base of the cells whose recurrence is elementwise; subclasses define ``rows`` (G // H), ``_forward`` and
    ``multipliers``."""

    state_names = ("h",)
    gate_names = ()  # no W_hh
    diagonal = True
    rows = 1  # weight_in has rows * H rows

    def __init__(self, input_size: int, hidden_size: int, *, seed: int = 0, dtype: torch.dtype | None = None):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_in = nn.Parameter(torch.empty(self.rows * hidden_size, input_size, dtype=dtype))
        self.bias_in = nn.Parameter(torch.empty(self.rows * hidden_size, dtype=dtype))

    @classmethod
    def from_config(cls, input_size, hidden_size, config, dtype=None):
        return cls(input_size, hidden_size, seed=getattr(config, "seed", 0), dtype=dtype)

    @torch.no_grad()
    def init_weights(self, config, gen: torch.Generator) -> None:
        """torch.nn.Linear's U(-1/sqrt(I), 1/sqrt(I)) for weight_in and bias_in, drawn from ``gen`` (float64)."""
        bound = 1 / math.sqrt(self.input_size)
        for p in (self.weight_in, self.bias_in):
            p.copy_((torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound)

    def project(self, x_t: Tensor) -> Tensor:
        # W_in x_t + b_in  (every gate's pre-activation at once)
        return F.linear(x_t, self.weight_in, self.bias_in)

    def multipliers(self, xp_t: Tensor, state: State) -> Tensor:
        """m_t (..., H) with d h_t / d h_{t-1} = diag(m_t)."""
        raise NotImplementedError(f"{type(self).__name__}.multipliers")

    def recurrent_eigenvalues(self) -> dict[str, Tensor]:
        """No fixed recurrence matrix: the factor m_t depends on x_t."""
        return {}

    def _jacobian_closed_form(self, xp_t: Tensor, state: State) -> Tensor:
        # dh_t/dh_{t-1} = diag(m_t)
        return torch.diag_embed(self.multipliers(xp_t, state))  # (..., H, H)
