"""Seeded synthetic sequence tasks for the gradient-dynamics lab.

Every task produces time-major batches ``inputs: (T, B, input_size)`` from a
``torch.Generator`` seeded with ``seed`` (same seed -> identical batch), plus
the targets and the loss the gradients are taken of.  Each task states its
*chance level*: the loss of the best memoryless / constant predictor under that
task's own loss definition, so a trained model can be read against it.

==================  =====  ======  =====  ===================  ==============
task                input  output  steps  chance loss          kind
==================  =====  ======  =====  ===================  ==============
``random``          user   1       last   0.0 (no chance)      probe
``adding``          2      1       last   1/6 (MSE)            regression
``copy``            10     10      all    10 ln 8 / L (CE)     classification
``temporal-order``  8      4       last   ln 4 (CE)            classification
``charlm``          V      V       all    ln V (CE)            classification
==================  =====  ======  =====  ===================  ==============

"last": the loss uses the final step ``y[-1]`` only; "all": the per-step loss
is averaged over the T steps of each sequence (then over the batch).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .char_corpus import (DATA_DIR, SHIPPED_TEXT_PATH, TEXTS, CharVocab, _check_text,  # noqa: F401 - re-exported
                          _corpus_ids, char_corpus, perplexity)

TASKS = ("random", "adding", "copy", "temporal-order", "charlm")


# copy task alphabet: 0 blank, 1..8 data, 9 delimiter
COPY_BLANK, COPY_DELIMITER, COPY_N_SYMBOLS = 0, 9, 10
COPY_N_DATA = 10  # data symbols to memorise
COPY_N_DATA_SYMBOLS = 8  # symbols 1..8

# temporal-order alphabet, one-hot index = position in this tuple
TEMPORAL_ORDER_ALPHABET = ("a", "b", "c", "d", "X", "Y", "B", "E")
_TO_X, _TO_B, _TO_E = 4, 6, 7  # Y is _TO_X + 1

_MIN_SEQ_LEN = {"random": 1, "adding": 2, "copy": 21, "temporal-order": 10, "charlm": 1}
_MIN_REASON = {
    "random": "",
    "adding": " (one marker in each half)",
    "copy": " (delay + 20)",
    "temporal-order": " (B, two relevant symbols in separate windows, E)",
    "charlm": "",
}


# --------------------------------------------------------------------------- #
# validation helpers (every message is one line naming field, value and range)
# --------------------------------------------------------------------------- #
def _as_int(field: str, value) -> int:
    """Return ``value`` as an int; bools and floats are rejected."""
    if isinstance(value, bool):
        raise ValueError(f"{field}={value!r} must be an int, not a bool")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{field}={value!r} must be an int") from None


def _check_at_least(field: str, value, lo: int) -> int:
    value = _as_int(field, value)
    if value < lo:
        raise ValueError(f"{field}={value} is invalid: must be >= {lo}")
    return value


def _check_name(name) -> str:
    if name not in TASKS:
        allowed = ", ".join(repr(t) for t in TASKS)
        raise ValueError(f"name={name!r} is not a known task: must be one of {allowed}")
    return name


def _check_dtype(dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(
            f"dtype={dtype!r} is not a floating torch dtype: must be e.g. torch.float32 or torch.float64"
        )
    return dtype


def _check_seq_len(name: str, seq_len, text: str) -> int:
    seq_len = _as_int("seq_len", seq_len)
    lo = _MIN_SEQ_LEN[name]
    if seq_len < lo:
        raise ValueError(
            f"seq_len={seq_len} is too short for task {name!r}: must be >= {lo}{_MIN_REASON[name]}"
        )
    if name == "charlm" and text == "shipped":
        n = len(char_corpus(text)[0])
        if seq_len >= n:
            raise ValueError(
                f"seq_len={seq_len} is too long for task 'charlm' with text='shipped': "
                f"must be <= {n - 1} (corpus length {n} minus 1)"
            )
    return seq_len


def _generator(seed) -> torch.Generator:
    seed = _as_int("seed", seed)
    lo, hi = -(2**63), 2**64 - 1  # torch.Generator.manual_seed range
    if not lo <= seed <= hi:
        raise ValueError(f"seed={seed} is out of range: must be in [-2**63, 2**64 - 1]")
    return torch.Generator().manual_seed(seed)


def _one_line(msg: str) -> str:
    return " ".join(msg.split())


# --------------------------------------------------------------------------- #
# specs
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class TaskSpec:
    """Static description of a task (no data).

    ``chance_loss`` is the loss of the best memoryless / constant predictor
    under the task's own loss definition (0.0 for the ``random`` probe, which
    has no chance level).
    """

    name: str
    input_size: int
    output_size: int
    loss_steps: str  # "last" | "all"
    chance_loss: float
    kind: str  # "regression" | "classification" | "probe"
    min_seq_len: int


def temporal_order_windows(seq_len: int) -> tuple[range, range]:
    """Allowed positions (0-based, inclusive ranges) of the two relevant symbols.

    ``t1 in [max(1, T//10), T//5]`` and ``t2 in [T//2, min(T-2, 3T//5)]``;
    for T = 100 this is t1 in [10, 20], t2 in [50, 60] as in Hochreiter &
    Schmidhuber (1997), exp. 6a.  For T >= 10 the windows are non-empty,
    disjoint (t1 < t2) and strictly inside (B at 0, E at T-1).
    """
    T = _check_seq_len("temporal-order", seq_len, "shipped")
    lo1, hi1 = max(1, T // 10), T // 5
    lo2, hi2 = T // 2, min(T - 2, (3 * T) // 5)
    return range(lo1, hi1 + 1), range(lo2, hi2 + 1)


def task_spec(name: str, seq_len: int, input_size: int = 8, text: str = "shipped") -> TaskSpec:
    """Validate the arguments and return the task's :class:`TaskSpec`.

    ``input_size`` is used by ``random`` only (the other tasks fix it);
    ``text`` is used by ``charlm`` only.
    """
    name = _check_name(name)
    text = _check_text(text)
    input_size = _check_at_least("input_size", input_size, 1)
    T = _check_seq_len(name, seq_len, text)
    lo = _MIN_SEQ_LEN[name]
    if name == "random":
        return TaskSpec(name, input_size, 1, "last", 0.0, "probe", lo)
    if name == "adding":
        return TaskSpec(name, 2, 1, "last", 1.0 / 6.0, "regression", lo)
    if name == "copy":
        chance = COPY_N_DATA * math.log(COPY_N_DATA_SYMBOLS) / T
        return TaskSpec(name, COPY_N_SYMBOLS, COPY_N_SYMBOLS, "all", chance, "classification", lo)
    if name == "temporal-order":
        return TaskSpec(name, len(TEMPORAL_ORDER_ALPHABET), 4, "last", math.log(4), "classification", lo)
    V = char_corpus(text)[1].size
    return TaskSpec(name, V, V, "all", math.log(V), "classification", lo)


# --------------------------------------------------------------------------- #
# batches
# --------------------------------------------------------------------------- #
@dataclass
class TaskBatch:
    """One batch: ``inputs (T, B, input_size)`` and task targets.

    targets: adding ``(B,)`` float; copy ``(T, B)`` long; temporal-order
    ``(B,)`` long; charlm ``(T, B)`` long; random ``None``.
    """

    spec: TaskSpec
    inputs: torch.Tensor
    targets: torch.Tensor | None

    @property
    def seq_len(self) -> int:
        return self.inputs.shape[0]

    @property
    def batch_size(self) -> int:
        return self.inputs.shape[1]

    def _check_y(self, y) -> None:
        want = (self.seq_len, self.batch_size, self.spec.output_size)
        if not isinstance(y, torch.Tensor) or not y.is_floating_point():
            raise ValueError(f"y must be a floating torch.Tensor of shape (T, B, output_size) = {want}")
        if tuple(y.shape) != want:
            raise ValueError(
                f"y has shape {tuple(y.shape)} for task {self.spec.name!r}: "
                f"must be (T, B, output_size) = {want}"
            )

    def loss_per_sequence(self, y: torch.Tensor) -> torch.Tensor:
        """Per-sequence losses ``(B,)`` from readout outputs ``y (T, B, output_size)``.

        random: ``y[-1, :, 0]`` (the probe u . h_T; the caller passes
        ``y = h @ u[:, None]``); adding: squared error of ``y[-1, :, 0]``;
        temporal-order: cross-entropy of ``y[-1]``; copy / charlm:
        cross-entropy at every step averaged over the T steps.
        """
        self._check_y(y)
        name = self.spec.name
        if name == "random":
            return y[-1, :, 0]
        if name == "adding":
            return (y[-1, :, 0] - self.targets.to(y.dtype)) ** 2
        if name == "temporal-order":
            return F.cross_entropy(y[-1], self.targets, reduction="none")
        T, B, C = y.shape
        ce = F.cross_entropy(y.reshape(T * B, C), self.targets.reshape(T * B), reduction="none")  # (T*B,)
        return ce.reshape(T, B).mean(dim=0)  # (T, B) -> (B,)

    def loss(self, y: torch.Tensor) -> torch.Tensor:
        """Scalar training loss: ``loss_per_sequence(y).mean()``."""
        return self.loss_per_sequence(y).mean()


def _random_inputs(T: int, B: int, input_size: int, g: torch.Generator) -> tuple[torch.Tensor, None]:
    """Probe task: inputs N(0, 1), no targets."""
    return torch.randn(T, B, input_size, generator=g, dtype=torch.float64), None


def _adding_inputs(T: int, B: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Adding problem (Hochreiter & Schmidhuber 1997; Le, Jaitly & Hinton 2015).

    Channel 0: values U[0, 1]; channel 1: markers, exactly two 1s, one at a
    uniform position in [0, T//2) and one in [T//2, T).  Target: the sum of the
    two marked values.  Chance MSE 1/6: predicting the constant 1 (the sum of
    two U[0, 1] has mean 1, variance 2/12).
    """
    values = torch.rand(T, B, generator=g, dtype=torch.float64)
    half, cols = T // 2, torch.arange(B)
    first = torch.randint(0, half, (B,), generator=g)
    second = torch.randint(half, T, (B,), generator=g)
    markers = torch.zeros(T, B, dtype=torch.float64)
    markers[first, cols] = 1.0
    markers[second, cols] = 1.0
    inputs = torch.stack([values, markers], dim=-1)  # 2 x (T, B) -> (T, B, 2)
    return inputs, values[first, cols] + values[second, cols]


def _copy_inputs(T: int, B: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Copy memory task (Arjovsky, Shah & Bengio 2016), total length L = delay + 20.

    Input: 10 data symbols U{1..8}, delay-1 blanks (0), delimiter 9, 10 blanks.
    Target: blank for the first L-10 steps, then the 10 data symbols.
    Chance CE 10 ln 8 / L: blank with certainty for L-10 steps, then uniform
    over the 8 data symbols for the last 10.
    """
    data = torch.randint(1, COPY_N_DATA_SYMBOLS + 1, (COPY_N_DATA, B), generator=g)  # (10, B)
    symbols = torch.full((T, B), COPY_BLANK, dtype=torch.long)
    symbols[:COPY_N_DATA] = data
    symbols[T - COPY_N_DATA - 1] = COPY_DELIMITER  # index 10 + delay - 1
    targets = torch.full((T, B), COPY_BLANK, dtype=torch.long)
    targets[T - COPY_N_DATA :] = data
    return F.one_hot(symbols, COPY_N_SYMBOLS).double(), targets  # (T, B) -> (T, B, 10)


def _temporal_order_inputs(T: int, B: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Temporal order problem (Hochreiter & Schmidhuber 1997, experiment 6a).

    Alphabet a, b, c, d, X, Y, B, E (one-hot, in that order).  Position 0 is B,
    position T-1 is E, positions t1, t2 (see :func:`temporal_order_windows`)
    hold X or Y, all others are uniform over {a, b, c, d}.
    Class: (X,X)=0, (X,Y)=1, (Y,X)=2, (Y,Y)=3.  Chance CE ln 4 (uniform).
    """
    w1, w2 = temporal_order_windows(T)
    cols = torch.arange(B)
    symbols = torch.randint(0, 4, (T, B), generator=g)
    symbols[0], symbols[-1] = _TO_B, _TO_E
    t1 = torch.randint(w1.start, w1.stop, (B,), generator=g)
    t2 = torch.randint(w2.start, w2.stop, (B,), generator=g)
    is_y1 = torch.randint(0, 2, (B,), generator=g)
    is_y2 = torch.randint(0, 2, (B,), generator=g)
    symbols[t1, cols] = _TO_X + is_y1
    symbols[t2, cols] = _TO_X + is_y2
    inputs = F.one_hot(symbols, len(TEMPORAL_ORDER_ALPHABET)).double()  # (T, B) -> (T, B, 8)
    return inputs, 2 * is_y1 + is_y2


def _charlm_inputs(T: int, B: int, text: str, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Character-level language model (next-char prediction at every step).

    B random windows of T+1 characters; inputs are the first T (one-hot),
    targets the next T.  ``text="hello"`` windows wrap around cyclically.
    Chance CE ln V (uniform predictor; perplexity V).
    """
    ids = _corpus_ids(text)  # (N,)
    n, V = ids.numel(), char_corpus(text)[1].size
    offsets = torch.arange(T + 1)[:, None]  # (T+1, 1)
    if text == "hello":
        starts = torch.randint(0, n, (B,), generator=g)
        idx = (starts[None, :] + offsets) % n  # (T+1, B), cyclic
    else:
        starts = torch.randint(0, n - T, (B,), generator=g)  # last window ends at n-1
        idx = starts[None, :] + offsets  # (T+1, B)
    windows = ids[idx]  # (T+1, B)
    return F.one_hot(windows[:-1], V).double(), windows[1:]  # (T, B, V), (T, B)


def make_batch(
    name: str,
    seq_len: int,
    batch_size: int,
    *,
    seed: int,
    input_size: int = 8,
    dtype: torch.dtype = torch.float32,
    text: str = "shipped",
) -> TaskBatch:
    """Build a seeded batch of task ``name``: inputs ``(seq_len, batch_size, input_size)``.

    All randomness comes from ``torch.Generator().manual_seed(seed)``; values
    are drawn in float64 and cast to ``dtype``, so a seed gives the same batch
    (up to rounding) in every dtype.
    """
    spec = task_spec(name, seq_len, input_size, text)
    B = _check_at_least("batch_size", batch_size, 1)
    dtype = _check_dtype(dtype)
    g, T = _generator(seed), _as_int("seq_len", seq_len)
    if name == "random":
        inputs, targets = _random_inputs(T, B, spec.input_size, g)
    elif name == "adding":
        inputs, targets = _adding_inputs(T, B, g)
        targets = targets.to(dtype)
    elif name == "copy":
        inputs, targets = _copy_inputs(T, B, g)
    elif name == "temporal-order":
        inputs, targets = _temporal_order_inputs(T, B, g)
    else:
        inputs, targets = _charlm_inputs(T, B, text, g)
    return TaskBatch(spec=spec, inputs=inputs.to(dtype), targets=targets)


def random_readout(hidden_size: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Fixed random unit vector ``u (hidden_size,)`` for the ``random`` probe.

    Drawn N(0, I) in float64 from ``seed`` and divided by its 2-norm, so
    ``||u||_2 = 1`` (to the rounding of ``dtype``) and dL/dh_T = u has norm 1.
    """
    H = _check_at_least("hidden_size", hidden_size, 1)
    dtype = _check_dtype(dtype)
    u = torch.randn(H, generator=_generator(seed), dtype=torch.float64)
    return (u / torch.linalg.vector_norm(u)).to(dtype)


def __getattr__(name: str):
    """``load_inputs`` (the user's inputs file) lives in analysis.input_files, where it is read as the model
    uploads are; ``from analysis.tasks import load_inputs`` keeps working (imported on first use: input_files
    imports this module)."""
    if name == "load_inputs":
        from .input_files import load_inputs
        return load_inputs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
