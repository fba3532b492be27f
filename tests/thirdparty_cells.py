"""Two recurrent cells published in public repositories, restated here as steps (x_t, state) -> state.

The search tool that found them keeps fetched code out of this repository's commits, so each cell is written
here from the equations of its source (same parameters, shapes and arithmetic, plain torch instead of
TorchScript), with the source, the commit read and its licence:

LayerNormLSTMCell   https://github.com/pytorch/pytorch/blob/02ed7257e27fd0734156171dd7c60ee32054f5ca/
                    benchmarks/fastrnns/custom_lstms.py  (class LayerNormLSTMCell; BSD-3-Clause, PyTorch)
                        gates = LN_i(x W_ih^T) + LN_h(h W_hh^T);  i, f, g, o = chunk(gates, 4)
                        c' = LN_c(sigmoid(f) c + sigmoid(i) tanh(g));  h' = sigmoid(o) tanh(c')
                    its forward returns (h', (h', c')): the step is ``forward(x, state)[1]``
minGRU              https://github.com/lucidrains/minGRU-pytorch/blob/270743367e9d9d1ea7e2fc0fba4145e3cc8c2c8c/
                    minGRU_pytorch/minGRU.py  (class minGRU, its sequential branch, expansion_factor 1; MIT,
                    Phil Wang; Feng et al. 2024, "Were RNNs All We Needed?", arXiv:2410.01201)
                        [a, z] = x W^T (no bias);  h' = lerp(h, g(a), sigmoid(z)),  g(a) = a + 1/2 (a >= 0), sigmoid(a)
                    its inputs and state are (B, 1, D): the step adds and removes that axis
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class LayerNormLSTMCell(nn.Module):
    """pytorch benchmarks/fastrnns/custom_lstms.py LayerNormLSTMCell (nn.LayerNorm), restated."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.randn(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.randn(4 * hidden_size, hidden_size))
        self.layernorm_i = nn.LayerNorm(4 * hidden_size)
        self.layernorm_h = nn.LayerNorm(4 * hidden_size)
        self.layernorm_c = nn.LayerNorm(hidden_size)

    def forward(self, input: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        hx, cx = state
        # gates = LN_i(x W_ih^T) + LN_h(h W_hh^T)
        gates = (self.layernorm_i(torch.mm(input, self.weight_ih.t()))
                 + self.layernorm_h(torch.mm(hx, self.weight_hh.t())))
        ingate, forgetgate, cellgate, outgate = gates.chunk(4, 1)
        # c' = LN_c(sigmoid(f) c + sigmoid(i) tanh(g))
        cy = self.layernorm_c(torch.sigmoid(forgetgate) * cx + torch.sigmoid(ingate) * torch.tanh(cellgate))
        # h' = sigmoid(o) tanh(c')
        hy = torch.sigmoid(outgate) * torch.tanh(cy)
        return hy, (hy, cy)


class LNLSTMStep(nn.Module):
    """The step (x_t, (h, c)) -> (h', c') of a LayerNormLSTMCell (its forward's second output)."""

    def __init__(self, cell: LayerNormLSTMCell):
        super().__init__()
        self.cell = cell

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return self.cell(x, state)[1]


def g(x: Tensor) -> Tensor:
    # g(a) = a + 1/2 for a >= 0, sigmoid(a) below (positive, continuous at 0)
    return torch.where(x >= 0, x + 0.5, x.sigmoid())


class minGRU(nn.Module):
    """lucidrains/minGRU-pytorch minGRU (expansion_factor 1), its sequential step, restated."""

    def __init__(self, dim: int):
        super().__init__()
        self.to_hidden_and_gate = nn.Linear(dim, dim * 2, bias=False)

    def forward(self, x: Tensor, prev_hidden: Tensor) -> Tensor:
        # x, prev_hidden (B, 1, D): one step of the sequence
        hidden, gate = self.to_hidden_and_gate(x).chunk(2, dim=-1)
        # h' = lerp(h, g(a), sigmoid(z)) = h + sigmoid(z) (g(a) - h)
        return torch.lerp(prev_hidden, g(hidden), gate.sigmoid())


class MinGRUStep(nn.Module):
    """The step (x_t (B, D), h (B, D)) -> h' of a minGRU, whose own tensors are (B, 1, D)."""

    def __init__(self, cell: minGRU):
        super().__init__()
        self.cell = cell

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        return self.cell(x.unsqueeze(1), h.unsqueeze(1)).squeeze(1)  # (B, 1, D) -> (B, D)
