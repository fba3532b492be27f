"""Serving the dashboard: `make run` on this machine only by default, `make serve` / HOST= for a class, PORT= for both;
the upload limit each widget shows equals the one the app enforces, on every way of starting it."""
from __future__ import annotations

import argparse
import os
import subprocess
import tomllib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import gdlab
from dashboard.controls.state import MAX_UPLOAD_BYTES, SETTINGS_UPLOAD_MB
from dashboard.own_model import UPLOAD_LIMIT, UPLOAD_MB

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"seq_len": "12", "hidden_size": "6", "batch_size": "4"}


def make_dry_run(*args: str, **env: str) -> str:
    """The streamlit command `make -n` prints (nothing is started or installed)."""
    p = subprocess.run(["make", "-n", "-s", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if k not in ("HOST", "PORT")} | env)
    assert p.returncode == 0, p.stderr
    line = next(ln for ln in p.stdout.replace("\\\n", " ").splitlines() if "streamlit run" in ln)
    return " ".join(line.split())


@pytest.mark.parametrize("args,env,address,port", [
    ((), {}, "127.0.0.1", "8501"),
    (("run", "PORT=8600"), {}, "127.0.0.1", "8600"),
    (("serve",), {}, "0.0.0.0", "8501"),
    (("serve", "PORT=8602"), {}, "0.0.0.0", "8602"),
    (("run",), {"HOST": "0.0.0.0", "PORT": "8603"}, "0.0.0.0", "8603"),
    (("serve",), {"PORT": "8604"}, "0.0.0.0", "8604"),
], ids=["default", "run-port", "serve", "serve-port", "env-host", "env-port"])
def test_make_binds_loopback_unless_asked(args, env, address, port):
    cmd = make_dry_run(*(args or ("run",)), **env)
    assert f"--server.address {address} --server.port {port}" in cmd, cmd


def test_one_upload_limit_everywhere():
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["maxUploadSize"] == UPLOAD_MB == gdlab.UPLOAD_MB == 50  # the README's 50 MiB
    assert UPLOAD_LIMIT == UPLOAD_MB * 2**20 and MAX_UPLOAD_BYTES == SETTINGS_UPLOAD_MB * 2**20
    args = argparse.Namespace(address="127.0.0.1", port=8501, headless=True, streamlit_args=[])
    cmd = gdlab.dashboard_command(args)
    assert cmd[cmd.index("--server.maxUploadSize") + 1] == str(UPLOAD_MB)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    readme = (ROOT / "README.md").read_text()
    assert f"{UPLOAD_MB} MiB each" in readme and "make serve" in readme


def test_magic_is_off_everywhere_the_app_runs_and_nothing_relies_on_it():
    """.streamlit/config.toml, gdlab dashboard and the tests' AppTests (conftest) all run the app with Streamlit's
    magic off; so no statement of the page script may be a bare expression magic would have shown (docstrings and
    calls only)."""
    import ast

    from streamlit import config
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["runner"]["magicEnabled"] is False
    cmd = gdlab.dashboard_command(argparse.Namespace(address="127.0.0.1", port=8501, headless=True,
                                                     streamlit_args=[]))
    assert cmd[cmd.index("--runner.magicEnabled") + 1] == "false"
    assert config.get_option("runner.magicEnabled") is False
    tree = ast.parse((ROOT / "dashboard" / "app.py").read_text())
    shown = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Expr)
             and not isinstance(n.value, (ast.Call, ast.Await, ast.Yield, ast.YieldFrom))
             and not (isinstance(n.value, ast.Constant) and isinstance(n.value.value, str))]
    assert not shown, f"dashboard/app.py lines {shown}: bare expressions (magic is off: use st.write)"


def test_uploaders_show_the_limit_the_app_enforces():
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60)
    for k, v in SMALL.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception
    shown = {u.key: u.proto.max_upload_size_mb for u in at.get("file_uploader")}
    assert shown == {"own_sd": UPLOAD_MB, "own_inputs": UPLOAD_MB, "own_targets": UPLOAD_MB, "own_h0": UPLOAD_MB,
                     "config_upload": SETTINGS_UPLOAD_MB}, shown
    # one byte over the shown limit is refused by the app itself, in one line naming the file and the limit
    at.file_uploader(key="own_sd").upload("big.pt", b"\0" * (UPLOAD_LIMIT + 1), "application/octet-stream").run()
    assert not at.exception
    errs = [e.value for e in at.error]
    assert any("big.pt" in e and f"over the {UPLOAD_MB} MiB upload limit" in e and "\n" not in e for e in errs), errs
