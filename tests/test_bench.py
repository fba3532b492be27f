"""benchmarks/bench.py runs end to end at the smallest size and prints its table (no timing is asserted)."""
import importlib.util
import json
import signal
from pathlib import Path

import pytest
import torch

from conftest import run_main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def bench(monkeypatch):
    """benchmarks/bench.py as a module of this process (its parts import as they do when it runs as a script)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_in_test", ROOT / "benchmarks" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_quick_runs_and_prints_the_table(tmp_path, bench):
    """main() in this process (a fresh interpreter cost ~3 s of torch's import and teardown here; its (e) column
    still runs run_experiment in a fresh process of its own). What main() sets for the whole process is put back:
    run_main restores the limits, threads and dtype; here also flush-denormal (off in every test) and SIGTERM."""
    out_json = tmp_path / "bench.json"
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        p = run_main(bench.main, ["--quick", "--cells", "rnn", "--skip-long", "--no-profile", "--skip-view",
                                  "--json", out_json])
    finally:
        torch.set_flush_denormal(False)
        signal.signal(signal.SIGTERM, sigterm)
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout
    header = next((line for line in out.splitlines() if line.split()[:3] == ["cell", "T", "H"]), None)
    assert header is not None, out
    for col in ("(a) ms", "fused/(a)", "(b)/(a)", "(c)/(a)", "(c_all)/(a)", "(d)/(c)", "(e) ms", "(e) RSS MiB"):
        assert col in header, col
    assert any(line.split()[:3] == ["rnn", "64", "32"] for line in out.splitlines()), out
    assert "targets:" in out and "(b)/(a) <= 1.3" in out and "(d)/(c) >= 50" in out
    assert "training >= 15 steps/s (rnn)" in out
    assert "long case peak RSS" in out  # reported as skipped
    assert "Traceback" not in p.stderr

    doc = json.loads(out_json.read_text())
    (r,) = doc["rows"]
    assert (r["cell"], r["T"], r["H"], r["B"]) == ("rnn", 64, 32, 16)
    for key in ("a_s", "fused_s", "b_s", "c_s", "b_over_a", "c_over_a", "fused_over_a"):
        assert r[key] > 0, key
    assert r["c_lags"] >= 2 and r["c_batch"] >= 1
    # the naive reference computes the same quantity as the engine
    chk = r["d_check"]
    assert abs(chk["naive_log10_sigma_max"] - chk["engine_log10_sigma_max"]) < 1e-3
    assert doc["long_case"] is None


def test_bench_rejects_bad_flags(capsys, bench):
    """The flags are checked before anything runs."""
    with pytest.raises(SystemExit) as e:
        bench.parse_args(["--cells", "tcn"])
    assert e.value.code == 2 and "--cells" in capsys.readouterr().err
