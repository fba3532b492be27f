"""Activations phi and their derivatives, gamma = sup|phi'| annotated."""
from __future__ import annotations

from .common import draw, export_all, figures, guide

TITLE = "Activations"
VIEW = "activations"
GUIDE = ("Every backward step multiplies by diag(φ'(a_t)) W_hh, so ‖∂h_t/∂h_{t-1}‖ ≤ γ·σ_max(W_hh) with γ = sup|φ'|: "
         "γ = 1/4 for the sigmoid makes it vanish faster; tanh gives 1 only near a = 0 and almost 0 once saturated; "
         "relu and linear pass exactly 1 where active.")


def render(ctx) -> None:
    guide(GUIDE)
    figs = figures(VIEW, ctx)
    draw(VIEW, figs)
    export_all(VIEW, figs, ctx)
