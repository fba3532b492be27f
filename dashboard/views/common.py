"""Helpers shared by the views: cached figure building and drawing a view's figures with their exports."""
from __future__ import annotations

import streamlit as st

from analysis.figures import view_figures
from analysis.own_cell import OwnCell

from ..compute import analyse, analysis_key, partial
from ..exporting import chart, deck_button, provenance_of, zip_button


@st.cache_data(max_entries=64, show_spinner=False)
def _cached_figures(view: str, key: str, variant_key: str, label: str, only: str | None = None) -> dict:
    import json

    from analysis.config import ExperimentConfig
    cfg = ExperimentConfig.from_dict(json.loads(key))
    variant = json.loads(variant_key) if variant_key else None
    return view_figures(view, analyse(cfg, variant, label, only=only), None)


def figures(view: str, ctx, *, uses_history: bool = False) -> dict:
    """The view's figures (a fresh copy: display options may change them); cached unless histories are drawn.

    From the gradient pass alone while the full analysis is pending (views that need no Jacobian products)."""
    if (uses_history and ctx.histories) or getattr(ctx, "own", False) or OwnCell.name in ctx.results:  # Your cell
        return view_figures(view, ctx.results, ctx.histories)
    import json
    s = ctx.settings
    return _cached_figures(view, analysis_key(ctx.config), json.dumps(s.variant, sort_keys=True) if s.variant else "",
                           s.variant_label, "gradients" if partial(ctx.results) else None)


def draw(view: str, figs: dict, names=None) -> None:
    for name in (names if names is not None else list(figs)):
        if name in figs:
            chart(view, name, figs[name])


def guide(text: str) -> None:
    st.caption(text)


def export_all(view: str, figs: dict, ctx) -> None:
    zip_button(view, figs, ctx.config)
    if figs:
        deck_button(view, {view: figs}, ctx.settings, "Slide deck of this view (.pptx)", f"{view}.pptx",
                    config=ctx.config, provenance=provenance_of(ctx.results))
