r"""Cost estimate of an analysis or a training run, and the host's limits, checked before anything runs.

The command line, the Python API (``run_experiment``, ``Trainer``) and the dashboard call ``check`` /
``check_training`` first; over a limit they raise ``LimitExceeded`` (a ``ConfigError``: one line naming the
setting to lower, the estimate, the limit and how to raise it) and nothing is allocated.

Model of one cell's run (e = 4 or 8 bytes, S = state size: 2H for the LSTM [h; c], else H; G gates:
1 rnn, 3 gru, 4 lstm; b = sequences analysed for the Jacobians; K = reported lags; I = input size). What
differs by kind is declared by the cell classes (rnn_models.cells: ``graph_per_unit``, ``chunk_floats``,
``chunk_temporaries``, ``product_flops``, ``state_blocks``; their defaults are a dense S x S step, so a new kind
of cell is estimated without a line here)::

    states   = T B L D (G+S/H+1) H e              xp projections, states, outputs kept after the backward
    graph    = T B L D (k_cell H) e  (x2 truncate)  autograd's saved tensors + dL/dh_t of the backward
    jacobian = 4 b S^2 e + n chunk                P, Q and temporaries; one chunk of per-step Jacobians and
                                                  their temporaries (n = 6 dense, 4 LSTM blocks, 2 RNN)
               (chunk = max(one step, min(64 steps, 64 MiB)) of b S^2 e: the engine's own chunking)
    gates    = T b (G H + S) e + 3 T b H 8          the whole-sequence gate stack of the keep-gate paths
                                                  (cells with a keep gate: LSTM, GRU)
    memory   = base + states + max(graph, jacobian, gates)

    flops    = 3 * 2 T B L D G H (H + I)          forward + backward (x2 with truncated BPTT)
             + T * step(b)                        suffix products P <- P J_t for every lag up to T-1:
                                                  rnn 2 b H^3, lstm 8 b H^3, dense (gru / layer norm) 2 b S^3
                                                  + the Lyapunov QR 4 b S k^2
             + T * step(B) / S                    the log-space gradient chain (a vector, not a matrix)
             + K * 8 b (sum of m^3 of the SVDs)    singular values of each reported block at each lag
                                                  (h->h; the LSTM's [h; c] and c->c too)
             + steps * 5e6                        per-step overhead of every sequential loop (forward,
                                                  backward, chain, products, SVD calls), as flop-equivalents

Cells of a comparison run one after the other: the memory is the largest cell's, the work is the sum.
The constants were calibrated against peak RSS and time measured on a 2-core machine
(``python -m benchmarks.calibrate_limits``); tests check that the estimate is not far below the measurement.

Limits (per analysis request; a comparison with a variant counts every run), from the environment::

    GDLAB_MAX_MEMORY_MB   peak memory of one analysis or training step      (default 2048)
    GDLAB_MAX_GFLOP       arithmetic of one analysis / training run, GFLOP  (default 2000, ~1 min on one core:
                          three cells at T=1000, H=256 are about 1,150; an LSTM at T=1000, H=512 about 4,400)
    GDLAB_LIMITS=off      no limits (the command line's --no-limits does the same for its process)
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from rnn_models.cells import cell_type
from rnn_models.config import ConfigError

from .config import ExperimentConfig

BASE_BYTES = 64 * 2**20  # the interpreter's growth while running the smallest analysis (allocator, buffers)
LAYER_NORM_BYTES = 160 * 2**20  # vmap jacrev's first use (layer-normalized cells)
CHUNK_BYTES = 64 * 2**20  # analysis.jacobians.MAX_CHUNK_BYTES
STEP_FLOPS = 5e6  # each sequential step of a time loop costs ~0.2 ms of overhead whatever its size: counted as
# this many flops at GFLOP_PER_S, so T=100000 with H=6 is not "free" (measured: 18 s for T=20000, H=32, B=32)
SVD_FLOPS = 8.0  # flops per m^3 of one svdvals of an m x m matrix
GFLOP_PER_S = 25.0  # sustained rate of a whole analysis on one core of the calibration machine (for the message):
# measured 2026-12-01, three cells at T=1000, H=256: 1,145 GFLOP estimated, ~30 s of CPU (products at 50-65 GFLOP/s,
# eigensolvers and the per-step overhead slower)

DEFAULT_MAX_MEMORY_MB = 2048
DEFAULT_MAX_GFLOP = 2000.0


class LimitExceeded(ConfigError):
    """The estimated cost is above the host's limit; the message names the setting, estimate and limit."""


@dataclass(frozen=True)
class Limits:
    """The host's limits; ``None`` = no limit."""

    max_memory_mb: float | None = DEFAULT_MAX_MEMORY_MB
    max_gflop: float | None = DEFAULT_MAX_GFLOP
    source: str = "defaults"

    @classmethod
    def from_env(cls, env=None) -> "Limits":
        env = os.environ if env is None else env
        if str(env.get("GDLAB_LIMITS", "")).strip().lower() in ("off", "0", "false", "no", "none"):
            return cls(None, None, "GDLAB_LIMITS=off")
        return cls(_env_number(env, "GDLAB_MAX_MEMORY_MB", DEFAULT_MAX_MEMORY_MB),
                   _env_number(env, "GDLAB_MAX_GFLOP", DEFAULT_MAX_GFLOP), "environment")


def _env_number(env, name: str, default: float) -> float | None:
    text = str(env.get(name, "")).strip()
    if not text:
        return default
    if text.lower() in ("off", "none", "inf"):
        return None
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(f"{name}={text[:40]!r} must be a positive number (or 'off')") from None
    if not math.isfinite(v) or v <= 0:
        raise ConfigError(f"{name}={text[:40]!r} must be a positive number (or 'off')")
    return v


_override: Limits | None = None


def configure(limits: Limits | None) -> None:
    """Set this process's limits (the command line's flags); ``None`` returns to the environment's."""
    global _override
    _override = limits


def current() -> Limits:
    return _override if _override is not None else Limits.from_env()


@dataclass
class Cost:
    memory_bytes: float
    flops: float
    parts: dict = field(default_factory=dict)  # name -> bytes or flops of the largest cell, for the message

    @property
    def memory_mb(self) -> float:
        return self.memory_bytes / 2**20

    @property
    def gflop(self) -> float:
        return self.flops / 1e9

    def describe(self) -> str:
        return f"about {_mb(self.memory_bytes)} of memory and {self.gflop:,.0f} GFLOP (~{_seconds(self.flops)})"


def _mb(b: float) -> str:
    return f"{b / 2**30:,.1f} GB" if b >= 2**30 else f"{b / 2**20:,.0f} MB"


def _seconds(flops: float) -> str:
    s = flops / (GFLOP_PER_S * 1e9)
    return f"{s / 3600:,.1f} h" if s >= 3600 else f"{s / 60:,.1f} min" if s >= 120 else f"{s:,.1f} s"


# ---- the estimate -------------------------------------------------------------------------------------------
def _sizes(config: ExperimentConfig) -> tuple[int, int]:
    """(input size I, number of reported lags K) without building anything."""
    from .jacobians import report_lags
    from .tasks import task_spec
    try:
        I = task_spec(config.task, config.seq_len, config.input_size or 8, config.text).input_size
    except Exception:  # noqa: BLE001 - the engine reports a bad task itself; the estimate assumes 8 inputs
        I = config.input_size or 8
    T = config.seq_len
    K = T if config.jacobian_lags == "all" or T <= config.num_log_lags else len(
        report_lags(T, "log", config.num_log_lags))
    return I, K


def _gates(kind) -> int:
    """G: the row blocks of the input projection (1 rnn, 4 lstm, 3 gru; at least 1)."""
    return max(1, len(kind.gate_names))


def cell_cost(config: ExperimentConfig, cell: str, only: str | None = None) -> Cost:
    """Peak memory (bytes) and arithmetic (flops) of ``run_experiment`` for one cell (see the module docstring)."""
    T, B, H, L = config.seq_len, config.batch_size, config.hidden_size, config.num_layers
    D = 2 if config.bidirectional else 1
    e = 8 if config.dtype == "float64" else 4
    kind = cell_type(cell)
    G = _gates(kind)
    S = kind.state_size(H)
    b = B if config.jacobian_batch in (0, None) else min(config.jacobian_batch, B)
    I, K = _sizes(config)
    dense = not kind.structured_products or config.layer_norm
    # memory
    states = T * B * L * D * (G + S // H + 1) * H * e + T * B * I * e
    graph = T * B * L * D * kind.graph_per_unit * H * e * (2 if config.truncate else 1)
    if config.layer_norm:
        graph *= 2
    step_b = b * kind.chunk_floats(H, dense) * e
    chunk = max(step_b, min(64 * step_b, CHUNK_BYTES))
    # the chunk's Jacobians and their temporaries: dense J (several (C, b, S, S) terms), LSTM blocks A, C
    jac = 4 * b * S * S * e + kind.chunk_temporaries(dense) * chunk
    if config.layer_norm:
        jac += LAYER_NORM_BYTES + b * S * S * e * S
    gates = T * b * (G * H + S) * e + 3 * T * b * H * 8 if kind.keep_gate is not None else 0
    if only == "gradients":  # no Jacobian products (run_experiment's first stage)
        jac = gates = 0
    memory = BASE_BYTES + states + max(graph, jac, gates)
    # arithmetic
    fb = 3 * 2 * T * B * L * D * G * H * (H + I) * (2 if config.truncate else 1)
    nk = min(config.lyapunov_k, S)
    per_step = kind.product_flops(H, dense)
    if config.layer_norm:
        per_step *= 4  # autograd's vmap jacrev builds the per-step Jacobians
    prod = T * D * b * (per_step + 4 * S * nk * nk)
    chain = T * B * per_step / S
    svd = K * D * SVD_FLOPS * b * sum((sl.stop - sl.start) ** 3 for sl in kind.state_blocks(H).values())
    if config.spectra == "fast":  # the thin route where it is cheaper (analysis.jacobian_route)
        from .jacobians import report_lags
        from .thin_sigma import route_flops, thin_is_cheaper
        lags = report_lags(T, config.jacobian_lags, config.num_log_lags)
        thin, _ = route_flops(cell, H, T, lags, b, dense)
        if thin_is_cheaper(cell, H, T, lags, b, dense):  # the route the run takes (analysis.jacobian_route)
            prod, svd = D * thin + T * D * b * 4 * S * nk * nk, 0.0
    if kind.diagonal:  # analysis.diagonal: no product formed, no SVD, no QR, no gate stack: O(H) per step and lag
        prod, svd, gates = T * D * b * per_step, K * D * b * H * 16.0, 0
        memory = BASE_BYTES + states + max(graph, jac)
    if only == "gradients":
        prod = svd = 0
    steps = T * (3 * L * D * (2 if config.truncate else 1) + 1) + (0 if only == "gradients" else T * D + K * D)
    flops = fb + prod + chain + svd + steps * STEP_FLOPS
    parts = {"states": states, "graph": graph, "jacobians": jac, "gates": gates,
             "forward_backward": fb, "products": prod, "svd": svd}
    return Cost(memory, flops, parts)


def estimate(config: ExperimentConfig, variant: dict | None = None, only: str | None = None,
             views: tuple[str, ...] | None = None) -> Cost:
    """The cost of analysing every cell of ``config`` (and of its variant, when given: the cells it changes,
    ``analysis.variant.variant_config``); ``views`` with "sensitivity" adds
    ``analysis.param_sensitivity.sensitivity_cost`` (an opt-in view: not in the default)."""
    from .variant import variant_config
    other = variant_config(config, variant)
    configs = [config] + ([other] if other is not None else [])
    costs = [cell_cost(c, cell, only) for c in configs for cell in c.cells]
    if views is not None and "sensitivity" in views:
        from .param_sensitivity import sensitivity_cost
        more = [sensitivity_cost(c, cell, _sizes(c)[0]) for c in configs for cell in c.cells]
        costs = [Cost(c.memory_bytes + m, c.flops + f, {**c.parts, "sensitivity": f}) for c, (m, f) in zip(costs, more)]
    top = max(costs, key=lambda c: c.memory_bytes)
    return Cost(top.memory_bytes, sum(c.flops for c in costs), top.parts)


def training_cost(config: ExperimentConfig, steps: int) -> Cost:
    """One training step's memory and ``steps`` steps' arithmetic (forward + backward + optimizer)."""
    T, B, H, L = config.seq_len, config.batch_size, config.hidden_size, config.num_layers
    D = 2 if config.bidirectional else 1
    e = 8 if config.dtype == "float64" else 4
    I, _ = _sizes(config)
    kind = cell_type(config.cell)
    G = _gates(kind)
    graph = T * B * L * D * kind.graph_per_unit * H * e * (2 if config.layer_norm else 1)
    params = 4 * L * D * G * H * (H + I + D * H + 2) * e  # weights, grads, two Adam moments
    memory = BASE_BYTES + graph + T * B * (I + L * D * (G + 2) * H) * e + params
    flops = max(1, steps) * (3 * 2 * T * B * L * D * G * H * (H + I) + 3 * T * L * D * STEP_FLOPS)
    # every 5th step a probe (analysis.training_run): one sequence's Jacobian product over T steps, the svdvals
    # of its h->h block at 12 lags, the eigenvalues of W_hh's G blocks
    S = kind.state_size(H)
    flops += -(-max(1, steps) // 5) * (2 * T * S**3 + (12 + G) * SVD_FLOPS * H**3)
    return Cost(memory, flops, {"graph": graph})


# ---- the check ----------------------------------------------------------------------------------------------
SIZE_FIELDS = ("seq_len", "hidden_size", "batch_size", "num_layers", "jacobian_batch", "bidirectional", "compare",
               "dtype", "truncate", "jacobian_lags")


def _culprit(config: ExperimentConfig, variant: dict | None, measure) -> str:
    """The setting whose default value lowers the cost most, as 'name=value'."""
    default = ExperimentConfig()
    base = measure(config, variant)
    best, best_ratio = None, 1.0
    for name in SIZE_FIELDS:
        value = getattr(config, name)
        dv = getattr(default, name)
        if name == "jacobian_batch":
            dv = min(16, config.batch_size) if value in (0, None) or value > 16 else value
        if value == dv:
            continue
        try:
            lower = measure(config.replace(**{name: dv, **({"cell": config.cells[0]} if name == "compare" else {})}),
                            variant)
        except ConfigError:
            continue
        ratio = base / max(lower, 1.0)
        if ratio > best_ratio * 1.05:
            best, best_ratio = name, ratio
    if variant and base / max(measure(config, None), 1.0) > best_ratio * 1.05:
        from .variant import variant_label
        return "variant " + variant_label(variant)
    if best is None:
        return "these settings"
    v = getattr(config, best)
    text = ",".join(v) if isinstance(v, tuple) else str(v).lower() if isinstance(v, bool) else str(v)
    return f"{best}={text}"


def _raise_if_over(cost: Cost, limits: Limits, config: ExperimentConfig, variant, what: str, cost_of) -> None:
    how = ("raise it with GDLAB_MAX_MEMORY_MB / GDLAB_MAX_GFLOP (or GDLAB_LIMITS=off) where the server starts, "
           "or --no-limits on the command line")
    if limits.max_memory_mb is not None and cost.memory_mb > limits.max_memory_mb:
        who = _culprit(config, variant, lambda c, v: cost_of(c, v).memory_bytes)
        raise LimitExceeded(
            f"{what} with {who} would need {_mb(cost.memory_bytes)} of memory (estimate), above this host's limit of "
            f"{_mb(limits.max_memory_mb * 2**20)}: lower {_field(who)}, or {how}")
    if limits.max_gflop is not None and cost.gflop > limits.max_gflop:
        who = _culprit(config, variant, lambda c, v: cost_of(c, v).flops)
        raise LimitExceeded(
            f"{what} with {who} would take {cost.gflop:,.0f} GFLOP (estimate, ~{_seconds(cost.flops)}), above this "
            f"host's limit of {limits.max_gflop:,.0f} GFLOP: lower {_field(who)}, or {how}")


def _field(who: str) -> str:
    return "the variant's sizes" if who.startswith("variant ") else who.split("=")[0]


def check(config: ExperimentConfig, variant: dict | None = None, limits: Limits | None = None, *,
          only: str | None = None, views: tuple[str, ...] | None = None) -> Cost:
    """Raise LimitExceeded if analysing ``config`` (and its variant) would exceed the limits; else its Cost."""
    limits = current() if limits is None else limits
    cost = estimate(config, variant, only, views)
    _raise_if_over(cost, limits, config, variant, "this analysis", lambda c, v: estimate(c, v, only, views))
    return cost


def check_training(config: ExperimentConfig, steps: int, limits: Limits | None = None) -> Cost:
    """Raise LimitExceeded if ``steps`` training steps of ``config`` would exceed the limits."""
    limits = current() if limits is None else limits
    cost = training_cost(config, steps)
    _raise_if_over(cost, limits, config, None, f"training {max(1, steps)} steps",
                   lambda c, v: training_cost(c, steps))
    return cost
