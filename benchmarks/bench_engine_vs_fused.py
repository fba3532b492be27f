"""The engine against torch's fused forward+backward (issue 9's targets), as ratios measured in ONE run (2 shared
cores: compare ratios, not seconds).

    python benchmarks/bench_engine_vs_fused.py [--quick] [--long] [--json PATH]

Rows (each timed interleaved with its denominator, median of paired per-round ratios):
  grad      ||dL/dh_t|| with the exact log chain (the engine's gradient stage)  /  one fwd+bwd of the same model
            and / torch's fused fwd+bwd, per cell and size (H up to 512)                      target <= 1.5x
  preset    the dashboard's default preset, three cells, T=256 H=128 B=16, whole analysis (spectra exact and
            fast)  /  fused fwd+bwd of the three cells                                       target <= 6x (3x)
  first     --long: T=1000 H=256 three cells, only="gradients" / fused                         target <= 2x
  views     --long: the same, the whole analysis / fused                                      target <= 20x
  floor     the exact mode (every lag, every sequence), T=128 H=128 per cell: the Jacobian stage / the same torch
            calls bare (its arithmetic floor), and the floor / fused                          target <= 1.5x
  rss       --long: T=2000 H=256 LSTM in a fresh process, peak RSS                           target <= 1 GiB
  threads   the preset's three cells at threads=1 vs every core (cells side by side; intra-op threads are set once
            per process, so this is the engine's own pools and workers)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_child import dashboard_config  # noqa: E402
from bench_common import Plan, build, fused_module, fwd_bwd_fused, fwd_bwd_ours, measure_interleaved  # noqa: E402


def _grad_stage(cfg, batch, model):
    """What run_experiment(only='gradients') spends on ||dL/dh_t||: analysis.gradient_stage (the chain-only route
    for a last-step loss on one layer: a no-grad forward and the renormalized vector-Jacobian chain)."""
    from analysis.gradient_stage import gradient_stage

    def f():
        return gradient_stage(cfg, batch, model, loss_steps="last")[1]
    return f


def _ratio(samples, num, den) -> float:
    return statistics.median(x / y for x, y in zip(samples[num][2], samples[den][2]))


def grad_rows(cells, sizes, plan) -> list[dict]:
    rows = []
    for cell in cells:
        for T, H in sizes:
            cfg, batch, model = build(cell, T, H)
            mod = fused_module(cell, model)
            fns = {"grad": _grad_stage(cfg, batch, model), "ours": fwd_bwd_ours(model, batch.inputs),
                   "fused": fwd_bwd_fused(mod, model.readout, batch.inputs)}
            m = measure_interleaved(fns, plan)
            r = {"cell": cell, "T": T, "H": H, "grad_s": m["grad"][0], "fwdbwd_s": m["ours"][0],
                 "fused_s": m["fused"][0], "grad_over_fwdbwd": _ratio(m, "grad", "ours"),
                 "grad_over_fused": _ratio(m, "grad", "fused")}
            print(f"grad   {cell:5s} T={T:5d} H={H:4d}  grad {r['grad_s'] * 1e3:8.1f} ms  fwd+bwd "
                  f"{r['fwdbwd_s'] * 1e3:8.1f} ms  fused {r['fused_s'] * 1e3:8.1f} ms  grad/fwd+bwd "
                  f"{r['grad_over_fwdbwd']:5.2f}  grad/fused {r['grad_over_fused']:5.2f}", flush=True)
            rows.append(r)
    return rows


def _fused_three(T, H):
    fns = []
    for cell in ("rnn", "lstm", "gru"):
        cfg, batch, model = build(cell, T, H)
        fns.append(fwd_bwd_fused(fused_module(cell, model), model.readout, batch.inputs))
    return lambda: [f() for f in fns]


def preset_rows(T, H, plan, *, only_variants=(("exact", None), ("fast", None))) -> list[dict]:
    from analysis.experiment import run_comparison
    preset, src = dashboard_config()
    base = preset.replace(seq_len=T, hidden_size=H, batch_size=16, compare=("rnn", "lstm", "gru"))
    fused = _fused_three(T, H)
    rows = []
    for spectra, only in only_variants:
        cfg = base.replace(spectra=spectra)
        m = measure_interleaved({"run": lambda: run_comparison(cfg, only=only), "fused": fused}, plan)
        r = {"what": f"preset T={T} H={H} spectra={spectra} only={only}", "run_s": m["run"][0],
             "fused_s": m["fused"][0], "ratio": _ratio(m, "run", "fused"), "preset": src}
        print(f"preset {r['what']:45s} {r['run_s']:7.2f} s  fused {r['fused_s'] * 1e3:7.1f} ms  "
              f"ratio {r['ratio']:6.1f}x", flush=True)
        rows.append(r)
    return rows


def _floor_fn(run, b: int, lags: list[int], n_lyap: int):
    """The raw arithmetic of the exact mode as bare torch calls on the same data, serially: per chunk of steps the
    cell's per-step Jacobian pieces (``_ChunkSteps``: dense J for the GRU, [A; C] and the diagonals for the
    LSTM, phi' for the RNN), per step the product P J, its Frobenius norm and rescale, the Lyapunov product
    J^T Q and its QR, and per reported lag the spectra the engine reports (svdvals of the h->h block; for the
    LSTM the Gram matrices' eigenvalues of the state and c->c). No bookkeeping, no pool, no progress."""
    from analysis.jacobians import _ChunkSteps, _stack_states
    T = len(run.xp)
    H = run.cell.hidden_size
    lstm = len(run.states[0]) == 2
    S = 2 * H if lstm else H
    idx = torch.arange(b)
    lagset = set(lags)
    dtype = run.xp[0].dtype

    def f():
        P = torch.eye(S, dtype=dtype).expand(b, S, S).clone()
        Q = torch.eye(S, n_lyap, dtype=dtype).expand(b, S, n_lyap).clone()
        k, t_hi = 0, T - 1
        while t_hi >= 1:
            t_lo = max(1, t_hi - 63)
            steps = _ChunkSteps(run.cell, *_stack_states(run, t_lo, t_hi + 1, idx))
            for c in range(len(steps) - 1, -1, -1):
                k += 1
                P = steps.right(c, P)
                P = P / torch.linalg.matrix_norm(P).view(b, 1, 1)
                Q = torch.linalg.qr(steps.left_t(c, Q)).Q
                if k in lagset:
                    torch.linalg.svdvals(P[:, :H, :H])
                    if lstm:
                        torch.linalg.eigvalsh(P.mT @ P)
                        torch.linalg.eigvalsh(P[:, H:, H:].mT @ P[:, H:, H:])
            t_hi = t_lo - 1
    return f


def _engine_and_floor(cell: str, T: int, H: int, b: int, lags_mode: str, plan) -> dict:
    from analysis.experiment import _detached
    from analysis.jacobians import jacobian_products, report_lags
    from analysis.progress import hardware_threads
    cfg, batch, model = build(cell, T, H)
    with torch.no_grad():
        trace, _ = model(batch.inputs)
    run = _detached(trace.runs[0][0])
    lags = report_lags(T, lags_mode, cfg.num_log_lags)
    kw = dict(lags=lags, batch=b, n_singular=cfg.n_singular, lyapunov_k=cfg.lyapunov_k)
    fns = {"engine1": lambda: jacobian_products(run, threads=1, **kw),
           "engine": lambda: jacobian_products(run, threads=hardware_threads(), **kw),
           "floor": _floor_fn(run, b, lags, min(cfg.lyapunov_k, 2 * H if cell == "lstm" else H)),
           "fused": fwd_bwd_fused(fused_module(cell, model), model.readout, batch.inputs)}
    m = measure_interleaved(fns, plan)
    return {"cell": cell, "T": T, "H": H, "b": b, "lags": len(lags), "engine1_s": m["engine1"][0],
            "engine_s": m["engine"][0], "floor_s": m["floor"][0], "fused_s": m["fused"][0],
            "engine1_over_floor": _ratio(m, "engine1", "floor"), "engine_over_floor": _ratio(m, "engine", "floor"),
            "floor_over_fused": _ratio(m, "floor", "fused"), "engine_over_fused": _ratio(m, "engine", "fused")}


def floor_rows(plan, T: int = 128, H: int = 128) -> list[dict]:
    """Exact mode (every lag, every sequence): the engine's Jacobian stage, at one thread and at every core,
    against the floor of its own arithmetic on the same data (``_floor_fn``), and against torch's fused
    forward+backward."""
    rows = []
    for cell in ("rnn", "lstm", "gru"):
        r = _engine_and_floor(cell, T, H, 16, "all", plan)
        print(f"floor  {cell:5s} T={T} H={H} every lag, B=16: engine 1 thread {r['engine1_s']:.2f} s, every core "
              f"{r['engine_s']:.2f} s  floor {r['floor_s']:.2f} s  engine/floor {r['engine1_over_floor']:.2f} "
              f"(every core {r['engine_over_floor']:.2f})  floor/fused {r['floor_over_fused']:.0f}x", flush=True)
        rows.append(r)
    return rows


def preset_floor_row(plan, T: int = 256, H: int = 128) -> dict:
    """The default preset's Jacobian arithmetic (4 sequences, its log-spaced lags) as bare calls, summed over the
    three cells, against the fused forward+backward of the three: how far below 6x exact spectra can go."""
    rows = [_engine_and_floor(cell, T, H, 4, "log", plan) for cell in ("rnn", "lstm", "gru")]
    floor = sum(r["floor_s"] for r in rows)
    fused = sum(r["fused_s"] for r in rows)
    out = {"floor_s": floor, "fused_s": fused, "floor_over_fused": floor / fused, "cells": rows}
    eng = sum(r["engine1_s"] for r in rows)
    out["engine1_s"] = eng
    print(f"pfloor preset T={T} H={H}: its Jacobian arithmetic as bare calls {floor:.2f} s serial = "
          f"{floor / fused:.1f}x fused; the engine's own Jacobian stage at one thread {eng:.2f} s = "
          f"{eng / fused:.1f}x fused (spread ideally over 2 cores: {eng / fused / 2:.1f}x, plus the gradient pass)",
          flush=True)
    return out


def rss_row(timeout_s: float = 600.0) -> dict:
    """T=2000, H=256 LSTM, the engine's defaults but log-spaced lags (the dashboard's), in a fresh process: peak
    RSS (VmHWM) and whether the float32 values stayed finite in log space."""
    from bench_child import experiment_config_for, run_child
    cfg = experiment_config_for("lstm", 2000, 256).replace(jacobian_lags="log")
    out = run_child({"kind": "experiment", "config": cfg.to_dict(), "repeats": 1}, timeout_s)
    if "error" in out:
        print(f"rss    LSTM T=2000 H=256: {out['error']}", flush=True)
        return out
    mib = out["peak_rss_kib"] / 1024
    print(f"rss    LSTM T=2000 H=256 float32: peak RSS {mib:.0f} MiB, wall {out['times_s'][0]:.1f} s, "
          f"||dL/dh_t|| finite in log space {out['grad_norm_finite']}, spectral norms finite "
          f"{out['spectral_norm_finite']}", flush=True)
    out["peak_rss_mib"] = mib
    return out


def thread_rows(plan, T: int = 256, H: int = 128) -> dict:
    """The default preset's three cells with threads=1 (one cell after the other, spectra inline) against every
    core (cells side by side, spectra in each cell's pool)."""
    from analysis.experiment import run_comparison
    from analysis.progress import hardware_threads
    n = hardware_threads()
    preset, _ = dashboard_config()
    cfg = preset.replace(seq_len=T, hidden_size=H, batch_size=16, compare=("rnn", "lstm", "gru"))
    m = measure_interleaved({"one": lambda: run_comparison(cfg.replace(threads=1)),
                             "all": lambda: run_comparison(cfg.replace(threads=n))}, plan)
    r = {"threads_all": n, "one_s": m["one"][0], "all_s": m["all"][0], "speedup": _ratio(m, "one", "all")}
    print(f"threads preset T={T} H={H} three cells: 1 thread {r['one_s']:.2f} s, {n} threads {r['all_s']:.2f} s, "
          f"speedup {r['speedup']:.2f}x", flush=True)
    return r


def verdicts(grad, preset, long, floor=(), rss=None) -> list[str]:
    out = []
    worst = max(grad, key=lambda r: r["grad_over_fwdbwd"])
    out.append(f"gradient norms <= 1.5x fwd+bwd (every cell/size): worst {worst['grad_over_fwdbwd']:.2f}x "
               f"({worst['cell']} T={worst['T']} H={worst['H']}) -> {'met' if worst['grad_over_fwdbwd'] <= 1.5 else 'NOT met'}")
    for r in preset:
        out.append(f"{r['what']}: {r['ratio']:.1f}x fused (target 6x, moonshot 3x) -> "
                   f"{'met' if r['ratio'] <= 6 else 'NOT met'}")
    for r in long:
        tgt = 2 if "only=gradients" in r["what"] else 20
        out.append(f"{r['what']}: {r['ratio']:.1f}x fused (target {tgt}x) -> {'met' if r['ratio'] <= tgt else 'NOT met'}")
    for r in floor:
        out.append(f"exact mode {r['cell']} T={r['T']} H={r['H']}: {r['engine1_over_floor']:.2f}x its arithmetic floor "
                   f"at one thread, {r['engine_over_floor']:.2f}x at every core (target 1.5x; the floor is "
                   f"{r['floor_over_fused']:.0f}x fused) -> {'met' if r['engine1_over_floor'] <= 1.5 else 'NOT met'}")
    if rss and "peak_rss_mib" in rss:
        ok = rss["peak_rss_mib"] <= 1024 and rss["grad_norm_finite"] and rss["spectral_norm_finite"]
        out.append(f"T=2000 H=256 LSTM: peak RSS {rss['peak_rss_mib']:.0f} MiB (target <= 1024), finite in log space "
                   f"-> {'met' if ok else 'NOT met'}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smallest sizes only")
    p.add_argument("--long", action="store_true", help="also T=1000, H=256 (minutes)")
    p.add_argument("--skip-threads", action="store_true")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads for the whole run (default 1: 2 OpenMP threads on 2 busy shared cores "
                        "stall 10-50x; 0 = every core)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    from analysis.progress import init_threads
    init_threads(a.threads)
    torch.set_flush_denormal(True)
    plan = Plan(max_reps=7, min_reps=3, budget_s=2.0)
    sizes = [(64, 32)] if a.quick else [(256, 128), (256, 256), (128, 512)]
    t0 = time.perf_counter()
    grad = grad_rows(("rnn", "lstm", "gru"), sizes, plan)
    preset = preset_rows(64, 32, plan) if a.quick else preset_rows(256, 128, plan)
    long = []
    if a.long:
        long = preset_rows(1000, 256, Plan(max_reps=1, min_reps=1, budget_s=0, once_s=0),
                           only_variants=(("exact", "gradients"), ("exact", None)))
    threads = None if a.skip_threads else (thread_rows(plan, 64, 32) if a.quick else thread_rows(plan))
    floor = floor_rows(plan, 32, 16) if a.quick else floor_rows(plan)
    pfloor = preset_floor_row(plan, 64, 32) if a.quick else preset_floor_row(plan)
    rss = rss_row() if a.long else None
    print("targets:")
    for line in verdicts(grad, preset, long, floor, rss):
        print("  " + line)
    print(f"(one run, {time.perf_counter() - t0:.0f} s; intra-op threads {torch.get_num_threads()})")
    if a.json:
        Path(a.json).write_text(json.dumps({"grad": grad, "preset": preset, "long": long, "threads": threads,
                                            "floor": floor, "preset_floor": pfloor, "rss": rss}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
