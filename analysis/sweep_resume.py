r"""A sweep's resume file (JSONL): a header line (the sweep's config and metrics), then one line per finished
point ``{"key": {field: value, "seed": s}, "point": {...}}``, appended and synced as each point completes.
Re-running ``analysis.sweep.sweep`` with the same file skips those points; a line cut short by an interrupt is
skipped (that point runs again); a file of another sweep is refused in one line.

A sweep of your own step (``sweep --step FILE.py:NAME``, analysis.step_sweep) also records the step in the header,
``"step": {"path": FILE.py as given, "abspath": ..., "name": NAME, "sha256": sha256 of the file's bytes,
"files": {role: {"name", "sha256"}} of --step-state, --h0, --inputs}``: resuming needs the same step and the same
files, byte for byte (another step's or an edited file's points would be mixed in otherwise); a built-in cells'
file is refused for a step sweep and the other way round, each in one line naming the file and why.
"""
from __future__ import annotations

import json
import os
import typing

from rnn_models.config import ConfigError

if typing.TYPE_CHECKING:
    from .sweep import Plan


def key_id(key: dict) -> str:
    return json.dumps(key, sort_keys=True)


FLAGS = {"step_state": "--step-state", "h0": "--h0", "inputs": "--inputs"}  # a step record's files -> their flags


def _header(plan: Plan, step: dict | None = None) -> dict:
    return {"sweep": 1, "config": plan.config.to_dict(), "metrics": list(plan.metrics),
            **({"step": step} if step is not None else {})}


def _short(digest) -> str:
    return f"{str(digest)[:12]}…"


def _step_mismatch(old: dict | None, new: dict | None) -> str | None:
    """Why a resume file of step ``old`` cannot go on with step ``new`` (None: it can). Each a step record
    (module docstring) or None for the built-in cells."""
    if old == new:
        return None
    if old is None:
        return (f"belongs to a sweep of the built-in cells, not of your step {new['path']}:{new['name']}: use a new "
                "file")
    if new is None:
        return f"belongs to a sweep of your step {old.get('path')}:{old.get('name')} (--step): use a new file"
    if (old.get("abspath"), old.get("name")) != (new["abspath"], new["name"]):
        return (f"belongs to a sweep of another step ({old.get('path')}:{old.get('name')}, not "
                f"{new['path']}:{new['name']}): use a new file")
    if old.get("sha256") != new["sha256"]:
        return (f"the step file {new['path']} changed since the sweep began (sha256 {_short(old.get('sha256'))} then, "
                f"{_short(new['sha256'])} now): its points came from other code; use a new file")
    was, now = old.get("files") or {}, new.get("files") or {}
    roles = set(was) | set(now)
    for role in [r for r in FLAGS if r in roles] + sorted(roles - set(FLAGS)):
        a, b, flag = was.get(role), now.get(role), FLAGS.get(role, role)
        if a == b:
            continue
        if a is None:
            return f"the sweep began without {flag}: use a new file"
        if b is None:
            return f"the sweep began with {flag} {a.get('name')}: give it again, or use a new file"
        if a.get("name") != b.get("name"):
            return f"{flag} {b.get('name')} is not the file the sweep began with ({a.get('name')}): use a new file"
        return (f"{flag} {b.get('name')} changed since the sweep began (sha256 {_short(a.get('sha256'))} then, "
                f"{_short(b.get('sha256'))} now): use a new file")
    return "its step record differs: use a new file"


def load_resume(path: str, plan: Plan, step: dict | None = None) -> dict[str, dict]:
    """Finished points of ``path`` keyed by their key id (lines cut short by an interrupt are skipped); ``step``:
    the step record of a sweep of your step (module docstring), None for the built-in cells."""
    if not os.path.exists(path):
        return {}
    done = {}
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ConfigError(f"--resume {path}: not a sweep resume file (not UTF-8 text)") from None
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == 0:
                raise ConfigError(f"--resume {path}: not a sweep resume file (its first line is not JSON)") from None
            continue  # a line cut short by an interrupted sweep: that point runs again
        if i == 0:
            if not isinstance(rec, dict) or rec.get("sweep") != 1:
                raise ConfigError(f"--resume {path}: not a sweep resume file (its first line has no sweep header)")
            why = _step_mismatch(rec.get("step"), step)  # first: another step (or none) is the telling reason
            if why is not None:
                raise ConfigError(f"--resume {path}{'' if why.startswith('belongs') else ':'} {why}")
            if rec["config"] != plan.config.to_dict() or rec["metrics"] != list(plan.metrics):
                diff = sorted(k for k in rec["config"] if rec["config"].get(k) != plan.config.to_dict().get(k))
                what = f"fields {', '.join(diff)}" if diff else "metrics"
                raise ConfigError(f"--resume {path} belongs to another sweep ({what} differ): use a new file")
            continue
        done[key_id(rec["key"])] = rec["point"]
    return done


class ResumeWriter:
    """Appends each finished point to the resume file (a header line first: the plan and ``step``, the step record
    of a sweep of your step), flushed and synced."""
    def __init__(self, path: str | None, plan: Plan, step: dict | None = None):
        self.fh = None
        if path is None:
            return
        d = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(d):
            raise ConfigError(f"--resume {path}: directory {d} does not exist")
        new = not os.path.exists(path) or os.path.getsize(path) == 0
        self.fh = open(path, "a")
        if not new:
            self._terminate_partial(path)
        else:
            self.fh.write(json.dumps(_header(plan, step)) + "\n")
            self.fh.flush()

    def _terminate_partial(self, path: str) -> None:
        with open(path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                self.fh.write("\n")  # the interrupted line stays unparsable and is skipped next time

    def add(self, key: dict, point: dict) -> None:
        if self.fh is not None:
            self.fh.write(json.dumps({"key": key, "point": point}, allow_nan=False) + "\n")
            self.fh.flush()
            os.fsync(self.fh.fileno())

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
