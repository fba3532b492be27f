"""The Atlas of "Your cell": a sweep over the step whoever started the server named (``gdlab dashboard --step
FILE.py:NAME [--step-state FILE.pt] [--h0 FILE]``: GDLAB_STEP, GDLAB_STEP_STATE, GDLAB_STEP_H0), offered beside
the presets only then (``dashboard.own_step.offered``). Nothing a visitor types names a file or code.

A point is ``analysis.step_sweep.evaluate_step_point``: the step on the sidebar's task's seeded inputs (T, B as the
axes or the sidebar set them, the seed) with the sidebar's analysis settings, i.e. ``analyze(step, x, h0=...)``.
The axes are the task's sizes (seq_len, batch_size) and analysis settings. Before the click the whole estimate
(``analysis.step_sweep.point_cost_fn`` summed by ``sweep_cost.check_sweep``) is shown and refused over the
host's limits; on the click the sweep runs as a background job, each point in a slot of the door in this server
process (never on Ray: the file is on this machine)."""
from __future__ import annotations

import hashlib
import os

import streamlit as st

from analysis.config import ExperimentConfig
from analysis.own_step_files import H0_ENV, STATE_ENV, STEP_ENV
from rnn_models.config import ConfigError

from .. import background, scheduler, sweeps
from ..own_step import TASK_FIELDS

OWN = "own"  # the Atlas choice's value (its label: "Your cell")
AXES = ("seq_len", "batch_size", "horizon_threshold", "lyapunov_k", "num_log_lags")
SPECS = {"seq_len": "log:10:200:5", "batch_size": "4,16", "horizon_threshold": "log:1e-4:1e-1:4",
         "lyapunov_k": "1,2,4", "num_log_lags": "8,16,32"}


def spec() -> dict:
    """The step's spec from the server's environment (no inputs file: the sidebar's task gives them)."""
    return {"step": os.environ.get(STEP_ENV), "state": os.environ.get(STATE_ENV) or None,
            "h0": os.environ.get(H0_ENV) or None, "inputs": None}


class _StepDoor(sweeps.DoorExecutor):
    """The door's executor with your step's per-point estimate, each point in this process."""

    def __init__(self, job: background.Job, cost_fn):
        super().__init__(job)
        self.cost_fn = cost_fn

    def run(self, fn, tasks: list):
        for i, task in enumerate(tasks):
            cost = self.cost_fn(ExperimentConfig.from_dict(task["config"]), task["metrics"])
            with scheduler.SLOTS.hold(background.waiter(self.job, "Sweep: "), visitor=self.job.owner,
                                      kind=scheduler.BACKGROUND, cost=cost, label="this sweep point of your cell"):
                self.job.check()
                result = fn(task)
            yield i, result


def inputs(ctx):
    """(base config, vary, seeds, metrics) from the sidebar's task and analysis settings and this view's widgets."""
    from analysis.step_sweep import ANALYSIS_AXES
    from analysis.sweep_points import OPT_IN_METRICS
    from analysis.step_sweep import STEP_METRICS
    base = ExperimentConfig.from_dict({f: getattr(ctx.config, f) for f in TASK_FIELDS + ANALYSIS_AXES + ("device",)})
    c = st.columns([2, 3, 2, 3, 1])
    f1 = c[0].selectbox("Axis 1", AXES, key="atlas_own_f1")
    s1 = c[1].text_input("values (start:stop:count, log:…, or a,b,c)", SPECS[f1], key=f"atlas_own_s1_{f1}")
    f2 = c[2].selectbox("Axis 2 (optional)", ("none",) + AXES, key="atlas_own_f2")
    s2 = c[3].text_input("values", SPECS.get(f2, ""), key=f"atlas_own_s2_{f2}", disabled=f2 == "none")
    seeds = c[4].number_input("seeds", 1, 20, 2, key="atlas_own_seeds")
    sens = st.checkbox("Also the parameter sensitivity log10 ‖∂h/∂θ‖²/‖h‖² (forward-mode: slower)",
                       key="atlas_own_sensitivity")
    metrics = tuple(m for m in STEP_METRICS if sens or m not in OPT_IN_METRICS)
    vary = (f"{f1}={s1}",) + ((f"{f2}={s2}",) if f2 != "none" else ())
    return base, vary, int(seeds), metrics


def start(session: str, plan, vary, key: str, sp: dict, cost_fn) -> background.Job:
    """The sweep's background job (one per plan; the session's other sweep dropped)."""
    def run(job: background.Job) -> dict:
        from analysis.step_sweep import step_sweep

        def progress(done, total, eta, point):
            left = f" · about {eta:.0f} s left" if eta is not None and done < total else ""
            job.progress(done / max(1, total), f"Sweep of your cell: {done}/{total} runs{left}")
        return step_sweep(sp["step"], plan.config, vary, state=sp["state"], h0=sp["h0"], seeds=len(plan.seeds),
                          metrics=plan.metrics, executor=_StepDoor(job, cost_fn), progress=progress)
    return background.watch(session, sweeps.job_key(key), run, lane="sweep")


def render(ctx, atlas) -> None:
    """The "Your cell" choice of the Atlas (``atlas``: the Atlas view's module, whose store, runner and drawing
    this reuses)."""
    from analysis.step_sweep import _load, check_axes, check_metrics, point_cost_fn
    from analysis.sweep import make_plan
    from analysis.sweep_cost import check_sweep
    from analysis.limits import current
    st.caption("Your cell, named by whoever started this server (gdlab dashboard --step): each run is "
               "analyze(step, x, h0) on the sidebar's task's inputs (T, B, seed) with its analysis settings.")
    base, vary, seeds, metrics = inputs(ctx)
    sp = spec()
    try:
        check_axes(vary, False)
        check_metrics(metrics)
        loaded = _load(sp)[0]
        plan = make_plan(base, vary, seeds, metrics)
        cost_fn = point_cost_fn(sp)
        n = len(plan.keys())
        st.caption(" × ".join(f"{a.field} ({len(a.values)} values)" for a in plan.axes) +
                   f" × {seeds} seed{'s' if seeds > 1 else ''} = {n} runs")
        key = "own|" + hashlib.sha256((loaded.digest + atlas._plan_key(plan)).encode()).hexdigest()
        d = atlas._store().get(key)
        if d is None:
            if n > atlas.MAX_PAGE_RUNS:
                st.warning(f"{n} runs is more than this page runs ({atlas.MAX_PAGE_RUNS}): use python -m analysis "
                           f"sweep --step {loaded.label} --vary ... --workers N.")
                return
            cost = check_sweep(plan, workers=1, limits=current(), cost_fn=cost_fn)
    except ConfigError as e:  # LimitExceeded included
        st.error(f"This sweep of your cell cannot run: {' '.join(str(e).split())}")
        return
    if d is None:
        running = st.session_state.get("atlas_running") == key and background.find(sweeps.job_key(key)) is not None
        slot = st.empty()
        if not running and not slot.button(f"Run the sweep of your cell ({n} runs)", key="atlas_run", type="primary"):
            st.caption(f"Whole sweep: {sweeps.describe(cost)}. It runs on this server when you click, one run at a "
                       "time behind pages' first charts; finished sweeps are kept for every visitor.")
            return
        slot.empty()
        st.session_state["atlas_running"] = key
        job = start(atlas._session(), plan, vary, key, sp, cost_fn)
        d = atlas._watch(job)
        st.session_state.pop("atlas_running", None)
        if d is None:
            return
        atlas._remember(key, d)
    atlas._draw(d, metrics[0], ctx, OWN, key)
