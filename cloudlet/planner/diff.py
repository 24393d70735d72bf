"""Diff: what must change for the actual objects to match the desired ones.

Level-triggered: the diff looks only at the two states, never at what the
last run did, so it heals drift and finishes interrupted work alike. Only
attributes the engine sets are compared; whatever else the cloud reports
(addresses, status) is the cloud's business.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import attrs

from cloudlet.model.kinds import immutable_changes
from cloudlet.model.resources import AttrValue, Observed, Resource

Op = Literal["create", "update", "replace", "delete"]


@attrs.frozen
class Change:
    """One resource's change before ordering; ``current`` is what exists now."""

    op: Op
    id: str
    reason: str
    desired: Resource | None = None
    current: Observed | None = None
    #: Set for a duplicate object: the delete targets this object only.
    duplicate: bool = False


def _show(value: AttrValue) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(value) + "]"
    if value is None:
        return "(unset)"
    return str(value)


def attr_changes(desired: Resource, current: Observed) -> list[tuple[str, AttrValue, AttrValue]]:
    """(key, actual, desired) for every engine-set attribute that differs."""
    return [
        (key, current.attrs.get(key), want)
        for key, want in sorted(desired.attrs.items())
        if current.attrs.get(key) != want
    ]


def _compare(desired: Resource, current: Observed, cloud_rule: str | None) -> Change | None:
    changes = attr_changes(desired, current)
    if not changes:
        return None
    reason = "; ".join(f"{k}: {_show(old)} → {_show(new)}" for k, old, new in changes)
    if immutable_changes(desired.kind, desired.attrs, current.attrs):
        forced = "forces replacement"
    elif cloud_rule is not None:
        forced = f"forces replacement: {cloud_rule}"
    else:
        return Change("update", desired.id, reason, desired, current)
    return Change("replace", desired.id, f"{reason} ({forced})", desired, current)


def group_observed(actual: Iterable[Observed]) -> dict[str, list[Observed]]:
    """Tagged objects by engine id, oldest first; untagged objects are not ours."""
    groups: dict[str, list[Observed]] = defaultdict(list)
    for obj in actual:
        if obj.id is not None:
            groups[obj.id].append(obj)
    return dict(groups)


def _duplicates(rid: str, objs: Sequence[Observed]) -> list[Change]:
    keep = objs[0]
    return [
        Change("delete", rid, f"duplicate of {keep.uid}", None, extra, duplicate=True)
        for extra in objs[1:]
    ]


def diff(
    desired: Sequence[Resource],
    actual: Iterable[Observed],
    forced: Mapping[str, str] | None = None,
) -> list[Change]:
    """Changes in id order (creates, updates, replaces, deletes), cascaded.

    ``forced``: ids whose in-place update the cloud cannot do, with its
    reason (a provider's own rule, such as a resize that would shrink a
    disk): those changes are replacements.
    """
    want: Mapping[str, Resource] = {r.id: r for r in desired}
    have = group_observed(actual)
    changes: list[Change] = []
    for rid in sorted(set(want) | set(have)):
        objs = have.get(rid, [])
        if rid not in want:
            changes += [Change("delete", rid, "not in the desired state", None, o) for o in objs]
            continue
        if not objs:
            changes.append(Change("create", rid, "does not exist", want[rid]))
            continue
        change = _compare(want[rid], objs[0], (forced or {}).get(rid))
        if change is not None:
            changes.append(change)
        changes += _duplicates(rid, objs)
    return cascade_replacements(changes, desired, have)


def cascade_replacements(
    changes: list[Change], desired: Sequence[Resource], have: Mapping[str, list[Observed]]
) -> list[Change]:
    """Replace every existing dependent of a replaced resource, transitively.

    A VM cannot move to a new subnet in place, and its ports point at the old
    one: so whatever was built on a replaced object is rebuilt after it.
    """
    want = {r.id: r for r in desired}
    dependents: dict[str, set[str]] = defaultdict(set)
    for r in desired:
        for dep in r.deps:
            dependents[dep].add(r.id)
    # What uses the old object now counts too: a listener still pointing at a
    # replaced node must be rebuilt, or its update would have to wait for the
    # new node while the old node's delete waits for the update (a cycle).
    for rid, objs in have.items():
        if rid in want:
            for dep in objs[0].deps:
                dependents[dep].add(rid)
    by_id = {c.id: c for c in changes if not c.duplicate}
    queue = sorted(c.id for c in changes if c.op == "replace")
    passed: set[str] = set()
    while queue:
        cause = queue.pop()
        for rid in sorted(dependents.get(cause, ())):
            old = by_id.get(rid)
            if old is not None and old.op == "create":
                # Missing (deleted behind our back) and built after ``cause``:
                # what uses it is rebuilt too, as it would have been had it
                # survived to be replaced; an update of it would have to wait
                # for the new object while the old objects' deletes wait for
                # the update (a cycle, found by the property tests).
                if rid not in passed:
                    passed.add(rid)
                    queue.append(rid)
                continue
            if (old is not None and old.op != "update") or not have.get(rid):
                continue
            by_id[rid] = Change("replace", rid, f"rebuilt with {cause}", want[rid], have[rid][0])
            queue.append(rid)
    result = [c for c in changes if c.duplicate] + list(by_id.values())
    return sorted(result, key=lambda c: (c.id, c.duplicate))
