"""benchmarks/bench.py runs end to end at the smallest size and prints its table (no timing is asserted)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick_runs_and_prints_the_table(tmp_path):
    out_json = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--quick", "--cells", "rnn", "--skip-long",
           "--no-profile", "--skip-view", "--json", str(out_json)]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
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


def test_bench_rejects_bad_flags(capsys, monkeypatch):
    """The flags are checked before anything runs: parse_args in this process (a fresh interpreter costs ~1.5 s)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # bench.py's own parts import as it does
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_flags_check", ROOT / "benchmarks" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    with pytest.raises(SystemExit) as e:
        bench.parse_args(["--cells", "tcn"])
    assert e.value.code == 2 and "--cells" in capsys.readouterr().err
