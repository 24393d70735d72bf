"""Shepherd's report: what a cloudlet looks like now, against what it should.

Built from one observation of the orchestrator and the desired expansion;
the same report is stored after every sync and recomputed by ``status``, so
an operator always sees drift as of the moment they ask. It is a projection:
typed values here, JSON only at the edges (``cloudlet.shepherd.codec``), and
nothing in the engine reads it back to decide what to do (the engine's own
``SyncRecord`` is what the daemon decides from).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import attrs

from cloudlet.model.expand import Expansion
from cloudlet.model.kinds import BROKEN
from cloudlet.model.ports import PortMapping
from cloudlet.model.resources import AttrValue, Observed, Resource
from cloudlet.planner.diff import attr_changes, group_observed
from cloudlet.store.records import SyncRecord

#: The observation indexed by engine id, oldest copy first (``group_observed``).
Have = Mapping[str, Sequence[Observed]]

#: ``pending``: differs from the stored desired state only because that
#: state is a revision not yet synced (it matches the last synced one).
State = Literal["ready", "drifted", "missing", "duplicated", "orphan", "pending"]


@attrs.frozen
class AttrDiff:
    """One attribute that differs: what the cloud has, what the spec wants."""

    attr: str
    actual: AttrValue
    desired: AttrValue


@attrs.frozen
class ResourceState:
    """One desired or owned object as last observed."""

    id: str
    kind: str
    state: State
    differs: tuple[str, ...] = ()
    uid: str | None = None
    address: str | None = None
    #: The attribute-level differences behind ``differs`` (the planner's diff).
    changes: tuple[AttrDiff, ...] = ()


@attrs.frozen
class Condition:
    """A Kubernetes-style condition; ``last_transition_time`` is when its
    status last flipped, not when it was last computed."""

    type: str
    status: Literal["True", "False"]
    reason: str
    message: str
    last_transition_time: float

    @property
    def ok(self) -> bool:
        return self.status == "True"


@attrs.frozen
class PortMappingStatus:
    """Where clients reach one exposed port: the LB's public address and port."""

    load_balancer: str
    target: str
    protocol: str
    port: int
    public_port: int
    public_ip: str | None


@attrs.frozen
class Status:
    cloudlet: str
    resources: tuple[ResourceState, ...]
    drift: tuple[str, ...]
    conditions: tuple[Condition, ...]
    last_sync: SyncRecord | None
    port_mappings: tuple[PortMappingStatus, ...]
    observed_at: float
    #: The stored desired revision when the status was asked for (``status`` only).
    desired_revision: int | None = None
    #: Ids that differ only because ``desired_revision`` is not synced yet.
    pending: tuple[str, ...] = ()

    @property
    def revision_pending(self) -> bool:
        """A desired revision is stored that no sync has reconciled yet."""
        if self.desired_revision is None:
            return False
        return self.last_sync is None or self.last_sync.revision != self.desired_revision

    def condition(self, kind: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)


def _state(rid: str, want: Mapping[str, object], objs: Sequence[Observed]) -> State:
    if rid not in want:
        return "orphan"
    if not objs:
        return "missing"
    return "duplicated" if len(objs) > 1 else "ready"


def resource_states(expansion: Expansion, actual: Sequence[Observed]) -> list[ResourceState]:
    """One entry per desired or owned object: ready, drifted, missing or orphan."""
    return _states(expansion.by_id(), group_observed(actual))


def _states(want: Mapping[str, Resource], have: Have) -> list[ResourceState]:
    out: list[ResourceState] = []
    for rid in sorted(set(want) | set(have)):
        objs = have.get(rid, [])
        state = _state(rid, want, objs)
        changes: tuple[AttrDiff, ...] = ()
        if state == "ready":
            changes = tuple(AttrDiff(*c) for c in attr_changes(want[rid], objs[0]))
            if BROKEN in objs[0].attrs:
                changes += (AttrDiff(BROKEN, objs[0].attrs[BROKEN], None),)
            state = "drifted" if changes else "ready"
        differs = tuple(sorted(c.attr for c in changes))
        address = objs[0].attrs.get("address") if objs else None
        out.append(
            ResourceState(
                rid,
                rid.partition("/")[0],
                state,
                differs,
                objs[0].uid if objs else None,
                None if address is None else str(address),
                changes,
            )
        )
    return out


def _pending(
    states: Sequence[ResourceState], synced: Expansion | None, have: Have
) -> list[ResourceState]:
    """Mark ``pending`` what differs from the new desired state but matches
    ``synced``, the last synced revision's expansion (None: never synced,
    or that revision unreadable: every difference waits for the sync)."""
    before = {r.id: r.state for r in _states(synced.by_id(), have)} if synced else {}
    return [
        attrs.evolve(r, state="pending")
        if r.state != "ready" and before.get(r.id, "ready") == "ready"
        else r
        for r in states
    ]


def _public_addresses(
    mappings: Sequence[PortMapping], want: Mapping[str, Resource], have: Have
) -> dict[str, str | None]:
    """Each LB's public address: the observed address of the object that
    carries it (of its last copy, if the cloud holds several). Once per LB,
    from indexes built once per status: a lookup per port mapping that
    re-indexed the expansion and scanned the observation made a 20k-resource
    status quadratic (issue 13)."""
    out: dict[str, str | None] = {}
    for name in dict.fromkeys(m.load_balancer for m in mappings):
        lb = want.get(f"lb/{name}")
        copies = have.get(str(lb.attrs.get("address")), []) if lb is not None else []
        value = copies[-1].attrs.get("address") if copies else None
        out[name] = None if value is None else str(value)
    return out


def port_mappings(expansion: Expansion, actual: Sequence[Observed]) -> list[PortMappingStatus]:
    return _mappings(expansion.port_mappings, expansion.by_id(), group_observed(actual))


def _mappings(
    mappings: Sequence[PortMapping], want: Mapping[str, Resource], have: Have
) -> list[PortMappingStatus]:
    ips = _public_addresses(mappings, want, have)
    return [
        PortMappingStatus(
            m.load_balancer, m.target, m.protocol, m.port, m.public_port, ips[m.load_balancer]
        )
        for m in mappings
    ]


def _carry(new: Condition, previous: Status | None) -> Condition:
    """Keep the previous transition time while the condition's status holds."""
    old = previous.condition(new.type) if previous is not None else None
    if old is not None and old.status == new.status:
        return attrs.evolve(new, last_transition_time=old.last_transition_time)
    return new


def conditions(
    drift: Sequence[str],
    last_sync: SyncRecord | None,
    at: float,
    previous: Status | None,
    pending: Sequence[str] = (),
) -> tuple[Condition, ...]:
    """Ready: matches its spec now. Synced: the last sync converged.
    Degraded: it differs from its spec and the last sync could not fix it,
    or the last sync failed for good (an invalid spec waits for a new one).
    ``pending`` differences (a revision not synced yet) make Ready False
    with reason Pending, not Drifted, and never make it Degraded.
    An interrupted sync (stopped on request) is not Synced, and not Degraded
    either: nothing failed, the next sync finishes the job."""
    outcome = last_sync.outcome if last_sync else None
    message = last_sync.message if last_sync else ""
    terminal = bool(last_sync and last_sync.terminal)
    sync_reason = {
        "converged": "LastSyncSucceeded",
        "failed": "LastSyncFailed",
        "interrupted": "Interrupted",
    }
    reason = "TerminalError" if terminal else sync_reason.get(str(outcome), "NeverSynced")
    degraded = (bool(drift) and outcome == "failed") or terminal
    calm = "Interrupted" if outcome == "interrupted" else "AsExpected"
    ready_msg = f"{_count(len(drift))} from the desired state" if drift else ""
    ready_reason = "Drifted" if drift else ("Pending" if pending else "Converged")
    if pending:
        n = len(pending)
        wait = f"{n} resource{'s' * (n != 1)} to change once the stored revision is synced"
        ready_msg = f"{ready_msg}; {wait}" if ready_msg else wait
    fresh = (
        Condition("Ready", _flag(not drift and not pending), ready_reason, ready_msg, at),
        Condition("Synced", _flag(outcome == "converged"), reason, message, at),
        Condition(
            "Degraded",
            _flag(degraded),
            ("TerminalError" if terminal else "SyncFailed") if degraded else calm,
            message if degraded else "",
            at,
        ),
    )
    return tuple(_carry(c, previous) for c in fresh)


def _count(n: int) -> str:
    return f"{n} resource{'s' * (n != 1)} differ{'s' * (n == 1)}"


def _flag(value: bool) -> Literal["True", "False"]:
    return "True" if value else "False"


def build_status(
    expansion: Expansion,
    actual: Sequence[Observed],
    *,
    at: float,
    last_sync: SyncRecord | None,
    previous: Status | None = None,
    desired_revision: int | None = None,
    synced: Expansion | None = None,
) -> Status:
    """The status of ``actual`` against ``expansion``. With
    ``desired_revision`` newer than ``last_sync``'s revision, what matches
    ``synced`` (that revision's expansion) but not ``expansion`` is pending,
    not drift: the operator stored a change that no sync has made yet."""
    want, have = expansion.by_id(), group_observed(actual)  # indexed once per status
    resources = _states(want, have)
    if desired_revision is not None and (
        last_sync is None or last_sync.revision != desired_revision
    ):
        resources = _pending(resources, synced, have)
    drift = tuple(r.id for r in resources if r.state not in ("ready", "pending"))
    pending = tuple(r.id for r in resources if r.state == "pending")
    return Status(
        cloudlet=expansion.cloudlet,
        resources=tuple(resources),
        drift=drift,
        conditions=conditions(drift, last_sync, at, previous, pending),
        last_sync=last_sync,
        port_mappings=tuple(_mappings(expansion.port_mappings, want, have)),
        observed_at=at,
        desired_revision=desired_revision,
        pending=pending,
    )


def with_sync(status: Status, last_sync: SyncRecord, at: float) -> Status:
    """The same observation under a newer sync record (one that observed
    nothing, such as an invalid stored spec): only the conditions move."""
    return attrs.evolve(
        status,
        last_sync=last_sync,
        conditions=conditions(status.drift, last_sync, at, status, status.pending),
    )
