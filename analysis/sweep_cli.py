"""``python -m analysis sweep``: the run flags for what is held fixed, plus --vary (once or twice), --seeds,
--metrics, --json, --executor local|ray, --workers, --ray-address, --resume. Progress on stderr."""
from __future__ import annotations

import json
import sys
import time

from rnn_models.config import ConfigError

from .sweep_points import METRICS


def add_sweep_parser(sub, add_config_flags) -> None:
    p = sub.add_parser("sweep", help="sweep one or two settings over seeds (a phase diagram)",
                       description="Sweep one or two settings over seeds (a phase diagram); the other flags hold the "
                                   "rest fixed.")
    add_config_flags(p)
    p.add_argument("--vary", action="append", required=True, metavar="FIELD=SPEC",
                   help="an axis: start:stop:count, log:start:stop:count or a,b,c (once or twice)")
    p.add_argument("--seeds", type=int, default=1, metavar="N", help="seeds seed..seed+N-1 per point (default: 1)")
    p.add_argument("--metrics", default="lyapunov_max", metavar="M,M",
                   help=f"comma-separated, from: {', '.join(METRICS)} (default: lyapunov_max)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the sweep JSON here")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local processes (--workers) or one Ray task per point (default: local)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="local processes (1: this process; default: 1)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="a running Ray cluster (default: RAY_ADDRESS, else Ray started on this machine)")
    p.add_argument("--resume", default=None, metavar="PATH", help="JSONL of finished points: appended, skipped")
    p.add_argument("--figure", default=None, metavar="PATH",
                   help="also draw the first metric's phase diagram to PATH (.png, .svg, .pdf or .json)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    from .own_step_files import HELP
    from .step_cli import add_step_flags
    add_step_flags(p)  # your own step: analysis/step_sweep.py
    next(a for a in p._actions if a.dest == "step").help = (
        HELP + "; sweeps it on the task's inputs (vary seq_len, batch_size) or on --inputs FILE, from --h0 FILE "
        "(else zeros), varying analysis settings. Each worker process (--workers N) imports FILE.py again: the "
        "sweep RUNS THE FILE'S CODE in every worker")


def _clock(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class StderrProgress:
    """``sweep: 12/200 points (6%), 0:01:10 left`` on stderr: rewritten in place on a terminal, else a line at
    most every 2 s and at the end."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last = 0.0

    def __call__(self, done: int, total: int, eta: float | None, point: dict | None) -> None:
        now = time.monotonic()
        if not self.tty and done < total and now - self.last < 2.0 and point is not None:
            return
        self.last = now
        left = f", {_clock(eta)} left" if eta is not None and done < total else ""
        bad = f" [last point {point['status']}: {point['reason']}]" if point and point["status"] != "ok" else ""
        msg = f"sweep: {done}/{total} points ({100 * done // max(1, total)}%){left}{bad}"
        if self.tty:
            self.stream.write("\r\033[K" + msg + ("\n" if done == total else ""))
        else:
            self.stream.write(msg + "\n")
        self.stream.flush()


def _table(d: dict) -> str:
    axes = list(d["axes"])
    lines = [" ".join(f"{h:>14}" for h in axes + [f"{m} (mean±std, n)" for m in d["metrics"]])]
    for s in d["summary"]:
        cells = [f"{s[a]!s:>14}" for a in axes]
        for m in d["metrics"]:
            v = s[m]
            cells.append(f"{'—':>14}" if v["n"] == 0 else f"{v['mean']:>9.4g}±{v['std']:.2g} ({v['n']})")
        lines.append(" ".join(cells))
    return "\n".join(lines + [f"note: {n}" for n in d["notes"]])


def cmd_sweep(args, config_from_args, write_atomic) -> int:
    from .sweep import sweep
    if args.step:  # your own step (analysis.step_sweep)
        from functools import partial

        from .step_sweep import config_of_args, step_sweep
        config, spec = config_of_args(args)
        sweep = partial(step_sweep, spec.pop("step"), **spec)
    else:
        config = config_from_args(args)
    fig_fmt = _figure_format(args.figure)
    try:
        d = sweep(config, args.vary, seeds=args.seeds, metrics=args.metrics, executor=args.executor,
                  workers=args.workers, ray_address=args.ray_address, resume=args.resume,
                  progress=None if args.quiet else StderrProgress())
    except KeyboardInterrupt:
        kept = f"; the finished points are in {args.resume}: run again to go on" if args.resume else \
            " (add --resume PATH to keep finished points)"
        print(f"\ninterrupted{kept}", file=sys.stderr)
        return 130
    if args.json:
        write_atomic(args.json, json.dumps(d, allow_nan=False))
        print(f"wrote {args.json} ({len(d['points'])} points, {d['timings']['total_s']:.1f} s)")
    print(_table(d))
    if args.figure:
        _write_figure(d, args.figure, fig_fmt)
        print(f"wrote {args.figure}")
    return 0


def _figure_format(path: str | None) -> str | None:
    if path is None:
        return None
    fmt = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if fmt not in ("png", "svg", "pdf", "json"):
        raise ConfigError(f"--figure {path}: the name must end in .png, .svg, .pdf or .json")
    return fmt


def _write_figure(d: dict, path: str, fmt: str) -> None:
    """The first metric's Atlas figure, as the dashboard draws it (a 1920x1080 slide for images)."""
    from . import export
    from .figures.atlas import atlas_figure
    fig = atlas_figure(d, d["metrics"][0])
    data = export.figure_json(fig).encode() if fmt == "json" else export.figure_bytes(fig, fmt)
    with open(path, "wb") as fh:
        fh.write(data)
