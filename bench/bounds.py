"""The lower bound a sync's makespan is held against, from its own step timings.

No scheduler can finish before the longest dependency chain of measured
step durations, nor before the total work spread over ``parallelism``
workers; the ratio of the makespan to the larger of the two is what the
engine's scheduling costs.
"""

from __future__ import annotations

from typing import Any

import networkx as nx


def step_bound(graph: Any, steps: list[Any], parallelism: int) -> dict[str, float]:
    """Critical path, work, makespan and bound for the first round's successful steps."""
    first = [s for s in steps if s.round == 1 and s.outcome == "ok"]
    durations = {f"{s.phase}:{s.id}": (s.finished or 0) - (s.started or 0) for s in first}
    longest: dict[str, float] = {}
    for node in reversed(list(nx.topological_sort(graph))):
        tail = max((longest[n] for n in graph.successors(node)), default=0.0)
        longest[node] = durations.get(node, 0.0) + tail
    critical = max(longest.values(), default=0.0)
    work = sum(durations.values())
    makespan = max((s.finished or 0) for s in first) - min((s.started or 0) for s in first)
    bound = max(critical, work / parallelism)
    return {
        "critical_path_s": critical,
        "total_work_s": work,
        "makespan_s": makespan,
        "lower_bound_s": bound,
        "makespan_ratio": makespan / bound if bound else 0.0,
    }
