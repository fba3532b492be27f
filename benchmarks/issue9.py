"""Issue 9's targets as ratios measured in ONE run (2 shared cores: compare ratios, not seconds).

    python benchmarks/issue9.py [--quick] [--long] [--json PATH]

Rows (each timed interleaved with its denominator, median of paired per-round ratios):
  grad      ||dL/dh_t|| with the exact log chain (the engine's gradient stage)  /  one fwd+bwd of the same model
            and / torch's fused fwd+bwd, per cell and size (H up to 512)                      target <= 1.5x
  preset    the dashboard's default preset, three cells, T=256 H=128 B=16, whole analysis (spectra exact and
            fast)  /  fused fwd+bwd of the three cells                                       target <= 6x (3x)
  first     --long: T=1000 H=256 three cells, only="gradients" / fused                         target <= 2x
  views     --long: the same, the whole analysis / fused                                      target <= 20x
  threads   the exact mode (every lag, every sequence) LSTM T=128 H=128 with the SVD pool at 1 thread vs every core
            (intra-op threads are set once per process, so this is the pool's scaling only)
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


def thread_rows(plan) -> dict:
    from analysis.config import ExperimentConfig
    from analysis.experiment import run_experiment
    from analysis.progress import hardware_threads
    n = hardware_threads()
    cfg = ExperimentConfig(cell="lstm", seq_len=128, hidden_size=128, batch_size=16)
    m = measure_interleaved({"one": lambda: run_experiment(cfg.replace(threads=1)),
                             "all": lambda: run_experiment(cfg.replace(threads=n))}, plan)
    r = {"threads_all": n, "one_s": m["one"][0], "all_s": m["all"][0], "speedup": _ratio(m, "one", "all")}
    print(f"threads exact LSTM T=128 H=128: 1 thread {r['one_s']:.2f} s, {n} threads {r['all_s']:.2f} s, "
          f"speedup {r['speedup']:.2f}x", flush=True)
    return r


def verdicts(grad, preset, long) -> list[str]:
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
                           only_variants=(("fast", "gradients"), ("fast", None)))
    threads = None if a.skip_threads or a.quick else thread_rows(plan)
    print("targets:")
    for line in verdicts(grad, preset, long):
        print("  " + line)
    print(f"(one run, {time.perf_counter() - t0:.0f} s; intra-op threads {torch.get_num_threads()})")
    if a.json:
        Path(a.json).write_text(json.dumps({"grad": grad, "preset": preset, "long": long, "threads": threads}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
