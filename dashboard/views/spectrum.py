"""Spectrum of W_hh: eigenvalues vs the unit circle, singular values, Lyapunov exponents (+ radius in training)."""
from __future__ import annotations

from .common import draw, export_all, figures, guide

TITLE = "Spectrum"
VIEW = "spectrum"
GUIDE = ("Eigenvalues of W_hh outside the unit circle grow a linear recurrence, inside they shrink it; σ_max(W_hh) "
         "bounds how much one step can stretch a vector. The Lyapunov exponents are the average growth rates per "
         "step along the actual run (φ' and the gates included): all negative means the network forgets.")


def render(ctx) -> None:
    guide(GUIDE)
    figs = figures(VIEW, ctx, uses_history=True)
    draw(VIEW, figs)
    export_all(VIEW, figs, ctx)
