r"""sweep(config, vary=[...], seeds=N, metrics=[...]) -> the phase diagram of a setting, over seeds.

    grid     one or two axes ``FIELD=SPEC`` over any config field:
                 start:stop:count        linear  x_i = start + i (stop - start) / (count - 1)
                 log:start:stop:count    log     x_i = start (stop / start)^(i / (count - 1))
                 a,b,c                   a list  (cells, activations, booleans true/false, none)
             times seeds seed .. seed + N - 1  ->  points (values..., seed)
    points   each evaluated by ``sweep_points.evaluate_point`` on an executor (``executors``: local process
             pool or Ray); same seeds -> the same numbers on every executor
    limits   the whole estimate (every point x seed still to run: ``sweep_cost.check_sweep``) is checked against
             the host's limits before the first point; over them, ``LimitExceeded`` and nothing runs
    resume   every finished point is appended to a JSONL file as it completes (``sweep_resume``: a header line
             first); re-running with the same file skips those points and keeps them
    result   {"config", "axes": {field: values}, "seeds", "metrics", "points": [{field: v, "seed": s, metric: x,
             "status", "reason", "notes", "time_s", "censored"?}], "summary": [{field: v, metric: {mean, std,
             min, max, n, censored}, "failed"}],
             "notes", "executor", "timings"}; summary statistics are over the seeds whose value is finite
             (std: population, ddof = 0)

Note: ``from analysis import sweep`` gives this module's function ``sweep``; import helpers from
``analysis.sweep`` (``from analysis.sweep import parse_vary``).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rnn_models.config import ConfigError

from .config import ExperimentConfig
from .executors import WorkerError, make_executor
from .sweep_points import ANALYSIS_METRICS, METRICS, TRAINING_METRICS, evaluate_point
from .sweep_resume import ResumeWriter, key_id, load_resume
from .tasks import task_spec

NOT_SWEPT = {"seed": "use seeds (--seeds N)", "compare": "vary cell instead",
             "inputs_path": "a file is not a sweep axis", "state_dict_path": "a file is not a sweep axis"}
MAX_AXIS_VALUES = 1000
MAX_POINTS = 100_000
MAX_SEEDS = 1000
_HINTS = typing.get_type_hints(ExperimentConfig)
_FIELDS = [f.name for f in dataclasses.fields(ExperimentConfig)]


@dataclass(frozen=True)
class Axis:
    field: str
    values: tuple
    note: str | None = None  # what was assumed (e.g. rounding to integers)


def _base_type(name: str):
    t = _HINTS[name]
    args = [a for a in typing.get_args(t) if a is not type(None)]
    return (args[0] if args else t), type(None) in typing.get_args(t)


def _scalar(name: str, text: str):
    """One list item of a --vary spec, converted to the field's type."""
    typ, optional = _base_type(name)
    s = text.strip()
    if optional and s.lower() in ("none", "null"):
        return None
    try:
        if typ is bool:
            low = s.lower()
            if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError
            return low in ("true", "1", "yes", "on")
        if typ is int:
            v = float(s)
            if not v.is_integer():
                raise ValueError
            return int(v)
        if typ is float:
            return float(s)
    except ValueError:
        kind = {bool: "true or false", int: "an integer", float: "a number"}[typ]
        raise ConfigError(f"--vary {name}: {s!r} is not {kind}") from None
    return s


def _range(name: str, spec: str) -> tuple[list, str | None]:
    """start:stop:count (or log:start:stop:count) -> values (ints rounded and deduplicated for int fields)."""
    typ, _ = _base_type(name)
    log = spec.startswith("log:")
    parts = spec[4:].split(":") if log else spec.split(":")
    shape = "log:start:stop:count" if log else "start:stop:count"
    if len(parts) != 3:
        raise ConfigError(f"--vary {name}={spec}: a range is {shape} (three numbers)")
    if typ not in (int, float):
        raise ConfigError(f"--vary {name}={spec}: {name} is not numeric; list its values (a,b,c)")
    try:
        start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise ConfigError(f"--vary {name}={spec}: a range is {shape} with an integer count") from None
    if not (math.isfinite(start) and math.isfinite(stop)):
        raise ConfigError(f"--vary {name}={spec}: start and stop must be finite numbers")
    if not 1 <= count <= MAX_AXIS_VALUES:
        raise ConfigError(f"--vary {name}={spec}: count={count} is out of range: must be in [1, {MAX_AXIS_VALUES}]")
    if log and (start <= 0 or stop <= 0):
        raise ConfigError(f"--vary {name}={spec}: log spacing needs start > 0 and stop > 0")
    xs = np.geomspace(start, stop, count) if log else np.linspace(start, stop, count)
    if typ is float:
        return [float(x) for x in xs], None
    ints = list(dict.fromkeys(int(round(x)) for x in xs))
    exact = all(float(x).is_integer() for x in xs)
    note = None if exact else f"{name} values rounded to integers: {ints}"
    return ints, note


def parse_vary(spec: str) -> Axis:
    """``FIELD=SPEC`` -> Axis; one-line ConfigError naming the field and what is allowed."""
    if "=" not in spec:
        raise ConfigError(f"--vary {spec!r}: expected FIELD=SPEC, e.g. init_scale=0.5:2.0:16 or cell=rnn,lstm")
    name, body = (s.strip() for s in spec.split("=", 1))
    name = name.replace("-", "_")
    if name not in _FIELDS:
        raise ConfigError(f"--vary {name}: unknown config field; allowed: "
                          f"{', '.join(f for f in _FIELDS if f not in NOT_SWEPT)}")
    if name in NOT_SWEPT:
        raise ConfigError(f"--vary {name}: not a sweep axis ({NOT_SWEPT[name]})")
    if not body:
        raise ConfigError(f"--vary {name}=: no values given")
    if ":" in body:
        values, note = _range(name, body)
    else:
        values, note = [_scalar(name, s) for s in body.split(",") if s.strip()], None
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"--vary {name}={body}: a value is listed twice")
        if len(values) > MAX_AXIS_VALUES:
            raise ConfigError(f"--vary {name}: {len(values)} values; at most {MAX_AXIS_VALUES}")
    if not values:
        raise ConfigError(f"--vary {name}=: no values given")
    return Axis(name, tuple(values), note)


@dataclass(frozen=True)
class Plan:
    config: ExperimentConfig
    axes: tuple[Axis, ...]
    seeds: tuple[int, ...]
    metrics: tuple[str, ...]

    def keys(self) -> list[dict]:
        """Every point's key {field: value, ..., "seed": s}, axis 1 outermost, seeds innermost."""
        combos = itertools.product(*(a.values for a in self.axes), self.seeds)
        return [{**{a.field: v for a, v in zip(self.axes, c[:-1])}, "seed": c[-1]} for c in combos]

    def point_config(self, key: dict) -> ExperimentConfig:
        return self.config.replace(**key)


def make_plan(config: ExperimentConfig, vary, seeds: int = 1, metrics=("lyapunov_max",)) -> Plan:
    """Validate the whole grid before anything runs (every combination of axis values is a valid config)."""
    if not isinstance(config, ExperimentConfig):
        raise ConfigError("config must be an ExperimentConfig")
    axes = tuple(parse_vary(v) if isinstance(v, str) else v for v in ([vary] if isinstance(vary, str) else vary))
    if not 1 <= len(axes) <= 2:
        raise ConfigError(f"vary: give one or two axes (FIELD=SPEC); got {len(axes)}")
    if len({a.field for a in axes}) != len(axes):
        raise ConfigError(f"vary: the field {axes[0].field} is given twice")
    if not isinstance(seeds, int) or isinstance(seeds, bool) or not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(f"seeds={seeds!r} is out of range: must be an integer in [1, {MAX_SEEDS}]")
    if config.seed + seeds - 1 > 2**31 - 1:
        raise ConfigError(f"seeds: seed {config.seed} + {seeds} - 1 exceeds 2^31 - 1")
    metrics = tuple(metrics.split(",")) if isinstance(metrics, str) else tuple(metrics)
    for m in metrics:
        if m not in METRICS:
            raise ConfigError(f"metrics: {m!r} is not a metric; choose from {', '.join(METRICS)}")
    if not metrics or len(set(metrics)) != len(metrics):
        raise ConfigError("metrics: list one or more different metrics")
    n = math.prod(len(a.values) for a in axes) * seeds
    if n > MAX_POINTS:
        raise ConfigError(f"the sweep has {n} points; at most {MAX_POINTS} (fewer values or seeds)")
    plan = Plan(config, axes, tuple(range(config.seed, config.seed + seeds)), metrics)
    for combo in itertools.product(*(a.values for a in axes)):
        try:
            _check_metrics(config.replace(**{a.field: v for a, v in zip(axes, combo)}), metrics)
        except ConfigError as e:
            raise ConfigError(f"--vary {' '.join(f'{a.field}={v}' for a, v in zip(axes, combo))}: {e}") from None
    return plan


def _check_metrics(c: ExperimentConfig, metrics) -> None:
    """What a point needs beyond the config's own checks: the task's ranges and each metric's prerequisites."""
    if not c.inputs_path:
        try:
            task_spec(c.task, c.seq_len, c.input_size or 8, c.text)  # e.g. copy needs seq_len >= 21
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if "lyapunov_max" in metrics and c.lyapunov_k < 1:
        raise ConfigError("metric lyapunov_max needs lyapunov_k >= 1 (--lyapunov-k 1)")
    if any(m in TRAINING_METRICS for m in metrics):
        if c.train_steps < 1:
            raise ConfigError("metrics final_loss / final_loss_over_chance need train_steps >= 1 (--train-steps N)")
        if c.task == "random":
            raise ConfigError("metrics final_loss / final_loss_over_chance need a task with targets "
                              "(--task adding, copy, temporal-order or charlm), not random")
    if c.compare:
        raise ConfigError("compare must be empty in a sweep: vary cell=rnn,lstm,gru instead")


def axis_notes(plan: Plan) -> list[str]:
    """Axes that change nothing for some points (said, never silently dropped): init_scale under an init that
    does not read it, and the model's own "does not apply" notes that name an axis field."""
    notes = []
    for combo in itertools.product(*(a.values for a in plan.axes)):
        c = plan.config.replace(**{a.field: v for a, v in zip(plan.axes, combo)})
        fields = {a.field for a in plan.axes}
        if "init_scale" in fields and c.init in ("default", "chrono"):
            notes.append(f"init_scale has no effect with init={c.init!r} (it scales xavier, orthogonal, identity "
                         "and spectral inits)")
        notes += [n for n in c.model_config(c.input_size or 8).inapplicable() if any(f in n for f in fields)]
    notes += seed_notes(plan)
    return list(dict.fromkeys(notes))


def seed_notes(plan: Plan) -> list[str]:
    """Say when the seeds change nothing: a loaded model on a fixed inputs file (its weights and data are the
    files'; the seed draws only the random probe's direction u, or nothing with the model's own readout loss)."""
    c = plan.config
    if len(plan.seeds) < 2 or not (c.state_dict_path and c.inputs_path):
        return []
    if c.readout:
        return [f"the {len(plan.seeds)} seeds change nothing here: the model's weights, the inputs file and its "
                "readout loss are fixed, so every seed repeats the same numbers (use seeds=1)"]
    return [f"the {len(plan.seeds)} seeds change only the random probe's direction u: the model's weights and the "
            "inputs file are fixed"]


# ---- summary ------------------------------------------------------------------------------------------------
def summarize(plan: Plan, points: list[dict]) -> list[dict]:
    """Per grid point (axis values): each metric's mean, std, min, max and n over the finite seed values, and
    ``censored``: how many seeds had a value beyond the measurable range (memory horizon > T-1)."""
    groups: dict[tuple, list[dict]] = {}
    for p in points:
        groups.setdefault(tuple(repr(p[a.field]) for a in plan.axes), []).append(p)
    out = []
    for combo in itertools.product(*(a.values for a in plan.axes)):
        rows = groups.get(tuple(repr(v) for v in combo), [])
        s = {a.field: v for a, v in zip(plan.axes, combo)}
        for m in plan.metrics:
            xs = np.array([p[m] for p in rows if p.get(m) is not None], dtype=float)
            s[m] = ({"mean": float(xs.mean()), "std": float(xs.std()), "min": float(xs.min()),
                     "max": float(xs.max()), "n": int(len(xs))} if len(xs) else
                    {"mean": None, "std": None, "min": None, "max": None, "n": 0})
        for m in plan.metrics:
            s[m]["censored"] = sum(m in (p.get("censored") or {}) for p in rows)  # values beyond the range
        s["failed"] = sum(p["status"] != "ok" for p in rows)
        out.append(s)
    return out


# ---- the sweep ------------------------------------------------------------------------------------------------
def _failed(key: dict, metrics, reason: str) -> dict:
    return {**key, **{m: None for m in metrics}, "status": "failed", "reason": reason, "notes": [], "time_s": None}


ProgressFn = Callable[[int, int, float | None, dict | None], None]


def sweep(config: ExperimentConfig, vary, seeds: int = 1, metrics=("lyapunov_max",), *, executor: str = "local",
          workers: int = 1, ray_address: str | None = None, resume: str | None = None,
          progress: ProgressFn | None = None, point_fn=evaluate_point, task_extra: dict | None = None,
          cost_fn=None, resume_step: dict | None = None) -> dict:
    """Run the grid (see the module docstring). ``progress(done, total, eta_s, last_point)`` after each point.

    ``point_fn(task)`` evaluates a point (a module-level function; ``task_extra`` is added to every task) and
    ``cost_fn(config, metrics)`` estimates one (``analysis.step_sweep``: your own step's points and costs);
    ``resume_step`` is the step's record in the resume file's header (``analysis.sweep_resume``).

    Bad input raises ConfigError (one line) before anything runs, and so does a whole estimate over the host's
    limits (``LimitExceeded``, see ``analysis.sweep_cost.check_sweep``); a failing point is recorded, never raised.
    """
    plan = make_plan(config, vary, seeds, metrics)
    keys = plan.keys()
    done = load_resume(resume, plan, resume_step) if resume else {}
    todo = [k for k in keys if key_id(k) not in done]
    notes = [a.note for a in plan.axes if a.note] + axis_notes(plan)
    if done:
        notes.append(f"{len(keys) - len(todo)} of {len(keys)} points taken from {os.path.basename(resume)}")
    t0 = time.perf_counter()
    results = dict(done)
    n_total, n_before = len(keys), len(keys) - len(todo)
    if todo:  # the whole estimate (every point x seed still to run) against the host's limits, before any runs
        from .sweep_cost import check_sweep
        check_sweep(plan, todo, workers if executor == "local" and isinstance(workers, int) else 1,
                    cost_fn=cost_fn)
    ex = make_executor(executor, workers, ray_address) if todo else None  # bad arguments: nothing written yet
    writer = None
    try:
        writer = ResumeWriter(resume, plan, resume_step)
        if progress:
            progress(n_before, n_total, None, None)
        if ex is not None:
            tasks = [{"config": plan.point_config(k).to_dict(), "metrics": list(plan.metrics), "key": k,
                      **(task_extra or {})} for k in todo]
            for i, (j, point) in enumerate(ex.run(point_fn, tasks), 1):
                if isinstance(point, WorkerError):
                    point = _failed(todo[j], plan.metrics, f"the worker died: {point}")
                results[key_id(todo[j])] = point
                writer.add(todo[j], point)
                if progress:
                    el = time.perf_counter() - t0
                    progress(n_before + i, n_total, el / i * (len(todo) - i), point)
        described = ex.describe() if ex is not None else {"executor": executor, "workers": workers}
    finally:
        if writer is not None:
            writer.close()
        if ex is not None:
            ex.close()
    points = [results[key_id(k)] for k in keys]
    failed = sum(p["status"] != "ok" for p in points)
    if failed:
        notes.append(f"{failed} of {len(points)} points failed or overflowed (see their status and reason)")
    return {
        "config": plan.config.to_dict(),
        "axes": {a.field: list(a.values) for a in plan.axes},
        "seeds": list(plan.seeds),
        "metrics": list(plan.metrics),
        "points": points,
        "summary": summarize(plan, points),
        "notes": notes,
        "executor": described,
        "timings": {"total_s": time.perf_counter() - t0, "points_run": len(todo)},
    }


__all__ = ["sweep", "parse_vary", "make_plan", "summarize", "Axis", "Plan", "METRICS", "ANALYSIS_METRICS",
           "TRAINING_METRICS"]
