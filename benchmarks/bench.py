"""Performance benchmark of the gradient-dynamics lab: prints ratios, never asserts times.

    python benchmarks/bench.py                    # the full table (about 20 minutes on 2 cores)
    python benchmarks/bench.py --quick            # T=64, H=32 only, few repeats, no long case
    python benchmarks/bench.py --cells lstm --sizes 256x128,1024x256 --skip-long --json out.json

For each cell and size (T, H), batch B=16, float32, 2 threads, flush-denormal on (as the engine runs):

    (a)     one forward+backward of our RecurrentNetwork + readout (loss = sum over the batch of the random
            probe at the last step, ``loss.backward()``): the floor; ``fused`` = torch.nn.RNN/LSTM/GRU doing the same
    (b)     the engine's per-timestep gradient norms: analysis.gradient_stage as run_experiment calls it
    (c)     jacobian_products at ExperimentConfig()'s default lags / batch / n_singular / lyapunov_k
    (c_all) the same at every lag and the whole batch (only when that differs from (c))
    (d)     the naive reference: torch.autograd.functional.jacobian once per lag + svdvals
    (e)     the whole run_experiment as the dashboard calls it, in a fresh subprocess, with its peak RSS

and, after the table: live training steps/s, the dashboard's default view (cold run_comparison), the long case
(T=2000, H=256 LSTM) and the targets, each marked "met" / "NOT met". Everything calls the engine's public
functions, so it always measures the current code. See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import cProfile
import dataclasses
import json
import os
import platform
import pstats
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bench_*.py parts
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


from bench_child import child_main  # noqa: E402
from bench_common import ALL_CELLS, ALL_SIZES, B, Plan, QUICK_SIZES, TARGETS, analysed_run, build, default_jacobian_settings, jac_call, setup_torch  # noqa: E402
from bench_table import bench_default_view, bench_long, bench_size, bench_training, fmt_t, long_jac_estimate, print_legend, table_header, table_line, warmup  # noqa: E402
from bench_targets import targets, verdict  # noqa: E402

# ---------------------------------------------------------------------------------------------------------------
def parse_sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        try:
            T, H = part.lower().split("x")
            out.append((int(T), int(H)))
        except ValueError:
            raise SystemExit(f"error: --sizes wants TxH pairs such as 64x32,256x128; got {part!r}") from None
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Benchmark of the gradient-dynamics lab (prints ratios; no asserts).")
    p.add_argument("--quick", action="store_true", help="T=64, H=32 only, few repeats, no long case")
    p.add_argument("--cells", default=",".join(ALL_CELLS), help="comma list of rnn,lstm,gru (default all)")
    p.add_argument("--sizes", default=None, help="comma list of TxH (default 64,256,1024 x 32,128,256)")
    p.add_argument("--skip-long", action="store_true", help="skip the T=2000, H=256 LSTM long case")
    p.add_argument("--skip-naive", action="store_true", help="skip (d)")
    p.add_argument("--skip-e", action="store_true", help="skip (e) (the subprocess run_experiment)")
    p.add_argument("--skip-view", action="store_true", help="skip the dashboard's default view")
    p.add_argument("--skip-extras", action="store_true", help="skip training, default view and the long case")
    p.add_argument("--max-call-s", type=float, default=60.0,
                   help="a (c) call estimated longer than this is extrapolated, an (e) skipped (default 60)")
    p.add_argument("--budget-s", type=float, default=1140.0,
                   help="wall-time budget of the whole run: as it runs out, (c)/(e) are extrapolated/skipped (1140)")
    p.add_argument("--long-timeout", type=float, default=300.0, help="seconds allowed to the long case (300)")
    p.add_argument("--no-profile", action="store_true", help="skip the cProfile breakdown of (c)")
    p.add_argument("--json", default=None, help="also write everything as JSON to this path")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    bad = [c for c in cells if c not in ALL_CELLS]
    if bad or not cells:
        p.error(f"--cells: {bad or 'none given'}: choose from rnn, lstm, gru")
    args.cell_list = cells
    args.size_list = parse_sizes(args.sizes) if args.sizes else list(QUICK_SIZES if args.quick else ALL_SIZES)
    args.size_list.sort(key=lambda s: (s[0] * s[1], s))
    if args.quick:
        args.skip_long = True
    return args


def profile_c(cell: str, T: int, H: int) -> dict:
    """cProfile of one default (c) call: the project's functions by inclusive time (a wait on the engine's
    thread pool counts in the function that waits) and torch's built-ins by own time."""
    cfg, batch, model = build(cell, T, H)
    run = analysed_run(cfg, batch, model)
    s = default_jacobian_settings(T)
    f = jac_call(run, s["lags"], s["batch"], s["n_singular"], s["lyapunov_k"])
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    f()
    prof.disable()
    wall = time.perf_counter() - t0
    st = pstats.Stats(prof).stats  # key (file, line, name) -> (cc, ncalls, tottime, cumtime, callers)
    ours, builtins = [], []
    for (fn, line, name), (_, nc, tt, ct, _) in st.items():
        path = Path(fn)
        if fn == "~":
            builtins.append((tt, name.strip("<>").replace("built-in method ", ""), nc))
        elif (ROOT / "analysis") in path.parents or (ROOT / "rnn_models") in path.parents:
            if name not in ("jacobian_products", "<lambda>"):
                ours.append((ct, f"{path.parent.name}/{path.name}:{line}({name})", nc))
    ours.sort(reverse=True)
    builtins.sort(reverse=True)
    return {"wall_s": wall, "functions": [{"function": w, "s": t, "calls": n} for t, w, n in ours[:6]],
            "builtins": [{"function": w, "s": t, "calls": n} for t, w, n in builtins[:6]]}


def main(argv=None) -> int:
    args = parse_args(argv)
    import analysis.limits as limits
    limits.configure(limits.Limits(None, None, "benchmark"))  # the benchmark measures sizes beyond a host's limits
    if args.child:
        child_main(json.loads(args.child))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so a killed run also stops its subprocess
    setup_torch()
    t_start = time.perf_counter()
    reserve = 0.0 if args.skip_extras else 60.0 + (0.0 if args.skip_long else args.long_timeout)
    plan = Plan(max_call_s=args.max_call_s, deadline=t_start + args.budget_s - reserve)
    if args.quick:
        plan = dataclasses.replace(plan, max_reps=5, min_reps=3, budget_s=0.5)
    warmup(args.cell_list)
    print(f"gradient-dynamics lab benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"flush_denormal on, float32, B={B}, python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    print_legend(args.size_list)
    print("times are medians in ms (the 'reps' column: (a)-(b) / (c) / (e) repeats, x = extrapolated); "
          "'~' = extrapolated (see notes); ratios only, no time is asserted")
    print()
    print(table_header(), flush=True)
    rows = []
    state = {"naive_over": {}, "naive_checked": {}}
    for T, H in args.size_list:  # size by size, so a run that meets its budget still covers every cell
        for cell in args.cell_list:
            r = bench_size(cell, T, H, plan, state, args)
            r["load_avg"] = os.getloadavg()[0]
            rows.append(r)
            print(table_line(r), flush=True)
    notes = [(r, n) for r in rows for n in r["notes"]]
    if notes:
        print("\nnotes:")
        for r, n in notes:
            print(f"  {r['cell']} T={r['T']} H={r['H']}: {n}")

    print("\n(c) cost model (three short calls per size): fixed + per step (per-step Jacobian, product, "
          "renormalization, QR) + per reported lag (singular values)")
    print("  cell     T     H   fixed ms  per step ms  per lag ms   steps part  lags part   (c) ms")
    for r in rows:
        cm = r["c_cost_model"]
        steps_part = cm["per_step_s"] * (r["T"] - 1)
        lags_part = cm["per_lag_s"] * r["c_lags"]
        print(f"  {r['cell']:<5}{r['T']:>5}{r['H']:>6}{cm['fixed_s'] * 1e3:>11.3g}{cm['per_step_s'] * 1e3:>13.3g}"
              f"{cm['per_lag_s'] * 1e3:>12.3g}{steps_part * 1e3:>12.4g}{lags_part * 1e3:>11.4g}"
              f"{fmt_t(r['c_s'], r.get('c_extrapolated', False)):>10}")

    prof = {}
    Tc, Hc = TARGETS["c_size"]
    if not args.no_profile and (Tc, Hc) in args.size_list:
        print(f"\nwhere (c) spends its time at T={Tc}, H={Hc} (cProfile of one default call; project functions "
              "by inclusive time, waits on the engine's threads included; torch built-ins by own time):")
        for c in args.cell_list:
            r = next(r for r in rows if r["cell"] == c and (r["T"], r["H"]) == (Tc, Hc))
            if r.get("c_extrapolated") or r["c_s"] > plan.cap():
                print(f"  {c}: skipped ((c) too long for the time left)")
                continue
            p = profile_c(c, Tc, Hc)
            prof[c] = p
            w = p["wall_s"]
            print(f"  {c}: {w * 1e3:.0f} ms under the profiler")
            print("     functions: " + "; ".join(f"{x['function']} {x['s'] * 1e3:.0f} ms ({x['s'] / w:.0%}, "
                                                  f"{x['calls']}x)" for x in p["functions"]))
            print("     built-ins: " + "; ".join(f"{x['function']} {x['s'] * 1e3:.0f} ms ({x['s'] / w:.0%}, "
                                                  f"{x['calls']}x)" for x in p["builtins"]))

    e_rows = [r for r in rows if r.get("e_timings")]
    if e_rows:
        print("\n(e) split (run_experiment's own timings, last repeat): setup / gradients / jacobians / rest, "
              "and peak RSS above the interpreter's baseline")
        for r in e_rows:
            tm = r["e_timings"]
            rest = tm["total_s"] - tm["setup_s"] - tm["gradients_s"] - tm["jacobians_s"]
            print(f"  {r['cell']:<5}{r['T']:>5}{r['H']:>6}  {tm['setup_s'] * 1e3:8.1f} / {tm['gradients_s'] * 1e3:8.1f}"
                  f" / {tm['jacobians_s'] * 1e3:9.1f} / {rest * 1e3:8.1f} ms; first call {r['e_first_s'] * 1e3:.0f} ms;"
                  f" RSS {r['e_rss_mib']:.0f} MiB ({r['e_rss_mib'] - r['e_base_rss_mib']:+.0f} over "
                  f"{r['e_base_rss_mib']:.0f})")

    training = view = long = None
    if not args.skip_extras:
        print("\nlive training: Trainer(ExperimentConfig(cell=c, task='adding', seq_len=100, hidden_size=64, "
              "batch_size=32)).step()", flush=True)
        training = bench_training(args.cell_list, args.quick)
        for c, t in training.items():
            ok = verdict(t["steps_per_s"] >= TARGETS["train_steps_s"])
            print(f"  {c:<5} {t['steps_per_s']:6.1f} steps/s (median of {t['steps']} steps, "
                  f"{t['median_step_s'] * 1e3:.1f} ms/step; mean {t['mean_steps_per_s']:.1f}/s)   "
                  f"target >= {TARGETS['train_steps_s']:g}: {ok}", flush=True)

        view = None if args.skip_view else bench_default_view(timeout_s=120)
        if view is not None:
            print(f"\ndashboard default view: run_comparison of {view.get('source')} in a fresh process", flush=True)
        if view is not None and "times_s" in view:
            cold, warm = view["times_s"][0], view["times_s"][-1]
            split = "; ".join(f"{c} {t['total_s'] * 1e3:.0f} ms (jacobians {t['jacobians_s'] * 1e3:.0f})"
                              for c, t in view["timings"].items())
            print(f"  cold {cold:.2f} s (then warm {warm:.2f} s; imports {view['import_s']:.2f} s; "
                  f"peak RSS {view['peak_rss_kib'] / 1024:.0f} MiB)   target <= {TARGETS['default_view_s']:g} s: "
                  f"{verdict(cold <= TARGETS['default_view_s'])}")
            print(f"  last call per cell: {split}")
        elif view is not None:
            print(f"  failed: {view.get('error')}")

    if not args.skip_long and not args.skip_extras:
        est = long_jac_estimate(rows)
        long_to = min(args.long_timeout, max(120.0, t_start + args.budget_s - time.perf_counter()))
        print(f"\nlong case: run_experiment, LSTM T=2000, H=256, B={B}, float32, fresh process "
              f"(timeout {long_to:.0f} s" + (f"; Jacobian part estimated {est:.0f} s" if est else "") + ")",
              flush=True)
        if est is not None and est > long_to:
            print(f"  NOTE: the default analysis (Jacobian part estimated {est:.0f} s) would not finish within "
                  f"{long_to:.0f} s: running it with jacobian_lags='log' instead", flush=True)
        long = bench_long(long_to, est)
        if "times_s" in long:
            tm = long["timings"]
            print(f"  wall {long['times_s'][0]:.1f} s (setup {tm['setup_s']:.1f}, gradients {tm['gradients_s']:.1f}, "
                  f"jacobians {tm['jacobians_s']:.1f}; {long['n_lags']} lags, {long['method']}); "
                  f"peak RSS {long['peak_rss_kib'] / 1024:.0f} MiB (VmHWM; interpreter + torch baseline "
                  f"{long['base_rss_kib'] / 1024:.0f} MiB)   target <= 1 GiB: {verdict(long['peak_rss_kib'] <= 2**20)}")
            print(f"  nonfinite = {json.dumps(long['nonfinite'])}; spectral norms finite: "
                  f"{long['spectral_norm_finite']} (log10 range {long['log10_spectral_norm_range'][0]:.1f} .. "
                  f"{long['log10_spectral_norm_range'][1]:.1f}); state / cell-flow norms finite: "
                  f"{long.get('state_spectral_norm_finite')} / {long.get('cell_full_finite')}; grad norms finite: "
                  f"{long['grad_norm_finite']} (range {long['grad_norm_range']}, "
                  f"{long['grad_norm_zero_steps']} steps exactly 0)")
        else:
            print(f"  {long.get('error')}; peak RSS while it ran {long.get('vmhwm_polled_kib', 0) / 1024:.0f} MiB")

    tg = targets(rows, training, view, long)
    print("\ntargets:")
    for t in tg:
        print(f"  {verdict(t['ok']):>8}  {t['target']}: {t['measured']}")
    total = time.perf_counter() - t_start
    loads = [r["load_avg"] for r in rows]
    print(f"\nbenchmark wall time {total:.0f} s; load average now {os.getloadavg()[0]:.1f}" +
          (f", {min(loads):.1f}..{max(loads):.1f} during the table" if loads else ""))
    if loads and max(loads) > (os.cpu_count() or 2):
        print(f"WARNING: the load average exceeded the {os.cpu_count()} cores while this ran: other processes shared "
              "the CPUs, and single calls were seen to take 2-10x their unloaded time. Compare ratios within one "
              "run (rounds are interleaved); rerun on a quiet machine for absolute times.")

    if args.json:
        doc = {"meta": {"torch": torch.__version__, "threads": torch.get_num_threads(), "B": B, "dtype": "float32",
                        "flush_denormal": True, "python": platform.python_version(), "wall_s": total,
                        "argv": sys.argv[1:], "targets": {k: list(v) if isinstance(v, tuple) else v
                                                          for k, v in TARGETS.items()},
                        "default_jacobian": {T: {k: v for k, v in default_jacobian_settings(T).items()}
                                             for T in sorted({T for T, _ in args.size_list})}},
               "rows": rows, "profile_c": prof, "training": training, "default_view": view, "long_case": long,
               "targets": tg}
        Path(args.json).write_text(json.dumps(doc, indent=1, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
