"""Spectrum of W_hh: eigenvalues vs the unit circle, singular values, Lyapunov exponents (+ radius in training)."""
from __future__ import annotations

from analysis.guides import VIEW_GUIDES

from .common import draw, export_all, figures, guide

TITLE = "Spectrum"
VIEW = "spectrum"
GUIDE = VIEW_GUIDES[VIEW]
NEEDS_FULL = True  # reads the Jacobian products (result.jac): waits for the full analysis


def render(ctx) -> None:
    guide(GUIDE)
    figs = figures(VIEW, ctx, uses_history=True)
    draw(VIEW, figs)
    export_all(VIEW, figs, ctx)
