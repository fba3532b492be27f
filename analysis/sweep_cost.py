r"""The whole cost of a sweep, checked against the host's limits before its first point runs.

A point (axis values, seed) costs what ``analysis.limits`` estimates for one run of its config: ``estimate``
when an analysis metric is asked, plus ``training_cost`` over ``train_steps`` when a training metric is. The
seed changes no size, so each combination of axis values is estimated once and counted once per seed::

    flops  = sum over points p of flops(p)                       (every point x seed still to run)
    memory = sum of the w largest memory(p), w = min(workers, points)   (w processes side by side)

The limits are the host's own (``GDLAB_MAX_GFLOP`` / ``GDLAB_MAX_MEMORY_MB``, ``limits.current()``): the whole
sweep must fit what one analysis may use, as a sweep holds the machine as long as its points together.
``sweep()`` calls ``check_sweep`` before anything runs (the command line then exits 2 with one line;
``--no-limits`` or ``GDLAB_LIMITS=off`` lift it); the dashboard can call ``sweep_cost`` to show the estimate
before the click.
"""
from __future__ import annotations


from .limits import Cost, LimitExceeded, Limits, _mb, _seconds, current, estimate, training_cost
from .sweep_points import ANALYSIS_METRICS, TRAINING_METRICS, point_views

HOW = ("raise it with GDLAB_MAX_GFLOP / GDLAB_MAX_MEMORY_MB (or GDLAB_LIMITS=off) where it runs, or --no-limits "
       "on the command line")


def point_cost(config, metrics) -> Cost:
    """One point's cost: the analysis (if an analysis metric is asked) plus its training (if a training one is)."""
    costs = []
    if any(m in ANALYSIS_METRICS for m in metrics):
        costs.append(estimate(config, views=point_views(metrics)))
    if any(m in TRAINING_METRICS for m in metrics):
        costs.append(training_cost(config, config.train_steps))
    return Cost(max(c.memory_bytes for c in costs), sum(c.flops for c in costs))


def sweep_cost(plan, keys=None, workers: int = 1, cost_fn=None) -> Cost:
    """The whole cost of running ``keys`` (default: every point of ``plan``, an ``analysis.sweep.Plan``) with
    ``workers`` processes side by side (``cost_fn(config, metrics)``: a point's Cost, default ``point_cost``).
    ``parts``: ``points`` (how many), ``point_gflop_max`` and
    ``point_memory_max`` (bytes) of the costliest point, and ``costliest`` (its axis values, as 'field=value')."""
    keys = plan.keys() if keys is None else keys
    counts: dict[tuple, int] = {}
    for k in keys:
        combo = tuple(k[a.field] for a in plan.axes)
        counts[combo] = counts.get(combo, 0) + 1
    flops, mems, top = 0.0, [], (None, -1.0)
    for combo, n in counts.items():
        c = (cost_fn or point_cost)(plan.config.replace(**{a.field: v for a, v in zip(plan.axes, combo)}),
                                    plan.metrics)
        flops += n * c.flops
        mems += [c.memory_bytes] * min(n, max(1, workers))
        if c.flops > top[1]:
            top = (combo, c.flops)
    w = min(max(1, workers), len(mems))
    memory = sum(sorted(mems, reverse=True)[:w]) if mems else 0.0
    costliest = " ".join(f"{a.field}={v}" for a, v in zip(plan.axes, top[0])) if top[0] is not None else ""
    return Cost(memory, flops, {"points": len(keys), "point_gflop_max": top[1] / 1e9,
                                "point_memory_max": max(mems, default=0.0), "costliest": costliest})


def _shape(plan, n: int) -> str:
    axes = " x ".join(f"{a.field} ({len(a.values)} values)" for a in plan.axes)
    s = len(plan.seeds)
    return f"this sweep ({n} runs: {axes} x {s} seed{'s' if s != 1 else ''})"


def check_sweep(plan, keys=None, workers: int = 1, limits: Limits | None = None, cost_fn=None) -> Cost:
    """Raise LimitExceeded (one line: the total in GFLOP and MB, the limit, how to lower it) if the whole sweep
    is over the host's limits; else its Cost (see ``sweep_cost``)."""
    limits = current() if limits is None else limits
    cost = sweep_cost(plan, keys, workers, cost_fn)
    p = cost.parts
    what = _shape(plan, p["points"])
    total = (f"{cost.gflop:,.0f} GFLOP in all (estimate, ~{_seconds(cost.flops)} on one core) and "
             f"{_mb(cost.memory_bytes)} of memory at once")
    lower = (f"fewer values or seeds (--vary ...:count, --seeds), smaller sizes (the costliest point, "
             f"{p['costliest']}, is {p['point_gflop_max']:,.0f} GFLOP)")
    if limits.max_gflop is not None and cost.gflop > limits.max_gflop:
        raise LimitExceeded(f"{what} would take {total}, above this host's limit of {limits.max_gflop:,.0f} GFLOP: "
                            f"lower it with {lower}, or {HOW}")
    if limits.max_memory_mb is not None and cost.memory_mb > limits.max_memory_mb:
        fewer = "fewer --workers, " if workers > 1 else ""
        raise LimitExceeded(f"{what} would need {total}, above this host's limit of "
                            f"{_mb(limits.max_memory_mb * 2**20)}: lower it with {fewer}{lower}, or {HOW}")
    return cost


__all__ = ["sweep_cost", "check_sweep", "point_cost"]
