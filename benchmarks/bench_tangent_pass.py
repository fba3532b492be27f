r"""The sensitivity view's tangent pass (analysis.tangent_pass) against the per-step route it replaced, on the
curse-of-memory preset's runs (a linear RNN and an LRU, T=500, H=32, B=16, r = 0.99): the same tangents, the same
states, interleaved repeats, as a ratio in one run.

    python benchmarks/bench_tangent_pass.py                 # 3 repeats, one intra-op thread
    python benchmarks/bench_tangent_pass.py --repeats 1

    numerator     analysis.param_sensitivity (windowed source terms + the cell's own vjp_steps().jvp per step)
    denominator   the same blocks with every step one vmap(vmap(jvp(functional_call(step)))) (``per_step_pass``,
                  the route before 2026-12-03, kept here as the reference)
    target        <= 0.5x (measured 0.21-0.25x for the RNN, 0.10x for the LRU on the 2-core machine)

The two must agree (log10 S_t and every block, to 1e-12); times are medians, never asserted (benchmarks/README.md).
Each line also gives the tool's own estimate of the pass (``sensitivity_cost`` at GFLOP_PER_S, what the page and the
host limits use) against the measured time.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call, jvp, vmap

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import analysis.tangent_pass as tp  # noqa: E402
from analysis.param_sensitivity import layer_input, param_sensitivity  # noqa: E402
from analysis.tangent_pass import log10_sq_norm  # noqa: E402

TARGET = 0.5


def per_step_pass(step, name, p0, V, per_seq, inputs, states, tick=None, summed=False):
    """The reference: u_t = J_state u_{t-1} + J_theta v, each step one vmapped jvp of the whole step."""
    N, T = V.shape[0], len(inputs)
    B = states[0][0].shape[0]
    key = f"cell.{name}"
    inputs = [v.to(torch.float64) for v in inputs]
    states = [tuple(s.to(torch.float64).clone() for s in st) for st in states]

    def one(v, c, u, inp, s):
        def f(p, s_):
            out = functional_call(step, {key: p}, (inp.unsqueeze(0), tuple(q.unsqueeze(0) for q in s_)))
            return tuple(q.squeeze(0) for q in out)
        return jvp(f, (p0, s), (v * c, u))[1]

    g = vmap(vmap(one, in_dims=(0 if per_seq else None, 0, 0, 0, 0)), in_dims=(0, 0, 0, None, None))
    u = tuple(torch.zeros(N, B, s.shape[-1], dtype=torch.float64) for s in states[0])
    ls = torch.zeros(N, B, dtype=torch.float64)
    out = torch.empty(N, B, T, dtype=torch.float64)
    for s in range(T):
        u = g(V, torch.pow(10.0, -ls), u, inputs[s], states[s])
        r = torch.stack([q.abs().amax(-1) for q in u]).amax(0)
        r = torch.where((r > 0) & torch.isfinite(r), r, torch.ones_like(r))
        u = tuple(q / r.unsqueeze(-1) for q in u)
        ls = ls + torch.log10(r)
        out[:, :, s] = log10_sq_norm(u[0]) + 2 * ls
        if tick is not None:
            tick(N)
    return (tp.log10_sum(out, 0), None) if summed else (out, None)


def runs():
    """The preset's two runs (r = 0.99) with their inputs, as the comparison analyses them, and the tool's estimate
    of each pass (seconds)."""
    from analysis.experiment import TaskModel, resolve
    from analysis.limits import GFLOP_PER_S
    from analysis.param_sensitivity import sensitivity_cost
    from analysis.presets import PRESETS
    out = []
    for cell in ("rnn", "lru"):
        c, batch, _ = resolve(PRESETS["curse-of-memory"].config.for_cell(cell))
        model = TaskModel(c, batch.spec, c.input_size)
        with torch.no_grad():
            trace, _ = model(batch.inputs)
        estimate = sensitivity_cost(c, cell, c.input_size)[1] / (GFLOP_PER_S * 1e9)
        out.append((cell, trace.runs[0][0], layer_input(trace.runs, 0, batch.inputs), estimate))
    return out


def timed(run, x, route):
    original = tp.tangent_pass
    tp.tangent_pass = route or original
    try:
        t = time.perf_counter()
        r = param_sensitivity(run, x=x)
        return time.perf_counter() - t, r
    finally:
        tp.tangent_pass = original


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats of each route (default 3)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    for cell, run, x, estimate in runs():
        timed(run, x, None), timed(run, x, per_step_pass)  # torch.func's first use, outside the timing
        new, old = [], []
        for _ in range(a.repeats):
            t_new, r_new = timed(run, x, None)
            t_old, r_old = timed(run, x, per_step_pass)
            new.append(t_new), old.append(t_old)
        pairs = [(r_new.log10_sensitivity, r_old.log10_sensitivity)] + [
            (b["log10_sensitivity"], r_old.blocks[n]["log10_sensitivity"]) for n, b in r_new.blocks.items()]
        # where one is -inf (h_0 does not depend on lambda) the other must be too; elsewhere the difference
        assert all(np.array_equal(np.isfinite(a), np.isfinite(b)) for a, b in pairs)
        err = max(float(np.abs(a[np.isfinite(a)] - b[np.isfinite(b)]).max()) for a, b in pairs)
        ratio = statistics.median(new) / statistics.median(old)
        print(f"{cell}: {r_new.method}; tangent pass {statistics.median(new):.3f} s, per-step route "
              f"{statistics.median(old):.3f} s: {ratio:.2f}x (target <= {TARGET}x: "
              f"{'met' if ratio <= TARGET else 'NOT met'}); max |log10 difference| {err:.1e}; the tool's estimate "
              f"{estimate:.2f} s ({estimate / statistics.median(new):.1f}x the measured pass)")


if __name__ == "__main__":
    main()
