"""``gdlab``: the installed command of the gradient-dynamics lab.

    gdlab run|train|export|...  the same subcommands and flags as ``python -m analysis`` (its parser: a
                                subcommand added there appears here too)
    gdlab dashboard             start the Streamlit dashboard from the installed ``dashboard/app.py``
                                (``--ray ADDRESS``: its analyses and sweeps on a Ray cluster, GDLAB_RAY_ADDRESS)
    gdlab --version             the version (``analysis.__version__``, the one place it is written)
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys

# MiB per uploaded file: dashboard/own_model.py UPLOAD_MB (imported there with Streamlit, so repeated here; a test
# checks that the two and .streamlit/config.toml agree)
UPLOAD_MB = 50


def app_path() -> str:
    """The installed dashboard's entry file (found without importing the dashboard or Streamlit)."""
    spec = importlib.util.find_spec("dashboard")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the dashboard package is not installed next to analysis")
    return os.path.join(list(spec.submodule_search_locations)[0], "app.py")


def dashboard_command(args: argparse.Namespace) -> list[str]:
    """``python -m streamlit run <app.py>`` with the chosen address and port, the app's upload limit (the
    widgets show what the app enforces), usage statistics off and Streamlit's magic off (as .streamlit/config.toml)."""
    cmd = [sys.executable, "-m", "streamlit", "run", app_path(), "--server.address", args.address,
           "--server.port", str(args.port), "--server.maxUploadSize", str(UPLOAD_MB),
           "--browser.gatherUsageStats", "false", "--runner.magicEnabled", "false"]
    if args.headless:
        cmd += ["--server.headless", "true"]
    return cmd + list(args.streamlit_args)


def _add_dashboard(parser: argparse.ArgumentParser) -> None:
    parser.description += " 'dashboard' starts the web page on this machine."
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    p = sub.add_parser("dashboard", help="start the Streamlit dashboard",
                       description="Start the dashboard (streamlit run on the installed dashboard/app.py).")
    p.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    p.add_argument("--address", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 to share it)")
    p.add_argument("--headless", action=argparse.BooleanOptionalAction, default=False,
                   help="do not open a browser (for servers)")
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run the dashboard's analyses, uploads and sweeps on this Ray cluster (ray://HEAD:10001, or "
                        "'local' for a Ray on this machine); sets GDLAB_RAY_ADDRESS for the server")
    p.add_argument("--runs", metavar="DIR", help="a folder of run directories written by analysis.watch: the "
                   "Timeline tab lists them")
    p.add_argument("--step", metavar="FILE.py:NAME", default=None,
                   help="offer 'Your cell' beside the built-in cells: NAME in your Python file FILE.py, an nn.Module "
                        "subclass (made with no arguments), an instance or a step function (x_t, state) -> state, "
                        "on the sidebar's task's inputs. The server imports FILE.py: THAT RUNS ITS CODE; name only "
                        "your own files. Visitors can choose the cell, never name a file")
    p.add_argument("--step-state", metavar="FILE.pt", default=None,
                   help="weights for the --step module (torch.save(step.state_dict(), PATH), read weights-only)")
    p.add_argument("--h0", metavar="FILE", default=None,
                   help="the --step's initial state (.pt/.npy; (B, H) or one row for every sequence; a .pt tuple "
                        "for a tuple state); default zeros (B, hidden_size)")
    p.add_argument("streamlit_args", nargs=argparse.REMAINDER, metavar="-- STREAMLIT_ARGS",
                   help="further streamlit options after --, e.g. -- --theme.base dark")


def _step_env(args: argparse.Namespace) -> None:
    """--step, --step-state and --h0 as the server's environment (read by dashboard/own_step.py), absolute paths;
    the form FILE.py:NAME and the files checked here (one ConfigError line), the file imported by the server."""
    from analysis.own_files import read_file
    from analysis.own_step_files import H0_ENV, STATE_ENV, STEP_ENV, split_spec
    if args.step is None:
        if args.step_state or args.h0:
            from rnn_models.config import ConfigError
            raise ConfigError(f"{'--step-state' if args.step_state else '--h0'} goes with --step FILE.py:NAME")
        return
    path, name = split_spec(args.step)
    for flag, p in (("--step", path), ("--step-state", args.step_state), ("--h0", args.h0)):
        if p is not None:
            read_file(p, flag)  # a regular file within the size limit, else one line naming it
    os.environ[STEP_ENV] = f"{os.path.abspath(path)}:{name}"
    for key, p in ((STATE_ENV, args.step_state), (H0_ENV, args.h0)):
        if p is not None:
            os.environ[key] = os.path.abspath(p)


def main(argv=None, prog: str | None = None) -> int:
    """``prog``: what the user typed (``gdlab``, or ``python -m gdlab``), shown in usage and help."""
    from analysis.__main__ import build_parser, dispatch
    parser = build_parser(prog=prog or "gdlab")
    _add_dashboard(parser)
    args = parser.parse_args(argv)
    if args.command != "dashboard":
        return dispatch(args)
    if not 1 <= args.port <= 65535:
        print(f"error: --port {args.port} must be in 1..65535", file=sys.stderr)
        return 2
    if args.streamlit_args[:1] == ["--"]:
        args.streamlit_args = args.streamlit_args[1:]
    if args.ray:
        os.environ["GDLAB_RAY_ADDRESS"] = args.ray  # the server's environment (exec keeps it)
    if args.runs is not None:
        if not os.path.isdir(args.runs):
            print(f"error: --runs {args.runs!r} is not a directory", file=sys.stderr)
            return 2
        os.environ["GDLAB_RUNS"] = os.path.abspath(args.runs)  # read by dashboard/views/timeline.py
    try:
        _step_env(args)
    except ValueError as e:  # ConfigError: one line
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    cmd = dashboard_command(args)
    if os.name == "posix":  # become streamlit: signals (Ctrl+C, kill) reach the server itself
        sys.stdout.flush()
        os.execv(cmd[0], cmd)
    return subprocess.call(cmd)
