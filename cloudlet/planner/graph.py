"""Ordering: the changes become a graph of steps the engine may run in parallel.

A change is one or two steps. ``create``/``update`` step after the
create/update steps of what the resource depends on; ``delete`` steps after
the steps that remove or re-point whatever uses the object (its dependents as
the cloud reports them, so orphans are torn down safely too); a replacement
is its delete step followed by its create step, so dependents are rebuilt
after it, and dependents' deletes precede it. This mirrors Terraform's
split of a replace into destroy and create nodes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import attrs
import networkx as nx

from cloudlet.errors import PlanError
from cloudlet.planner.diff import Change

Phase = Literal["delete", "create", "update"]


@attrs.frozen
class Step:
    """One provider call the engine makes: a phase of one change."""

    phase: Phase
    change: Change

    @property
    def key(self) -> str:
        extra = (
            f"@{self.change.current.uid}" if self.change.duplicate and self.change.current else ""
        )
        return f"{self.phase}:{self.change.id}{extra}"


def steps_of(change: Change) -> list[Step]:
    if change.op == "replace":
        return [Step("delete", change), Step("create", change)]
    phase: Phase = "update" if change.op == "update" else change.op
    return [Step(phase, change)]


def _forward_edges(
    steps: Mapping[str, Step], build: Mapping[str, str]
) -> Iterable[tuple[str, str]]:
    for key, step in steps.items():
        if step.phase == "delete" or step.change.desired is None:
            continue
        for dep in step.change.desired.deps:
            if dep in build:
                yield build[dep], key


def _teardown_edges(
    steps: Mapping[str, Step], build: Mapping[str, str], teardown: Mapping[str, list[str]]
) -> Iterable[tuple[str, str]]:
    users: dict[str, set[str]] = defaultdict(set)
    for step in steps.values():
        current = step.change.current
        if current is not None:
            for dep in current.deps:
                users[dep].add(step.change.id)
    for key, step in steps.items():
        if step.phase != "delete":
            continue
        for user in sorted(users.get(step.change.id, ())):
            if user == step.change.id:
                continue
            for before in teardown.get(user) or ([build[user]] if user in build else []):
                yield before, key


def build_graph(changes: Sequence[Change]) -> nx.DiGraph:
    """Steps as nodes (keyed ``phase:id``, or ``phase:id@uid`` for a copy
    after the first; data ``step``); edge a→b: a first."""
    graph: nx.DiGraph = nx.DiGraph()
    steps: dict[str, Step] = {}
    build: dict[str, str] = {}
    teardown: dict[str, list[str]] = defaultdict(list)
    for change in changes:
        for step in steps_of(change):
            if step.key in steps:  # a lost step would be a copy never acted on
                raise PlanError(f"two changes make one step {step.key}")
            steps[step.key] = step
            graph.add_node(step.key, step=step)
            if step.phase == "delete":
                teardown[change.id].append(step.key)
            else:
                build[change.id] = step.key
        if change.op == "replace":
            graph.add_edge(f"delete:{change.id}", f"create:{change.id}")
    graph.add_edges_from(_forward_edges(steps, build))
    graph.add_edges_from(_teardown_edges(steps, build, teardown))
    _reject_cycles(graph)
    return graph


def _reject_cycles(graph: nx.DiGraph) -> None:
    if nx.is_directed_acyclic_graph(graph):
        return
    cycle = nx.find_cycle(graph)
    names = " → ".join([a for a, _ in cycle] + [cycle[0][0]])
    raise PlanError(f"dependency cycle: {names}")


def ordered_steps(graph: nx.DiGraph) -> list[str]:
    """A deterministic topological order (ties broken by key)."""
    return list(nx.lexicographical_topological_sort(graph))


def remaining_path(graph: nx.DiGraph, cost: Mapping[str, float]) -> dict[str, float]:
    """For each step, the costliest path from it to the end, itself included.

    The engine starts ready steps with the longest remaining path first: the
    critical path sets the makespan, so it must never wait behind short work.
    """
    longest: dict[str, float] = {}
    for node in reversed(list(nx.topological_sort(graph))):
        tail = max((longest[s] for s in graph.successors(node)), default=0.0)
        longest[node] = cost.get(node, 1.0) + tail
    return longest
