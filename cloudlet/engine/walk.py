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
    events = events or WalkEvents()
    stop = stop or threading.Event()
    t0 = clock()
    waiting = {n: graph.in_degree(n) for n in graph.nodes}
    ready = [(-priority.get(n, 1.0), n) for n, d in waiting.items() if d == 0]
    heapq.heapify(ready)
    results: dict[str, NodeResult] = {}
    started: dict[str, float] = {}
    running: dict[Future[None], str] = {}
    with ThreadPoolExecutor(max_workers=max(1, parallelism)) as pool:
        while running or (ready and not stop.is_set()):
            while ready and len(running) < parallelism and not stop.is_set():
                _, key = heapq.heappop(ready)
                started[key] = clock() - t0
                events.started(key)
                running[pool.submit(_run, run, key)] = key
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                key = running.pop(fut)
                err = fut.exception()
                result = NodeResult(
                    key,
                    "failed" if err else "ok",
                    started[key],
                    clock() - t0,
                    str(err) if err else None,
                )
                results[key] = result
                events.finished(result)
                if err is None:
                    for succ in graph.successors(key):
                        waiting[succ] -= 1
                        if waiting[succ] == 0:
                            heapq.heappush(ready, (-priority.get(succ, 1.0), succ))
    leftover: Outcome = "cancelled" if stop.is_set() else "blocked"
    for key in graph.nodes:
        results.setdefault(key, NodeResult(key, leftover))
    return results
