r"""The timeline of watched runs (``analysis.watch`` / ``load_run``): gradient dynamics over training.

    timeline_figures(runs, layer=-1) -> {"timeline": fig, "eigenvalues": fig}

``timeline``: one column per run (side by side, e.g. clipping on / off), rows sharing the training-step axis:
  1. heatmap of log10 ||dL/dh_t|| over (training step x time step t), the total derivative of the training loss,
     geometric mean over the batch, on ONE FIXED colour scale [ZMIN, ZMAX] for every run (values beyond it take
     the end colours; hover shows the true value): a healthy run never looks vanishing because of auto-scaling
  2. the training loss, with clipping events (notes with clipped = true) as red marks
  3. the memory horizon (first lag with sigma_max < threshold; a triangle at T-1 when none within the sequence)
  4. log10 sigma_max of d h_{T-1} / d h_{T-1-k} at three lags (1, about T/4 and the longest probed)
``eigenvalues``: the W_hh eigenvalues of every gate block at each probe, animated over training (slider and
play button), with the unit circle; one panel per run.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .theme import GATE_COLORS, _base_layout, subplots

ZMIN, ZMAX = -8.0, 2.0  # the fixed colour scale, log10 ||dL/dh_t||
COLORSCALE = "Viridis"
RUN_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")


def _layer_key(run, layer) -> str:
    names = run.layers
    if isinstance(layer, str):
        if layer not in names:
            raise ValueError(f"layer={layer!r}: run {run.name!r} has layers {names}")
        return layer
    if not -len(names) <= layer < len(names):
        raise ValueError(f"layer={layer}: run {run.name!r} has {len(names)} layers ({names})")
    return names[layer]


CAPTIONS = {
    "timeline": (f"Top: log10 ‖dL/dh_t‖ of the training loss (total derivative, geometric mean over the batch) at "
                 f"every recorded step and time step, one fixed colour scale [{ZMIN:g}, {ZMAX:g}] for every run. "
                 "Then the loss (orange marks: clipped steps), the memory horizon and log10 σ_max of "
                 "∂h_(T-1)/∂h_(T-1-k) at three lags, on the batch's first sequence."),
    "eigenvalues": "Eigenvalues λ of each H×H gate block of W_hh at every probe (slider: training step); outside "
                   "the dashed unit circle |λ| > 1.",
}


def _meta(runs: dict, layer, figure: str) -> dict:
    return {"runs": {k: {"header": r.header, "records": int(len(r.steps))} for k, r in runs.items()},
            "layer": layer if isinstance(layer, str) else int(layer), "zrange": [ZMIN, ZMAX],
            "caption": CAPTIONS[figure]}


def _lag_picks(lags: np.ndarray) -> list[int]:
    """Indices of three lags to draw: 1, about a quarter of the longest, the longest."""
    if not len(lags):
        return []
    want = [1, max(1, lags[-1] / 4), lags[-1]]
    idx = [int(np.argmin(np.abs(lags - w))) for w in want]
    return sorted(set(i for i in idx if lags[i] > 0))


def timeline_figure(runs: dict, layer=-1) -> go.Figure:
    """The four-row timeline, one column per run; see the module docstring."""
    keys = list(runs)
    n = len(keys)
    fig = subplots(rows=4, cols=n, shared_xaxes=True, vertical_spacing=0.07, horizontal_spacing=0.06,
                   row_heights=[0.46, 0.18, 0.18, 0.18], column_titles=[str(k) for k in keys])
    for j, key in enumerate(keys, start=1):
        r = runs[key]
        lk = _layer_key(r, layer)
        z = r.log10_grad_norm[lk].T  # (T, N): time step x training step
        T = z.shape[0]
        fig.add_trace(go.Heatmap(
            x=r.steps, y=np.arange(T), z=z, coloraxis="coloraxis", name=f"{key}: log10 ||dL/dh_t||",
            hovertemplate="step %{x}, t = %{y}<br>log10 ||dL/dh_t|| = %{z:.3f}<extra>" + str(key) + "</extra>"),
            row=1, col=j)
        fig.add_trace(go.Scatter(x=r.steps, y=r.loss, mode="lines", name=f"{key}: loss", showlegend=False,
                                 line=dict(color="#333", width=1.4),
                                 hovertemplate="step %{x}: loss %{y:.4g}<extra></extra>"), row=2, col=j)
        cs, cv = r.note_series("clipped")
        hit = cs[cv > 0]
        if len(hit):
            at = np.interp(hit, r.steps, r.loss) if len(r.steps) else np.zeros(len(hit))
            fig.add_trace(go.Scatter(x=hit, y=at, mode="markers", name="clipped", showlegend=j == 1,
                                     legendgroup="clipped", marker=dict(color="#D55E00", symbol="line-ns-open",
                                                                        size=9, line=dict(width=1.5)),
                                     hovertemplate="step %{x}: gradient clipped<extra></extra>"), row=2, col=j)
        hz = r.horizon[lk] if len(r.probe_steps) else np.zeros(0)
        none = np.isnan(hz)
        fig.add_trace(go.Scatter(x=r.probe_steps, y=hz, mode="lines+markers", name="memory horizon",
                                 showlegend=False, line=dict(color="#0072B2"), marker=dict(size=5),
                                 hovertemplate="step %{x}: horizon k = %{y}<extra></extra>"), row=3, col=j)
        if none.any():
            fig.add_trace(go.Scatter(x=r.probe_steps[none], y=np.full(int(none.sum()), r.lags[-1]), mode="markers",
                                     name="no horizon within the sequence", showlegend=j == 1, legendgroup="nohz",
                                     marker=dict(symbol="triangle-up", color="#0072B2", size=8),
                                     hovertemplate="step %{x}: none below the threshold within %{y} lags"
                                                   "<extra></extra>"), row=3, col=j)
        sig = r.log10_sigma_max[lk]
        for c, i in enumerate(_lag_picks(r.lags)):
            fig.add_trace(go.Scatter(x=r.probe_steps, y=sig[:, i], mode="lines+markers", name=f"lag k={int(r.lags[i])}",
                                     legendgroup=f"lag{c}", showlegend=j == 1, marker=dict(size=4),
                                     line=dict(color=RUN_COLORS[(c + 2) % len(RUN_COLORS)]),
                                     hovertemplate="step %{x}: log10 σ_max = %{y:.3f}<extra>" + f"k={int(r.lags[i])}"
                                                   "</extra>"), row=4, col=j)
    fig.update_layout(coloraxis=dict(cmin=ZMIN, cmax=ZMAX, colorscale=COLORSCALE,
                                     colorbar=dict(title=dict(text="log10 ‖dL/dh_t‖<br>(fixed scale)", side="right"),
                                                   len=0.45, y=1.0, yanchor="top", tickvals=list(range(-8, 3, 2)))))
    fig.update_yaxes(title_text="time step t", row=1, col=1)
    fig.update_yaxes(title_text="loss", row=2, col=1)
    fig.update_yaxes(title_text="horizon", row=3, col=1)
    fig.update_yaxes(title_text="log10 σ_max", title_font=dict(size=12), row=4, col=1)
    fig.update_yaxes(title_font=dict(size=12), row=3, col=1)
    for j in range(1, n + 1):
        fig.update_xaxes(title_text="training step", row=4, col=j)
    lname = _layer_key(runs[keys[0]], layer)
    return _base_layout(fig, f"Training timeline of {lname}: ‖dL/dh_t‖, loss, memory horizon, σ_max",
                        _meta(runs, layer, "timeline"), "timeline", "timeline", height=820, legend_bottom=True)


def eigenvalue_figure(runs: dict, layer=-1) -> go.Figure:
    """W_hh eigenvalues per gate block at every probe, animated over training, with the unit circle."""
    keys = list(runs)
    n = len(keys)
    fig = subplots(rows=1, cols=n, horizontal_spacing=0.06, column_titles=[str(k) for k in keys])
    steps = sorted({int(s) for r in runs.values() for s in r.probe_steps})
    layout = []  # per run: [(gate, trace index)]

    def points(r, lk, s):
        """The run's eigenvalues at its last probe at or before step s: {gate: complex array}."""
        i = int(np.searchsorted(r.probe_steps, s, side="right")) - 1
        return r.eigenvalues[lk][i] if i >= 0 else {}

    for j, key in enumerate(keys, start=1):
        r = runs[key]
        lk = _layer_key(r, layer)
        gates = list(dict.fromkeys(g for e in r.eigenvalues[lk] for g in e))  # the cell's own block order
        first = points(r, lk, steps[0]) if steps else {}
        for g in gates:
            ev = first.get(g, np.zeros(0, dtype=complex))
            fig.add_trace(go.Scatter(x=ev.real, y=ev.imag, mode="markers", name=f"gate {g}", legendgroup=g,
                                     showlegend=j == 1, marker=dict(color=GATE_COLORS.get(g, "#333"), size=5,
                                                                    opacity=0.7),
                                     hovertemplate="λ = %{x:.3f} %{y:+.3f}i<extra>" + f"{key} · {g}</extra>"),
                          row=1, col=j)
            layout.append((key, lk, g))
        th = np.linspace(0, 2 * np.pi, 181)
        fig.add_trace(go.Scatter(x=np.cos(th), y=np.sin(th), mode="lines", name="unit circle |λ| = 1",
                                 legendgroup="circle", showlegend=j == 1, hoverinfo="skip",
                                 line=dict(color="#888", dash="dash", width=1)), row=1, col=j)
        # fixed ranges holding every probe's eigenvalues: an animation frame does not rescale the axes
        rad = max([1.0] + [float(np.abs(v).max()) for e in r.eigenvalues[lk] for v in e.values() if len(v)])
        R = 1.08 * rad if np.isfinite(rad) else 1.08
        fig.update_xaxes(title_text="Re λ", range=[-R, R], scaleanchor=f"y{'' if j == 1 else j}", scaleratio=1,
                         row=1, col=j)
        fig.update_yaxes(title_text="Im λ" if j == 1 else None, range=[-R, R], row=1, col=j)
    moving = [i for i, tr in enumerate(fig.data) if tr.legendgroup != "circle"]
    frames = []
    for s in steps:
        data = []
        for key, lk, g in layout:
            ev = points(runs[key], lk, s).get(g, np.zeros(0, dtype=complex))
            data.append(go.Scatter(x=ev.real, y=ev.imag))
        frames.append(go.Frame(name=str(s), data=data, traces=moving))
    fig.frames = frames
    if steps:
        fig.update_layout(
            sliders=[dict(active=0, currentvalue=dict(prefix="training step "), pad=dict(t=40),
                          steps=[dict(label=str(s), method="animate",
                                      args=[[str(s)], dict(mode="immediate", frame=dict(duration=0, redraw=True),
                                                          transition=dict(duration=0))]) for s in steps])],
            updatemenus=[dict(type="buttons", direction="left", showactive=False, x=0, y=-0.32, xanchor="left",
                              buttons=[dict(label="▶ play", method="animate",
                                            args=[None, dict(frame=dict(duration=300, redraw=True), fromcurrent=True)]),
                                       dict(label="❚❚ pause", method="animate",
                                            args=[[None], dict(mode="immediate", frame=dict(duration=0))])])])
    lname = _layer_key(runs[keys[0]], layer)
    fig = _base_layout(fig, f"W_hh eigenvalues of {lname} per gate block over training, with the unit circle",
                       _meta(runs, layer, "eigenvalues"), "timeline", "eigenvalues", height=560)
    fig.update_layout(margin=dict(b=150))
    return fig


def timeline_figures(runs: dict, layer=-1) -> dict:
    """{"timeline": ..., "eigenvalues": ...} for the runs ({name: RunData}); empty for no runs."""
    if not runs:
        return {}
    figs = {"timeline": timeline_figure(runs, layer)}
    if any(e for r in runs.values() for per_probe in r.eigenvalues.values() for e in per_probe):
        figs["eigenvalues"] = eigenvalue_figure(runs, layer)  # not for cells with no fixed recurrence (minGRU)
    return figs
