"""Calibrate analysis/limits.py: estimated vs measured peak memory and time of run_experiment, one fresh process
per config (peak RSS of the child minus its RSS after imports).  ``python -m benchmarks.calibrate_limits``

Prints one line per config: estimate MB, measured MB, ratio (estimate / measured, want >= ~0.8), GFLOP, seconds,
and the implied GFLOP/s. No asserts on time.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r})
import torch, numpy
from analysis.config import ExperimentConfig
from analysis.experiment import run_experiment
import analysis.limits as lim
lim.configure(lim.Limits(None, None, "calibration"))
cfg = ExperimentConfig.from_dict(json.loads(sys.argv[1]))
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
base = rss()
t = time.perf_counter()
run_experiment(cfg)
dt = time.perf_counter() - t
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) * 1024  # own peak
print(json.dumps({{"base": base, "peak": peak, "seconds": dt}}))
"""

CONFIGS = [
    dict(cell="rnn", seq_len=2000, hidden_size=64, batch_size=64, jacobian_lags="log"),
    dict(cell="lstm", seq_len=1000, hidden_size=64, batch_size=64, jacobian_lags="log"),
    dict(cell="gru", seq_len=1000, hidden_size=64, batch_size=64, jacobian_lags="log"),
    dict(cell="rnn", seq_len=300, hidden_size=128, batch_size=16, dtype="float64"),
    dict(cell="lstm", seq_len=200, hidden_size=128, batch_size=16),
    dict(cell="gru", seq_len=200, hidden_size=128, batch_size=16, num_layers=2, bidirectional=True),
    dict(cell="lstm", seq_len=3000, hidden_size=32, batch_size=256, jacobian_batch=4, jacobian_lags="log"),
    dict(cell="rnn", seq_len=100, hidden_size=64, batch_size=16, layer_norm=True),
    dict(cell="rnn", seq_len=20000, hidden_size=32, batch_size=32, jacobian_batch=2, jacobian_lags="log"),
    # the diagonal cells, on the backprop route (a loss at every step: autograd's graph is kept)
    *(dict(cell=c, seq_len=2000, hidden_size=64, batch_size=64, jacobian_lags="log", loss_steps="all")
      for c in ("lru", "rglru", "mingru", "minlstm")),
]


def measure(d: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), json.dumps(d)], capture_output=True,
                         text=True, timeout=900, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from analysis.config import ExperimentConfig
    from analysis.limits import estimate
    print(f"{'config':<70} {'est MB':>8} {'meas MB':>8} {'ratio':>6} {'GFLOP':>8} {'s':>7} {'GFLOP/s':>8}")
    for d in CONFIGS:
        cfg = ExperimentConfig(**d)
        c = estimate(cfg)
        m = measure(d)
        used = (m["peak"] - m["base"]) / 2**20 + 64
        print(f"{json.dumps(d)[:70]:<70} {c.memory_mb:8.0f} {used:8.0f} {c.memory_mb / used:6.2f} {c.gflop:8.1f} "
              f"{m['seconds']:7.2f} {c.gflop / m['seconds']:8.1f}", flush=True)


if __name__ == "__main__":
    main()
