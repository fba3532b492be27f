r"""Sensitivity of the hidden state to the recurrent parameters: the curse of memory (Zucchet & Orvieto, NeurIPS
2024, "Recurrent neural networks: vanishing and exploding gradients are not the end of the story").

For one layer's run (``Trace.runs[l][d]``), at every step t::

    S_t = mean_b || d h_t / d theta ||_F^2        (theta: the recurrent parameters, every block summed)
    E_t = mean_b || h_t ||^2                      (h: the state's first entry, the layer output)
    log10 S_t,  log10 E_t,  log10 S_t / E_t

As memory grows (lambda -> 1) S_t explodes even where d h_T / d h_t does not: for the scalar linear recurrence
h_t = lambda h_{t-1} + x_t with unit white noise, E_t -> 1 / (1 - lambda^2) and
S_t = E[(dh_t/dlambda)^2] -> (1 + lambda^2) / (1 - lambda^2)^3, so S/E grows as (1 - lambda^2)^-2.

Method: forward mode (``analysis.tangent_pass``). d h_t / d theta . v for every t comes from one pass of the
tangent recurrence u_t = (d step / d state) u_{t-1} + (d step / d theta) v (u = 0 before the first step: the
initial state does not depend on theta), evaluated at the states the run visited, in float64 whatever the run's
dtype; one pass per tangent direction, not one backward per parameter. Per parameter block, with n entries:

    unit-wise   each entry of h depends on at most one entry of the block (declared by the cell:
                ``unitwise_params``): || J 1 ||^2 = || J ||_F^2, one tangent, exact
    unit rows   row r of the block moves unit r mod H of h only (``unit_rows``: a diagonal cell's input weights):
                n / H tangents, each 1 on a block of H rows at one column, exact (n / H <= exact_max)
    basis       n <= exact_max: the tangents e_1..e_n, sum_j || J e_j ||^2 = || J ||_F^2, exact
    Hutchinson  larger blocks: K Rademacher tangents per sequence, E || J v ||^2 = || J ||_F^2, unbiased; the
                relative standard error of S_t is estimated from the spread over the K tangents

Every tangent is renormalised after each step, so S_t is exact in log space where it would overflow float64;
a non-finite state or tangent is reported where it first appears (``nonfinite``), later steps are NaN.

Shapes::

    T steps   B sequences   S_i state entries (H)   N tangents of one chunk   n entries of one block
    run.xp    T x (B, G)    run.states  T + 1 tuples of (B, S_i)     u  tuple of (N, B, S_i)
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from .tangent_pass import (FORWARD_AD, WINDOW, Step, acts_through_input, block, chunk_size, log10_mean,
                           log10_sq_norm, log10_sum, projected_width, tangent_bytes, window_bytes)

DEFAULT_K = 8  # Rademacher tangents per sequence (Hutchinson)
EXACT_MAX = 256  # blocks up to this many entries are exact by a tangent basis
WAIT_POLL_S = 0.2  # a caller waiting for another's forward-mode pass reports progress this often


@dataclass
class SensitivityResult:
    """log10 values in time order (t = 0..T-1: h_t is the state after reading x_t).

    blocks: {name: {"numel", "method", "log10_sensitivity" (T,), "rel_se" (T,) or None}} per parameter block.
    rel_se: (T,) relative standard error of S_t (the Hutchinson blocks' spread; None where every block is exact).
    """

    t: np.ndarray
    log10_sensitivity: np.ndarray
    log10_state_energy: np.ndarray
    log10_ratio: np.ndarray
    method: str
    params: list[str]
    blocks: dict = field(default_factory=dict)
    rel_se: np.ndarray | None = None
    nonfinite: dict | None = None
    sequences: int = 0
    k: int = DEFAULT_K

    @property
    def last_log10_ratio(self) -> float:
        """log10 S_{T-1} / E_{T-1} (the Atlas metric ``param_sensitivity``); NaN where not finite."""
        return float(self.log10_ratio[-1])

    def to_dict(self) -> dict:
        """The JSON form: log10 values and their plain twins (None where not finite: JSON has no NaN)."""
        return {
            "t": [int(v) for v in self.t],
            "log10_sensitivity": _json(self.log10_sensitivity),
            "log10_state_energy": _json(self.log10_state_energy),
            "log10_ratio": _json(self.log10_ratio),
            "sensitivity": _json(_pow10(self.log10_sensitivity)),
            "state_energy": _json(_pow10(self.log10_state_energy)),
            "rel_se": None if self.rel_se is None else _json(self.rel_se),
            "method": self.method,
            "params": list(self.params),
            "blocks": {k: {"numel": b["numel"], "method": b["method"],
                           "log10_sensitivity": _json(b["log10_sensitivity"]),
                           "rel_se": None if b["rel_se"] is None else _json(b["rel_se"])}
                       for k, b in self.blocks.items()},
            "sequences": self.sequences,
            "nonfinite": self.nonfinite,
            "note": "S_t = mean over sequences of ||dh_t/dtheta||_F^2 (theta: params), E_t = mean ||h_t||^2",
        }


def _json(a) -> list:
    return [float(v) if math.isfinite(v) else None for v in np.asarray(a, dtype=float).ravel()]


def _pow10(a) -> np.ndarray:
    with np.errstate(over="ignore", under="ignore"):
        return np.power(10.0, np.asarray(a, dtype=float))


# ---- which parameters --------------------------------------------------------------------------------------
def default_params(cell: nn.Module) -> list[str]:
    """The cell's recurrent parameters (``recurrent_params``, e.g. weight_hh and bias_hh); all its parameters
    when it declares none (a cell the user gives)."""
    names = [n for n, _ in cell.named_parameters()]
    declared = getattr(cell, "recurrent_params", None)
    return names if declared is None else [n for n in declared if n in names]


def _check_params(cell: nn.Module, params) -> list[str]:
    names = [n for n, _ in cell.named_parameters()]
    if params is None:
        return default_params(cell)
    params = [params] if isinstance(params, str) else list(params)
    bad = [p for p in params if p not in names]
    if bad or not params:
        raise ValueError(f"params={bad[0] if bad else params!r} is not a parameter of this "
                         f"{type(cell).__name__}: choose from {', '.join(names)}")
    return list(dict.fromkeys(params))


def layer_input(runs: list, layer: int, x: Tensor) -> Tensor:
    """The input sequence of ``layer`` in time order (T, B, I): x for layer 0, else the layer below's
    [h_fwd; h_bwd] (what ``RecurrentNetwork.forward`` fed it)."""
    if layer == 0:
        return x
    outs = [torch.stack(r.h_in_time_order(), 0) for r in runs[layer - 1]]  # D x (T, B, H)
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)



def log10_state_energy(hs: list) -> Tensor:
    """log10 mean_b ||h_t||^2 for hs, T tensors (B, H): (T,), in float64 a window of steps at a time."""
    return torch.cat([log10_mean(log10_sq_norm(torch.stack(hs[i:i + WINDOW]).to(torch.float64)), (1,))
                      for i in range(0, len(hs), WINDOW)])



# ---- the public entry --------------------------------------------------------------------------------------
def param_sensitivity(run, *, x: Tensor | None = None, params=None, k: int = DEFAULT_K,
                      exact_max: int = EXACT_MAX, seed: int = 0, progress=None) -> SensitivityResult:
    """S_t, E_t and their ratio for one run (``Trace.runs[l][d]``; see the module docstring).

    x          the run's input in time order (T, B, I) (``layer_input``); needed only when a parameter in
               ``params`` acts through ``cell.project`` (weight_ih, bias_ih...), else the run's xp is used
    params     parameter names of the cell (default ``default_params``: its recurrent parameters)
    k          Rademacher tangents per sequence for blocks above ``exact_max`` entries (not unit-wise)
    seed       seed of the Rademacher tangents
    progress   optional callback (fraction, what); it may raise to stop
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k={k!r} must be an integer >= 2 (Rademacher tangents per sequence)")
    if isinstance(exact_max, bool) or not isinstance(exact_max, int) or exact_max < 0:
        raise ValueError(f"exact_max={exact_max!r} must be an integer >= 0")
    cell = copy.deepcopy(run.cell).to(torch.float64).requires_grad_(False)
    names = _check_params(cell, params)
    while not FORWARD_AD.acquire(timeout=WAIT_POLL_S):
        if progress is not None:  # may raise (a cancelled run): nothing held yet
            progress(0.0, "parameter sensitivity: waiting for another forward-mode pass (one at a time)")
    try:
        return _sensitivity(run, cell, names, x, k, exact_max, seed, progress)
    finally:
        FORWARD_AD.release()


def _sensitivity(run, cell, names, x, k, exact_max, seed, progress) -> SensitivityResult:
    through = acts_through_input(cell, names)
    T = len(run.xp)
    if through:
        if x is None:
            raise ValueError(f"params {', '.join(names)}: one acts through the input projection, so x (the run's "
                             "input, (T, B, I)) is needed")
        inputs = list(x.detach().unbind(0))
        inputs = inputs[::-1] if run.reverse else inputs  # processing order
    else:
        inputs = [v.detach() for v in run.xp]
    # the run's own tensors in its dtype, read only: the tangent pass takes a window at a time to float64
    states = [tuple(s.detach() for s in st) for st in run.states]
    step = Step(cell, through)
    pdict = dict(cell.named_parameters())
    gen = torch.Generator().manual_seed(int(seed))
    H = getattr(cell, "hidden_size", states[0][0].shape[-1])  # the period of a unit-rows block
    modes = {n: _mode(cell, n, pdict[n].shape, H, exact_max) for n in names}
    # progress: tangent-steps done of (tangents of every block) x T
    work = T * sum(_tangents(modes[n], pdict[n].numel(), H, k) for n in names)
    done = [0, 0]

    def tick(n_tangents: int) -> None:
        done[0] += n_tangents
        done[1] += 1
        if progress is not None and done[1] % 16 == 0:
            progress(min(1.0, done[0] / work), "parameter sensitivity (forward-mode JVPs)")

    blocks, logs, sq_se, bad = {}, [], [], None
    for n in names:
        est, se2, b = block(step, n, pdict[n].detach().clone(), modes[n], k, gen, inputs, states, tick, H)
        bad = bad or (b and {**b, "param": n})
        blocks[n] = {"numel": pdict[n].numel(),
                     "method": METHODS[modes[n]].format(n=_tangents(modes[n], pdict[n].numel(), H, k), k=k),
                     "log10_sensitivity": est,
                     "rel_se": None if se2 is None else torch.pow(10.0, 0.5 * se2 - est)}
        logs.append(est)
        if se2 is not None:
            sq_se.append(se2)
    log_s = log10_sum(torch.stack(logs), 0)  # (T,) sum over the blocks, processing order
    # the standard error of the sum: the estimated blocks' errors in quadrature
    rel_se = torch.pow(10.0, 0.5 * log10_sum(torch.stack(sq_se), 0) - log_s) if sq_se else None
    log_e = log10_state_energy([st[0] for st in states[1:]])  # T x (B, H) -> (T,)
    step_bad = _first_nonfinite_state(states)
    nonfinite = None
    if step_bad is not None:  # the run itself overflowed
        nonfinite = {"quantity": "hidden_state", "timestep": step_bad[0], "sequence": step_bad[1]}
    elif bad is not None:
        step_bad = (bad["step"], bad["sequence"])
        nonfinite = {"quantity": "param_sensitivity", "param": bad["param"], "timestep": bad["step"],
                     "sequence": bad["sequence"]}

    def timed(a: Tensor | None) -> np.ndarray | None:
        """Processing order -> time order, NaN from the first non-finite step on."""
        if a is None:
            return None
        a = a.clone()
        if step_bad is not None:
            a[step_bad[0]:] = math.nan
        return (a.flip(0) if run.reverse else a).numpy()

    if nonfinite is not None and run.reverse:
        nonfinite["timestep"] = T - 1 - nonfinite["timestep"]
    for b in blocks.values():
        b["log10_sensitivity"], b["rel_se"] = timed(b["log10_sensitivity"]), timed(b["rel_se"])
    estimated = [n for n in names if modes[n] == "hutchinson"]
    exact = [n for n in names if n not in estimated]
    method = "exact" if not estimated else f"estimate (Hutchinson, K={k})" + (
        f": {', '.join(estimated)}; exact: {', '.join(exact)}" if exact else "")
    log_s, log_e = timed(log_s), timed(log_e)
    with np.errstate(invalid="ignore"):
        ratio = log_s - log_e
    return SensitivityResult(t=np.arange(T), log10_sensitivity=log_s, log10_state_energy=log_e, log10_ratio=ratio,
                             method=method, params=names, blocks=blocks, rel_se=timed(rel_se),
                             nonfinite=nonfinite, sequences=states[0][0].shape[0], k=k)


METHODS = {"unitwise": "exact (unit-wise, one all-ones tangent)", "basis": "exact (tangent basis, {n} tangents)",
           "rows": "exact (unit rows, {n} tangents)",
           "hutchinson": "estimate (Hutchinson, K={k})"}


def _mode(cell, name: str, shape, H: int, exact_max: int) -> str:
    """How a block is measured: unit-wise (one tangent), unit rows (n / H tangents), a basis, or Hutchinson."""
    n = math.prod(shape)
    if name in set(getattr(cell, "unitwise_params", ()) or ()):
        return "unitwise"
    if name in set(getattr(cell, "unit_rows", ()) or ()) and shape and shape[0] % H == 0 and n // H <= exact_max:
        return "rows"
    return "basis" if n <= exact_max else "hutchinson"


def _tangents(mode: str, n: int, H: int, k: int) -> int:
    """Tangents per sequence (Hutchinson) or shared by the sequences (the exact modes) of a block of n entries."""
    return {"unitwise": 1, "rows": n // max(H, 1), "basis": n}.get(mode, k)


def _first_nonfinite_state(states: list) -> tuple[int, int] | None:
    """(processing step, sequence) of the first state that is not finite (the run overflowed), or None."""
    for s in range(len(states) - 1):
        ok = torch.stack([torch.isfinite(v).all(-1) for v in states[s + 1]]).all(0)  # (B,)
        if not bool(ok.all()):
            return s, int((~ok).nonzero()[0])
    return None
# ---- in an analysis: the stage and its cost ----------------------------------------------------------------
def sensitivity_stage(config, runs: list, x: Tensor, progress=None) -> SensitivityResult:
    """The analysed layer's forward direction of an analysis (``analysis.experiment``): its recurrent
    parameters, the Rademacher tangents seeded by ``config.seed``."""
    a = config.analysed_layer
    return param_sensitivity(runs[a][0], x=layer_input(runs, a, x), seed=config.seed, progress=progress)


STEP_OVERHEAD = 1  # a tangent pass's step costs about one engine loop step's overhead (limits.STEP_FLOPS, 0.2 ms):
# measured 0.11-0.18 ms per step and block (RNN, LSTM, GRU, LRU, minGRU at H = 4, T = 2000, one thread; 2 ms when
# each step was one vmapped jvp of the whole step); torch.func's first use in a process adds ~1.3 s more
JVP_FACTOR = 6  # flops per parameter entry, tangent and step: the tangent's matmuls, the renormalisation


def sensitivity_cost(config, cell: str, input_size: int, k: int = DEFAULT_K,
                     exact_max: int = EXACT_MAX) -> tuple[float, float]:
    """(bytes, flops) of ``sensitivity_stage`` for one cell of ``config`` without running it: the cell is built on
    the meta device (its parameter shapes only), or given built (an nn.Module: your own step's cell). Per block
    of n entries, N tangents (1 unit-wise, n by basis, K Hutchinson), each for B sequences and T steps::

        flops = T B sum_blocks N (JVP_FACTOR P + 2 n [Hutchinson: a tangent per sequence]) + T chunks STEP_OVERHEAD
                STEP_FLOPS,      P = the cell's parameter entries
        bytes = a chunk's tangents (<= 1.5 CHUNK_BYTES), one window (tangent_pass.window_bytes), the logs (B T; K B T
                for a Hutchinson block): the run's states are read where they are, a window at a time in float64
    """
    from rnn_models.cells import cell_type

    from .limits import STEP_FLOPS
    T, B, H = config.seq_len, config.batch_size, config.hidden_size
    D = 2 if config.bidirectional else 1
    I = input_size if config.analysed_layer == 0 else D * H
    if isinstance(cell, nn.Module):  # a built cell (your own step's OwnCell): its own parameters
        c = cell
    else:
        with torch.device("meta"):
            c = cell_type(cell).from_config(I, H, config.model_config(I, cell), torch.float64)
    P = sum(p.numel() for p in c.parameters())
    S = len(c.state_names) * H
    G = projected_width(c, I)
    pdict = dict(c.named_parameters())
    flops, mem, chunks = 0.0, 0.0, 0
    for name in default_params(c):
        n = pdict[name].numel()
        mode = _mode(c, name, pdict[name].shape, H, exact_max)
        hutch = mode == "hutchinson"
        N = _tangents(mode, n, H, k)
        flops += T * B * N * (JVP_FACTOR * P + (2 * n if hutch else 0))
        per_tangent = tangent_bytes(B, S, n, hutch)
        n_chunk = min(N, chunk_size(per_tangent))
        chunks += math.ceil(N / n_chunk)
        # a chunk's tangents, its window, the logs: (K, B, T) and their temporaries (Hutchinson), else (B, T)
        logs = 6 * k * B * T * 8 if hutch else 4 * B * T * 8
        mem = max(mem, n_chunk * per_tangent * 1.5 + window_bytes(c, n_chunk, B, S, G, T) + logs)
    return mem, flops + T * chunks * STEP_OVERHEAD * STEP_FLOPS
