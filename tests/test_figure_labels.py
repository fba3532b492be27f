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


# ---- small figure defects (issue 19), each also looked at in a screenshot ---------------------------------------
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


def test_overlapping_singular_values_are_said_in_the_panel():
    from analysis.figures.jacobians import overlapping
    lag = [0, 1, 2, 3]
    sv = np.log10([[1, 1, 1, 1], [0.5, 0.49, 0.3, 0.29], [0.25, 0.245, 0.1, 0.099], [0.1, 0.098, 0.05, 0.0495]])
    assert overlapping(sv, lag) == [(0, 1), (2, 3)]  # lag 0 (every sigma 1) does not count
    assert overlapping(sv, lag, tol_decades=1.0) == [(0, 3)]
    assert overlapping(sv[:, :1], lag) == []


def test_the_saturation_chart_zooms_and_labels_small_values():
    res = run_comparison(ExperimentConfig(compare=("rnn", "lstm"), **SMALL))
    fig = view_figures("cell-state", res)["gate_saturation"]
    top = max(v for r in res.values() for v in r.saturation.values())
    assert top < 0.35  # the default settings: every fraction small
    assert fig.layout.yaxis.range[1] <= max(0.05, 1.3 * top) + 1e-12
    assert "axis zoomed" in title_of(fig) and "alert is at 50%" in title_of(fig)
    for tr in fig.data:
        assert list(tr.text) == [f"{100 * y:.1f}%" if y == y else "n/a" for y in tr.y]


def test_band_and_derivative_lines_are_visible():
    res = run_comparison(ExperimentConfig(cell="rnn", **SMALL))
    fig = view_figures("gradient-flow", res)["grad_norm"]
    band = [t for t in fig.data if t.meta.get("role") == "band"]
    assert band[1].fillcolor.endswith(",0.3)") and all(t.line.width > 0 for t in band)
    act = view_figures("activations", res)["activations"]
    dashes = {t.legendgroup: t.line.dash for t in act.data}
    assert dashes["linear"] == "dot" and dashes["relu"] == "solid"  # relu's φ′ = 1 shows between linear's dots


def test_horizon_labels_sit_where_no_line_runs():
    res = run_comparison(ExperimentConfig(compare=CELLS, seq_len=40, hidden_size=16, batch_size=4, seed=0))
    fig = view_figures("jacobians", res)["jacobian_spectral_norm"]
    lo, hi = fig.layout.yaxis.range
    labels = [a for a in fig.layout.annotations if "horizon k=" in (a.text or "")]
    assert labels
    for a in labels:
        row = hi - (hi - lo) * (1 - a.y + 0.035)  # the label's middle (top-anchored, ~7% of the plot tall)
        for tr in fig.data:
            if tr.visible is False or tr.y is None:
                continue
            x = np.asarray(tr.x, float)
            y = np.log10(np.asarray(tr.y, float))
            near = (x >= a.x) & (x <= a.x + 0.1 * x.max())
            assert not np.any(np.abs(y[near] - row) < 0.03 * (hi - lo)), (a.text, tr.name)
    for a in labels:  # and never on each other: labels in one row leave each other's width (slide sizes) free
        for b in labels:
            if a is not b and a.y == b.y:
                assert abs(a.x - b.x) > 0.011 * 39 * len(a.text if a.x < b.x else b.text), (a.text, b.text)


def test_horizon_labels_over_steep_lines_stay_off_each_other_and_the_threshold(lru_t2000):
    """T = 2000 (preset lru-t2000): the LSTM's and GRU's lines cross every label row near lag 0, so no row is free of
    lines; their labels (k = 17, 20) still take distinct rows, and none sits on the threshold's label."""
    fig = view_figures("jacobians", lru_t2000)["jacobian_spectral_norm"]  # the preset's run_comparison (conftest)
    lo, hi = fig.layout.yaxis.range
    labels = [a for a in fig.layout.annotations if " horizon " in (a.text or "")]  # "LSTM horizon (between) k=.."
    (th,) = [a for a in fig.layout.annotations if "horizon threshold" in (a.text or "")]
    near = [a for a in labels if a.x < 500]
    assert len(near) == 2 and near[0].y != near[1].y
    p = (th.y - lo) / (hi - lo)  # the threshold label spans [p, p + 0.05] of the plot's height
    for a in near:
        assert not (a.y - 0.05 < p + 0.05 and a.y > p), a.text


def test_gate_maps_and_gate_paths_are_named_by_their_own_kind():
    """RG-LRU's r is its recurrence gate (the GRU, first to name r, calls it reset gate); a description is followed
    by its symbol once ("minGRU kept share 1-z_t", not "kept share 1 - z_t 1-z_t"); the dashed path is the kind's
    own keep gate's."""
    res = run_comparison(ExperimentConfig(compare=("gru", "rglru", "mingru"), **SMALL))
    figs = view_figures("cell-state", res)
    assert title_of(figs["gates_rglru_r"]).startswith("RG-LRU recurrence gate r<sub>t</sub> per unit and step")
    assert title_of(figs["gates_gru_r"]).startswith("GRU reset gate r<sub>t</sub> per unit and step")
    assert title_of(figs["gates_mingru_1-z"]).startswith("minGRU kept share 1-z<sub>t</sub> per unit and step")
    paths = {t.meta["cell"]: t.name for t in figs["cell_flow"].data if t.meta["role"] == "update_gate_path"}
    assert paths == {"gru": "GRU update gate path ‖∏ diag(z<sub>t</sub>)‖",
                     "rglru": "RG-LRU decay path ‖∏ diag(a<sub>t</sub>)‖",
                     "mingru": "minGRU kept share path ‖∏ diag(1-z<sub>t</sub>)‖"}


def test_the_spectrum_names_what_each_kind_has():
    """The LRU has no W_hh: its panel shows its diagonal recurrence's λ (named λ, singular values |λ|, on an axis
    ticked inside the sliver of a decade they fill); the minGRU has no fixed recurrence; the RNN's is W_hh."""
    from analysis.figures.theme import log_ticks
    res = run_comparison(ExperimentConfig(compare=("rnn", "lru", "mingru"), **SMALL))
    figs = view_figures("spectrum", res)
    titles = [a.text for a in figs["eigenvalues"].layout.annotations][:3]
    assert titles == ["RNN: eigenvalues of W<sub>hh</sub>", "LRU: eigenvalues of its diagonal recurrence",
                      "minGRU: no fixed recurrence"]
    names = [t.name for t in figs["eigenvalues"].data if t.mode == "markers"]
    assert names[0].startswith("RNN W<sub>hh</sub>  ρ=") and names[1].startswith("LRU λ  ρ=") and len(names) == 2
    sv = {t.name.split("  ")[0] for t in figs["singular_values"].data}
    assert sv == {"RNN W<sub>hh</sub>", "LRU |λ|"} and "(or |λ|)" in figs["singular_values"].layout.yaxis.title.text
    assert log_ticks(0.91, 1.0)["ticktext"] == ["0.92", "0.94", "0.96", "0.98", "1"]


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
