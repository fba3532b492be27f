r"""Your own step from a Python file: ``--step FILE.py:NAME`` (command line) and ``gdlab dashboard --step``.

    load_step(spec, state=None) -> LoadedStep     import FILE.py (this RUNS its code) and take NAME from it
    step_h0(loaded, h0, B)                         the initial state: the file's (B rows, or 1 row for every
                                                   sequence), else zeros (B, H) from the step's ``hidden_size``
    task_inputs(config, loaded)                    the inputs of the task a config names, (T, B, I) float64,
                                                   checked against the step's ``input_size``
    analyse_loaded(loaded, x, h0, **kw)            analyse_step, every problem of the user's code one line

NAME is an ``nn.Module`` subclass (instantiated with no arguments), an instance, or a callable step
``(x_t, state) -> state`` (a function, a ``functools.partial``). ``--step-state FILE.pt`` loads a state_dict
into an nn.Module step (torch's weights-only reader: nothing in that file is unpickled as code).

Importing FILE.py runs the code in it with this process's rights, as ``python FILE.py`` would: that is what a user
asks for on their own machine by naming their own file. Nothing a dashboard visitor types reaches here: the file
is named by whoever starts the server (``gdlab dashboard --step``, the GDLAB_STEP environment variable).

Every problem is one ``ConfigError`` line naming the file, NAME, or the step and t: a missing file or NAME, a file
that fails to import (its exception type, message and line), a class that needs arguments, weights that do not
fit, an exception raised inside the step (``"ZeroDivisionError in your step at t=3 (cell.py line 12): ..."``).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
import traceback
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from rnn_models.config import ConfigError

from .own_files import read_array, read_file, read_state_dict
from .provenance import file_record

HELP = ("your own recurrence: NAME in your Python file FILE.py, an nn.Module subclass (made with no arguments), an "
        "instance, or a step function (x_t, state) -> state. Importing FILE.py RUNS ITS CODE, as python FILE.py "
        "would: name only your own files")
# the dashboard's step, named by whoever starts the server (gdlab dashboard --step / --step-state / --h0)
STEP_ENV, STATE_ENV, H0_ENV = "GDLAB_STEP", "GDLAB_STEP_STATE", "GDLAB_STEP_H0"
RAISED = re.compile(r"^the step raised (\w+) at t=(\d+)( under autograd)?: (.*)$", re.S)


@dataclass
class LoadedStep:
    """A step taken from a user's file, and what says where it came from."""

    step: object  # the nn.Module / callable
    path: str  # the file, absolute
    name: str  # NAME in it
    digest: str  # sha256 of the file, NAME (and the state file): the dashboard's cache key
    files: dict = field(default_factory=dict)  # {role: analysis.provenance.file_record} of the files read

    @property
    def label(self) -> str:
        return f"{os.path.basename(self.path)}:{self.name}"

    def size(self, attr: str) -> int | None:
        """An int attribute the step declares (``input_size``, ``hidden_size``), or None."""
        v = getattr(self.step, attr, None)
        return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def split_spec(spec: str, flag: str = "--step") -> tuple[str, str]:
    """'FILE.py:NAME' -> (FILE.py, NAME); one line when it is not of that form."""
    path, sep, name = str(spec).rpartition(":")
    if not sep or not path or not name.isidentifier():
        raise ConfigError(f"{flag} {spec!r} must be FILE.py:NAME, NAME the class, instance or function in the file")
    if not path.endswith(".py"):
        raise ConfigError(f"{flag} {spec!r}: {path!r} must be a Python file (.py)")
    return path, name


def _line_in(exc: BaseException, path: str) -> str:
    """' (cell.py line 12)': the last frame of ``exc``'s traceback inside ``path``, or ''."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.abspath(f.filename) == path]
    return f" ({os.path.basename(path)} line {frames[-1].lineno})" if frames else ""


def _first(e: BaseException) -> str:
    return " ".join((str(e).strip().splitlines() or [""])[0].split())[:200]


def _import(path: str, flag: str):
    """The module of the user's file, imported under a name of its own (its folder first on sys.path while it
    imports, as ``python FILE.py`` has it, so its sibling modules import)."""
    mod_name = "gdlab_step_" + hashlib.sha256(path.encode()).hexdigest()[:16]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{flag} {path!r}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # dataclasses and pickle look classes up by their module
    folder = os.path.dirname(path)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        sys.modules.pop(mod_name, None)
        raise ConfigError(f"{flag} {path!r}: SyntaxError at line {e.lineno}: {e.msg}") from None
    except BaseException as e:  # noqa: BLE001 - the user's code: one line, its own words (SystemExit included)
        sys.modules.pop(mod_name, None)
        if isinstance(e, KeyboardInterrupt):
            raise
        raise ConfigError(f"{flag} {path!r}: importing it raised {type(e).__name__}{_line_in(e, path)}: "
                          f"{_first(e)}") from None
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module


def _defined(module) -> str:
    """The classes and functions the file defines (for a NAME that is not there)."""
    names = [n for n, v in vars(module).items() if not n.startswith("_") and callable(v)
             and getattr(v, "__module__", None) == module.__name__]
    return ", ".join(names[:12]) or "no classes or functions"


def load_step(spec: str, state: str | None = None, *, flag: str = "--step",
              state_flag: str = "--step-state") -> LoadedStep:
    """The step NAME of FILE.py (``spec`` 'FILE.py:NAME'), its weights from ``state`` when given."""
    path, name = split_spec(spec, flag)
    path = os.path.abspath(path)
    data = read_file(path, flag)  # a regular file, size-limited; 'no such file' named
    module = _import(path, flag)
    if not hasattr(module, name):
        raise ConfigError(f"{flag} {spec!r}: {os.path.basename(path)} has no {name!r}; it defines {_defined(module)}")
    obj = getattr(module, name)
    if isinstance(obj, type):
        if not issubclass(obj, nn.Module):
            raise ConfigError(f"{flag} {spec!r}: {name} is a class but not an nn.Module subclass: give an "
                              "nn.Module subclass, an instance, or a step function (x_t, state) -> state")
        try:
            obj = obj()
        except TypeError as e:
            raise ConfigError(f"{flag} {spec!r}: {name}() needs arguments ({_first(e)}): give {name} defaults for "
                              f"them, or name an instance made in the file (cell = {name}(...))") from None
        except Exception as e:  # noqa: BLE001 - the user's code
            raise ConfigError(f"{flag} {spec!r}: {name}() raised {type(e).__name__}{_line_in(e, path)}: "
                              f"{_first(e)}") from None
    elif not callable(obj):
        raise ConfigError(f"{flag} {spec!r}: {name} is a {type(obj).__name__}: give an nn.Module subclass, an "
                          "instance, or a step function (x_t, state) -> state")
    digest = hashlib.sha256(data)
    digest.update(f"\0{name}".encode())  # the same file's other NAME is another step
    files = {"step": file_record(f"{os.path.basename(path)}:{name}", data)}
    if state is not None:
        if not isinstance(obj, nn.Module):
            raise ConfigError(f"{state_flag} loads weights into an nn.Module step; {name} is a "
                              f"{type(obj).__name__}")
        state = os.path.abspath(state)
        raw = read_file(state, state_flag)
        _load_weights(obj, raw, f"{state_flag} {state!r}")
        digest.update(hashlib.sha256(raw).digest())
        files["step_state"] = file_record(os.path.basename(state), raw)
    return LoadedStep(step=obj, path=path, name=name, digest=digest.hexdigest(), files=files)


def _load_weights(module: nn.Module, raw: bytes, where: str) -> None:
    """module.load_state_dict of the file's tensors (all of them loaded: the step decides which it needs); a key
    missing or left over, or a shape that differs, is one line naming it."""
    sd = read_state_dict(raw, where)  # weights only; from a zip the tensors are shapes until loaded
    if sd.archive is not None:
        sd = sd.archive.load(dict(sd))
    want = module.state_dict()
    missing = [k for k in want if k not in sd]
    extra = [k for k in sd if k not in want]
    if missing or extra:
        what = (f"has no {missing[0]!r} ({len(missing)} of the step's {len(want)} tensors missing)" if missing
                else f"holds {extra[0]!r}, which the step does not have")
        raise ConfigError(f"{where} {what}: save it with torch.save(step.state_dict(), PATH)")
    for k, v in want.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise ConfigError(f"{where}: {k} has shape {tuple(sd[k].shape)}, the step's is {tuple(v.shape)}")
    module.load_state_dict(sd)


# ---- the initial state and the inputs ------------------------------------------------------------------------
def step_h0(loaded: LoadedStep, h0, B: int, where: str = "--h0"):
    """The state the step starts from, for a batch of B: ``h0`` (a tensor (B, H), or a tuple of them; one row
    (1, H) or (H,) is used for every sequence) read from a file, else zeros (B, H) from the step's int
    ``hidden_size``; one line when neither is there."""
    if h0 is None:
        H = loaded.size("hidden_size")
        if H is None:
            raise ConfigError(f"your step {loaded.label} has no int hidden_size attribute: give the initial state "
                              f"with {where} FILE (.pt or .npy, (B, H) or one row (1, H); a .pt tuple for a tuple "
                              "state)")
        return torch.zeros(B, H, dtype=torch.float64)
    single = isinstance(h0, Tensor)
    parts = []
    for i, p in enumerate((h0,) if single else h0):
        name = where if single else f"{where}[{i}]"
        if p.dim() == 1:
            p = p[None]  # (H,) -> (1, H)
        if p.dim() == 2 and p.shape[0] == 1 and B > 1:
            p = p.expand(B, -1).clone()  # one row for every sequence of the batch
        elif p.dim() != 2 or p.shape[0] != B:
            raise ConfigError(f"{name} has shape {tuple(p.shape)}: each state tensor must be (B, H) with B={B}, or "
                              "one row (1, H) for every sequence")
        parts.append(p)
    return parts[0] if single else tuple(parts)


def read_arrays(path: str | None, where: str, files: dict | None = None, role: str | None = None):
    """The tensor (or tuple) of an array file (.npy / .pt), or None; its file_record into ``files[role]``."""
    if path is None:
        return None
    data = read_file(path, where)
    if files is not None:
        files[role or where.lstrip("-")] = file_record(os.path.basename(path), data)
    return read_array(data, f"{where}={path!r}", os.path.splitext(path)[1])


def read_h0(path: str | None, where: str = "--h0", files: dict | None = None):
    """The tensor (or tuple) of an h0 file, or None."""
    return read_arrays(path, where, files, "h0")


def task_inputs(config, loaded: LoadedStep) -> tuple[Tensor, str]:
    """(x (T, B, I) float64, note): the seeded inputs of ``config``'s task (T, B, seed, text as set); for the
    random task at the step's declared ``input_size`` when the config leaves it unset. A step whose declared
    input size differs from the task's is one line."""
    from .tasks import make_batch, task_spec
    I_step = loaded.size("input_size")
    size = config.input_size or (I_step if config.task == "random" and I_step else 8)
    I = task_spec(config.task, config.seq_len, size, config.text).input_size
    if I_step is not None and I_step != I:
        fix = ("set the input size to " + str(I_step) if config.task == "random" else
               f"the random task with input size {I_step}")
        raise ConfigError(f"your step {loaded.label} reads input_size={I_step}, the task {config.task!r} gives "
                          f"{I} features per step: choose {fix}")
    x = make_batch(config.task, config.seq_len, config.batch_size, seed=config.seed, input_size=size,
                   dtype=torch.float64, text=config.text).inputs
    return x, (f"inputs: the task {config.task!r}'s (T={config.seq_len}, B={config.batch_size}, I={I}, seed "
               f"{config.seed}); loss: the random probe u . h_(T-1) (the task's readout is not your step's)")


# ---- the analysis, every problem of the user's code one line -------------------------------------------------
def user_error(e: BaseException, loaded: LoadedStep, I: int | None = None) -> ConfigError:
    """One line for an exception of the analysis of a user's step: ``"TypeError in your step at t=3 (cell.py line
    12): ..."`` for an exception raised inside it, the ConfigError's own line otherwise (with the inputs' width
    when the step failed at t=0 and declares no input_size)."""
    cause = e.__context__ if isinstance(e, ConfigError) else e
    where = _line_in(cause, loaded.path) if cause is not None else ""
    if isinstance(e, ConfigError):
        m = RAISED.match(str(e))
        if m is None:
            return e
        kind, t, autograd, msg = m.groups()
        hint = (f" (the inputs have I={I} features per step: does your step read that many?)"
                if t == "0" and I is not None and loaded.size("input_size") is None and not autograd
                and re.search(r"shape|size|dimension", msg) else "")
        return ConfigError(f"{kind} in your step {loaded.label} at t={t}{' under autograd' if autograd else ''}"
                           f"{where}: {msg}{hint}")
    return ConfigError(f"{type(e).__name__} in your step {loaded.label} during the analysis{where}: {_first(e)}")


def analyse_loaded(loaded: LoadedStep, x, h0, *, seeded_inputs: bool = False, files: dict | None = None, **kw):
    """``analysis.own_step.analyse_step`` of the loaded step; ConfigError (one line) for every problem, an
    exception raised by the user's code included (``user_error``). LimitExceeded and the host's own errors
    (MemoryError) pass as they are. ``seeded_inputs``: x is a task's seeded batch (the provenance says the seed
    draws it); ``files``: the other files read ({role: file_record}), named in the provenance with the step's."""
    from .limits import LimitExceeded
    from .own_step import analyse_step
    try:
        r = analyse_step(loaded.step, x, h0=h0, **kw)
    except LimitExceeded:
        raise
    except (ConfigError, Exception) as e:  # noqa: BLE001 - the user's code may raise anything
        if isinstance(e, MemoryError):
            raise
        I = int(x.shape[-1]) if getattr(x, "dim", lambda: 0)() == 3 else None
        raise user_error(e, loaded, I) from None
    r.provenance = {**(r.provenance or {}), "step_file": loaded.label, "step_sha256": loaded.digest,
                    "files": {**loaded.files, **(files or {})}}
    if seeded_inputs:
        r.provenance.update(seeds_matter=True, seed_role="the seed draws the task's inputs and the probe's "
                                                         "direction u")
    return r


__all__ = ["HELP", "STEP_ENV", "STATE_ENV", "H0_ENV", "LoadedStep", "load_step", "split_spec", "step_h0", "read_h0",
           "read_arrays", "task_inputs", "analyse_loaded", "user_error"]
