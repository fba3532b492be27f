"""Performance benchmark of the gradient-dynamics lab: prints ratios, never asserts times.

    python benchmarks/bench.py                    # the full table (about 20 minutes on 2 cores)
    python benchmarks/bench.py --quick            # T=64, H=32 only, few repeats, no long case
    python benchmarks/bench.py --cells lstm --sizes 256x128,1024x256 --skip-long --json out.json

For each cell and size (T, H), batch B=16, float32, 2 threads, flush-denormal on (as the engine runs):

    (a)     one forward+backward of our RecurrentNetwork + readout (loss = sum over the batch of the random
            probe at the last step, ``loss.backward()``): the floor; ``fused`` = torch.nn.RNN/LSTM/GRU doing the same
    (b)     the engine's per-timestep gradient norms: forward(views=True) + probe_loss + gradient_norms
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
import gc
import json
import math
import os
import platform
import pstats
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

B = 16
THREADS = 2
ALL_CELLS = ("rnn", "lstm", "gru")
ALL_SIZES = tuple((T, H) for T in (64, 256, 1024) for H in (32, 128, 256))
QUICK_SIZES = ((64, 32),)
TARGETS = {"b_over_a": 1.3, "c_over_a": 3.0, "c_size": (256, 128), "d_over_c": 50.0, "long_rss_gib": 1.0,
           "train_steps_s": 15.0, "default_view_s": 1.5}
NAIVE_LAG_LIMIT_S = 2.0  # (d) is not run beyond sizes where one lag takes longer than this
CHILD_MARK = "BENCH_CHILD_RESULT "


def setup_torch() -> None:
    torch.set_num_threads(THREADS)
    torch.set_flush_denormal(True)


# ---------------------------------------------------------------------------------------------------------------
# timing helpers
# ---------------------------------------------------------------------------------------------------------------
def _clock(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure_interleaved(fns: dict, plan: "Plan") -> dict:
    """Median seconds of each callable, timed round-robin (a, fused, b, a, fused, b, ...) so load drifts hit all.

    A warm-up round first (it is the measurement when it is long: the big sizes run once, or twice when the first
    round may only have been slowed by the busy machine); then rounds until plan.budget_s has passed (at least
    plan.min_reps, at most plan.max_reps). On 2 shared cores a call now and then takes 10x longer: many short
    rounds and the median keep those out. Returns {name: (median_s, n, samples)}.
    """
    first = {k: _clock(f) for k, f in fns.items()}
    if sum(first.values()) >= plan.once_s:
        if sum(first.values()) >= 4 * plan.once_s:
            return {k: (v, 1, [v]) for k, v in first.items()}
        second = {k: _clock(f) for k, f in fns.items()}
        if sum(second.values()) >= plan.once_s:
            return {k: (statistics.median([first[k], second[k]]), 2, [first[k], second[k]]) for k in fns}
    samples = {k: [] for k in fns}
    t_end = time.perf_counter() + plan.budget_s
    n = 0
    while n < plan.max_reps and (n < plan.min_reps or time.perf_counter() < t_end):
        for k, f in fns.items():
            samples[k].append(_clock(f))
        n += 1
        if sum(samples[k][-1] for k in fns) >= plan.once_s and n >= 2:
            break  # long rounds: two are enough
    gc.collect()
    return {k: (statistics.median(v), len(v), v) for k, v in samples.items()}


def measure(fn, plan: "Plan") -> tuple[float, int]:
    return measure_interleaved({"x": fn}, plan)["x"][:2]


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median of the per-round ratios: rounds ran back to back, so a load change between rounds cancels."""
    return statistics.median(x / y for x, y in zip(num, den))


@dataclasses.dataclass
class Plan:
    max_reps: int = 15
    min_reps: int = 3
    budget_s: float = 3.0  # seconds of repeats per measurement (many short repeats: 2 shared cores are noisy)
    once_s: float = 3.0  # a warm-up call longer than this is taken as the single measurement
    max_call_s: float = 60.0  # (c) / (e) estimated longer than this are extrapolated / skipped, not run
    deadline: float = math.inf  # perf_counter() time by which the table should be done (the --budget-s)

    def cap(self) -> float:
        """The longest (c) / (e) call allowed now: --max-call-s, less when the time budget runs out."""
        return min(self.max_call_s, max(10.0, self.deadline - time.perf_counter()))


# ---------------------------------------------------------------------------------------------------------------
# building the model and the pieces the engine computes
# ---------------------------------------------------------------------------------------------------------------
def build(cell: str, T: int, H: int):
    """The engine's own model and data for the random probe: (resolved config, batch, TaskModel)."""
    from analysis.config import ExperimentConfig
    from analysis.experiment import TaskModel, resolve

    cfg, batch, _ = resolve(ExperimentConfig(cell=cell, seq_len=T, hidden_size=H, batch_size=B))
    model = TaskModel(cfg, batch.spec, cfg.input_size)
    return cfg, batch, model


def fused_module(cell: str, model):
    """torch.nn.RNN/LSTM/GRU carrying the same weights, and the same readout."""
    net = model.net
    I, H = net.config.input_size, net.config.hidden_size
    mod = {"rnn": lambda: torch.nn.RNN(I, H, nonlinearity=net.config.activation),
           "lstm": lambda: torch.nn.LSTM(I, H), "gru": lambda: torch.nn.GRU(I, H)}[cell]()
    mod.load_state_dict(net.torch_state_dict())
    return mod


def fwd_bwd_ours(model, x):
    def f():
        model.zero_grad(set_to_none=True)
        _, y = model(x)
        loss = y[-1, :, 0].sum()  # the random probe u . h_{T-1}, summed over the batch
        loss.backward()
    return f


def fwd_bwd_fused(mod, readout, x):
    def f():
        mod.zero_grad(set_to_none=True)
        out, _ = mod(x)
        loss = readout(out)[-1, :, 0].sum()
        loss.backward()
    return f


def grad_norms_engine(cfg, batch, model):
    from analysis.gradients import gradient_norms, probe_loss

    loss_steps = batch.spec.loss_steps if cfg.loss_steps == "auto" else cfg.loss_steps

    def f():
        with torch.enable_grad():
            trace, y = model(batch.inputs, views=True, detach_every=cfg.truncate)
            probe = probe_loss(batch, y, loss_steps)
            return gradient_norms(trace, probe, cfg.analysed_layer)
    return f


def analysed_run(cfg, batch, model):
    """The analysed layer's run, detached as run_experiment detaches it."""
    from analysis.experiment import _detached

    with torch.no_grad():
        trace, _ = model(batch.inputs)
    return _detached(trace.runs[cfg.analysed_layer][0])


def default_jacobian_settings(T: int) -> dict:
    """What ExperimentConfig()'s defaults mean for jacobian_products at length T (read at run time)."""
    from analysis.config import ExperimentConfig
    from analysis.jacobians import report_lags

    d = ExperimentConfig()
    return {"lags": report_lags(T, d.jacobian_lags, d.num_log_lags), "batch": d.jacobian_batch,
            "n_singular": d.n_singular, "lyapunov_k": d.lyapunov_k, "mode": d.jacobian_lags,
            "num_log_lags": d.num_log_lags}


def jac_call(run, lags, batch, n_singular, lyapunov_k):
    from analysis.jacobians import jacobian_products

    return lambda: jacobian_products(run, lags=lags, batch=batch, n_singular=n_singular, lyapunov_k=lyapunov_k)


def jac_cost_model(run, s: dict, T: int) -> dict:
    """Three short jacobian_products calls -> fixed cost, cost per step (Jacobian + product + QR) and cost per
    reported lag (singular values), so the full call can be estimated before it is run.

        A: lags 0..m   (m steps, m+1 lags)    B: lags [m]  (m steps, 1 lag)    C: lags [2m] (2m steps, 1 lag)
    """
    m = max(1, min(8, (T - 1) // 2))
    kw = dict(batch=s["batch"], n_singular=s["n_singular"], lyapunov_k=s["lyapunov_k"])
    t0 = _clock(jac_call(run, [0, 1], **kw))  # warm-up
    n = 2 if t0 < 0.5 else 1  # the least of two, unless the calls are long
    tA = min(_clock(jac_call(run, list(range(m + 1)), **kw)) for _ in range(n))
    tB = min(_clock(jac_call(run, [m], **kw)) for _ in range(n))
    tC = min(_clock(jac_call(run, [2 * m], **kw)) for _ in range(n))
    per_lag = max(0.0, (tA - tB) / m)
    per_step = max(0.0, (tC - tB) / m)
    fixed = max(0.0, tB - per_step * m - per_lag)
    return {"m": m, "fixed_s": fixed, "per_step_s": per_step, "per_lag_s": per_lag}


def estimate(cm: dict, lags: list[int]) -> float:
    return cm["fixed_s"] + cm["per_step_s"] * max(lags) + cm["per_lag_s"] * len(set(lags))


# ---- (d) the naive reference -----------------------------------------------------------------------------------
def naive_lag(run, k: int, b: int, return_svals: bool = False):
    """Seconds for d state_{T-1} / d state_{T-1-k} of the first b sequences by autograd.functional.jacobian
    (one call: re-run the k steps from state_{T-1-k}), then the same singular values as the engine keeps
    (h->h block; for the LSTM also the whole [h; c] state and the c->c block)."""
    cell = run.cell
    T = len(run.xp)
    H = cell.hidden_size
    is_lstm = len(run.states[0]) == 2
    start = tuple(s[:b].clone() for s in run.states[T - k])  # states[t + 1] = state_t: this is state_{T-1-k}
    xs = [run.xp[t][:b] for t in range(T - k, T)]

    def f(*state):
        for xp_t in xs:
            state = cell.step(xp_t, state)
        return torch.cat(state, -1)  # (b, S)

    t0 = time.perf_counter()
    J = torch.autograd.functional.jacobian(f, start)  # per input: (b, S, b, H)
    J = torch.cat(J, -1) if isinstance(J, tuple) else J  # (b, S, b, S)
    Jb = torch.diagonal(J, dim1=0, dim2=2).permute(2, 0, 1)  # (b, S, S): each sequence's own block
    sv = torch.linalg.svdvals(Jb[:, :H, :H])
    if is_lstm:
        torch.linalg.svdvals(Jb)
        torch.linalg.svdvals(Jb[:, H:, H:])
    dt = time.perf_counter() - t0
    return (dt, sv) if return_svals else dt


def naive_check(run, b: int) -> dict:
    """The naive reference computes what (c) computes: top singular value at one lag, both ways (log10)."""
    from analysis.jacobians import jacobian_products

    T = len(run.xp)
    k = min(8, T - 1)
    _, sv = naive_lag(run, k, b, return_svals=True)
    naive = torch.log10(sv[:, 0].double()).mean().item()  # geometric mean over the batch, as the engine
    res = jacobian_products(run, lags=[k], batch=b, n_singular=1, lyapunov_k=0)
    return {"lag": k, "naive_log10_sigma_max": naive, "engine_log10_sigma_max": float(res.spectral_norm[0])}


def naive_reference(run, b: int, lag_set: list[int], limit_s: float, budget_s: float) -> dict:
    """Time lags 1, 2, 4, 8, ... and T-1 (skipping any predicted over 2 x limit_s, stopping after budget_s),
    fit t(k) = a + s k by least squares and sum it over lag_set. 'over_limit': one lag takes > limit_s,
    so the caller skips larger sizes."""
    T = len(run.xp)
    cand = sorted({2 ** i for i in range(int(math.log2(max(1, T - 1))) + 1)} | {T - 1})
    cand = [k for k in cand if 1 <= k <= T - 1]
    pts: list[tuple[int, float]] = []
    over = False
    spent = 0.0

    def fit():
        if len(pts) == 1:
            return pts[0][1], 0.0  # a lag of one step: mostly the per-call and per-row cost
        ks = np.array([p[0] for p in pts], float)
        ts = np.array([p[1] for p in pts], float)
        slope, icpt = np.polyfit(ks, ts, 1)
        if slope < 0:  # noise: flat
            return float(ts.mean()), 0.0
        if icpt < 0:  # noise: through the origin
            return 0.0, float((ks @ ts) / (ks @ ks))
        return float(icpt), float(slope)

    for k in cand:
        if pts:
            a, sl = fit()
            # with one point the slope is unknown: bound it by proportionality (t ~ t1 * k)
            pred = pts[0][1] * k / pts[0][0] if len(pts) == 1 else a + sl * k
            if pred > 2 * limit_s:  # larger lags only cost more
                over = True
                break
        t = naive_lag(run, k, b)
        pts.append((k, t))
        spent += t
        if t > limit_s:
            over = True
            break
        if spent > budget_s and len(pts) >= 2:
            break
    if not pts:
        return {"measured": [], "over_limit": True, "total_s": None}
    a, sl = fit()
    total = float(sum(a + sl * k for k in lag_set))
    return {"measured": [{"lag": k, "s": t} for k, t in pts], "over_limit": over, "total_s": total,
            "fit": {"intercept_s": a, "per_step_s": sl}}


# ---------------------------------------------------------------------------------------------------------------
# subprocess measurements: (e), the default view, the long case
# ---------------------------------------------------------------------------------------------------------------
def _vm_kib(field: str, pid: str | int = "self") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def child_main(spec: dict) -> None:
    """Runs in a fresh interpreter; prints one CHILD_MARK line of JSON."""
    setup_torch()
    t0 = time.perf_counter()
    from analysis.config import ExperimentConfig
    from analysis.experiment import run_comparison, run_experiment
    import_s = time.perf_counter() - t0
    cfg = ExperimentConfig.from_dict(spec["config"])
    base_kib = _vm_kib("VmRSS")
    out = {"import_s": import_s, "base_rss_kib": base_kib}
    times = []
    res = None
    for _ in range(max(1, spec.get("repeats", 1))):
        res = None
        gc.collect()
        t = time.perf_counter()
        res = run_comparison(cfg) if spec["kind"] == "comparison" else run_experiment(cfg)
        times.append(time.perf_counter() - t)
    out["times_s"] = times
    # The peak RSS is VmHWM, the high-water mark of this process's own memory. ru_maxrss is kept for reference
    # only: Linux carries the parent's RSS at fork across exec into it, so it over-reports in a child.
    out["ru_maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    out["vmhwm_kib"] = _vm_kib("VmHWM")
    out["peak_rss_kib"] = out["vmhwm_kib"] or out["ru_maxrss_kib"]
    if spec["kind"] == "experiment":
        j = res.jac
        out["nonfinite"] = res.nonfinite
        out["spectral_norm_finite"] = bool(np.isfinite(j.spectral_norm).all())
        out["log10_spectral_norm_range"] = [float(np.nanmin(j.spectral_norm)), float(np.nanmax(j.spectral_norm))]
        out["grad_norm_finite"] = bool(np.isfinite(res.grad.grad_norm).all())
        gn = res.grad.grad_norm[np.isfinite(res.grad.grad_norm) & (res.grad.grad_norm > 0)]
        out["grad_norm_range"] = [float(gn.min()), float(gn.max())] if len(gn) else None
        out["grad_norm_zero_steps"] = int((res.grad.grad_norm == 0).sum())
        if j.state_spectral_norm is not None:
            out["state_spectral_norm_finite"] = bool(np.isfinite(j.state_spectral_norm).all())
        if j.cell_full is not None:
            out["cell_full_finite"] = bool(np.isfinite(j.cell_full).all())
        out["n_lags"] = len(j.lag)
        out["timings"] = res.timings
        out["method"] = j.method
    else:
        out["cells"] = list(res)
        out["timings"] = {c: r.timings for c, r in res.items()}
    print(CHILD_MARK + json.dumps(out), flush=True)


def run_child(spec: dict, timeout_s: float) -> dict:
    """Run child_main(spec) in a fresh interpreter; polls its VmHWM so a timed-out child still reports a peak."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    out = err = ""
    try:
        while True:
            try:
                out, err = proc.communicate(timeout=0.25)
                break
            except subprocess.TimeoutExpired:
                peak = max(peak, _vm_kib("VmHWM", proc.pid) or 0)
                if time.perf_counter() - t0 > timeout_s:
                    proc.kill()
                    out, err = proc.communicate()
                    return {"error": f"timed out after {timeout_s:.0f} s", "timed_out": True,
                            "wall_s": time.perf_counter() - t0, "vmhwm_polled_kib": peak}
    finally:
        if proc.poll() is None:  # interrupted: never leave the child running
            proc.kill()
            proc.wait()
    wall = time.perf_counter() - t0
    for line in out.splitlines():
        if line.startswith(CHILD_MARK):
            r = json.loads(line[len(CHILD_MARK):])
            r["wall_s"] = wall
            return r
    tail = (err or out).strip().splitlines()[-3:]
    return {"error": f"exit {proc.returncode}: " + " | ".join(tail), "wall_s": wall, "vmhwm_polled_kib": peak}


def dashboard_config():
    """The dashboard's default config: analysis/presets.py's 'default' preset if there is one, else None."""
    try:
        import analysis.presets as presets
    except ImportError:
        return None, "no analysis/presets.py"
    from analysis.config import ExperimentConfig

    found = None
    for name in ("PRESETS", "presets", "DEFAULT_PRESETS"):
        table = getattr(presets, name, None)
        if isinstance(table, dict) and "default" in table:
            found = table["default"]
            break
    if found is None:
        for fn in ("get_preset", "preset", "load_preset"):
            if callable(getattr(presets, fn, None)):
                try:
                    found = getattr(presets, fn)("default")
                    break
                except Exception:  # noqa: BLE001 - an unexpected API: fall back
                    pass
    if found is None and isinstance(getattr(presets, "DEFAULT", None), ExperimentConfig):
        found = presets.DEFAULT
    if found is not None and not isinstance(found, ExperimentConfig):
        for attr in ("config", "cfg"):
            if isinstance(getattr(found, attr, None), ExperimentConfig):
                found = getattr(found, attr)
                break
            if isinstance(found, dict) and isinstance(found.get(attr), (ExperimentConfig, dict)):
                found = found[attr]
                break
        if isinstance(found, dict):
            try:
                found = ExperimentConfig.from_dict(found)
            except Exception:  # noqa: BLE001
                found = None
    if isinstance(found, ExperimentConfig):
        return found, "analysis/presets.py 'default' preset"
    return None, "analysis/presets.py has no readable 'default' preset"


def experiment_config_for(cell: str, T: int, H: int):
    from analysis.config import ExperimentConfig

    preset, _ = dashboard_config()
    if preset is None:
        return ExperimentConfig(cell=cell, seq_len=T, hidden_size=H, batch_size=B)
    return preset.replace(cell=cell, compare=(), seq_len=T, hidden_size=H, batch_size=B)


def _non_default_fields(cfg) -> dict:
    from analysis.config import ExperimentConfig

    d0 = ExperimentConfig().to_dict()
    return {k: v for k, v in cfg.to_dict().items() if d0.get(k) != v}


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
    del run, model
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


# ---------------------------------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------------------------------
def verdict(ok) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def targets(rows, training, view, long) -> list[dict]:
    out = []
    ab = [r for r in rows if r.get("b_over_a") is not None]
    if ab:
        worst = max(ab, key=lambda r: r["b_over_a"])
        out.append({"target": f"(b)/(a) <= {TARGETS['b_over_a']} every cell and size",
                    "measured": f"max {worst['b_over_a']:.2f} ({worst['cell']} T={worst['T']} H={worst['H']}); "
                                f"{sum(r['b_over_a'] > TARGETS['b_over_a'] for r in ab)} of {len(ab)} over",
                    "ok": worst["b_over_a"] <= TARGETS["b_over_a"]})
    Tc, Hc = TARGETS["c_size"]
    cs = [r for r in rows if r["T"] == Tc and r["H"] == Hc]
    for r in cs:
        ex = " (extrapolated)" if r.get("c_extrapolated") else ""
        out.append({"target": f"(c)/(a) <= {TARGETS['c_over_a']:g} at T={Tc}, H={Hc}, {r['cell']}",
                    "measured": f"{r['c_over_a']:.2f}{ex}", "ok": r["c_over_a"] <= TARGETS["c_over_a"]})
    if not cs:
        out.append({"target": f"(c)/(a) <= {TARGETS['c_over_a']:g} at T={Tc}, H={Hc}", "measured": "not measured",
                    "ok": None})
    dc = [r for r in rows if r.get("d_over_c") is not None]
    if dc:
        worst = min(dc, key=lambda r: r["d_over_c"])
        out.append({"target": f"(d)/(c) >= {TARGETS['d_over_c']:g} wherever (d) runs",
                    "measured": f"min {worst['d_over_c']:.1f} ({worst['cell']} T={worst['T']} H={worst['H']}, "
                                "(d) extrapolated)", "ok": worst["d_over_c"] >= TARGETS["d_over_c"]})
    else:
        out.append({"target": f"(d)/(c) >= {TARGETS['d_over_c']:g}", "measured": "not measured", "ok": None})
    if long and "peak_rss_kib" in long:
        gib = long["peak_rss_kib"] / 2**20
        fb = " (fallback config, see above)" if long.get("fallback") else ""
        out.append({"target": f"long case peak RSS <= {TARGETS['long_rss_gib']:g} GiB",
                    "measured": f"{gib:.2f} GiB{fb}", "ok": gib <= TARGETS["long_rss_gib"]})
        fin = long.get("nonfinite") is None and long.get("spectral_norm_finite", False)
        out.append({"target": "long case nonfinite is null and spectral norms finite",
                    "measured": f"nonfinite={long.get('nonfinite')}, spectral norms finite="
                                f"{long.get('spectral_norm_finite')}{fb}", "ok": fin})
    elif long:
        polled = long.get("vmhwm_polled_kib", 0) / 2**20
        out.append({"target": f"long case peak RSS <= {TARGETS['long_rss_gib']:g} GiB",
                    "measured": f"{long.get('error')}; peak RSS so far {polled:.2f} GiB", "ok": None})
    else:
        out.append({"target": f"long case peak RSS <= {TARGETS['long_rss_gib']:g} GiB", "measured": "skipped",
                    "ok": None})
    for c, t in (training or {}).items():
        out.append({"target": f"training >= {TARGETS['train_steps_s']:g} steps/s ({c})",
                    "measured": f"{t['steps_per_s']:.1f} steps/s", "ok": t["steps_per_s"] >= TARGETS["train_steps_s"]})
    if view and "times_s" in view:
        cold = view["times_s"][0]
        out.append({"target": f"default view (cold run_comparison) <= {TARGETS['default_view_s']:g} s",
                    "measured": f"{cold:.2f} s", "ok": cold <= TARGETS["default_view_s"]})
    elif view:
        out.append({"target": f"default view <= {TARGETS['default_view_s']:g} s", "measured": view.get("error"),
                    "ok": None})
    return out


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
