"""The Streamlit dashboard driven headless by streamlit.testing.v1.AppTest (no browser).

Small sequences and hidden sizes (set through the URL query parameters before the first run) keep the file fast;
only the first test opens the real default view. Fragments are not ticked by AppTest: each ``at.run()`` runs the
live-training fragment once.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import analysis.experiment as experiment
from analysis.presets import PRESETS

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
SMALL = {"seq_len": "12", "hidden_size": "6", "batch_size": "4"}
TABS = ["Gradient flow", "Jacobians", "Spectrum", "Cell state", "Live training", "Activations"]
# the course's later chapters (truncated BPTT, bidirectional and stacked RNNs, the character-level LM): every view
# of each is rendered by test_new_presets_render_every_view
NEW_PRESETS = ["truncated-bptt", "bidirectional", "stacked", "charlm-hello", "charlm-text"]


def app(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def specs(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def array(v):
    if isinstance(v, dict) and "bdata" in v:
        dt = {"f8": "<f8", "f4": "<f4", "i1": "i1", "i2": "<i2", "i4": "<i4", "u1": "u1", "u2": "<u2", "u4": "<u4"}
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(dt[v["dtype"]]))
        if "shape" in v:
            a = a.reshape([int(s) for s in str(v["shape"]).split(",")])
        return a
    return np.asarray(v, dtype=float)


def figure(at: AppTest, name: str) -> dict:
    for s in specs(at):
        if s["layout"].get("meta", {}).get("figure") == name:
            return s
    raise AssertionError(f"no figure {name!r} in {[s['layout'].get('meta', {}).get('figure') for s in specs(at)]}")


def trace(fig: dict, role: str, cell: str) -> dict:
    for t in fig["data"]:
        m = t.get("meta") or {}
        if m.get("role") == role and m.get("cell") == cell:
            return t
    raise AssertionError(f"no {role} trace for {cell}")


def messages(at: AppTest) -> str:
    return " ".join(e.value for e in at.error)


# ---- the opening view -------------------------------------------------------------------------------------------
def test_default_view_opens_with_its_charts():
    at = ok(app())
    fig = figure(at, "grad_norm")
    cells = {(t.get("meta") or {}).get("cell") for t in fig["data"]} - {None}
    assert cells == {"rnn", "lstm", "gru"}
    rnn = array(trace(fig, "grad_norm", "rnn")["y"])
    lstm = array(trace(fig, "grad_norm", "lstm")["y"])
    assert len(rnn) == PRESETS["default"].config.seq_len
    assert rnn[0] / rnn[-1] < 1e-15 < lstm[0] / lstm[-1]  # one collapses, the others hold up
    assert any("What to look for" in i.value for i in at.info)
    assert fig["layout"]["meta"]["config"]["compare"] == ["rnn", "lstm", "gru"]
    assert at.query_params["preset"] == ["default"] or at.query_params["preset"] == "default"


@pytest.mark.parametrize("name", [n for n in PRESETS if n not in NEW_PRESETS])
def test_every_preset_renders(name):
    at = ok(app(preset=name, seq_len="16", hidden_size="6", batch_size="4"))
    assert at.get("plotly_chart"), name
    assert at.session_state["preset"] == name
    assert not messages(at), messages(at)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_every_view_renders_for_each_cell(cell):
    at = ok(app(compare=cell, task="adding", **SMALL))
    for tab in TABS:
        at.session_state["view"] = tab
        ok(at.run())
        if tab == "Live training":
            ok(at.button(key="train_step").click().run())
        assert at.get("plotly_chart"), f"{tab} shows no chart for {cell}"
        assert not messages(at), (tab, messages(at))


def test_preset_selector_sets_everything():
    at = ok(app(**SMALL))
    at.selectbox(key="preset").set_value("exploding").run()
    ok(at)
    c = PRESETS["exploding"].config
    assert at.session_state["activation"] == c.activation and at.session_state["init"] == c.init
    assert at.session_state["init_scale"] == c.init_scale and at.session_state["seq_len"] == c.seq_len
    assert at.session_state["cell_compare"] == ["rnn"]
    assert any("exploding" in w.value or "explodes" in w.value for w in at.warning)
    # the box shows the short name (a long title was cut off in the sidebar); the title is the caption under it
    assert at.selectbox(key="preset").format_func("exploding") == "exploding"
    assert any(PRESETS["exploding"].title in c.value for c in at.sidebar.caption)


# ---- widgets change the figures; display options do not recompute ------------------------------------------------
def test_widgets_change_the_figures_data():
    at = ok(app(**SMALL))
    before = array(trace(figure(at, "grad_norm"), "grad_norm", "rnn")["y"])
    at.slider(key="seq_len").set_value(15).run()
    ok(at)
    after = array(trace(figure(at, "grad_norm"), "grad_norm", "rnn")["y"])
    assert len(before) == 12 and len(after) == 15
    assert figure(at, "grad_norm")["layout"]["meta"]["config"]["seq_len"] == 15
    at.slider(key="hidden_size").set_value(9).run()
    ok(at)
    assert figure(at, "grad_norm")["layout"]["meta"]["config"]["hidden_size"] == 9
    y9 = array(trace(figure(at, "grad_norm"), "grad_norm", "rnn")["y"])
    at.selectbox(key="init").set_value("orthogonal").run()
    ok(at)
    yo = array(trace(figure(at, "grad_norm"), "grad_norm", "rnn")["y"])
    assert not np.allclose(y9, yo)
    at.multiselect(key="cell_compare").set_value(["gru"]).run()
    ok(at)
    cells = {(t.get("meta") or {}).get("cell") for t in figure(at, "grad_norm")["data"]} - {None}
    assert cells == {"gru"}
    assert at.query_params["compare"] in ("gru", ["gru"])
    assert at.query_params["seq_len"] in ("15", ["15"])


def test_display_options_never_recompute(monkeypatch):
    calls = []
    real = experiment.run_comparison

    def counting(config, **kw):
        calls.append(config)
        return real(config, **kw)

    monkeypatch.setattr(experiment, "run_comparison", counting)
    at = ok(app(seed="7", **SMALL))  # a config no other test caches
    n = len(calls)
    assert n == 1
    at.toggle(key="display_log").set_value(False).run()
    ok(at)
    at.toggle(key="display_band").set_value(False).run()
    ok(at)
    fig = figure(at, "grad_norm")
    assert fig["layout"]["yaxis"]["type"] == "linear"
    assert all(t.get("visible") is False for t in fig["data"] if (t.get("meta") or {}).get("role") == "band")
    at.session_state["view"] = "Cell state"
    at.run()
    at.segmented_control(key="display_gate").set_value("i").run()
    ok(at)
    assert any(s["layout"]["meta"]["figure"] == "gates_lstm_i" for s in specs(at))
    assert len(calls) == n, "a display option recomputed the analysis"


def test_log_switch_is_off_and_says_why_when_the_chart_draws_exact_log10():
    """A tanh RNN at T=700 with W_hh scaled to 0.2: ||dL/dh_0|| ~ 10^-629, below float64's range, so the chart draws
    exact log10 values on its own axis; the "Log y axis" switch would do nothing there: it is disabled, with why."""
    at = ok(app(compare="rnn", seq_len="700", hidden_size="6", batch_size="4", init="orthogonal", init_scale="0.2"))
    fig = figure(at, "grad_norm")
    assert fig["layout"]["yaxis"]["type"] == "linear" and "exact" in fig["layout"]["yaxis"]["title"]["text"]
    switch = at.toggle(key="display_log")
    assert switch.disabled and "float64" in switch.help
    assert not at.toggle(key="display_band").disabled
    at = ok(app(compare="rnn", **SMALL))  # within float64's range: the ordinary log axis, the switch works
    assert not at.toggle(key="display_log").disabled


def test_variant_is_drawn_beside():
    at = ok(app(compare="lstm", init="default", variant="forget_bias=3", **SMALL))
    cells = {(t.get("meta") or {}).get("cell") for t in figure(at, "grad_norm")["data"]} - {None}
    assert cells == {"lstm", "lstm · forget_bias=3.0"}


def test_variant_runs_are_labelled_by_the_settings_that_apply_and_notes_said_once():
    """curse-of-memory's variant {init_scale, lru_r_min, lru_r_max}: the RNN's variant run is "init_scale=0.9" and
    the LRU's "lru_r_min=0.895, lru_r_max=0.9"; the RNN's note on lru_r_min (its base and variant runs both carry it)
    is said once. minGRU's variant (init, init_scale) changes nothing for the minGRU: no run, said in the header."""
    at = ok(app(preset="curse-of-memory", **SMALL))
    cells = {(t.get("meta") or {}).get("cell") for t in figure(at, "grad_norm")["data"]} - {None}
    assert cells == {"rnn", "lru", "rnn · init_scale=0.9", "lru · lru_r_min=0.895, lru_r_max=0.9"}
    (notes,) = [c.value for c in at.caption if c.value.startswith("Notes: ")]
    assert notes.count("lru_r_min applies to the LRU only") == 1, notes
    assert notes.count("lru_r_max applies to the LRU only") == 1, notes
    assert any("variant (lighter colour): RNN: init_scale=0.9; LRU: lru_r_min=0.895, lru_r_max=0.9" in m.value
               for m in at.markdown)
    at = ok(app(preset="mingru", **SMALL))
    cells = {(t.get("meta") or {}).get("cell") for t in figure(at, "grad_norm")["data"]} - {None}
    assert cells == {"gru", "mingru", "gru · init=spectral, init_scale=5.0"}
    assert any("no minGRU variant run (init, init_scale do not apply to it" in m.value for m in at.markdown)


# ---- bad settings: a message naming the field, and the app keeps working -----------------------------------------
@pytest.mark.parametrize("params, field", [
    ({"seq_len": "abc"}, "seq_len"),
    ({"seq_len": "0"}, "seq_len"),
    ({"hidden_size": "-3"}, "hidden_size"),
    ({"activation": "softplus"}, "activation"),
    ({"preset": "nope"}, "preset"),
    ({"colour": "red"}, "colour"),
    ({"variant": "forget_bias=banana"}, "forget_bias"),
    ({"compare": "lstm", "variant": "forget_bias=1"}, "forget_bias"),  # chrono sets the forget bias itself
])
def test_invalid_url_config_gives_a_message(params, field):
    at = ok(app(**params))
    assert field in messages(at), messages(at)
    assert at.get("plotly_chart"), "the app must keep working on the preset"


def test_invalid_widget_combination_keeps_the_last_good_settings():
    at = ok(app(compare="lstm", **SMALL))
    good = figure(at, "grad_norm")["layout"]["meta"]["config"]
    at.selectbox(key="init").set_value("chrono").run()
    at.checkbox(key="forget_bias_on").check().run()
    ok(at)
    assert "forget_bias" in messages(at)
    cfg = figure(at, "grad_norm")["layout"]["meta"]["config"]
    assert cfg["init"] == "chrono" and cfg["forget_bias"] is None and cfg["seq_len"] == good["seq_len"]
    at.checkbox(key="forget_bias_on").uncheck().run()
    ok(at)
    assert not messages(at)
    at.selectbox(key="task").set_value("copy").run()  # seq_len 12 is too short for the copy task
    ok(at)
    assert "seq_len" in messages(at) and at.get("plotly_chart")


def test_uploaded_config_text():
    from dashboard.controls import config_from_text
    from rnn_models.config import ConfigError
    cfg = config_from_text(PRESETS["irnn"].config.to_json().encode())
    assert cfg == PRESETS["irnn"].config
    with pytest.raises(ConfigError, match="hidden_size"):
        config_from_text(json.dumps({"hidden_size": 0}))
    with pytest.raises(ConfigError, match="not valid JSON"):
        config_from_text("{")


# ---- live training ---------------------------------------------------------------------------------------------
def steps(at: AppTest) -> dict:
    return {k: len(tr.records) for k, tr in at.session_state["trainers"].items()}


def test_live_training_start_pause_step_reset_and_clip_change():
    at = ok(app(compare="rnn,gru", task="adding", **SMALL))
    at.session_state["view"] = "Live training"
    ok(at.run())
    assert steps(at) == {"rnn": 0, "gru": 0}
    ok(at.button(key="train_step").click().run())
    assert steps(at) == {"rnn": 1, "gru": 1}
    ok(at.button(key="train_start").click().run())
    assert at.session_state["train_running"] is True
    n = steps(at)["rnn"]
    assert n >= 2
    ok(at.run())  # one fragment tick
    assert steps(at)["rnn"] > n
    # change clipping while it runs: takes effect at the next step and is recorded
    at.selectbox(key="clip").set_value("norm").run()
    at.number_input(key="clip_threshold").set_value(0.001).run()
    ok(at)
    tr = at.session_state["trainers"]["rnn"]
    changed = [(r.step, r.changed) for r in tr.records if r.changed]
    assert changed and "clip" in changed[0][1]
    assert tr.records[-1].settings["clip"] == "norm" and tr.records[-1].clipped
    loss = figure(at, "training_grad_norm")
    assert any("clip" in (a.get("text") or "") for a in loss["layout"]["annotations"])
    ok(at.button(key="train_pause").click().run())
    assert at.session_state["train_running"] is False
    n = steps(at)
    ok(at.run())
    assert steps(at) == n, "paused training must not advance"
    ok(at.button(key="train_reset").click().run())
    assert steps(at) == {"rnn": 0, "gru": 0}


def test_live_training_stops_cleanly_on_nan():
    at = ok(app(preset="clipping"))
    at.session_state["view"] = "Live training"
    ok(at.run())
    assert set(at.session_state["trainers"]) == {"rnn · clip=none", "rnn · clip=norm"}
    ok(at.button(key="train_start").click().run())
    for _ in range(3):
        ok(at.run())
    none = at.session_state["trainers"]["rnn · clip=none"]
    assert none.stopped is not None
    assert any("stopped at step" in e.value for e in at.error)
    assert at.session_state["trainers"]["rnn · clip=norm"].stopped is None


def test_without_chromium_the_image_buttons_become_an_install_hint(monkeypatch):
    import analysis.export as export
    from dashboard import exporting
    monkeypatch.setattr(export, "export_available", lambda: (False, export.INSTALL_HINT))
    exporting.export_status.clear()
    try:
        at = ok(app(seed="3", **SMALL))
        captions = " ".join(c.value for c in at.caption)
        assert "apt-get install -y chromium" in captions
        assert "camera button" in captions  # the browser-side modebar download still works
        labels = [b.proto.label for b in at.get("download_button")]
        assert "CSV" in labels and "JSON" in labels and "PNG" not in labels and "PDF" not in labels
        chart = at.get("plotly_chart")[0].proto
        assert json.loads(chart.config)["toImageButtonOptions"]["width"] == 1920
    finally:
        exporting.export_status.clear()


def test_with_chromium_every_format_is_offered():
    from dashboard import exporting
    if not exporting.export_status()[0]:
        pytest.skip("no Chromium here")
    at = ok(app(seed="4", **SMALL))
    labels = [b.proto.label for b in at.get("download_button")]
    for fmt in ("PNG", "SVG", "PDF", "CSV", "JSON"):
        assert fmt in labels
    assert any(lbl.startswith("Download every figure of this view") for lbl in labels)


def test_an_engine_failure_keeps_the_page_alive(monkeypatch):
    real = experiment.run_comparison

    def broken(config, **kw):
        if config.seq_len == 13:
            raise IndexError("index is out of bounds")
        return real(config, **kw)

    monkeypatch.setattr(experiment, "run_comparison", broken)
    at = ok(app(**{**SMALL, "seq_len": "13"}))
    assert "IndexError" in messages(at)
    assert at.get("plotly_chart")


# ---- truncated BPTT, stacked and bidirectional networks, the character-level LM ----------------------------------
def test_truncation_layers_and_directions_by_widget_key():
    at = ok(app(compare="rnn", task="adding", **SMALL))
    T, k = 12, 4
    assert at.number_input(key="truncate").label == "k steps (0 = full BPTT)"
    at.number_input(key="truncate").set_value(k).run()
    fig = figure(ok(at), "grad_truncated")
    full = array(trace(fig, "grad_full", "rnn")["y"])
    cut = array(trace(fig, "grad_truncated", "rnn")["y"])
    np.testing.assert_array_equal(cut[T - k:], full[T - k:])  # the same inside the window
    assert np.isnan(cut[:T - k]).all()  # exactly 0 before the cut: a gap on the log axis
    assert trace(fig, "grad_truncated", "rnn")["line"]["dash"] == "dash"
    assert any(s.get("x0") == T - k for s in fig["layout"]["shapes"])
    # three layers: the layer x time map, and the Jacobians of the layer picked (0..L-1 as the API, the top by default)
    at.number_input(key="num_layers").set_value(3).run()
    layer = at.selectbox(key="layer")
    assert layer.value == -1 and layer.options == ["layer 0 (bottom)", "layer 1", "layer 2 (top)"]
    z = array(figure(ok(at), "grad_per_layer")["data"][0]["z"])
    assert z.shape == (3, T)
    at.session_state["view"] = "Jacobians"
    at.run()
    assert "layer 2 (top) of 3" in figure(ok(at), "jacobian_spectral_norm")["layout"]["title"]["text"]
    at.selectbox(key="layer").set_value(0).run()
    fig = figure(ok(at), "jacobian_spectral_norm")
    assert "layer 0 (bottom) of 3" in fig["layout"]["title"]["text"] and fig["layout"]["meta"]["config"]["layer"] == 0
    # bidirectional: the backward direction's Jacobians beside the forward ones, and the direction plot
    at.checkbox(key="bidirectional").check().run()
    fig = figure(ok(at), "jacobian_spectral_norm")
    assert "backward direction" in trace(fig, "spectral_norm_backward", "rnn")["name"]
    at.session_state["view"] = "Gradient flow"
    at.run()
    fig = figure(ok(at), "grad_per_direction")
    for role in ("direction_forward", "direction_backward", "direction_combined"):
        trace(fig, role, "rnn")
    assert not messages(at)


def test_charlm_training_shows_perplexity_and_samples():
    at = ok(app(compare="rnn", task="adding", **SMALL))
    assert not [s for s in at.selectbox if s.key == "text"], "the text control belongs to the charlm task"
    at.selectbox(key="task").set_value("charlm").run()
    at.selectbox(key="text").set_value("hello").run()
    at.session_state["view"] = "Live training"
    ok(at.run())
    for _ in range(3):
        ok(at.button(key="train_step").click().run())
    fig = figure(at, "training_perplexity")
    ppl = array(trace(fig, "perplexity", "rnn")["y"])
    loss = array(trace(figure(at, "training_loss"), "loss", "rnn")["y"])
    np.testing.assert_allclose(ppl, np.exp(loss), rtol=1e-12)
    assert any("V = 4" in (a.get("text") or "") for a in fig["layout"]["annotations"])
    (sample,) = [c.value for c in at.code]
    assert len(sample) == 80 and set(sample) <= set("helo")
    assert any("step 3" in c.value for c in at.caption)
    table = figure(at, "charlm_samples")["data"][0]
    assert table["cells"]["values"][0] == [3, 2, 1]  # a sample at every pause (each single step), newest first
    at.slider(key="temperature").set_value(0.2).run()  # a new temperature: a new sample of the same step
    samples = at.session_state["train_samples"]["rnn"]
    assert [(s["step"], s["temperature"]) for s in samples] == [(1, 0.8), (2, 0.8), (3, 0.8), (3, 0.2)]
    assert not messages(at)


def test_truncated_preset_trains_full_and_truncated_side_by_side():
    at = ok(app(preset="truncated-bptt", seq_len="30", hidden_size="6", batch_size="4"))
    fig = figure(at, "grad_truncated")
    assert any("T−k = 30−20 = 10" in (a.get("text") or "") for a in fig["layout"]["annotations"])
    at.session_state["view"] = "Live training"
    ok(at.run())
    ok(at.button(key="train_step").click().run())
    assert steps(at) == {"gru · full BPTT": 1, "gru · truncated k=20": 1}
    names = [t["name"] for t in figure(at, "training_loss")["data"] if (t.get("meta") or {}).get("role") == "loss"]
    assert names == ["GRU · full BPTT loss", "GRU · truncated k=20 loss"]
    assert at.session_state["train_steps_per_tick"] == PRESETS["truncated-bptt"].train["steps_per_tick"]


@pytest.mark.parametrize("name", NEW_PRESETS)
def test_new_presets_render_every_view(name):
    at = ok(app(preset=name, seq_len="30", hidden_size="6", batch_size="4"))  # T=30 > k=20
    assert at.session_state["preset"] == name
    for tab in TABS:
        at.session_state["view"] = tab
        ok(at.run())
        if tab == "Live training":
            ok(at.button(key="train_step").click().run())
        assert at.get("plotly_chart"), f"{tab} shows no chart for {name}"
        assert not messages(at), (name, tab, messages(at))
    cfg = PRESETS[name].config
    assert at.session_state["num_layers"] == cfg.num_layers and at.session_state["bidirectional"] == cfg.bidirectional


def test_choosing_the_hello_preset_sets_its_text_and_pace():
    at = ok(app(**SMALL))
    at.selectbox(key="preset").set_value("charlm-hello").run()
    ok(at)
    assert at.selectbox(key="text").value == "hello" and at.session_state["task"] == "charlm"
    assert at.session_state["hidden_size"] == 3
    assert at.session_state["train_steps_per_tick"] == PRESETS["charlm-hello"].train["steps_per_tick"]
    assert "task charlm (hello)" in " ".join(m.value for m in at.markdown)


# ---- the registered kinds in the sidebar: every one offered, the LRU's settings bound to the URL -----------------
def test_every_registered_kind_is_offered_and_the_lru_settings_follow_the_url():
    from rnn_models.cells import cell_names, cell_type
    at = ok(app(compare="lru,mingru", lru_r_min="0.5", lru_r_max="0.95", lru_phase_max="3.14", lru_gamma="false",
                **SMALL))
    assert list(at.multiselect(key="cell_compare").options) == [cell_type(c).label for c in cell_names()]
    assert len(cell_names()) >= 7
    cfg = figure(at, "grad_norm")["layout"]["meta"]["config"]
    assert cfg["compare"] == ["lru", "mingru"]
    assert (cfg["lru_r_min"], cfg["lru_r_max"], cfg["lru_phase_max"], cfg["lru_gamma"]) == (0.5, 0.95, 3.14, False)
    assert at.number_input(key="lru_r_min").value == 0.5 and at.checkbox(key="lru_gamma").value is False
    notes = " ".join(c.value for c in at.sidebar.caption)
    assert "the LRU and the minGRU have no W_hh: init and init_scale do not apply to them" in notes
    assert "activation applies to the RNN only: no RNN is selected" in notes
    # a widget change reaches the figures and the URL
    at.number_input(key="lru_r_max").set_value(0.99).run()
    ok(at)
    assert figure(at, "grad_norm")["layout"]["meta"]["config"]["lru_r_max"] == 0.99
    assert at.query_params["lru_r_max"] in ("0.99", ["0.99"])
    # r_min >= r_max: one line naming the fields and the ring, the last good settings kept
    at.number_input(key="lru_r_min").set_value(0.995).run()
    ok(at)
    assert "lru_r_min=0.995 must be below lru_r_max=0.99" in messages(at) and len(at.error) == 1
    assert figure(at, "grad_norm")["layout"]["meta"]["config"]["lru_r_min"] == 0.5
    at.number_input(key="lru_r_min").set_value(0.9).run()
    ok(at)
    assert not messages(at)
    # an odd H cannot be split into complex units: said in one line
    at.slider(key="hidden_size").set_value(7).run()
    assert "hidden_size=7 must be even for cell='lru'" in messages(at)
    # no kind with LRU settings selected: the widgets are not drawn, their values are kept for later
    at.slider(key="hidden_size").set_value(6).run()
    at.multiselect(key="cell_compare").set_value(["gru"]).run()
    ok(at)
    assert not [n for n in at.number_input if n.key == "lru_r_min"]
    assert at.session_state["lru_r_min"] == 0.9


@pytest.mark.parametrize("compare, expected", [
    ("rnn,lstm,gru", "activation applies to the RNN only; the LSTM and the GRU use sigmoid/tanh gates"),
    ("rnn,lru,mingru", "activation applies to the RNN only; the LRU is linear (a complex diagonal recurrence, no "
                       "activation); the minGRU uses a sigmoid gate and a linear recurrence"),
    ("rglru,minlstm", "activation applies to the RNN only: no RNN is selected"),
])
def test_the_activation_note_says_what_each_selected_kind_uses(compare, expected):
    at = ok(app(compare=compare, **SMALL))
    assert expected in [c.value.replace(":orange[", "").rstrip("]") for c in at.sidebar.caption]


def test_setting_notes_name_the_kinds_that_take_them():
    at = ok(app(compare="rnn,lru", init="chrono", layer_norm="true", **SMALL))
    notes = [c.value for c in at.sidebar.caption]
    assert ":orange[chrono applies to the LSTM and the GRU only: the RNN uses the default init]" in notes
    assert "layer norm applies to the RNN, the LSTM and the GRU only" in notes  # some selected cell takes it: grey
    assert "the LRU has no W_hh: init and init_scale do not apply to it" in notes  # init chrono: the default's grey
