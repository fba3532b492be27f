"""The door's express lane (dashboard/scheduler.py, rules 1, 4 and 5): short interactive work (a default page's first
chart, estimated at most EXPRESS_S) goes in past long first passes that have waited longer and past a head of the
line that waits for memory, while one slot per visitor and the memory budget still hold. Fake tickets in a Slots'
line: the tests assert which tickets may go in, and in which order, never how long anything took."""
from __future__ import annotations

import threading
import time

from dashboard.scheduler import BACKGROUND, EXPRESS_S, INTERACTIVE, Slots, Ticket


def ticket(visitor: str, seconds: float, waited: float = 0.0, mb: float = 0.0, kind: str = INTERACTIVE) -> Ticket:
    return Ticket(visitor, kind, seconds=seconds, memory_mb=mb, since=time.monotonic() - waited)


def line(slots: Slots, holders: list[Ticket], waiting: list[Ticket]) -> Slots:
    slots._holders, slots._queue = list(holders), list(waiting)
    return slots


def admit_order(slots: Slots) -> list[str]:
    """Admit, one at a time, whichever waiting ticket may go in (as the lock serialises the waiting threads),
    until none may: the visitors in the order they went in."""
    order = []
    while True:
        ready = [t for t in slots._queue if slots._admissible(t)]
        if not ready:
            return order
        t = ready[0]
        slots._queue.remove(t)
        slots._holders.append(t)
        order.append(t.visitor)


def heavy_first_passes(k: int) -> list[Ticket]:
    """k pages' long first passes (estimates 1.5-5.4 s, as the load test's heavy links) that waited 10-40 s."""
    return [ticket(f"heavy{i}", 1.5 + 0.4 * i, waited=40.0 - 3 * i) for i in range(k)]


def test_a_first_chart_goes_in_past_ten_long_first_passes_that_waited_longer():
    passes = heavy_first_passes(10)
    slots = line(Slots(2), passes[:2], passes[2:] + [ticket("plain", 0.26)])
    assert admit_order(slots) == ["plain"]  # both slots held: the express slot is its
    slots = line(Slots(2), [], heavy_first_passes(10) + [ticket("plain", 0.26)])
    assert admit_order(slots) == ["heavy0", "heavy1", "plain"]  # free slots go to the aged passes, plain next


def test_the_express_lane_position_is_shown_not_the_place_behind_long_work():
    heavy = heavy_first_passes(10)
    plain = ticket("plain", 0.26)
    slots = line(Slots(2), [ticket("a", 60.0), ticket("b", 60.0)], heavy + [plain])
    assert slots.position(plain) == 1  # not 11: it goes in at the latest through the express slot
    assert [slots.position(t) for t in heavy] == list(range(1, 11))  # the long passes keep their order
    second = ticket("plain2", 0.5)
    slots._queue.append(second)
    assert slots.position(second) == 2 and slots.position(plain) == 1  # shortest first within the lane too


def test_short_work_is_not_held_behind_a_head_that_waits_for_memory():
    slots = line(Slots(2, memory_mb=100.0), [ticket("a", 30.0, mb=60.0)],
                 [ticket("big", 5.0, waited=40.0, mb=60.0), ticket("plain", 0.26, mb=5.0), ticket("mid", 3.0, mb=5.0)])
    assert admit_order(slots) == ["plain"]  # "big" waits for memory; "mid" (not express) may not pass it
    assert [t.visitor for t in slots._queue] == ["big", "mid"]
    slots.release(slots._holders[0])  # "a" ends: 5 of 100 MB in use
    assert admit_order(slots) == ["big"]  # the head goes first, then the slots are full (big and plain)


def test_the_express_lane_still_keeps_the_memory_budget_and_one_slot_per_visitor():
    slots = line(Slots(2, memory_mb=100.0), [ticket("a", 30.0, mb=60.0), ticket("b", 30.0, mb=30.0)],
                 [ticket("plain", 0.26, mb=20.0)])
    assert admit_order(slots) == []  # 90 + 20 MB > 100 MB: it waits for memory like everyone
    slots = line(Slots(2), [ticket("a", 30.0), ticket("b", 30.0, kind=BACKGROUND)], [ticket("b", 0.26)])
    assert admit_order(slots) == []  # b's background job holds b's one slot


def test_one_express_slot_shortest_first_with_ageing_and_never_for_background_work():
    slots = line(Slots(2), [ticket("a", 30.0), ticket("b", 30.0)],
                 [ticket("slow", EXPRESS_S), ticket("quick", 0.1), ticket("bg", 0.1, kind=BACKGROUND)])
    assert admit_order(slots) == ["quick"]  # one express slot, the shortest first
    slots.release(slots._holders[-1])
    assert admit_order(slots) == ["slow"]  # background work is never express
    slots = line(Slots(2), [ticket("a", 30.0), ticket("b", 30.0)],
                 [ticket("waited", 0.9, waited=5.0), ticket("quick", 0.1)])
    assert admit_order(slots) == ["waited"]  # 0.9 - 5 < 0.1: ageing in the lane, nobody waits forever


def test_through_acquire_a_first_chart_overtakes_a_head_waiting_for_memory():
    class Est:  # a stand-in for analysis.limits.Cost
        def __init__(self, seconds, mb):
            self.flops, self.memory_mb = seconds * 25e9, mb

    slots = Slots(2, memory_mb=100.0)
    running = slots.acquire(visitor="a", cost=Est(30.0, 60.0))
    big = ticket("big", 5.0, waited=40.0, mb=60.0)  # the head of the line (aged), waiting for memory
    slots._queue.append(big)
    got = []
    plain = threading.Thread(target=lambda: got.append(slots.acquire(poll_s=0.01, visitor="plain",
                                                                     cost=Est(0.26, 5.0))), daemon=True)
    plain.start()
    plain.join(10)
    admitted_first = bool(got)
    with slots._cv:  # the head leaves the line (its page closed): a blocked acquire above may go on and end
        slots._queue.remove(big)
        slots._cv.notify_all()
    plain.join(10)
    assert admitted_first and slots._queue == [] and [t.visitor for t in slots._holders] == ["a", "plain"]
    slots.release(got[0])
    slots.release(running)
    assert slots.running == 0 and slots.waiting == 0
