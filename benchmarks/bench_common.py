"""Benchmark parts: constants, timing (interleaved medians, paired ratios), the model and the engine calls timed."""
from __future__ import annotations

import dataclasses
import gc
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # noqa: F841
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

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
    """The engine's gradient stage as run_experiment runs it (analysis.gradient_stage: the chain-only route for a
    last-step loss on one layer, backprop + the exact chain otherwise)."""
    from analysis.gradient_stage import gradient_stage

    loss_steps = batch.spec.loss_steps if cfg.loss_steps == "auto" else cfg.loss_steps

    def f():
        return gradient_stage(cfg, batch, model, loss_steps=loss_steps)[1]
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
