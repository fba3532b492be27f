"""Your cell in the dashboard: the step whoever started the server named, ``gdlab dashboard --step FILE.py:NAME
[--step-state FILE.pt] [--h0 FILE]`` (passed to the app in the environment: GDLAB_STEP, GDLAB_STEP_STATE,
GDLAB_STEP_H0). Nothing a visitor types names a file or code on the server: a visitor can only choose "Your cell"
in the sidebar's cell choice, which offers it beside the built-in cells when GDLAB_STEP is set.

Chosen, the step (``analysis.own_step_files.load_step``: importing FILE.py runs its code, once per process and
again when the file changes) is analysed as ``analyze(step, x, h0=...)`` is in Python:

    x    the inputs of the sidebar's task (T, B, seed, text), float64 (T, B, I); for the random task at the step's
         ``input_size`` when the sidebar's input size is left at 0; a step whose ``input_size`` differs from the
         task's is one line
    h0   the --h0 file (B rows, or one row for every sequence), else zeros (B, hidden_size) of the step's int
         ``hidden_size``
    loss the random probe u . h_{T-1} (seed + 1): the task's readout belongs to the built-in cells
    the sidebar's analysis settings (precision, loss steps, lags, truncation, Lyapunov exponents, ...)

It passes the scheduler's door like every analysis: its cost estimated first (``analysis.own_step.check_step`` on
the step's cell before it has run: the bytes one step saves per sequence at their default; refused over the host's
limits in one line), a slot under this session's id with its place in line and a progress bar, and the shared
cache keyed by the files' sha256 and the settings. It runs in this server process (not on Ray: the file is on this
machine). Every problem (the file, NAME, the state or inputs, an exception raised inside the step) is one
ConfigError / LimitExceeded line, shown by the caller with st.error; the rest of the page goes on.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading

import streamlit as st

from analysis.config import ExperimentConfig
from analysis.own_cell import OwnCell
from analysis.own_step import BUILT_IN_ONLY, FILE_FIELDS, STEP_DECIDES
from analysis.own_step_files import H0_ENV, STATE_ENV, STEP_ENV

from . import compute, scheduler
from .controls import TRAINING_FIELDS

OWN = OwnCell.name  # "own": the results' key and the cell choice's value; its label is "Your cell"
# the sidebar's settings the step's analysis takes (the inputs decide T and B; the task's inputs are time-major)
SETTINGS = tuple(sorted(set(ExperimentConfig.__dataclass_fields__) - set(STEP_DECIDES + BUILT_IN_ONLY + FILE_FIELDS)
                        - set(TRAINING_FIELDS) - {"seq_len", "batch_size", "batch_first", "threads"}))
TASK_FIELDS = ("task", "seq_len", "batch_size", "seed", "input_size", "text")
_LOCK = threading.Lock()
_LOADED: dict = {}


def offered() -> bool:
    """True when the server was started with a step (GDLAB_STEP set)."""
    return bool(os.environ.get(STEP_ENV))


def choices() -> list[str]:
    """What the sidebar's cell choice offers beside the built-in cells: [OWN] when a step was given."""
    return [OWN] if offered() else []


def chosen() -> bool:
    return offered() and OWN in (st.session_state.get("cell_compare") or [])


def alone() -> bool:
    """Your cell is the only cell chosen: the page shows it alone."""
    return chosen() and list(st.session_state.get("cell_compare") or []) == [OWN]


def _stamp(path: str | None):
    try:
        st_ = os.stat(path) if path else None
    except OSError:
        return None
    return (st_.st_mtime_ns, st_.st_size) if st_ else None


def _load():
    """(LoadedStep, the h0 file's tensor or None), imported once per process and again when a file changes."""
    from analysis.own_step_files import load_step, read_h0, split_spec
    spec, state, h0 = (os.environ.get(k) or None for k in (STEP_ENV, STATE_ENV, H0_ENV))
    key = (spec, state, h0, *(_stamp(p) for p in (split_spec(spec)[0], state, h0)))
    with _LOCK:
        if _LOADED.get("key") != key:
            _LOADED.clear()
            loaded = load_step(spec, state)
            _LOADED.update(key=key, value=(loaded, read_h0(h0, "--h0", loaded.files)))
        return _LOADED["value"]


def _prepared(config: ExperimentConfig):
    """(loaded, x, h0, inputs note, settings, cache key, cell config, Cost) for the sidebar's ``config``; the
    estimate checked against the host's limits (LimitExceeded: one line)."""
    import torch

    from analysis.experiment import DTYPES
    from analysis.own_step import OwnStepConfig, check_step, prepare_state
    from analysis.own_step_files import step_h0, task_inputs
    loaded, h0_file = _load()
    x, note = task_inputs(config, loaded)
    T, B, I = x.shape
    h0 = step_h0(loaded, h0_file, B)
    settings = {f: getattr(config, f) for f in SETTINGS}
    state, single = prepare_state(h0, B, DTYPES[config.dtype])  # one line for a complex or malformed h0
    H = int(state[0].shape[1])
    cell = OwnCell(loaded.step, input_size=I, hidden_size=H, k=len(state), single=single, dtype=DTYPES[config.dtype])
    cfg = OwnStepConfig.from_dict({**settings, "cell": OWN, "seq_len": T, "batch_size": B, "hidden_size": H,
                                   "input_size": I})
    h = hashlib.sha256(json.dumps({"step": loaded.digest, "settings": settings,
                                   "task": {f: getattr(config, f) for f in TASK_FIELDS}}, sort_keys=True).encode())
    for p in state:
        h.update(p.to(torch.float64).numpy().tobytes())
    return loaded, x, h0, note, settings, "step:" + h.hexdigest(), cfg, cell


def _door(key: str, run, cost, what: str):
    """run(progress) through the scheduler's door (a slot, this session's id, a bar in the page, the cache)."""
    bar = st.empty()

    def wait(position: int) -> None:
        bar.progress(0.0, text=f"Your cell{what} ({cost.describe()}): waiting for a free slot: "
                               f"{scheduler.SLOTS.line_text(position)}"[:300])

    def progress(fraction: float, text: str) -> None:
        bar.progress(min(1.0, max(0.0, float(fraction))), text=f"Your cell{what}: {text}"[:200])

    kind = scheduler.BACKGROUND if cost.gflop > compute.FIRST_CHART_GFLOP else scheduler.INTERACTIVE
    try:
        value, _ = scheduler.run_shared(key, lambda: run(progress), wait, visitor=compute.visitor(), kind=kind,
                                        cost=cost, label=f"your cell's {what.strip() or 'analysis'}")
    finally:
        bar.empty()
    return value


def results(config: ExperimentConfig) -> dict:
    """{"own": ExperimentResult} of the step on the sidebar's task and settings; ConfigError / LimitExceeded (one
    line) for every problem."""
    from analysis.own_step import check_step
    from analysis.own_step_files import analyse_loaded
    loaded, x, h0, note, settings, key, cfg, cell = _prepared(config)
    cost = check_step(cfg, cell, None)[2]

    def run(progress):
        r = analyse_loaded(loaded, x, h0, seeded_inputs=True, progress=progress, threads=scheduler.threads_share(),
                           **settings)
        r.notes = type(r.notes)((*r.notes, note))
        return r
    return {OWN: _door(key, run, cost, "")}


def sensitivity(config: ExperimentConfig):
    """The step's result with its parameter sensitivity (views="sensitivity", every parameter of the step), through
    the door with the gradient pass's and the forward-mode JVPs' estimate."""
    from analysis.limits import Cost, _raise_if_over, current
    from analysis.own_step import step_cost
    from analysis.own_step_files import analyse_loaded
    from analysis.param_sensitivity import sensitivity_cost
    loaded, x, h0, note, settings, key, cfg, cell = _prepared(config)
    grads = step_cost(cfg, cell, "gradients")
    mem, flops = sensitivity_cost(cfg, cell, cfg.input_size)
    cost = Cost(max(grads.memory_bytes, mem), grads.flops + flops, {"sensitivity": flops})
    _raise_if_over(cost, current(), cfg, None, "the sensitivity of your cell", lambda c, v: cost)

    def run(progress):
        return analyse_loaded(loaded, x, h0, seeded_inputs=True, progress=progress, views="sensitivity",
                              threads=scheduler.threads_share(), **settings)
    return _door(key + "|views=sensitivity", run, cost, " sensitivity")


def header(results: dict, alone: bool) -> None:
    """What ran for Your cell: above the views when it is shown alone, a caption beside the built-in cells."""
    r = results[OWN]
    c, p = r.config, r.provenance or {}
    line = (f"**Your cell** `{p.get('step_file', '')}` · state {p.get('state', '')} · I={c.input_size} · "
            f"T={c.seq_len} · B={c.batch_size} · {c.dtype}")
    said = [n for n in r.notes if n.startswith(("your step", "inputs:", "initial state", "light Jacobian"))]
    if not alone:  # the step's own note is among the page's notes
        st.caption(line + " · " + " · ".join(n for n in said if n.startswith("inputs:")))
        return
    st.markdown(line)
    st.info("**What ran.** " + "  \n".join(said) + "  \n*The step was named by whoever started this server "
            "(gdlab dashboard --step). The sidebar's task gives its inputs (T, B, seed) and its analysis settings "
            "(precision, lags, ...) apply; the built-in cells' model settings do not. There is no fixed W_hh: the "
            "Jacobians are the step's own at each state.*")
