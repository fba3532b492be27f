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


def every_tab(at: AppTest, what: str) -> AppTest:
    """Open each tab (one training step in Live training): each draws a chart and shows no error."""
    for tab in TABS:
        at.session_state["view"] = tab
        ok(at.run())
        if tab == "Live training":
            ok(at.button(key="train_step").click().run())
        assert at.get("plotly_chart"), f"{tab} shows no chart for {what}"
        assert not messages(at), (what, tab, messages(at))
    return at


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
    every_tab(ok(app(compare=cell, task="adding", **SMALL)), cell)


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
