"""Small figure defects (issue 19) and names each kind's figures carry, each also looked at in a screenshot:
overlapping singular values said, the saturation chart zoomed and labelled, bands and dotted derivatives visible,
horizon labels where no line runs and off each other, gate maps, gate paths and spectra named by their own kind.
(The log-axis ticks of every figure are checked with the zoo in test_figure_labels.)"""
from __future__ import annotations

import numpy as np

from analysis.config import ExperimentConfig
from analysis.experiment import run_comparison
from analysis.figures import view_figures
from test_figure_labels import CELLS, SMALL, title_of


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
