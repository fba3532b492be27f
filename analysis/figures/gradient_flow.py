"""View 1, gradient flow: ||dL/dh_t|| over t, the truncated-BPTT comparison and the training heatmap."""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from .theme import (
    LAYER_DASHES,
    SCREEN_HEIGHT,
    _base_layout,
    _log10,
    _rgba,
    color_of,
    config_meta,
    label_of,
    layer_note,
    loss_reading,
    loss_steps_of,
    new_figure,
    positive,
    subplots,
    _SUPER,
)


_LAYERS_CAPTION = ("Layers are numbered from 0 (the bottom, which reads x_t) as in the API and the JSON. The "
                   "gradient reaches a lower layer through the layers above it, so the gaps between the layers are "
                   "the decay through depth and the slope of each the decay through time. ")
_WHERE = {"last": "The loss is read at the last step only (t = T-1).",
          "all": "The loss has a term at every step, so every t gets gradient from its own step as well.",
          "callable": "The loss is your callable on every step's output: where it reads is up to it."}


def _where(results: dict) -> str:
    """One sentence saying where the loss is read (the shown cells' own settings)."""
    kinds = list(dict.fromkeys(loss_steps_of(r) for r in results.values()))
    return " ".join(_WHERE[k] for k in kinds)


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
    shown = dict(items)
    fig.update_xaxes(title=f"time step t  ({loss_reading(shown)})", range=[-0.5, t_max + 0.5])
    ks = sorted({int(r.config.truncate) for _, r in items})
    _base_layout(fig, f"Truncated BPTT (k = {', '.join(map(str, ks))}): the gradient it keeps (dashed, ○) vs full "
                 "BPTT (solid)" + layer_note(shown), meta, "gradient-flow", "grad_truncated", legend_bottom=True,
                 caption="Truncated BPTT detaches the state every k steps: no gradient crosses a cut (dotted), so "
                         "with one loss at the last step nothing before t = T−k learns from it; with a loss at "
                         "every step each window keeps its own short-range gradient. " + _where(shown))
    return fig


# float64's smallest normal number is 2.2e-308: below it 10^x is a subnormal (few digits) or 0 (no place on a log axis)
FLOAT64_FLOOR = math.log10(np.finfo(np.float64).tiny)  # -307.65


def exact_log10(g) -> tuple[np.ndarray, np.ndarray]:
    """(log10 ||dL/dh_t|| (T,), log10 of the band (2, T)) of a GradientResult: its exact log10 twins where it
    carries them (``log10_grad_norm``, ``log10_grad_norm_band``), else log10 of the float values (0 -> NaN)."""
    line = g.log10_grad_norm if getattr(g, "log10_grad_norm", None) is not None else _log10(g.grad_norm)
    band = getattr(g, "log10_grad_norm_band", None)
    return np.asarray(line, float), np.asarray(band if band is not None else _log10(g.grad_norm_band), float)


def below_float64(results: dict) -> bool:
    """True when some drawn ||dL/dh_t|| is below float64's normal range (its exact log10 is finite and below
    FLOAT64_FLOOR: the float value is a subnormal, or 0, which a log axis cannot draw)."""
    for r in results.values():
        lg = exact_log10(r.grad)[0]
        if bool(np.any(np.isfinite(lg) & (lg < FLOAT64_FLOOR))):
            return True
    return False


def _finite(a) -> np.ndarray:
    """log10 values for a linear axis: -inf (an exact zero) and NaN become gaps."""
    a = np.asarray(a, dtype=float)
    return np.where(np.isfinite(a), a, np.nan)


def log10_ticks(lo: float, hi: float) -> dict:
    """Ticks of a linear axis of log10 values over [lo, hi]: at most ~8 round exponents k (a step of 1, 2, 5, 10,
    20, 50, ... decades), labelled 10^k ("10⁻⁴⁰⁰")."""
    span = max(hi - lo, 1.0)
    step = next(s * 10 ** e for e in range(0, 8) for s in (1, 2, 5) if span / (s * 10 ** e) <= 8)
    ks = list(range(int(math.floor(lo / step) * step), int(math.ceil(hi / step) * step) + 1, step))
    return {"tickvals": ks, "ticktext": ["1" if k == 0 else "10" + str(k).translate(_SUPER) for k in ks]}


def gradient_flow_figures(results: dict, histories: dict | None = None) -> dict[str, go.Figure]:
    meta = config_meta(results)
    view = "gradient-flow"
    figs = {}
    fig = new_figure()
    # below float64's range (T = 2000: the LSTM's ||dL/dh_0|| ~ 10^-400 is 0 as a float): the exact log10 values on
    # a linear axis, so every line is drawn to t = 0; else the plain values on a log axis
    logs = below_float64(results)
    hover = "‖∂L/∂h_t‖=10^%{y:.2f}" if logs else "‖∂L/∂h_t‖=%{y:.3e}"
    for key, r in results.items():
        color = color_of(key, results)
        g = r.grad
        T = len(g.grad_norm)
        t = np.arange(T)
        if logs:
            line, band = exact_log10(g)
            line, lo, hi = _finite(line), _finite(band[0]), _finite(band[1])
            cell = _finite(_log10(g.cell_grad_norm)) if g.cell_grad_norm is not None else None
        else:
            line, lo, hi = positive(g.grad_norm), positive(g.grad_norm_band[0]), positive(g.grad_norm_band[1])
            cell = positive(g.cell_grad_norm) if g.cell_grad_norm is not None else None
        # the band: a fill of 30% of the colour between thin edges of 55% (at 18% and no edges it was barely seen)
        edge = dict(width=0.8, color=_rgba(color, 0.55))
        fig.add_trace(go.Scatter(x=t, y=hi, name=f"{label_of(key)} 90th percentile", legendgroup=key,
                                 showlegend=False, line=edge, hoverinfo="skip",
                                 meta={"role": "band", "cell": key}))
        fig.add_trace(go.Scatter(x=t, y=lo, name=f"{label_of(key)} 10th percentile", legendgroup=key,
                                 showlegend=False, line=edge, fill="tonexty",
                                 fillcolor=_rgba(color, 0.3), hoverinfo="skip", meta={"role": "band", "cell": key}))
        fig.add_trace(go.Scatter(x=t, y=line, name=f"{label_of(key)} ‖∂L/∂h<sub>t</sub>‖",
                                 legendgroup=key, line=dict(color=color, width=2.5),
                                 meta={"role": "grad_norm", "cell": key, **({"log10": True} if logs else {})},
                                 hovertemplate="t=%{x}<br>" + hover + "<extra>" + label_of(key) + "</extra>"))
        if cell is not None:
            fig.add_trace(go.Scatter(x=t, y=cell,
                                     name=f"{label_of(key)} ‖∂L/∂c<sub>t</sub>‖ (cell state)", legendgroup=key,
                                     line=dict(color=color, width=1.5, dash="dot"), visible="legendonly",
                                     meta={"role": "cell_grad_norm", "cell": key}))
    if logs:
        ys = np.concatenate([np.asarray(tr.y, float) for tr in fig.data if tr.visible != "legendonly"])
        ys = ys[np.isfinite(ys)]
        fig.update_yaxes(type="linear", title="‖∂L/∂h<sub>t</sub>‖  (exact, log scale)",
                         **log10_ticks(float(ys.min()), float(ys.max())))
        # where float64 ends: below this line a float holds ||dL/dh_t|| as a subnormal or 0
        fig.add_shape(type="line", xref="paper", x0=0, x1=1, y0=FLOAT64_FLOOR, y1=FLOAT64_FLOOR,
                      line=dict(color="#888", width=1, dash="dot"))
        fig.add_annotation(xref="paper", x=0.99, y=FLOAT64_FLOOR, xanchor="right", yanchor="bottom", showarrow=False,
                           text="float64 ends here (2.2×10<sup>−308</sup>): below it the lines are exact log10 values",
                           font=dict(size=11, color="#666"), bgcolor="rgba(255,255,255,0.8)")
    else:
        fig.update_yaxes(type="log", title="‖∂L/∂h<sub>t</sub>‖  (log scale)", exponentformat="power")
    fig.update_xaxes(title=f"time step t  ({loss_reading(results)})")
    below = (" Some values here are below float64's range (10^−308, where a float is 0), so the axis draws their "
             "exact log10 (kept in log space by the analysis) on a linear scale: every line reaches t = 0."
             if logs else "")
    _base_layout(fig, "Gradient reaching each time step  ‖∂L/∂h<sub>t</sub>‖  (line: batch geometric mean, "
                 "band: 10–90%)" + layer_note(results), meta, view, "grad_norm",
                 caption="‖∂L/∂h_t‖: how strongly the loss still depends on the state at step t. Backpropagation "
                         "multiplies one Jacobian ∂h_t/∂h_{t-1} per step, so a straight slope down to the left on "
                         "the log axis is exponential vanishing, a slope up is explosion. " + _where(results)
                         + below)
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
                     meta, view, "grad_heatmap_training", height=max(SCREEN_HEIGHT, 220 * n + 120),
                     caption="One row per training step: the colour is log10 ‖∂L/∂h_t‖ on that step's batch. A "
                             "dark band spreading from the left is the gradient vanishing further back as "
                             "training goes on; a bright one is explosion.")
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
            fig.add_trace(go.Heatmap(z=z, x=np.arange(z.shape[1]), y=np.arange(L), coloraxis="coloraxis",
                                     name=f"{label_of(k)} log10 ‖∂L/∂h_t^(l)‖ per layer",
                                     hovertemplate="t=%{x}<br>layer l=%{y}<br>log10‖∂L/∂h_t^(l)‖=%{z:.2f}"
                                                   "<extra></extra>"),
                          row=i, col=1)
            # a short title per row (three long ones ran into each other); "0 = bottom" is in the ticks and caption
            fig.update_yaxes(title_text="layer l", tickvals=list(range(L)),
                             ticktext=[f"{l}" + (" (top)" if l == L - 1 else " (bottom)" if l == 0 else "")
                                       for l in range(L)], row=i, col=1)
        shown = dict(deep)
        fig.update_xaxes(title_text=f"time step t  ({loss_reading(shown, 'the top layer')})", row=n, col=1)
        fig.update_layout(coloraxis=dict(colorscale="Viridis", colorbar=dict(title="log10<br>‖∂L/∂h‖")))
        _base_layout(fig, "Stacked layers: log10 ‖∂L/∂h<sub>t</sub><sup>(l)</sup>‖ by layer and time step",
                     meta, view, "grad_per_layer", height=max(SCREEN_HEIGHT, 200 * n + 120),
                     caption=_LAYERS_CAPTION + _where(shown))
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
                    name=f"{label_of(k)} layer {l}" + (" (top)" if top else " (bottom)" if l == 0 else ""),
                    line=dict(color=color, width=3 if top else 2, dash=LAYER_DASHES[(L - 1 - l) % len(LAYER_DASHES)]),
                    opacity=1.0 if top else max(0.45, 1.0 - 0.2 * (L - 1 - l)),
                    meta={"role": "grad_layer", "cell": k, "layer": l},
                    hovertemplate="t=%{x}<br>‖∂L/∂h_t‖=%{y:.3e}<extra>" + f"{label_of(k)} layer {l}</extra>"))
        fig.update_yaxes(type="log", title="‖∂L/∂h<sub>t</sub><sup>(l)</sup>‖  (log scale)", exponentformat="power")
        fig.update_xaxes(title=f"time step t  ({loss_reading(shown, 'the top layer')})")
        _base_layout(fig, "Stacked layers: ‖∂L/∂h<sub>t</sub><sup>(l)</sup>‖ per layer (gaps: decay through depth; "
                     "slope: decay through time)", meta, view, "grad_per_layer_lines", legend_bottom=True,
                     caption=_LAYERS_CAPTION + _where(shown))
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
        shown = dict(bi)
        fig.update_xaxes(title=f"time step t  ({loss_reading(shown)})")
        _base_layout(fig, "Bidirectional: gradient reaching the forward h→<sub>t</sub>, the backward h←<sub>t</sub> "
                     "and the concatenated [h→<sub>t</sub>; h←<sub>t</sub>]" + layer_note(shown), meta, view,
                     "grad_per_direction", legend_bottom=True,
                     caption="Each direction gets gradient only from the outputs it feeds: the forward h→_t from "
                             "the steps t … T-1, the backward h←_t from the steps 0 … t; the concatenated state "
                             "[h→_t; h←_t] gets both. " + _where(shown))
        figs["grad_per_direction"] = fig
    return figs


