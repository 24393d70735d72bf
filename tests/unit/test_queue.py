from __future__ import annotations

from cloudlet.engine.queue import Backoff, WorkQueue


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_repeated_adds_coalesce_into_one_item():
    q = WorkQueue(FakeClock())
    for _ in range(5):
        q.add("berlin")
    assert q.depth() == 1
    assert q.get(timeout=0) == "berlin"
    assert q.get(timeout=0) is None


def test_an_active_key_is_not_handed_out_twice_but_requeued_on_done():
    q = WorkQueue(FakeClock())
    q.add("a")
    assert q.get(timeout=0) == "a"
    q.add("a")
    assert q.get(timeout=0) is None
    q.done("a")
    assert q.get(timeout=0) == "a"


def test_delayed_key_is_due_only_later_and_earlier_add_wins():
    clock = FakeClock()
    q = WorkQueue(clock)
    q.add("a", delay=60)
    assert q.get(timeout=0) is None
    q.add("a", delay=5)
    clock.now += 5
    assert q.get(timeout=0) == "a"


def test_failures_back_off_exponentially_and_success_resets():
    clock = FakeClock()
    q = WorkQueue(clock, Backoff(base=1, cap=8))
    delays = []
    for _ in range(5):
        q.add("a")
        assert q.get(timeout=0) == "a"
        q.done("a")
        delays.append(q.retry("a"))
        clock.now += 100
        assert q.get(timeout=0) == "a"
        q.done("a")
    assert delays == [1, 2, 4, 8, 8]
    q.forget("a")
    assert q.retry("a") == 1


def test_order_is_by_due_time():
    clock = FakeClock()
    q = WorkQueue(clock)
    q.add("late", delay=2)
    q.add("soon", delay=1)
    clock.now += 3
    assert [q.get(timeout=0), q.get(timeout=0)] == ["soon", "late"]


def test_close_wakes_waiters():
    q = WorkQueue()
    q.close()
    assert q.get() is None


def test_a_claim_fails_on_a_key_in_work_and_holds_a_key_off_workers():
    q = WorkQueue(FakeClock())
    q.add("a")
    assert q.get(timeout=0) == "a"
    assert not q.claim("a")  # a worker reconciles it: no hand-over now
    q.done("a")
    assert q.claim("b")
    q.add("b")
    assert q.get(timeout=0) is None  # held by the claim
    q.done("b")
    assert q.get(timeout=0) == "b"


def test_drop_forgets_what_was_queued_and_the_backoff() -> None:
    now = [0.0]
    q = WorkQueue(clock=lambda: now[0])
    q.add("a", 5.0)
    q.retry("b")
    q.drop("a")
    q.drop("b")
    assert q.depth() == 0
    now[0] = 100.0
    assert q.get(timeout=0) is None
    q.add("a")
    assert q.get(timeout=0) == "a"
