"""Bindings: what an operator approved, so that exactly that is applied.

A confirmation (a ``y`` at the prompt, a saved plan) is worth only what it
was shown. ``bind`` reduces a plan to the facts that decide what its
actions do to the cloud: each action's op, id, the object it acts on (the
observed uid), the attributes it changes (actual and desired) and, for
what it builds, the desired attributes and dependencies. Reasons (prose)
and orderings are left out: they follow from those facts, and rewording one
must not invalidate an approval. Whatever the cloud reports beyond the
engine-set attributes (addresses, status, timestamps) is left out too, so
a harmless re-observation binds the same.

The engine compares a binding with each fresh plan: round 1 must match it
exactly (``mismatch``); later rounds, which only finish or retry approved
work, may hold nothing it does not cover (``uncovered``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from cloudlet.model.resources import AttrValue, freeze_value
from cloudlet.planner.diff import Op, attr_changes
from cloudlet.planner.plan import Action, Plan

Delta = tuple[str, AttrValue, AttrValue]


@attrs.frozen
class Bound:
    """One approved action, as facts (``reason`` is shown, never compared)."""

    op: Op
    id: str
    #: The observed object it updates, replaces or deletes (None: a create).
    uid: str | None
    #: A copy after the first of one id (acted on by uid).
    duplicate: bool = False
    #: (attribute, actual, desired) for each engine-set attribute that differs.
    changes: tuple[Delta, ...] = ()
    #: What a create or replace builds: desired attributes and dependencies.
    desired: tuple[tuple[str, AttrValue], ...] = ()
    deps: tuple[str, ...] = ()
    reason: str = attrs.field(default="", eq=False)

    @property
    def key(self) -> str:
        """Which action this is: the id, or ``id@uid`` for a duplicate copy."""
        return f"{self.id}@{self.uid}" if self.duplicate else self.id

    def describe(self) -> str:
        what = f"{self.op} {self.key}"
        return f"{what} ({self.reason})" if self.reason else what

    def to_json(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "id": self.id,
            "uid": self.uid,
            "duplicate": self.duplicate,
            "reason": self.reason,
            "changes": [[k, _plain(a), _plain(d)] for k, a, d in self.changes],
            "desired": {k: _plain(v) for k, v in self.desired},
            "deps": list(self.deps),
        }


def _sorted_map(actions: Mapping[str, Bound]) -> dict[str, Bound]:
    return dict(sorted(actions.items()))


@attrs.frozen(hash=False)
class Binding:
    """An approved plan: its cloudlet and its actions by key."""

    cloudlet: str
    actions: Mapping[str, Bound] = attrs.field(converter=_sorted_map)

    @property
    def empty(self) -> bool:
        return not self.actions

    def to_json(self) -> list[dict[str, Any]]:
        return [b.to_json() for b in self.actions.values()]


@attrs.frozen
class Mismatch:
    """How a fresh plan differs from the approved one."""

    added: tuple[Bound, ...] = ()
    removed: tuple[Bound, ...] = ()
    #: (approved, now) pairs for one action key.
    changed: tuple[tuple[Bound, Bound], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def lines(self) -> list[str]:
        """One line per difference, ``+`` new, ``-`` gone, ``~`` changed."""
        out = [f"+ {b.describe()}: not approved" for b in self.added]
        out += [f"- {b.describe()}: approved, no longer planned" for b in self.removed]
        for was, now in self.changed:
            out.append(f"~ {now.key}: approved {was.describe()}, now {now.describe()}")
        return out

    def summary(self) -> str:
        """All of it on one line, for a refusal message."""
        return "; ".join(self.lines())


def bind_action(action: Action) -> Bound:
    change = action.change
    want, have = change.desired, change.current
    deltas = tuple(attr_changes(want, have)) if want is not None and have is not None else ()
    builds = want is not None and action.op in ("create", "replace")
    return Bound(
        action.op,
        action.id,
        action.uid,
        change.duplicate,
        deltas,
        tuple(sorted(want.attrs.items())) if builds and want is not None else (),
        want.deps if builds and want is not None else (),
        action.reason,
    )


def bind(plan: Plan) -> Binding:
    """The facts of ``plan`` an approval of it covers."""
    bounds = [bind_action(a) for a in plan.actions]
    return Binding(plan.cloudlet, {b.key: b for b in bounds})


def mismatch(approved: Binding, fresh: Binding) -> Mismatch:
    """Every action added, removed or changed since ``approved`` (empty: the same)."""
    was, now = approved.actions, fresh.actions
    return Mismatch(
        tuple(now[k] for k in now if k not in was),
        tuple(was[k] for k in was if k not in now),
        tuple((was[k], now[k]) for k in now if k in was and was[k] != now[k]),
    )


#: For a later round: which approved ops cover an action's op on the same id.
#: An approved replace covers finishing its create; a create or replace
#: covers adjusting the object it built (a new uid, so not the approved one).
_COVERS: Mapping[str, frozenset[str]] = {
    "create": frozenset({"create", "replace"}),
    "update": frozenset({"update", "create", "replace"}),
    "delete": frozenset({"delete", "replace"}),
    "replace": frozenset({"replace"}),
}


def _covered(now: Bound, approved: Iterable[Bound]) -> bool:
    for was in approved:
        if was.id != now.id or was.op not in _COVERS[now.op]:
            continue
        if now.op == "create":
            return True
        acts_on_approved_object = now.uid is not None and now.uid == was.uid
        if now.op == "update" and was.op != "update":
            # the object the approved create/replace built, not the old one
            if not acts_on_approved_object:
                return True
            continue
        if acts_on_approved_object:
            return True
    return False


def uncovered(approved: Binding, fresh: Binding) -> tuple[Bound, ...]:
    """The actions of a later round's plan that no approved action covers:
    an update, replace or delete must act on the very object approved for
    it (or, for an update, on what an approved create built)."""
    by_id: dict[str, list[Bound]] = {}
    for b in approved.actions.values():
        by_id.setdefault(b.id, []).append(b)
    return tuple(b for b in fresh.actions.values() if not _covered(b, by_id.get(b.id, ())))


def bound_from_json(data: Mapping[str, Any]) -> Bound:
    """The inverse of ``Bound.to_json``; raises KeyError/TypeError/ValueError
    on a document of the wrong shape (the caller names the file)."""
    op = data["op"]
    if op not in _COVERS:
        raise ValueError(f"unknown op {op!r}")
    uid = data["uid"]
    if uid is not None and not isinstance(uid, str):
        raise TypeError("uid must be a string or null")
    changes = tuple(
        (_text(k), freeze_value(a), freeze_value(d)) for k, a, d in data.get("changes", [])
    )
    desired = tuple(sorted((_text(k), freeze_value(v)) for k, v in data["desired"].items()))
    return Bound(
        op,
        _text(data["id"]),
        uid,
        bool(data.get("duplicate", False)),
        changes,
        desired,
        tuple(_text(d) for d in data.get("deps", [])),
        str(data.get("reason", "")),
    )


def binding_from_json(cloudlet: str, rows: Iterable[Mapping[str, Any]]) -> Binding:
    bounds = [bound_from_json(r) for r in rows]
    return Binding(cloudlet, {b.key: b for b in bounds})


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, not {type(value).__name__}")
    return value


def _plain(value: AttrValue) -> Any:
    return list(value) if isinstance(value, tuple) else value
