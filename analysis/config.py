"""ExperimentConfig: one frozen, validated, JSON-serializable description of an experiment.

It flows from the dashboard's controls and the command line's flags to ``run_experiment`` and is saved with
every result and export, so any figure can be reproduced from its file. Each bad field raises ``ConfigError``
with one line: the field, the value, the allowed range.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields

from rnn_models.config import (ACTIVATIONS, CELLS, INITS, MAX_LAYERS, ConfigError, ModelConfig, check_bool,
                                check_choice, check_float, check_int, shown)

TASK_NAMES = ("random", "adding", "copy", "temporal-order", "charlm")
DTYPES = ("float32", "float64")
LOSS_STEPS = ("auto", "last", "all")
LAG_MODES = ("all", "log")
OPTIMIZERS = ("sgd", "adam")
CLIP_MODES = ("none", "norm", "value")
TEXTS = ("shipped", "hello")
SPECTRA = ("exact", "fast")
DETAILS = ("auto", "light", "exact")
DEVICES = ("cpu", "cuda", "auto")
# every field that takes one of a few values -> the values its validation accepts (the command line's choices)
FIELD_CHOICES = {"cell": CELLS, "activation": ACTIVATIONS, "init": INITS, "task": TASK_NAMES, "dtype": DTYPES,
                 "text": TEXTS, "loss_steps": LOSS_STEPS, "jacobian_lags": LAG_MODES, "spectra": SPECTRA,
                 "jacobian_detail": DETAILS, "device": DEVICES, "optimizer": OPTIMIZERS, "clip": CLIP_MODES}
MAX_SEQ_LEN = 100_000
MAX_BATCH = 4096


def check_own_model_fields(c) -> None:
    """The own-model fields: names are plain module names, and they need the file they name things in."""
    for name in ("module", "readout", "embedding"):
        v = getattr(c, name)
        if v is not None and (not isinstance(v, str) or not all(p.isidentifier() for p in v.split("."))):
            raise ConfigError(f"{name}={v!r} must be a module name inside the state_dict (like rnn or model.decoder)")
        if v is not None and not c.state_dict_path:
            raise ConfigError(f"{name}={v!r} names a module of a state_dict file: give state_dict_path too")
    check_bool("batch_first", c.batch_first)
    if c.targets_path and not c.readout:
        raise ConfigError("targets_path needs readout (the nn.Linear whose outputs the targets score)")
    if c.readout and not c.targets_path:
        raise ConfigError(f"readout={c.readout!r} needs targets_path (class ids -> cross-entropy, floats -> MSE)")


@dataclass(frozen=True)
class ExperimentConfig:
    """Model + data + analysis + training settings.

    ``compare``: up to three cells analysed side by side on the same data and seed (empty = ``cell`` alone).
    Model: see ``rnn_models.ModelConfig`` (``input_size`` None = what the task needs; the random task and
    user inputs use 8 / the file's size).
    Data: ``task``, ``seq_len`` T, ``batch_size`` B, ``seed``, ``dtype``, ``text`` (charlm corpus),
    ``inputs_path`` (a .npy/.pt array (T, B, I), with the random probe loss), ``state_dict_path`` (a
    torch.nn.RNN/LSTM/GRU ``state_dict`` file whose architecture replaces the model fields).
    Analysis: ``loss_steps`` auto (the task decides) | last | all; ``layer`` analysed (-1 = last);
    ``jacobian_lags`` all (every lag 0..T-1) | log (about ``num_log_lags`` log-spaced lags, exact at those);
    ``jacobian_batch`` sequences analysed for Jacobians (0 = the whole batch); ``n_singular`` top singular
    values kept per lag; ``horizon_threshold`` for the memory horizon; ``lyapunov_k`` exponents;
    ``truncate`` the truncated-BPTT window k (0 = full backpropagation); ``jacobian_detail`` auto | light |
    exact (``analysis.compute_views``: light = log-spaced lags and 4 sequences; auto picks light for your own
    model above a size, from the estimate).
    Your own model (see ``analysis.own_model``): ``module`` the recurrent module's name in a whole model's
    state_dict, ``readout`` / ``embedding`` an nn.Linear / nn.Embedding in the same file, ``targets_path`` the
    readout's targets (ids -> cross-entropy, floats -> MSE), ``h0_path`` the initial state, ``batch_first`` inputs
    (B, T, I).
    Training: ``optimizer``, ``lr``, ``clip`` none | norm | value, ``clip_threshold``, ``train_steps``.
    """

    # model
    cell: str = "rnn"
    compare: tuple[str, ...] = ()
    activation: str = "tanh"
    hidden_size: int = 64
    input_size: int | None = None
    num_layers: int = 1
    bidirectional: bool = False
    init: str = "default"
    init_scale: float = 1.0
    layer_norm: bool = False
    peephole: bool = False
    forget_bias: float | None = None
    lru_r_min: float = 0.9
    lru_r_max: float = 0.999
    lru_phase_max: float = 6.28
    lru_gamma: bool = True
    # data
    task: str = "random"
    seq_len: int = 100
    batch_size: int = 16
    seed: int = 0
    dtype: str = "float32"
    text: str = "shipped"
    inputs_path: str | None = None
    state_dict_path: str | None = None
    # your own model (analysis/own_model.py): names inside the state_dict file, targets and h0 files
    module: str | None = None
    readout: str | None = None
    embedding: str | None = None
    targets_path: str | None = None
    h0_path: str | None = None
    batch_first: bool = False
    # analysis
    loss_steps: str = "auto"
    layer: int = -1
    jacobian_lags: str = "all"
    num_log_lags: int = 48
    jacobian_batch: int = 0
    n_singular: int = 8
    horizon_threshold: float = 1e-3
    lyapunov_k: int = 8
    truncate: int = 0
    spectra: str = "exact"  # exact: full svdvals at every reported lag; fast: the LSTM state sigma_max by block iteration
    jacobian_detail: str = "auto"  # auto | light | exact (analysis.compute_views: light above a size for your model)
    # compute
    threads: int = 0  # the analysis's own thread pool (0 = every core this process may use)
    device: str = "cpu"  # cpu | cuda | auto (cuda if available, else cpu with a note)
    # training
    optimizer: str = "adam"
    lr: float = 1e-3
    clip: str = "none"
    clip_threshold: float = 1.0
    train_steps: int = 0

    def __post_init__(self):
        if isinstance(self.compare, (list, str)):
            object.__setattr__(self, "compare", tuple(self.compare.split(",")) if isinstance(self.compare, str)
                               else tuple(self.compare))
        if not isinstance(self.compare, tuple) or len(self.compare) > 3 or len(set(self.compare)) != len(self.compare):
            raise ConfigError(f"compare={shown(self.compare)} must list up to 3 different cells of rnn, lstm, gru")
        for c in self.compare:
            check_choice("compare", c, CELLS)
        if self.input_size is not None:
            check_int("input_size", self.input_size, 1, 100_000)
        check_int("seq_len", self.seq_len, 1, MAX_SEQ_LEN)
        # the model fields: ModelConfig's own checks (cell, activation, sizes, init, scale, flags, forget bias)
        for cell in self.cells + ((self.cell,) if self.cell not in self.cells else ()):
            self.model_config(self.input_size or 8, cell=cell)
        check_choice("task", self.task, TASK_NAMES)
        check_int("seq_len", self.seq_len, 1, MAX_SEQ_LEN)
        check_int("batch_size", self.batch_size, 1, MAX_BATCH)
        check_int("seed", self.seed, 0, 2**31 - 1)
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("text", self.text, TEXTS)
        for name in ("inputs_path", "state_dict_path", "targets_path", "h0_path"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not v.strip()):
                raise ConfigError(f"{name}={shown(v)} must be a file path (a non-empty string) or null")
        check_own_model_fields(self)
        check_choice("loss_steps", self.loss_steps, LOSS_STEPS)
        L = self.num_layers if not self.state_dict_path else MAX_LAYERS  # the file decides; checked once read
        check_int("layer", self.layer, -L, L - 1)
        check_choice("jacobian_lags", self.jacobian_lags, LAG_MODES)
        check_int("num_log_lags", self.num_log_lags, 2, 10_000)
        check_int("jacobian_batch", self.jacobian_batch, 0, MAX_BATCH)
        check_int("n_singular", self.n_singular, 1, 4096)
        check_float("horizon_threshold", self.horizon_threshold, 0.0, 1.0, lo_open=True)
        check_int("lyapunov_k", self.lyapunov_k, 0, 8192)
        check_int("truncate", self.truncate, 0, MAX_SEQ_LEN)
        check_choice("spectra", self.spectra, SPECTRA)
        check_choice("jacobian_detail", self.jacobian_detail, DETAILS)
        check_int("threads", self.threads, 0, 1024)
        check_choice("device", self.device, DEVICES)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_float("lr", self.lr, 0.0, 100.0, lo_open=True)
        check_choice("clip", self.clip, CLIP_MODES)
        check_float("clip_threshold", self.clip_threshold, 0.0, 1e12, lo_open=True)
        check_int("train_steps", self.train_steps, 0, 1_000_000)

    # ---- derived ----------------------------------------------------------------------------------------
    @property
    def cells(self) -> tuple[str, ...]:
        """The cells analysed side by side: ``compare`` if given, else ``(cell,)``."""
        return self.compare or (self.cell,)

    def for_cell(self, cell: str) -> "ExperimentConfig":
        """The single-cell config of one member of a comparison."""
        return dataclasses.replace(self, cell=cell, compare=())

    @property
    def analysed_layer(self) -> int:
        return self.layer % self.num_layers

    def model_config(self, input_size: int, cell: str | None = None) -> ModelConfig:
        """The ModelConfig of this experiment (or of one cell of its comparison), given the input size."""
        return ModelConfig(cell=cell or self.cell, activation=self.activation, input_size=input_size,
                           hidden_size=self.hidden_size, num_layers=self.num_layers,
                           bidirectional=self.bidirectional, init=self.init, init_scale=self.init_scale,
                           layer_norm=self.layer_norm, peephole=self.peephole, forget_bias=self.forget_bias,
                           chrono_tmax=max(2, self.seq_len), seed=self.seed, lru_r_min=self.lru_r_min,
                           lru_r_max=self.lru_r_max, lru_phase_max=self.lru_phase_max, lru_gamma=self.lru_gamma)

    def replace(self, **changes) -> "ExperimentConfig":
        return dataclasses.replace(self, **changes)

    # ---- JSON -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["compare"] = list(self.compare)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> "ExperimentConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"config must be a JSON object of fields; got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            import difflib
            close = difflib.get_close_matches(str(unknown[0]), sorted(names), n=3)
            hint = f"did you mean {' or '.join(close)}?" if close else "the fields are those of ExperimentConfig (README)"
            raise ConfigError(f"unknown config field {shown(unknown[0])}: {hint}")
        try:
            return cls(**d)
        except TypeError as e:  # a value of a type the checks did not expect (e.g. a list where a number goes)
            raise ConfigError(f"a config field has the wrong type: {shown(str(e), 120)}") from None

    @classmethod
    def from_json(cls, text: str) -> "ExperimentConfig":
        """Parse a JSON config (or a result file's "config"). Hostile text gets one line: over MAX_JSON_CHARS,
        nesting too deep, a 5000-digit number, NaN/Infinity, or a key given twice are refused."""
        if len(text) > MAX_JSON_CHARS:
            raise ConfigError(f"config is {len(text):,} characters long: a config file is at most "
                              f"{MAX_JSON_CHARS:,} characters")
        try:
            d = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config is not valid JSON: {shown(e.msg, 80)} at line {e.lineno} column {e.colno}") \
                from None
        except RecursionError:
            raise ConfigError("config is nested too deeply: a config is one JSON object of fields") from None
        except ValueError as e:  # a number too long to read (Python's int digit limit), a key given twice, NaN
            msg = str(e)
            if "digits" in msg and "limit" in msg:
                msg = "a number in it has thousands of digits: give each field a value in its range"
            raise ConfigError(f"config: {msg[:160]}") from None
        if isinstance(d, dict) and "config" in d and isinstance(d["config"], dict) and "cell" in d["config"]:
            d = d["config"]  # a result file: take its config
        return cls.from_dict(d)


MAX_JSON_CHARS = 1_000_000  # a result file with its arrays fits; a config is ~1 kB


def _unique_keys(pairs: list) -> dict:
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"field {shown(k)} is given twice")
        d[k] = v
    return d


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number a config accepts: give a finite value")
