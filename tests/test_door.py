"""One door for all work (issue 20): the scheduler's admission rules (kinds, a slot kept for pages, one slot per
visitor, shortest first with ageing, the memory ceiling, leaving the line) and every kind of dashboard work passing
it with its estimate on its real shapes: page analyses, uploads, Atlas sweeps, live-training ticks."""
from __future__ import annotations

import io
import os
import threading
import time

import pytest
import torch

import dashboard.scheduler as scheduler
import dashboard.training_door as training_door
from analysis.config import ExperimentConfig
from analysis.limits import LimitExceeded, Limits, estimate, training_cost
from dashboard.scheduler import BACKGROUND, INTERACTIVE, Slots, Ticket
from rnn_models.config import ConfigError

from test_app import SMALL, app, ok


def _later(slots, **kw) -> tuple[threading.Thread, list]:
    """acquire in a thread (it waits); the list gets the ticket once admitted."""
    got = []
    t = threading.Thread(target=lambda: got.append(slots.acquire(poll_s=0.01, **kw)), daemon=True)
    t.start()
    time.sleep(0.05)
    return t, got


class Est:  # a stand-in for analysis.limits.Cost
    def __init__(self, seconds=0.0, mb=0.0):
        self.flops, self.memory_mb = seconds * 25e9, mb


# ---- admission --------------------------------------------------------------------------------------------
def test_a_slot_is_kept_for_pages_while_background_work_waits():
    slots = Slots(2)  # reserve 1: background work may hold one slot
    bg = slots.acquire(visitor="a", kind=BACKGROUND)
    t, got = _later(slots, visitor="b", kind=BACKGROUND)
    assert not got and slots.waiting == 1  # a slot is free, but it is the pages'
    page = slots.acquire(visitor="c", kind=INTERACTIVE, poll_s=0.01)  # a first chart goes in at once
    assert slots.running == 2
    slots.release(page)
    assert not got  # still only one background holder at a time
    slots.release(bg)
    t.join(2)
    assert got and got[0].kind == BACKGROUND


def test_no_visitor_holds_more_than_one_slot():
    slots = Slots(3)
    mine = slots.acquire(visitor="a")
    t, got = _later(slots, visitor="a")
    other = slots.acquire(visitor="b", poll_s=0.01)  # another visitor is not held up by a's second request
    assert not got and slots.running == 2
    slots.release(mine)
    t.join(2)
    assert got
    slots.release(got[0])
    slots.release(other)


def test_short_work_first_and_the_line_positions():
    slots = Slots(1)
    held = slots.acquire()
    positions = {}
    order = []

    def job(name, seconds):
        def wait(p):
            positions[name] = p
        t = slots.acquire(wait, poll_s=0.01, cost=Est(seconds), visitor=name)
        order.append(name)
        slots.release(t)

    long_ = threading.Thread(target=job, args=("long", 100.0))
    long_.start()
    time.sleep(0.05)
    short = threading.Thread(target=job, args=("short", 5.0))
    short.start()
    time.sleep(0.1)
    assert positions == {"long": 2, "short": 1}  # the short one is served first, and each is told so
    slots.release(held)
    long_.join(2)
    short.join(2)
    assert order == ["short", "long"]


def test_short_interactive_work_takes_the_express_slot():
    slots = Slots(2)
    held = [slots.acquire(visitor=v, cost=Est(60.0)) for v in ("a", "b")]  # every slot held by long work
    first_chart = slots.acquire(visitor="c", cost=Est(0.3), poll_s=0.01)  # a default page's first chart: no wait
    assert slots.running == 3
    t, got = _later(slots, visitor="d", cost=Est(0.3))  # one express slot only
    t2, got2 = _later(slots, visitor="e", kind=BACKGROUND, cost=Est(0.3))  # background work is never express
    assert not got and not got2
    slots.release(first_chart)
    t.join(2)
    assert got and not got2
    for h in held + got:
        slots.release(h)
    t2.join(2)
    assert got2


def test_a_long_ticket_that_waited_longer_than_the_gap_goes_first():
    slots = Slots(1)
    now = time.monotonic()
    slots._queue = [Ticket("long", seconds=30.0, since=now - 40), Ticket("short", seconds=1.0, since=now)]
    assert slots._next().visitor == "long"  # 30 - 40 < 1 - 0: ageing, nobody waits forever
    slots._queue[0].since = now - 5
    assert slots._next().visitor == "short"


def test_the_memory_ceiling_queues_and_refuses():
    slots = Slots(3, memory_mb=100.0, ceiling_mb=500.0, base_mb=400.0)
    a = slots.acquire(visitor="a", cost=Est(mb=60))
    reasons = []

    def wait(p):
        reasons.append(scheduler.waiting_reason())
    t = threading.Thread(target=lambda: slots.release(slots.acquire(wait, poll_s=0.01, visitor="b", cost=Est(mb=50))))
    t.start()
    time.sleep(0.1)
    assert t.is_alive() and "waiting for memory: 60 of 100 MB in use, 50 MB needed" in reasons[-1]
    slots.release(a)
    t.join(2)
    assert not t.is_alive()
    with pytest.raises(LimitExceeded, match=r"150 MB .*GDLAB_MAX_SERVER_MB=500 less 400 MB"):
        slots.acquire(visitor="c", cost=Est(mb=150), label="this analysis")
    assert slots.waiting == 0 and slots.running == 0


def test_server_ceiling_from_the_environment():
    assert scheduler.server_ceiling_mb({"GDLAB_MAX_SERVER_MB": "4096"}) == 4096
    assert scheduler.server_ceiling_mb({"GDLAB_MAX_SERVER_MB": "off"}) is None
    assert scheduler.server_ceiling_mb({}) > 0  # 3/4 of the machine's memory
    with pytest.raises(ConfigError, match="GDLAB_MAX_SERVER_MB='lots' must be a positive number"):
        scheduler.server_ceiling_mb({"GDLAB_MAX_SERVER_MB": "lots"})


def test_a_cancelled_background_job_leaves_the_line(monkeypatch):
    import dashboard.background as background
    from analysis.progress import Cancelled
    slots = Slots(1)
    monkeypatch.setattr(scheduler, "SLOTS", slots)
    held = slots.acquire(visitor="someone")
    job = background.watch("door-s1", "door-job", lambda j: background.run_parts(
        j, [("door-key", "", lambda progress: 1, Est(1.0))]))
    time.sleep(0.3)
    assert slots.waiting == 1 and "position 1 in line" in job.text
    background.drop("door-s1")  # the visitor moved on
    job.done.wait(5)
    assert isinstance(job.error, Cancelled) and slots.waiting == 0
    slots.release(held)


# ---- every kind of work passes the door with its estimate ---------------------------------------------------
class Recording(Slots):
    def __init__(self):
        super().__init__(2)
        self.seen = []

    def acquire(self, wait=None, poll_s=0.5, **kw):
        self.seen.append(kw)
        return super().acquire(wait, poll_s, **kw)


@pytest.fixture
def door(monkeypatch):
    rec = Recording()
    monkeypatch.setattr(scheduler, "SLOTS", rec)
    return rec


def test_a_page_analysis_passes_with_its_estimate_and_visitor(door):
    import json

    from analysis.presets import PRESETS
    from dashboard.compute import analysis_key
    at = ok(app(**SMALL, seed="9101", compare="rnn"))
    page = PRESETS["default"].config.replace(cell="rnn", compare=(), seq_len=12, hidden_size=6, batch_size=4,
                                             seed=9101)
    clean = ExperimentConfig.from_dict(json.loads(analysis_key(page)))
    (kw,) = [k for k in door.seen if k.get("kind") == INTERACTIVE]
    assert kw["visitor"] == at.session_state["gdlab_session"]
    assert kw["cost"].flops == estimate(clean).flops and kw["cost"].memory_bytes == estimate(clean).memory_bytes


def _zero_stride_lstm(H: int) -> bytes:
    z = torch.zeros(1)
    buf = io.BytesIO()
    torch.save({"weight_ih_l0": z.expand(4 * H, 8), "weight_hh_l0": z.expand(4 * H, H), "bias_ih_l0": z.expand(4 * H),
                "bias_hh_l0": z.expand(4 * H)}, buf)
    return buf.getvalue()


def test_a_zero_stride_upload_is_refused_by_its_real_shapes_before_it_runs(door, monkeypatch):
    import analysis.own_model as own
    ran = []
    monkeypatch.setattr(own, "analyse_files", lambda *a, **k: ran.append(1))
    at = ok(app(**SMALL, compare="rnn", seed="9102"))
    data = _zero_stride_lstm(4096)
    assert len(data) < 4096  # a few bytes declaring 16384 x 4096 weights
    at.file_uploader(key="own_sd").upload("z.pt", data, "application/octet-stream").run()
    errors = [e.value for e in ok(at).error]
    assert any("Your model cannot be analysed" in e and "hidden_size=4096" in e and "GFLOP" in e for e in errors), errors
    assert not ran and not [k for k in door.seen if k.get("label") == "your model's analysis"]


def test_an_upload_runs_in_the_door_with_the_estimate_of_its_file_and_inputs(door):
    import numpy as np
    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(torch.nn.GRU(3, 5).state_dict(), buf)
    x = np.random.default_rng(0).standard_normal((7, 2, 3))
    xb = io.BytesIO()
    np.save(xb, x)
    at = ok(app(**SMALL, compare="rnn", seed="9103"))
    at.file_uploader(key="own_inputs").upload("x.npy", xb.getvalue(), "application/octet-stream")
    at.file_uploader(key="own_sd").upload("g.pt", buf.getvalue(), "application/octet-stream").run()
    ok(at)
    assert not at.error, [e.value for e in at.error]
    (kw,) = [k for k in door.seen if k.get("label") == "your model's analysis"]
    page_cfg = ExperimentConfig(cell="gru", hidden_size=5, input_size=3, seq_len=7, batch_size=2)
    assert kw["cost"].flops == pytest.approx(estimate(page_cfg).flops, rel=0.05)  # H from the file, T, B from x
    assert kw["visitor"] == at.session_state["gdlab_session"]


def atlas(**params):
    at = app(**{**SMALL, "compare": "rnn", **params})
    at.session_state["view"] = "Atlas"
    return ok(at.run())


def test_a_sweep_over_the_host_limit_is_refused_with_its_whole_estimate_before_the_click():
    at = atlas(seed="9104")
    at.selectbox(key="atlas").set_value("custom").run()
    at.selectbox(key="atlas_f1").set_value("hidden_size").run()
    at.text_input(key="atlas_s1_hidden_size").set_value("493:512:20").run()
    at.number_input(key="atlas_seeds").set_value(20).run()
    ok(at)
    errors = " ".join(e.value for e in at.error)
    assert "This sweep cannot run here" in errors and "400 runs" in errors and "GFLOP in all" in errors
    assert not [b for b in at.button if b.key == "atlas_run"]


def test_a_sweep_shows_its_whole_estimate_and_runs_each_point_through_the_door(door):
    from analysis.sweep import make_plan
    from analysis.sweep_cost import sweep_cost
    at = atlas(seed="9105")
    at.selectbox(key="atlas").set_value("custom").run()
    at.text_input(key="atlas_s1_init_scale").set_value("0.5,1.5").run()
    caption = " ".join(c.value for c in at.caption)
    assert "Whole sweep:" in caption and "GFLOP in all" in caption
    at.button(key="atlas_run").click().run()
    ok(at)
    points = [k for k in door.seen if k.get("label") == "this sweep point"]
    assert len(points) == 4 and all(k["kind"] == BACKGROUND for k in points)  # 2 values x 2 seeds, one slot each
    plan = make_plan(ExperimentConfig(cell="rnn", seq_len=12, hidden_size=6, batch_size=4, seed=9105),
                     "init_scale=0.5,1.5", 2, ("lyapunov_max",))
    assert sum(k["cost"].flops for k in points) == pytest.approx(sweep_cost(plan).flops, rel=0.5)


def test_a_training_tick_over_the_tick_limit_stops_with_one_line(door, monkeypatch):
    monkeypatch.setattr(training_door, "TICK_S", 1e-9)
    at = app(**SMALL, compare="rnn", seed="9106")
    at.session_state["view"] = "Live training"
    ok(at.run())
    at.button(key="train_start").click().run()
    errors = " ".join(e.value for e in ok(at).error)
    assert "Training stopped: one training step" in errors and "per tick" in errors
    assert not [k for k in door.seen if k.get("label") == "this training tick"]


def test_a_training_step_passes_the_door_and_counts_against_the_session(door):
    at = app(**SMALL, compare="rnn", seed="9107")
    at.session_state["view"] = "Live training"
    ok(at.run())
    at.button(key="train_step").click().run()
    ok(at)
    (kw,) = [k for k in door.seen if k.get("label") == "this training tick"]
    assert kw["kind"] == INTERACTIVE and kw["visitor"] == at.session_state["gdlab_session"]
    trainer = next(iter(at.session_state["trainers"].values()))
    assert len(trainer.records) == 1
    assert at.session_state["train_flops"] == pytest.approx(training_cost(trainer.config, 1).flops)


# ---- live training's bounds -----------------------------------------------------------------------------------
def test_plan_tick_lowers_the_steps_per_tick_and_keeps_a_session_budget():
    cfg = ExperimentConfig(cell="rnn", task="adding", seq_len=50, hidden_size=32, batch_size=8)
    one = training_cost(cfg, 1).flops
    fit = int(training_door.TICK_S / (one / 25e9))
    plan = training_door.plan_tick([cfg], fit + 5, 0.0, Limits(None, None))
    assert plan.per_tick == fit and plan.budget_steps is None and f"{fit} steps per tick, not {fit + 5}" in plan.notes[0]
    limits = Limits(None, 10 * one / 1e9)  # room for 10 steps in the whole session
    plan = training_door.plan_tick([cfg], 4, 7 * one, limits)
    assert plan.budget_steps == 3 and plan.per_tick == 3
    with pytest.raises(LimitExceeded, match="used its budget"):
        training_door.plan_tick([cfg], 4, 10 * one, limits)


def test_plan_tick_refuses_a_step_longer_than_a_tick():
    big = ExperimentConfig(cell="rnn", task="adding", seq_len=10, hidden_size=2048, batch_size=1024)
    with pytest.raises(LimitExceeded, match=r"hidden_size=2048, batch_size=1024.*above the live page's 2 s per tick"):
        training_door.plan_tick([big], 50, 0.0, Limits(None, None))


def test_gdlab_dashboard_ray_sets_the_servers_address(monkeypatch):
    import gdlab

    class Exec(Exception):  # exec never returns: nothing after it may run (no server is started)
        pass

    def execv(exe, cmd):
        raise Exec(os.environ.get("GDLAB_RAY_ADDRESS"))
    monkeypatch.delenv("GDLAB_RAY_ADDRESS", raising=False)
    monkeypatch.setattr(gdlab.os, "execv", execv)
    monkeypatch.setattr(gdlab.os, "name", "posix")
    monkeypatch.setattr(gdlab.subprocess, "call", lambda cmd: pytest.fail("the server was started"))
    try:
        with pytest.raises(Exec, match="ray://head:10001"):
            gdlab.main(["dashboard", "--headless", "--ray", "ray://head:10001"])
    finally:  # gdlab.main set it itself: a monkeypatch.delenv here would put it back at teardown for later tests
        os.environ.pop("GDLAB_RAY_ADDRESS", None)
