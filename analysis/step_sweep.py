r"""Sweeps over your own step: ``python -m analysis sweep --step FILE.py:NAME ...`` (the Atlas of "Your cell").

    python -m analysis sweep --step cell.py:MyCell [--step-state w.pt] [--h0 h0.pt] [--inputs x.npy]
                             --vary seq_len=50:400:4 --seeds 3 --metrics memory_horizon,grad_ratio,lyapunov_max

For a fixed step, what can vary is what the dashboard's sidebar gives it (``dashboard/own_step.py``):

    inputs   without --inputs, the task's seeded batch x (T, B, I) = tasks.make_batch(task, seq_len, batch_size,
             seed) (``own_step_files.task_inputs``): the axes seq_len and batch_size, and the seeds (which draw
             x and the probe's direction u); with --inputs FILE, x is the file's and only u varies with the seed
    settings the analysis settings (ANALYSIS_AXES: dtype, horizon_threshold, jacobian_lags, lyapunov_k, ...)

The built-in cells' fields (cell, hidden_size, init, activation, ...) and the training ones are refused in one
line naming the field; so are the metrics a step has no meaning for (spectral_radius: no fixed W_hh; the training
metrics: the step is analysed as given).

A point is ``evaluate_step_point``: the step loaded from FILE.py:NAME in the worker's own process (importing FILE.py
there RUNS ITS CODE, once per worker process), its inputs and h0 made as above, then
``analyse_loaded(loaded, x, h0, seed=s, **settings)``, which is ``analyze(step, x, h0=h0, seed=s, ...)``; the metrics
are read from that result as the built-in cells' are (``sweep_points.result_metrics``). The whole sweep's cost is
``own_step.step_cost`` (+ ``param_sensitivity.sensitivity_cost``) per point, summed by ``sweep_cost.check_sweep``
and checked against the host's limits before the first point runs.
"""
from __future__ import annotations

import os
import time

from rnn_models.config import ConfigError

from .config import ExperimentConfig
from .own_cell import OwnCell
from .own_step import BUILT_IN_ONLY, FILE_FIELDS, STEP_DECIDES
from .sweep_points import TRAINING_METRICS, record_failure

# the analysis settings a sweep over your step may vary (and passes to every point)
ANALYSIS_AXES = ("dtype", "horizon_threshold", "jacobian_batch", "jacobian_detail", "jacobian_lags", "loss_steps",
                 "lyapunov_k", "n_singular", "num_log_lags", "spectra", "truncate")
TASK_AXES = ("seq_len", "batch_size")  # the task's inputs (not with --inputs FILE)
STEP_METRICS = ("lyapunov_max", "memory_horizon", "grad_ratio", "param_sensitivity")
TRAINING = ("optimizer", "lr", "clip", "clip_threshold", "train_steps")
_LOADED: dict = {}  # per process: (spec, state, h0, inputs) -> (LoadedStep, h0 tensor, inputs tensor or None)


def refusal(field: str, inputs: bool) -> str | None:
    """Why ``field`` cannot be a sweep axis of your step (None: it can)."""
    if field in ANALYSIS_AXES or (field in TASK_AXES and not inputs):
        return None
    if field in TASK_AXES:
        return "the --inputs file decides T and B"
    if field == "seed":
        return "use --seeds N (the seeds draw the task's inputs and the probe's direction u)"
    if field in STEP_DECIDES:
        return "your step decides it"
    if field in BUILT_IN_ONLY:
        return "it is a setting of the built-in cells"
    if field in TRAINING:
        return "a sweep of your step does not train it"
    if field in FILE_FIELDS:
        return "your step reads the inputs of the task or of --inputs; a file is not a sweep axis"
    return "not an analysis setting of your step"


def check_axes(vary, inputs: bool) -> None:
    """One ConfigError line for an axis a sweep of your step refuses, naming the field and what may vary."""
    from .sweep import parse_vary
    for v in [vary] if isinstance(vary, str) else vary:
        field = v.split("=", 1)[0].strip().replace("-", "_") if isinstance(v, str) else v.field
        known = field in ExperimentConfig.__dataclass_fields__
        why = refusal(field, inputs) if known else "unknown field"
        if why is not None:
            allowed = (() if inputs else TASK_AXES) + ANALYSIS_AXES
            raise ConfigError(f"--vary {field}: {'not with --step: ' if known else ''}{why}; a sweep of your step varies "
                              f"{', '.join(allowed)}")
        if isinstance(v, str):
            parse_vary(v)  # the field's own one line (unknown field, bad spec)


def check_metrics(metrics) -> None:
    for m in metrics.split(",") if isinstance(metrics, str) else metrics:
        if m == "spectral_radius":
            raise ConfigError("metrics: spectral_radius does not apply to your step: it has no fixed W_hh (its "
                              f"Jacobians are its own at each state); choose from {', '.join(STEP_METRICS)}")
        if m in TRAINING_METRICS:
            raise ConfigError(f"metrics: {m} does not apply to your step (a sweep of your step does not train it); "
                              f"choose from {', '.join(STEP_METRICS)}")


def _stamp(path: str | None):
    try:
        st = os.stat(path) if path else None
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size) if st else None


def _load(spec: dict):
    """(LoadedStep, h0 file's tensor or None, inputs file's tensor or None), once per process and spec."""
    from .own_step_files import load_step, read_arrays, read_h0, split_spec
    files = (split_spec(spec["step"])[0], spec.get("state"), spec.get("h0"), spec.get("inputs"))
    key = (spec["step"], *files[1:], *(_stamp(f) for f in files))  # again when a file changes
    if key not in _LOADED:
        loaded = load_step(spec["step"], spec.get("state"))
        h0 = read_h0(spec.get("h0"), "--h0", loaded.files)
        x = read_arrays(spec.get("inputs"), "--inputs", loaded.files, "inputs")
        if isinstance(x, tuple):
            raise ConfigError("--inputs holds a tuple: the inputs are one array (T, B, I)")
        _LOADED[key] = (loaded, h0, x)
    return _LOADED[key]


def settings_of(config: ExperimentConfig, inputs: bool) -> dict:
    """The analysis settings a point passes to ``analyse_loaded`` (the seed included)."""
    names = ANALYSIS_AXES + ("seed", "device") + (("batch_first",) if inputs else ())
    return {f: getattr(config, f) for f in names}


def point_inputs(config: ExperimentConfig, spec: dict):
    """(loaded, x, h0, seeded) of one point: the task's seeded batch, or the --inputs file's array."""
    from .own_step_files import step_h0, task_inputs
    loaded, h0_file, x = _load(spec)
    seeded = x is None
    if seeded:
        x, _ = task_inputs(config, loaded)
    B = int(x.shape[0 if config.batch_first and not seeded else 1]) if x.dim() >= 2 else 1
    return loaded, x, step_h0(loaded, h0_file, B), seeded


def evaluate_step_point(task: dict) -> dict:
    """``sweep_points.evaluate_point`` for your step: ``task`` also holds ``"step"`` (the spec: step, state, h0,
    inputs). Never raises: a failure is the point's status and reason."""
    from .progress import init_threads
    from .sweep_points import point_views, result_metrics
    init_threads(1)
    t0 = time.perf_counter()
    metrics = list(task["metrics"])
    point = {**task["key"], **{m: None for m in metrics}, "status": "ok", "reason": None, "notes": []}
    try:
        from .own_step_files import analyse_loaded
        config = ExperimentConfig.from_dict(task["config"])
        loaded, x, h0, seeded = point_inputs(config, task["step"])
        r = analyse_loaded(loaded, x, h0, seeded_inputs=seeded, views=point_views(metrics),
                           **settings_of(config, not seeded))
        result_metrics(r, config, metrics, point)
    except Exception as e:  # noqa: BLE001 - a point that fails or crashes is recorded and the sweep goes on
        record_failure(point, e)
    point["time_s"] = round(time.perf_counter() - t0, 4)
    return point


def point_cost_fn(spec: dict):
    """``cost_fn(config, metrics)`` for ``sweep_cost``: ``own_step.step_cost`` of the point's step cell (the
    Jacobian settings resolved as ``check_step`` resolves them) + the sensitivity's forward-mode JVPs when asked."""
    from .engine import DTYPES
    from .limits import Cost
    from .own_step import OwnStepConfig, prepare_state, step_cost
    from .param_sensitivity import sensitivity_cost
    from .sweep_points import point_views
    cells: dict = {}

    def cost(config: ExperimentConfig, metrics) -> Cost:
        loaded, x, h0, seeded = point_inputs(config, spec)
        T, B, I = (x.shape[1], x.shape[0], x.shape[2]) if config.batch_first and not seeded else x.shape
        state, single = prepare_state(h0, int(B), DTYPES[config.dtype])
        H = int(state[0].shape[1])
        ck = (int(I), H, len(state), single, config.dtype)
        if ck not in cells:
            cells[ck] = OwnCell(loaded.step, input_size=int(I), hidden_size=H, k=len(state), single=single,
                                dtype=DTYPES[config.dtype])
        cell = cells[ck]
        cfg = OwnStepConfig.from_dict({**settings_of(config, False), "cell": OwnCell.name, "seq_len": int(T),
                                       "batch_size": int(B), "hidden_size": H, "input_size": int(I)})
        views = point_views(metrics)
        only = "gradients" if views is not None and "jacobians" not in views else None
        c = step_cost(_resolved(cfg, cell, only), cell, only)
        if "param_sensitivity" not in metrics:
            return c
        mem, flops = sensitivity_cost(cfg, cell, int(I))
        return Cost(max(c.memory_bytes, mem), c.flops + flops)
    return cost


def _resolved(cfg, cell, only):
    """The Jacobian settings ``own_step.check_step`` would analyse (auto: light above AUTO_LIGHT_SECONDS)."""
    from .compute_views import AUTO_LIGHT_SECONDS, light
    from .limits import GFLOP_PER_S
    from .own_step import step_cost
    if only == "gradients" or cfg.jacobian_detail not in ("auto", "light"):
        return cfg
    exact = step_cost(cfg.replace(jacobian_detail="exact"), cell, only)
    if cfg.jacobian_detail == "light" or exact.flops / (GFLOP_PER_S * 1e9) > AUTO_LIGHT_SECONDS:
        return light(cfg).replace(spectra="exact")
    return cfg.replace(jacobian_detail="exact")


def step_record(spec: dict, loaded) -> dict:
    """What a resume file records of the step (``analysis.sweep_resume``): FILE.py as given, its absolute path,
    NAME, the sha256 of the file's bytes, and {role: {name, sha256}} of the other files read (--step-state, --h0,
    --inputs)."""
    from .own_step_files import split_spec
    path, name = split_spec(spec["step"])
    files = {role: {"name": rec["name"], "sha256": rec["sha256"]} for role, rec in loaded.files.items()
             if role != "step"}
    return {"path": path, "abspath": loaded.path, "name": name, "sha256": loaded.files["step"]["sha256"],
            "files": files}


def step_sweep(step: str, config: ExperimentConfig, vary, *, state: str | None = None, h0: str | None = None,
               inputs: str | None = None, seeds: int = 1, metrics=("lyapunov_max",), executor: str = "local",
               **kw) -> dict:
    """``sweep`` over your step FILE.py:NAME (the module docstring); ``config`` holds the task and the analysis
    settings. The result is ``sweep``'s, its config's cell ``"own"``, and ``"step"``: the file, NAME and sha256."""
    from .sweep import sweep
    if isinstance(executor, str) and executor != "local":
        raise ConfigError("--executor ray does not apply with --step: the file is on this machine; the points run "
                          "in local processes (--workers N)")
    check_axes(vary, inputs is not None)
    check_metrics(metrics)
    spec = {"step": step, "state": state, "h0": h0, "inputs": inputs}
    loaded = _load(spec)[0]  # the file's problems: one line before anything runs
    d = sweep(config, vary, seeds=seeds, metrics=metrics, executor=executor, point_fn=evaluate_step_point,
              task_extra={"step": spec}, cost_fn=point_cost_fn(spec), resume_step=step_record(spec, loaded), **kw)
    d["config"] = {**d["config"], "cell": OwnCell.name}
    d["step"] = {"step_file": loaded.label, "step_sha256": loaded.digest, "files": loaded.files}
    if inputs is not None and len(d["seeds"]) > 1:
        d["notes"].append(f"the {len(d['seeds'])} seeds change only the random probe's direction u: your step and "
                          "the inputs file are fixed")
    return d


__all__ = ["step_sweep", "step_record", "evaluate_step_point", "check_axes", "check_metrics", "ANALYSIS_AXES", "TASK_AXES",
           "STEP_METRICS"]


def config_of_args(args) -> tuple[ExperimentConfig, dict]:
    """(the sweep's fixed config, the step's spec) from ``sweep --step`` flags; one line for a flag that does not
    go with --step (the built-in cells' settings, training, --config / --preset)."""
    from .__main__ import _flag
    from .step_cli import flags_given
    given = flags_given(args)
    inputs = given.get("inputs_path")
    task = () if inputs else ("task", "text", "input_size")
    ok = set(ANALYSIS_AXES + TASK_AXES + task + ("seed", "device", "threads", "inputs_path", "h0_path")
             + (("batch_first",) if inputs else ()))
    bad = next((f for f in given if f not in ok), None)
    if bad is not None:
        why = refusal(bad, inputs is not None) or "the --inputs file is time-major here"
        if bad in ("task", "text", "input_size"):
            why = "the --inputs file gives your step's inputs"
        raise ConfigError(f"{_flag(bad)} does not apply with --step: {why}")
    if inputs and ({"seq_len", "batch_size"} & set(given)):
        raise ConfigError(f"{_flag(next(f for f in ('seq_len', 'batch_size') if f in given))} does not apply with "
                          "--step and --inputs: the inputs file decides T and B")
    spec = {"step": args.step, "state": args.step_state, "h0": given.pop("h0_path", None), "inputs": inputs}
    return ExperimentConfig.from_dict(given), spec
