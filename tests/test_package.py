"""The installable package: ``pip install .`` (and ``pip install -e .``) into a fresh virtual environment gives a
working ``gdlab`` command; pyproject's dependencies repeat requirements.txt's pins; the version is written once.

Fast and offline: the fresh venv is made without pip and sees this interpreter's packages through a .pth file
(torch, streamlit, setuptools, pip are not reinstalled), and the project is installed with
``--no-deps --no-build-isolation`` from a copy of the source tree (the build leaves nothing in the checkout).
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import source_copy as _source_copy

ROOT = Path(__file__).resolve().parents[1]


def _fresh_venv(where: Path) -> Path:
    """A venv without pip whose site-packages links to this interpreter's (a .pth file); returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    py = where / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "_parent_site.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return py


PIP = ("-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--disable-pip-version-check")

def _run_all(exe: Path | None, argvs: list[list], cwd: Path, timeout=300) -> list[subprocess.CompletedProcess]:
    """``exe`` run with each argument list (exe None: each list is a whole command), the processes side by side,
    without the checkout on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cmds = [[str(c) for c in ([exe] if exe is not None else []) + list(a)] for a in argvs]
    procs = [subprocess.Popen(c, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in cmds]
    out = []
    for c, p in zip(cmds, procs):
        stdout, stderr = p.communicate(timeout=timeout)
        out.append(subprocess.CompletedProcess(c, p.returncode, stdout, stderr))
    return out


@pytest.fixture(scope="module")
def installs(tmp_path_factory):
    """``pip install .`` and ``pip install -e .``, each into its own fresh venv from its own copy of the sources,
    built side by side: {"wheel": (base, python), "editable": (base, python, source copy)}."""
    base = tmp_path_factory.mktemp("pkg")
    py, src = _fresh_venv(base / "venv"), _source_copy(base / "src")
    ebase = tmp_path_factory.mktemp("pkg_editable")
    epy, esrc = _fresh_venv(ebase / "venv"), _source_copy(ebase / "src")
    procs = [subprocess.Popen([str(p), *PIP, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for p, args in ((py, [str(src)]), (epy, ["-e", str(esrc)]))]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out
    return {"wheel": (base, py), "editable": (ebase, epy, esrc)}


@pytest.fixture(scope="module")
def installed(installs):
    return installs["wheel"]


def test_pip_install_gives_a_working_gdlab_run_json(installed, cli_inproc):
    base, py = installed
    gdlab = py.parent / "gdlab"
    assert gdlab.exists()
    out = base / "result.json"
    # three independent runs of the installed package, started together (each pays torch's import)
    where, r, bad = _run_all(None, [
        [py, "-c", "import analysis, dashboard; print(analysis.__file__); print(dashboard.__file__)"],
        [gdlab, "run", "--seq-len", "12", "--hidden-size", "6", "--batch-size", "2", "--json", out],
        [gdlab, "run", "--seq-len", "0"]], cwd=base)
    where = where.stdout.split()
    assert all("site-packages" in w and str(ROOT) not in w for w in where), where
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert d["config"]["seq_len"] == 12 and d["config"]["hidden_size"] == 6 and len(d["grad_norm"]) == 12
    # the same numbers as python -m analysis from the checkout (its main() in this process: conftest.run_main)
    ref = base / "ref.json"
    r = cli_inproc("run", "--seq-len", "12", "--hidden-size", "6", "--batch-size", "2", "--json", ref)
    assert r.returncode == 0, r.stderr
    assert json.loads(ref.read_text())["grad_norm"] == d["grad_norm"]
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "seq_len" in bad.stderr


def test_gdlab_has_the_analysis_subcommands_dashboard_and_version(installed, capsys):
    """The installed command, run twice side by side (each pays torch's import): its version and its commands. Its
    subcommands' own flags are the checkout's code (the install holds every file of it: test_notebook), read from
    gdlab's main() in this process."""
    import gdlab as checkout_gdlab
    base, py = installed
    gdlab = py.parent / "gdlab"
    from analysis import __version__
    from analysis.__main__ import COMMANDS
    v, h = _run_all(gdlab, [["--version"], ["--help"]], cwd=base)
    assert v.returncode == 0 and v.stdout.strip() == f"gradient-dynamics lab {__version__}"
    assert h.returncode == 0 and h.stdout.startswith("usage: gdlab ")
    for name in list(COMMANDS) + ["dashboard"]:  # every python -m analysis subcommand appears
        assert name in h.stdout

    def run(*argv):
        with pytest.raises(SystemExit) as e:
            checkout_gdlab.main(list(argv))
        out = capsys.readouterr()
        return e.value.code, out.out, out.err
    code, out, _ = run("dashboard", "--help")
    assert code == 0 and "--port" in out and "streamlit" in out.lower()
    code, out, _ = run("export", "--help")
    assert code == 0 and "--pptx" in out and "--preset" in out
    assert checkout_gdlab.main(["dashboard", "--port", "0"]) == 2 and "--port" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gdlab_dashboard_serves_the_installed_app(installed):
    base, py = installed
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen([str(py.parent / "gdlab"), "dashboard", "--headless", "--port", str(port)], cwd=base,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline, ok = time.monotonic() + 90, False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    ok = r.read().decode() == "ok"
                    break
            except OSError:
                time.sleep(0.5)
        assert ok, f"the dashboard did not answer on port {port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # our own session: gdlab became streamlit (exec)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
    assert f"127.0.0.1:{port}" in out, out


def test_editable_install_runs_from_the_source_tree(installs):
    base, py, src = installs["editable"]
    r, v = _run_all(None, [[py, "-c", "import analysis; print(analysis.__file__)"], [py.parent / "gdlab", "--version"]],
                    cwd=base)
    assert r.returncode == 0 and r.stdout.strip() == str(src / "analysis" / "__init__.py")
    assert v.returncode == 0 and "gradient-dynamics lab" in v.stdout


def _pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        m = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)$", line)
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2).replace(" ", "")
    return out


def test_pyproject_dependencies_repeat_the_requirements_pins():
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    deps = _pins(project["dependencies"] + project["optional-dependencies"]["notebook"])
    assert deps, "no dependencies"
    for name, spec in deps.items():
        assert req.get(name) == spec, f"{name}{spec} in pyproject.toml, {name}{req.get(name)} in requirements.txt"
    assert deps["torch"] == "==2.13.0"
    assert "version" in project["dynamic"]  # read from analysis.__version__, written once


def test_the_version_is_written_in_one_place():
    hits = []
    for folder, dirs, files in os.walk(ROOT):  # the sources, not .venv, the tests or a local build/ or dist/ copy
        dirs[:] = [d for d in dirs if d not in {".venv", ".git", "tests", "build", "dist", "__pycache__"}]
        for name in files:
            path = Path(folder, name)
            if path.suffix in (".py", ".toml") and re.search(r"""__version__\s*=\s*["']""",
                                                            path.read_text(errors="ignore")):
                hits.append(path.relative_to(ROOT))
    assert hits == [Path("analysis/__init__.py")]
