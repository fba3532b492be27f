"""The Atlas: its figure from real sweeps, the dashboard view (AppTest), and (RUN_SLOW=1) each preset's claims."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from analysis import ExperimentConfig
from analysis import sweep as sweep_fn
from analysis.atlas_presets import ATLAS_PRESETS
from analysis.figures.atlas import atlas_figure
from analysis.figures.theme import CELL_COLORS

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
TINY = ExperimentConfig(cell="rnn", init="spectral", hidden_size=8, seq_len=20, batch_size=2,
                        jacobian_lags="log", lyapunov_k=1, n_singular=1)
slow = pytest.mark.skipif(not os.environ.get("RUN_SLOW"), reason="runs every Atlas preset (minutes): RUN_SLOW=1")


def array(v):
    """A plotly JSON array (plain list, or base64 {"dtype", "bdata"} as Streamlit sends them) as numpy."""
    if isinstance(v, dict) and "bdata" in v:
        import base64
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]).newbyteorder("<"))
    return np.asarray(v, dtype=float)


def roles(fig, role):
    return [t for t in fig.data if isinstance(t.meta, dict) and t.meta.get("role") == role]


@pytest.fixture(scope="module")
def one_axis():
    return sweep_fn(TINY, "init_scale=0.5:1.5:3", seeds=3, metrics=("lyapunov_max", "memory_horizon"))


def test_one_axis_mean_band_seeds_and_reference(one_axis):
    d = one_axis
    fig = atlas_figure(d, "lyapunov_max")
    (mean,), (band,), (dots,) = roles(fig, "mean"), roles(fig, "band"), roles(fig, "seeds")
    assert list(mean.x) == [0.5, 1.0, 1.5]
    assert np.allclose(mean.y, [s["lyapunov_max"]["mean"] for s in d["summary"]])
    hi = [s["lyapunov_max"]["max"] for s in d["summary"]]
    lo = [s["lyapunov_max"]["min"] for s in d["summary"]]
    assert np.allclose(band.y, hi + lo[::-1]) and list(band.x) == [0.5, 1.0, 1.5, 1.5, 1.0, 0.5]
    assert sorted(dots.y) == sorted(p["lyapunov_max"] for p in d["points"])
    assert any(s.y0 == 0 for s in fig.layout.shapes)  # the edge of chaos
    assert "spectral radius" in fig.layout.xaxis.title.text
    meta = fig.layout.meta
    assert meta["view"] == "atlas" and meta["sweep"]["points"] == d["points"] and meta["config"] == d["config"]
    exported = json.loads(__import__("analysis.export", fromlist=["x"]).figure_json(fig))
    assert exported["meta"]["sweep"]["summary"][0]["lyapunov_max"]["n"] == 3
    with pytest.raises(ValueError, match="grad_ratio"):
        atlas_figure(d, "grad_ratio")
    with pytest.raises(ValueError, match="two axes"):
        atlas_figure(d, "lyapunov_max", "heatmap")


def test_censored_horizons_are_drawn_at_the_bound(one_axis):
    fig = atlas_figure(one_axis, "memory_horizon")
    cens = [p for p in one_axis["points"] if p.get("censored")]
    assert cens, "the tiny sweep should have a horizon beyond T-1 at g = 1.5"
    (tri,) = roles(fig, "censored")
    assert list(tri.y) == [19] * len(cens) and list(tri.x) == [p["init_scale"] for p in cens]
    s = next(s for s in one_axis["summary"] if s["init_scale"] == 1.5)
    assert s["memory_horizon"]["censored"] >= 1 and s["memory_horizon"]["censored"] + s["memory_horizon"]["n"] == 3


def test_two_axes_lines_per_cell_and_heatmap():
    d = sweep_fn(TINY, ["cell=rnn,gru", "init_scale=0.5,1.0,1.5"], seeds=1, metrics=("grad_ratio",))
    fig = atlas_figure(d, "grad_ratio")
    means = roles(fig, "mean")
    assert [t.name for t in means] == ["RNN", "GRU"] and means[1].line.color == CELL_COLORS["gru"]
    assert np.allclose(means[1].y, [s["grad_ratio"]["mean"] for s in d["summary"] if s["cell"] == "gru"])
    hm = atlas_figure(d, "grad_ratio", "heatmap").data[0]
    z = np.array(hm.z, dtype=float)  # (cells, scales)
    assert z.shape == (2, 3) and hm.zmid == 0
    assert z[1, 2] == pytest.approx(next(s for s in d["summary"] if s["cell"] == "gru" and s["init_scale"] == 1.5)
                                     ["grad_ratio"]["mean"])


def test_two_long_numeric_axes_give_a_heatmap():
    d = sweep_fn(TINY, ["init_scale=0.5:1.5:7", "hidden_size=4,5,6,7,8,9,10"], metrics=("spectral_radius",))
    fig = atlas_figure(d, "spectral_radius")
    assert fig.data[0].type == "heatmap" and np.allclose(np.array(fig.data[0].z)[:, 0], np.linspace(0.5, 1.5, 7))


# ---- the dashboard -----------------------------------------------------------------------------------------
def atlas_app():
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in {"seq_len": "12", "hidden_size": "6", "batch_size": "4", "compare": "rnn"}.items():
        at.query_params[k] = v
    at.run()
    at.session_state["view"] = "Atlas"
    return at.run()


def test_atlas_view_renders_every_preset():
    at = atlas_app()
    assert not at.exception
    for name, p in ATLAS_PRESETS.items():
        at.selectbox(key="atlas").set_value(name).run()
        assert not at.exception, (name, [e.value for e in at.exception])
        info = " ".join(i.value for i in at.info)
        assert all(line in info for line in p.lines), name
        n = math.prod(len(v.split(",")) if ":" not in v else int(v.rsplit(":", 1)[1]) for v in
                      (s.split("=", 1)[1] for s in p.vary)) * p.seeds
        assert at.button(key="atlas_run").label == f"Run the sweep ({n} runs)"
        assert any(p.command() in c.value for c in at.code), name


def test_atlas_custom_sweep_runs_and_draws_the_sweeps_numbers():
    at = atlas_app()
    at.selectbox(key="atlas").set_value("custom").run()
    at.text_input(key="atlas_s1_init_scale").set_value("0.5,1.5").run()
    at.number_input(key="atlas_seeds").set_value(2).run()
    at.button(key="atlas_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    spec = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                if json.loads(c.proto.spec)["layout"].get("meta", {}).get("view") == "atlas")
    d = spec["layout"]["meta"]["sweep"]
    base = ExperimentConfig.from_dict(spec["layout"]["meta"]["config"])
    assert base.seq_len == 12 and base.hidden_size == 6 and d["axes"] == {"init_scale": [0.5, 1.5]}
    ref = sweep_fn(base, "init_scale=0.5,1.5", seeds=2, metrics=d["metrics"])
    assert [{k: v for k, v in p.items() if k != "time_s"} for p in d["points"]] == \
        [{k: v for k, v in p.items() if k != "time_s"} for p in ref["points"]]
    mean = next(t for t in spec["data"] if (t.get("meta") or {}).get("role") == "mean")
    assert np.allclose(array(mean["y"]), [s["lyapunov_max"]["mean"] for s in ref["summary"]])
    # a bad spec: one line, no traceback
    at.text_input(key="atlas_s1_init_scale").set_value("0.5:x:3").run()
    assert not at.exception and any("init_scale" in e.value for e in at.error)


# ---- each preset's claims (slow) ---------------------------------------------------------------------------
def run_preset(name):
    p = ATLAS_PRESETS[name]
    return sweep_fn(p.config, p.vary, p.seeds, p.metrics, workers=2)


@slow
def test_preset_edge_of_chaos_crosses_zero_between_1_and_1_6():
    d = run_preset("edge-of-chaos")
    m = {s["init_scale"]: s["lyapunov_max"]["mean"] for s in d["summary"]}
    assert m[0.5] < -0.5 and m[1.0] < 0 and m[2.0] > 0.05
    first_positive = min(g for g, v in m.items() if v > 0)
    assert 1.0 < first_positive <= 1.6
    assert all(p["status"] == "ok" for p in d["points"])


@slow
def test_preset_forget_bias_lengthens_the_horizon():
    d = run_preset("forget-bias")
    s = {r["forget_bias"]: r["memory_horizon"] for r in d["summary"]}
    found = [s[b]["mean"] for b in sorted(s) if s[b]["n"] == 2]
    assert len(found) >= 5 and found == sorted(found)  # grows with b_f while it is measurable
    assert s[4.0]["censored"] == 2  # beyond the sequence at b_f = 4


@slow
def test_preset_irnn_follows_the_closed_form():
    d = run_preset("irnn")
    for s in d["summary"]:
        a = s["init_scale"]
        assert s["grad_ratio"]["mean"] == pytest.approx(99 * math.log10(a), abs=0.6), a


@slow
def test_preset_adding_vs_T():
    d = run_preset("adding-vs-T")
    r = {(s["cell"], s["seq_len"]): s["final_loss_over_chance"]["mean"] for s in d["summary"]}
    assert r[("rnn", 40)] > 0.9 and r[("lstm", 40)] > 0.9 and r[("gru", 40)] < 0.1
    assert r[("rnn", 5)] < 0.5 and r[("lstm", 20)] < 0.2


def test_band_leaves_a_gap_where_no_seed_has_a_value(monkeypatch):
    import analysis.experiment as ex
    real = ex.run_experiment
    monkeypatch.setattr(ex, "run_experiment",
                        lambda c: (_ for _ in ()).throw(RuntimeError("boom")) if c.init_scale == 1.0 else real(c))
    d = sweep_fn(TINY, "init_scale=0.5,0.75,1.0,1.25,1.5", seeds=2)
    (band,) = roles(atlas_figure(d, "lyapunov_max"), "band")
    xs = list(band.x)
    assert xs.count(None) == 1 and 1.0 not in xs  # two polygons, around the failed point
    assert xs[:xs.index(None)] == [0.5, 0.75, 0.75, 0.5] and xs[xs.index(None) + 1:] == [1.25, 1.5, 1.5, 1.25]
    assert all(y is None or np.isfinite(y) for y in band.y)


def test_atlas_figure_exports_its_data_and_the_sweep(one_axis):
    import io
    import zipfile

    from analysis import export
    fig = atlas_figure(one_axis, "memory_horizon")
    z = zipfile.ZipFile(io.BytesIO(export.view_zip({"atlas-memory_horizon": fig}, one_axis["config"],
                                                   formats=("csv", "json"))))
    names = set(z.namelist())
    assert {"atlas-memory_horizon.csv", "atlas-memory_horizon.json", "config.json"} <= names
    doc = json.loads(z.read("atlas-memory_horizon.json"))
    assert doc["meta"]["sweep"]["points"] == json.loads(json.dumps(one_axis["points"]))
    assert json.loads(z.read("config.json"))["hidden_size"] == 8
    rows = z.read("atlas-memory_horizon.csv").decode().splitlines()
    assert rows[0] == "trace,x,y"
    s = one_axis["summary"][0]["memory_horizon"]
    assert f'"mean of 3 seeds (band: min–max, dots: each seed)",0.5,{s["mean"]!r}' in rows
    assert sum(r.startswith("each seed,") for r in rows) == sum(p["memory_horizon"] is not None
                                                                   for p in one_axis["points"])


def test_atlas_has_its_deck_with_its_caption_and_joins_the_deck_of_all_views(monkeypatch):
    """The Atlas tab's deck button (its figure, its own caption, the sweep in the notes) and the deck of all views
    carrying the Atlas once a sweep is drawn (images stood in: the rendering is tested in test_deck.py)."""
    from analysis import deck, export
    from test_deck import png  # a white PNG of the given size
    ok_, hint = export.export_available()
    if not ok_:
        pytest.skip(f"no Chromium here: {hint}")
    made = []
    real = deck.deck_bytes

    def recording(views, config=None, **kw):
        made.append((views, config, kw.get("title")))
        stand_in = lambda jobs, scale, done: [png(16, 9)] * len(jobs)  # noqa: E731
        return real(views, config, **{**kw, "render_images": stand_in})
    monkeypatch.setattr(deck, "deck_bytes", recording)
    at = atlas_app()
    at.selectbox(key="atlas").set_value("custom").run()
    at.text_input(key="atlas_s1_init_scale").set_value("0.5,1.5").run()
    at.number_input(key="atlas_seeds").set_value(1).run()
    at.button(key="atlas_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    at.run()
    assert not any("Atlas joins" in c.value for c in at.caption)  # a sweep is drawn: the deck of all views has it
    at.button(key="build_atlas_pptx").click().run()
    assert not at.exception, [e.value for e in at.exception]
    views, config, title = made[-1]
    (name, fig), = views["atlas"].items()
    assert name.startswith("atlas-") and title == "Atlas: init_scale"
    caption = deck.figure_caption(fig, "atlas")
    assert caption.startswith("largest Lyapunov exponent") and "as init scale moves" in caption
    assert "1 seed;" in caption and "triangle" not in caption
    assert config["seq_len"] == 12  # the sweep's base settings go into the notes
    assert [b for b in at.get("download_button") if b.proto.label.startswith("Download atlas.pptx")]
    at.button(key="build_all_views_pptx").click().run()
    assert not at.exception, [e.value for e in at.exception]
    views, _, _ = made[-1]
    assert "atlas" in views and {"gradient-flow", "jacobians", "activations"} <= set(views)
