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

from cloudlet.model.kinds import BROKEN, POOLS, immutable_changes
from cloudlet.model.resources import AttrValue, Observed, Resource, split_id

Op = Literal["create", "update", "replace", "delete"]


@attrs.frozen
class Change:
    """One resource's change before ordering; ``current`` is what exists now."""

    op: Op
    id: str
    reason: str
    desired: Resource | None = None
    current: Observed | None = None
    #: Set for a copy after the first of one id (a duplicate to delete, the id
    #: wanted or not): the delete targets this object only, and its step is
    #: keyed by the object's uid so that every copy has a step of its own.
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
    broken = current.attrs.get(BROKEN)
    if broken is not None:
        reason = f"broken: {_show(broken)} (forces replacement)"
        return Change("replace", desired.id, reason, desired, current)
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


#: Why an owned object goes when the spec no longer holds it.
UNWANTED = "not in the desired state"
#: Why every owned object goes when the cloudlet itself is destroyed: the
#: desired state is not edited, it is being given up.
DESTROYED = "cloudlet destroyed"


def _unwanted(rid: str, objs: Sequence[Observed], why: str) -> list[Change]:
    """Every copy of an id no longer in the spec goes; those after the first
    are duplicates, or their steps would share one key and all but one be lost."""
    return [Change("delete", rid, why, None, o, duplicate=n > 0) for n, o in enumerate(objs)]


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
    unwanted: str = UNWANTED,
) -> list[Change]:
    """Changes in id order (creates, updates, replaces, deletes), cascaded.

    ``forced``: ids whose in-place update the cloud cannot do, with its
    reason (a provider's own rule, such as a resize that would shrink a
    disk): those changes are replacements. ``unwanted``: the reason each
    delete of an object the spec does not hold gives (``DESTROYED`` for a
    destroy).
    """
    want: Mapping[str, Resource] = {r.id: r for r in desired}
    have = group_observed(actual)
    changes: list[Change] = []
    for rid in sorted(set(want) | set(have)):
        objs = have.get(rid, [])
        if rid not in want:
            changes += _unwanted(rid, objs, unwanted)
            continue
        if not objs:
            changes.append(Change("create", rid, "does not exist", want[rid]))
            continue
        change = _compare(want[rid], objs[0], (forced or {}).get(rid))
        if change is not None:
            changes.append(change)
        changes += _duplicates(rid, objs)
    return cascade_replacements(changes, desired, have)


def _dependents(
    desired: Sequence[Resource], have: Mapping[str, list[Observed]]
) -> dict[str, set[str]]:
    """Who uses each id: the desired deps, and what existing objects use now."""
    want = {r.id for r in desired}
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
    return dependents


def _pool_holders(
    by_id: Mapping[str, Change], dependents: Mapping[str, set[str]]
) -> list[tuple[str, str]]:
    """(holder, pool) for each existing holder of a share of a re-created pool."""
    out = []
    for pool in sorted(by_id):
        change = by_id[pool]
        holders = POOLS.get(change.desired.kind, frozenset()) if change.desired else frozenset()
        if change.op != "create" or not holders:
            continue
        out += [
            (rid, pool) for rid in sorted(dependents.get(pool, ())) if split_id(rid)[0] in holders
        ]
    return out


def cascade_replacements(
    changes: list[Change], desired: Sequence[Resource], have: Mapping[str, list[Observed]]
) -> list[Change]:
    """Replace every existing dependent of a replaced resource, transitively.

    A VM cannot move to a new subnet in place, and its ports point at the old
    one: so whatever was built on a replaced object is rebuilt after it. The
    holders of a share of a re-created pool (``POOLS``) are rebuilt the same
    way, and so is what is built on them.
    """
    want = {r.id: r for r in desired}
    dependents = _dependents(desired, have)
    by_id = {c.id: c for c in changes if not c.duplicate}

    def rebuild(rid: str, reason: str) -> bool:
        old = by_id.get(rid)
        if (old is not None and old.op != "update") or not have.get(rid):
            return False
        by_id[rid] = Change("replace", rid, reason, want[rid], have[rid][0])
        return True

    for holder, pool in _pool_holders(by_id, dependents):
        rebuild(holder, f"rebuilt with {pool} (re-created: its pool starts afresh)")
    queue = sorted(c.id for c in by_id.values() if c.op == "replace")
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
            if rebuild(rid, f"rebuilt with {cause}"):
                queue.append(rid)
    result = [c for c in changes if c.duplicate] + list(by_id.values())
    return sorted(result, key=lambda c: (c.id, c.duplicate))
