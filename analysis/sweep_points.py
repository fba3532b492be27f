r"""One point of a sweep: a config and a seed in, a flat dict of metrics out (never raises).

Metrics (all of the network at initialization, except the training ones):

    lyapunov_max            lambda_1 = lim (1/n) ln ||J_{T-1} ... J_1 v||: the largest Lyapunov exponent of the
                            analysed layer's state map, natural log per step, by the QR method over the T-1 steps
                            of the sequence (geometric mean over the analysed sequences); needs lyapunov_k >= 1.
                            > 0 chaotic (perturbations grow), < 0 ordered (they die out).
    memory_horizon          first lag k with ||dh_{T-1}/dh_{T-1-k}||_2 < horizon_threshold (None: never below it
                            within the T-1 lags; the point then has ``censored: {"memory_horizon": T-1}``,
                            read "beyond T-1", and says so in ``notes``)
    grad_ratio              log10 ||dL/dh_0|| - log10 ||dL/dh_{T-1}||  (< 0 vanishing, > 0 exploding)
    spectral_radius         max |lambda(W_hh)| (gated cells: the largest over the gate blocks)
    param_sensitivity       log10 S_{T-1} / E_{T-1}: the last state's sensitivity to the recurrent parameters,
                            mean ||dh/dtheta||_F^2, over its energy mean ||h||^2 (analysis.param_sensitivity;
                            Zucchet & Orvieto 2024: grows as (1 - lambda^2)^-2 as memory lambda -> 1). Opt-in
                            (OPT_IN_METRICS): a point computes it only when asked, by forward-mode JVPs
    final_loss              mean training loss of the last min(10, N) of N = train_steps steps
    final_loss_over_chance  final_loss / the task's chance-level loss (< 1: learned something)

A point whose run fails records ``status: "failed"`` and the reason; a non-finite value (overflow) records
``status: "nonfinite"`` and where it appeared; the metrics that could not be computed are None.
"""
from __future__ import annotations

import math
import time
import traceback

import numpy as np

from rnn_models.config import ConfigError

from .config import ExperimentConfig

ANALYSIS_METRICS = ("lyapunov_max", "memory_horizon", "grad_ratio", "spectral_radius", "param_sensitivity")
OPT_IN_METRICS = ("param_sensitivity",)  # not in a sweep unless named (the dashboard's custom sweep: a checkbox)
# the views (analysis.compute_views) each analysis metric reads
METRIC_VIEWS = {"lyapunov_max": "jacobians", "memory_horizon": "jacobians", "grad_ratio": "gradients",
                "spectral_radius": "spectrum", "param_sensitivity": "sensitivity"}
TRAINING_METRICS = ("final_loss", "final_loss_over_chance")
METRICS = ANALYSIS_METRICS + TRAINING_METRICS
FINAL_LOSS_WINDOW = 10

METRIC_LABELS = {
    "lyapunov_max": "largest Lyapunov exponent (ln / step)",
    "memory_horizon": "memory horizon (steps)",
    "grad_ratio": "log10 ||dL/dh_0|| / ||dL/dh_T-1||",
    "spectral_radius": "spectral radius of W_hh",
    "param_sensitivity": "log10 ||dh/dθ||² / ||h||² at T-1",
    "final_loss": "final training loss",
    "final_loss_over_chance": "final loss / chance loss",
}


def _finite(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def point_views(metrics) -> tuple[str, ...] | None:
    """The views a point computes: None (the default analysis, as before) unless an opt-in metric is asked, then
    exactly the views its metrics read."""
    if not any(m in OPT_IN_METRICS for m in metrics):
        return None
    return tuple(dict.fromkeys(METRIC_VIEWS[m] for m in metrics if m in METRIC_VIEWS))


def _analysis_metrics(config: ExperimentConfig, metrics: list[str], point: dict) -> None:
    from .experiment import run_experiment
    views = point_views(metrics)
    r = run_experiment(config) if views is None else run_experiment(config, views=views)  # the default: as before
    result_metrics(r, config, metrics, point)


def result_metrics(r, config: ExperimentConfig, metrics: list[str], point: dict) -> None:
    """The analysis metrics of a result ``r`` (an ExperimentResult) into ``point`` (and its status and notes)."""
    notes = point["notes"]
    if r.nonfinite:
        point["status"] = "nonfinite"
        point["reason"] = f"non-finite value: {r.nonfinite}"
    if "lyapunov_max" in metrics:
        ok = r.jac.lyapunov is not None and len(r.jac.lyapunov) and not r.jac.nonfinite
        point["lyapunov_max"] = _finite(r.jac.lyapunov[0]) if ok else None
        if ok and point["lyapunov_max"] is None and r.jac.lyapunov[0] == -math.inf:
            notes.append("lyapunov_max = -inf: a step's Jacobian is exactly singular (e.g. dead ReLUs), the "
                         "product is 0")
    if "memory_horizon" in metrics:
        point["memory_horizon"] = r.memory_horizon
        if r.memory_horizon is None and not r.jac.nonfinite:
            point["censored"] = {"memory_horizon": int(r.jac.lag[-1])}  # the horizon is beyond this lag
            notes.append(f"memory_horizon > {r.jac.lag[-1]}: ||dh_T-1/dh_T-1-k|| stayed above "
                         f"{config.horizon_threshold:g} at every lag")
    if "grad_ratio" in metrics:
        g = r.grad
        logs = g.log10_grad_norm if g.log10_grad_norm is not None else np.log10(np.asarray(g.grad_norm, float))
        with np.errstate(invalid="ignore"):
            ratio = float(logs[0] - logs[-1])
        point["grad_ratio"] = _finite(ratio)
        if point["grad_ratio"] is None and not r.nonfinite:
            notes.append("grad_ratio undefined: ||dL/dh_0|| is 0 (underflow or a cut path)")
    if "spectral_radius" in metrics:
        point["spectral_radius"] = _finite(max(v["spectral_radius"] for v in r.spectra.values()))
    if "param_sensitivity" in metrics:
        ps = r.param_sensitivity
        point["param_sensitivity"] = _finite(ps.last_log10_ratio)
        if ps.nonfinite and point["status"] == "ok":
            point["status"] = "nonfinite"
            point["reason"] = f"non-finite value: {ps.nonfinite}"
        if ps.rel_se is not None:
            notes.append(f"param_sensitivity: {ps.method}, relative standard error {ps.rel_se[-1]:.2g} at T-1")


def _training_metrics(config: ExperimentConfig, metrics: list[str], point: dict) -> None:
    from .training import Trainer
    tr = Trainer(config)
    tr.run(config.train_steps)
    losses = [rec.loss for rec in tr.records if not rec.skipped]
    if tr.stopped is not None:
        point["status"] = "nonfinite"
        point["reason"] = f"training stopped: non-finite value {tr.stopped}"
        final = None
    else:
        window = losses[-FINAL_LOSS_WINDOW:]
        final = _finite(sum(window) / len(window)) if window else None
    if "final_loss" in metrics:
        point["final_loss"] = final
    if "final_loss_over_chance" in metrics:
        point["final_loss_over_chance"] = None if final is None else final / tr.chance_loss


def evaluate_point(task: dict) -> dict:
    """``task`` = {"config": config dict, "metrics": [...], "key": {field: value, "seed": s}} -> the point.

    The point is the key's fields and seed, each requested metric (None where not computed), ``status``
    (ok | nonfinite | failed), ``reason`` and ``notes``, and ``time_s``. A fresh worker runs on one torch thread.
    """
    from .progress import init_threads
    init_threads(1)  # a fresh worker: one intra-op thread (workers run side by side); a no-op where the process
    # already chose its count (the command line, the dashboard): torch.set_num_threads is process-wide
    t0 = time.perf_counter()
    metrics = list(task["metrics"])
    point = {**task["key"], **{m: None for m in metrics}, "status": "ok", "reason": None, "notes": []}
    try:
        config = ExperimentConfig.from_dict(task["config"])
        if any(m in ANALYSIS_METRICS for m in metrics):
            _analysis_metrics(config, metrics, point)
        if any(m in TRAINING_METRICS for m in metrics):
            _training_metrics(config, metrics, point)
    except Exception as e:  # noqa: BLE001 - a point that fails or crashes is recorded and the sweep goes on
        record_failure(point, e)
    point["time_s"] = round(time.perf_counter() - t0, 4)
    return point


def record_failure(point: dict, e: Exception) -> None:
    """The point failed: status and one-line reason (a setting's ConfigError/ValueError as it is; any other
    exception with the file and line it came from), so the sweep goes on."""
    reason = f"{type(e).__name__}: {' '.join(str(e).split())}"
    if not isinstance(e, ValueError):  # ConfigError is a ValueError
        last = traceback.extract_tb(e.__traceback__)[-1]
        reason += f" ({last.filename.rsplit('/', 1)[-1]}:{last.lineno})"
    point.update(status="failed", reason=reason)
