"""Shared fixtures: float64 default dtype for exactness tests; one torch thread for tiny-matrix tests; the command
line run in this process; a copy of the package's source tree to install from; a stand-in PNG.

The session, and every process it starts, runs torch with one intra-op thread (OMP_NUM_THREADS=1 unless it is set
already), as the dashboard does (analysis/progress.py): the tests' matrices are small, and a second intra-op thread
only added synchronisation. Measured on the 2-core machine, nine modules of the suite: 70 s with one thread against
81-86 s with two, and 91 s of CPU against 117-123 s. A test that needs more threads sets them and puts them back."""
import contextlib
import io
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch's import, which reads it; the children inherit it

import pytest  # noqa: E402
import torch  # noqa: E402


# The longest test files (seconds, one process, the whole suite on the 2-core machine, 2026-12-03 22:00), collected
# first: make test's pytest-xdist workers take whole files in collection order (--no-loadscope-reorder), so the
# longest start first and the workers end together. xdist's own order (most tests first) left the browser test (4
# tests) and the benchmark (2) to the end, side by side on the two cores: 50 s and 31 s there against 34 s and 8 s
# alone.
LONGEST_FILES = {"test_e2e_browser.py": 29, "test_deck.py": 17, "test_package.py": 10, "test_param_sensitivity.py": 10,
                 "test_presets.py": 9, "test_notebook.py": 9, "test_figure_labels.py": 8,
                 "test_watch_background.py": 7, "test_own_cell_sweep.py": 7, "test_export_all.py": 7,
                 "test_app_training.py": 6, "test_limits.py": 6, "test_sweep.py": 6, "test_own_cell_costs.py": 6,
                 "test_app.py": 6, "test_lazy_views.py": 5, "test_finite.py": 5, "test_bench.py": 5,
                 "test_archive.py": 5, "test_export.py": 4}


def pytest_collection_modifyitems(config, items):
    """The longest files first (LONGEST_FILES), the others in their order; within a file the tests keep theirs,
    but those marked ``stops_renderer`` go last (after every other test of the session in one process; on an xdist
    worker, which takes whole files, after the rest of their file): they stop kaleido's shared Chromium, and the
    test that rendered next paid ~4 s to start it again."""
    def key(item):
        return (item.get_closest_marker("stops_renderer") is not None, -LONGEST_FILES.get(item.path.name, 0))
    items.sort(key=key)


@pytest.fixture(autouse=True, scope="session")
def _components_scanned_once():
    """Streamlit's magic off, as the app runs everywhere (AppTest compiles the script again on every run, and the
    magic pass over its syntax tree was ~50 ms of each). Every new AppTest's first run scans each installed
    distribution's metadata for Streamlit components (~0.09 s here, a few hundred AppTests in the suite); nothing is
    installed into this interpreter during a session, so the scan's result is taken once and handed back to the
    later runs."""
    from streamlit import config
    from streamlit.components.v2 import manifest_scanner
    config.set_option("runner.magicEnabled", False)  # as .streamlit/config.toml and gdlab dashboard set it
    original = manifest_scanner.scan_component_manifests
    found = original()
    manifest_scanner.scan_component_manifests = lambda: list(found)
    yield
    manifest_scanner.scan_component_manifests = original


@pytest.fixture(scope="session")
def lru_t2000():
    """run_comparison of the preset 'lru-t2000' (T=2000: LSTM, GRU, LRU; ~3 s), computed once for the tests of its
    numbers (test_presets) and of its figures (test_figure_labels). Read it, do not change it."""
    from analysis.experiment import run_comparison
    from analysis.presets import PRESETS
    return run_comparison(PRESETS["lru-t2000"].config)


@pytest.fixture(scope="module")
def single_thread():
    """The matrices in the reference tests are tiny: intra-op threads only add overhead."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def f64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def run_main(main, args, env: dict | None = None) -> subprocess.CompletedProcess:
    """``main(args)`` in this process, as ``subprocess.run([... "-m", "analysis", *args])`` would report it:
    returncode (argparse's SystemExit included), stdout, stderr. A fresh interpreter costs about 1.5 s of CPU
    (torch's import) per call; the command-line tests that check what the command does, not how a new process
    starts, run here instead. ``env``: environment variables set for the call. The process-wide limits the command
    configures (limits, torch's thread count and default dtype) are put back afterwards."""
    import analysis.limits as limits
    args = [str(a) for a in args]
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(args)
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
                if isinstance(e.code, str):
                    err.write(e.code + "\n")
    finally:
        limits.configure(None)
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


@pytest.fixture
def cli_inproc():
    """``cli_inproc("run", "--seq-len", 5, ...)``: ``python -m analysis`` in this process (see ``run_main``)."""
    from analysis.__main__ import main
    return lambda *args, env=None: run_main(main, args, env)


def save_lm_files(lm, folder):
    """A trained language model's files as a user saves them: lm.pt (its state_dict), ids.npy and tg.npy (token
    ids and next-token targets). ``lm``: (model, ids, targets). Returns ``folder``."""
    import numpy as np
    model, ids, tg = lm
    torch.save(model.state_dict(), folder / "lm.pt")
    np.save(folder / "ids.npy", ids.numpy())
    np.save(folder / "tg.npy", tg.numpy())
    return folder


ROOT = Path(__file__).resolve().parents[1]
PACKAGE_SOURCES = ("analysis", "rnn_models", "dashboard", "gdlab", "pyproject.toml", "README.md")


def source_copy(where: Path) -> Path:
    """What ``pip install .`` builds from (the packages, pyproject.toml, README.md), copied to ``where`` without
    bytecode, so that a build leaves nothing in the checkout. Returns ``where``."""
    where.mkdir()
    for name in PACKAGE_SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, where / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, where / name)
    return where


def white_png(width: int, height: int) -> bytes:
    """A white RGB PNG of the given size (a stand-in for kaleido's image when no Chromium is here)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + b"\xff" * (3 * width) for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
