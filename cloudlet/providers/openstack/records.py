"""Kinds OpenStack has no object for, kept as metadata on the server they configure.

A Kubernetes node join lives on its node's server; a load balancer and its
listeners live on the LB's first VM (``vm/<lb>.0``), which is where an LB
image would read them. A record's uid is ``<server uuid>/<engine id>``, so
when its server is deleted the record goes with it and is observed missing,
and the planner makes it again once the server is back.

Every change to an LB's records also rewrites each member VM's own LB
document, resolved to addresses (``lbdocs.py``): what the LB agent reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cloudlet.lb.members import lbs_using
from cloudlet.model.kinds import refs
from cloudlet.model.resources import Observed, Resource
from cloudlet.providers.openstack import marks
from cloudlet.providers.openstack.faults import is_gone, permanent, transient
from cloudlet.providers.openstack.lbdocs import Documents
from cloudlet.providers.openstack.snapshot import Snapshot

KINDS = ("k8s-node", "lb", "lb-listener")


def host_of(resource: Resource, snap: Snapshot) -> str:
    """The engine id of the server that carries ``resource``'s record."""
    if resource.kind == "k8s-node":
        return str(resource.attrs["vm"])
    lb = resource.name.partition(".")[0]
    if resource.kind == "lb-listener":
        for server in snap.servers:
            meta = server.metadata or {}
            if f"lb/{lb}" in marks.records_in(meta) and meta.get(marks.META_ID):
                return str(meta[marks.META_ID])
        return f"vm/{lb}.0"
    members = refs(resource, "members")
    first = f"vm/{lb}.0"
    return first if first in members or not members else sorted(members)[0]


def _records(snap: Snapshot) -> list[tuple[str, str]]:
    return [
        (server.id, rid)
        for server in snap.servers
        for rid in marks.records_in(server.metadata or {})
    ]


class Records:
    def __init__(self, conn: Any, snapshot: Callable[[str], Snapshot]) -> None:
        self._compute = conn.compute
        self._documents = Documents(conn, snapshot)

    def _lb_changed(self, owner: str, rid: str, deps: tuple[str, ...], former: Any) -> None:
        """Re-write the documents of the LB that ``rid`` (an lb or a listener) is part of."""
        kind, _, _ = rid.partition("/")
        lb = rid if kind == "lb" else next((d for d in deps if d.startswith("lb/")), None)
        if kind in ("lb", "lb-listener") and lb is not None:
            self._documents.refresh(owner, lb, refs(former, "members") if kind == "lb" else ())

    def vm_changed(self, owner: str, vm_id: str, before: Snapshot) -> None:
        """Re-write the documents of every LB ``vm_id`` is a member or target of,
        as ``before`` (read before the server was made or changed) has them.

        A member or target re-made alone (deleted behind our back) leaves its
        LB's records as they are, so no record write would: a member other
        than the first (whose server carries the records) would have no
        document, a target re-made on a new port a stale address."""
        for lb in lbs_using(vm_id, before.records()):
            self._documents.refresh(owner, lb)

    def put(self, resource: Resource, snap: Snapshot, former: Observed | None = None) -> Observed:
        """Write ``resource``'s record; ``former``: what it replaces (an update's current)."""
        host = host_of(resource, snap)
        server = snap.server(host)
        if server is None:
            raise transient(f"{resource.id}: its server {host} is not there (yet)")
        items = marks.record_items(resource.id, resource.attrs, resource.deps)
        metadata = server.metadata or {}
        # By id: the SDK's set keeps only the keys it sent in a server object's
        # metadata, and its delete of any other key then raises KeyError.
        if any(metadata.get(k) != v for k, v in items.items()):
            self._compute.set_server_metadata(server.id, **items)
        stale = [k for k in marks.record_keys(metadata, resource.id) if k not in items]
        if stale:
            self._compute.delete_server_metadata(server.id, stale)
        self._lb_changed(snap.owner, resource.id, resource.deps, former or {})
        uid = f"{server.id}/{resource.id}"
        return Observed(uid, resource.id, resource.kind, resource.attrs, resource.deps)

    def update(self, resource: Resource, current: Observed, snap: Snapshot) -> Observed:
        server_id = current.uid.partition("/")[0]
        if all(s.id != server_id for s in snap.servers) or current.id not in {
            rid for uid, rid in _records(snap) if uid == server_id
        }:
            raise permanent(f"{resource.id}: not found (uid {current.uid})")
        made = self.put(resource, snap, current)
        if made.uid != current.uid:
            self.delete(current, snap)
        return made

    def delete(self, current: Observed, snap: Snapshot) -> None:
        server_id = current.uid.partition("/")[0]
        server = next((s for s in snap.servers if s.id == server_id), None)
        if current.id is None:
            return
        keys = marks.record_keys(server.metadata or {}, current.id) if server is not None else []
        try:
            if keys:
                self._compute.delete_server_metadata(server_id, keys)
        except Exception as err:
            if not is_gone(err):
                raise
        self._lb_changed(snap.owner, current.id, current.deps, current)
