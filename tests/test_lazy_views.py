"""The dashboard computes per view (issue 9): a long analysis draws the page from the gradient pass first; views
that read the Jacobian products wait for the full analysis, the others are drawn at once and the full analysis
follows as a background job (dashboard/background.py) that a new setting supersedes and that is cached only
when it finished.

"Long" is made cheap by setting compute.FIRST_CHART_GFLOP to 0 (tiny sizes); every test uses its own seed so
that no other test has cached its config. AppTest follows the page's ``st.rerun()`` within one ``run()``: a view's
render is wrapped to record whether it was drawn from the gradient pass (``partial``) or the full results.
"""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

import analysis.experiment as experiment
import dashboard.background as background
import dashboard.compute as compute
import dashboard.exporting as exporting
import dashboard.scheduler as scheduler
from analysis.config import ExperimentConfig
from analysis.figures import VIEWS, view_figures
from analysis.progress import Cancelled
from dashboard.views import cell_state, gradient_flow, jacobians, spectrum

from test_app import SMALL, app, array, figure, messages, ok, trace

TABS = ["Gradient flow", "Jacobians", "Spectrum", "Cell state", "Live training", "Activations"]


def count_runs(monkeypatch) -> list:
    """run_comparison's calls, recorded by their ``only`` argument (None: the full analysis)."""
    calls = []
    real = experiment.run_comparison

    def counting(config, **kw):
        calls.append(kw.get("only"))
        return real(config, **kw)

    monkeypatch.setattr(experiment, "run_comparison", counting)
    return calls


@pytest.fixture
def long(monkeypatch):
    """Every analysis counts as long; run_comparison's calls are recorded (the ``only`` argument)."""
    calls = count_runs(monkeypatch)
    monkeypatch.setattr(compute, "FIRST_CHART_GFLOP", 0.0)
    return calls


def record_renders(monkeypatch, *modules) -> list:
    """[(view, drawn from the gradient pass alone)] in the order the views were rendered."""
    seen = []
    for m in modules:
        real = m.render

        def render(ctx, real=real, m=m):
            seen.append((m.VIEW, compute.partial(ctx.results)))
            return real(ctx)
        monkeypatch.setattr(m, "render", render)
    return seen


def seed_of(key: str) -> int | None:
    """The seed of a cached analysis (its key starts with the config's JSON); None for other entries of the shared
    cache (an earlier test's uploads: 'upload:<sha256>')."""
    head = key.split("|")[0]
    return json.loads(head)["seed"] if head.startswith("{") else None


def cache_keys(seed: int) -> list[bool]:
    """For each cached result of this seed: True if it is the gradient pass alone."""
    return [k.endswith("|only=gradients") for k in list(scheduler.CACHE._items) if seed_of(k) == seed]


def config_of(at) -> ExperimentConfig:
    return ExperimentConfig.from_dict(figure(at, "grad_norm")["layout"]["meta"]["config"])


def fail_full(monkeypatch):
    """The full analysis raises (the gradient pass still runs): the page stays at its gradient-pass state."""
    real = experiment.run_comparison

    def failing(config, **kw):
        if kw.get("only") is None:
            raise RuntimeError("full analysis refused by the test")
        return real(config, **kw)
    monkeypatch.setattr(experiment, "run_comparison", failing)


# ---- the gradient-flow view first, then the full analysis in the background -------------------------------------
def test_gradient_flow_is_drawn_from_the_gradient_pass_then_the_full_results(long, monkeypatch):
    seen = record_renders(monkeypatch, gradient_flow, jacobians)
    at = ok(app(seed="31", **SMALL))
    assert long == ["gradients", None]  # the gradient pass, then the full analysis (in the background job)
    assert seen == [("gradient-flow", True), ("gradient-flow", False)]  # drawn at once, then again when complete
    cfg = config_of(at)
    assert sorted(cache_keys(31)) == [False, True]  # the gradient pass and the full result both ended up cached
    fig = figure(at, "grad_norm")
    for cell in cfg.cells:
        ref = experiment.run_experiment(cfg.for_cell(cell)).grad.grad_norm
        np.testing.assert_allclose(array(trace(fig, "grad_norm", cell)["y"]), ref, rtol=1e-5)
    horizon = " ".join(m.value for m in at.markdown if "Memory horizon" in m.value)
    assert "computing" not in horizon and ("k = " in horizon or "none within" in horizon)
    at.run()  # cached now: no gradient pass, no recomputation
    ok(at)
    assert long == ["gradients", None]


def test_the_gradient_pass_page_says_what_is_pending(monkeypatch):
    monkeypatch.setattr(compute, "FIRST_CHART_GFLOP", 0.0)
    fail_full(monkeypatch)
    at = ok(app(seed="32", **SMALL))
    horizon = " ".join(m.value for m in at.markdown if "Memory horizon" in m.value)
    assert "computing…" in horizon and "Jacobian products" in horizon
    assert "full analysis refused by the test" in messages(at)  # the job's error, one line, no traceback
    cfg = config_of(at)
    assert cache_keys(32) == [True]  # the gradient pass only: nothing half-done is cached
    fig = figure(at, "grad_norm")  # the gradient pass's chart, with the engine's own values
    grads = experiment.run_comparison(cfg, only="gradients")
    for cell in cfg.cells:
        np.testing.assert_allclose(array(trace(fig, "grad_norm", cell)["y"]), grads[cell].grad.grad_norm, rtol=1e-6)
    assert not any("gradients only" in c.value for c in at.caption)  # the engine's note is replaced by the header


def test_every_tab_renders_from_partial_results_without_an_exception(monkeypatch):
    """With the full analysis failing, the views that need no Jacobian products draw from the gradient pass, and
    those that do show the one-line error instead of a half-drawn chart."""
    monkeypatch.setattr(compute, "FIRST_CHART_GFLOP", 0.0)
    fail_full(monkeypatch)
    at = ok(app(seed="33", compare="rnn,lstm", **SMALL))
    cfg = config_of(at)
    for tab in TABS:
        at.session_state["view"] = tab
        ok(at.run())
        names = {s for s in (figure_names(at))}
        if tab in ("Jacobians", "Spectrum", "Cell state"):
            assert not names, (tab, names)
            assert "full analysis refused by the test" in messages(at), tab
        elif tab == "Gradient flow":
            assert "grad_norm" in names
        elif tab == "Activations":
            assert names == set(view_figures("activations", experiment.run_comparison(cfg, only="gradients")))


def figure_names(at) -> list[str]:
    import json
    return [json.loads(c.proto.spec)["layout"].get("meta", {}).get("figure") for c in at.get("plotly_chart")]


# ---- views that need the Jacobian products wait for them -----------------------------------------------------------
@pytest.mark.parametrize("tab, module", [("Jacobians", jacobians), ("Spectrum", spectrum), ("Cell state", cell_state)])
def test_a_view_with_jacobians_waits_for_the_full_analysis(long, monkeypatch, tab, module):
    seen = record_renders(monkeypatch, gradient_flow, module)
    at = AppTest_with_view(tab, seed=str(40 + TABS.index(tab)))
    assert long == ["gradients", None]
    assert seen == [(module.VIEW, False)]  # never drawn from the gradient pass
    cfg = config_of_results(at)
    full = experiment.run_comparison(cfg)
    want = view_figures(module.VIEW, full)
    drawn = set(figure_names(at))
    assert drawn and drawn <= set(want)
    for name in drawn:  # every drawn trace holds the full analysis's numbers
        same_data(figure(at, name), want[name])
    horizon = " ".join(m.value for m in at.markdown if "Memory horizon" in m.value)
    for cell in cfg.cells:
        d = full[cell].horizon_detail
        assert (f"k = {d['lag']}" if d["lag"] is not None else "none within") in horizon
        if d["lag"] is not None and d["after_lag"] is not None and d["after_lag"] < d["lag"] - 1:
            assert f"crossed between lags {d['after_lag'] + 1} and {d['lag']}" in horizon  # the lags it rests on
    d = full[cfg.cells[0]].horizon_detail
    assert (f"from {d['sequences']} of {d['of']} sequences" in horizon) == (d["sequences"] < d["of"]), horizon


def same_data(spec: dict, ref) -> None:
    """The drawn figure's traces (plotly JSON) carry the reference figure's y values (NaN where not finite)."""
    assert len(spec["data"]) == len(ref.data)
    for t, r in zip(spec["data"], ref.data):
        if r.y is None or "y" not in t:
            continue
        want = np.array([np.nan if v is None else v for v in np.asarray(r.y, dtype=object).ravel()], float)
        got = np.array([np.nan if v is None else v for v in np.asarray(array(t["y"]), dtype=object).ravel()], float)
        np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)


def AppTest_with_view(tab: str, **params):
    from streamlit.testing.v1 import AppTest

    from test_app import APP
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in {**SMALL, **params}.items():
        at.query_params[k] = v
    at.session_state["view"] = tab
    return ok(at.run())


def config_of_results(at) -> ExperimentConfig:
    import json
    for c in at.get("plotly_chart"):
        meta = json.loads(c.proto.spec)["layout"].get("meta", {})
        if "config" in meta:
            return ExperimentConfig.from_dict(meta["config"])
    raise AssertionError("no chart with its config")


def test_a_short_analysis_is_computed_once(monkeypatch):
    calls = count_runs(monkeypatch)
    ok(app(seed="34", **SMALL))
    assert calls == [None]  # below FIRST_CHART_GFLOP: one full computation, no gradient pass, no job


# ---- the deck of all views gets full results ----------------------------------------------------------------------
def test_the_deck_of_all_views_gets_full_results_from_a_partial_page(long, monkeypatch):
    made = []
    real = exporting.deck_button

    def recording(key, views, *a, **kw):
        if key == "all_views":
            made.append(views)
        return real(key, views, *a, **kw)
    monkeypatch.setattr(exporting, "deck_button", recording)
    at = ok(app(seed="35", **SMALL))
    assert len(made) == 2  # the gradient-pass page's button, then the complete page's
    cfg = config_of(at)
    full = experiment.run_comparison(cfg)
    for k in list(scheduler.CACHE._items):  # the button of the partial page computes what is missing
        if seed_of(k) == 35:
            scheduler.CACHE._items.pop(k)
    for views in made:
        out = views()  # called at click time, outside the script run (no Streamlit there)
        assert set(out) == {v for v in VIEWS if view_figures(v, full)}
        assert {"jacobians", "spectrum", "cell-state"} <= set(out)
        mine, ref = out["jacobians"], view_figures("jacobians", full)
        assert set(mine) == set(ref)
        for name in ref:
            for a, b in zip(mine[name].data, ref[name].data):
                if getattr(b, "y", None) is not None and np.asarray(b.y).dtype.kind == "f":
                    np.testing.assert_allclose(np.asarray(a.y, float), np.asarray(b.y, float), rtol=1e-6)


# ---- background jobs: superseded and abandoned runs stop, and nothing half-done is cached ------------------------
def slow_part(key: str, steps: int = 400, started: threading.Event | None = None):
    """A fake analysis part: reports progress every 10 ms for ``steps`` steps, then returns {"key": key}."""
    def run(progress):
        for i in range(steps):
            if started is not None:
                started.set()
            progress(i / steps, f"step {i}")
            time.sleep(0.01)
        return {"key": key}
    return (key, "", run)


def test_a_new_setting_supersedes_the_running_job():
    started = threading.Event()
    old = background.watch("s1", "old", lambda job: background.run_parts(job, [slow_part("test-old", 2000, started)]))
    assert started.wait(10)
    new = background.watch("s1", "new", lambda job: background.run_parts(job, [slow_part("test-new", 5)]))
    assert old.cancelled
    assert new.done.wait(30) and new.value == [{"key": "test-new"}]
    assert old.done.wait(5) and isinstance(old.error, Cancelled)  # it stopped long before its 20 s
    assert old.value is None
    assert scheduler.CACHE.get("test-old") is None  # nothing half-done is cached
    assert scheduler.CACHE.get("test-new") == {"key": "test-new"}


def test_a_job_watched_by_another_session_goes_on():
    started = threading.Event()
    job = background.watch("a", "shared", lambda j: background.run_parts(j, [slow_part("test-shared", 50, started)]))
    assert background.watch("b", "shared", lambda j: None) is job  # the same settings share one job
    assert started.wait(10)
    background.drop("a")
    assert not job.cancelled
    while not job.poll(0.1):  # b keeps watching
        pass
    assert job.value == [{"key": "test-shared"}]


def test_an_abandoned_job_stops(monkeypatch):
    monkeypatch.setattr(background, "LEASE_S", 0.3)
    job = background.watch("gone", "abandoned", lambda j: background.run_parts(j, [slow_part("test-gone", 2000)]))
    assert job.done.wait(10)  # nobody polls: cancelled after the lease
    assert isinstance(job.error, Cancelled) and scheduler.CACHE.get("test-gone") is None


def test_the_gradient_pass_runs_with_more_sequences_than_the_jacobian_batch(long):
    """The default preset's B=16 is above jacobian_batch: the gradient pass must not read the Jacobians' notes."""
    at = ok(app(seed="36", seq_len="12", hidden_size="6", batch_size="8"))  # jacobian_batch is 4
    assert long == ["gradients", None]
    assert not any("gradient pass alone failed" in c.value for c in at.caption), [c.value for c in at.caption]


def test_a_tab_switch_keeps_the_sessions_job_and_a_new_setting_drops_it(long, monkeypatch):
    """The page's wiring: every run drops the session's jobs of other settings before its gradient pass."""
    keys = []
    real = background.watch

    def recording(session, key, compute_):
        keys.append((session, key))
        return real(session, key, compute_)
    monkeypatch.setattr(background, "watch", recording)
    at = ok(app(seed="37", **SMALL))
    (session, key), = keys  # the full analysis ran as this session's job
    release = threading.Event()
    job = background.watch(session, key, lambda j: release.wait(30))  # a stand-in still running for the settings
    try:
        at.session_state["view"] = "Activations"
        ok(at.run())
        assert not job.cancelled  # same settings: a tab switch keeps the job
        at.slider(key="seq_len").set_value(13).run()
        ok(at)
        assert job.cancelled  # a new setting drops it
    finally:
        release.set()
