"""Jacobian products dh_{T-1}/dh_{T-1-k}: singular values by lag, the Pascanu bound and the memory horizon."""
from __future__ import annotations

import streamlit as st

from analysis.figures import apply_display

from ..controls import display_toggle
from .common import draw, export_all, figures, guide

TITLE = "Jacobians"
VIEW = "jacobians"
GUIDE = ("σ_max of ∂h_{T-1}/∂h_{T-1-k} is the most a change k steps back can still move the last state; σ_min "
         "the least (hollow points are below float resolution). The memory horizon is the first lag where σ_max "
         "falls under the threshold; for the RNN the dashed line is the bound (γ·σ_max(W_hh))^k that no lag can "
         "exceed. In a bidirectional network the dashed line is the backward direction (its own W_hh, read from "
         "t = T-1 back to 0) and the bound is dash-dotted.")


def render(ctx) -> None:
    guide(GUIDE)
    c = st.columns([1, 5])
    with c[0]:
        log = display_toggle("Log y axis", "display_log_jac")
    L = ctx.config.num_layers
    if L > 1:
        a = ctx.config.analysed_layer
        st.caption(f"Jacobians of layer {a + 1} of {L}" + (" (the top, which the loss reads)" if a == L - 1 else "")
                   + ": pick another under Model → Analysed layer in the sidebar.")
    figs = figures(VIEW, ctx)
    for fig in figs.values():
        apply_display(fig, log_y=log)
    draw(VIEW, figs)
    export_all(VIEW, figs, ctx)
