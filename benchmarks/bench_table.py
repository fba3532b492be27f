"""Benchmark parts: one row of the table per cell and size, its formatting, and training / default view / long
case."""
from __future__ import annotations

import gc
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # noqa: F841
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


from bench_child import _non_default_fields, dashboard_config, experiment_config_for, run_child  # noqa: E402
from bench_common import B, NAIVE_LAG_LIMIT_S, Plan, _clock, analysed_run, build, default_jacobian_settings, estimate, fused_module, fwd_bwd_fused, fwd_bwd_ours, grad_norms_engine, jac_call, jac_cost_model, measure, measure_interleaved, paired_ratio  # noqa: E402
from bench_reference import naive_check, naive_lag, naive_reference  # noqa: E402


# ---------------------------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------------------------
def bench_size(cell: str, T: int, H: int, plan: Plan, state: dict, args) -> dict:
    row = {"cell": cell, "T": T, "H": H, "B": B, "notes": []}
    cfg, batch, model = build(cell, T, H)
    x = batch.inputs
    fused = fused_module(cell, model)
    readout = model.readout

    # (a), fused, (b): round-robin so that load drifts hit all three alike
    m = measure_interleaved({"a": fwd_bwd_ours(model, x), "fused": fwd_bwd_fused(fused, readout, x),
                             "b": grad_norms_engine(cfg, batch, model)}, plan)
    a, n_a, a_samples = m["a"]
    row.update(a_s=a, fused_s=m["fused"][0], b_s=m["b"][0], reps_ab=n_a)
    row["fused_over_a"] = paired_ratio(m["fused"][2], a_samples)
    row["b_over_a"] = paired_ratio(m["b"][2], a_samples)
    row["samples_ab_s"] = {k: v[2] for k, v in m.items()}
    model.zero_grad(set_to_none=True)
    fused = None
    gc.collect()

    # (c) the default analysis, (c_all) every lag and the whole batch
    run = analysed_run(cfg, batch, model)
    s = default_jacobian_settings(T)
    b_def = B if s["batch"] in (0, None) else min(s["batch"], B)
    row["c_lags"] = len(s["lags"])
    row["c_batch"] = b_def
    cm = jac_cost_model(run, s, T)
    row["c_cost_model"] = cm

    def timed_jac(lags, batch_n, key):
        est = estimate(cm, lags)
        cap = plan.cap()
        if est > cap:
            row[key + "_s"] = est
            row[key + "_extrapolated"] = True
            why = "--max-call-s" if cap >= plan.max_call_s else "the time left in --budget-s"
            row["notes"].append(f"({key}) not run: estimated {est:.0f} s > {cap:.0f} s ({why}); "
                                f"extrapolated from {cm['m']}- and {2 * cm['m']}-step calls "
                                f"(fixed + per step x {max(lags)} + per lag x {len(lags)})")
            return
        t, n = measure(jac_call(run, lags, batch_n, s["n_singular"], s["lyapunov_k"]), plan)
        row[key + "_s"] = t
        row[key + "_extrapolated"] = False
        row["reps_" + key] = n

    timed_jac(s["lags"], s["batch"], "c")
    row["c_over_a"] = row["c_s"] / a
    all_lags = list(range(T))
    if sorted(set(s["lags"])) != all_lags or b_def != B:
        timed_jac(all_lags, 0, "c_all")
        row["c_all_over_a"] = row["c_all_s"] / a
    else:
        row["c_all_s"] = None  # the default already is every lag and the whole batch

    # (d) the naive reference, on (c)'s sequences and lags
    if args.skip_naive:
        row["d_s"] = None
    elif any(T >= t0 and H >= h0 for (t0, h0) in state["naive_over"].get(cell, [])):
        row["d_s"] = None
        row["notes"].append(f"(d) skipped: a smaller size of {cell} had a lag over {NAIVE_LAG_LIMIT_S:.0f} s")
    else:
        if not state["naive_checked"].get(cell):
            chk = naive_check(run, b_def)
            state["naive_checked"][cell] = True
            row["d_check"] = chk
            row["notes"].append(f"(d) agrees with (c): log10 sigma_max at lag {chk['lag']} naive "
                                f"{chk['naive_log10_sigma_max']:.5f}, engine {chk['engine_log10_sigma_max']:.5f}")
        nv = naive_reference(run, b_def, sorted(set(s["lags"])), NAIVE_LAG_LIMIT_S,
                             budget_s=2.0 if plan.max_reps <= 3 else 6.0)
        row["d_detail"] = nv
        row["d_s"] = nv["total_s"]
        if nv["over_limit"]:
            state["naive_over"].setdefault(cell, []).append((T, H))
        if nv["total_s"] is not None:
            ks = ",".join(str(p["lag"]) for p in nv["measured"])
            row["notes"].append(f"(d) extrapolated from {len(nv['measured'])} lags (k={ks}; t = a + s*k summed "
                                f"over {len(set(s['lags']))} lags, {b_def} sequences)")
        else:
            row["notes"].append("(d) not run: its first lag was predicted over the limit")
    row["d_over_c"] = row["d_s"] / row["c_s"] if row.get("d_s") else None

    # (e) the whole run_experiment in a fresh subprocess
    if args.skip_e:
        row["e_s"] = None
    else:
        ecfg = experiment_config_for(cell, T, H)
        from analysis.jacobians import report_lags

        # estimate (e)'s Jacobian part from (c)'s cost model (scaled by the share of the batch it analyses)
        e_lags = report_lags(T, ecfg.jacobian_lags, ecfg.num_log_lags)
        e_b = B if ecfg.jacobian_batch in (0, None) else min(ecfg.jacobian_batch, B)
        est_e = estimate(cm, e_lags) * e_b / b_def
        if est_e > plan.cap():
            row["e_s"] = None
            row["notes"].append(f"(e) not run: its Jacobian part alone is estimated at {est_e:.0f} s "
                                f"> {plan.cap():.0f} s")
        else:
            reps = 1 if (a * 4 + row["c_s"]) > 1.5 else 3  # a cold first call, then warm ones
            r = run_child({"kind": "experiment", "config": ecfg.to_dict(), "repeats": reps},
                          timeout_s=max(60.0, 3 * plan.cap()))
            if "error" in r:
                row["e_s"] = None
                row["notes"].append(f"(e) failed: {r['error']}")
            else:
                row["e_s"] = statistics.median(r["times_s"])
                row["e_first_s"] = r["times_s"][0]
                row["e_reps"] = len(r["times_s"])
                row["e_rss_mib"] = r["peak_rss_kib"] / 1024
                row["e_base_rss_mib"] = (r["base_rss_kib"] or 0) / 1024
                row["e_timings"] = r.get("timings")
                row["e_nonfinite"] = r.get("nonfinite")
    row["e_over_a"] = row["e_s"] / a if row.get("e_s") else None
    run = model = None  # free them before the next size (timed_jac closes over run)
    gc.collect()
    return row


def warmup(cells) -> None:
    """One tiny pass of everything per cell, so no first-call cost (lazy init, allocator) lands in the table."""
    for cell in cells:
        cfg, batch, model = build(cell, 8, 8)
        fwd_bwd_ours(model, batch.inputs)()
        fwd_bwd_fused(fused_module(cell, model), model.readout, batch.inputs)()
        grad_norms_engine(cfg, batch, model)()
        run = analysed_run(cfg, batch, model)
        s = default_jacobian_settings(8)
        jac_call(run, s["lags"], s["batch"], s["n_singular"], s["lyapunov_k"])()
        naive_lag(run, 2, 2)


def fmt_t(s, extrapolated=False) -> str:
    if s is None:
        return "-"
    ms = s * 1e3
    txt = f"{ms:.3g}" if ms < 1000 else f"{ms:,.0f}"
    return ("~" if extrapolated else "") + txt


def fmt_r(r, extrapolated=False) -> str:
    if r is None:
        return "-"
    txt = f"{r:.2f}" if r < 10 else (f"{r:.1f}" if r < 100 else f"{r:,.0f}")
    return ("~" if extrapolated else "") + txt


COLUMNS = [("cell", 5), ("T", 5), ("H", 4), ("(a) ms", 9), ("fused ms", 9), ("fused/(a)", 9), ("(b) ms", 9),
           ("(b)/(a)", 8), ("(c) ms", 10), ("(c)/(a)", 8), ("(c_all) ms", 10), ("(c_all)/(a)", 11), ("(d) ms", 12),
           ("(d)/(c)", 9), ("(e) ms", 9), ("(e)/(a)", 8), ("(e) RSS MiB", 11), ("reps", 8), ("load", 5)]


def table_header() -> str:
    return "  ".join(name.rjust(w) for name, w in COLUMNS)


def table_line(r: dict) -> str:
    ce, cae = r.get("c_extrapolated", False), r.get("c_all_extrapolated", False)
    d_ex = r.get("d_s") is not None
    reps = f"{r['reps_ab']}/{r.get('reps_c', 'x')}/{r.get('e_reps', '-')}"
    vals = [r["cell"], str(r["T"]), str(r["H"]), fmt_t(r["a_s"]), fmt_t(r["fused_s"]), fmt_r(r["fused_over_a"]),
            fmt_t(r["b_s"]), fmt_r(r["b_over_a"]), fmt_t(r["c_s"], ce), fmt_r(r["c_over_a"], ce),
            "= (c)" if r.get("c_all_s") is None else fmt_t(r["c_all_s"], cae),
            "= (c)" if r.get("c_all_s") is None else fmt_r(r.get("c_all_over_a"), cae),
            fmt_t(r.get("d_s"), d_ex), fmt_r(r.get("d_over_c"), d_ex or ce), fmt_t(r.get("e_s")),
            fmt_r(r.get("e_over_a")), f"{r['e_rss_mib']:.0f}" if r.get("e_rss_mib") else "-", reps,
            f"{r.get('load_avg', 0):.1f}"]
    return "  ".join(v.rjust(w) for v, (_, w) in zip(vals, COLUMNS))


def print_legend(sizes) -> None:
    from analysis.config import ExperimentConfig

    d = ExperimentConfig()
    print("(c) = jacobian_products with ExperimentConfig() defaults: "
          f"jacobian_lags={d.jacobian_lags!r}, num_log_lags={d.num_log_lags}, jacobian_batch={d.jacobian_batch}, "
          f"n_singular={d.n_singular}, lyapunov_k={d.lyapunov_k}; that meant:")
    for T in sorted({T for T, _ in sizes}):
        s = default_jacobian_settings(T)
        lags = sorted(set(s["lags"]))
        shown = f"{lags[0]}..{lags[-1]} (every lag)" if lags == list(range(T)) else \
            ", ".join(map(str, lags[:6])) + (", ..., " + str(lags[-1]) if len(lags) > 6 else "")
        b = B if s["batch"] in (0, None) else min(s["batch"], B)
        print(f"    T={T}: {len(lags)} lags [{shown}], batch {b} of {B} sequences")
    preset, src = dashboard_config()
    if preset is None:
        print(f"(e) config: ExperimentConfig(cell=..., seq_len=T, hidden_size=H, batch_size={B}) ({src})")
    else:
        print(f"(e) config: {src} with cell, seq_len, hidden_size, batch_size={B} replaced; fields differing from "
              f"ExperimentConfig(): {_non_default_fields(preset.replace(compare=()))}")


# ---------------------------------------------------------------------------------------------------------------
# training, default view, long case
# ---------------------------------------------------------------------------------------------------------------
def bench_training(cells, quick: bool) -> dict:
    from analysis.config import ExperimentConfig
    from analysis.training import Trainer

    out = {}
    for c in cells:
        tr = Trainer(ExperimentConfig(cell=c, task="adding", seq_len=100, hidden_size=64, batch_size=32))
        for _ in range(2):
            tr.step()  # warm-up
        times = []
        t_end = time.perf_counter() + (1.0 if quick else 4.0)
        while len(times) < (3 if quick else 8) or (time.perf_counter() < t_end and len(times) < 60):
            times.append(_clock(tr.step))
        med = statistics.median(times)
        out[c] = {"steps": len(times), "median_step_s": med, "steps_per_s": 1.0 / med,
                  "mean_steps_per_s": len(times) / sum(times)}
    return out


def bench_default_view(timeout_s: float) -> dict:
    from analysis.config import ExperimentConfig

    preset, src = dashboard_config()
    cfg = preset if preset is not None else ExperimentConfig(compare=("rnn", "lstm", "gru"), seq_len=100,
                                                             hidden_size=64)
    r = run_child({"kind": "comparison", "config": cfg.to_dict(), "repeats": 2}, timeout_s)
    r["source"] = src if preset is not None else f"ExperimentConfig(compare=rnn,lstm,gru, T=100, H=64) ({src})"
    r["config"] = _non_default_fields(cfg)
    return r


def bench_long(timeout_s: float, jac_estimate_s: float | None) -> dict:
    cfg = experiment_config_for("lstm", 2000, 256)
    out = {"config": _non_default_fields(cfg)}
    if jac_estimate_s is not None and jac_estimate_s > timeout_s:
        # the default analysis would not finish in time: measure RSS and finiteness with log-spaced lags
        out["default_estimate_s"] = jac_estimate_s
        out["fallback"] = (f"default config's Jacobian part estimated at {jac_estimate_s:.0f} s > --long-timeout "
                           f"{timeout_s:.0f} s: ran with jacobian_lags='log' instead")
        cfg = cfg.replace(jacobian_lags="log")
        out["config"] = _non_default_fields(cfg)
    out.update(run_child({"kind": "experiment", "config": cfg.to_dict(), "repeats": 1}, timeout_s))
    return out


def long_jac_estimate(rows) -> float | None:
    """(c)'s cost model at LSTM T=1024, H=256 (or the largest LSTM size measured), scaled to T=2000."""
    from analysis.jacobians import report_lags

    lstm = [r for r in rows if r["cell"] == "lstm"]
    if not lstm:
        return None
    r = max(lstm, key=lambda r: (r["H"], r["T"]))
    cfg = experiment_config_for("lstm", 2000, 256)
    cm = dict(r["c_cost_model"])
    scale = (256 / r["H"]) ** 3  # per-step and per-lag costs grow about as H^3 (matmuls, svd)
    scale *= (B if cfg.jacobian_batch in (0, None) else min(cfg.jacobian_batch, B)) / r["c_batch"]
    lags = report_lags(2000, cfg.jacobian_lags, cfg.num_log_lags)
    return cm["fixed_s"] * 2000 / r["T"] + scale * (cm["per_step_s"] * max(lags) + cm["per_lag_s"] * len(lags))
