"""The daemon's work queue: keys only, coalesced, with per-key backoff.

Like controller-runtime's workqueue, it carries a cloudlet's name and never
what changed: the reconciler re-reads desired and actual state every time,
so ten events for one cloudlet are one reconcile, and a lost event is healed
by the next periodic resync. A key being processed is never handed to a
second worker; if it is added meanwhile, it is queued again when released.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable

import attrs


@attrs.frozen
class Backoff:
    base: float = 1.0
    cap: float = 300.0

    def delay(self, failures: int) -> float:
        return float(min(self.cap, self.base * 2 ** max(0, failures - 1)))


class WorkQueue:
    def __init__(
        self, clock: Callable[[], float] = time.monotonic, backoff: Backoff | None = None
    ) -> None:
        self._clock = clock
        self._backoff = backoff or Backoff()
        self._cond = threading.Condition()
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._active: set[str] = set()
        self._again: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._closed = False

    def add(self, key: str, delay: float = 0.0) -> None:
        """Ask for ``key`` to be reconciled no later than ``delay`` from now."""
        with self._cond:
            at = self._clock() + delay
            if key in self._active:
                self._again[key] = min(at, self._again.get(key, at))
                return
            if key in self._due and self._due[key] <= at:
                return
            self._due[key] = at
            heapq.heappush(self._heap, (at, key))
            self._cond.notify()

    def retry(self, key: str) -> float:
        """After a failure: requeue with exponential backoff; returns the delay."""
        with self._cond:
            self._failures[key] = self._failures.get(key, 0) + 1
            delay = self._backoff.delay(self._failures[key])
        self.add(key, delay)
        return delay

    def forget(self, key: str) -> None:
        """After a success: the next failure starts the backoff afresh."""
        with self._cond:
            self._failures.pop(key, None)

    def drop(self, key: str) -> None:
        """After a terminal error: nothing queued for ``key`` until it is added anew."""
        with self._cond:
            self._failures.pop(key, None)
            self._due.pop(key, None)  # its heap entry is skipped as superseded
            self._again.pop(key, None)

    def get(self, timeout: float | None = None) -> str | None:
        """The next due key (marked active), or None on timeout or close."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while not self._closed:
                key = self._pop_due()
                if key is not None:
                    return key
                wait = self._next_wait(deadline)
                if wait is not None and wait <= 0:
                    return None
                self._cond.wait(wait)
            return None

    def _pop_due(self) -> str | None:
        now = self._clock()
        while self._heap and self._heap[0][0] <= now:
            at, key = heapq.heappop(self._heap)
            if self._due.get(key) != at:
                continue  # superseded by an earlier entry
            del self._due[key]
            self._active.add(key)
            return key
        return None

    def _next_wait(self, deadline: float | None) -> float | None:
        now = self._clock()
        waits = [self._heap[0][0] - now] if self._heap else []
        if deadline is not None:
            waits.append(deadline - now)
        return max(0.0, min(waits)) if waits else None

    def claim(self, key: str) -> bool:
        """Mark ``key`` active, as a worker would, unless one holds it; ``done`` ends it.

        Lets the daemon hand a cloudlet over only between two reconciles of it.
        """
        with self._cond:
            if key in self._active:
                return False
            self._active.add(key)
            return True

    def done(self, key: str) -> None:
        """Release ``key``; if it was added while active, queue it again."""
        with self._cond:
            self._active.discard(key)
            again = self._again.pop(key, None)
        if again is not None:
            self.add(key, max(0.0, again - self._clock()))

    def depth(self) -> int:
        with self._cond:
            return len(self._due)

    def waiting(self) -> int:
        """Keys due now that no worker has taken yet: the backlog, not the
        resyncs scheduled for later (what ``cloudlet_queue_depth`` shows)."""
        with self._cond:
            now = self._clock()
            return sum(1 for at in self._due.values() if at <= now)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
