"""The command line end to end: `python -m analysis run/train`, the JSON contract, one-line errors. The first test
runs a real `python -m analysis` process; the others call its main() in this process (conftest.run_main)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "analysis", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_run_writes_the_json_contract(tmp_path):
    out = tmp_path / "out.json"
    p = cli("run", "--cell", "lstm", "--seq-len", 40, "--hidden-size", 16, "--json", out)
    assert p.returncode == 0, p.stderr
    d = json.loads(out.read_text())
    c = d["config"]
    assert c["cell"] == "lstm" and c["seq_len"] == 40 and c["input_size"] == 8  # resolved
    assert len(d["grad_norm"]) == 40 and d["grad_norm"][-1] == pytest.approx(1.0, abs=1e-5)
    j = d["jacobian"]
    assert j["lag"] == list(range(40)) and len(j["spectral_norm"]) == 40 and j["spectral_norm"][0] == pytest.approx(1)
    assert len(j["min_singular_value"]) == 40 and len(j["singular_values"][5]) == 8
    assert set(d["cell_flow"]) >= {"full", "carousel"} and len(d["cell_flow"]["carousel"]) == 40
    assert set(d["spectral_radius"]) == {"i", "f", "g", "o"}
    assert "memory_horizon" in d and d["nonfinite"] is None


@pytest.mark.parametrize("args,field", [
    (["--cell", "foo"], "--cell"),
    (["--hidden-size", "0"], "hidden_size"),
    (["--init-scale", "-1"], "init_scale"),
    (["--task", "copy", "--seq-len", "10"], "seq_len"),
    (["--task", "adding", "--input-size", "3"], "input_size"),
    (["--load-state-dict", "/nonexistent.pt"], "state_dict_path"),
    (["--inputs", "/nonexistent.npy"], "inputs"),
    (["--config", "/nonexistent.json"], "--config"),
])
def test_bad_input_one_line_nonzero_and_nothing_written(tmp_path, args, field, cli_inproc):
    out = tmp_path / "out.json"
    p = cli_inproc("run", *args, "--json", out)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], p.stderr
    assert not out.exists()


def test_config_file_with_flag_override(tmp_path, cli_inproc):
    cli = cli_inproc
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"cell": "gru", "seq_len": 30, "hidden_size": 8}))
    out = tmp_path / "o.json"
    assert cli("run", "--config", cfg, "--seq-len", 12, "--json", out).returncode == 0
    c = json.loads(out.read_text())["config"]
    assert (c["cell"], c["seq_len"], c["hidden_size"]) == ("gru", 12, 8)
    # a result file is also a config
    out2 = tmp_path / "o2.json"
    assert cli("run", "--config", out, "--json", out2).returncode == 0
    assert json.loads(out2.read_text())["config"] == c


def test_load_state_dict_of_a_torch_lstm_matches_torch(tmp_path, cli_inproc):
    cli = cli_inproc
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(5, 12, num_layers=2)
    path = tmp_path / "lstm.pt"
    torch.save(lstm.state_dict(), path)
    x = torch.randn(20, 3, 5)
    np.save(tmp_path / "x.npy", x.numpy())
    out = tmp_path / "o.json"
    p = cli("run", "--load-state-dict", path, "--inputs", tmp_path / "x.npy", "--dtype", "float64", "--json", out)
    assert p.returncode == 0, p.stderr
    d = json.loads(out.read_text())
    c = d["config"]
    assert (c["cell"], c["hidden_size"], c["num_layers"], c["input_size"], c["seq_len"], c["batch_size"]) == \
        ("lstm", 12, 2, 5, 20, 3)
    # reference: torch.nn.LSTMCell per layer with the file's weights; d(u . h^2_{T-1})/dh^2_t for every t
    from analysis.tasks import random_readout
    u = random_readout(12, c["seed"] + 1, torch.float64)
    sd = {k: v.double() for k, v in torch.load(path).items()}
    cells = []
    for l in range(2):
        cell = torch.nn.LSTMCell(5 if l == 0 else 12, 12).double()
        cell.load_state_dict({k: sd[f"{k}_l{l}"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
        cells.append(cell)
    states = [(torch.zeros(3, 12, dtype=torch.float64),) * 2 for _ in range(2)]
    tops = []
    for t in range(20):
        inp = x[t].double()
        for l, cell in enumerate(cells):
            h, cc = cell(inp, states[l])
            h = h.view_as(h)  # a node of its own, so its gradient is the total dL/dh_t
            states[l] = (h, cc)
            inp = h
        tops.append(inp)
    grads = torch.autograd.grad((tops[-1] @ u).sum(), tops)
    ref = [float(torch.exp(torch.log(g.norm(dim=-1)).mean())) for g in grads]  # geometric mean over the batch
    np.testing.assert_allclose(d["grad_norm"], ref, rtol=1e-9)
    assert ref[0] < 0.5 * ref[-1]  # the comparison covers real propagation, not only the trivial last step


def test_train_command_prints_steps_and_writes_history(tmp_path, cli_inproc):
    cli = cli_inproc
    out = tmp_path / "t.json"
    p = cli("train", "--cell", "rnn", "--task", "adding", "--seq-len", 20, "--hidden-size", 8, "--train-steps", 5,
            "--clip", "norm", "--clip-threshold", 0.01, "--json", out)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("step ") == 5 and "clipped" in p.stdout
    d = json.loads(out.read_text())
    assert len(d["steps"]) == 5 and d["chance_loss"] == pytest.approx(1 / 6)
    assert all(s["clipped"] for s in d["steps"])


def test_run_with_truncation_bidirectional_and_layers(tmp_path, cli_inproc):
    cli = cli_inproc
    out = tmp_path / "o.json"
    p = cli("run", "--cell", "gru", "--seq-len", 30, "--hidden-size", 8, "--num-layers", 2, "--bidirectional",
            "--truncate", 10, "--json", out)
    assert p.returncode == 0, p.stderr
    d = json.loads(out.read_text())
    assert len(d["grad_norm_per_layer"]) == 2 and len(d["grad_norm_per_direction"]) == 2
    assert d["jacobian_backward"] is not None
    tr = d["grad_norm_truncated"]
    assert all(v == 0 for v in tr[:20]) and all(v > 0 for v in tr[20:])


def test_device_cuda_without_gpu_is_one_line_error(capsys):
    import torch
    from analysis.__main__ import main
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible")
    rc = main(["run", "--seq-len", "5", "--hidden-size", "4", "--device", "cuda"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "device" in err


def test_device_auto_runs_on_cpu_with_a_note(tmp_path):
    import json
    import torch
    from analysis.__main__ import main
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible")
    out = tmp_path / "r.json"
    assert main(["run", "--seq-len", "5", "--hidden-size", "4", "--device", "auto", "--threads", "1",
                 "--spectra", "fast", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert any("ran on cpu" in n for n in d["notes"]) and d["config"]["spectra"] == "fast"


def test_summary_gives_a_norm_below_floats_range_from_its_log10(tmp_path):
    """||dL/dh_0|| of 10^-466 is 0 as a float: the summary says the exact log10 (it printed 't=0 0')."""
    from analysis.__main__ import main
    from conftest import run_main
    out = tmp_path / "r.json"
    args = ["run", "--cell", "rnn", "--init", "spectral", "--init-scale", 0.01, "--hidden-size", 4, "--seq-len", 200,
            "--batch-size", 2, "--views", "gradients"]
    assert run_main(main, args + ["--json", out]).returncode == 0
    d = json.loads(out.read_text())
    p = run_main(main, args)  # the summary on stdout (--json writes the file instead)
    assert p.returncode == 0, p.stderr
    assert d["grad_norm"][0] == 0 and d["log10_grad_norm"][0] < -308
    assert f"t=0 10^{d['log10_grad_norm'][0]:.4g} (below float's range" in p.stdout, p.stdout


def test_run_compare_runs_every_cell(tmp_path):
    """--compare was read and then only the first cell was run: every cell now, each equal to its solo run."""
    from analysis.__main__ import main
    from conftest import run_main
    base = ["run", "--seq-len", 10, "--hidden-size", 4, "--batch-size", 3, "--views", "gradients"]
    assert run_main(main, base + ["--compare", "rnn,lru", "--json", tmp_path / "c.json"]).returncode == 0
    both = json.loads((tmp_path / "c.json").read_text())
    assert both["comparison"] == ["rnn", "lru"] and set(both["results"]) == {"rnn", "lru"}
    for cell in ("rnn", "lru"):
        assert run_main(main, base + ["--cell", cell, "--json", tmp_path / f"{cell}.json"]).returncode == 0
        solo = json.loads((tmp_path / f"{cell}.json").read_text())
        assert both["results"][cell]["grad_norm"] == solo["grad_norm"] and both["results"][cell]["config"]["cell"] == cell
    p = run_main(main, base + ["--compare", "rnn,lru"])
    assert "== rnn ==" in p.stdout and "== lru ==" in p.stdout and "lru (linear" in p.stdout
