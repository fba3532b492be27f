"""analysis.figures: every view builds for RNN / LSTM / GRU results, the traces hold the engine's numbers, the
figures carry their config, and slides are 1920x1080 with projector-sized fonts."""
from __future__ import annotations

import math
import re

import numpy as np
import plotly.graph_objects as go
import pytest

from analysis import figures
from analysis.config import ExperimentConfig
from analysis.experiment import run_comparison
from analysis.training import Trainer
from rnn_models.config import ACTIVATION_GAMMA

SMALL = dict(seq_len=12, hidden_size=6, batch_size=4, seed=0)


@pytest.fixture(scope="module")
def results():
    return run_comparison(ExperimentConfig(compare=("rnn", "lstm", "gru"), task="adding", **SMALL))


@pytest.fixture(scope="module")
def histories():
    cfg = ExperimentConfig(compare=("rnn", "lstm"), task="adding", **SMALL)
    out = {}
    for cell in cfg.cells:
        tr = Trainer(cfg.for_cell(cell))
        tr.run(3)
        tr.update(clip="norm", clip_threshold=0.01)
        tr.run(3)
        h = tr.history()
        h["settings"] = [r.settings for r in tr.records]
        h["nonfinite"] = [r.nonfinite for r in tr.records]
        out[cell] = h
    return out


def by_role(fig, role, cell=None):
    return [t for t in fig.data if isinstance(t.meta, dict) and t.meta.get("role") == role
            and (cell is None or t.meta.get("cell") == cell)]


def same(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert a.shape == b.shape
    ok = np.isfinite(a) & np.isfinite(b)
    np.testing.assert_allclose(a[ok], b[ok], rtol=1e-12, atol=0)
    return ok


# ---- every view builds ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("view", figures.VIEWS)
def test_every_view_builds_for_each_cell(results, histories, view, cell):
    res = {cell: results[cell]}
    hist = {cell: histories[cell]} if cell in histories else {"rnn": histories["rnn"]}
    figs = figures.view_figures(view, res, hist)
    assert figs, f"{view} gave no figure for {cell}"
    for name, fig in figs.items():
        assert re.fullmatch(r"[A-Za-z0-9_]+", name), name
        assert isinstance(fig, go.Figure)
        assert fig.layout.meta["view"] == view and fig.layout.meta["figure"] == name
        assert fig.layout.title.text
        fig.to_json()  # serializable


def test_training_view_needs_a_history(results):
    assert figures.view_figures("training", results, None) == {}
    with pytest.raises(ValueError, match="view="):
        figures.view_figures("nope", results)


def test_meta_holds_the_config(results):
    fig = figures.view_figures("gradient-flow", results)["grad_norm"]
    meta = fig.layout.meta
    cfg = ExperimentConfig.from_dict(meta["config"])
    assert cfg.cells == ("rnn", "lstm", "gru")
    assert cfg.seq_len == 12 and cfg.hidden_size == 6 and cfg.task == "adding"
    assert set(meta["configs"]) == {"rnn", "lstm", "gru"}
    for cell, d in meta["configs"].items():
        assert d == results[cell].config.to_dict()


# ---- the numbers are the engine's -------------------------------------------------------------------------------
def test_grad_norm_trace_equals_result(results):
    fig = figures.view_figures("gradient-flow", results)["grad_norm"]
    for cell, r in results.items():
        (tr,) = by_role(fig, "grad_norm", cell)
        same(tr.y, r.grad.grad_norm)
        np.testing.assert_array_equal(tr.x, np.arange(r.config.seq_len))
        lo, hi = by_role(fig, "band", cell)[::-1]
        same(lo.y, r.grad.grad_norm_band[0])
        same(hi.y, r.grad.grad_norm_band[1])
    assert fig.layout.yaxis.type == "log"


def test_grad_norm_below_float64_is_drawn_as_exact_log10_to_the_end():
    """lru-t2000 (T = 2000): the LSTM's ||dL/dh_0|| ~ 10^-399 and the GRU's ~ 10^-368 are 0 as floats, so on a log axis
    their lines stopped near t = 400. The chart is then a linear axis of the exact log10 (ticks "10⁻⁴⁰⁰"): every
    line and band holds the result's log10 at every t; the band is the log-space quantile of the same logs."""
    from analysis.figures.gradient_flow import FLOAT64_FLOOR
    from analysis.presets import PRESETS
    res = run_comparison(PRESETS["lru-t2000"].config, only="gradients")
    assert (res["lstm"].grad.grad_norm == 0).any() and res["lstm"].grad.log10_grad_norm[0] < -390  # the float's 0
    fig = figures.view_figures("gradient-flow", res)["grad_norm"]
    assert fig.layout.yaxis.type == "linear" and "10⁻⁴⁰⁰" in fig.layout.yaxis.ticktext
    ticks = dict(zip(fig.layout.yaxis.tickvals, fig.layout.yaxis.ticktext))
    assert ticks[-300] == "10⁻³⁰⁰" and ticks[0] == "1"
    for cell, r in res.items():
        (tr,) = by_role(fig, "grad_norm", cell)
        assert np.isfinite(np.asarray(tr.y, float)).all(), cell  # drawn to t = 0
        np.testing.assert_array_equal(np.asarray(tr.y, float), r.grad.log10_grad_norm)
        lo, hi = by_role(fig, "band", cell)[::-1]
        np.testing.assert_array_equal(np.asarray(lo.y, float), r.grad.log10_grad_norm_band[0])
        np.testing.assert_array_equal(np.asarray(hi.y, float), r.grad.log10_grad_norm_band[1])
        assert np.isfinite(np.asarray(lo.y, float)).all() and np.isfinite(np.asarray(hi.y, float)).all()
    assert float(np.min(by_role(fig, "grad_norm", "lstm")[0].y)) < FLOAT64_FLOOR - 80
    assert any(sh.y0 == FLOAT64_FLOOR for sh in fig.layout.shapes)  # where float64 ends, marked
    assert "below float64's range" in fig.layout.meta["caption"]
    # where the band is a normal float, its exact log10 is the log10 of the float band
    ok = res["lstm"].grad.grad_norm_band > 1e-300
    np.testing.assert_allclose(res["lstm"].grad.log10_grad_norm_band[ok],
                               np.log10(res["lstm"].grad.grad_norm_band[ok]), rtol=0, atol=1e-9)
    from analysis.result_json import result_to_dict
    d = result_to_dict(res["lstm"])  # the JSON keeps the band's exact log10 too
    assert d["grad_norm_band"]["p10"][0] == 0 and d["log10_grad_norm_band"]["p10"][0] < -390
    assert d["log10_grad_norm_band"]["p90"] == list(res["lstm"].grad.log10_grad_norm_band[1])
    # the LRU alone stays within float64: the ordinary log axis of the float values
    fig = figures.view_figures("gradient-flow", {"lru": res["lru"]})["grad_norm"]
    assert fig.layout.yaxis.type == "log"
    same(by_role(fig, "grad_norm", "lru")[0].y, res["lru"].grad.grad_norm)


def test_log10_quantiles_are_torch_quantiles_in_log_space():
    """log10 of torch.quantile(10^logs) (linear interpolation), exact below the float's range: a quantile scales
    with its data, so log10 q(10^(logs + c)) - c is the reference for any shift c."""
    import torch

    from analysis.gradient_stage import log10_quantiles
    g = torch.Generator().manual_seed(0)
    logs = torch.randn(7, 16, generator=g, dtype=torch.float64) * 3  # (T, B)
    logs[2, :5] = -math.inf  # exact zeros in some sequences
    logs[3] = -math.inf  # in all of them
    want = torch.log10(torch.quantile(torch.pow(10.0, logs), torch.tensor([0.1, 0.9], dtype=torch.float64), dim=1))
    np.testing.assert_allclose(log10_quantiles(logs), want.numpy(), rtol=0, atol=1e-12)
    far = log10_quantiles(logs - 500.0)  # 10^(logs - 500) is 0 in float64
    assert np.isfinite(far[:, [0, 1, 4, 5, 6]]).all() and np.isneginf(far[:, 3]).all()  # row 3: all zeros
    np.testing.assert_allclose(far + 500.0, want.numpy(), rtol=0, atol=1e-10)
    for B in (1, 2, 5):  # few sequences: the positions q (B - 1) fall on and between the sorted values
        x = logs[:, :B].clamp(min=-5)
        want = torch.log10(torch.quantile(torch.pow(10.0, x), torch.tensor([0.1, 0.9], dtype=torch.float64), dim=1))
        np.testing.assert_allclose(log10_quantiles(x), want.numpy(), rtol=0, atol=1e-12)


def test_jacobian_traces_equal_result_and_bound(results):
    fig = figures.view_figures("jacobians", results)["jacobian_spectral_norm"]
    for cell, r in results.items():
        (sn,) = by_role(fig, "spectral_norm", cell)
        same(sn.y, 10.0 ** np.asarray(r.jac.spectral_norm))
        np.testing.assert_array_equal(sn.x, r.jac.lag)
        (mn,) = by_role(fig, "min_singular_value", cell)
        same(mn.y, 10.0 ** np.asarray(r.jac.min_singular_value))
        symbols = list(mn.marker.symbol)
        assert symbols == ["circle" if ok else "circle-open" for ok in r.jac.min_reliable]
        bound = by_role(fig, "bound", cell)
        if cell == "rnn":
            gamma = ACTIVATION_GAMMA[r.config.activation]
            smax = r.spectra["h"]["sigma_max"]
            same(bound[0].y, (gamma * smax) ** np.asarray(r.jac.lag, float))
            assert bound[0].line.dash == "dash"
        else:
            assert bound == []
    horizons = [r.memory_horizon for r in results.values() if r.memory_horizon is not None]
    xs = [s.x0 for s in fig.layout.shapes if s.type == "line" and s.x0 == s.x1]
    for h in horizons:
        assert h in xs
    assert any("threshold" in (a.text or "") for a in fig.layout.annotations)


def test_jacobian_marks_unreliable_points_hollow():
    r = run_comparison(ExperimentConfig(cell="rnn", seq_len=40, hidden_size=8, batch_size=2))["rnn"]
    assert not bool(np.all(r.jac.min_reliable)), "this config should reach float resolution"
    fig = figures.view_figures("jacobians", {"rnn": r})["jacobian_spectral_norm"]
    (mn,) = by_role(fig, "min_singular_value", "rnn")
    assert "circle-open" in list(mn.marker.symbol)


def test_singular_values_per_lag(results):
    fig = figures.view_figures("jacobians", results)["jacobian_singular_values"]
    r = results["lstm"]
    lstm = [t for t in fig.data if t.name.startswith("LSTM σ")]
    assert len(lstm) == r.jac.singular_values.shape[1]
    same(lstm[0].y, 10.0 ** r.jac.singular_values[:, 0])


def test_spectrum_eigenvalues_and_lyapunov(results):
    figs = figures.view_figures("spectrum", results)
    fig = figs["eigenvalues"]
    for cell, r in results.items():
        for block, s in r.spectra.items():
            tr = [t for t in fig.data if t.name.startswith(f"{figures.CELL_LABELS[cell]} ") and
                  (f"W<sub>hh</sub>[{block}]" in t.name or (block == "h" and "W<sub>hh</sub> " in t.name))]
            assert len(tr) == 1, (cell, block)
            np.testing.assert_array_equal(tr[0].x, np.asarray(s["eigenvalues"]).real)
            np.testing.assert_array_equal(tr[0].y, np.asarray(s["eigenvalues"]).imag)
    assert any(t.name == "unit circle |λ| = 1" for t in fig.data)
    bars = [t for t in figs["lyapunov"].data if t.type == "bar"]
    assert len(bars) == 3
    same(bars[0].y, results["rnn"].jac.lyapunov)


def test_cell_state_carousel_gates_and_rnn_note(results):
    figs = figures.view_figures("cell-state", results)
    lstm, gru = results["lstm"], results["gru"]
    (full,) = by_role(figs["cell_flow"], "cell_full", "lstm")
    (car,) = by_role(figs["cell_flow"], "cell_carousel", "lstm")
    same(full.y, 10.0 ** lstm.jac.cell_full)
    same(car.y, 10.0 ** lstm.jac.cell_carousel)
    assert "carousel" in car.name and "full" in full.name
    (z,) = by_role(figs["cell_flow"], "update_gate_path", "gru")
    same(z.y, 10.0 ** gru.jac.update_gate_path)
    for g in ("f", "i", "o"):
        np.testing.assert_array_equal(figs[f"gates_lstm_{g}"].data[0].z, lstm.gates[g].T)
    for g in ("z", "r"):
        np.testing.assert_array_equal(figs[f"gates_gru_{g}"].data[0].z, gru.gates[g].T)
    sat = figs["gate_saturation"]
    lstm_bar = [t for t in sat.data if t.name == "LSTM"][0]
    for x, y in zip(lstm_bar.x, lstm_bar.y):
        if x in lstm.saturation:
            assert y == lstm.saturation[x]
    only_rnn = figures.view_figures("cell-state", {"rnn": results["rnn"]})
    assert "cell_flow" not in only_rnn
    hidden = only_rnn["hidden_rnn"]
    np.testing.assert_array_equal(hidden.data[0].z, results["rnn"].hidden.T)
    assert any("gated cells" in (a.text or "") for a in hidden.layout.annotations)


def test_training_figures(results, histories):
    figs = figures.view_figures("training", results, histories)
    loss = figs["training_loss"]
    for cell, h in histories.items():
        (tr,) = by_role(loss, "loss", cell)
        same(tr.y, h["loss"])
        np.testing.assert_array_equal(tr.x, h["step"])
    chance = results["rnn"].spec.chance_loss
    assert any(s.y0 == chance == s.y1 for s in loss.layout.shapes)
    assert any("chance" in (a.text or "") for a in loss.layout.annotations)
    gn = figs["training_grad_norm"]
    (before,) = by_role(gn, "grad_norm_before", "rnn")
    (after,) = by_role(gn, "grad_norm_after", "rnn")
    same(before.y, histories["rnn"]["grad_norm_before"])
    same(after.y, histories["rnn"]["grad_norm_after"])
    (clipped,) = by_role(gn, "clipped", "rnn")
    np.testing.assert_array_equal(clipped.x, histories["rnn"]["step"][histories["rnn"]["clipped"]])
    assert gn.layout.yaxis.type == "log"
    # the settings change at step 3 is marked with its value
    texts = [a.text for a in gn.layout.annotations]
    assert any(t.startswith("step 3:") and "clip=norm" in t for t in texts), texts
    # the heatmap in gradient-flow and the spectral radius in spectrum
    hm = figures.view_figures("gradient-flow", results, histories)["grad_heatmap_training"]
    z = np.asarray(hm.data[0].z, float)
    same(z, np.log10(histories["rnn"]["grad_norm_t"]))
    sr = figures.view_figures("spectrum", results, histories)["spectral_radius_training"]
    same(sr.data[0].y, histories["rnn"]["spectral_radius"])


def test_training_marks_nonfinite_steps(results):
    T = 12
    h = {"step": np.arange(4), "loss": np.array([1.0, 0.9, np.nan, np.nan]),
         "grad_norm_before": np.array([1.0, 2.0, np.inf, np.nan]), "grad_norm_after": np.array([1.0, 1.0, np.nan, np.nan]),
         "clipped": np.array([False, True, False, False]), "changed": [[], [], [], []],
         "spectral_radius": np.ones(4), "grad_norm_t": np.ones((4, T)),
         "nonfinite": [None, None, {"quantity": "grad_norm", "timestep": 7, "step": 2}, None]}
    gn = figures.view_figures("training", results, {"rnn": h})["training_grad_norm"]
    texts = [a.text for a in gn.layout.annotations]
    assert any("NaN/Inf" in t and "step 2" in t and "t=7" in t for t in texts), texts


def test_variant_keys_get_their_own_colour(results):
    r = results["lstm"]
    res = {"lstm": r, "lstm · forget_bias=0": r}
    fig = figures.view_figures("gradient-flow", res)["grad_norm"]
    a, b = by_role(fig, "grad_norm", "lstm")[0], by_role(fig, "grad_norm", "lstm · forget_bias=0")[0]
    assert a.line.color == figures.CELL_COLORS["lstm"] and b.line.color != a.line.color
    assert "forget_bias=0" in b.name
    figs = figures.view_figures("cell-state", res)
    assert "gates_lstm_f" in figs and "gates_lstm_forget_bias_0_f" in figs


# ---- display, slides, modebar ------------------------------------------------------------------------------------
def test_apply_display_changes_only_the_look(results):
    fig = figures.view_figures("gradient-flow", results)["grad_norm"]
    ys = [np.asarray(t.y).copy() for t in fig.data]
    figures.apply_display(fig, log_y=False, band=False)
    assert fig.layout.yaxis.type == "linear"
    assert all(t.visible is False for t in by_role(fig, "band"))
    for t, y in zip(fig.data, ys):
        np.testing.assert_array_equal(np.asarray(t.y), y)


def test_slide_layout(results):
    fig = figures.view_figures("jacobians", results)["jacobian_singular_values"]
    before = fig.to_json()
    slide = figures.slide_layout(fig)
    assert fig.to_json() == before, "slide_layout must not change the screen figure"
    assert (slide.layout.width, slide.layout.height) == (figures.SLIDE_W, figures.SLIDE_H) == (1920, 1080)
    assert slide.layout.title.font.size >= 40
    for ax in ("xaxis", "yaxis", "xaxis2", "yaxis2"):
        assert slide.layout[ax].title.font.size >= 28
        assert slide.layout[ax].tickfont.size >= 28
    assert all(a.font.size >= 28 for a in slide.layout.annotations)
    assert slide.layout.meta == fig.layout.meta


def test_modebar_config():
    opts = figures.MODEBAR_CONFIG["toImageButtonOptions"]
    assert opts["format"] == "png" and (opts["width"], opts["height"], opts["scale"]) == (1920, 1080, 1)
    assert opts["filename"]
