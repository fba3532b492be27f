"""Cached analysis: one ``run_comparison`` per config, keyed by the config's JSON (training-only fields left out,
so changing the clip mode or learning rate never recomputes the analysis)."""
from __future__ import annotations

import json

import streamlit as st

from analysis.config import ExperimentConfig

from .controls import TRAINING_FIELDS

_DEFAULTS = ExperimentConfig().to_dict()


def analysis_key(config: ExperimentConfig) -> str:
    d = config.to_dict()
    for f in TRAINING_FIELDS:
        d[f] = _DEFAULTS[f]
    return json.dumps(d, sort_keys=True)


@st.cache_data(max_entries=32, show_spinner=False)
def _run(key: str) -> dict:
    from analysis.experiment import run_comparison
    return run_comparison(ExperimentConfig.from_dict(json.loads(key)))


def analyse(config: ExperimentConfig, variant: dict | None = None, label: str = "") -> dict:
    """{key: ExperimentResult}: the config's cells, then (if a variant is given) "cell · label" for each cell.

    Raises ValueError (ConfigError included) with the engine's one-line message for settings it rejects.
    """
    results = dict(_run(analysis_key(config)))
    if variant:
        other = _run(analysis_key(config.replace(**variant)))
        results.update({f"{cell} · {label}": r for cell, r in other.items()})
    return results
