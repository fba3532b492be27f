"""Byte-compile what the dashboard, the command line and the tests import, after ``pip install --no-compile``
(``make install``).

pip byte-compiles every .py file of every package it installs: ~16,000 files here, 52 s of the 85 s that
``pip install -r requirements.txt`` took on the 2-core machine (33 s with ``--no-compile``). The code that runs
imports about a quarter of them. Importing those here writes their .pyc once, even where PYTHONDONTWRITEBYTECODE is
set for later processes; a module imported later for the first time is compiled then (and written where the
environment allows). The libraries the tests use, every package of this project, then a tiny comparison and all
its figures, so the modules imported inside functions (torch.func's decompositions, plotly's validators) are
compiled too: 4,400 files in ~16 s in two processes (~20 s in one), measured on the 2-core machine.

Run by ``make install``; ``python tools/compile_used_modules.py`` in a venv does it again.
"""
from __future__ import annotations

import sys

sys.dont_write_bytecode = False  # this process writes the .pyc files, whatever the environment says

import importlib  # noqa: E402
import logging  # noqa: E402
import pkgutil  # noqa: E402
import subprocess  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# libraries the tests and the served app import that this project's modules import only inside functions; those
# without torch are imported by a second process while this one imports torch (Lightning pulls it in: ~13 s of the
# ~20 s here, one process)
WITHOUT_TORCH = ("pytest", "xdist", "streamlit.testing.v1", "streamlit.web.bootstrap", "playwright.sync_api",
                 "nbclient", "nbformat", "ipykernel.kernelapp", "jupyter_client", "pptx", "kaleido", "plotly.express",
                 "tensorboard.backend.event_processing.event_accumulator", "ray")
WITH_TORCH = ("torch", "lightning.pytorch")
SKIP = ("dashboard.app",)  # the page script: it draws the page when imported (and every __main__: it runs)


def main() -> None:
    quiet()
    if sys.argv[1:] == ["--without-torch"]:
        for name in WITHOUT_TORCH:
            _import(name)
        return
    other = subprocess.Popen([sys.executable, __file__, "--without-torch"])
    for name in WITH_TORCH:
        _import(name)
    other.wait()  # this project imports streamlit and plotly too: after the other process has compiled them
    for pkg in ("rnn_models", "analysis", "dashboard", "gdlab"):
        mod = importlib.import_module(pkg)
        for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
            if not info.name.startswith(SKIP) and not info.name.endswith("__main__"):
                _import(info.name)
    try:
        _tiny_run()
    except Exception as e:  # noqa: BLE001 - what it would compile is compiled when first used
        print(f"compile_used_modules: the tiny run failed ({type(e).__name__}: {e})"[:200], file=sys.stderr)


def quiet() -> None:
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)  # streamlit's "no runtime found" from modules imported outside a page


def _import(name: str) -> None:
    try:
        importlib.import_module(name)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - a module that cannot import here is compiled when it is used
        print(f"compile_used_modules: {name} not imported ({type(e).__name__}: {e})"[:200], file=sys.stderr)


def _tiny_run() -> None:
    """One comparison of every view with the sensitivity and all its figures as JSON: the lazily imported paths
    (torch.func's forward-mode decompositions, plotly's validators)."""
    from analysis import ExperimentConfig
    from analysis.experiment import run_comparison
    from analysis.figures import ALL_VIEWS, view_figures
    results = run_comparison(ExperimentConfig(cell="lstm", compare=("lstm", "gru", "lru"), seq_len=6, hidden_size=4,
                                              batch_size=2), views="gradients,jacobians,sensitivity")
    for view in ALL_VIEWS:
        for fig in view_figures(view, results).values():
            fig.to_json()


if __name__ == "__main__":
    main()
