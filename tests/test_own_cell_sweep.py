"""``sweep --step FILE.py:NAME``: sweeps over your own step (analysis/step_sweep.py).

Each point of the command (inline and in a pool of 2 worker processes, which import the file themselves) must
equal ``analyze(step, x, h0=..., seed=s)`` called here on the same step and the same inputs (the task's seeded
batch, or the --inputs file) to 1e-12; a field that does not go with a step exits 2 with one line naming it, and a
sweep over the host's limits exits 2 naming its total before any point runs.
"""
from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch

from analysis import analyze
from analysis.tasks import make_batch

I, H = 3, 5

STEP_FILE = '''
import torch
from torch import nn


class Cell(nn.Module):
    """h' = tanh(x W + h U + b)."""
    input_size, hidden_size = 3, 5

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.W = nn.Parameter(torch.randn(3, 5, generator=g) / 2)
        self.U = nn.Parameter(torch.randn(5, 5, generator=g) * 0.6)
        self.b = nn.Parameter(torch.zeros(5))

    def forward(self, x, h):
        return torch.tanh(x @ self.W + h @ self.U + self.b)
'''


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "cell.py").write_text(STEP_FILE)
    g = torch.Generator().manual_seed(3)
    np.save(tmp_path / "x.npy", torch.randn(12, 2, I, generator=g, dtype=torch.float64).numpy())
    torch.save(0.2 * torch.randn(2, H, generator=g, dtype=torch.float64), tmp_path / "h0.pt")
    return tmp_path


def _cell(folder):
    """The step file imported here, independently of the command's loader."""
    spec = importlib.util.spec_from_file_location("user_cell_sweep_test", folder / "cell.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Cell()


def _metrics(r) -> dict:
    """The metrics of an analyze() result, read here from its arrays."""
    logs = np.log10(np.asarray(r.grad.grad_norm, float))
    out = {"lyapunov_max": float(r.jac.lyapunov[0]), "memory_horizon": r.memory_horizon,
           "grad_ratio": float(logs[0] - logs[-1])}
    if r.param_sensitivity is not None:
        out["param_sensitivity"] = float(r.param_sensitivity.last_log10_ratio)
    return out


def _check(points, want_of, metrics):
    assert points
    for p in points:
        assert p["status"] == "ok", p
        want = want_of(p)
        for m in metrics:
            if want[m] is None:
                assert p[m] is None, (m, p)
            elif isinstance(want[m], int):
                assert p[m] == want[m], (m, p)
            else:
                assert math.isclose(p[m], want[m], rel_tol=0, abs_tol=1e-12), (m, p[m], want[m])


_WANT: dict = {}  # (seq_len, batch_size, seed) -> analyze()'s metrics: the same step file in every test here


@pytest.mark.parametrize("workers", [1, 2])
def test_task_inputs_points_equal_analyze(folder, cli_inproc, workers):
    """seq_len and batch_size vary the task's seeded inputs; 2 seeds; inline and a process pool of 2."""
    out = folder / "s.json"
    metrics = ["memory_horizon", "grad_ratio", "lyapunov_max"]
    r = cli_inproc("sweep", "--step", f"{folder}/cell.py:Cell", "--vary", "seq_len=20:40:2", "--vary",
                   "batch_size=2,3", "--seeds", 2, "--metrics", ",".join(metrics), "--workers", workers, "--quiet",
                   "--json", out)
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert d["config"]["cell"] == "own" and d["step"]["step_file"] == "cell.py:Cell"
    assert len(d["points"]) == 2 * 2 * 2 and {p["seq_len"] for p in d["points"]} == {20, 40}
    cell = _cell(folder)

    def want(p):  # the reference, computed once for both pool sizes (module-level memo)
        key = (p["seq_len"], p["batch_size"], p["seed"])
        if key not in _WANT:
            x = make_batch("random", p["seq_len"], p["batch_size"], seed=p["seed"], input_size=I,
                           dtype=torch.float64).inputs
            _WANT[key] = _metrics(analyze(cell, x, h0=torch.zeros(p["batch_size"], H, dtype=torch.float64),
                                          seed=p["seed"]))
        return _WANT[key]
    _check(d["points"], want, metrics)


def test_inputs_file_h0_and_sensitivity_equal_analyze(folder, cli_inproc):
    """With --inputs and --h0 only analysis settings vary (horizon_threshold here); param_sensitivity too."""
    out = folder / "s.json"
    metrics = ["memory_horizon", "grad_ratio", "param_sensitivity"]
    r = cli_inproc("sweep", "--step", f"{folder}/cell.py:Cell", "--inputs", folder / "x.npy", "--h0",
                   folder / "h0.pt", "--vary", "horizon_threshold=0.1,0.01", "--seeds", 2, "--metrics",
                   ",".join(metrics), "--quiet", "--json", out)
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert any("change only the random probe" in n for n in d["notes"])
    cell, x = _cell(folder), torch.from_numpy(np.load(folder / "x.npy"))
    h0 = torch.load(folder / "h0.pt")

    def want(p):
        return _metrics(analyze(cell, x, h0=h0, seed=p["seed"], horizon_threshold=p["horizon_threshold"],
                                views=("jacobians", "gradients", "sensitivity")))
    _check(d["points"], want, metrics)
    assert d["points"][0]["memory_horizon"] < d["points"][-1]["memory_horizon"]  # a lower threshold: later


@pytest.mark.parametrize("args, names", [
    (["--vary", "hidden_size=4,8"], "--vary hidden_size"),
    (["--vary", "init_scale=0.5:2:3"], "--vary init_scale"),
    (["--vary", "cell=rnn,lstm"], "--vary cell"),
    (["--vary", "seed=1,2"], "--vary seed"),
    (["--vary", "seq_len=10,20", "--inputs", "X"], "--vary seq_len"),
    (["--vary", "seq_len=10,20", "--activation", "relu"], "--activation"),
    (["--vary", "seq_len=10,20", "--train-steps", "5"], "--train-steps"),
    (["--vary", "seq_len=10,20", "--metrics", "spectral_radius"], "spectral_radius"),
    (["--vary", "seq_len=10,20", "--metrics", "final_loss"], "final_loss"),
    (["--vary", "seq_len=10,20", "--executor", "ray"], "--executor ray"),
])
def test_bad_fields_exit_2_with_one_line(folder, cli_inproc, args, names):
    args = [str(folder / "x.npy") if a == "X" else a for a in args]
    r = cli_inproc("sweep", "--step", f"{folder}/cell.py:Cell", "--quiet", *args)
    assert r.returncode == 2
    line = r.stderr.strip()
    assert "\n" not in line and names in line and "Traceback" not in line, line


def _sweep_args(folder, step="cell.py:Cell"):
    return ("sweep", "--step", f"{folder}/{step}", "--vary", "seq_len=10,20,30", "--seeds", 2, "--batch-size", 2,
            "--metrics", "memory_horizon,grad_ratio,lyapunov_max", "--quiet")


def _points(path) -> list[dict]:
    return [{k: v for k, v in p.items() if k != "time_s"} for p in json.loads(path.read_text())["points"]]


def test_resume_with_step_equals_an_uninterrupted_sweep(folder, cli_inproc):
    """The resume file records the step (FILE.py as given, NAME, sha256 of its bytes): a sweep interrupted after two
    points (the third line cut short) goes on from the file and equals a sweep that was never interrupted."""
    import hashlib
    full, res, out = folder / "full.json", folder / "r.jsonl", folder / "resumed.json"
    assert cli_inproc(*_sweep_args(folder), "--json", full).returncode == 0
    r = cli_inproc(*_sweep_args(folder), "--resume", res)
    assert r.returncode == 0, r.stderr
    lines = res.read_text().splitlines()
    assert len(lines) == 1 + 6
    assert json.loads(lines[0])["step"] == {
        "path": f"{folder}/cell.py", "abspath": str(folder / "cell.py"), "name": "Cell",
        "sha256": hashlib.sha256((folder / "cell.py").read_bytes()).hexdigest(), "files": {}}
    res.write_text("\n".join(lines[:3] + [lines[3][:25]]))  # interrupted: 2 points written, the 3rd cut short
    r = cli_inproc(*_sweep_args(folder), "--resume", res, "--json", out)
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert d["timings"]["points_run"] == 4 and any("2 of 6 points taken from r.jsonl" in n for n in d["notes"])
    assert _points(out) == _points(full)
    assert cli_inproc(*_sweep_args(folder), "--resume", res, "--json", out).returncode == 0
    assert json.loads(out.read_text())["timings"]["points_run"] == 0 and _points(out) == _points(full)


def _refused(r, *words):
    assert r.returncode == 2
    line = r.stderr.strip()
    assert "\n" not in line and "Traceback" not in line and all(w in line for w in words), line


def test_resume_with_another_or_a_changed_step_is_refused_in_one_line(folder, cli_inproc):
    res = folder / "r.jsonl"
    assert cli_inproc(*_sweep_args(folder), "--resume", res, "--h0", folder / "h0.pt").returncode == 0
    before = res.read_text()
    (folder / "other.py").write_text(STEP_FILE)  # the same code in another file: another step
    _refused(cli_inproc(*_sweep_args(folder, "other.py:Cell"), "--resume", res, "--h0", folder / "h0.pt"),
             f"--resume {res}", "another step", "cell.py:Cell", "other.py:Cell")
    _refused(cli_inproc(*_sweep_args(folder), "--resume", res), f"--resume {res}", "began with --h0 h0.pt")
    torch.save(torch.zeros(2, H, dtype=torch.float64), folder / "h0.pt")
    _refused(cli_inproc(*_sweep_args(folder), "--resume", res, "--h0", folder / "h0.pt"), f"--resume {res}",
             "--h0 h0.pt changed since the sweep began")
    with open(folder / "cell.py", "a") as fh:
        fh.write("\n# edited\n")  # one comment more: other bytes
    _refused(cli_inproc(*_sweep_args(folder), "--resume", res, "--h0", folder / "h0.pt"), f"--resume {res}",
             f"the step file {folder}/cell.py changed since the sweep began")
    _refused(cli_inproc("sweep", "--cell", "rnn", "--vary", "seq_len=10,20", "--quiet", "--resume", res),
             f"--resume {res}", "belongs to a sweep of your step", "cell.py:Cell")
    assert res.read_text() == before  # nothing appended by a refused sweep
    builtin = folder / "b.jsonl"
    assert cli_inproc("sweep", "--cell", "rnn", "--vary", "seq_len=10,20", "--hidden-size", 4, "--batch-size", 2,
                      "--quiet", "--resume", builtin).returncode == 0
    _refused(cli_inproc(*_sweep_args(folder), "--resume", builtin), f"--resume {builtin}",
             "belongs to a sweep of the built-in cells")


def test_over_the_limits_exits_2_naming_the_total(folder, cli_inproc):
    out = folder / "s.json"
    r = cli_inproc("sweep", "--step", f"{folder}/cell.py:Cell", "--vary", "seq_len=100:400:4", "--seeds", 3,
                   "--quiet", "--json", out, env={"GDLAB_MAX_GFLOP": "0.001"})
    assert r.returncode == 2 and not out.exists()
    assert "12 runs" in r.stderr and "GFLOP in all" in r.stderr and "\n" not in r.stderr.strip(), r.stderr


def _atlas(monkeypatch, folder=None):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest
    for k in ("GDLAB_STEP", "GDLAB_STEP_STATE", "GDLAB_STEP_H0"):
        monkeypatch.delenv(k, raising=False)
    if folder is not None:
        monkeypatch.setenv("GDLAB_STEP", f"{folder}/cell.py:Cell")
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py"), default_timeout=120)
    for k, v in {"seq_len": "12", "batch_size": "3", "task": "random", "dtype": "float64", "compare": "rnn"}.items():
        at.query_params[k] = v
    at.run()
    at.session_state["view"] = "Atlas"
    return at.run()


def test_atlas_offers_your_cell_and_draws_analyze_numbers(folder, monkeypatch):
    at = _atlas(monkeypatch)
    assert "own" not in at.selectbox(key="atlas").options and "Your cell" not in at.selectbox(key="atlas").options
    at = _atlas(monkeypatch, folder)
    assert "Your cell" in at.selectbox(key="atlas").options
    at.selectbox(key="atlas").set_value("own").run()
    at.text_input(key="atlas_own_s1_seq_len").set_value("12,24").run()
    at.number_input(key="atlas_own_seeds").set_value(1).run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    assert at.button(key="atlas_run").label == "Run the sweep of your cell (2 runs)"
    at.button(key="atlas_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    spec = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                if json.loads(c.proto.spec)["layout"].get("meta", {}).get("view") == "atlas")
    d = spec["layout"]["meta"]["sweep"]
    assert d["axes"] == {"seq_len": [12, 24]} and d["metrics"] == ["lyapunov_max", "memory_horizon", "grad_ratio"]
    cell = _cell(folder)

    def want(p):
        x = make_batch("random", p["seq_len"], 3, seed=p["seed"], input_size=I, dtype=torch.float64).inputs
        return _metrics(analyze(cell, x, h0=torch.zeros(3, H, dtype=torch.float64), seed=p["seed"],
                                dtype="float64"))
    _check(d["points"], want, d["metrics"])
    at.selectbox(key="atlas_own_f1").set_value("batch_size").run()  # another axis: its own button
    assert not at.exception and at.button(key="atlas_run").label.startswith("Run the sweep of your cell")
