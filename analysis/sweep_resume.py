r"""A sweep's resume file (JSONL): a header line (the sweep's config and metrics), then one line per finished
point ``{"key": {field: value, "seed": s}, "point": {...}}``, appended and synced as each point completes.
Re-running ``analysis.sweep.sweep`` with the same file skips those points; a line cut short by an interrupt is
skipped (that point runs again); a file of another sweep is refused in one line.
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


def _header(plan: Plan) -> dict:
    return {"sweep": 1, "config": plan.config.to_dict(), "metrics": list(plan.metrics)}


def load_resume(path: str, plan: Plan) -> dict[str, dict]:
    """Finished points of ``path`` keyed by their key id (lines cut short by an interrupt are skipped)."""
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
            if rec["config"] != plan.config.to_dict() or rec["metrics"] != list(plan.metrics):
                diff = sorted(k for k in rec["config"] if rec["config"].get(k) != plan.config.to_dict().get(k))
                what = f"fields {', '.join(diff)}" if diff else "metrics"
                raise ConfigError(f"--resume {path} belongs to another sweep ({what} differ): use a new file")
            continue
        done[key_id(rec["key"])] = rec["point"]
    return done


class ResumeWriter:
    """Appends each finished point to the resume file (a header line first), flushed and synced."""
    def __init__(self, path: str | None, plan: Plan):
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
            self.fh.write(json.dumps(_header(plan)) + "\n")
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
