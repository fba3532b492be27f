"""Recurrent cells, one module per kind, registered by name (see ``base`` for what a kind declares)."""
from __future__ import annotations

import torch

from .base import LayerNorm, State, _Cell, activation_and_derivative
from .registry import by_kind, cell_names, cell_type, merged, register
from .rnn import RNNCell  # noqa: E402  (registration order: rnn, lstm, gru)
from .lstm import LSTMCell  # noqa: E402
from .gru import GRUCell  # noqa: E402
from .lru import LRUCell  # noqa: E402  (then the diagonal cells: lru, rglru, mingru, minlstm)
from .rglru import RGLRUCell  # noqa: E402
from .mingru import MinGRUCell  # noqa: E402
from .minlstm import MinLSTMCell  # noqa: E402


def make_cell(cell: str, input_size: int, hidden_size: int, *, activation: str = "tanh",
              layer_norm: bool = False, peephole: bool = False, dtype: torch.dtype | None = None) -> _Cell:
    """A cell whose parameters are created in ``dtype`` (None: torch's default dtype)."""
    from types import SimpleNamespace

    settings = SimpleNamespace(activation=activation, layer_norm=layer_norm, peephole=peephole)
    return cell_type(cell).from_config(input_size, hidden_size, settings, dtype)


__all__ = ["State", "LayerNorm", "activation_and_derivative", "_Cell", "RNNCell", "LSTMCell", "GRUCell",
           "LRUCell", "RGLRUCell", "MinGRUCell", "MinLSTMCell", "make_cell", "register", "cell_type", "cell_names",
           "by_kind", "merged"]
