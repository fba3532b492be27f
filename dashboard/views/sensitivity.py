"""Sensitivity of h_t to the recurrent parameters next to the state's size (analysis.param_sensitivity).

An opt-in computation: nothing of it runs for the page until this tab is open. Opening it runs, for each result
shown (the cells and the variant), ``run_experiment(config, views="sensitivity")`` (its gradient pass and the
forward-mode JVPs) through the scheduler's door like every analysis: its cost estimated with the view's share
(``analysis.limits.estimate(views=...)``) and refused over the host's limits, a slot under this session's id, a
progress bar, and the shared cache (so a second visit, or another visitor, draws at once).
"""
from __future__ import annotations

import json

import numpy as np
import streamlit as st

from analysis.config import ExperimentConfig
from analysis.figures import view_figures
from analysis.guides import VIEW_GUIDES
from analysis.limits import check
from analysis.own_cell import OwnCell

from .. import scheduler
from ..compute import analysis_key, visitor
from .common import draw, export_all, guide

TITLE = "Sensitivity"
VIEW = "sensitivity"
GUIDE = VIEW_GUIDES[VIEW]
VIEWS = ("sensitivity",)  # what this tab computes (analysis.compute_views): never part of the page's analysis
DECK = "sensitivity_deck"  # session key: (settings stamp, figures) drawn last, for the deck of all views


def _key(config: ExperimentConfig) -> str:
    return analysis_key(config) + "|views=sensitivity"


def _one(config: ExperimentConfig, bar, label: str):
    """The sensitivity of one run (a result of the page: a cell, or the variant's), cached by its config."""
    clean = ExperimentConfig.from_dict(json.loads(analysis_key(config)))
    cost = check(clean, views=VIEWS)  # LimitExceeded (one line) before anything runs

    def progress(fraction: float, text: str) -> None:
        bar.progress(min(1.0, max(0.0, float(fraction))), text=f"{label}: {text}"[:200])

    def wait(position: int) -> None:
        bar.progress(0.0, text=f"{label}: waiting for a free slot: {scheduler.SLOTS.line_text(position)}"[:300])

    def run():
        from analysis.experiment import run_experiment
        return run_experiment(clean.replace(threads=scheduler.threads_share()), progress=progress, views=VIEWS)

    value, _ = scheduler.run_shared(_key(clean), run, wait, visitor=visitor(), cost=cost,
                                    kind=scheduler.INTERACTIVE, label=f"the sensitivity of {label}")
    return value


def results_of(ctx) -> dict:
    """{key: ExperimentResult with param_sensitivity} for every result on the page."""
    from analysis.figures import label_of
    bar = st.empty()
    try:
        from .. import own_step  # Your cell (the server's --step): its own estimate and path
        return {key: own_step.sensitivity(ctx.settings.config) if key == own_step.OWN else
                _one(r.config, bar, label_of(key)) for key, r in ctx.results.items()}
    finally:
        bar.empty()


def deck_figures(stamp: str) -> dict | None:
    """The figures this session drew last for the settings ``stamp`` (for the deck of all views), or None."""
    got = st.session_state.get(DECK)
    return got[1] if got and got[0] == stamp else None


def render(ctx) -> None:
    guide(GUIDE)
    if getattr(ctx, "own", False) and OwnCell.name not in ctx.results:  # an upload (Your cell is drawn)
        st.info("The sensitivity of an uploaded model is computed by the Python API and the command line: "
                "analysis.analyze(model, x, views='sensitivity') or python -m analysis run --views sensitivity "
                "--load-state-dict model.pt --inputs x.npy.")
        return
    try:
        results = results_of(ctx)
    except ValueError as e:  # LimitExceeded / ConfigError: one line
        st.error(f"The parameter sensitivity cannot be computed for these settings: {' '.join(str(e).split())}.")
        return
    figs = view_figures(VIEW, results)
    methods = {r.param_sensitivity.method for r in results.values()}
    errs = [float(np.nanmax(r.param_sensitivity.rel_se)) for r in results.values()
            if r.param_sensitivity.rel_se is not None and np.isfinite(r.param_sensitivity.rel_se).any()]
    st.caption("Method: " + "; ".join(sorted(methods)) + ". Forward mode (one tangent pass per direction), "
               "float64, exact in log10 where it passes float64's range."
               + (f" Relative standard error of the estimate at most {max(errs):.1%} (band: ±2 standard errors)."
                  if errs else ""))
    draw(VIEW, figs)
    export_all(VIEW, figs, ctx)
    st.session_state[DECK] = (stamp_of(ctx), figs)


def stamp_of(ctx) -> str:
    s = ctx.settings
    return f"{ctx.config.to_json()}|{getattr(s, 'variant', None)}"
