"""Live training's share of the server (no Streamlit here; dashboard/views/training.py draws it).

A visitor's trainers (one per cell and training variant) advance by ticks of the page's fragment. Each tick passes
the scheduler's door as ``INTERACTIVE`` work under the visitor's id with its estimate
(``analysis.limits.training_cost`` of every trainer, on their real shapes), and is bounded twice:

    per tick     estimate(steps per tick)  <= TICK_S seconds    (more steps asked: fewer per tick, said on the page;
                                                                 one step above TICK_S: refused, one line)
    per session  flops spent + the next tick <= GDLAB_MAX_GFLOP  (the host's limit of one run, for all the
                                                                 session's training together, Reset included)

so the step budget of a session is ``floor((limit - spent) / one step of every trainer)``; "0 = no limit" means
"up to the budget". Seconds are flops at ``analysis.limits.GFLOP_PER_S``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from analysis.limits import GFLOP_PER_S, Cost, LimitExceeded, current, training_cost

TICK_S = 2.0  # the longest a tick may be estimated to take (the page stays live, the slot is given back)


@dataclass(frozen=True)
class TickPlan:
    per_tick: int  # steps each trainer takes this tick
    budget_steps: int | None  # steps each trainer may still take in this session (None: no limit)
    step: Cost  # one step of every trainer
    notes: tuple[str, ...]

    def cost(self) -> Cost:
        return Cost(self.step.memory_bytes, self.step.flops * self.per_tick)


def step_cost(configs) -> Cost:
    """One step of every trainer: the flops add, the memory is the largest trainer's (they step in turn)."""
    costs = [training_cost(c, 1) for c in configs]
    return Cost(max(c.memory_bytes for c in costs), sum(c.flops for c in costs))


def _s(flops: float) -> float:
    return flops / (GFLOP_PER_S * 1e9)


def plan_tick(configs, per_tick: int, spent_flops: float, limits=None) -> TickPlan:
    """The steps of the next tick, or LimitExceeded (one line) when one step is above TICK_S or the session's
    budget is spent."""
    limits = current() if limits is None else limits
    step = step_cost(list(configs))
    c0 = list(configs)[0]
    if _s(step.flops) > TICK_S:
        raise LimitExceeded(
            f"one training step of {len(configs)} model{'s' if len(configs) > 1 else ''} at hidden_size="
            f"{c0.hidden_size}, batch_size={c0.batch_size}, seq_len={c0.seq_len} would take ~{_s(step.flops):,.1f} s "
            f"(estimate, {step.gflop:,.0f} GFLOP), above the live page's {TICK_S:g} s per tick: lower hidden_size, "
            "batch_size or seq_len")
    notes = []
    fit = max(1, int(TICK_S / max(_s(step.flops), 1e-12)))
    n = min(per_tick, fit)
    if n < per_tick:
        notes.append(f"{n} steps per tick, not {per_tick}: {per_tick} would take ~{_s(step.flops) * per_tick:,.1f} s "
                     f"(estimate), above {TICK_S:g} s per tick")
    budget = None
    if limits.max_gflop is not None:
        budget = max(0, math.floor((limits.max_gflop * 1e9 - spent_flops) / step.flops))
        if budget < 1:
            raise LimitExceeded(
                f"this session's training has used its budget of {limits.max_gflop:,.0f} GFLOP (the host's limit of "
                f"one run, GDLAB_MAX_GFLOP, counted for all the session's training together, Reset included): "
                "raise GDLAB_MAX_GFLOP where the server starts, or train on the command line")
        n = min(n, budget)
    return TickPlan(n, budget, step, tuple(notes))
