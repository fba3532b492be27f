r"""Initialization schemes and spectral helpers.

Every scheme acts per gate block: W_hh of a gated cell is G stacked H x H blocks (LSTM i, f, g, o; GRU r, z, n),
and each block is initialized as the scheme says.

default     torch's U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias
xavier      W_ih and W_hh blocks Xavier-uniform with gain = init_scale; biases 0
orthogonal  W_hh blocks orthogonal times init_scale (the gain); W_ih Xavier-uniform; biases 0
identity    IRNN (Le, Jaitly, Hinton 2015): W_hh blocks = init_scale * I; W_ih ~ N(0, 0.001^2); biases 0
spectral    W_hh blocks ~ N(0, 1/H), rescaled to spectral radius max|lambda| = init_scale exactly; biases 0
chrono      Tallec & Ollivier 2018 for gated cells: the keep-gate bias b ~ log(U[1, T_max - 1]) (LSTM: forget
            bias b_f, input bias b_i = -b_f; GRU: update-gate bias b_z, since h_t = (1 - z) n + z h_{t-1});
            other weights default. Carried by bias_ih, with bias_hh's block set to 0. For the vanilla RNN
            chrono does not apply (the default init is used and the result says so).
forget_bias LSTM (Jozefowicz et al. 2015): after the scheme, bias_ih[H:2H] = forget_bias, bias_hh[H:2H] = 0,
            so the forget gate's total bias is exactly forget_bias.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .config import ModelConfig


def spectral_radius(W: Tensor) -> float:
    """max |lambda_i(W)| of a square matrix."""
    return float(torch.linalg.eigvals(W.double()).abs().max())


def _uniform(shape, bound: float, gen: torch.Generator) -> Tensor:
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound


def _xavier(rows: int, cols: int, gain: float, gen) -> Tensor:
    return _uniform((rows, cols), gain * math.sqrt(6.0 / (rows + cols)), gen)


def _orthogonal(n: int, gain: float, gen) -> Tensor:
    A = torch.randn(n, n, generator=gen, dtype=torch.float64)
    Q, R = torch.linalg.qr(A)
    Q = Q * torch.sign(torch.diagonal(R)).unsqueeze(0)  # Haar-distributed (Mezzadri 2007)
    return gain * Q


def _spectral(n: int, radius: float, gen) -> Tensor:
    W = torch.randn(n, n, generator=gen, dtype=torch.float64) / math.sqrt(n)
    return W * (radius / spectral_radius(W))


def _recurrent_block(init: str, H: int, scale: float, gen) -> Tensor:
    if init == "xavier":
        return _xavier(H, H, scale, gen)
    if init == "orthogonal":
        return _orthogonal(H, scale, gen)
    if init == "identity":
        return scale * torch.eye(H, dtype=torch.float64)
    if init == "spectral":
        return _spectral(H, scale, gen)
    raise ValueError(f"init={init!r} has no recurrent block rule")


def initialize_cell(cell: nn.Module, config: ModelConfig, gen: torch.Generator) -> None:
    """Initialize one cell in place according to ``config``: the cell's own ``init_weights`` (a kind may bring
    its own scheme; the default is ``initialize_gate_blocks``)."""
    cell.init_weights(config, gen)


@torch.no_grad()
def initialize_gate_blocks(cell: nn.Module, config: ModelConfig, gen: torch.Generator) -> None:
    """The schemes of the module docstring for a cell with weight_ih / weight_hh / bias_ih / bias_hh stacked in
    G = len(cell.gate_names) row blocks of H. What differs by kind is asked of the cell: whether chrono applies
    (``"chrono" in cell.settings``), which block holds the keep gate (``cell.keep_gate``) and which gates chrono
    sets to minus its bias (``cell.chrono_negated``: the LSTM's b_i = -b_f), whether forget_bias applies."""
    H, G = cell.hidden_size, len(cell.gate_names)
    init = config.init
    if init == "chrono" and "chrono" not in cell.settings:
        init = "default"
    bound = 1 / math.sqrt(H)
    new: dict[str, Tensor] = {}
    # torch's default first; schemes overwrite what they define
    for name, p in cell.named_parameters(recurse=False):
        new[name] = _uniform(p.shape, bound, gen)
    if init in ("xavier", "orthogonal", "identity", "spectral"):
        new["weight_hh"] = torch.cat([_recurrent_block(init, H, config.init_scale, gen) for _ in range(G)], 0)
        I = cell.input_size
        if init == "identity":
            new["weight_ih"] = torch.randn(G * H, I, generator=gen, dtype=torch.float64) * 1e-3
        else:
            gain = config.init_scale if init == "xavier" else 1.0
            new["weight_ih"] = torch.cat([_xavier(H, I, gain, gen) for _ in range(G)], 0)
        new["bias_ih"] = torch.zeros(G * H, dtype=torch.float64)
        new["bias_hh"] = torch.zeros(G * H, dtype=torch.float64)
    elif init == "chrono":
        # b_keep ~ log(U[1, T_max - 1])
        u = 1 + torch.rand(H, generator=gen, dtype=torch.float64) * (config.chrono_tmax - 2)
        b_keep = torch.log(u)
        b_ih, b_hh = new["bias_ih"], new["bias_hh"]
        k = cell.gate_index(cell.keep_gate)
        # the keep gate (LSTM f, GRU z): b_keep = log(u)
        b_ih[k * H:(k + 1) * H], b_hh[k * H:(k + 1) * H] = b_keep, 0.0
        for gate in cell.chrono_negated:
            j = cell.gate_index(gate)
            # LSTM input gate: b_i = -b_f
            b_ih[j * H:(j + 1) * H], b_hh[j * H:(j + 1) * H] = -b_keep, 0.0
    if "forget_bias" in cell.settings and config.forget_bias is not None:
        k = cell.gate_index(cell.keep_gate)
        new["bias_ih"][k * H:(k + 1) * H] = config.forget_bias
        new["bias_hh"][k * H:(k + 1) * H] = 0.0
    for name, p in cell.named_parameters(recurse=False):
        p.copy_(new[name].to(p.dtype))
