"""Shared analysis for every visitor of one server: cost check, a slot among GDLAB_MAX_CONCURRENT, progress,
and a byte-budgeted cache of results (dashboard/scheduler.py), keyed by the config's JSON (training-only fields
left out, so changing the clip mode or learning rate never recomputes the analysis).

Cancellation: the progress callback draws into the page, so when the visitor changes a setting or closes the tab,
Streamlit's stop of this script run is raised inside the engine at its next progress call; the half-done run
returns nothing and nothing is cached.
"""
from __future__ import annotations

import json

import streamlit as st

from analysis.config import ExperimentConfig
from analysis.limits import check
from rnn_models.config import ConfigError

from . import scheduler
from .controls import TRAINING_FIELDS

_DEFAULTS = ExperimentConfig().to_dict()


def analysis_key(config: ExperimentConfig) -> str:
    d = config.to_dict()
    for f in TRAINING_FIELDS:
        d[f] = _DEFAULTS[f]
    return json.dumps(d, sort_keys=True)


FIRST_CHART_GFLOP = 2.0  # analyses estimated above this draw the gradient-flow chart first (about one backward pass)


def is_cached(config: ExperimentConfig, variant: dict | None = None) -> bool:
    """True when the whole analysis of ``config`` (and its variant) is in the shared cache (nothing to wait for)."""
    keys = [analysis_key(config)] + ([analysis_key(config.replace(**variant))] if variant else [])
    return all(scheduler.CACHE.get(k) is not None for k in keys)


def wants_first_chart(config: ExperimentConfig, variant: dict | None = None) -> bool:
    """Long analyses (estimated arithmetic above FIRST_CHART_GFLOP) that are not cached yet."""
    try:
        cost = check(config, variant)  # over the host's limits: nothing runs, the full analysis says why
        return cost.gflop > FIRST_CHART_GFLOP and not is_cached(config, variant)
    except Exception:  # noqa: BLE001 - an invalid or refused config is reported by the full analysis
        return False


def _one(config: ExperimentConfig, bar, label: str, only: str | None = None) -> dict:
    from analysis.experiment import run_comparison

    def wait(position: int) -> None:
        bar.progress(0.0, text=f"Waiting for a free slot: position {position} in line "
                                f"({scheduler.SLOTS.running} analyses running, at most {scheduler.SLOTS.n} at once)")

    def progress(fraction: float, what: str) -> None:
        bar.progress(min(1.0, max(0.0, float(fraction))), text=f"{label}{what}"[:200])

    cfg = ExperimentConfig.from_dict(json.loads(analysis_key(config)))
    key = analysis_key(config) + (f"|only={only}" if only else "")
    value, _ = scheduler.run_shared(key, lambda: run_comparison(cfg, progress=progress, only=only), wait)
    return value


def analyse(config: ExperimentConfig, variant: dict | None = None, label: str = "", only: str | None = None) -> dict:
    """{key: ExperimentResult}: the config's cells, then (if a variant is given) "cell · label" for each cell.

    Raises ValueError (ConfigError / LimitExceeded included) with a one-line message for settings that cannot run.
    ``only="gradients"``: the gradient pass alone (results with ``complete`` False), for the first chart.
    """
    for name in ("inputs_path", "state_dict_path", "targets_path", "h0_path"):
        if getattr(config, name) is not None or name in (variant or {}):
            raise ConfigError(f"{name} cannot be set in the dashboard: nothing a visitor types names a file on "
                              "the server")
    check(config, variant, only=only)
    bar = st.empty()
    try:
        results = dict(_one(config, bar, "", only))
        if variant:
            other = _one(config.replace(**variant), bar, f"variant {label} · ", only)
            results.update({f"{cell} · {label}": r for cell, r in other.items()})
    finally:
        bar.empty()
    return results
