"""Atlas: sweep one or two settings over seeds and draw the phase diagram (lines with a band over seeds, or a
heatmap). A preset or the sidebar's settings as the base. Before the click the page shows the sweep's whole estimate
and refuses one over the host's limits; on the click it runs as a background job through the scheduler's door, one
point per slot (dashboard/sweeps.py), with a progress bar and its place in line, and is cached for every session
(``analysis.sweep``; bigger sweeps: the command line shown). It stops when the visitor leaves the Atlas tab."""
from __future__ import annotations

import json
import sys
import uuid
from collections import OrderedDict

import streamlit as st

from analysis.atlas_presets import ATLAS_PRESETS, DEFAULT_ATLAS
from analysis.figures.atlas import atlas_figure
from analysis.sweep import make_plan
from analysis.sweep_points import ANALYSIS_METRICS, METRIC_LABELS, OPT_IN_METRICS, TRAINING_METRICS
from rnn_models.config import ConfigError

from analysis.guides import VIEW_GUIDES

from .. import background, own_step, sweeps
from . import atlas_own
from ..exporting import MIME, chart, deck_button, zip_button
from .common import guide

TITLE = "Atlas"
VIEW = "atlas"
GUIDE = VIEW_GUIDES[VIEW]
DECK = "atlas_deck"  # session state: (heading, config, {name: figure}, stamp) of the sweep drawn last ("all views")
CUSTOM = "custom"
MAX_PAGE_RUNS = 400
AXIS_FIELDS = ("init_scale", "forget_bias", "seq_len", "hidden_size", "cell", "activation", "init", "lr",
               "clip_threshold", "batch_size", "num_layers", "horizon_threshold", "train_steps")
DEFAULT_SPECS = {"init_scale": "0.5:2.0:7", "forget_bias": "-2:4:7", "seq_len": "log:10:200:5",
                 "hidden_size": "16,32,64", "cell": "rnn,lstm,gru", "activation": "tanh,relu",
                 "init": "default,orthogonal,spectral", "lr": "log:1e-4:1e-1:4", "clip_threshold": "0.1,1,10",
                 "batch_size": "4,16", "num_layers": "1,2", "horizon_threshold": "log:1e-4:1e-1:4",
                 "train_steps": "50,100,200"}


@st.cache_resource(show_spinner=False)
def _store() -> OrderedDict:
    """Finished sweeps shared by every session, keyed by the plan (newest 16 kept)."""
    return OrderedDict()


def _remember(key: str, d: dict) -> None:
    store = _store()
    store[key] = d
    store.move_to_end(key)
    while len(store) > 16:
        store.popitem(last=False)


def _custom(ctx):
    """The sidebar's settings as the base, with axes, seeds and metrics from widgets."""
    base = ctx.config.replace(compare=()) if ctx.config.compare else ctx.config
    if ctx.config.compare:
        st.caption(f"Base: the sidebar's settings with cell = {base.cell} (a sweep runs one cell: vary cell to "
                   "compare cells).")
    c = st.columns([2, 3, 2, 3, 1])
    f1 = c[0].selectbox("Axis 1", AXIS_FIELDS, key="atlas_f1")
    s1 = c[1].text_input("values (start:stop:count, log:…, or a,b,c)", DEFAULT_SPECS[f1], key=f"atlas_s1_{f1}")
    f2 = c[2].selectbox("Axis 2 (optional)", ("none",) + AXIS_FIELDS, key="atlas_f2")
    s2 = c[3].text_input("values", DEFAULT_SPECS.get(f2, ""), key=f"atlas_s2_{f2}", disabled=f2 == "none")
    seeds = c[4].number_input("seeds", 1, 20, 2, key="atlas_seeds")
    vary = (f"{f1}={s1}",) + ((f"{f2}={s2}",) if f2 != "none" else ())
    trained = base.train_steps > 0 and base.task != "random"
    sens = st.checkbox("Also the parameter sensitivity log10 ‖∂h/∂θ‖²/‖h‖² (forward-mode: slower)",
                       key="atlas_sensitivity")
    metrics = tuple(m for m in ANALYSIS_METRICS if sens or m not in OPT_IN_METRICS) + \
        (TRAINING_METRICS if trained else ())
    if not trained:
        st.caption("Training metrics (final loss) need a task with targets and Training → steps > 0 in the sidebar.")
    return base, vary, int(seeds), metrics


def _plan_key(plan) -> str:
    return json.dumps({"config": plan.config.to_dict(), "axes": {a.field: list(a.values) for a in plan.axes},
                       "seeds": list(plan.seeds), "metrics": list(plan.metrics)}, sort_keys=True)


def _session() -> str:
    if "gdlab_session" not in st.session_state:
        st.session_state["gdlab_session"] = uuid.uuid4().hex
    return st.session_state["gdlab_session"]


def _run(plan, vary, key: str) -> dict | None:
    """Start (or watch) the sweep's background job and draw its progress until it ends; its result, or None
    (the reason drawn) when it stopped."""
    return _watch(sweeps.start(_session(), plan, vary, key))


def _watch(job) -> dict | None:
    bar = st.progress(0.0, text="Sweep: starting")
    while not job.poll(0.25):
        bar.progress(job.fraction, text=job.text[:300])
    if job.error is not None:
        bar.empty()
        msg = " ".join(str(job.error).split())[:400]
        st.error(f"The sweep stopped: {msg}. Press the button again to retry.")
        return None
    d = job.value
    bar.progress(1.0, text=f"Sweep: {len(d['points'])}/{len(d['points'])} runs in {d['timings']['total_s']:.1f} s")
    return d


def _heading(d: dict, choice: str) -> tuple[str, list[str]]:
    """The deck's title slide: the Atlas preset's title and what to look for, or the axes of a custom sweep."""
    from analysis.config import ExperimentConfig
    from analysis.guides import describe
    axes = " × ".join(f"{f} ({len(v)} values)" for f, v in d["axes"].items())
    base = f"Sweep: {axes} × {len(d['seeds'])} seeds · base: " + (
        f"your cell {d['step']['step_file']} on the task's inputs" if "step" in d else
        describe(ExperimentConfig.from_dict(d["config"])))
    if choice in ATLAS_PRESETS:
        p = ATLAS_PRESETS[choice]
        return f"Atlas: {p.title}", list(p.lines) + [base]
    return "Atlas: " + " × ".join(d["axes"]), [base]


def deck_figures() -> tuple | None:
    """(heading, config dict, {name: figure}, stamp) of the sweep this session drew last, or None (for the deck of all
    views; read during the script run)."""
    return st.session_state.get(DECK)


def _draw(d: dict, default_metric: str, ctx, choice: str, key: str) -> None:
    c = st.columns([3, 2, 5])
    metric = c[0].selectbox("Metric", d["metrics"], index=d["metrics"].index(default_metric)
                            if default_metric in d["metrics"] else 0, format_func=lambda m: METRIC_LABELS[m],
                            key="atlas_metric")
    kinds = ("auto", "lines", "heatmap") if len(d["axes"]) == 2 else ("auto",)
    kind = c[1].radio("Draw", kinds, horizontal=True, key="atlas_kind") if len(kinds) > 1 else "auto"
    fig = atlas_figure(d, metric, kind)
    chart(VIEW, f"atlas-{metric}", fig)
    c = st.columns([2, 3])
    c[0].download_button("Download the sweep (JSON: every point and the summary)", data=json.dumps(d, allow_nan=False),
                         file_name="sweep.json", mime=MIME["json"], key="dl_atlas_sweep", on_click="ignore")
    with c[1]:
        zip_button(VIEW, {f"atlas-{metric}": fig}, _ConfigView(d["config"]))
    figs = {f"atlas-{metric}": fig}
    heading = _heading(d, choice)
    stamp = f"{key}|{metric}|{kind}"
    st.session_state[DECK] = (heading, d["config"], figs, stamp)
    deck_button(VIEW, {VIEW: figs}, ctx.settings, "Slide deck of this view (.pptx)", "atlas.pptx", heading=heading,
                config=d["config"], stamp=stamp)
    for n in d["notes"]:
        st.caption(f"Note: {n}")


class _ConfigView:
    """What zip_button reads of a config: to_dict()."""

    def __init__(self, d: dict):
        self._d = d

    def to_dict(self) -> dict:
        return self._d


def render(ctx) -> None:
    guide(GUIDE)
    names = list(ATLAS_PRESETS) + [CUSTOM] + own_step.choices()  # + "own" when the server names a step
    # the option values are the URL's (?atlas=irnn): a format_func would put the long titles into the link
    choice = st.selectbox("Atlas preset (edge-of-chaos, forget-bias, irnn, adding-vs-T, or custom axes)", names,
                          index=names.index(DEFAULT_ATLAS), key="atlas", bind="query-params",
                          format_func=lambda n: "Your cell" if n == atlas_own.OWN else n)
    if choice == atlas_own.OWN:
        st.markdown("**Your cell: a sweep of your own step**")
        return atlas_own.render(ctx, sys.modules[__name__])
    st.markdown(f"**{ATLAS_PRESETS[choice].title if choice in ATLAS_PRESETS else 'Custom: the sidebar settings, your axes'}**")
    if choice == CUSTOM:
        base, vary, seeds, metrics = _custom(ctx)
        default_metric = metrics[0]
    else:
        p = ATLAS_PRESETS[choice]
        base, vary, seeds, metrics, default_metric = p.config, p.vary, p.seeds, p.metrics, p.metric
        st.info("**What to look for.** " + "  \n".join(p.lines))
    try:
        plan = make_plan(base, vary, seeds, metrics)
    except ConfigError as e:
        st.error(f"This sweep cannot run: {' '.join(str(e).split())}")
        return
    n = len(plan.keys())
    axes = " × ".join(f"{a.field} ({len(a.values)} values)" for a in plan.axes)
    st.caption(f"{axes} × {seeds} seed{'s' if seeds > 1 else ''} = {n} runs")
    if choice != CUSTOM:
        with st.expander("The same sweep on the command line"):
            st.code(ATLAS_PRESETS[choice].command(), language="bash")
    key = _plan_key(plan)
    d = _store().get(key)
    if d is None:
        if n > MAX_PAGE_RUNS:
            st.warning(f"{n} runs is more than this page runs ({MAX_PAGE_RUNS}): use the command line above, with "
                       "--workers N or --executor ray.")
            return
        try:
            cost = sweeps.check_whole(plan)
        except ConfigError as e:  # LimitExceeded: the whole sweep is over the host's limits
            st.error(f"This sweep cannot run here: {' '.join(str(e).split())}")
            return
        running = st.session_state.get("atlas_running") == key and background.find(sweeps.job_key(key)) is not None
        slot = st.empty()
        if not running and not slot.button(f"Run the sweep ({n} runs)", key="atlas_run", type="primary"):
            st.caption(f"Whole sweep: {sweeps.describe(cost)}. It runs on this server when you click, one run at a "
                       "time behind pages' first charts; finished sweeps are kept for every visitor.")
            return
        slot.empty()
        st.session_state["atlas_running"] = key  # reruns while it runs (other widgets) keep watching it
        try:
            d = _run(plan, vary, key)
        except ConfigError as e:
            st.error(f"This sweep cannot run here: {' '.join(str(e).split())}")
            d = None
        st.session_state.pop("atlas_running", None)
        if d is None:
            return
        _remember(key, d)
    _draw(d, default_metric, ctx, choice, key)
