"""View 6, activations: phi and phi' of each activation, gamma = sup|phi'|."""
from __future__ import annotations

import plotly.graph_objects as go

from rnn_models.config import ACTIVATION_GAMMA, ACTIVATIONS

from .theme import ACTIVATION_COLORS, _base_layout, _hline, config_meta, subplots


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


