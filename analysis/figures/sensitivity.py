r"""The sensitivity view: how much h_t moves with the recurrent parameters, next to how large h_t is (the curse
of memory, Zucchet & Orvieto 2024; ``analysis.param_sensitivity``).

    S_t = mean_b ||d h_t / d theta||_F^2     E_t = mean_b ||h_t||^2     (log10, as the engine carries them)

Values are drawn as log10 on a linear axis: S_t can pass float64's range (10^308) while the engine still has it
exactly in log space. A Hutchinson estimate is drawn with its band of +-2 relative standard errors.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .theme import (SCREEN_HEIGHT, _base_layout, _rgba, _vline, color_of, config_meta, label_of, layer_note,
                    new_figure)

VIEW = "sensitivity"
CAPTION = ("S_t = mean ‖∂h_t/∂θ‖²_F: how far the state at step t moves when the recurrent parameters θ move; "
           "E_t = mean ‖h_t‖²: how large the state is. As memory grows (eigenvalues λ of the recurrence → 1) both "
           "grow, but S_t faster: for h_t = λ h_{t-1} + x_t, E → 1/(1−λ²) while S → (1+λ²)/(1−λ²)³, so even a "
           "normalised state (the ratio) explodes as (1−λ²)⁻² although ∂h_T/∂h_t does not (Zucchet & Orvieto "
           "2024).")


def _with(results: dict) -> dict:
    return {k: r for k, r in results.items() if getattr(r, "param_sensitivity", None) is not None}


def _marks(fig: go.Figure, shown: dict) -> None:
    """A dotted line where a result's values stop being finite (named in the legend's colour)."""
    for slot, (key, r) in enumerate(shown.items()):
        bad = r.param_sensitivity.nonfinite
        if bad is not None:
            _vline(fig, bad["timestep"], f"{label_of(key)}: not finite from t = {bad['timestep']} "
                   f"({bad['quantity']})", color_of(key, shown), slot)


def _method_note(shown: dict) -> str:
    methods = list(dict.fromkeys(r.param_sensitivity.method for r in shown.values()))
    return "; ".join(methods)


def sensitivity_figures(results: dict, histories: dict | None = None) -> dict[str, go.Figure]:
    """{"sensitivity": log10 S_t and log10 E_t by t, "sensitivity_ratio": log10 S_t / E_t by t}; {} when no
    result computed the view (it is opt-in: ``views="sensitivity"``)."""
    shown = _with(results or {})
    if not shown:
        return {}
    meta = config_meta(shown)
    params = sorted({", ".join(r.param_sensitivity.params) for r in shown.values()})
    theta = f" = {params[0]}" if len(params) == 1 else ""  # each cell's own: the legend's per-parameter lines
    fig = new_figure()
    for key, r in shown.items():
        ps, color, lab = r.param_sensitivity, color_of(key, shown), label_of(key)
        t = np.asarray(ps.t)
        S, E = np.asarray(ps.log10_sensitivity, float), np.asarray(ps.log10_state_energy, float)
        if ps.rel_se is not None:  # the estimate's band: S (1 +- 2 rel_se), drawn under its line
            rel = np.asarray(ps.rel_se, float)
            with np.errstate(invalid="ignore", divide="ignore"):
                hi, lo = S + np.log10(1 + 2 * rel), S + np.log10(np.clip(1 - 2 * rel, 1e-3, None))
            edge = dict(width=0.5, color=_rgba(color, 0.4))
            fig.add_trace(go.Scatter(x=t, y=hi, line=edge, showlegend=False, hoverinfo="skip", legendgroup=key,
                                     name=f"{lab} S_t + 2 SE", meta={"role": "band", "cell": key}))
            fig.add_trace(go.Scatter(x=t, y=lo, line=edge, fill="tonexty", fillcolor=_rgba(color, 0.2),
                                     showlegend=False, hoverinfo="skip", legendgroup=key,
                                     name=f"{lab} S_t − 2 SE", meta={"role": "band", "cell": key}))
        fig.add_trace(go.Scatter(x=t, y=S, name=f"{lab} log10 S<sub>t</sub> = log10 ‖∂h<sub>t</sub>/∂θ‖²",
                                 legendgroup=key, line=dict(color=color, width=2.5),
                                 meta={"role": "log10_sensitivity", "cell": key, "method": ps.method},
                                 hovertemplate="t=%{x}<br>log10 S_t=%{y:.3f}<extra>" + lab + "</extra>"))
        fig.add_trace(go.Scatter(x=t, y=E, name=f"{lab} log10 E<sub>t</sub> = log10 ‖h<sub>t</sub>‖²",
                                 legendgroup=key, line=dict(color=color, width=2, dash="dash"),
                                 meta={"role": "log10_state_energy", "cell": key},
                                 hovertemplate="t=%{x}<br>log10 E_t=%{y:.3f}<extra>" + lab + "</extra>"))
        for name, b in ps.blocks.items():  # the per-block breakdown, off until clicked in the legend
            fig.add_trace(go.Scatter(x=t, y=np.asarray(b["log10_sensitivity"], float), legendgroup=key,
                                     name=f"{lab} log10 ‖∂h<sub>t</sub>/∂{name}‖² ({b['method']})",
                                     line=dict(color=color, width=1.2, dash="dot"), visible="legendonly",
                                     meta={"role": "log10_sensitivity_block", "cell": key, "param": name}))
    _marks(fig, shown)
    fig.update_yaxes(title="log10 (mean over sequences)")
    fig.update_xaxes(title="time step t")
    # the legend (two entries per result and one per parameter block, about two to a row) grows below the plot:
    # the figure grows with it, so the plot keeps its height (16 entries squeezed it to a third)
    rows = -(-sum(1 for tr in fig.data if tr.showlegend is not False) // 2)
    _base_layout(fig, f"Sensitivity to the recurrent parameters θ{theta}: log10 S<sub>t</sub> (solid) and the "
                 "state's size log10 E<sub>t</sub> (dashed)" + layer_note(shown), meta, VIEW, "sensitivity",
                 height=SCREEN_HEIGHT + 22 * max(0, rows - 2), legend_bottom=True,
                 caption=CAPTION + " Method: " + _method_note(shown) + ".")
    figs = {"sensitivity": fig}

    fig = new_figure()
    for key, r in shown.items():
        ps, color, lab = r.param_sensitivity, color_of(key, shown), label_of(key)
        fig.add_trace(go.Scatter(x=np.asarray(ps.t), y=np.asarray(ps.log10_ratio, float),
                                 name=f"{lab} log10 S<sub>t</sub> / E<sub>t</sub>", legendgroup=key,
                                 line=dict(color=color, width=2.5), meta={"role": "log10_ratio", "cell": key},
                                 hovertemplate="t=%{x}<br>log10 S_t/E_t=%{y:.3f}<extra>" + lab + "</extra>"))
    _marks(fig, shown)
    fig.update_yaxes(title="log10 S<sub>t</sub> / E<sub>t</sub>")
    fig.update_xaxes(title="time step t")
    _base_layout(fig, "Sensitivity of the normalised state: log10 ‖∂h<sub>t</sub>/∂θ‖² / ‖h<sub>t</sub>‖²"
                 + layer_note(shown), meta, VIEW, "sensitivity_ratio", legend_bottom=True,
                 caption="The ratio S_t / E_t is the sensitivity once the state's own size is divided out (what "
                         "a normalisation of h does): it still grows with memory, as (1−λ²)⁻² for a linear "
                         "recurrence with eigenvalue λ, where ‖∂h_T/∂h_t‖ ≤ 1. Normalising the input (the LRU's "
                         "γ = √(1−|λ|²)) keeps E_t fixed, and a reparameterised diagonal recurrence "
                         "(λ = exp(−exp(ν) + iθ)) tames the sensitivity to its modulus ν (not to its phase θ: "
                         "the per-parameter lines of the other figure).")
    figs["sensitivity_ratio"] = fig
    return figs


__all__ = ["sensitivity_figures"]
