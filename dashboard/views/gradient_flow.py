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
    c = st.columns([1, 1, 4])
    with c[0]:
        log = display_toggle("Log y axis", "display_log")
    with c[1]:
        band = display_toggle("10–90% band", "display_band", help="Spread over the batch's sequences.")
    figs = figures(VIEW, ctx, uses_history=True)
    for fig in figs.values():
        apply_display(fig, log_y=log, band=band)
    if not ctx.histories:
        st.caption("Train in the Live training tab to add a training-step × time-step map of the gradient here.")
    draw(VIEW, figs)
    export_all(VIEW, figs, ctx)
