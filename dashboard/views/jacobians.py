"""Jacobian products dh_{T-1}/dh_{T-1-k}: singular values by lag, the Pascanu bound and the memory horizon."""
from __future__ import annotations

import streamlit as st

from analysis.figures import apply_display, layer_name

from ..controls import display_toggle
from analysis.guides import VIEW_GUIDES

from .common import draw, export_all, figures, guide

TITLE = "Jacobians"
VIEW = "jacobians"
GUIDE = VIEW_GUIDES[VIEW]
NEEDS_FULL = True  # reads the Jacobian products (result.jac): waits for the full analysis


def render(ctx) -> None:
    guide(GUIDE)
    c = st.columns([1, 5])
    with c[0]:
        log = display_toggle("Log y axis", "display_log_jac")
    L = ctx.config.num_layers
    if L > 1:
        a = ctx.config.analysed_layer
        st.caption(f"Jacobians of {layer_name(a, L)}" + (", which the loss reads" if a == L - 1 else "")
                   + ": pick another under Model → Analysed layer in the sidebar.")
    figs = figures(VIEW, ctx)
    for fig in figs.values():
        apply_display(fig, log_y=log)
    draw(VIEW, figs)
    export_all(VIEW, figs, ctx)
