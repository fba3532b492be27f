"""Activations phi and their derivatives, gamma = sup|phi'| annotated."""
from __future__ import annotations

from analysis.guides import VIEW_GUIDES

from .common import draw, export_all, figures, guide

TITLE = "Activations"
VIEW = "activations"
GUIDE = VIEW_GUIDES[VIEW]


def render(ctx) -> None:
    guide(GUIDE)
    figs = figures(VIEW, ctx)
    draw(VIEW, figs)
    export_all(VIEW, figs, ctx)
