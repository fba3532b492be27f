"""Shared analysis for every visitor of one server: cost check, a slot among GDLAB_MAX_CONCURRENT, progress,
and a byte-budgeted cache of results (dashboard/scheduler.py), keyed by the config's JSON (training-only fields
left out, so changing the clip mode or learning rate never recomputes the analysis).

Every run passes the scheduler's door with its cost estimate (``analysis.limits.estimate`` of its own config and
stage) under this browser session's id (``visitor()``): a page's analyses are ``INTERACTIVE`` (first charts and
short analyses), the full analysis of a long one ``BACKGROUND`` (a job, dashboard/background.py).

Cancellation: the progress callback (and the wait in line) draws into the page, so when the visitor changes a
setting or closes the tab, Streamlit's stop of this script run is raised inside the engine at its next progress
call; the half-done run returns nothing and nothing is cached.
"""
from __future__ import annotations

import json

import streamlit as st

from analysis.config import ExperimentConfig
from analysis.limits import check, estimate
from analysis.variant import variant_cells, variant_config, variant_key
from rnn_models.config import ConfigError

from . import background, remote, scheduler
from .controls import TRAINING_FIELDS

_DEFAULTS = ExperimentConfig().to_dict()


def analysis_key(config: ExperimentConfig) -> str:
    """The config's JSON without the fields that cannot change an analysis: training settings, and ``threads``
    (the server sets it per run: ``scheduler.threads_share``; results are bit-identical at any count)."""
    d = config.to_dict()
    for f in TRAINING_FIELDS + ("threads",):
        d[f] = _DEFAULTS[f]
    return json.dumps(d, sort_keys=True)


FIRST_CHART_GFLOP = 2.0  # analyses estimated above this draw the gradient-flow chart first (about one backward pass)


def is_cached(config: ExperimentConfig, variant: dict | None = None) -> bool:
    """True when the whole analysis of ``config`` (and its variant) is in the shared cache (nothing to wait for)."""
    other = variant_config(config, variant)
    keys = [analysis_key(config)] + ([analysis_key(other)] if other is not None else [])
    return all(scheduler.CACHE.get(k) is not None for k in keys)


def wants_first_chart(config: ExperimentConfig, variant: dict | None = None) -> bool:
    """Long analyses (estimated arithmetic above FIRST_CHART_GFLOP) that are not cached yet."""
    try:
        cost = check(config, variant)  # over the host's limits: nothing runs, the full analysis says why
        return cost.gflop > FIRST_CHART_GFLOP and not is_cached(config, variant)
    except Exception:  # noqa: BLE001 - an invalid or refused config is reported by the full analysis
        return False


def visitor() -> str | None:
    """This browser session's id (dashboard/app.py sets it), or None outside a script run (e.g. a download's
    data built at click time)."""
    try:
        return st.session_state.get("gdlab_session")
    except Exception:  # noqa: BLE001 - no script run context
        return None


def _parts(config: ExperimentConfig, variant: dict | None, label: str, only: str | None = None) -> list:
    """[(cache key, bar label, run(progress) -> {cell: result}, cost)] of the config, then of its variant (the
    cells it changes: ``analysis.variant.variant_config``; no part when it changes none)."""
    out = []
    other = variant_config(config, variant)
    runs = [(config, "")] + ([(other, f"variant {label} · ")] if other is not None else [])
    for cfg, bar_label in runs:
        clean = ExperimentConfig.from_dict(json.loads(analysis_key(cfg)))
        key = analysis_key(cfg) + (f"|only={only}" if only else "")

        cost = estimate(clean, only=only)

        def run(progress, clean=clean, cost=cost):
            from analysis.experiment import run_comparison  # looked up per call (tests count the calls)
            if remote.enabled():  # one Ray task of one CPU; the bar shows the time against the estimate
                return remote.call(run_comparison, clean.replace(threads=1), only=only,
                                   check=remote.ticker(progress, cost))
            # called inside the slot: this analysis's share of the cores (cells side by side, spectra pool)
            return run_comparison(clean.replace(threads=scheduler.threads_share()), progress=progress, only=only)
        out.append((key, bar_label, run, cost))
    return out


def _merge(values: list, config: ExperimentConfig, variant: dict | None) -> dict:
    """{cell: result} of the config, then {"cell · its label": result} of its variant (each cell's label names the
    settings that change that cell's run: ``analysis.variant.variant_label``)."""
    results = dict(values[0])
    if len(values) > 1:
        labels = variant_cells(config, variant)
        results.update({variant_key(cell, labels[cell]): r for cell, r in values[1].items()})
    return results


def _one(part, bar, what: str = ""):
    key, label, run, cost = part

    def wait(position: int) -> None:
        bar.progress(0.0, text=f"{what}Waiting for a free slot: {scheduler.SLOTS.line_text(position)}"[:300])

    def progress(fraction: float, text: str) -> None:
        bar.progress(min(1.0, max(0.0, float(fraction))), text=f"{what}{label}{text}"[:200])

    value, _ = scheduler.run_shared(key, lambda: run(progress), wait, visitor=visitor(), cost=cost,
                                    kind=scheduler.INTERACTIVE, label=f"{label}this analysis")
    return value


def _validate(config: ExperimentConfig, variant: dict | None, only: str | None = None) -> None:
    for name in ("inputs_path", "state_dict_path", "targets_path", "h0_path"):
        if getattr(config, name) is not None or name in (variant or {}):
            raise ConfigError(f"{name} cannot be set in the dashboard: nothing a visitor types names a file on "
                              "the server")
    check(config, variant, only=only)


def analyse(config: ExperimentConfig, variant: dict | None = None, label: str = "", only: str | None = None,
            what: str = "") -> dict:
    """{key: ExperimentResult}: the config's cells, then (if a variant is given) "cell · its label" for each cell
    the variant changes (``analysis.variant``).

    Raises ValueError (ConfigError / LimitExceeded included) with a one-line message for settings that cannot run.
    ``only="gradients"``: the gradient pass alone (results with ``complete`` False), for the first chart.
    ``what`` begins the progress bar's text.
    """
    _validate(config, variant, only)
    bar = st.empty()
    try:
        return _merge([_one(part, bar, what) for part in _parts(config, variant, label, only)], config, variant)
    finally:
        bar.empty()


def full_key(config: ExperimentConfig, variant: dict | None = None, label: str = "") -> str:
    """The background job's key of the full analysis of these settings."""
    return background.job_key([part[0] for part in _parts(config, variant, label)], [label])


def full_job(config: ExperimentConfig, variant: dict | None, label: str, session: str) -> background.Job:
    """The full analysis running in a background job watched by ``session`` (started unless one runs; the
    session's job of other settings is dropped). Raises ValueError for settings that cannot run."""
    _validate(config, variant)
    parts = _parts(config, variant, label)
    return background.watch(session, full_key(config, variant, label),
                            lambda job: _merge(background.run_parts(job, parts), config, variant))


def full_results(config: ExperimentConfig, variant: dict | None = None, label: str = "") -> dict:
    """The full analysis without drawing anything (the cache's copy if there is one): for callables that run
    outside a script run, e.g. a download button's data built at click time."""
    _validate(config, variant)
    return _merge([scheduler.run_shared(key, lambda run=run: run(None), cost=cost, kind=scheduler.BACKGROUND)[0]
                   for key, _, run, cost in _parts(config, variant, label)], config, variant)


def partial(results: dict) -> bool:
    """True when the results are the gradient pass alone (no Jacobian products yet)."""
    return not all(r.complete for r in results.values())
