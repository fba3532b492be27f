"""Every label true (issue 18, item 4) and every title whole (issue 19): where the loss is read on the time axis and
in the caption, layers numbered from 0 and named on every per-layer figure, the vanilla-RNN bound only for RNN
cells, titles that fit a 1920x1080 slide, and the slide deck's title text equal to the figure's title with the
markup removed and every space kept, for every figure the tool makes for RNN / LSTM / GRU."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from pptx import Presentation

from analysis import deck, figures
from analysis.config import ExperimentConfig
from analysis.experiment import run_comparison
from analysis.figures import VIEWS, slide_layout, view_figures, visible
from analysis.figures.atlas import atlas_figure
from analysis.figures.theme import TITLE_CHARS_SLIDE
from analysis.training import Trainer

SMALL = dict(seq_len=12, hidden_size=6, batch_size=4, seed=0)
CELLS = ("rnn", "lstm", "gru")


def title_of(fig) -> str:
    return fig.layout.title.text or ""


def caption_of(fig) -> str:
    return fig.layout.meta.get("caption", "")


def words(text: str) -> str:
    """Whitespace runs as one space (the deck writes one space where a title has two)."""
    return " ".join(text.split())


# ---- every figure the tool makes --------------------------------------------------------------------------------
def _histories(cfg):
    out = {}
    for cell in cfg.cells:
        tr = Trainer(cfg.for_cell(cell))
        tr.run(2)
        out[cell] = tr.history()
    return out


def _sweep():
    """A two-point sweep result as analysis.sweep returns it (the Atlas figure reads only these fields)."""
    pts = [{"init_scale": v, "seed": 0, "status": "ok", "memory_horizon": h} for v, h in ((0.5, 3), (1.0, 7))]
    summ = [{"init_scale": v, "memory_horizon": {"mean": h, "min": h, "max": h, "n": 1}} for v, h in ((0.5, 3),
                                                                                                        (1.0, 7))]
    return {"config": ExperimentConfig(**SMALL).to_dict(), "axes": {"init_scale": [0.5, 1.0]}, "seeds": [0],
            "metrics": ["memory_horizon"], "points": pts, "summary": summ, "notes": []}


@pytest.fixture(scope="module")
def every_figure() -> list:
    """[(case, view, name, figure)]: every view of RNN/LSTM/GRU, stacked + truncated + trained, bidirectional,
    the char-LM training view, each cell alone, and the Atlas."""
    out = []
    stacked = ExperimentConfig(compare=CELLS, task="adding", num_layers=2, truncate=4, **SMALL)
    cases = [("stacked", stacked, _histories(stacked)),
             ("bidirectional", ExperimentConfig(compare=CELLS, bidirectional=True, loss_steps="all", **SMALL), None)]
    cases += [(cell, ExperimentConfig(cell=cell, task="adding", **SMALL), None) for cell in CELLS]
    lm = ExperimentConfig(cell="gru", task="charlm", text="hello", **SMALL)
    cases.append(("charlm", lm, _histories(lm)))
    for case, cfg, hist in cases:
        res = run_comparison(cfg)
        for view in VIEWS:
            for name, fig in view_figures(view, res, hist).items():
                out.append((case, view, name, fig))
    out.append(("atlas", "atlas", "atlas-memory_horizon", atlas_figure(_sweep(), "memory_horizon")))
    return out


def test_the_zoo_holds_every_kind_of_figure(every_figure):
    names = {n.split("_")[0] if n.startswith(("gates_", "hidden_")) else n for _, _, n, _ in every_figure}
    assert {"grad_norm", "grad_truncated", "grad_heatmap_training", "grad_per_layer", "grad_per_layer_lines",
            "grad_per_direction", "jacobian_spectral_norm", "jacobian_singular_values", "eigenvalues",
            "singular_values", "lyapunov", "spectral_radius_training", "cell_flow", "gates", "gate_saturation",
            "hidden", "training_loss", "training_grad_norm", "training_perplexity", "activations",
            "atlas-memory_horizon"} <= names


def test_the_deck_title_is_the_figure_title_with_every_space_kept(every_figure):
    for case, view, name, fig in every_figure:
        runs = deck.title_runs(title_of(fig))
        text = "".join(t for t, _ in runs)
        assert text == words(visible(title_of(fig))), (case, name, runs)
        assert "_t" not in text and "_{" not in text, (case, name, text)  # real subscripts, never "f_t"


def test_the_slides_carry_those_titles_and_each_figures_own_caption(every_figure):
    def png(w, h):
        def chunk(kind, data):
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        raw = b"".join(b"\x00" + b"\xff" * (3 * w) for _ in range(h))
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    figs = {f"{case}/{view}": {} for case, view, _, _ in every_figure}
    for case, view, name, fig in every_figure:
        figs[f"{case}/{view}"][name] = fig
    stand_in = png(16, 9)
    data = deck.deck_bytes(figs, None, render_images=lambda jobs, scale, done: [stand_in] * len(jobs))
    slides = list(Presentation(io.BytesIO(data)).slides)[1:]
    assert len(slides) == len(every_figure)
    for slide, (case, view, name, fig) in zip(slides, every_figure):
        assert slide.shapes.title.text_frame.text == words(visible(title_of(fig))), (case, name)
        caption = [s.text_frame.text for s in slide.shapes if s.has_text_frame and s != slide.shapes.title]
        own = caption_of(fig)
        assert own, (case, name)  # every figure says what it shows
        assert caption == ["".join(t for t, _ in deck.caption_runs(own))], (case, name)


def test_the_rnn_hidden_state_slide_is_not_captioned_with_the_lstm_carousel(every_figure):
    hidden = [f for c, _, n, f in every_figure if n == "hidden_rnn" and c == "stacked"][0]
    flow = [f for c, _, n, f in every_figure if n == "cell_flow" and c == "stacked"][0]
    assert "carousel" in deck.figure_caption(flow, "cell-state")
    cap = deck.figure_caption(hidden, "cell-state")
    assert "h_t" in cap and "carousel" not in cap and "LSTM" not in cap


def test_titles_fit_a_1920x1080_slide(every_figure):
    for case, _, name, fig in every_figure:
        slide = slide_layout(fig)
        lines = (slide.layout.title.text or "").split("<br>")
        assert all(len(visible(line)) <= TITLE_CHARS_SLIDE for line in lines), (case, name, lines)
        assert len(lines) <= 3 and slide.layout.margin.t >= 150 + 55 * (len(lines) - 1), (case, name)
        # in the deck: two lines of the 26 pt slide title (130 characters were seen to fit in LibreOffice)
        assert len(words(visible(title_of(fig)))) <= 125, (case, name)
        # and on the screen: at most two lines of 120 characters, the top margin grown for the second
        screen = title_of(fig).split("<br>")
        assert len(screen) <= 2 and all(len(visible(line)) <= 120 for line in screen), (case, name)


# ---- layers: 0-based as the API, named on every per-layer figure --------------------------------------------------
PER_LAYER = ("grad_norm", "grad_truncated", "jacobian_spectral_norm", "jacobian_singular_values", "eigenvalues",
             "singular_values", "lyapunov", "cell_flow", "gate_saturation")


@pytest.mark.parametrize("layer, words_", [(-1, "layer 1 (top) of 2"), (0, "layer 0 (bottom) of 2")])
def test_every_per_layer_figure_names_its_layer_0_based(layer, words_):
    res = run_comparison(ExperimentConfig(compare=CELLS, num_layers=2, layer=layer, truncate=4, **SMALL))
    seen = set()
    for view in VIEWS:
        for name, fig in view_figures(view, res).items():
            if name in PER_LAYER or name.startswith(("gates_", "hidden_")):
                assert words_ in visible(title_of(fig)), (name, title_of(fig))
                seen.add(name.split("_")[0] if name.startswith(("gates_", "hidden_")) else name)
    assert set(PER_LAYER) | {"gates", "hidden"} <= seen
    lines = view_figures("gradient-flow", res)["grad_per_layer_lines"]
    assert {t.name for t in lines.data if t.meta["cell"] == "rnn"} == {"RNN layer 1 (top)", "RNN layer 0 (bottom)"}


def test_a_single_layer_figure_names_no_layer():
    res = run_comparison(ExperimentConfig(cell="lstm", **SMALL))
    for view in VIEWS:
        for name, fig in view_figures(view, res).items():
            assert " of 1" not in title_of(fig) and "layer 0" not in title_of(fig), name


def test_the_layer_name_helper():
    assert figures.layer_name(0, 2) == "layer 0 (bottom) of 2"
    assert figures.layer_name(1, 2) == "layer 1 (top) of 2"
    assert figures.layer_name(1, 3) == "layer 1 of 3"


# ---- where the loss is read ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps, axis, caption", [
    ("last", "the loss is read at the last step", "read at the last step only"),
    ("all", "a loss term at every step", "a term at every step"),
])
def test_time_axis_and_caption_say_where_the_loss_is_read(steps, axis, caption):
    res = run_comparison(ExperimentConfig(compare=("rnn", "lstm"), task="adding", loss_steps=steps, truncate=4,
                                          **SMALL))
    figs = view_figures("gradient-flow", res)
    for name in ("grad_norm", "grad_truncated"):
        x_title = figs[name].layout.xaxis.title.text
        assert axis in x_title and "the end" not in x_title, (name, x_title)
        assert caption in caption_of(figs[name]) and "the end" not in caption_of(figs[name])


def test_the_task_decides_under_auto():
    res = run_comparison(ExperimentConfig(cell="rnn", task="charlm", text="hello", **SMALL))  # a loss every step
    assert res["rnn"].config.loss_steps == "auto" and res["rnn"].spec.loss_steps == "all"
    assert "every step" in view_figures("gradient-flow", res)["grad_norm"].layout.xaxis.title.text


def test_a_users_loss_callable_is_named_on_the_axis():
    from analysis.own_model import analyze
    torch.manual_seed(0)
    model = torch.nn.LSTM(3, 5)
    x = torch.randn(10, 2, 3)
    r = analyze(model, x, loss=lambda y: (y ** 2).sum())
    fig = r.figures("gradient-flow")["grad_norm"]
    assert "your loss callable" in fig.layout.xaxis.title.text
    assert "callable" in caption_of(fig) and "last step" not in caption_of(fig)


# ---- the vanilla-RNN bound only for RNN cells -------------------------------------------------------------------
def test_the_activations_figure_claims_the_rnn_bound_only_with_an_rnn():
    gated = run_comparison(ExperimentConfig(compare=("lstm", "gru"), **SMALL))
    fig = view_figures("activations", gated)["activations"]
    assert "≤" not in visible(title_of(fig)) and "vanilla RNN only" in caption_of(fig)
    with_rnn = run_comparison(ExperimentConfig(compare=("rnn", "lstm"), **SMALL))
    fig = view_figures("activations", with_rnn)["activations"]
    assert "≤ γ·σmax(Whh)" in visible(title_of(fig)) and "vanilla RNN" in title_of(fig)
    jac = view_figures("jacobians", gated)["jacobian_spectral_norm"]
    assert "bound" not in caption_of(jac) and not [t for t in jac.data if t.meta.get("role") == "bound"]


def test_the_activations_figure_says_what_the_kinds_without_phi_use():
    res = run_comparison(ExperimentConfig(compare=("lru", "mingru"), **SMALL))
    fig = view_figures("activations", res)["activations"]
    assert visible(title_of(fig)) == ("Activations and their derivatives φ′ of the vanilla RNN (not used by the LRU "
                                      "and the minGRU)")
    assert ("vanilla RNN only: the LRU is linear (a complex diagonal recurrence, no activation); the minGRU uses a "
            "sigmoid gate and a linear recurrence;") in caption_of(fig)
    gated = view_figures("activations", run_comparison(ExperimentConfig(compare=("lstm", "gru"), **SMALL)))
    assert "the LSTM and the GRU use sigmoid/tanh gates" in caption_of(gated["activations"])


# ---- log axes over every figure (the other small figure defects of issue 19: test_figure_defects.py) ----------
def test_log_axes_tick_at_decades_or_1_2_5_never_one_decade_and_then_5_2(every_figure):
    from analysis.figures.theme import log_ticks
    wide = log_ticks(1e-9, 1.2)
    assert wide["ticktext"] == ["10⁻⁹", "10⁻⁸", "10⁻⁷", "10⁻⁶", "10⁻⁵", "10⁻⁴", "10⁻³", "10⁻²", "10⁻¹", "1", "10"]
    assert log_ticks(0.15, 7)["ticktext"] == ["0.2", "0.5", "1", "2", "5"]
    assert log_ticks(1.7, 7)["ticktext"] == ["2", "3", "4", "5", "6", "7"]  # under a decade: still three or more
    assert len(log_ticks(1e-60, 1)["tickvals"]) <= 13
    logs = 0
    for case, _, name, fig in every_figure:
        for key in fig.layout:
            ax = fig.layout[key]
            if key.startswith(("xaxis", "yaxis")) and ax.type == "log":
                logs += 1
                assert ax.tickvals is not None and len(ax.tickvals) == len(ax.ticktext), (case, name, key)
    assert logs > 20


# ---- the cell state's two gradients (issue 18) --------------------------------------------------------------------
def test_the_cell_state_gradient_figure_draws_the_total_and_the_carry_path_each_named():
    """The cell-state view's cell_grad: the total ||dL/dc_t|| (what retain_grad on c_t gives) and the carry path
    through c_{t+1} alone, one solid and one dashed curve per LSTM, in the legend and the caption, with the
    result's own numbers (checked against autograd references in test_gradients); the carry path's exact 0 at
    t = T-1 is a gap on the log axis, not a point. Cells without a cell state draw no such figure."""
    res = run_comparison(ExperimentConfig(compare=CELLS, task="adding", loss_steps="all", num_layers=2, **SMALL))
    fig = view_figures("cell-state", res)["cell_grad"]
    traces = {(t.meta["cell"], t.meta["role"]): t for t in fig.data}
    assert set(traces) == {("lstm", "cell_grad_norm"), ("lstm", "cell_carry_grad_norm")}
    total, carry = traces["lstm", "cell_grad_norm"], traces["lstm", "cell_carry_grad_norm"]
    assert visible(total.name) == "LSTM total ‖∂L/∂ct‖ (what retain_grad on ct gives)"
    assert total.name == "LSTM total ‖∂L/∂c<sub>t</sub>‖ (what retain_grad on c<sub>t</sub> gives)"
    assert carry.name == "LSTM carry path only (through c<sub>t+1</sub>)"
    assert total.line.dash in (None, "solid") and carry.line.dash == "dash" and fig.layout.showlegend is not False
    g = res["lstm"].grad
    np.testing.assert_array_equal(total.y, g.cell_grad_norm)
    assert g.cell_carry_grad_norm[-1] == 0 and np.isnan(carry.y[-1])
    np.testing.assert_array_equal(carry.y[:-1], g.cell_carry_grad_norm[:-1])
    assert np.all(np.asarray(carry.y[:-1]) > 0)  # a loss at every step: the carry path is a whole curve before T-1
    cap = caption_of(fig)
    assert "total ‖∂L/∂c_t‖" in cap and "retain_grad() on c_t" in cap and "carry path alone" in cap
    assert "through c_{t+1}" in cap and "0 at the last step" in cap
    assert "layer 1 (top) of 2" in title_of(fig) and "total (solid)" in title_of(fig) and "(dashed)" in title_of(fig)
    assert "a loss term at every step" in fig.layout.xaxis.title.text
    alone = run_comparison(ExperimentConfig(compare=("rnn", "gru"), **SMALL))
    assert "cell_grad" not in view_figures("cell-state", alone)


def test_thin_route_draws_what_it_computed_and_the_horizon_says_its_resolution():
    """A light analysis on the thin route finds sigma_max alone: no sigma_min line claiming values, the singular
    values panel draws sigma_1 = sigma_max (never an empty panel) and says so; a horizon between two log-spaced
    lags is labelled as the interval, as the page's horizon line says it."""
    from analysis.experiment import run_experiment
    r = run_experiment(ExperimentConfig(cell="lstm", seq_len=200, hidden_size=8, batch_size=4, seed=0,
                                        jacobian_lags="log", num_log_lags=8))
    d = r.horizon_detail
    assert d["lag"] is not None and d["after_lag"] < d["lag"] - 1  # the crossing lies between two reported lags
    figs = view_figures("jacobians", {"lstm": r})
    names = [t.name for t in figs["jacobian_spectral_norm"].data]
    assert any(f"horizon between k={d['after_lag'] + 1} and {d['lag']}" in n for n in names), names
    assert any(t.meta and t.meta.get("role") == "min_singular_value" for t in figs["jacobian_spectral_norm"].data)
    # the same result as the thin route leaves it: sigma_min and the singular values not computed
    r.jac.extras["sigma_max_estimate"] = {"not_computed": ["min_singular_value", "singular_values"]}
    r.jac.singular_values = np.full_like(r.jac.singular_values[:, :1], np.nan)
    r.jac.min_singular_value = np.full_like(r.jac.min_singular_value, np.nan)
    figs = view_figures("jacobians", {"lstm": r})
    roles = [t.meta.get("role") for t in figs["jacobian_spectral_norm"].data if t.meta]
    assert "min_singular_value" not in roles and "σ_min is not drawn" in caption_of(figs["jacobian_spectral_norm"])
    sv = figs["jacobian_singular_values"]
    np.testing.assert_allclose(np.log10(np.asarray(sv.data[0].y, float)), r.jac.spectral_norm)
    assert any("only σ<sub>1</sub> = σ<sub>max</sub> computed" in a.text for a in sv.layout.annotations)


@pytest.mark.skipif(not __import__("analysis.export", fromlist=["x"]).export_available()[0],
                    reason="no Chromium for PNG export here")
@pytest.mark.parametrize("words", [5, 22, 34])  # one, two and three title lines on the slide
def test_exported_png_shows_the_whole_title(words):
    """A wrapped title was drawn about one line too high by plotly and its first line cut off at the top of the
    PNG: every line must start below the top edge (the first rows of pixels stay background)."""
    from PIL import Image

    from analysis.export import figure_bytes
    import plotly.graph_objects as go
    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 2]))
    fig.update_layout(title=dict(text=" ".join(["gradient"] * words)), plot_bgcolor="white")
    img = np.asarray(Image.open(io.BytesIO(figure_bytes(fig, "png"))).convert("L"), dtype=float)
    assert img[:12].min() > 250, "ink in the top rows: the title is cut off"
    ink = np.nonzero(img[:, :1200].min(axis=1) < 128)[0]
    assert ink[0] < 150  # and the title is there, near the top


def test_log_axis_ticks_cover_the_shown_range_when_a_hidden_trace_widens_the_data():
    """A legend-only trace (the LSTM's ||dL/dc_t||) a decade below the shown ones made ticks for the whole span,
    and the autoranged axis showed one label (0.002): at least three labels must fall in the shown range."""
    import plotly.graph_objects as go

    from analysis.figures.theme import decade_ticks
    fig = go.Figure([go.Scatter(x=[0, 1, 2], y=[1.2e-3, 2.0e-3, 2.7e-3]),
                     go.Scatter(x=[0, 1, 2], y=[5.8e-4, 6.5e-4, 7.5e-4], visible="legendonly")])
    fig.update_yaxes(type="log")
    decade_ticks(fig)
    vals = np.asarray(fig.layout.yaxis.tickvals, float)
    assert ((vals >= 1.2e-3) & (vals <= 2.7e-3)).sum() >= 3
    assert ((vals >= 5.8e-4) & (vals <= 7.5e-4)).sum() >= 1  # the hidden trace keeps its labels when shown
