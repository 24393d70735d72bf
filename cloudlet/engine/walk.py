"""A bounded-parallel walk of a step graph, longest remaining path first.

Like Terraform's dag walker, the walk knows nothing about clouds: it runs a
callable per node once every predecessor succeeded. A failed node blocks only
its descendants; independent branches run to the end, so one bad VM never
stops the rest of a site from converging.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Literal

import attrs
import networkx as nx

Outcome = Literal["ok", "failed", "blocked", "cancelled"]


@attrs.frozen
class NodeResult:
    key: str
    outcome: Outcome
    started: float | None = None
    finished: float | None = None
    error: str | None = None


@attrs.define
class WalkEvents:
    """Callbacks for progress; every one is called on the walking thread."""

    started: Callable[[str], None] = lambda key: None
    finished: Callable[[NodeResult], None] = lambda result: None


def _run(fn: Callable[[str], None], key: str) -> None:
    fn(key)


def walk(
    graph: nx.DiGraph,
    run: Callable[[str], None],
    *,
    parallelism: int,
    priority: Mapping[str, float],
    events: WalkEvents | None = None,
    clock: Callable[[], float] = time.monotonic,
    stop: threading.Event | None = None,
) -> dict[str, NodeResult]:
    """Run every node whose predecessors all succeeded; return each outcome.

    Times in the results are seconds since the walk began. ``stop`` ends the
    walk gracefully: nothing new starts, running nodes finish.
    """
    state = _Walk(graph, run, priority, events or WalkEvents(), clock, clock())
    stop = stop or threading.Event()
    with ThreadPoolExecutor(max_workers=max(1, parallelism)) as pool:
        while state.running or (state.ready and not stop.is_set()):
            while state.ready and len(state.running) < parallelism and not stop.is_set():
                state.start_next(pool)
            done, _ = wait(state.running, return_when=FIRST_COMPLETED)
            for fut in done:
                state.finish(fut)
    leftover: Outcome = "cancelled" if stop.is_set() else "blocked"
    for key in graph.nodes:
        state.results.setdefault(key, NodeResult(key, leftover))
    return state.results


@attrs.define
class _Walk:
    """The walk's bookkeeping: what waits on how many predecessors, what is
    ready (a heap, longest remaining path first), what runs, what ended."""

    graph: nx.DiGraph
    run: Callable[[str], None]
    priority: Mapping[str, float]
    events: WalkEvents
    clock: Callable[[], float]
    t0: float
    waiting: dict[str, int] = attrs.field(init=False)
    ready: list[tuple[float, str]] = attrs.field(init=False)
    results: dict[str, NodeResult] = attrs.field(init=False, factory=dict)
    started: dict[str, float] = attrs.field(init=False, factory=dict)
    running: dict[Future[None], str] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        self.waiting = {n: self.graph.in_degree(n) for n in self.graph.nodes}
        self.ready = [(-self.priority.get(n, 1.0), n) for n, d in self.waiting.items() if d == 0]
        heapq.heapify(self.ready)

    def start_next(self, pool: ThreadPoolExecutor) -> None:
        _, key = heapq.heappop(self.ready)
        self.started[key] = self.clock() - self.t0
        self.events.started(key)
        self.running[pool.submit(_run, self.run, key)] = key

    def finish(self, fut: Future[None]) -> None:
        key = self.running.pop(fut)
        err = fut.exception()
        result = NodeResult(
            key,
            "failed" if err else "ok",
            self.started[key],
            self.clock() - self.t0,
            str(err) if err else None,
        )
        self.results[key] = result
        self.events.finished(result)
        if err is None:
            for succ in self.graph.successors(key):
                self.waiting[succ] -= 1
                if self.waiting[succ] == 0:
                    heapq.heappush(self.ready, (-self.priority.get(succ, 1.0), succ))
