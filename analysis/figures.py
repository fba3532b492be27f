r"""Figures of the gradient-dynamics lab: ``ExperimentResult`` -> plotly figures (no Streamlit here).

Shared by the dashboard (``dashboard/views``) and the command line's export (``analysis.export``)::

    view_figures(view, results, histories=None) -> {file_safe_name: go.Figure}
    slide_layout(fig) -> fig laid out on a 1920x1080 slide with projector-sized fonts
    apply_display(fig, log_y=..., band=...)     display-only changes (never recompute anything)

Every figure keeps its numbers in its traces (x / y / z arrays) and the experiment's config in
``fig.layout.meta`` ({"config": the comparison's ExperimentConfig.to_dict(), "configs": {cell: ...},
"view", "figure"}), so an exported file can be redrawn. The numbers are the engine's: Jacobian quantities
arrive as log10 values and are shown as 10**value; the only curve computed here is the Pascanu bound
(gamma * sigma_max(W_hh))^k and, in the activations view, phi and phi' from ``rnn_models.cells``.

Notation follows the course notes: h_t = phi(W_hh h_{t-1} + W_xh x_t + b), gamma = sup|phi'|,
LSTM c_t = f_t * c_{t-1} + i_t * g_t, GRU h_t = (1 - z_t) * n_t + z_t * h_{t-1}.
"""
from __future__ import annotations

import math
import re

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rnn_models.config import ACTIVATION_GAMMA, ACTIVATIONS, CELLS

VIEWS = ("gradient-flow", "jacobians", "spectrum", "cell-state", "training", "activations")
SLIDE_W, SLIDE_H = 1920, 1080

CELL_COLORS = {"rnn": "#D55E00", "lstm": "#0072B2", "gru": "#009E73"}  # Okabe-Ito: vermillion, blue, green
CELL_LABELS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
GATE_COLORS = {"h": "#D55E00", "i": "#E69F00", "f": "#56B4E9", "g": "#CC79A7", "o": "#666666",
               "r": "#E69F00", "z": "#56B4E9", "n": "#CC79A7"}
GATE_NAMES = {"i": "input gate i_t", "f": "forget gate f_t", "o": "output gate o_t", "g": "candidate g_t",
              "z": "update gate z_t", "r": "reset gate r_t", "n": "candidate n_t"}
ACTIVATION_COLORS = {"tanh": "#D55E00", "relu": "#0072B2", "sigmoid": "#009E73", "linear": "#666666"}
VARIANT_DASHES = ("solid", "dash", "dot", "dashdot")
LAYER_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
SCREEN_HEIGHT = 460
SAMPLES_SHOWN = 12  # rows of the samples table (newest first)

MODEBAR_CONFIG: dict = {
    "displaylogo": False,
    "toImageButtonOptions": {"format": "png", "width": SLIDE_W, "height": SLIDE_H, "scale": 1,
                             "filename": "gradient-dynamics"},
}

_AXIS = dict(gridcolor="#E5EAF2", linecolor="#C8D0DC", ticks="", zerolinecolor="#E5EAF2", zerolinewidth=1,
             automargin=True, title=dict(standoff=12))
# a small white template: assigning plotly's own "plotly_white" costs ~60 ms per figure (it copies every trace
# type's defaults); this one costs under 1 ms
TEMPLATE = go.layout.Template(layout=dict(
    paper_bgcolor="white", plot_bgcolor="white", font=dict(color="#2a3f5f"), hoverlabel=dict(align="left"),
    colorway=list(CELL_COLORS.values()) + ["#E69F00", "#56B4E9", "#CC79A7", "#666666"],
    xaxis=_AXIS, yaxis=_AXIS, coloraxis=dict(colorbar=dict(outlinewidth=0, ticks="")),
))


def new_figure(data=None) -> go.Figure:
    return go.Figure(data=data, layout=dict(template=TEMPLATE))


def subplots(**kw) -> go.Figure:
    fig = make_subplots(figure=new_figure(), **kw)
    fig.layout.meta = {"_subplots": True}
    return fig


# ---- small helpers ------------------------------------------------------------------------------------------
def pow10(a) -> np.ndarray:
    """10**a for the engine's log10 values, for a log axis: log10 = -inf (an exact 0) becomes NaN, a gap (plotly
    would otherwise draw the line down to the axis)."""
    a = np.asarray(a, dtype=float)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        return np.where(np.isneginf(a), np.nan, np.power(10.0, a))


def positive(a) -> np.ndarray:
    """Raw values for a log axis: exact zeros become NaN (a gap); everything else unchanged."""
    a = np.asarray(a, dtype=float)
    return np.where(a == 0, np.nan, a)


def _log10(a) -> np.ndarray:
    """log10 for heatmaps (0 -> NaN: an empty cell rather than -inf)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(np.asarray(a, dtype=float))
    return np.where(np.isinf(out), np.nan, out)


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def cell_of(key: str) -> str:
    """The cell a results/histories key belongs to ("rnn", "lstm · clip norm" -> "lstm")."""
    head = str(key).split()[0].lower() if str(key).split() else ""
    return head if head in CELLS else "rnn"


def color_of(key: str, keys=()) -> str:
    """The cell's colour; a second run of the same cell (a variant) lighter, a third darker."""
    c = cell_of(key)
    same = [k for k in keys if cell_of(k) == c]
    i = same.index(key) if key in same else (0 if key == c else 1)
    base = CELL_COLORS[c]
    if i == 0:
        return base
    h = base.lstrip("#")
    rgb = [int(h[j:j + 2], 16) for j in (0, 2, 4)]
    mix = [v + (255 - v) * 0.55 for v in rgb] if i % 2 else [v * 0.55 for v in rgb]
    return "#" + "".join(f"{int(round(v)):02x}" for v in mix)


def safe_key(key: str) -> str:
    """A results key as a file-safe name part ("lstm · forget_bias=0" -> "lstm_forget_bias_0")."""
    return re.sub(r"[^A-Za-z0-9]+", "_", str(key)).strip("_") or "run"


def label_of(key: str) -> str:
    """"lstm · forget_bias=0" -> "LSTM · forget_bias=0"."""
    c = cell_of(key)
    rest = str(key)[len(c):]
    return CELL_LABELS[c] + rest


def config_meta(results: dict) -> dict:
    """{"config": the comparison's config (compare = the cells shown), "configs": {key: that run's own config}}.

    Variant runs ("lstm · forget_bias=0") appear in "configs" only; "config" is the main comparison.
    """
    if not results:
        return {"config": None, "configs": {}}
    plain = [k for k in results if k in CELLS] or list(results)[:1]
    first = results[plain[0]].config
    combined = first.to_dict()
    if len(plain) > 1:
        try:
            combined = first.replace(cell=plain[0], compare=tuple(plain)).to_dict()
        except ValueError:  # a field that cannot be combined: keep the first cell's
            combined = first.to_dict()
    return {"config": combined, "configs": {k: r.config.to_dict() for k, r in results.items()}}


def _base_layout(fig: go.Figure, title: str, meta: dict, view: str, name: str, *, height: int = SCREEN_HEIGHT,
                 legend_bottom: bool = False) -> go.Figure:
    sub = isinstance(fig.layout.meta, dict) and fig.layout.meta.get("_subplots")
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left", font=dict(size=17)),
        height=height, margin=dict(l=70, r=30, t=60, b=60),
        meta={**meta, "view": view, "figure": name}, font=dict(size=13),
        legend=dict(font=dict(size=12), bgcolor="rgba(255,255,255,0.7)"),
        hoverlabel=dict(namelength=-1),
    )
    if sub:  # room for the subplot titles under the figure title
        fig.update_layout(margin=dict(t=85), title=dict(y=0.98, yanchor="top"))
    if legend_bottom:
        fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.18, xanchor="left", x=0),
                          margin=dict(b=110))
    return fig


def _log_range(*arrays, floor_decades: float = 60.0, pad: float = 0.4) -> list[float] | None:
    """A log10 y-range covering the finite values of the log10 arrays (at most floor_decades deep)."""
    vals = np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays if a is not None] or [np.zeros(0)])
    vals = vals[np.isfinite(vals)]
    if not vals.size:
        return None
    hi, lo = float(vals.max()), float(vals.min())
    lo = max(lo, hi - floor_decades)
    if hi - lo < 1:
        lo, hi = lo - 0.5, hi + 0.5
    return [lo - pad, hi + pad]


def _vline(fig, x, text, color, slot):
    """A vertical marker with its label near the top (labels staggered by slot)."""
    fig.add_shape(type="line", x0=x, x1=x, y0=0, y1=1, yref="paper", line=dict(color=color, width=1.5, dash="dot"))
    fig.add_annotation(x=x, y=1 - 0.075 * slot, yref="paper", text=text, showarrow=False, xanchor="left",
                       xshift=3, font=dict(color=color, size=12), bgcolor="rgba(255,255,255,0.75)")


def _hline(fig, y, text, *, log=False, color="#888", position="left", row=None, col=None):
    """A dashed horizontal reference line with its label just above it (log axes take log10 positions)."""
    kw = {} if row is None else {"row": row, "col": col}
    fig.add_hline(y=y, line=dict(color=color, dash="dash", width=1.2), **kw)
    xref = "paper" if row is None else (f"x{'' if col == 1 else col} domain")
    yref = "y" if row is None else f"y{'' if col == 1 else col}"
    fig.add_annotation(x=0.01 if position == "left" else 0.99, xref=xref, y=math.log10(y) if log else y, yref=yref,
                       text=text, showarrow=False, xanchor=position, yanchor="bottom",
                       font=dict(color="#555", size=12), bgcolor="rgba(255,255,255,0.7)")


# ---- 1. gradient flow ---------------------------------------------------------------------------------------
def truncation_cuts(T: int, k: int) -> list[int]:
    """The steps t where a truncated-BPTT window starts (windows of k steps ending at the last step): T-k, T-2k, ...

    The gradient never flows from step t back to step t-1 across such a cut (the engine detaches the state there).
    """
    if k <= 0 or k >= T:
        return []
    return list(range(T - k, 0, -k))


def truncated_figure(results: dict, meta: dict) -> go.Figure | None:
    """Full BPTT (solid) vs truncated BPTT (dashed, same colour, open circles) on the same axes, with the cut at
    t = T-k marked.

    The truncated gradient is the engine's ``result.truncated`` (the same loss, the state detached every k steps).
    Where it is exactly 0 (no path back across the cut) the dashed line has a gap on the log axis and the region
    is shaded; where the loss is read at every step, every later cut (T-2k, T-3k, ...) is marked too.
    """
    items = [(k, r) for k, r in results.items() if getattr(r, "truncated", None) is not None and r.config.truncate]
    if not items:
        return None
    fig = new_figure()
    first_cuts, later_cuts, zero_regions = {}, set(), []
    t_max = 0
    for key, r in items:
        color, lab = color_of(key, results), label_of(key)
        full = np.asarray(r.grad.grad_norm, float)
        tr = np.asarray(r.truncated.grad_norm, float)
        T, k = len(full), int(r.config.truncate)
        t_max = max(t_max, T - 1)
        t = np.arange(T)
        # the truncated line first (underneath), wider and dashed, so the full line stays visible on top of it
        fig.add_trace(go.Scatter(x=t, y=positive(tr), name=f"{lab} truncated BPTT, k={k}", legendgroup=key,
                                 mode="lines+markers" if T <= 200 else "lines",
                                 line=dict(color=color, width=4, dash="dash"), opacity=0.75,
                                 marker=dict(symbol="circle-open", size=7, color=color, line=dict(width=1.5)),
                                 meta={"role": "grad_truncated", "cell": key, "k": k}, legendrank=1001,
                                 hovertemplate="t=%{x}<br>truncated ‖∂L/∂h_t‖=%{y:.3e}<extra>" + lab
                                               + f" k={k}</extra>"))
        fig.add_trace(go.Scatter(x=t, y=positive(full), name=f"{lab} full BPTT", legendgroup=key,
                                 line=dict(color=color, width=2), meta={"role": "grad_full", "cell": key},
                                 legendrank=1000,
                                 hovertemplate="t=%{x}<br>full ‖∂L/∂h_t‖=%{y:.3e}<extra>" + lab + "</extra>"))
        cuts = truncation_cuts(T, k)
        if not cuts:
            continue
        first_cuts.setdefault(cuts[0], (k, T, color))
        if np.all(tr[:cuts[0]] == 0):
            zero_regions.append(cuts[0])
        else:  # a loss at every step: each window has its own gradient; mark every cut
            later_cuts.update(cuts[1:])
    one_k = len({v[0] for v in first_cuts.values()}) == 1
    for slot, (c, (k, T, color)) in enumerate(sorted(first_cuts.items(), reverse=True)):
        right = c > t_max / 2  # the label on the side with room, so it never stretches the axis
        col = "#444" if one_k else color
        fig.add_shape(type="line", x0=c, x1=c, y0=0, y1=1, yref="paper", line=dict(color=col, width=2, dash="dot"))
        fig.add_annotation(x=c, y=1 - 0.075 * slot, yref="paper", yanchor="top", showarrow=False,
                           text=f"cut at t = T−k = {T}−{k} = {c}" + ("<br>window: t ≥ " + str(c) if right else
                                                                   f"; window: t ≥ {c}"),
                           xanchor="right" if right else "left", xshift=-4 if right else 4, align="right" if right
                           else "left", font=dict(color=col, size=12), bgcolor="rgba(255,255,255,0.8)")
    if len(later_cuts - set(first_cuts)) <= 40:
        for c in sorted(later_cuts - set(first_cuts)):
            fig.add_shape(type="line", x0=c, x1=c, y0=0, y1=1, yref="paper",
                          line=dict(color="#999", width=1, dash="dot"))
    if zero_regions:
        cut = max(zero_regions)
        fig.add_shape(type="rect", x0=-0.5, x1=cut, y0=0, y1=1, yref="paper", line=dict(width=0),
                      fillcolor="rgba(120,120,120,0.10)", layer="below")
        fig.add_annotation(x=0.01, xref="paper", y=0.98, yref="paper", xanchor="left", yanchor="top", showarrow=False,
                           align="left", text="shaded: truncated ∂L/∂h<sub>t</sub> = 0 exactly (no path back across "
                                              "the cut);<br>0 has no place on a log axis, so the dashed line stops",
                           font=dict(size=12, color="#555"), bgcolor="rgba(255,255,255,0.8)")
    fig.update_yaxes(type="log", title="‖∂L/∂h<sub>t</sub>‖  (log scale)", exponentformat="power")
    fig.update_xaxes(title="time step t  (the loss is read at the end →)", range=[-0.5, t_max + 0.5])
    ks = sorted({int(r.config.truncate) for _, r in items})
    _base_layout(fig, f"Truncated BPTT (k = {', '.join(map(str, ks))}): the gradient it keeps (dashed, ○) vs full "
                 "BPTT (solid)", meta, "gradient-flow", "grad_truncated", legend_bottom=True)
    return fig


def gradient_flow_figures(results: dict, histories: dict | None = None) -> dict[str, go.Figure]:
    meta = config_meta(results)
    view = "gradient-flow"
    figs = {}
    fig = new_figure()
    for key, r in results.items():
        color = color_of(key, results)
        g = r.grad
        T = len(g.grad_norm)
        t = np.arange(T)
        lo, hi = np.asarray(g.grad_norm_band[0], float), np.asarray(g.grad_norm_band[1], float)
        fig.add_trace(go.Scatter(x=t, y=positive(hi), name=f"{label_of(key)} 90th percentile", legendgroup=key,
                                 showlegend=False, line=dict(width=0, color=color), hoverinfo="skip",
                                 meta={"role": "band", "cell": key}))
        fig.add_trace(go.Scatter(x=t, y=positive(lo), name=f"{label_of(key)} 10th percentile", legendgroup=key,
                                 showlegend=False, line=dict(width=0, color=color), fill="tonexty",
                                 fillcolor=_rgba(color, 0.18), hoverinfo="skip", meta={"role": "band", "cell": key}))
        fig.add_trace(go.Scatter(x=t, y=positive(g.grad_norm), name=f"{label_of(key)} ‖∂L/∂h<sub>t</sub>‖",
                                 legendgroup=key, line=dict(color=color, width=2.5),
                                 meta={"role": "grad_norm", "cell": key},
                                 hovertemplate="t=%{x}<br>‖∂L/∂h_t‖=%{y:.3e}<extra>" + label_of(key) + "</extra>"))
        if g.cell_grad_norm is not None:
            fig.add_trace(go.Scatter(x=t, y=positive(g.cell_grad_norm),
                                     name=f"{label_of(key)} ‖∂L/∂c<sub>t</sub>‖ (cell state)", legendgroup=key,
                                     line=dict(color=color, width=1.5, dash="dot"), visible="legendonly",
                                     meta={"role": "cell_grad_norm", "cell": key}))
    fig.update_yaxes(type="log", title="‖∂L/∂h<sub>t</sub>‖  (log scale)", exponentformat="power")
    fig.update_xaxes(title="time step t  (the loss is read at the end →)")
    _base_layout(fig, "Gradient reaching each time step  ‖∂L/∂h<sub>t</sub>‖  (line: batch geometric mean, "
                 "band: 10–90%)", meta, view, "grad_norm")
    figs["grad_norm"] = fig
    trunc = truncated_figure(results, meta)
    if trunc is not None:
        figs["grad_truncated"] = trunc

    # training step x timestep heatmap
    hist_items = [(k, h) for k, h in (histories or {}).items() if h is not None and len(h.get("step", [])) > 0]
    if hist_items:
        n = len(hist_items)
        fig = subplots(rows=n, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                            subplot_titles=[label_of(k) for k, _ in hist_items])
        for i, (k, h) in enumerate(hist_items, start=1):
            z = _log10(np.asarray(h["grad_norm_t"], float))
            fig.add_trace(go.Heatmap(z=z, x=np.arange(z.shape[1]), y=np.asarray(h["step"]), colorscale="Viridis",
                                     name=f"{label_of(k)} log10 ‖∂L/∂h_t‖", coloraxis="coloraxis",
                                     hovertemplate="t=%{x}<br>step=%{y}<br>log10‖∂L/∂h_t‖=%{z:.2f}<extra></extra>"),
                          row=i, col=1)
            fig.update_yaxes(title_text="training step", row=i, col=1)
        fig.update_xaxes(title_text="time step t", row=n, col=1)
        fig.update_layout(coloraxis=dict(colorscale="Viridis", colorbar=dict(title="log10<br>‖∂L/∂h<sub>t</sub>‖")))
        _base_layout(fig, "Gradient over training: log10 ‖∂L/∂h<sub>t</sub>‖ by training step and time step",
                     meta, view, "grad_heatmap_training", height=max(SCREEN_HEIGHT, 220 * n + 120))
        figs["grad_heatmap_training"] = fig

    # stacked layers
    deep = [(k, r) for k, r in results.items() if r.config.num_layers > 1]
    if deep:
        n = len(deep)
        fig = subplots(rows=n, cols=1, shared_xaxes=True, vertical_spacing=0.1,
                       subplot_titles=[label_of(k) for k, _ in deep])
        for i, (k, r) in enumerate(deep, start=1):
            z = _log10(np.asarray(r.grad.per_layer, float))  # (L, T), row 0 = the bottom layer
            L = z.shape[0]
            fig.add_trace(go.Heatmap(z=z, x=np.arange(z.shape[1]), y=np.arange(1, L + 1), coloraxis="coloraxis",
                                     name=f"{label_of(k)} log10 ‖∂L/∂h_t^(l)‖ per layer",
                                     hovertemplate="t=%{x}<br>layer l=%{y}<br>log10‖∂L/∂h_t^(l)‖=%{z:.2f}"
                                                   "<extra></extra>"),
                          row=i, col=1)
            fig.update_yaxes(title_text="layer l  (1 = bottom, reads x<sub>t</sub>)", tickvals=list(range(1, L + 1)),
                             ticktext=[f"{l}" + (" (top)" if l == L else "") for l in range(1, L + 1)],
                             row=i, col=1)
        fig.update_xaxes(title_text="time step t  (the loss reads the top layer at the end →)", row=n, col=1)
        fig.update_layout(coloraxis=dict(colorscale="Viridis", colorbar=dict(title="log10<br>‖∂L/∂h‖")))
        _base_layout(fig, "Stacked layers: log10 ‖∂L/∂h<sub>t</sub><sup>(l)</sup>‖ by layer and time step",
                     meta, view, "grad_per_layer", height=max(SCREEN_HEIGHT, 200 * n + 120))
        figs["grad_per_layer"] = fig

        # the same numbers as lines: one per layer (the gaps between them are the decay through depth)
        fig = new_figure()
        for k, r in deep:
            color = color_of(k, results)
            pl = np.asarray(r.grad.per_layer, float)
            L = pl.shape[0]
            t = np.arange(pl.shape[1])
            for l in range(L - 1, -1, -1):
                top = l == L - 1
                fig.add_trace(go.Scatter(
                    x=t, y=positive(pl[l]), legendgroup=k,
                    name=f"{label_of(k)} layer {l + 1}" + (" (top)" if top else " (bottom)" if l == 0 else ""),
                    line=dict(color=color, width=3 if top else 2, dash=LAYER_DASHES[(L - 1 - l) % len(LAYER_DASHES)]),
                    opacity=1.0 if top else max(0.45, 1.0 - 0.2 * (L - 1 - l)),
                    meta={"role": "grad_layer", "cell": k, "layer": l + 1},
                    hovertemplate="t=%{x}<br>‖∂L/∂h_t‖=%{y:.3e}<extra>" + f"{label_of(k)} layer {l + 1}</extra>"))
        fig.update_yaxes(type="log", title="‖∂L/∂h<sub>t</sub><sup>(l)</sup>‖  (log scale)", exponentformat="power")
        fig.update_xaxes(title="time step t")
        _base_layout(fig, "Stacked layers: ‖∂L/∂h<sub>t</sub><sup>(l)</sup>‖ per layer (gaps between the lines: "
                     "decay through depth; slope: decay through time)", meta, view, "grad_per_layer_lines",
                     legend_bottom=True)
        figs["grad_per_layer_lines"] = fig

    # bidirectional
    bi = [(k, r) for k, r in results.items() if r.config.bidirectional]
    if bi:
        fig = new_figure()
        notes = []
        for k, r in bi:
            color, lab = color_of(k, results), label_of(k)
            pd = np.asarray(r.grad.per_direction, float)
            t = np.arange(pd.shape[1])
            for d, (label, arrow, dash, role) in enumerate((
                    ("forward direction", "→", "dash", "direction_forward"),
                    ("backward direction", "←", "dot", "direction_backward"))):
                if d < pd.shape[0]:
                    fig.add_trace(go.Scatter(
                        x=t, y=positive(pd[d]), name=f"{lab} {label} ‖∂L/∂h{arrow}<sub>t</sub>‖", legendgroup=k,
                        line=dict(color=color, dash=dash, width=2), meta={"role": role, "cell": k},
                        hovertemplate="t=%{x}<br>%{y:.3e}<extra>" + f"{lab} {label}</extra>"))
            fig.add_trace(go.Scatter(x=t, y=positive(r.grad.grad_norm),
                                     name=f"{lab} concatenated [h→<sub>t</sub>; h←<sub>t</sub>]",
                                     legendgroup=k, line=dict(color=color, width=3.5),
                                     meta={"role": "direction_combined", "cell": k},
                                     hovertemplate="t=%{x}<br>%{y:.3e}<extra>" + f"{lab} [h→; h←]</extra>"))
            if pd.shape[0] > 1 and pd.shape[1] > 1 and np.all(pd[1][:-1] == 0):
                notes.append(lab)
        if notes:
            fig.add_annotation(
                x=0.01, y=0.04, xref="paper", yref="paper", xanchor="left", yanchor="bottom", showarrow=False,
                text=f"{', '.join(notes)}: the loss reads only the last step, and h←<sub>T-1</sub> has seen x"
                     "<sub>T-1</sub> alone, so the backward direction gets no gradient before T-1<br>(set Loss steps "
                     "= all, a loss at every step as in tagging, to see both directions)",
                font=dict(size=12, color="#555"), bgcolor="rgba(255,255,255,0.8)")
        fig.update_yaxes(type="log", title="‖∂L/∂h<sub>t</sub>‖  (log scale)", exponentformat="power")
        fig.update_xaxes(title="time step t")
        _base_layout(fig, "Bidirectional: gradient reaching the forward h→<sub>t</sub>, the backward h←<sub>t</sub> "
                     "and the concatenated [h→<sub>t</sub>; h←<sub>t</sub>]", meta, view, "grad_per_direction",
                     legend_bottom=True)
        figs["grad_per_direction"] = fig
    return figs


# ---- 2. Jacobians -------------------------------------------------------------------------------------------
def pascanu_bound(result, lags) -> tuple[np.ndarray, float, float] | None:
    """(gamma * sigma_max(W_hh))^k for a vanilla RNN without layer norm, with gamma and sigma_max; else None."""
    c = result.config
    if c.cell != "rnn" or c.layer_norm:
        return None
    gamma = ACTIVATION_GAMMA[c.activation]
    smax = float(result.spectra["h"]["sigma_max"])
    k = np.asarray(lags, dtype=float)
    if gamma * smax <= 0:
        return np.where(k == 0, 1.0, 0.0), gamma, smax
    return pow10(k * math.log10(gamma * smax)), gamma, smax


def _horizon(jac, threshold: float) -> int | None:
    """The first lag whose sigma_max is below the threshold (the engine's memory-horizon rule), or None."""
    below = np.nonzero(np.asarray(jac.spectral_norm, float) < math.log10(threshold))[0]
    return int(np.asarray(jac.lag)[below[0]]) if len(below) else None


def _layer_note(results: dict) -> str:
    """" · layer 2 of 3" when the analysed layer of a stacked network is shown (the same for every result)."""
    layers = {(r.config.analysed_layer, r.config.num_layers) for r in results.values() if r.config.num_layers > 1}
    if len(layers) != 1:
        return ""
    a, L = layers.pop()
    return f"  · layer {a + 1} of {L}" + (" (top)" if a == L - 1 else "")


def jacobian_figures(results: dict, histories: dict | None = None) -> dict[str, go.Figure]:
    meta = config_meta(results)
    view = "jacobians"
    fig = new_figure()
    ranges = []
    thresholds = set()
    slot = 0
    for key, r in results.items():
        color, lab = color_of(key, results), label_of(key)
        j = r.jac
        lag = np.asarray(j.lag)
        hz = r.memory_horizon
        hz_text = f"horizon k={hz}" if hz is not None else f"no horizon within {int(lag.max()) if lag.size else 0} lags"
        direction = " forward direction" if r.jac_backward is not None else ""
        fig.add_trace(go.Scatter(x=lag, y=pow10(j.spectral_norm), name=f"{lab} σ<sub>max</sub>{direction}  ({hz_text})",
                                 legendgroup=key, line=dict(color=color, width=2.5),
                                 meta={"role": "spectral_norm", "cell": key},
                                 hovertemplate="k=%{x}<br>σ_max=%{y:.3e}<extra>" + lab + "</extra>"))
        rel = np.asarray(j.min_reliable, dtype=bool)
        symbols = np.where(rel, "circle", "circle-open")
        text = np.where(rel, "reliable", "unreliable: below float resolution")
        fig.add_trace(go.Scatter(x=lag, y=pow10(j.min_singular_value), mode="lines+markers",
                                 name=f"{lab} σ<sub>min</sub>  (hollow: unreliable)",
                                 legendgroup=key, line=dict(color=color, width=1.2, dash="dot"),
                                 marker=dict(symbol=symbols, size=5, color=color, line=dict(color=color, width=1)),
                                 text=text, meta={"role": "min_singular_value", "cell": key},
                                 hovertemplate="k=%{x}<br>σ_min=%{y:.3e}<br>%{text}<extra>" + lab + "</extra>"))
        ranges += [j.spectral_norm, np.where(rel, j.min_singular_value, np.nan)]
        if r.jac_backward is not None:
            jb = r.jac_backward
            bhz = _horizon(jb, r.config.horizon_threshold)
            bhz_text = f"horizon k={bhz}" if bhz is not None else "no horizon"
            fig.add_trace(go.Scatter(x=np.asarray(jb.lag), y=pow10(jb.spectral_norm),
                                     name=f"{lab} σ<sub>max</sub> backward direction  ({bhz_text})",
                                     legendgroup=key, line=dict(color=color, width=2, dash="dash"),
                                     meta={"role": "spectral_norm_backward", "cell": key},
                                     hovertemplate="k=%{x}<br>σ_max=%{y:.3e}<extra>" + lab + " backward</extra>"))
            ranges.append(jb.spectral_norm)
        if j.state_spectral_norm is not None:
            fig.add_trace(go.Scatter(x=lag, y=pow10(j.state_spectral_norm),
                                     name=f"{lab} σ<sub>max</sub> of the full state [h; c]", legendgroup=key,
                                     line=dict(color=color, width=1.5, dash="longdash"), visible="legendonly",
                                     meta={"role": "state_spectral_norm", "cell": key}))
        b = pascanu_bound(r, lag)
        if b is not None:
            y, gamma, smax = b
            fig.add_trace(go.Scatter(x=lag, y=y, name=f"{lab} bound (γ·σ<sub>max</sub>(W<sub>hh</sub>))<sup>k</sup>"
                                     f" = ({gamma:g}·{smax:.3g})<sup>k</sup>", legendgroup=key,
                                     line=dict(color=color, width=1.5, dash="dashdot" if r.jac_backward is not None
                                               else "dash"), meta={"role": "bound", "cell": key},
                                     hovertemplate="k=%{x}<br>bound=%{y:.3e}<extra>Pascanu bound</extra>"))
        if hz is not None:
            _vline(fig, hz, f"{lab} horizon k={hz}", color, slot)
            slot += 1
        thresholds.add(float(r.config.horizon_threshold))
    for th in thresholds:
        _hline(fig, th, f"horizon threshold {th:g}", log=True)
    rng = _log_range(*ranges, [math.log10(t) for t in thresholds], [0.0])
    fig.update_yaxes(type="log", title="singular value of ∂h<sub>T-1</sub>/∂h<sub>T-1-k</sub>  (log)",
                     exponentformat="power", range=rng)
    fig.update_xaxes(title="lag k  (steps back from the last step)")
    _base_layout(fig, "How far back can the last state feel a change?  ‖∂h<sub>T-1</sub>/∂h<sub>T-1-k</sub>‖ by lag"
                 + _layer_note(results), meta, view, "jacobian_spectral_norm", height=520, legend_bottom=True)
    figs = {"jacobian_spectral_norm": fig}

    # top singular values per lag, one panel per cell
    keys = list(results)
    fig = subplots(rows=1, cols=len(keys), shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[label_of(k) for k in keys])
    all_sv = []
    for ci, key in enumerate(keys, start=1):
        r = results[key]
        color = color_of(key, results)
        sv = np.asarray(r.jac.singular_values, float)
        lag = np.asarray(r.jac.lag)
        all_sv.append(sv)
        n = sv.shape[1] if sv.ndim == 2 else 0
        for i in range(n):
            fig.add_trace(go.Scatter(x=lag, y=pow10(sv[:, i]), name=f"{label_of(key)} σ<sub>{i + 1}</sub>",
                                     legendgroup=key, showlegend=False,
                                     line=dict(color=color, width=2.5 if i == 0 else 1.2),
                                     opacity=1.0 if i == 0 else max(0.3, 0.9 - 0.08 * i),
                                     hovertemplate=f"σ_{i + 1}" + "<br>k=%{x}<br>%{y:.3e}<extra>" + label_of(key) + "</extra>"),
                          row=1, col=ci)
        fig.update_xaxes(title_text="lag k", row=1, col=ci)
    fig.update_yaxes(type="log", exponentformat="power", range=_log_range(*all_sv))
    fig.update_yaxes(title_text="σ<sub>i</sub>(∂h<sub>T-1</sub>/∂h<sub>T-1-k</sub>)", row=1, col=1)
    n_sv = max((s.shape[1] for s in all_sv if s.ndim == 2), default=0)
    _base_layout(fig, f"Top {n_sv} singular values per lag (thick: the largest): how many directions survive"
                 + _layer_note(results),
                 meta, view, "jacobian_singular_values")
    figs["jacobian_singular_values"] = fig
    return figs


# ---- 3. spectrum --------------------------------------------------------------------------------------------
def spectrum_figures(results: dict, histories: dict | None = None) -> dict[str, go.Figure]:
    meta = config_meta(results)
    view = "spectrum"
    keys = list(results)
    figs = {}
    fig = subplots(rows=1, cols=len(keys), horizontal_spacing=0.06,
                        subplot_titles=[f"{label_of(k)}: eigenvalues of W<sub>hh</sub>" for k in keys])
    circle = np.linspace(0, 2 * np.pi, 361)
    for ci, key in enumerate(keys, start=1):
        r = results[key]
        radius = 1.0
        fig.add_trace(go.Scatter(x=np.cos(circle), y=np.sin(circle), mode="lines", name="unit circle |λ| = 1",
                                 line=dict(color="#999", width=1, dash="dash"), showlegend=ci == 1,
                                 legendgroup="unit", hoverinfo="skip"), row=1, col=ci)
        for block, s in r.spectra.items():
            eig = np.asarray(s["eigenvalues"])
            radius = max(radius, float(np.abs(eig).max()) if eig.size else 0.0)
            color = CELL_COLORS["rnn"] if block == "h" else GATE_COLORS.get(block, "#333")
            bname = "W<sub>hh</sub>" if block == "h" else f"W<sub>hh</sub>[{block}]"
            fig.add_trace(go.Scatter(x=eig.real, y=eig.imag, mode="markers",
                                     name=f"{label_of(key)} {bname}  ρ={s['spectral_radius']:.3g}",
                                     marker=dict(color=color, size=6, opacity=0.8, line=dict(width=0)),
                                     hovertemplate="Re=%{x:.3f}<br>Im=%{y:.3f}<extra>" + f"{label_of(key)} {block}</extra>"),
                          row=1, col=ci)
        lim = 1.1 * radius
        xa = "x" if ci == 1 else f"x{ci}"
        fig.update_xaxes(range=[-lim, lim], title_text="Re λ", zeroline=True, row=1, col=ci)
        fig.update_yaxes(range=[-lim, lim], title_text="Im λ" if ci == 1 else None, zeroline=True,
                         scaleanchor=xa, scaleratio=1, row=1, col=ci)
    _base_layout(fig, "Eigenvalues of the recurrent weights (outside the dashed unit circle: growth along that direction)",
                 meta, view, "eigenvalues", height=480, legend_bottom=True)
    figs["eigenvalues"] = fig

    fig = new_figure()
    dashes = ("solid", "dash", "dot", "dashdot")
    for key, r in results.items():
        color = color_of(key, results)
        for bi, (block, s) in enumerate(r.spectra.items()):
            sv = np.asarray(s["singular_values"], float)
            bname = "W_hh" if block == "h" else f"{block} block"
            fig.add_trace(go.Scatter(x=np.arange(1, len(sv) + 1), y=positive(sv),
                                     name=f"{label_of(key)} {bname}  σ<sub>max</sub>={s['sigma_max']:.3g}",
                                     line=dict(color=color, dash=dashes[bi % 4], width=2), legendgroup=key))
    _hline(fig, 1.0, "σ = 1", log=True, position="right")
    fig.update_yaxes(type="log", title="singular value of W<sub>hh</sub> block", exponentformat="power", dtick=1)
    fig.update_xaxes(title="index i (largest first)")
    _base_layout(fig, "Singular values of W<sub>hh</sub>: the bound uses the largest", meta, view, "singular_values")
    figs["singular_values"] = fig

    fig = new_figure()
    any_lyap = False
    for key, r in results.items():
        ly = r.jac.lyapunov
        if ly is None or len(ly) == 0:
            continue
        any_lyap = True
        ly = np.asarray(ly, float)
        fig.add_trace(go.Bar(x=np.arange(1, len(ly) + 1), y=ly, name=label_of(key),
                             marker_color=color_of(key, results),
                             hovertemplate="λ_%{x}=%{y:.4f} per step<extra>" + label_of(key) + "</extra>"))
    fig.add_hline(y=0.0, line=dict(color="#333", width=1))
    fig.update_layout(barmode="group")
    fig.update_yaxes(title="λ<sub>i</sub>  (natural log per step)")
    fig.update_xaxes(title="exponent i (largest first)", dtick=1)
    if not any_lyap:
        fig.add_annotation(text="Lyapunov exponents were not computed (lyapunov_k = 0)", x=0.5, y=0.5,
                           xref="paper", yref="paper", showarrow=False)
    _base_layout(fig, "Lyapunov exponents of the state Jacobians: λ < 0 means perturbations shrink every step",
                 meta, view, "lyapunov")
    figs["lyapunov"] = fig

    hist_items = [(k, h) for k, h in (histories or {}).items() if h is not None and len(h.get("step", [])) > 0]
    if hist_items:
        fig = new_figure()
        for vi, (k, h) in enumerate(hist_items):
            fig.add_trace(go.Scatter(x=np.asarray(h["step"]), y=np.asarray(h["spectral_radius"], float),
                                     name=label_of(k), connectgaps=True, mode="lines+markers", line=dict(color=CELL_COLORS[cell_of(k)], width=2,
                                                                 dash=VARIANT_DASHES[_variant(k, hist_items)])))
        _hline(fig, 1.0, "ρ = 1: the edge between shrinking and growing", position="right")
        fig.update_yaxes(title="spectral radius ρ(W<sub>hh</sub>)")
        fig.update_xaxes(title="training step")
        _base_layout(fig, "Spectral radius of W<sub>hh</sub> during training (largest gate block)", meta, view,
                     "spectral_radius_training")
        figs["spectral_radius_training"] = fig
    return figs


def _variant(key, items) -> int:
    """Index of this key among the keys of the same cell (for dash styles)."""
    same = [k for k, _ in items if cell_of(k) == cell_of(key)]
    return same.index(key) % len(VARIANT_DASHES) if key in same else 0


# ---- 4. cell state ------------------------------------------------------------------------------------------
GATES_SHOWN = {"lstm": ("f", "i", "o"), "gru": ("z", "r")}


def cell_state_figures(results: dict, histories: dict | None = None) -> dict[str, go.Figure]:
    meta = config_meta(results)
    view = "cell-state"
    figs = {}
    gated = [(k, r) for k, r in results.items() if r.config.cell in ("lstm", "gru")]
    if gated:
        fig = new_figure()
        for key, r in gated:
            color, lab = color_of(key, results), label_of(key)
            j = r.jac
            lag = np.asarray(j.lag)
            if r.config.cell == "lstm":
                if j.cell_full is not None:
                    fig.add_trace(go.Scatter(x=lag, y=pow10(j.cell_full), legendgroup=key,
                                             name=f"{lab} full ‖∂c<sub>T-1</sub>/∂c<sub>T-1-k</sub>‖ (every path)",
                                             line=dict(color=color, width=2.5), meta={"role": "cell_full", "cell": key}))
                if j.cell_carousel is not None:
                    fig.add_trace(go.Scatter(x=lag, y=pow10(j.cell_carousel), legendgroup=key,
                                             name=f"{lab} carousel ‖∏ diag(f<sub>t</sub>)‖ (forget gates alone)",
                                             line=dict(color=color, width=2, dash="dash"),
                                             meta={"role": "cell_carousel", "cell": key}))
            else:
                fig.add_trace(go.Scatter(x=lag, y=pow10(j.spectral_norm), legendgroup=key,
                                         name=f"{lab} full ‖∂h<sub>T-1</sub>/∂h<sub>T-1-k</sub>‖ (every path)",
                                         line=dict(color=color, width=2.5), meta={"role": "spectral_norm", "cell": key}))
                if j.update_gate_path is not None:
                    fig.add_trace(go.Scatter(x=lag, y=pow10(j.update_gate_path), legendgroup=key,
                                             name=f"{lab} update-gate path ‖∏ diag(z<sub>t</sub>)‖",
                                             line=dict(color=color, width=2, dash="dash"),
                                             meta={"role": "update_gate_path", "cell": key}))
        fig.update_yaxes(type="log", title="norm (log)", exponentformat="power")
        fig.update_xaxes(title="lag k")
        _base_layout(fig, "Memory through the gates: full Jacobian (solid) vs the gate path alone (dashed)", meta, view,
                     "cell_flow", legend_bottom=True)
        figs["cell_flow"] = fig
        for key, r in gated:
            for gname in GATES_SHOWN[r.config.cell]:
                if gname not in r.gates:
                    continue
                g = np.asarray(r.gates[gname], float)  # (T, H)
                fig = new_figure(go.Heatmap(z=g.T, x=np.arange(g.shape[0]), y=np.arange(g.shape[1]), zmin=0, zmax=1,
                                           colorscale="Cividis", colorbar=dict(title=gname + "<sub>t</sub>"),
                                           name=f"{label_of(key)} {gname}",
                                           hovertemplate="t=%{x}<br>unit=%{y}<br>" + gname + "=%{z:.3f}<extra></extra>"))
                fig.update_xaxes(title="time step t")
                fig.update_yaxes(title="hidden unit")
                sat = r.saturation.get(f"{gname}_saturated")
                sat_text = f"  ({100 * sat:.0f}% within 0.01 of 0 or 1)" if sat is not None else ""
                _base_layout(fig, f"{label_of(key)} {GATE_NAMES[gname]} per unit and step, sequence 0{sat_text}",
                             meta, view, f"gates_{safe_key(key)}_{gname}", height=420)
                figs[f"gates_{safe_key(key)}_{gname}"] = fig
    fig = new_figure()
    cats_all = []
    for key, r in results.items():
        cats = [k for k in r.saturation]
        cats_all += [c for c in cats if c not in cats_all]
    for key, r in results.items():
        fig.add_trace(go.Bar(x=cats_all, y=[r.saturation.get(c, np.nan) for c in cats_all], name=label_of(key),
                             marker_color=color_of(key, results),
                             hovertemplate="%{x}: %{y:.1%}<extra>" + label_of(key) + "</extra>"))
    _hline(fig, 0.5, "alert above 0.5")
    fig.update_layout(barmode="group")
    fig.update_yaxes(title="fraction of (unit, step) pairs", range=[0, 1.05], tickformat=".0%")
    fig.update_xaxes(title="h_saturated: |h|>0.99 · x_saturated: gate within 0.01 of 0/1 · dead_units: ReLU never on")
    _base_layout(fig, "Saturation: units whose derivative is (nearly) zero", meta, view, "gate_saturation", height=400)
    figs["gate_saturation"] = fig

    for key, r in results.items():
        if r.config.cell != "rnn":
            continue
        h = np.asarray(r.hidden, float)
        fig = new_figure(go.Heatmap(z=h.T, x=np.arange(h.shape[0]), y=np.arange(h.shape[1]), colorscale="RdBu",
                                   zmid=0, colorbar=dict(title="h<sub>t</sub>"), name=f"{label_of(key)} h_t",
                                   hovertemplate="t=%{x}<br>unit=%{y}<br>h=%{z:.3f}<extra></extra>"))
        fig.update_xaxes(title="time step t")
        fig.update_yaxes(title="hidden unit")
        title = f"{label_of(key)} hidden state h<sub>t</sub> per unit and step (sequence 0)"
        if not gated:
            fig.add_annotation(text="The cell-state view is about gated cells (LSTM c<sub>t</sub>, f<sub>t</sub>; "
                                    "GRU z<sub>t</sub>); a vanilla RNN has no cell state, so here is h<sub>t</sub>.",
                               x=0, y=1.0, xref="paper", yref="paper", yanchor="bottom", showarrow=False,
                               xanchor="left", font=dict(size=12, color="#444"))
            fig.update_layout(margin=dict(t=90))
        _base_layout(fig, title, meta, view, f"hidden_{safe_key(key)}", height=420)
        if not gated:
            fig.update_layout(margin=dict(t=95))
        figs[f"hidden_{safe_key(key)}"] = fig
    return figs


# ---- 5. training --------------------------------------------------------------------------------------------
def _nonfinite_steps(h: dict) -> list[tuple[int, str]]:
    """(step, where) of the non-finite steps of one history."""
    out = []
    nf = h.get("nonfinite")
    steps = np.asarray(h.get("step", []))
    if nf is not None:
        for s, d in zip(steps, nf):
            if d:
                out.append((int(s), describe_nonfinite(d)))
        return out
    loss = np.asarray(h.get("loss", []), float)
    gb = np.asarray(h.get("grad_norm_before", []), float)
    for i, s in enumerate(steps):
        if (i < len(loss) and not np.isfinite(loss[i])) or (i < len(gb) and not np.isfinite(gb[i])):
            out.append((int(s), "loss or gradient"))
    return out


def describe_nonfinite(d: dict | None) -> str:
    """A non-finite record {"quantity", "timestep", "layer", ...} in plain words."""
    if not d:
        return ""
    q = {"hidden_state": "hidden state h_t", "grad_norm": "gradient ‖∂L/∂h_t‖", "loss": "loss",
         "parameter_gradient": "parameter gradient", "jacobian_product": "Jacobian product"}.get(
        d.get("quantity"), str(d.get("quantity", "value")))
    parts = [q]
    if d.get("timestep") is not None:
        parts.append(f"at t={d['timestep']}")
    if d.get("lag") is not None:
        parts.append(f"lag k={d['lag']}")
    if d.get("layer") is not None:
        parts.append(f"layer {d['layer']}")
    if d.get("sequence") is not None:
        parts.append(f"sequence {d['sequence']}")
    return " ".join(parts)


def _change_labels(hist_items) -> dict[int, str]:
    """{step: "clip=norm, clip_threshold=1"} where settings changed (first history that records it)."""
    out = {}
    for _, h in hist_items:
        steps = np.asarray(h.get("step", []))
        settings = h.get("settings")
        for i, (s, ch) in enumerate(zip(steps, h.get("changed", []))):
            if ch and int(s) not in out:
                if settings is not None and i < len(settings):
                    out[int(s)] = ", ".join(f"{k}={settings[i].get(k)}" for k in ch)
                else:
                    out[int(s)] = ", ".join(ch) + " changed"
    return out


def training_figures(results: dict, histories: dict | None = None) -> dict[str, go.Figure]:
    hist_items = [(k, h) for k, h in (histories or {}).items() if h is not None and len(h.get("step", [])) > 0]
    if not hist_items:
        return {}
    meta = config_meta(results)
    view = "training"
    changes = _change_labels(hist_items)
    bad = [(k, s, w) for k, h in hist_items for s, w in _nonfinite_steps(h)]

    all_steps = np.concatenate([np.asarray(h["step"], float) for _, h in hist_items])
    x_range = [float(all_steps.min()) - 0.5, float(all_steps.max()) + 0.5]

    def marks(fig):
        for slot, (s, text) in enumerate(sorted(changes.items())):
            _vline(fig, s, f"step {s}: {text}", "#7B3294", slot % 4)
        for i, (k, s, w) in enumerate(bad):
            fig.add_shape(type="line", x0=s, x1=s, y0=0, y1=1, yref="paper", line=dict(color="#C00", width=2))
            right = s > (x_range[0] + x_range[1]) / 2  # label on the side with room
            fig.add_annotation(x=s, y=0.02 + 0.08 * i, yref="paper", yanchor="bottom",
                               text=f"NaN/Inf: {label_of(k)} step {s}, {w}", showarrow=False,
                               xanchor="right" if right else "left", xshift=-3 if right else 3,
                               font=dict(color="#C00", size=12), bgcolor="rgba(255,255,255,0.8)")
        fig.update_xaxes(range=x_range)  # labels must not stretch the axis

    fig = new_figure()
    chances = {}
    for k, h in hist_items:
        color = CELL_COLORS[cell_of(k)]
        fig.add_trace(go.Scatter(x=np.asarray(h["step"]), y=np.asarray(h["loss"], float), name=f"{label_of(k)} loss",
                                 line=dict(color=color, width=2, dash=VARIANT_DASHES[_variant(k, hist_items)]),
                                 meta={"role": "loss", "cell": k}))
        ch = h.get("chance_loss")
        if ch is None and cell_of(k) in results:
            ch = results[cell_of(k)].spec.chance_loss
        elif ch is None and results:
            ch = next(iter(results.values())).spec.chance_loss
        if ch is not None:
            chances[round(float(ch), 12)] = float(ch)
    for ch in chances.values():
        _hline(fig, ch, f"chance level {ch:.4g}", color="#555", position="right")
    marks(fig)
    losses = np.concatenate([np.asarray(h["loss"], float) for _, h in hist_items])
    losses = losses[np.isfinite(losses) & (losses > 0)]
    if losses.size and losses.max() > 100 * losses.min():  # spans decades (an exploding start): log axis
        fig.update_yaxes(type="log", title="training loss  (log)", exponentformat="power")
    else:
        fig.update_yaxes(title="training loss", rangemode="tozero")
    fig.update_xaxes(title="training step")
    _base_layout(fig, "Loss during training (dashed: the task's chance level, a memoryless predictor)", meta, view,
                 "training_loss", legend_bottom=True)
    figs = {"training_loss": fig}

    fig = new_figure()
    for k, h in hist_items:
        color = CELL_COLORS[cell_of(k)]
        steps = np.asarray(h["step"])
        before = positive(h["grad_norm_before"])
        after = positive(h["grad_norm_after"])
        clipped = np.asarray(h["clipped"], bool)
        fig.add_trace(go.Scatter(x=steps, y=before, name=f"{label_of(k)} ‖g‖ before clipping",
                                 line=dict(color=color, width=2, dash=VARIANT_DASHES[_variant(k, hist_items)]),
                                 meta={"role": "grad_norm_before", "cell": k}))
        fig.add_trace(go.Scatter(x=steps, y=after, name=f"{label_of(k)} ‖g‖ after clipping (applied)",
                                 line=dict(color=color, width=1.5, dash="dot"), opacity=0.8,
                                 meta={"role": "grad_norm_after", "cell": k}))
        if clipped.any():
            fig.add_trace(go.Scatter(x=steps[clipped], y=before[clipped], mode="markers",
                                     name=f"{label_of(k)} clipped steps", marker=dict(symbol="x", size=7, color=color),
                                     meta={"role": "clipped", "cell": k}))
    marks(fig)
    fig.update_yaxes(type="log", title="global gradient norm ‖g‖  (log)", exponentformat="power")
    fig.update_xaxes(title="training step")
    _base_layout(fig, "Global gradient norm before and after clipping (× = the step was clipped)", meta, view,
                 "training_grad_norm", legend_bottom=True)
    figs["training_grad_norm"] = fig

    lm = [(k, h) for k, h in hist_items if _task_of(k, h, results) == "charlm"]
    if lm:
        figs["training_perplexity"] = _perplexity_figure(lm, meta, marks)
        samples = _samples_figure(lm, meta)
        if samples is not None:
            figs["charlm_samples"] = samples
    return figs


def _task_of(key, h: dict, results: dict) -> str | None:
    """The task a history trained on: its own "task" entry, else the analysed config's."""
    if h.get("task"):
        return h["task"]
    r = results.get(key) or results.get(cell_of(key)) or (next(iter(results.values())) if results else None)
    return r.config.task if r is not None else None


def _perplexity_of(h: dict) -> np.ndarray:
    """Perplexity per step: the history's own (StepRecord.perplexity), else exp(cross-entropy)."""
    if h.get("perplexity") is not None:
        return np.array([np.nan if v is None else v for v in h["perplexity"]], dtype=float)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.exp(np.asarray(h["loss"], float))


def _perplexity_figure(items, meta: dict, marks) -> go.Figure:
    """Perplexity exp(J) of the character-level LM against the uniform guess (perplexity = vocabulary size V)."""
    fig = new_figure()
    baselines = {}
    for k, h in items:
        color = CELL_COLORS[cell_of(k)]
        ppl = _perplexity_of(h)
        fig.add_trace(go.Scatter(x=np.asarray(h["step"]), y=ppl, name=f"{label_of(k)} perplexity",
                                 line=dict(color=color, width=2, dash=VARIANT_DASHES[_variant(k, items)]),
                                 meta={"role": "perplexity", "cell": k},
                                 hovertemplate="step %{x}<br>perplexity %{y:.3f}<extra>" + label_of(k) + "</extra>"))
        V = h.get("vocab_size")
        if V is None and h.get("chance_loss") is not None:
            V = math.exp(float(h["chance_loss"]))  # the chance level of the LM is ln V
        if V is not None:
            baselines[int(round(V))] = h.get("vocab")
    for V, vocab in baselines.items():
        which = f": {', '.join(vocab)}" if vocab and len(vocab) <= 8 else ""
        _hline(fig, V, f"uniform guess: perplexity = V = {V} (vocabulary size{which})", log=True, color="#555",
               position="right")
    _hline(fig, 1.0, "1: every next character certain", log=True, color="#AAA", position="right")
    marks(fig)
    vals = np.concatenate([_perplexity_of(h) for _, h in items] + [np.array(list(baselines) + [1.0], float)])
    vals = vals[np.isfinite(vals) & (vals > 0)]
    rng = [math.log10(max(vals.min(), 1e-3)) - 0.08, math.log10(vals.max()) + 0.12] if vals.size else None
    ticks = {}
    if rng is not None:  # 1-2-5 ticks and V, written out (plotly's minor log labels read "6" for 60)
        for e in range(math.floor(rng[0]), math.ceil(rng[1]) + 1):
            for m in (1, 2, 5):
                v = m * 10.0 ** e
                near_v = any(abs(math.log10(v / V)) < 0.1 for V in baselines if V > 0)
                if 10 ** rng[0] <= v <= 10 ** rng[1] and not near_v:
                    ticks[v] = f"{v:g}"
        for V in baselines:
            ticks[float(V)] = f"{V}"
    fig.update_yaxes(type="log", title="perplexity exp(J)  (log)", range=rng,
                     **({"tickvals": sorted(ticks), "ticktext": [ticks[v] for v in sorted(ticks)]} if ticks else {}))
    fig.update_xaxes(title="training step")
    _base_layout(fig, "Character-level LM: perplexity = exp(cross-entropy J) during training (dashed: a uniform "
                 "guess)", meta, "training", "training_perplexity", legend_bottom=True)
    return fig


def _samples_figure(items, meta: dict) -> go.Figure | None:
    """A table of the text sampled from each model (newest first): step, run, temperature, the characters.

    The samples also travel in the trace's meta, so the JSON export holds them verbatim.
    """
    rows = []
    for k, h in items:
        for smp in h.get("samples") or []:
            rows.append((int(smp["step"]), label_of(k), float(smp["temperature"]), str(smp["text"])))
    if not rows:
        return None
    rows.sort(key=lambda r: (-r[0], r[1]))
    rows = rows[:SAMPLES_SHOWN]
    shown = [r[3].replace("\n", "↵") for r in rows]
    fig = new_figure(go.Table(
        columnwidth=[60, 150, 50, 740],
        header=dict(values=["step", "model", "T", "sampled characters (↵ = new line)"], align="left",
                    fill_color="#E5EAF2", font=dict(size=13)),
        cells=dict(values=[[r[0] for r in rows], [r[1] for r in rows], [f"{r[2]:g}" for r in rows], shown],
                   align="left", font=dict(family="DejaVu Sans Mono, Menlo, Consolas, monospace", size=13),
                   height=26),
        name="samples",
        meta={"role": "samples", "samples": [{"step": r[0], "model": r[1], "temperature": r[2], "text": r[3]}
                                             for r in rows]}))
    _base_layout(fig, "Samples from the language model: x<sub>t+1</sub> ~ softmax(y<sub>t</sub> / T), newest first",
                 meta, "training", "charlm_samples", height=90 + 27 * (len(rows) + 1))
    fig.update_layout(margin=dict(t=55, b=10))
    return fig


# ---- 6. activations -----------------------------------------------------------------------------------------
def activation_figures(results: dict | None = None, histories: dict | None = None) -> dict[str, go.Figure]:
    import torch

    from rnn_models.cells import activation_and_derivative

    meta = config_meta(results or {})
    current = {r.config.activation for r in (results or {}).values() if r.config.cell == "rnn"}
    a = torch.linspace(-5, 5, 401, dtype=torch.float64)
    fig = subplots(rows=1, cols=2, horizontal_spacing=0.08,
                        subplot_titles=("φ(a)", "φ′(a): γ = sup|φ′| bounds each step's factor"))
    for name in ACTIVATIONS:
        y, d = activation_and_derivative(name, a)
        color = ACTIVATION_COLORS[name]
        gamma = ACTIVATION_GAMMA[name]
        width = 4 if name in current else 2
        label = f"{name}  (γ = {'1/4' if gamma == 0.25 else f'{gamma:g}'})" + ("  ← this RNN" if name in current else "")
        fig.add_trace(go.Scatter(x=a.numpy(), y=y.numpy(), name=label, legendgroup=name,
                                 line=dict(color=color, width=width)), row=1, col=1)
        fig.add_trace(go.Scatter(x=a.numpy(), y=d.numpy(), name=f"{name}′", legendgroup=name, showlegend=False,
                                 line=dict(color=color, width=width)), row=1, col=2)
    for g, txt in ((1.0, "γ = 1: tanh, relu, linear"), (0.25, "γ = 1/4: sigmoid")):
        _hline(fig, g, txt, row=1, col=2)
    fig.update_yaxes(range=[-1.6, 3.0], title_text="φ(a)", row=1, col=1)
    fig.update_yaxes(range=[-0.1, 1.3], title_text="φ′(a)", row=1, col=2)
    fig.update_xaxes(title_text="pre-activation a", row=1, col=1)
    fig.update_xaxes(title_text="pre-activation a", row=1, col=2)
    _base_layout(fig, "Activations and their derivatives: ‖∂h<sub>t</sub>/∂h<sub>t-1</sub>‖ ≤ γ·σ<sub>max</sub>(W<sub>hh</sub>)",
                 meta, "activations", "activations", legend_bottom=True)
    return {"activations": fig}


# ---- public API ---------------------------------------------------------------------------------------------
_BUILDERS = {
    "gradient-flow": gradient_flow_figures,
    "jacobians": jacobian_figures,
    "spectrum": spectrum_figures,
    "cell-state": cell_state_figures,
    "training": training_figures,
    "activations": activation_figures,
}


def view_figures(view: str, results: dict, histories: dict | None = None) -> dict[str, go.Figure]:
    """Every figure of one view, keyed by a file-safe name; ``histories``: {cell: Trainer.history()} or None.

    The training view needs histories (it returns {} without them); the others use them where they exist
    (gradient-flow: step x timestep heatmap; spectrum: spectral radius over training).
    """
    if view not in _BUILDERS:
        raise ValueError(f"view={view!r} is not known: choose one of {', '.join(VIEWS)}")
    return _BUILDERS[view](results, histories or None)


def apply_display(fig: go.Figure, *, log_y: bool | None = None, band: bool | None = None) -> go.Figure:
    """Display-only changes in place (no data changes): log_y=False turns log y axes linear; band on/off."""
    if band is not None:
        for tr in fig.data:
            if isinstance(tr.meta, dict) and tr.meta.get("role") == "band":
                tr.visible = bool(band)
    if log_y is False:
        for name in fig.layout:
            if name.startswith("yaxis") and fig.layout[name].type == "log":
                fig.layout[name].type = "linear"
                fig.layout[name].range = None
                fig.layout[name].autorange = True
    return fig


def slide_layout(fig: go.Figure) -> go.Figure:
    """A copy of ``fig`` on a 16:9 1920x1080 slide: title 44 px, axis titles 32 px, ticks 28 px, legend 26 px."""
    fig = go.Figure(fig.to_dict())  # a deep copy: go.Figure(fig) would share the trace objects
    fig.update_layout(
        width=SLIDE_W, height=SLIDE_H, autosize=False,
        font=dict(size=28, family="Arial, Helvetica, sans-serif"),
        title=dict(font=dict(size=44), x=0.02, xanchor="left", y=0.97, yanchor="top"),
        legend=dict(font=dict(size=26)),
        margin=dict(l=170, r=80, t=150, b=150),
    )
    if fig.layout.legend.orientation == "h":
        fig.update_layout(legend=dict(y=-0.14), margin=dict(b=260))
    fig.update_xaxes(title_font=dict(size=32), tickfont=dict(size=28))
    fig.update_yaxes(title_font=dict(size=32), tickfont=dict(size=28))
    for ann in fig.layout.annotations:
        size = ann.font.size if ann.font and ann.font.size else 13
        ann.font.size = max(28, int(size * 2))
    for tr in fig.data:
        if tr.type in ("scatter", "scattergl") and tr.line is not None and tr.line.width not in (None, 0):
            tr.line.width = max(tr.line.width * 1.8, 2.5)
        if tr.type in ("scatter", "scattergl") and tr.marker is not None and tr.marker.size is not None \
                and not isinstance(tr.marker.size, (list, tuple, np.ndarray)):
            tr.marker.size = tr.marker.size * 1.8
        if tr.type == "table":  # the samples table: projector-sized text and rows
            tr.header.font.size = 26
            tr.cells.font.size = 24
            tr.cells.height = 44
            tr.header.height = 44
        if tr.type == "heatmap" and tr.colorbar is not None:
            tr.colorbar.title.font.size = 28
            tr.colorbar.tickfont.size = 26
    if fig.layout.coloraxis is not None and fig.layout.coloraxis.colorbar is not None:
        fig.layout.coloraxis.colorbar.title.font.size = 28
        fig.layout.coloraxis.colorbar.tickfont.size = 26
    return fig


__all__ = ["VIEWS", "SLIDE_W", "SLIDE_H", "MODEBAR_CONFIG", "CELL_COLORS", "view_figures", "slide_layout",
           "apply_display", "config_meta", "pascanu_bound", "describe_nonfinite", "pow10"]
