"""Your cell in the dashboard (dashboard/own_step.py): the step named when the server starts (GDLAB_STEP, as
``gdlab dashboard --step FILE.py:NAME`` sets it) is offered beside the built-in cells, drawn by the views with
``analyze()``'s numbers on the sidebar's task's inputs, and a bad step is one error line while the rest of the page
works. The app is driven headless by AppTest, widgets by key (tests/test_app.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from analysis import analyze
from analysis.tasks import make_batch

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
SMALL = {"seq_len": "12", "hidden_size": "6", "batch_size": "4", "task": "random", "dtype": "float64"}
T, B = 12, 4

STEP_FILE = '''
import torch
from torch import nn


class Cell(nn.Module):
    input_size, hidden_size = 3, 5

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.W = nn.Parameter(torch.randn(3, 5, generator=g) / 2)
        self.U = nn.Parameter(torch.randn(5, 5, generator=g))

    def forward(self, x, h):
        return torch.tanh(x @ self.W + h @ self.U)


class Raises(Cell):
    def forward(self, x, h):
        raise KeyError("no such gate")
'''
RAISE_LINE = next(i for i, line in enumerate(STEP_FILE.splitlines(), 1) if "raise KeyError" in line)


@pytest.fixture
def step_file(tmp_path, monkeypatch):
    (tmp_path / "cell.py").write_text(STEP_FILE)
    for k in ("GDLAB_STEP", "GDLAB_STEP_STATE", "GDLAB_STEP_H0"):
        monkeypatch.delenv(k, raising=False)
    return tmp_path


def _module(folder):
    import importlib.util
    spec = importlib.util.spec_from_file_location("user_cell_for_app_test", folder / "cell.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def app(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in {**SMALL, **params}.items():
        at.query_params[k] = v
    return at.run()


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def figure(at: AppTest, name: str) -> dict:
    for c in at.get("plotly_chart"):
        s = json.loads(c.proto.spec)
        if s["layout"].get("meta", {}).get("figure") == name:
            return s
    raise AssertionError(f"no figure {name!r}")


def ys(fig: dict, role: str, cell: str) -> np.ndarray:
    from test_app import array
    t = next(t for t in fig["data"] if (t.get("meta") or {}).get("role") == role
             and (t.get("meta") or {}).get("cell") == cell)
    return array(t["y"])


def choose(at: AppTest, cells: list[str], view: str | None = None) -> AppTest:
    if view is not None:
        at.session_state["view"] = view
    return ok(at.multiselect(key="cell_compare").set_value(cells).run())


def _reference(folder, h0=None, **kw):
    x = make_batch("random", T, B, seed=0, input_size=3, dtype=torch.float64).inputs
    return analyze(_module(folder).Cell(), x, h0=torch.zeros(B, 5, dtype=torch.float64) if h0 is None else h0,
                   dtype="float64", **kw)


def test_your_cell_is_offered_only_when_the_server_names_a_step(step_file, monkeypatch):
    assert "own" not in ok(app()).multiselect(key="cell_compare").options
    monkeypatch.setenv("GDLAB_STEP", f"{step_file}/cell.py:Cell")
    at = ok(app())
    ms = at.multiselect(key="cell_compare")
    assert "Your cell" in ms.options and "own" not in ms.value  # offered, not chosen
    assert not [t for t in at.text_input if "step" in (t.key or "")]  # nothing a visitor types names a file


def test_your_cell_alone_draws_analyze_numbers(step_file, monkeypatch):
    monkeypatch.setenv("GDLAB_STEP", f"{step_file}/cell.py:Cell")
    at = choose(app(), ["own"])
    assert not at.error, [e.value for e in at.error]
    want = _reference(step_file)
    np.testing.assert_allclose(ys(figure(at, "grad_norm"), "grad_norm", "own"), want.grad.grad_norm, rtol=1e-12)
    page = " ".join(m.value for m in at.markdown)
    assert "**Your cell** `cell.py:Cell`" in page and "I=3 · T=12 · B=4 · float64" in page
    assert {(t.get("meta") or {}).get("cell") for t in figure(at, "grad_norm")["data"]} == {"own"}  # alone
    at = choose(at, ["own"], "Jacobians")
    np.testing.assert_allclose(ys(figure(at, "jacobian_spectral_norm"), "spectral_norm", "own"),
                               10.0 ** want.jac.spectral_norm, rtol=1e-12)
    at = choose(at, ["own"], "Spectrum")
    assert any("no fixed recurrent matrix" in a["text"] for a in figure(at, "eigenvalues")["layout"]["annotations"])
    at = choose(at, ["own"], "Sensitivity")
    sens = _reference(step_file, views="sensitivity").param_sensitivity
    np.testing.assert_allclose(ys(figure(at, "sensitivity"), "log10_sensitivity", "own"), sens.log10_sensitivity,
                               rtol=1e-12)
    for view in ("Cell state", "Live training", "Activations"):
        assert not choose(at, ["own"], view).error


def test_your_cell_beside_a_built_in_cell_and_its_h0_file(step_file, monkeypatch):
    torch.save(0.3 * torch.ones(1, 5, dtype=torch.float64), step_file / "h0.pt")
    monkeypatch.setenv("GDLAB_STEP", f"{step_file}/cell.py:Cell")
    monkeypatch.setenv("GDLAB_STEP_H0", str(step_file / "h0.pt"))
    at = choose(app(), ["lstm", "own"])
    assert not at.error, [e.value for e in at.error]
    fig = figure(at, "grad_norm")
    assert {(t.get("meta") or {}).get("cell") for t in fig["data"]} >= {"lstm", "own"}
    want = _reference(step_file, h0=0.3 * torch.ones(B, 5, dtype=torch.float64))  # one row for every sequence
    np.testing.assert_allclose(ys(fig, "grad_norm", "own"), want.grad.grad_norm, rtol=1e-12)
    assert len(ys(fig, "grad_norm", "lstm")) == T  # the built-in cell beside it (its numbers: tests/test_app.py)
    assert any("inputs: the task 'random''s (T=12, B=4, I=3, seed 0)" in c.value for c in at.caption)


@pytest.mark.parametrize("spec,params,words", [
    ("Raises", {}, [f"KeyError in your step cell.py:Raises at t=0 (cell.py line {RAISE_LINE})", "no such gate"]),
    ("Cell", {"task": "adding"}, ["reads input_size=3, the task 'adding' gives 2 features per step"]),
    ("Nope", {}, ["cell.py has no 'Nope'"]),
])
def test_a_bad_step_is_one_error_line_and_the_page_goes_on(step_file, monkeypatch, spec, params, words):
    monkeypatch.setenv("GDLAB_STEP", f"{step_file}/cell.py:{spec}")
    at = app(**params)
    at = choose(at, ["gru", "own"])
    errs = [e.value for e in at.error]
    assert len(errs) == 1 and "\n" not in errs[0] and errs[0].startswith("Your cell cannot be analysed: "), errs
    for w in words:
        assert w in errs[0], (w, errs[0])
    assert {(t.get("meta") or {}).get("cell") for t in figure(at, "grad_norm")["data"]} - {None} == {"gru"}
    at = choose(at, ["own"])  # alone: the built-in cells of the settings instead, said once
    errs = [e.value for e in at.error]
    assert len(errs) == 1 and errs[0].endswith("Showing the built-in cells instead."), errs
    assert figure(at, "grad_norm")["data"]


def test_gdlab_dashboard_passes_the_step_in_the_environment(step_file, monkeypatch, capsys):
    import os

    import gdlab
    assert gdlab.main(["dashboard", "--step", str(step_file / "missing.py") + ":Cell"]) == 2
    assert "missing.py" in capsys.readouterr().err
    assert gdlab.main(["dashboard", "--h0", str(step_file / "cell.py")]) == 2
    assert "--h0 goes with --step" in capsys.readouterr().err
    seen = {}

    class Started(Exception):
        pass

    def start(path, cmd):  # instead of becoming streamlit
        seen.update({k: os.environ.get(k) for k in ("GDLAB_STEP", "GDLAB_STEP_H0")})
        raise Started
    monkeypatch.setattr(os, "execv", start)
    monkeypatch.setattr(gdlab.subprocess, "call", start)
    monkeypatch.chdir(step_file)
    torch.save(torch.zeros(1, 5), step_file / "h0.pt")
    with pytest.raises(Started):
        gdlab.main(["dashboard", "--headless", "--step", "cell.py:Cell", "--h0", "h0.pt"])
    assert seen == {"GDLAB_STEP": f"{step_file}/cell.py:Cell", "GDLAB_STEP_H0": str(step_file / "h0.pt")}
    with pytest.raises(SystemExit):  # the help says that the server runs the file
        gdlab.main(["dashboard", "--help"])
    assert "THAT RUNS ITS CODE" in " ".join(capsys.readouterr().out.split())
