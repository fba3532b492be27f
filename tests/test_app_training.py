"""The dashboard driven headless by AppTest (as test_app.py, whose helpers this file uses): live training (start,
pause, step, reset, clipping, NaN), the export buttons with and without Chromium, an engine failure, and the
course's later chapters (truncated BPTT, stacked and bidirectional networks, the character-level LM)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import analysis.experiment as experiment
from analysis.presets import PRESETS
from test_app import NEW_PRESETS, SMALL, app, array, every_tab, figure, messages, ok, trace


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
    every_tab(at, name)
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
