"""Kinds OpenStack has no object for, kept as metadata on the server they configure.

A Kubernetes node join lives on its node's server; a load balancer and its
listeners live on the LB's first VM (``vm/<lb>.0``), which is where an LB
image would read them. A record's uid is ``<server uuid>/<engine id>``, so
when its server is deleted the record goes with it and is observed missing,
and the planner makes it again once the server is back.
"""

from __future__ import annotations

from typing import Any

from cloudlet.model.kinds import refs
from cloudlet.model.resources import Observed, Resource
from cloudlet.providers.openstack import marks
from cloudlet.providers.openstack.faults import is_gone, permanent, transient
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
    def __init__(self, conn: Any) -> None:
        self._compute = conn.compute

    def put(self, resource: Resource, snap: Snapshot) -> Observed:
        host = host_of(resource, snap)
        server = snap.server(host)
        if server is None:
            raise transient(f"{resource.id}: its server {host} is not there (yet)")
        items = marks.record_items(resource.id, resource.attrs, resource.deps)
        metadata = server.metadata or {}
        if any(metadata.get(k) != v for k, v in items.items()):
            self._compute.set_server_metadata(server, **items)
        stale = [k for k in marks.record_keys(metadata, resource.id) if k not in items]
        if stale:
            self._compute.delete_server_metadata(server, stale)
        uid = f"{server.id}/{resource.id}"
        return Observed(uid, resource.id, resource.kind, resource.attrs, resource.deps)

    def update(self, resource: Resource, current: Observed, snap: Snapshot) -> Observed:
        server_id = current.uid.partition("/")[0]
        if all(s.id != server_id for s in snap.servers) or current.id not in {
            rid for uid, rid in _records(snap) if uid == server_id
        }:
            raise permanent(f"{resource.id}: not found (uid {current.uid})")
        made = self.put(resource, snap)
        if made.uid != current.uid:
            self.delete(current, snap)
        return made

    def delete(self, current: Observed, snap: Snapshot) -> None:
        server_id = current.uid.partition("/")[0]
        server = next((s for s in snap.servers if s.id == server_id), None)
        if server is None or current.id is None:
            return
        keys = marks.record_keys(server.metadata or {}, current.id)
        if not keys:
            return
        try:
            self._compute.delete_server_metadata(server, keys)
        except Exception as err:
            if not is_gone(err):
                raise
