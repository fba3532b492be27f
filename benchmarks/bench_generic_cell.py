r"""Your own step's generic Jacobian path (analysis.own_cell: torch.func per-step Jacobians, dense products) against
the closed-form path on the same LSTM: the same weights, inputs and settings, the jacobian view.

    python benchmarks/bench_generic_cell.py                       # H=128, T=256, B=8, float32, 3 repeats
    python benchmarks/bench_generic_cell.py --H 64 --T 64 --repeats 1

    numerator     analyze(lstm_step, x, h0=..., params=..., views="jacobians")    (your own step, generic)
    denominator   analyze(nn.LSTM holding those weights, x, views="jacobians")  (the closed form)
    target        <= 3x

Both run jacobian_detail="exact" (every lag, every sequence). Interleaved repeats (closed, generic, closed, ...),
medians printed with each stage's share (result.timings: gradients, Jacobians); never asserted
(benchmarks/README.md). One intra-op thread (--threads N).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import analyze  # noqa: E402
from analysis.compute_views import ESTIMATE_SINK, estimate_seconds  # noqa: E402

TARGET = 3.0


def lstm_step(x, state, W_ih, W_hh, b_ih, b_hh):
    """torch.nn.LSTMCell's equations as a plain step (x_t, (h, c)) -> (h', c')."""
    h, c = state
    # [i, f, g, o] = W_ih x + b_ih + W_hh h + b_hh
    i, f, g, o = (x @ W_ih.T + b_ih + h @ W_hh.T + b_hh).chunk(4, -1)
    # c' = sigma(f) c + sigma(i) tanh(g);  h' = sigma(o) tanh(c')
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def run(H: int, T: int, B: int, I: int, dtype: str, repeats: int) -> dict:
    torch.manual_seed(0)
    lstm = nn.LSTM(I, H)
    params = {"W_ih": lstm.weight_ih_l0.detach(), "W_hh": lstm.weight_hh_l0.detach(),
              "b_ih": lstm.bias_ih_l0.detach(), "b_hh": lstm.bias_hh_l0.detach()}
    x = torch.randn(T, B, I)
    zeros = torch.zeros(B, H)
    kw = dict(views="jacobians", jacobian_detail="exact", dtype=dtype)
    calls = {"closed": lambda: analyze(lstm, x, **kw),
             "generic": lambda: analyze(lstm_step, x, h0=(zeros, zeros), params=params, **kw)}
    for f in calls.values():  # warm-up: imports, torch.func's first trace
        analyze(lstm, x[:4], views="jacobians", jacobian_detail="exact", dtype=dtype)
        analyze(lstm_step, x[:4], h0=(zeros, zeros), params=params, views="jacobians", jacobian_detail="exact",
                dtype=dtype)
        break
    costs = {}
    times = {k: [] for k in calls}
    stages = {k: [] for k in calls}
    results = {}
    for _ in range(repeats):
        for k, f in calls.items():
            token = ESTIMATE_SINK.set(lambda c, k=k: costs.__setitem__(k, c))  # the tool's estimate, announced
            try:
                t = time.perf_counter()
                r = f()
                times[k].append(time.perf_counter() - t)
            finally:
                ESTIMATE_SINK.reset(token)
            stages[k].append((r.timings["gradients_s"], r.timings["jacobians_s"]))
            results[k] = r
    med = {k: statistics.median(v) for k, v in times.items()}
    st = {k: tuple(statistics.median(s[i] for s in v) for i in range(2)) for k, v in stages.items()}
    diff = float(abs(torch.tensor(results["generic"].jac.spectral_norm - results["closed"].jac.spectral_norm)).max())
    return {"H": H, "T": T, "B": B, "dtype": dtype, "repeats": repeats, "closed_s": med["closed"],
            "generic_s": med["generic"], "ratio": med["generic"] / med["closed"], "stages": st,
            "max_log10_sigma_diff": diff, "method": results["generic"].jac.method, "costs": costs}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--H", type=int, default=128)
    p.add_argument("--T", type=int, default=256)
    p.add_argument("--B", type=int, default=8)
    p.add_argument("--I", type=int, default=32)
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    r = run(a.H, a.T, a.B, a.I, a.dtype, a.repeats)
    (cg, cj), (gg, gj) = r["stages"]["closed"], r["stages"]["generic"]
    print(f"LSTM H={r['H']} T={r['T']} B={r['B']} {r['dtype']}, jacobian view, exact, {a.threads} thread(s), "
          f"median of {r['repeats']} interleaved repeats")
    print(f"  closed form   {r['closed_s']:8.2f} s   (gradients {cg:.2f} s, Jacobians {cj:.2f} s)")
    print(f"  generic step  {r['generic_s']:8.2f} s   (gradients {gg:.2f} s, Jacobians {gj:.2f} s; {r['method']})")
    for k in ("closed", "generic"):
        c = r["costs"].get(k)
        if c is not None:
            print(f"  the tool's estimate ({k}): {c.gflop:,.1f} GFLOP, ~{estimate_seconds(c):,.1f} s, "
                  f"{c.memory_mb:,.0f} MB")
    met = "met" if r["ratio"] <= TARGET else "NOT met"
    print(f"  ratio         {r['ratio']:8.2f} x   target <= {TARGET:g}x: {met}")
    print(f"  max |log10 sigma_max difference| over lags: {r['max_log10_sigma_diff']:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
