"""View 6, activations: phi and phi' of each activation, gamma = sup|phi'|."""
from __future__ import annotations

import plotly.graph_objects as go

from rnn_models.cells import cell_type
from rnn_models.config import ACTIVATION_GAMMA, ACTIVATIONS

from .theme import ACTIVATION_COLORS, _base_layout, _hline, config_meta, subplots


def _listed(items: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}" if items else ""


def instead(cells) -> str:
    """What kinds without ``activation`` use instead, grouped by their ``activation_note``: "the LSTM and the GRU
    use sigmoid/tanh gates; the LRU is linear (a complex diagonal recurrence, no activation)"."""
    groups: dict[str, list[str]] = {}
    for c in dict.fromkeys(cells):
        groups.setdefault(cell_type(c).activation_note, []).append(f"the {cell_type(c).label}")
    out = []
    for note, who in groups.items():
        verb, _, rest = note.partition(" ")
        if len(who) > 1:  # "uses" -> "use", "is" -> "are"
            verb = {"is": "are", "has": "have"}.get(verb, verb[:-1] if verb.endswith("s") else verb)
        out.append(f"{_listed(who)} {verb} {rest}")
    return "; ".join(out)


def activation_figures(results: dict | None = None, histories: dict | None = None) -> dict[str, go.Figure]:
    import torch

    from rnn_models.cells import activation_and_derivative

    meta = config_meta(results or {})
    current = {r.config.activation for r in (results or {}).values()
               if "activation" in cell_type(r.config.cell).settings}  # the kinds whose phi this is (the RNN)
    gated_only = bool(results) and not current  # only LSTM/GRU shown: the vanilla-RNN bound is not theirs
    a = torch.linspace(-5, 5, 401, dtype=torch.float64)
    fig = subplots(rows=1, cols=2, horizontal_spacing=0.08,
                        subplot_titles=("φ(a)", "φ′(a): γ = sup|φ′| bounds each step's factor"))
    for name in ACTIVATIONS:
        y, d = activation_and_derivative(name, a)
        color = ACTIVATION_COLORS[name]
        gamma = ACTIVATION_GAMMA[name]
        width = 4 if name in current else 2
        label = f"{name}  (γ = {'1/4' if gamma == 0.25 else f'{gamma:g}'})" + ("  ← this RNN" if name in current else "")
        # linear is a thick dotted line: its φ′ = 1 lies exactly on relu's for a > 0 (which shows between the dots)
        # and on the thin dashed γ = 1 reference line for a < 0
        dash = "dot" if name == "linear" else "solid"
        width = max(width, 3.5) if name == "linear" else width
        fig.add_trace(go.Scatter(x=a.numpy(), y=y.numpy(), name=label, legendgroup=name,
                                 line=dict(color=color, width=width, dash=dash)), row=1, col=1)
        fig.add_trace(go.Scatter(x=a.numpy(), y=d.numpy(), name=f"{name}′", legendgroup=name, showlegend=False,
                                 line=dict(color=color, width=width, dash=dash)), row=1, col=2)
    for g, txt in ((1.0, "γ = 1: tanh, relu, linear"), (0.25, "γ = 1/4: sigmoid")):
        _hline(fig, g, txt, row=1, col=2)
    fig.update_yaxes(range=[-1.6, 3.0], title_text="φ(a)", row=1, col=1)
    fig.update_yaxes(range=[-0.1, 1.3], title_text="φ′(a)", row=1, col=2)
    fig.update_xaxes(title_text="pre-activation a", row=1, col=1)
    fig.update_xaxes(title_text="pre-activation a", row=1, col=2)
    if gated_only:
        others = [r.config.cell for r in results.values()]
        labels = _listed([f"the {cell_type(c).label}" for c in dict.fromkeys(others)])
        title = f"Activations and their derivatives φ′ of the vanilla RNN (not used by {labels})"
        caption = ("φ and φ′ of each activation a vanilla RNN may use. The bound ‖∂h_t/∂h_{t-1}‖ ≤ γ·σ_max(W_hh) "
                   f"holds for the vanilla RNN only: {instead(others)}; their step Jacobians are in the Jacobian "
                   "and cell-state views.")
    else:
        title = ("Activations and their derivatives (vanilla RNN): ‖∂h<sub>t</sub>/∂h<sub>t-1</sub>‖ ≤ "
                 "γ·σ<sub>max</sub>(W<sub>hh</sub>)")
        caption = ("Every backward step of a vanilla RNN multiplies by diag(φ′(a_t)) W_hh, so ‖∂h_t/∂h_{t-1}‖ ≤ "
                   "γ·σ_max(W_hh) with γ = sup|φ′|: γ = 1/4 for the sigmoid makes it vanish faster; tanh gives 1 "
                   "only near a = 0 and almost 0 once saturated; relu and linear pass exactly 1 where active.")
    _base_layout(fig, title, meta, "activations", "activations", legend_bottom=True, caption=caption)
    return {"activations": fig}


