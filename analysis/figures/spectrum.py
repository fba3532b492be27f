"""View 3, spectrum: eigenvalues and singular values of W_hh per gate block, spectral radius over training."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from rnn_models.cells import cell_type

from .theme import (
    CELL_COLORS,
    GATE_COLORS,
    VARIANT_DASHES,
    _base_layout,
    _hline,
    cell_of,
    color_of,
    config_meta,
    label_of,
    layer_note,
    new_figure,
    positive,
    subplots,
)


def spectrum_figures(results: dict, histories: dict | None = None) -> dict[str, go.Figure]:
    meta = config_meta(results)
    view = "spectrum"
    keys = list(results)
    figs = {}
    fig = subplots(rows=1, cols=len(keys), horizontal_spacing=0.06,
                        subplot_titles=[f"{label_of(k)}: {_what(results[k])}" for k in keys])
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
            color = GATE_COLORS.get(block, "#333")  # "h", the whole W_hh: the RNN's vermillion
            bname = _block_name(r, block, f"W<sub>hh</sub>[{block}]")
            fig.add_trace(go.Scatter(x=eig.real, y=eig.imag, mode="markers",
                                     name=f"{label_of(key)} {bname}  ρ={s['spectral_radius']:.3g}",
                                     marker=dict(color=color, size=6, opacity=0.8, line=dict(width=0)),
                                     hovertemplate="Re=%{x:.3f}<br>Im=%{y:.3f}<extra>" + f"{label_of(key)} {block}</extra>"),
                          row=1, col=ci)
        if not r.spectra and any(v in (r.views or ()) for v in ("spectrum", "jacobians")):  # analysis.own_cell
            fig.add_annotation(text="no fixed recurrent matrix: the step's Jacobians<br>are its own at each state "
                               "(Jacobian view)", x=0, y=0, showarrow=False, row=1, col=ci)
        lim = 1.1 * radius
        xa = "x" if ci == 1 else f"x{ci}"
        fig.update_xaxes(range=[-lim, lim], title_text="Re λ", zeroline=True, row=1, col=ci)
        fig.update_yaxes(range=[-lim, lim], title_text="Im λ" if ci == 1 else None, zeroline=True,
                         scaleanchor=xa, scaleratio=1, row=1, col=ci)
    _base_layout(fig, "Eigenvalues of the recurrent weights (outside the dashed unit circle: growth along that "
                 "direction)" + layer_note(results), meta, view, "eigenvalues", height=480, legend_bottom=True,
                 caption="Eigenvalues λ of W_hh (one colour per gate block): outside the unit circle a linear "
                         "recurrence grows along that direction, inside it shrinks. The nonlinearity and the gates "
                         "scale every step further (see the Lyapunov exponents).")
    figs["eigenvalues"] = fig

    fig = new_figure()
    dashes = ("solid", "dash", "dot", "dashdot")
    for key, r in results.items():
        color = color_of(key, results)
        for bi, (block, s) in enumerate(r.spectra.items()):
            sv = np.asarray(s["singular_values"], float)
            bname = _block_name(r, block, f"{block} block", diagonal="|{block}|")
            fig.add_trace(go.Scatter(x=np.arange(1, len(sv) + 1), y=positive(sv),
                                     name=f"{label_of(key)} {bname}  σ<sub>max</sub>={s['sigma_max']:.3g}",
                                     line=dict(color=color, dash=dashes[bi % 4], width=2), legendgroup=key))
    _hline(fig, 1.0, "σ = 1", log=True, position="right")
    diag = any(not cell_type(r.config.cell).gate_names and r.spectra for r in results.values())
    fig.update_yaxes(type="log", title="singular value of W<sub>hh</sub> block" + (" (or |λ|)" if diag else ""),
                     exponentformat="power", dtick=1)
    fig.update_xaxes(title="index i (largest first)")
    _base_layout(fig, "Singular values of W<sub>hh</sub>: the bound uses the largest" + layer_note(results), meta, view,
                 "singular_values",
                 caption="σ_max(W_hh) bounds how much one step can stretch a vector: ‖∂h_t/∂h_{t-1}‖ ≤ "
                         "γ·σ_max(W_hh) for the vanilla RNN; the LSTM and GRU blocks are scaled by their gates."
                         + (" A diagonal recurrence without W_hh (the LRU's λ) has singular values |λ|: the most one "
                            "step stretches its state." if diag else ""))
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
    _base_layout(fig, "Lyapunov exponents of the state Jacobians: λ < 0 means perturbations shrink every step"
                 + layer_note(results), meta, view, "lyapunov",
                 caption="The average growth rate per step along the actual run (φ' and the gates included), "
                         "largest first: all negative means the network forgets, λ_1 > 0 means it is chaotic.")
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
                     "spectral_radius_training",
                     caption="ρ(W_hh) after each training step (the largest over the gate blocks): near 1 the "
                             "linear part of the recurrence sits at the edge between shrinking and growing.")
        figs["spectral_radius_training"] = fig
    return figs


def _what(r) -> str:
    """What a result's eigenvalue panel shows: W_hh's, a fixed diagonal recurrence's (the LRU's λ), or none."""
    if cell_type(r.config.cell).gate_names:
        return "eigenvalues of W<sub>hh</sub>"
    return "eigenvalues of its diagonal recurrence" if r.spectra else "no fixed recurrence"


def _block_name(r, block: str, gate_block: str, diagonal: str = "{block}") -> str:
    """W_hh (the whole matrix), one gate's block, or a diagonal recurrence's own name (λ, a^c)."""
    if not cell_type(r.config.cell).gate_names:
        return diagonal.format(block=block)
    return "W<sub>hh</sub>" if block == "h" else gate_block


def _variant(key, items) -> int:
    """Index of this key among the keys of the same cell (for dash styles)."""
    same = [k for k, _ in items if cell_of(k) == cell_of(key)]
    return same.index(key) % len(VARIANT_DASHES) if key in same else 0


