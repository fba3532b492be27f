"""The sensitivity view in an analysis (the opt-in view, its JSON, its cost, the Atlas metric, the figures, the
command line) and in the dashboard (the tab computes it when opened, never for the default page); the numbers
against float64 autograd (test_param_sensitivity's reference)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis import ExperimentConfig, compute_views, limits, run_experiment
from analysis.limits import LimitExceeded, Limits
from test_param_sensitivity import TINY, _reference

# ---- in an analysis: the opt-in view, its JSON, its cost, the Atlas metric, the figures --------------------------


def test_views_sensitivity_is_opt_in_and_exact_on_the_analysed_layer():
    from analysis.experiment import TaskModel, resolve
    cfg = ExperimentConfig(**TINY, num_layers=2, layer=0)
    default = run_experiment(cfg)
    assert default.param_sensitivity is None and default.views == compute_views.DEFAULT_VIEWS
    assert "sensitivity" not in default.views and default.to_dict()["param_sensitivity"] is None
    assert compute_views.parse_views("all") == compute_views.VIEW_NAMES and "sensitivity" in compute_views.VIEW_NAMES
    r = run_experiment(cfg, views="sensitivity")
    assert r.views == ("sensitivity",) and r.jac is None and "sensitivity_s" in r.timings
    ps = r.param_sensitivity
    c, batch, _ = resolve(cfg)
    model = TaskModel(c, batch.spec, c.input_size).to(torch.float64)
    np.testing.assert_allclose(ps.log10_sensitivity, _reference(model.net, batch.inputs, ps.params, layer=0),
                               atol=1e-10)  # the analysed layer (the bottom one) of the same network and data
    d = r.to_dict()
    import json
    json.dumps(d, allow_nan=False)
    p = d["param_sensitivity"]
    assert p["method"] == "exact" and p["params"] == ["weight_hh", "bias_hh"]
    np.testing.assert_allclose(p["log10_ratio"], ps.log10_ratio[:])  # t = 0 is finite here: b_hh moves h_0
    assert set(p["blocks"]) == {"weight_hh", "bias_hh"}
    both = run_experiment(cfg, views="gradients,jacobians,sensitivity")
    np.testing.assert_array_equal(both.param_sensitivity.log10_sensitivity, ps.log10_sensitivity)
    np.testing.assert_array_equal(both.jac.spectral_norm, default.jac.spectral_norm)


def test_the_cost_counts_the_view_and_a_heavy_request_is_refused():
    """The view's forward-mode passes are in the estimate (limits.estimate with views), and a limit between the
    gradients alone and the gradients with the view refuses the view in one line."""
    from analysis.engine import choose
    cfg = ExperimentConfig(**TINY)
    base, more = limits.estimate(cfg), limits.estimate(cfg, views=("sensitivity",))
    assert more.flops > base.flops and more.parts["sensitivity"] > 0 and more.memory_bytes > base.memory_bytes
    grads = limits.estimate(cfg, None, *choose(None, "gradients"))  # what run_experiment checks for each request
    sens = limits.estimate(cfg, None, *choose(None, "sensitivity"))
    assert sens.gflop > 1.25 * grads.gflop and sens.parts["sensitivity"] == more.parts["sensitivity"]
    limits.configure(Limits(max_memory_mb=None, max_gflop=(grads.gflop * sens.gflop) ** 0.5))
    try:
        run_experiment(cfg, views="gradients")  # the gradients alone pass
        with pytest.raises(LimitExceeded) as e:
            run_experiment(cfg, views="sensitivity")
        assert "\n" not in str(e.value) and "GFLOP" in str(e.value)
    finally:
        limits.configure(None)


def test_atlas_metric_param_sensitivity():
    from analysis.sweep import sweep
    from analysis.sweep_cost import point_cost
    from analysis.sweep_points import ANALYSIS_METRICS, METRIC_LABELS, point_views
    assert "param_sensitivity" in ANALYSIS_METRICS and METRIC_LABELS["param_sensitivity"]
    assert point_views(["lyapunov_max", "grad_ratio"]) is None  # the default analysis, as before
    assert point_views(["grad_ratio", "param_sensitivity"]) == ("gradients", "sensitivity")
    base = ExperimentConfig(cell="rnn", activation="linear", init="orthogonal", hidden_size=4, seq_len=30,
                            batch_size=4, dtype="float64")
    assert point_cost(base, ["param_sensitivity"]).flops > point_cost(base, ["grad_ratio"]).flops
    d = sweep(base, ["init_scale=0.5,0.95"], seeds=1, metrics=("param_sensitivity",))
    vals = []
    for pt in d["points"]:
        assert pt["status"] == "ok", pt
        ref = run_experiment(base.replace(init_scale=pt["init_scale"]), views="sensitivity").param_sensitivity
        assert pt["param_sensitivity"] == pytest.approx(ref.log10_ratio[-1], abs=1e-12)
        vals.append(pt["param_sensitivity"])
    assert vals[1] > vals[0]  # longer memory, larger normalised sensitivity


def test_figures_carry_the_numbers_and_name_the_layer():
    from analysis.figures import ALL_VIEWS, OPT_IN_VIEWS, VIEWS, view_figures, visible
    from analysis.guides import VIEW_GUIDES, VIEW_TITLES
    assert "sensitivity" in ALL_VIEWS and "sensitivity" in OPT_IN_VIEWS and "sensitivity" not in VIEWS
    cfg = ExperimentConfig(**{**TINY, "cell": "lstm"}, num_layers=2)
    plain = run_experiment(cfg)
    assert view_figures("sensitivity", {"lstm": plain}) == {}  # not computed: nothing drawn
    r = run_experiment(cfg, views="sensitivity")
    figs = r.figures("sensitivity")
    assert list(figs) == ["sensitivity", "sensitivity_ratio"]
    ps = r.param_sensitivity
    by_role = {t.meta["role"]: t for t in figs["sensitivity"].data if t.meta.get("cell") == "lstm"
               and t.meta["role"] != "log10_sensitivity_block"}
    np.testing.assert_array_equal(by_role["log10_sensitivity"].y, ps.log10_sensitivity)
    np.testing.assert_array_equal(by_role["log10_state_energy"].y, ps.log10_state_energy)
    blocks = [t for t in figs["sensitivity"].data if t.meta["role"] == "log10_sensitivity_block"]
    assert {t.meta["param"] for t in blocks} == {"weight_hh", "bias_hh"}
    ratio = figs["sensitivity_ratio"].data[0]
    np.testing.assert_array_equal(ratio.y, ps.log10_ratio)
    for name, fig in figs.items():
        assert "layer 1 (top) of 2" in visible(fig.layout.title.text), name
        assert "Zucchet" in fig.layout.meta["caption"] or "λ" in fig.layout.meta["caption"]
        assert fig.layout.meta["view"] == "sensitivity" and fig.layout.meta["figure"] == name
    assert VIEW_TITLES["sensitivity"] == "Sensitivity"
    guide = VIEW_GUIDES["sensitivity"]
    assert "Zucchet" in guide and guide.count(". ") + 1 == 2  # two sentences


def test_the_figure_grows_with_its_legend_and_names_theta_once():
    """Two cells with a variant: 4 results x (S, E, 2 blocks) = 16 legend entries under the plot; the figure grows
    by a row's height per two entries past four, so the plot is not squeezed; theta is named only when every
    result has the same (else the per-parameter lines say it)."""
    from analysis.experiment import run_comparison
    from analysis.figures import view_figures
    from analysis.figures.theme import SCREEN_HEIGHT
    cfg = ExperimentConfig(**{**TINY, "compare": ("rnn", "lru")})
    views = "gradients,sensitivity"
    res = {**run_comparison(cfg, views=views),
           **{f"{k} · seed=4": v for k, v in run_comparison(cfg.replace(seed=4), views=views).items()}}
    fig = view_figures("sensitivity", res)["sensitivity"]
    entries = sum(1 for t in fig.data if t.showlegend is not False)
    assert entries == 16 and fig.layout.height == SCREEN_HEIGHT + 22 * (8 - 2)
    assert "θ:" in fig.layout.title.text and "each cell" not in fig.layout.title.text
    one = view_figures("sensitivity", {"rnn": res["rnn"]})["sensitivity"]
    assert "θ = weight_hh, bias_hh:" in one.layout.title.text and one.layout.height == SCREEN_HEIGHT


def test_the_cli_runs_the_view_and_the_export_draws_it(tmp_path, cli_inproc):
    import json
    from analysis.export.bundles import view_figures_of
    out = tmp_path / "r.json"
    # python -m analysis, its main() in this process (conftest.run_main)
    p = cli_inproc("run", "--cell", "gru", "--hidden-size", "3", "--seq-len", "6", "--batch-size", "2", "--dtype",
                   "float64", "--views", "sensitivity", "--json", out)
    assert p.returncode == 0, p.stderr
    d = json.loads(out.read_text())
    assert d["views"] == ["sensitivity"] and d["param_sensitivity"]["method"] == "exact"
    p = cli_inproc("run", "--views", "sensitivty")
    assert p.returncode == 2 and "sensitivity" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    cfg = ExperimentConfig(**TINY)
    assert "sensitivity" not in view_figures_of(cfg)
    assert set(view_figures_of(cfg, views="gradients,sensitivity")["sensitivity"]) == {"sensitivity",
                                                                                       "sensitivity_ratio"}


# ---- the dashboard: the tab computes it when opened, never for the default page ---------------------------------
def _count_views(monkeypatch) -> list:
    """The ``views`` argument of every run_experiment call (the page's analysis and the tab's)."""
    import analysis.experiment as experiment
    calls, real = [], experiment.run_experiment

    def counting(config, **kw):
        calls.append(kw.get("views"))
        return real(config, **kw)
    monkeypatch.setattr(experiment, "run_experiment", counting)
    return calls


def _wants_sensitivity(views) -> bool:
    return views is not None and "sensitivity" in compute_views.parse_views(views)


def test_the_tab_computes_only_when_open_and_draws_the_engines_numbers(monkeypatch):
    from test_app import SMALL, app, array, figure, ok, trace
    calls = _count_views(monkeypatch)
    at = ok(app(compare="rnn,gru", seed="91", **SMALL))
    assert calls and not any(_wants_sensitivity(v) for v in calls)  # the default page: as before
    n = len(calls)
    at.session_state["view"] = "Sensitivity"
    ok(at.run())
    assert [v for v in calls[n:] if _wants_sensitivity(v)] == [("sensitivity",)] * 2  # one per cell
    cfg = ExperimentConfig(**{k: v for k, v in json_config(at).items()})
    for cell in ("rnn", "gru"):
        want = run_experiment(cfg.for_cell(cell), views="sensitivity").param_sensitivity
        np.testing.assert_allclose(array(trace(figure(at, "sensitivity"), "log10_sensitivity", cell)["y"]),
                                   want.log10_sensitivity, rtol=1e-12)
        np.testing.assert_allclose(array(trace(figure(at, "sensitivity_ratio"), "log10_ratio", cell)["y"]),
                                   want.log10_ratio, rtol=1e-12)
    m = len(calls)
    ok(at.run())  # cached: nothing recomputed
    assert not any(_wants_sensitivity(v) for v in calls[m:])


def json_config(at) -> dict:
    import json
    from test_app import figure
    return json.loads(json.dumps(figure(at, "sensitivity")["layout"]["meta"]["config"]))


def test_the_tab_refuses_a_heavy_request_in_one_line():
    from test_app import SMALL, app, messages, ok
    at = ok(app(compare="lstm", seed="92", **SMALL))
    cfg = ExperimentConfig(cell="lstm", seed=92, seq_len=12, hidden_size=6, batch_size=4)
    page = limits.estimate(cfg).gflop
    tab = limits.estimate(cfg, views=("sensitivity",)).gflop
    assert tab > 1.25 * page
    limits.configure(Limits(max_memory_mb=None, max_gflop=(page * tab) ** 0.5))
    try:
        at.session_state["view"] = "Sensitivity"
        ok(at.run())
        msg = messages(at)
        assert "parameter sensitivity cannot be computed" in msg and "GFLOP" in msg, msg
        assert not any("sensitivity" == (s or "") for s in _figure_names(at))
    finally:
        limits.configure(None)


def _figure_names(at) -> list:
    import json
    return [json.loads(c.proto.spec)["layout"].get("meta", {}).get("figure") for c in at.get("plotly_chart")]
