"""``--step FILE.py:NAME``: your own recurrence on the command line (analysis/step_cli.py, analysis/own_step_files.py).

The step file is written to tmp_path as a user writes one; the command (``python -m analysis`` in this process,
conftest.run_main) must give the numbers of ``analyze(step, x, h0=...)`` called in Python on the same objects, and
every bad input one line on stderr, exit 2, nothing written.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from analysis import analyze

T, B, I, H = 9, 3, 4, 5

STEP_FILE = '''
import functools
import torch
from torch import nn


class Cell(nn.Module):
    """h' = tanh(x W + h U + b), and a readout head."""
    input_size, hidden_size = 4, 5

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.W = nn.Parameter(torch.randn(4, 5, generator=g) / 2)
        self.U = nn.Parameter(torch.randn(5, 5, generator=g))
        self.b = nn.Parameter(torch.zeros(5))
        self.head = nn.Linear(5, 3)

    def forward(self, x, h):
        return torch.tanh(x @ self.W + h @ self.U + self.b)


class Pair(nn.Module):
    """A tuple state (h, c): c' = 0.9 c + tanh(x W + h U), h' = tanh(c')."""

    def __init__(self, width=5):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.W = nn.Parameter(torch.randn(4, width, generator=g) / 2)
        self.U = nn.Parameter(torch.randn(width, width, generator=g) / 2)

    def forward(self, x, state):
        h, c = state
        c = 0.9 * c + torch.tanh(x @ self.W + h @ self.U)
        return torch.tanh(c), c


def plain(x, h, W, U):
    return torch.tanh(x @ W + h @ U)


_g = torch.Generator().manual_seed(2)
partial_step = functools.partial(plain, W=torch.randn(4, 5, generator=_g, dtype=torch.float64) / 2,
                                 U=torch.randn(5, 5, generator=_g, dtype=torch.float64))
pair = Pair(5)


class NeedsArgs(nn.Module):
    def __init__(self, width):
        super().__init__()


class Boom(nn.Module):
    """Raises at its fourth call: t = 3."""
    hidden_size = 5

    def __init__(self):
        super().__init__()
        self.U = nn.Parameter(torch.eye(5))
        self.calls = 0

    def forward(self, x, h):
        self.calls += 1
        if self.calls == 4:
            raise ValueError("boom at the fourth step")
        return torch.tanh(h @ self.U + x.sum(-1, keepdim=True))


def wide(x, h):
    return torch.cat([h, h], -1)


def detached(x, h):
    return torch.tanh(x.sum(-1, keepdim=True) + h.detach())


def complex_state(x, h):
    return torch.polar(h.abs() + 1, h)


not_a_step = 3
'''


@pytest.fixture
def files(tmp_path):
    """cell.py, its Cell's weights (changed from the class's own) w.pt, inputs x.npy, h0 h0.pt, ids tg.npy."""
    (tmp_path / "cell.py").write_text(STEP_FILE)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(T, B, I, generator=g, dtype=torch.float64)
    np.save(tmp_path / "x.npy", x.numpy())
    h0 = 0.3 * torch.randn(B, H, generator=g, dtype=torch.float64)
    torch.save(h0, tmp_path / "h0.pt")
    torch.save((h0, 0.5 * h0), tmp_path / "h0c0.pt")
    ids = torch.randint(0, 3, (T, B), generator=g)
    np.save(tmp_path / "tg.npy", ids.numpy())
    mod = _module(tmp_path)
    cell = mod.Cell()
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    torch.save(cell.state_dict(), tmp_path / "w.pt")
    return tmp_path


def _module(folder):
    """The step file imported here, independently of the command's loader."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("user_cell_for_test", folder / "cell.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _same(d: dict, want: dict) -> None:
    """The result JSON of the command equals the API's (what ran; timings and provenance aside)."""
    for k in want:
        if k not in ("timings", "provenance"):
            assert d[k] == want[k], k


def test_run_step_equals_the_api(files, cli_inproc):
    out = files / "o.json"
    p = cli_inproc("run", "--step", f"{files}/cell.py:Cell", "--step-state", files / "w.pt", "--inputs",
                   files / "x.npy", "--h0", files / "h0.pt", "--readout", "head", "--targets", files / "tg.npy",
                   "--dtype", "float64", "--json", out)
    assert p.returncode == 0, p.stderr
    d = json.loads(out.read_text())
    cell = _module(files).Cell()
    cell.load_state_dict(torch.load(files / "w.pt"))
    x = torch.from_numpy(np.load(files / "x.npy"))
    r = analyze(cell, x, h0=torch.load(files / "h0.pt"), readout="head",
                targets=torch.from_numpy(np.load(files / "tg.npy")), dtype="float64")
    want = json.loads(json.dumps(r.to_dict()))
    _same(d, want)
    assert d["config"]["cell"] == "own" and len(d["grad_norm"]) == T and d["jacobian"]["lag"] == list(range(T))
    assert d["provenance"]["step_file"] == "cell.py:Cell" and len(d["provenance"]["step_sha256"]) == 64
    # the weights of w.pt were used: the class's own give other numbers
    r0 = analyze(_module(files).Cell(), x, h0=torch.load(files / "h0.pt"), readout="head",
                 targets=torch.from_numpy(np.load(files / "tg.npy")), dtype="float64")
    assert not np.allclose(r0.grad.grad_norm, d["grad_norm"])


@pytest.mark.parametrize("name,h0", [("partial_step", "h0.pt"), ("pair", "h0c0.pt"), ("Cell", None)])
def test_run_step_forms(files, cli_inproc, name, h0):
    """A functools.partial, an instance with a tuple state, and a class without --h0 (zeros of its hidden_size)."""
    out = files / "o.json"
    p = cli_inproc("run", "--step", f"{files}/cell.py:{name}", "--inputs", files / "x.npy",
                   *(["--h0", files / h0] if h0 else []), "--dtype", "float64", "--views", "gradients,jacobians",
                   "--json", out)
    assert p.returncode == 0, p.stderr
    d = json.loads(out.read_text())
    mod = _module(files)
    step = getattr(mod, name)
    step = step() if isinstance(step, type) else step
    state = torch.load(files / h0) if h0 else torch.zeros(B, H, dtype=torch.float64)
    r = analyze(step, torch.from_numpy(np.load(files / "x.npy")), h0=state, dtype="float64",
                views="gradients,jacobians")
    _same(d, json.loads(json.dumps(r.to_dict())))


def test_one_row_h0_is_every_sequences(files, cli_inproc):
    torch.save(0.2 * torch.ones(1, H, dtype=torch.float64), files / "row.pt")
    out = files / "o.json"
    p = cli_inproc("run", "--step", f"{files}/cell.py:Cell", "--inputs", files / "x.npy", "--h0", files / "row.pt",
                   "--dtype", "float64", "--views", "gradients", "--json", out)
    assert p.returncode == 0, p.stderr
    r = analyze(_module(files).Cell(), torch.from_numpy(np.load(files / "x.npy")),
                h0=0.2 * torch.ones(B, H, dtype=torch.float64), dtype="float64", views="gradients")
    assert json.loads(out.read_text())["grad_norm"] == pytest.approx(list(r.grad.grad_norm), rel=0, abs=0)


def test_summary_names_the_step(files, cli_inproc):
    p = cli_inproc("run", "--step", f"{files}/cell.py:Cell", "--inputs", files / "x.npy", "--views", "gradients")
    assert p.returncode == 0, p.stderr
    first = p.stdout.splitlines()[0]
    assert first.startswith("your step cell.py:Cell (Your cell), state 1 x (B, 5), T=9, B=3")
    assert "W_hh: none, your step has no fixed recurrent matrix" in p.stdout


def test_export_step_writes_its_figures(files, cli_inproc):
    out = files / "figs"
    p = cli_inproc("export", "--step", f"{files}/cell.py:Cell", "--inputs", files / "x.npy", "--h0", files / "h0.pt",
                   "--dtype", "float64", "--out", out, "--formats", "json")
    assert p.returncode == 0, p.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["cell"] == "own" and cfg["provenance"]["own"]["step_file"] == "cell.py:Cell"
    fig = json.loads((out / "gradient-flow" / "grad_norm.json").read_text())
    r = analyze(_module(files).Cell(), torch.from_numpy(np.load(files / "x.npy")), h0=torch.load(files / "h0.pt"),
                dtype="float64")
    tr = next(t for t in fig["traces"] if (t.get("meta") or {}).get("role") == "grad_norm")
    np.testing.assert_allclose(tr["y"], r.grad.grad_norm, rtol=1e-15)
    assert (out / "spectrum").is_dir() and (out / "figures.zip").is_file()


BAD = {
    "file missing": (["--step", "{d}/nope.py:Cell"], ["--step", "nope.py", "no such file"]),
    "not FILE:NAME": (["--step", "{d}/cell.py"], ["must be FILE.py:NAME"]),
    "NAME missing": (["--step", "{d}/cell.py:Cel"], ["cell.py has no 'Cel'", "Cell, Pair"]),
    "not a step": (["--step", "{d}/cell.py:not_a_step"], ["not_a_step is a int"]),
    "needs arguments": (["--step", "{d}/cell.py:NeedsArgs"], ["NeedsArgs() needs arguments", "width"]),
    "import fails": (["--step", "{d}/broken.py:Cell"], ["importing it raised NameError (broken.py line 3)",
                                                        "undefined_name"]),
    "syntax error": (["--step", "{d}/syntax.py:Cell"], ["SyntaxError at line 1"]),
    "wrong shape": (["--step", "{d}/cell.py:wide", "--h0", "{d}/h0.pt"],
                    ["the step at t=0 returned the state of shape (3, 10)", "(3, 5)"]),
    "non-differentiable": (["--step", "{d}/cell.py:detached", "--h0", "{d}/h0.pt"],
                           ["does not depend on its state through autograd", ".detach()"]),
    "complex state": (["--step", "{d}/cell.py:complex_state", "--h0", "{d}/h0.pt"],
                      ["returned a complex the state", "view_as_real"]),
    "raises inside": (["--step", "{d}/cell.py:Boom"],
                      ["ValueError in your step cell.py:Boom at t=3 (cell.py line", "boom at the fourth step"]),
    "no h0": (["--step", "{d}/cell.py:partial_step"], ["no int hidden_size", "--h0 FILE"]),
    "h0 rows": (["--step", "{d}/cell.py:Cell", "--h0", "{d}/x.npy"], ["--h0 has shape (9, 3, 4)", "B=3"]),
    "state file keys": (["--step", "{d}/cell.py:Pair", "--step-state", "{d}/w.pt"],
                        ["--step-state", "w.pt", "holds 'b', which the step does not have"]),
    "state without step": (["--step-state", "{d}/w.pt"], ["give --step FILE.py:NAME too"]),
    "no inputs": (["--step", "{d}/cell.py:Cell", "--inputs", None], ["--step needs --inputs FILE"]),
    "built-in flag": (["--step", "{d}/cell.py:Cell", "--hidden-size", "8"],
                      ["--hidden-size does not apply with --step: your step decides it"]),
    "built-in setting": (["--step", "{d}/cell.py:Cell", "--activation", "relu"],
                         ["--activation does not apply with --step", "built-in cells"]),
    "preset": (["--step", "{d}/cell.py:Cell", "--preset", "vanishing-tanh"], ["--preset does not apply with --step"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_one_line_exit_2(files, cli_inproc, case):
    (files / "broken.py").write_text("import torch\n\nx = undefined_name + 1\n")
    (files / "syntax.py").write_text("def f(:\n    pass\n")
    flags, words = BAD[case]
    args = [a.format(d=files) if isinstance(a, str) else a for a in flags]
    if "--inputs" in args:
        i = args.index("--inputs")
        del args[i:i + 2]
    else:
        args += ["--inputs", files / "x.npy"]
    out = files / "o.json"
    p = cli_inproc("run", *args, "--json", out)
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert "Traceback" not in p.stderr and not out.exists()


def test_help_says_importing_runs_the_file(cli_inproc):
    p = cli_inproc("run", "--help")
    text = " ".join(p.stdout.split())
    assert "--step FILE.py:NAME" in text and "RUNS ITS CODE" in text and "--step-state FILE.pt" in text


def test_export_step_slide_deck(files, cli_inproc, monkeypatch):
    """--pptx with --step: one slide per figure of the step's result, its notes naming the step file (the
    images stand in for kaleido's: the slides' contents are not what this checks)."""
    import io

    from pptx import Presentation

    from analysis import deck
    from conftest import white_png
    monkeypatch.setattr(deck, "render", lambda jobs, scale, on_done: [white_png(16, 9) for _ in jobs])
    p = cli_inproc("export", "--step", f"{files}/cell.py:Cell", "--inputs", files / "x.npy", "--views", "gradients",
                   "--pptx", files / "d.pptx")
    assert p.returncode == 0, p.stderr
    slides = Presentation(io.BytesIO((files / "d.pptx").read_bytes())).slides
    notes = [s.notes_slide.notes_text_frame.text for s in slides if s.has_notes_slide]
    title = " ".join(sh.text_frame.text for sh in slides[0].shapes if sh.has_text_frame)
    assert "Your cell" in title and len(slides) >= 2
    assert all("step: cell.py:Cell sha256 " in n and "inputs: x.npy sha256 " in n for n in notes), notes[:1]
