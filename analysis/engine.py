"""The engine: the analysis of one built model on one batch (``analyse_model``) and its result.

    data (task batch or the user's inputs) -> network (+ a task readout) -> one forward/backward pass for
    ||dL/dh_t|| -> per-step Jacobians and their suffix products for the analysed layer -> W_hh spectra,
    Lyapunov exponents, memory horizon, gate activity -> ``ExperimentResult`` (``to_dict()``: the command line's
    JSON contract).

The entry points that choose what to build (a built-in configuration, a user's files, several cells side by side)
are in ``analysis.experiment``; ``own_model`` and ``comparison`` build on this module and never on those, so the
imports run one way: experiment -> (own_model, comparison) -> engine.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from rnn_models.cells import cell_type
from rnn_models.config import ConfigError
from rnn_models.network import RecurrentNetwork

from .config import ExperimentConfig
from .finite import input_notes
from .gradient_stage import DTYPES, _detached, gradient_stage
from .gradients import GradientResult
from .compute_views import only_for, parse_views, views_for_only
from .jacobian_route import route_note, spectra_of
from .jacobians import JacobianResult, report_lags
from .progress import Reporter, reporter
from .spectra import weight_spectra
from .input_files import load_inputs
from .tasks import TaskBatch, TaskSpec, make_batch, random_readout, task_spec



class TaskModel(nn.Module):
    """A recurrent network and the task's linear readout y_t = W_hy h_t + b_y.

    For the ``random`` probe the readout is the fixed unit vector u (not trained), so dL/dh_{T-1} = u.
    """

    def __init__(self, config: ExperimentConfig, spec: TaskSpec, input_size: int):
        super().__init__()
        # parameters are created in the experiment's dtype (no float32 rounding of float64 initial values) by
        # passing dtype= explicitly: torch.set_default_dtype is process-wide and would leak into other sessions
        dtype = DTYPES[config.dtype]
        self.net = RecurrentNetwork(config.model_config(input_size), dtype=dtype)
        D = 2 if config.bidirectional else 1
        self.readout = nn.Linear(D * config.hidden_size, spec.output_size, dtype=dtype)
        gen = torch.Generator().manual_seed(config.seed + 1)
        with torch.no_grad():
            if spec.kind == "probe":
                self.readout.weight.copy_(random_readout(D * config.hidden_size, config.seed + 1, torch.float64))
                self.readout.bias.zero_()
                self.readout.requires_grad_(False)
            else:
                bound = 1 / math.sqrt(D * config.hidden_size)
                self.readout.weight.copy_((torch.rand(self.readout.weight.shape, generator=gen,
                                                      dtype=torch.float64) * 2 - 1) * bound)
                self.readout.bias.zero_()

    def forward(self, x: Tensor, *, views: bool = False, initial=None, detach_every: int = 0):
        trace = self.net(x, initial, views=views, detach_every=detach_every)
        return trace, self.readout(trace.outputs)  # y: (T, B, O)


def build_batch(config: ExperimentConfig) -> TaskBatch:
    """The experiment's data: the task's seeded batch, or the user's inputs with the random probe loss."""
    dtype = DTYPES[config.dtype]
    if config.inputs_path:
        if config.task != "random":
            raise ConfigError(f"inputs_path works with task 'random' (the probe loss); got task={config.task!r}")
        try:
            x = load_inputs(config.inputs_path, dtype)
        except ValueError as e:
            raise ConfigError(f"inputs_path: {e}") from None
        spec = task_spec("random", x.shape[0], x.shape[2])
        return TaskBatch(spec=spec, inputs=x, targets=None)
    input_size = config.input_size or 8
    try:
        spec = task_spec(config.task, config.seq_len, input_size, config.text)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if config.task != "random" and config.input_size not in (None, spec.input_size):
        raise ConfigError(f"input_size={config.input_size} does not match task {config.task!r}, whose inputs have "
                          f"size {spec.input_size}: leave input_size unset")
    try:
        return make_batch(config.task, config.seq_len, config.batch_size, seed=config.seed, input_size=input_size,
                          dtype=dtype, text=config.text)
    except ConfigError:
        raise
    except ValueError as e:  # the task's own range checks (e.g. copy needs seq_len >= 21)
        raise ConfigError(str(e)) from None


def resolve(config: ExperimentConfig) -> tuple[ExperimentConfig, TaskBatch, dict | None]:
    """Fill in what the data and a loaded state_dict decide; returns (resolved config, batch, state_dict)."""
    sd = None
    if config.state_dict_path:  # a trained recurrent module on one of the tasks (its readout starts untrained)
        from .own_files import fill_from_file, read_file, read_state_dict
        if config.readout or config.embedding or config.targets_path or config.h0_path or config.batch_first:
            raise ConfigError(f"readout, embedding, targets, h0 and batch_first work with task 'random' (your own "
                              f"inputs and loss); got task={config.task!r}")
        where = f"state_dict_path={config.state_dict_path!r}"
        config, fm = fill_from_file(config, read_state_dict(read_file(config.state_dict_path, "state_dict_path"),
                                                            where), where)
        sd = fm.rnn
    batch = build_batch(config)
    T = batch.inputs.shape[0]
    config = config.replace(input_size=batch.spec.input_size, seq_len=T, batch_size=batch.inputs.shape[1])
    if sd is not None and config.task != "random" and config.input_size != batch.spec.input_size:
        raise ConfigError(f"the loaded model reads input_size={config.input_size}, task {config.task!r} needs "
                          f"{batch.spec.input_size}")
    return config, batch, sd


@dataclass
class ExperimentResult:
    """One analysis. Units, one convention: ``grad.*`` are plain values (||dL/dh_t||, geometric means over the
    batch, backprop in the config's dtype, so float32 may underflow to 0) and ``grad.log10_grad_norm`` is their
    log10 twin (exact in log space where the chain applies, see ``grad.method``); ``jac.*`` are log10 (see
    ``JacobianResult``). ``to_dict()`` has both for each: ``x`` (plain) and ``log10_x``.
    """

    config: ExperimentConfig
    spec: TaskSpec
    grad: GradientResult
    truncated: GradientResult | None
    jac: JacobianResult
    jac_backward: JacobianResult | None
    spectra: dict
    gates: dict[str, np.ndarray]  # gate -> (T, H) for sequence 0 of the analysed layer
    hidden: np.ndarray  # (T, H) h_t of sequence 0, analysed layer
    saturation: dict
    memory_horizon: int | None
    notes: list[str]
    timings: dict = field(default_factory=dict)
    views: tuple[str, ...] = ()  # what was computed (analysis.compute_views)
    provenance: dict = field(default_factory=dict)  # what actually ran (analysis.provenance.run_record)
    param_sensitivity: object | None = None  # analysis.param_sensitivity.SensitivityResult (view "sensitivity")

    @property
    def nonfinite(self) -> dict | None:
        return self.grad.nonfinite or (self.jac.nonfinite if self.jac is not None else None)

    @property
    def complete(self) -> bool:
        """False for a ``only="gradients"`` result (no Jacobian products, no memory horizon)."""
        return self.jac is not None

    @property
    def horizon_detail(self) -> dict | None:
        """The memory horizon with its resolution and the sequences it rests on (None without Jacobians).

        {"lag": first reported lag whose ||dh_{T-1}/dh_{T-1-k}|| (geometric mean) is below the threshold (or None),
         "after_lag": the reported lag before it (the crossing lies in (after_lag, lag]), "exact": every lag and
         every sequence, "sequences": used, "of": the batch, "text": one line saying all of it}"""
        j = self.jac
        if j is None:
            return None
        c, h = self.config, self.memory_horizon
        every_lag = len(j.lag) == c.seq_len
        prev = None if h is None else max((k for k in j.lag if k < h), default=None)
        b, B = j.batch_analysed, c.batch_size
        if h is None:
            where = f"none within the {len(j.lag)} lags reported (up to {j.lag[-1]})"
        elif every_lag or prev is None or prev == h - 1:
            where = f"lag {h}"
        else:
            where = f"between lags {prev + 1} and {h} (log-spaced lags)"
        seqs = f"{b} of {B} sequences" if b < B else f"all {B} sequences"
        exact = every_lag and b == B
        text = (f"memory horizon (||dh_T-1/dh_T-1-k|| < {c.horizon_threshold:g}): {where}, from {seqs} (geometric "
                "mean)" + ("" if exact else "; exact: jacobian_lags='all', jacobian_batch=0 (jacobian_detail='exact')"))
        return {"lag": h, "after_lag": prev, "exact": exact, "sequences": b, "of": B, "text": text}

    def to_dict(self) -> dict:
        from .result_json import result_to_dict
        return result_to_dict(self)

    def figures(self, view: str, histories: dict | None = None) -> dict:
        """The dashboard's plotly figures of one view ({name: go.Figure}); views: analysis.figures.ALL_VIEWS."""
        from .figures import ALL_VIEWS, view_figures
        if view not in ALL_VIEWS:
            raise ValueError(f"view={view!r} is not known: choose one of {', '.join(ALL_VIEWS)}")
        return view_figures(view, {self.config.cell: self}, histories=histories)

    def __repr__(self) -> str:
        from .summary import summary_lines
        return "ExperimentResult(\n  " + "\n  ".join(summary_lines(self)) + "\n)"

    def _repr_html_(self) -> str:
        from .summary import summary_html
        return summary_html(self)


def _memory_horizon(jac: JacobianResult, threshold: float) -> int | None:
    below = np.nonzero(jac.spectral_norm < math.log10(threshold))[0]
    return int(jac.lag[below[0]]) if len(below) else None


def _saturation(config: ExperimentConfig, gates: dict, hidden: np.ndarray) -> dict:
    """Fractions of saturated units: |h| > 0.99 (tanh), gates within 0.01 of 0 or 1, and dead ReLUs."""
    out = {}
    kind = cell_type(config.cell)
    if "activation" in kind.settings:  # phi of the vanilla RNN
        if config.activation == "tanh":
            out["h_saturated"] = float((np.abs(hidden) > 0.99).mean())
        elif config.activation == "sigmoid":
            out["h_saturated"] = float(((hidden < 0.01) | (hidden > 0.99)).mean())
        elif config.activation == "relu":
            out["dead_units"] = float((hidden <= 0).all(0).mean())  # never active over the sequence
            out["inactive"] = float((hidden <= 0).mean())
    for name, g in gates.items():
        if name in kind.gates_shown:  # the gates in (0, 1)
            out[f"{name}_saturated"] = float(((g < 0.01) | (g > 0.99)).mean())
    return out


@torch.no_grad()
def _gates(run, T: int) -> dict[str, np.ndarray]:
    xp, st = run.stacked(0, T)  # (T, B, G), states before each step (T, B, H) each
    xp, st = xp[:, :1], tuple(s[:, :1] for s in st)  # the first sequence
    g = run.cell.gates(xp, st)
    shown = set(run.cell.gate_names) | set(run.cell.gates_shown)  # W_hh's blocks, and a cell without W_hh's gates
    return {k: v[:, 0].double().numpy() for k, v in g.items() if k in shown}


ONLY = (None, "all", "gradients")


def _check_only(only) -> None:
    if only not in ONLY:
        raise ConfigError(f"only={only!r} must be None (everything), 'all' or 'gradients'")


def choose(only: str | None, views) -> tuple[str | None, tuple[str, ...] | None]:
    """(only, views) from the two switches: ``only="gradients"`` keeps the W_hh spectra (the dashboard's first
    chart); ``views`` names exactly what is computed."""
    if views is None:
        return only, None
    views = parse_views(views)
    return ("gradients" if only == "gradients" else only_for(views)), views


def analyse_model(config: ExperimentConfig, batch: TaskBatch, model: nn.Module, *, loss_fn=None, initial=None,
                  notes: tuple[str, ...] = (), t0: float | None = None, rep: Reporter | None = None,
                  only: str | None = None, views: tuple[str, ...] | None = None) -> ExperimentResult:
    """The analysis of a built model: ``model(x, views=, initial=, detach_every=) -> (Trace, y)`` with ``.net``.

    ``loss_fn(y)`` -> the loss, per sequence (B,) or a scalar (default: the task's ``probe_loss``); ``initial``
    the initial states per layer and direction (default zeros); ``notes`` go first in the result's notes.
    ``views`` (analysis.compute_views) None = what ``only`` implies; without "spectrum" or "jacobians" the W_hh
    eigensolvers are skipped too (``result.spectra`` is {}).
    """
    weight_spectra_too = views is None or any(v in views for v in ("spectrum", "jacobians"))
    views = views_for_only(only) if views is None else views
    t0 = time.perf_counter() if t0 is None else t0
    rep = rep or reporter(None)
    loss_steps = batch.spec.loss_steps if config.loss_steps == "auto" else config.loss_steps
    a = config.analysed_layer
    t1 = time.perf_counter()
    grads_only = only == "gradients"
    sens = "sensitivity" in views  # the opt-in view: the bar's last part when asked for
    rep(0.02, "forward and backward pass: ||dL/dh_t||", force=True)
    trace, grad, truncated, underflow_note = gradient_stage(config, batch, model, loss_fn=loss_fn, initial=initial,
                                                            loss_steps=loss_steps,
                                                            progress=rep.stage(0.02, (0.3 if sens else 0.9)
                                                                               if grads_only else 0.15))
    t2 = time.perf_counter()
    T = batch.inputs.shape[0]
    lags = report_lags(T, config.jacobian_lags, config.num_log_lags)
    runs = [[_detached(r) for r in layer] for layer in trace.runs]
    jac = jac_b = None
    if not grads_only:
        # the Jacobian products dominate the cost: they get most of the bar (the backward direction its half)
        hi = 0.6 if sens else 0.95
        mid = (0.15 + hi) / 2 if config.bidirectional else hi
        rep(0.15, f"Jacobian products d h_t / d h_(t-k), {len(lags)} lags", force=True)  # named even when quick
        jac = spectra_of(runs[a][0], config, lags, rep.stage(0.15, mid))  # exact, or thin where cheaper (fast)
        if config.bidirectional:
            jac_b = spectra_of(runs[a][1], config, lags, rep.stage(mid, hi, "backward direction: "))
    sensitivity, ts = None, time.perf_counter()
    if sens:  # d h_t / d theta by forward-mode JVPs (analysis.param_sensitivity)
        from .param_sensitivity import sensitivity_stage
        sensitivity = sensitivity_stage(config, runs, batch.inputs, rep.stage(0.3 if grads_only else 0.6, 0.96))
    ts = time.perf_counter() - ts
    rep(0.96, "W_hh spectra and gate activity", force=True)
    t3 = time.perf_counter()
    cell = model.net.layers[a][0]
    gates = _gates(runs[a][0], T)
    hidden = runs[a][0].state_series(0)[:, 0].double().numpy()  # (T, H)
    notes = list(notes) + config.model_config(config.input_size).inapplicable()
    notes[:0] = input_notes(model, batch.inputs, initial)  # non-finite weights / inputs, named (analysis.finite)
    if underflow_note:
        notes.append(underflow_note)
    if grads_only:
        notes.append("gradients only: the Jacobian products, spectra per lag and memory horizon were not computed")
    elif jac.method.startswith("autograd"):
        notes.append("per-step Jacobians by autograd (vmap jacrev): layer norm has no closed form here; exact, slower")
    if route_note(config, jac):
        notes.append(route_note(config, jac))
    if jac is not None and config.jacobian_batch and config.jacobian_batch < config.batch_size:
        notes.append(f"Jacobian spectra over the first {jac.batch_analysed} of {config.batch_size} sequences")
    if jac is not None and config.jacobian_lags == "log" and len(lags) < T:
        notes.append(f"Jacobian spectra at {len(lags)} log-spaced lags (exact at those lags)")
    res = ExperimentResult(
        config=config, spec=batch.spec, grad=grad, truncated=truncated, jac=jac, jac_backward=jac_b,
        spectra=weight_spectra(cell) if weight_spectra_too else {},
        gates=gates, hidden=hidden,
        saturation=_saturation(config, gates, hidden),
        memory_horizon=None if jac is None else _memory_horizon(jac, config.horizon_threshold), notes=notes,
    )
    res.views = views
    res.param_sensitivity = sensitivity
    from .provenance import run_record
    res.provenance = run_record(res)
    res.timings = {"setup_s": t1 - t0, "gradients_s": t2 - t1, "jacobians_s": t3 - t2 - ts,
                   "total_s": time.perf_counter() - t0,
                   **({"sensitivity_s": ts} if sens else {})}
    rep(1.0, "done", force=True)
    return res
