"""ModelConfig: the one frozen description of a recurrent network.

Every field is validated in ``__post_init__``; a bad value raises ``ConfigError`` with one line naming the
field, the value and the allowed range, so the command line and the dashboard can show it as it is.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .cells.registry import cell_names, cell_type


class _CellNames(Sequence):
    """The registered kinds of cells (``rnn_models.cells.cell_names()``), read at every use: a read-only, tuple-like
    view, so a kind registered after this import is accepted wherever ``CELLS`` is checked or listed."""

    def __getitem__(self, i):
        return cell_names()[i]

    def __len__(self) -> int:
        return len(cell_names())

    def __contains__(self, value) -> bool:
        return value in cell_names()

    def __iter__(self):
        return iter(cell_names())

    def __eq__(self, other) -> bool:
        return cell_names() == (tuple(other) if isinstance(other, (tuple, list, _CellNames)) else other)

    def __hash__(self) -> int:
        return hash(cell_names())

    def __repr__(self) -> str:
        return repr(cell_names())


CELLS = _CellNames()
ACTIVATIONS = ("tanh", "relu", "sigmoid", "linear")
INITS = ("default", "xavier", "orthogonal", "identity", "spectral", "chrono")
SCALED_INITS = ("xavier", "orthogonal", "identity", "spectral")  # the inits that read init_scale (rnn_models.init)

# gamma: the bound on |phi'| that drives vanishing (Pascanu et al. 2013): ||dh_t/dh_{t-1}|| <= gamma * sigma_max(W_hh)
ACTIVATION_GAMMA = {"tanh": 1.0, "relu": 1.0, "sigmoid": 0.25, "linear": 1.0}

MAX_HIDDEN = 4096
MAX_LAYERS = 16


class ConfigError(ValueError):
    """A configuration field is out of range; the message is one line naming the field."""


def shown(value, limit: int = 40) -> str:
    """repr(value) cut to ``limit`` characters: a visitor's megabyte string is never echoed whole."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<an integer of about {int(value.bit_length() * 0.30103)} digits>"
    text = repr(value) if not isinstance(value, (list, dict, tuple)) or len(value) < 20 else f"<a {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_choice(field: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{field}={shown(value)} is not allowed: choose one of {', '.join(map(str, choices))}")


def check_int(field: str, value, lo: int, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{field}={shown(value)} must be an integer in [{lo}, {hi if hi is not None else 'inf'}]")
    if value < lo or (hi is not None and value > hi):
        raise ConfigError(f"{field}={shown(value)} is out of range: must be in [{lo}, {hi if hi is not None else 'inf'}]")


def check_float(field: str, value, lo: float, hi: float, *, lo_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{field}={shown(value)} must be a finite number in {'(' if lo_open else '['}{lo}, {hi}]")
    if value < lo or value > hi or (lo_open and value == lo):
        raise ConfigError(f"{field}={value} is out of range: must be in {'(' if lo_open else '['}{lo}, {hi}]")


def check_bool(field: str, value) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{field}={shown(value)} must be true or false")


@dataclass(frozen=True)
class ModelConfig:
    """A stacked recurrent network.

    cell          a registered kind of cell: rnn | lstm | gru | ... (rnn_models.cells.cell_names())
    activation    phi of the vanilla RNN: tanh | relu | sigmoid | linear (gated cells use their own sigmoid/tanh)
    input_size    I, features per step
    hidden_size   H, units per layer and direction
    num_layers    L, stacked layers (layer l > 0 reads layer l-1's hidden states)
    bidirectional a second, time-reversed cell per layer; layer outputs are [h_fwd, h_bwd]
    init          default | xavier | orthogonal | identity | spectral | chrono (see rnn_models.init)
    init_scale    gain (xavier, orthogonal), scale a of W_hh = a*I (identity), spectral radius (spectral)
    layer_norm    Ba et al. 2016 layer normalization inside the cell
    peephole      LSTM only: Gers et al. peepholes (i, f see c_{t-1}; o sees c_t)
    forget_bias   LSTM only: if set, the forget gate's total bias (carried by bias_ih; bias_hh's f block is 0)
    chrono_tmax   T_max of the chrono initialization (usually the sequence length)
    seed          seed of the initialization
    lru_r_min     LRU only: |lambda| ~ the ring [r_min, r_max] at initialization (Orvieto et al. 2023)
    lru_r_max     LRU only: the ring's outer radius (<= 1)
    lru_phase_max LRU only: arg lambda ~ U[0, phase_max] at initialization
    lru_gamma     LRU only: the input normalization gamma = sqrt(1 - |lambda|^2) (a trainable gamma_log)
    """

    cell: str = "rnn"
    activation: str = "tanh"
    input_size: int = 8
    hidden_size: int = 64
    num_layers: int = 1
    bidirectional: bool = False
    init: str = "default"
    init_scale: float = 1.0
    layer_norm: bool = False
    peephole: bool = False
    forget_bias: float | None = None
    chrono_tmax: int = 100
    seed: int = 0
    lru_r_min: float = 0.9
    lru_r_max: float = 0.999
    lru_phase_max: float = 6.28
    lru_gamma: bool = True

    def __post_init__(self):
        check_choice("cell", self.cell, CELLS)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_int("input_size", self.input_size, 1, 100_000)
        check_int("hidden_size", self.hidden_size, 1, MAX_HIDDEN)
        check_int("num_layers", self.num_layers, 1, MAX_LAYERS)
        check_bool("bidirectional", self.bidirectional)
        check_choice("init", self.init, INITS)
        check_float("init_scale", self.init_scale, 0.0, 100.0)
        check_bool("layer_norm", self.layer_norm)
        check_bool("peephole", self.peephole)
        if self.forget_bias is not None:
            check_float("forget_bias", self.forget_bias, -20.0, 20.0)
        check_int("chrono_tmax", self.chrono_tmax, 2, 10_000_000)
        check_int("seed", self.seed, 0, 2**63 - 1)
        kind = cell_type(self.cell)
        if self.init == "chrono" and {"chrono", "forget_bias"} <= kind.settings and self.forget_bias is not None:
            raise ConfigError("forget_bias must be unset with init='chrono': chrono sets the forget bias itself")
        check_float("lru_r_min", self.lru_r_min, 0.0, 1.0)
        check_float("lru_r_max", self.lru_r_max, 0.0, 1.0, lo_open=True)
        if self.lru_r_min >= self.lru_r_max:
            raise ConfigError(f"lru_r_min={self.lru_r_min} must be below lru_r_max={self.lru_r_max}: |lambda| is "
                              "drawn from the ring lru_r_min <= |lambda| <= lru_r_max")
        check_float("lru_phase_max", self.lru_phase_max, 0.0, 2 * math.pi, lo_open=True)
        check_bool("lru_gamma", self.lru_gamma)
        check = getattr(kind, "check_config", None)  # a kind's own constraint (lru: H even)
        if check is not None:
            check(self)

    @property
    def gamma(self) -> float:
        """Bound on the activation's derivative (the vanilla RNN's phi)."""
        return ACTIVATION_GAMMA[self.activation]

    @property
    def num_gates(self) -> int:
        """The row blocks of W_hh (1 rnn, 4 lstm, 3 gru): ``len(gate_names)`` of the cell."""
        return len(cell_type(self.cell).gate_names)

    @property
    def state_size(self) -> int:
        """Size of the recurrent state of one cell: len(state_names) * H ((h, c) for the LSTM, h otherwise)."""
        return cell_type(self.cell).state_size(self.hidden_size)

    def in_effect(self, name: str):
        """The value of the setting ``name`` (a field) this cell uses; None where the cell ignores it.

        The optional settings (activation, peephole, forget_bias, layer_norm, lru_*) apply to the kinds that list
        them in ``settings``; init and init_scale shape W_hh, so a kind without one (``gate_names`` empty) ignores
        both; init_scale is read by SCALED_INITS only; init='chrono' is the default init (and chrono_tmax unread)
        for a kind without the chrono setting. Every other field (sizes, seed) applies to every cell. Two configs of
        one cell build the same network when every field's ``in_effect`` is equal (a variant's label names only
        the settings whose ``in_effect`` it changes: analysis.variant)."""
        kind = cell_type(self.cell)
        optional = set().union(*(cell_type(n).settings for n in cell_names()))
        if name in optional:
            return getattr(self, name) if name in kind.settings else None
        # init='chrono' -> 'default' for a kind without the chrono setting (rnn_models.init)
        init = "default" if self.init == "chrono" and "chrono" not in kind.settings else self.init
        if name == "init":
            return init if kind.gate_names else None
        if name == "init_scale":
            return self.init_scale if kind.gate_names and init in SCALED_INITS else None
        if name == "chrono_tmax":
            return self.chrono_tmax if kind.gate_names and init == "chrono" else None
        return getattr(self, name)

    def inapplicable(self) -> list[str]:
        """Settings that were given but do not apply to this cell (shown to the user, never silently dropped): each
        kind declares the settings that apply to it (``settings``)."""
        kind = cell_type(self.cell)

        def who(setting: str) -> str:  # "the LSTM", "the vanilla RNN", "the LSTM and the GRU"
            return " and ".join(k.described() for k in map(cell_type, cell_names()) if setting in k.settings)

        notes = []
        if "activation" not in kind.settings and self.activation != "tanh":
            notes.append(f"activation={self.activation!r} applies to {who('activation')} only; {self.cell} "
                         f"{kind.activation_note}")
        if "peephole" not in kind.settings and self.peephole:
            notes.append(f"peephole applies to {who('peephole')} only; ignored for {self.cell}")
        if "forget_bias" not in kind.settings and self.forget_bias is not None:
            notes.append(f"forget_bias applies to {who('forget_bias')} only; ignored for {self.cell}")
        if "chrono" not in kind.settings and self.init == "chrono":
            notes.append(f"init='chrono' applies to {who('chrono')} only; the {self.cell} uses the default init")
        for f in ("lru_r_min", "lru_r_max", "lru_phase_max", "lru_gamma"):
            if getattr(self, f) != ModelConfig.__dataclass_fields__[f].default and f not in kind.settings:
                notes.append(f"{f} applies to {who(f)} only; ignored for {self.cell}")
        if self.layer_norm and "layer_norm" not in kind.settings:
            notes.append(f"layer_norm applies to {who('layer_norm')} only; ignored for {self.cell}")
        if not kind.gate_names and self.init not in ("default", "chrono"):
            notes.append(f"init={self.init!r} shapes W_hh, which the {self.cell} has not; it uses its own "
                         "initialization")
        return notes
