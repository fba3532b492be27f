"""Gradient flow: ||dL/dh_t|| over time (+ training heatmap, layers, directions)."""
from __future__ import annotations

import streamlit as st

from analysis.figures import apply_display

from ..controls import display_toggle
from analysis.guides import VIEW_GUIDES

from .common import draw, export_all, figures, guide

TITLE = "Gradient flow"
VIEW = "gradient-flow"
GUIDE = VIEW_GUIDES[VIEW]


def render(ctx) -> None:
    guide(GUIDE)
    figs = figures(VIEW, ctx, uses_history=True)
    # below float64's range the chart draws exact log10 values on its own axis: a linear axis of the values
    # themselves would show 0 for most of the line, so the switch is off and says why
    exact = any(isinstance(tr.meta, dict) and tr.meta.get("log10") for f in figs.values() for tr in f.data)
    c = st.columns([1, 1, 4])
    with c[0]:
        log = display_toggle("Log y axis", "display_log", disabled=exact,
                             help=("Some ‖∂L/∂h_t‖ lie below float64's range (10⁻³⁰⁸): the chart draws their exact "
                                   "log10 values, on a log scale only.") if exact else None)
    with c[1]:
        band = display_toggle("10–90% band", "display_band", help="Spread over the batch's sequences.")
    for fig in figs.values():
        apply_display(fig, log_y=log, band=band)
    if not ctx.histories:
        st.caption("Train in the Live training tab to add a training-step × time-step map of the gradient here.")
    draw(VIEW, figs)
    export_all(VIEW, figs, ctx)
