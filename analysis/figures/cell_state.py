"""View 4, cell state: the LSTM carousel prod f and the GRU prod z, ||dL/dc_t|| (total and carry path),
gate activity.

What differs by kind is asked of the cell classes (rnn_models.cells): the gated kinds are those with a
``keep_gate``; a memory cell (``c_index``) shows its c->c flow and carousel, a keep gate on h its update-gate path;
the gates shown per unit (``gates_shown``), their captions and the flow caption are the kind's own."""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from rnn_models.cells import by_kind, cell_names, cell_type, merged

from .theme import (
    GATE_NAMES,
    _base_layout,
    _hline,
    color_of,
    config_meta,
    label_of,
    layer_note,
    loss_reading,
    new_figure,
    positive,
    pow10,
    safe_key,
)

GATES_SHOWN = by_kind("gates_shown")  # kind -> the gates shown per unit (LSTM f, i, o; GRU z, r)
GATE_CAPTIONS = merged("gate_captions")  # gate -> its caption, as the kinds word it


def _flow_caption(cells: set) -> str:
    """The cell-flow figure's caption: each shown kind's own (the LSTM's carousel, the GRU's update-gate path),
    in registration order."""
    return " ".join(cell_type(c).flow_caption for c in cell_names() if c in cells and cell_type(c).flow_caption)


def _gated(r) -> bool:
    """A kind with a keep gate (LSTM f, GRU z): its gate path and gate activity are shown."""
    return cell_type(r.config.cell).keep_gate is not None


CELL_GRAD_CAPTION = (
    "c_t feeds two things: the next step (c_{t+1} = f_{t+1} ⊙ c_t + i_{t+1} ⊙ g_{t+1}) and its own output "
    "h_t = o_t ⊙ tanh(c_t). The solid line is the total ‖∂L/∂c_t‖, both together: what retain_grad() on c_t "
    "gives. The dashed line is the carry path alone, the part that arrives through c_{t+1} (f_{t+1} ⊙ ∂L/∂c_{t+1} "
    "without peepholes): exactly 0 at the last step, where no later step reads c_t (a gap on the log axis). Where "
    "the solid line lies well above the dashed one, most of the gradient enters c_t through its own output h_t.")


def cell_grad_figure(results: dict, meta: dict) -> go.Figure | None:
    """||dL/dc_t|| per step t of every run whose cell has a cell state (``r.grad.cell_grad_norm``): the total
    (solid) and the carry path through c_{t+1} alone (dashed, ``r.grad.cell_carry_grad_norm``), batch geometric
    means of the analysed layer's forward direction (analysis.cell_grads); None when no run has one."""
    shown = {k: r for k, r in results.items() if r.grad is not None and r.grad.cell_grad_norm is not None}
    if not shown:
        return None
    fig = new_figure()
    for key, r in shown.items():
        color, lab, g = color_of(key, results), label_of(key), r.grad
        t = np.arange(len(g.cell_grad_norm))
        fig.add_trace(go.Scatter(x=t, y=positive(g.cell_grad_norm), legendgroup=key,
                                 name=f"{lab} total ‖∂L/∂c<sub>t</sub>‖ (what retain_grad on c<sub>t</sub> gives)",
                                 line=dict(color=color, width=2.5),
                                 meta={"role": "cell_grad_norm", "cell": key},
                                 hovertemplate="t=%{x}<br>total ‖∂L/∂c_t‖=%{y:.3e}<extra>" + lab + "</extra>"))
        if g.cell_carry_grad_norm is not None:
            fig.add_trace(go.Scatter(x=t, y=positive(g.cell_carry_grad_norm), legendgroup=key,
                                     name=f"{lab} carry path only (through c<sub>t+1</sub>)",
                                     line=dict(color=color, width=2, dash="dash"),
                                     meta={"role": "cell_carry_grad_norm", "cell": key},
                                     hovertemplate="t=%{x}<br>carry path=%{y:.3e}<extra>" + lab + "</extra>"))
    fig.update_yaxes(type="log", title="‖∂L/∂c<sub>t</sub>‖  (log scale)", exponentformat="power")
    fig.update_xaxes(title=f"time step t  ({loss_reading(shown)})")
    _base_layout(fig, "Gradient reaching the cell state ‖∂L/∂c<sub>t</sub>‖: total (solid) vs the carry path "
                 "alone (dashed)" + layer_note(shown), meta, "cell-state", "cell_grad", legend_bottom=True,
                 caption=CELL_GRAD_CAPTION)
    return fig


def cell_state_figures(results: dict, histories: dict | None = None) -> dict[str, go.Figure]:
    meta = config_meta(results)
    view = "cell-state"
    figs = {}
    gated = [(k, r) for k, r in results.items() if _gated(r)]
    if gated:
        fig = new_figure()
        for key, r in gated:
            color, lab = color_of(key, results), label_of(key)
            j = r.jac
            lag = np.asarray(j.lag)
            kind = cell_type(r.config.cell)
            kg = kind.keep_gate
            if kind.c_index is not None:  # a memory cell: its full c->c flow and the carousel prod diag(f)
                if j.cell_full is not None:
                    fig.add_trace(go.Scatter(x=lag, y=pow10(j.cell_full), legendgroup=key,
                                             name=f"{lab} full ‖∂c<sub>T-1</sub>/∂c<sub>T-1-k</sub>‖ (every path)",
                                             line=dict(color=color, width=2.5), meta={"role": "cell_full", "cell": key}))
                if j.cell_carousel is not None:
                    fig.add_trace(go.Scatter(x=lag, y=pow10(j.cell_carousel), legendgroup=key,
                                             name=f"{lab} carousel ‖∏ diag({kg}<sub>t</sub>)‖ (forget gates alone)",
                                             line=dict(color=color, width=2, dash="dash"),
                                             meta={"role": "cell_carousel", "cell": key}))
            else:  # a keep gate on h: the full h->h flow and the update-gate path prod diag(z)
                fig.add_trace(go.Scatter(x=lag, y=pow10(j.spectral_norm), legendgroup=key,
                                         name=f"{lab} full ‖∂h<sub>T-1</sub>/∂h<sub>T-1-k</sub>‖ (every path)",
                                         line=dict(color=color, width=2.5), meta={"role": "spectral_norm", "cell": key}))
                if j.update_gate_path is not None:
                    fig.add_trace(go.Scatter(x=lag, y=pow10(j.update_gate_path), legendgroup=key,
                                             name=f"{lab} {kind.gate_descriptions.get(kg, 'gate')}"
                                                  f" path ‖∏ diag({kg}<sub>t</sub>)‖",
                                             line=dict(color=color, width=2, dash="dash"),
                                             meta={"role": "update_gate_path", "cell": key}))
        fig.update_yaxes(type="log", title="norm (log)", exponentformat="power")
        fig.update_xaxes(title="lag k")
        shown = dict(gated)
        _base_layout(fig, "Memory through the gates: full Jacobian (solid) vs the gate path alone (dashed)"
                     + layer_note(shown), meta, view, "cell_flow", legend_bottom=True,
                     caption=_flow_caption({r.config.cell for _, r in gated}))
        figs["cell_flow"] = fig
        for key, r in gated:
            for gname in cell_type(r.config.cell).gates_shown:
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
                # the kind's own name for its gate (GATE_NAMES is the first kind's: the GRU's "reset gate" for r)
                words = cell_type(r.config.cell).gate_descriptions.get(gname)
                named = f"{words} {gname}<sub>t</sub>" if words else GATE_NAMES[gname]
                _base_layout(fig, f"{label_of(key)} {named} per unit and step, sequence 0{sat_text}"
                             + layer_note({key: r}), meta, view, f"gates_{safe_key(key)}_{gname}", height=420,
                             caption=cell_type(r.config.cell).gate_captions[gname])
                figs[f"gates_{safe_key(key)}_{gname}"] = fig
    grad = cell_grad_figure(results, meta)
    if grad is not None:
        figs["cell_grad"] = grad
    fig = new_figure()
    cats_all = []
    for key, r in results.items():
        cats = [k for k in r.saturation]
        cats_all += [c for c in cats if c not in cats_all]
    top = 0.0
    for key, r in results.items():
        ys = [r.saturation.get(c, np.nan) for c in cats_all]
        top = max([top] + [y for y in ys if y == y])
        # every bar carries its value: a 0.3 % bar is a hairline on a 0-100 % axis, and 0 % none at all
        fig.add_trace(go.Bar(x=cats_all, y=ys, name=label_of(key), marker_color=color_of(key, results),
                             text=[f"{100 * y:.1f}%" if y == y else "n/a" for y in ys], textposition="outside",
                             cliponaxis=False, textfont=dict(size=12),
                             hovertemplate="%{x}: %{y:.1%}<extra>" + label_of(key) + "</extra>"))
    fig.update_layout(barmode="group")
    if top >= 0.35:
        _hline(fig, 0.5, "alert above 50%")
        fig.update_yaxes(range=[0, 1.05])
        low = ""
    else:  # small values: an axis to 100% would leave the bars invisible; the alert level is said instead
        fig.update_yaxes(range=[0, max(0.05, 1.3 * top)])
        low = f" (all under {max(1, math.ceil(100 * top)):.0f}%: axis zoomed; the alert is at 50%)"
    fig.update_yaxes(title="fraction of (unit, step) pairs", tickformat=".0%" if top >= 0.05 else ".1%")
    fig.update_xaxes(title="h_saturated: |h|>0.99 · x_saturated: gate within 0.01 of 0/1 · dead_units: ReLU never on")
    _base_layout(fig, "Saturation: units whose derivative is (nearly) zero" + low + layer_note(results), meta, view,
                 "gate_saturation", height=400,
                 caption="The share of (unit, step) pairs whose derivative is nearly zero: a saturated tanh "
                         "(|h| > 0.99) or a gate pinned at 0 or 1 passes almost no gradient, a dead ReLU none. "
                         "Above 50% the page raises an alert.")
    figs["gate_saturation"] = fig

    for key, r in results.items():
        if "activation" not in cell_type(r.config.cell).settings:  # the vanilla RNN's h_t (its phi')
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
        _base_layout(fig, title + layer_note({key: r}), meta, view, f"hidden_{safe_key(key)}", height=420,
                     caption="The vanilla RNN's hidden state h_t, unit by unit, for the first sequence: where "
                             "φ′(a_t) ≈ 0 (tanh near ±1, sigmoid near 0 or 1, relu off) a unit passes almost no "
                             "gradient back.")
        if not gated:
            fig.update_layout(margin=dict(t=95))
        figs[f"hidden_{safe_key(key)}"] = fig
    return figs


