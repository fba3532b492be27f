r"""``run`` and ``export`` with ``--step FILE.py:NAME``: your own recurrence on the command line.

    python -m analysis run --step cell.py:MyCell [--step-state w.pt] --inputs x.npy [--h0 h0.pt]
                           [--readout head --targets y.npy] [--views ...] [--json out.json]
    python -m analysis export --step cell.py:MyCell --inputs x.npy --out figs/ [--pptx deck.pptx]

The step is loaded by ``analysis.own_step_files.load_step`` (importing FILE.py runs its code) and analysed by
``analysis.own_step.analyse_step``, as ``analyze(step, x, h0=..., ...)`` does in Python, so the numbers are the
API's. The flags read as there: ``--inputs`` (T, B, I) or (B, T, I) with ``--batch-first`` (token ids (T, B) with
``--embedding NAME``, an nn.Embedding of the step); ``--h0`` the state as the step takes it (a .pt tuple for a
tuple state; one row for every sequence), else zeros (B, hidden_size) of a step with an int ``hidden_size``;
``--readout NAME`` an nn.Linear of the step, scored against ``--targets``; the analysis flags (``--dtype``,
``--loss-steps``, ``--jacobian-lags``, ``--truncate``, ...) as ExperimentConfig's. The built-in cells' flags
(``--cell``, ``--hidden-size``, ``--activation``, ...) are refused in one line: the step decides them.
"""
from __future__ import annotations

import dataclasses

from rnn_models.config import ConfigError

from .config import ExperimentConfig
from .own_step_files import HELP, analyse_loaded, load_step, read_arrays, read_h0, step_h0

NOT_WITH_STEP = {"seq_len": "the inputs decide T", "batch_size": "the inputs decide B",
                 "state_dict_path": "your step holds its own weights (--step-state FILE.pt loads them)",
                 "module": "your step is analysed whole"}


def add_step_flags(p) -> None:
    p.add_argument("--step", default=None, metavar="FILE.py:NAME",
                   help=HELP + "; with --inputs FILE, --h0 FILE (else zeros of its hidden_size), --readout NAME "
                               "--targets FILE")
    p.add_argument("--step-state", default=None, metavar="FILE.pt",
                   help="weights for the --step module: torch.save(step.state_dict(), PATH), read weights-only")


def flags_given(args) -> dict:
    """The config fields given on the line with --step (run, export and sweep); --config / --preset refused in one
    line (they set the built-in cells and tasks)."""
    for flag, dest in (("--config", "config_file"), ("--preset", "preset")):
        if getattr(args, dest, None):
            raise ConfigError(f"{flag} does not apply with --step: it sets the built-in cells and tasks; give the "
                              "analysis flags (--dtype, --jacobian-lags, ...) on the line")
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(ExperimentConfig)
            if getattr(args, f.name, None) is not None}


def _given(args) -> dict:
    """The config flags given on the line; one line for those that do not go with --step."""
    given = flags_given(args)
    from .__main__ import _flag
    from .own_step import BUILT_IN_ONLY, STEP_DECIDES
    why = {**{f: "your step decides it" for f in STEP_DECIDES},
           **{f: "it is a setting of the built-in cells" for f in BUILT_IN_ONLY},
           "task": "your step reads the --inputs given", "text": "your step reads the --inputs given",
           **NOT_WITH_STEP}
    bad = next((f for f in given if f in why), None)
    if bad is not None:
        raise ConfigError(f"{_flag(bad)} does not apply with --step: {why[bad]}")
    if "inputs_path" not in given:
        raise ConfigError("--step needs --inputs FILE: the step's inputs, (T, B, I) floats in a .npy or .pt file")
    return given


def step_result(args, progress=None, views=None):
    """The ExperimentResult of ``--step`` with the flags of ``args`` (every problem one ConfigError line)."""
    given = _given(args)
    loaded = load_step(args.step, args.step_state)
    files: dict = {}  # the arrays read, named with their sha256 in the provenance
    x = read_arrays(given.pop("inputs_path"), "--inputs", files)
    if isinstance(x, tuple):
        raise ConfigError("--inputs holds a tuple: the inputs are one array (T, B, I)")
    B = int(x.shape[0 if given.get("batch_first") else 1]) if x.dim() >= 2 else 1
    h0 = step_h0(loaded, read_h0(given.pop("h0_path", None), files=files), B)
    targets = read_arrays(given.pop("targets_path", None), "--targets", files)
    if isinstance(targets, tuple):
        raise ConfigError("--targets holds a tuple: the targets are one array")
    return analyse_loaded(loaded, x, h0, files=files, targets=targets, readout=given.pop("readout", None),
                          embedding=given.pop("embedding", None), progress=progress, views=views, **given)


def step_summary(d: dict, summary) -> str:
    """``summary(d)`` (the run command's) with its first line saying which step ran and the W_hh line what a step
    has instead."""
    c, p = d["config"], d.get("provenance") or {}
    lines = summary(d).split("\n")
    lines[0] = (f"your step {p.get('step_file', p.get('step', '?'))} (Your cell), state {p.get('state', '?')}, "
                f"T={c['seq_len']}, B={c['batch_size']}, loss: {p.get('loss', '?').split(';')[0]}, {c['dtype']}")
    return "\n".join("W_hh: none, your step has no fixed recurrent matrix (its Jacobians are its own at each state)"
                     if ln.startswith("spectral radius of W_hh") else ln for ln in lines)


__all__ = ["add_step_flags", "step_result", "step_summary"]
