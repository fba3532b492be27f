"""Cell state of gated cells: full dc/dc vs the forget-gate carousel, gate heatmaps, saturation."""
from __future__ import annotations

import streamlit as st

from ..controls import gate_choice
from analysis.guides import VIEW_GUIDES
from rnn_models.cells import cell_names, cell_type

from .common import draw, export_all, figures, guide

TITLE = "Cell state"
VIEW = "cell-state"
GUIDE = VIEW_GUIDES[VIEW]
NEEDS_FULL = True  # reads the Jacobian products (result.jac): waits for the full analysis


def render(ctx) -> None:
    guide(GUIDE)
    figs = figures(VIEW, ctx)
    gated = [k for k, r in ctx.results.items() if cell_type(r.config.cell).keep_gate is not None]  # LSTM, GRU
    # a kind no config builds (Your cell, dashboard/own_step.py): a step given as code, opaque to this view
    own = [k for k, r in ctx.results.items() if r.config.cell not in cell_names()]
    if own:
        st.caption("Your cell: a step given as code has no gates or keep path this view could name; the Jacobians "
                   "of its whole state (its carried tensors too) are in the Jacobians view.")
        if len(own) == len(ctx.results):
            return
    if not gated and len(own) < len(ctx.results):
        st.info("This view is about gated cells (the LSTM's c_t and f_t, the GRU's z_t). A vanilla RNN has no cell "
                "state: below are its hidden states h_t and saturation. Add an LSTM or GRU in the sidebar.")
    gate_names = [n for n in figs if n.startswith("gates_")]
    choice = None
    if gate_names:
        letters = sorted({n.rsplit("_", 1)[1] for n in gate_names}, key="fizro".find)
        choice = gate_choice(letters)
    shown = ["cell_flow", "cell_grad"] + [n for n in gate_names if n.endswith(f"_{choice}")] + ["gate_saturation"] + \
        [n for n in figs if n.startswith("hidden_")]
    draw(VIEW, figs, shown)
    if choice and not any(n.endswith(f"_{choice}") for n in gate_names):
        st.caption(f"No cell here has the gate {choice}.")
    export_all(VIEW, figs, ctx)
