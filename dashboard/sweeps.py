"""Atlas sweeps through the scheduler's door (no Streamlit here; dashboard/views/atlas.py draws them).

Before the click, the page shows the sweep's whole estimate (the sum over its points and seeds of one run's
estimate, ``whole_cost``) and refuses a sweep over the host's limits (``GDLAB_MAX_GFLOP`` / ``GDLAB_MAX_MEMORY_MB``:
a sweep holds the server as long as its points together). On the click the sweep runs as a background job
(dashboard/background.py, lane ``"sweep"``: it survives the page's reruns, stops when the visitor leaves) whose
executor (``DoorExecutor``) passes each point through the door as ``BACKGROUND`` work under the visitor's id: one
point per slot, the slot given back between points, so pages' first charts and other visitors go first. With
``GDLAB_RAY_ADDRESS`` each point runs as a Ray task (dashboard/remote.py).
"""
from __future__ import annotations

import json

from analysis.config import ExperimentConfig
from analysis.limits import Cost, LimitExceeded, current, _mb, _seconds

from . import background, remote, scheduler


def point_cost(config: ExperimentConfig, metrics) -> Cost:
    """One point's estimate: its analysis (any analysis metric) plus its training (any training metric)."""
    from analysis import sweep_cost
    return sweep_cost.point_cost(config, metrics)


def whole_cost(plan) -> Cost:
    """The whole sweep's estimate: flops summed over every point and seed, memory of the costliest point (the
    points run one at a time here)."""
    from analysis import sweep_cost
    return sweep_cost.sweep_cost(plan, workers=1)


def check_whole(plan) -> Cost:
    """``whole_cost`` against the host's limits: LimitExceeded (one line naming the total and the limit)."""
    from analysis import sweep_cost
    return sweep_cost.check_sweep(plan, workers=1, limits=current())


def describe(cost: Cost) -> str:
    return f"{cost.gflop:,.0f} GFLOP in all (estimate, ~{_seconds(cost.flops)} on one core), {_mb(cost.memory_bytes)} " \
           "at once"


class DoorExecutor:
    """``analysis.sweep``'s executor for the dashboard: each point in turn, in its own slot of the door."""

    name = "door"

    def __init__(self, job: background.Job):
        self.job = job

    def describe(self) -> dict:
        return {"executor": "local", "workers": 1, "scheduler": "one point per slot of the dashboard's door"}

    def run(self, fn, tasks: list):
        for i, task in enumerate(tasks):
            cost = point_cost(ExperimentConfig.from_dict(task["config"]), task["metrics"])
            with scheduler.SLOTS.hold(background.waiter(self.job, "Sweep: "), visitor=self.job.owner,
                                      kind=scheduler.BACKGROUND, cost=cost, label="this sweep point"):
                self.job.check()
                result = remote.call(fn, task, check=self.job.check) if remote.enabled() else fn(task)
            yield i, result

    def close(self) -> None:
        pass


def job_key(plan_key: str) -> str:
    return json.dumps(["sweep", plan_key])


def start(session: str, plan, vary, plan_key: str) -> background.Job:
    """The sweep's job (started unless one runs for the same plan), watched by ``session``; the session's other
    sweep is dropped. Raises LimitExceeded (one line) when the whole sweep is over the host's limits."""
    check_whole(plan)

    def run(job: background.Job) -> dict:
        from analysis.sweep import sweep

        def progress(done, total, eta, point):
            left = f" · about {eta:.0f} s left" if eta is not None and done < total else ""
            job.progress(done / max(1, total), f"Sweep: {done}/{total} runs{left}")
        return sweep(plan.config, vary, len(plan.seeds), plan.metrics, executor=DoorExecutor(job), progress=progress)
    return background.watch(session, job_key(plan_key), run, lane="sweep")


__all__ = ["whole_cost", "check_whole", "describe", "DoorExecutor", "start", "LimitExceeded"]
