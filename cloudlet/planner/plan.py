"""The plan: ordered, explained actions plus the step graph the engine runs."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import attrs
import networkx as nx

from cloudlet.model.resources import AttrValue, Observed, Resource
from cloudlet.planner.diff import UNWANTED, Change, Op, attr_changes, diff
from cloudlet.planner.graph import Step, build_graph, ordered_steps

#: What an operator reads of a new object, by kind, in this order
#: (docs/resources.md): what it is built from and the addresses the spec
#: chose for it. The plan's JSON carries every attribute; this is the short list.
KEY_ATTRS: Mapping[str, tuple[str, ...]] = {
    "subnet": ("cidr",),
    "router": ("interfaces",),
    "security-group": ("rules",),
    "vip": ("subnet", "network"),
    "port": ("subnet", "network", "securityGroups"),
    "vm": ("image", "flavor"),
    "floating-ip": ("target",),
    "k8s-node": ("cluster", "role"),
    "lb": ("type", "redundancy", "address"),
    "lb-listener": ("protocol", "port", "publicPort", "targets"),
}


def json_value(value: AttrValue) -> Any:
    """An attribute as JSON: tuples are lists."""
    return list(value) if isinstance(value, tuple) else value


@attrs.frozen
class Phase:
    """One step of a replacement: its old object's delete, then the new
    object's create. ``after``: the steps (``phase:id`` keys, as ``graph``
    draws them) that must finish before this one starts."""

    phase: str
    after: tuple[str, ...]


@attrs.frozen
class Action:
    """One resource's change as operators read it (a replace is one action).

    ``after``: the ids whose actions must finish before this one can; for a
    replacement, what its new object waits for (its create phase). Its old
    object's delete waits for the deletes of what used it, which is why a
    replacement also lists its ``phases``: one list mixing both orders
    would read like a cycle (a VM after its port, the port after the VM).
    """

    op: Op
    id: str
    reason: str
    after: tuple[str, ...]
    change: Change = attrs.field(eq=False, repr=False)
    phases: tuple[Phase, ...] = ()

    @property
    def uid(self) -> str | None:
        """The observed object this action updates, replaces or deletes: with
        copies of one id, which copy it is. None for a create."""
        current = self.change.current
        return current.uid if current is not None else None

    def key_attrs(self) -> dict[str, AttrValue]:
        """A create's key attributes (``KEY_ATTRS``); empty for other ops."""
        want = self.change.desired
        if self.op != "create" or want is None:
            return {}
        return {k: want.attrs[k] for k in KEY_ATTRS.get(want.kind, ()) if k in want.attrs}

    def changes(self) -> list[tuple[str, AttrValue, AttrValue]]:
        """(attribute, actual, desired) for each attribute an update or
        replacement changes; empty for creates, deletes and pure rebuilds."""
        want, have = self.change.desired, self.change.current
        if self.op not in ("update", "replace") or want is None or have is None:
            return []
        return attr_changes(want, have)

    def to_json(self) -> dict[str, Any]:
        """DESIGN.md's action, plus ``uid`` (the object acted on: for a
        replacement, the old object the new one replaces), ``phases`` (a
        replacement's delete and create, each with the steps it waits for),
        ``attrs`` (a create's desired attributes) and ``changes`` (an
        update's or replacement's attribute differences), each only where
        it applies."""
        out: dict[str, Any] = {
            "op": self.op,
            "id": self.id,
            "reason": self.reason,
            "after": list(self.after),
        }
        if self.uid is not None:
            out["uid"] = self.uid
        if self.phases:
            out["phases"] = [self._phase_json(p) for p in self.phases]
        want = self.change.desired
        if self.op == "create" and want is not None:
            out["attrs"] = {k: json_value(v) for k, v in sorted(want.attrs.items())}
        changes = self.changes()
        if changes:
            out["changes"] = [
                {"attr": k, "actual": json_value(old), "desired": json_value(new)}
                for k, old, new in changes
            ]
        return out

    def _phase_json(self, phase: Phase) -> dict[str, Any]:
        out: dict[str, Any] = {"phase": phase.phase, "after": list(phase.after)}
        if phase.phase == "delete" and self.uid is not None:
            out["uid"] = self.uid
        return out


@attrs.frozen(eq=False)
class Plan:
    cloudlet: str
    actions: tuple[Action, ...]
    graph: nx.DiGraph = attrs.field(repr=False)

    @property
    def empty(self) -> bool:
        return not self.actions

    def step(self, key: str) -> Step:
        step: Step = self.graph.nodes[key]["step"]
        return step

    def counts(self) -> dict[str, int]:
        out = {"create": 0, "update": 0, "replace": 0, "delete": 0}
        for a in self.actions:
            out[a.op] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {"cloudlet": self.cloudlet, "actions": [a.to_json() for a in self.actions]}


def _action_key(change: Change) -> str:
    """One action per change: a replacement's two steps are one action, the
    steps on different copies of one id are not (they act on other objects)."""
    return f"{change.id}@{change.current.uid}" if change.current else change.id


def _actions(graph: nx.DiGraph) -> tuple[Action, ...]:
    """One action per change, in step order. An action waits for the ids
    of its last step's predecessors: a single step's, or a replacement's
    create (its delete's predecessors are named in its phases)."""
    seen: dict[str, Change] = {}
    waits: dict[str, dict[str, set[str]]] = {}
    for key in ordered_steps(graph):
        step: Step = graph.nodes[key]["step"]
        akey, change_id = _action_key(step.change), step.change.id
        seen.setdefault(akey, step.change)
        preds = {
            p for p in graph.predecessors(key) if graph.nodes[p]["step"].change.id != change_id
        }
        waits.setdefault(akey, {}).setdefault(step.phase, set()).update(preds)
    return tuple(_action(graph, change, waits[k]) for k, change in seen.items())


def _action(graph: nx.DiGraph, change: Change, waits: Mapping[str, set[str]]) -> Action:
    def ids(keys: set[str]) -> tuple[str, ...]:
        return tuple(sorted({graph.nodes[k]["step"].change.id for k in keys}))

    phases: tuple[Phase, ...] = ()
    if change.op == "replace":
        phases = tuple(Phase(p, tuple(sorted(waits.get(p, ())))) for p in ("delete", "create"))
        last = waits.get("create", set())
    else:
        last = set().union(*waits.values())
    return Action(change.op, change.id, change.reason, ids(last), change, phases)


def leave_alone(plan: Plan, ids: Collection[str]) -> Plan:
    """The plan without any change to ``ids`` nor anything that must wait
    for one: a resync under drift policy ``report`` touches none of them."""
    skipped = {k for k in plan.graph if plan.step(k).change.id in ids}
    for key in list(skipped):
        skipped |= nx.descendants(plan.graph, key)
    if not skipped:
        return plan
    graph: nx.DiGraph = plan.graph.subgraph(k for k in plan.graph if k not in skipped).copy()
    return Plan(plan.cloudlet, _actions(graph), graph)


def plan_actions(
    name: str,
    desired: Sequence[Resource],
    actual: Iterable[Observed],
    forced: Mapping[str, str] | None = None,
    *,
    unwanted: str = UNWANTED,
) -> Plan:
    """Same inputs, same plan: the order depends only on ids and dependencies.

    ``forced``: updates the cloud cannot make in place, by id, with why
    (see ``diff``); they become replacements. ``unwanted``: what each
    delete of an object the spec does not hold says (``DESTROYED`` when
    the cloudlet is destroyed).
    """
    ordered = sorted(actual, key=lambda o: (o.id or "", o.uid))
    changes = diff(desired, ordered, forced, unwanted)
    graph = build_graph(changes)
    return Plan(name, _actions(graph), graph)
