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
class Action:
    """One resource's change as operators read it (a replace is one action)."""

    op: Op
    id: str
    reason: str
    after: tuple[str, ...]
    change: Change = attrs.field(eq=False, repr=False)

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
        """DESIGN.md's action, plus ``uid`` (the object acted on), ``attrs``
        (a create's desired attributes) and ``changes`` (an update's or
        replacement's attribute differences), each only where it applies."""
        out: dict[str, Any] = {
            "op": self.op,
            "id": self.id,
            "reason": self.reason,
            "after": list(self.after),
        }
        if self.uid is not None:
            out["uid"] = self.uid
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
    seen: dict[str, Change] = {}
    after: dict[str, set[str]] = {}
    for key in ordered_steps(graph):
        step: Step = graph.nodes[key]["step"]
        akey = _action_key(step.change)
        seen.setdefault(akey, step.change)
        preds = {graph.nodes[p]["step"].change.id for p in graph.predecessors(key)}
        after.setdefault(akey, set()).update(preds - {step.change.id})
    return tuple(Action(c.op, c.id, c.reason, tuple(sorted(after[k])), c) for k, c in seen.items())


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
